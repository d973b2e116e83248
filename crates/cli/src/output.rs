//! Table rendering shared by commands.

use comfy_table::{ContentArrangement, Table, TableComponent, presets};

/// A box table whose cells are split by `│`, the shape the official SDK parses. Empty
/// cells are written as `-`, because the SDK drops empty cells and would shift columns.
pub fn box_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .apply_modifier(comfy_table::modifiers::UTF8_ROUND_CORNERS)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_style(TableComponent::VerticalLines, '│')
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row.into_iter().map(|c| if c.is_empty() { "-".to_owned() } else { c }));
    }
    table.to_string()
}

/// Whether stdout is a terminal (tables for people, JSON Lines for programs).
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}
