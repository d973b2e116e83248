//! `workspace allowlist add|remove|list|log`.

use agentsecrets_core::net::normalize_host;

use crate::UsageError;
use crate::cli::{AllowlistCommand, WorkspaceCommand};
use crate::commands::open_vault;
use crate::output::box_table;

/// Runs a `workspace` subcommand.
pub fn run(command: WorkspaceCommand) -> anyhow::Result<()> {
    match command {
        WorkspaceCommand::Allowlist(cmd) => allowlist(cmd),
    }
}

fn allowlist(command: AllowlistCommand) -> anyhow::Result<()> {
    match command {
        AllowlistCommand::Add { domains } => {
            let normalised = domains
                .iter()
                .map(|d| normalize_host(d).map_err(|e| UsageError(format!("{d:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let vault = open_vault()?;
            let added = vault.allow_domains(&normalised, &actor())?;
            for domain in &normalised {
                let note = if added.contains(domain) { "added" } else { "already allowed" };
                println!("{domain}  {note}");
            }
        }
        AllowlistCommand::Remove { domain } => {
            let normalised =
                normalize_host(&domain).map_err(|e| UsageError(format!("{domain:?}: {e}")))?;
            let vault = open_vault()?;
            if !vault.disallow_domain(&normalised, &actor())? {
                anyhow::bail!("{normalised} is not on the allowlist; nothing removed");
            }
            println!("{normalised}  removed");
        }
        AllowlistCommand::List => {
            let vault = open_vault()?;
            let entries = vault.allowlist()?;
            if entries.is_empty() {
                println!(
                    "No domains allowed yet; add one with: agentsecrets workspace allowlist add DOMAIN"
                );
                return Ok(());
            }
            let rows =
                entries.into_iter().map(|e| vec![e.domain, e.added_by, e.added_at]).collect();
            println!("{}", box_table(&["Domain", "Added By", "Added At"], rows));
        }
        AllowlistCommand::Log => {
            let vault = open_vault()?;
            for change in vault.allowlist_log()? {
                println!(
                    "{}  {:<6}  {}  by {}",
                    change.at, change.action, change.domain, change.actor
                );
            }
        }
    }
    Ok(())
}

/// Who makes a change: the operating-system user, as far as the environment says.
fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "local".to_owned())
}
