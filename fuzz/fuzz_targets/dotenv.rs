//! Dotenv import (`agentsecrets_core::dotenv::parse`).
//!
//! Any text: no panic; every entry has a non-empty key without whitespace or `=`, lines
//! start at 1 and increase, and no line number is past the end of the text; an error names
//! a line inside the text. Round trip: the entries written back as
//! `export KEY="escaped value"` parse to the same keys and values.
#![no_main]

use agentsecrets_core::dotenv::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let line_count = text.lines().count().max(1);
    let entries = match parse(text) {
        Ok(entries) => entries,
        Err(err) => {
            assert!((1..=line_count).contains(&err.line()), "error names a line outside the text");
            return;
        }
    };
    let mut previous = 0;
    for entry in &entries {
        assert!(!entry.key.is_empty());
        assert!(!entry.key.contains(char::is_whitespace) && !entry.key.contains('='));
        assert!(entry.line > previous && entry.line <= line_count, "entry lines out of order");
        previous = entry.line;
    }
    let _ = format!("{entries:?}");

    // Starts with a newline so that a key beginning with U+FEFF is not taken for a BOM.
    let mut written = String::from("\n");
    for entry in &entries {
        written.push_str("export ");
        written.push_str(&entry.key);
        written.push_str("=\"");
        for c in entry.value.chars() {
            match c {
                '\\' => written.push_str("\\\\"),
                '"' => written.push_str("\\\""),
                '\n' => written.push_str("\\n"),
                '\r' => written.push_str("\\r"),
                '\t' => written.push_str("\\t"),
                _ => written.push(c),
            }
        }
        written.push_str("\"\n");
    }
    let again = parse(&written).expect("written-back entries parse");
    assert_eq!(again.len(), entries.len());
    for (a, b) in entries.iter().zip(&again) {
        assert_eq!(a.key, b.key, "key changed in the round trip");
        assert_eq!(*a.value, *b.value, "value changed in the round trip");
    }
});
