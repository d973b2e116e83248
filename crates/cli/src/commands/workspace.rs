//! `workspace allowlist add|remove|list|log`.

use agentsecrets_core::net::normalize_host;

use crate::UsageError;
use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_store::StrictMode;

use crate::cli::{AllowlistCommand, UpdateArgs, WorkspaceCommand};
use crate::commands::open_vault;
use crate::output::box_table;

/// Runs a `workspace` subcommand.
pub fn run(command: WorkspaceCommand) -> anyhow::Result<()> {
    match command {
        WorkspaceCommand::Allowlist(cmd) => allowlist(cmd),
        WorkspaceCommand::Update(args) => update(&args),
    }
}

fn update(args: &UpdateArgs) -> anyhow::Result<()> {
    if args.strict_identity.is_none() && args.min_identity.is_none() {
        return Err(UsageError(
            "nothing to update: give --strict-identity true|false|report or --min-identity LEVEL"
                .to_owned(),
        )
        .into());
    }
    let vault = open_vault()?;
    let mut settings = vault.identity_settings()?;
    if let Some(raw) = &args.strict_identity {
        settings.strict = match raw.to_ascii_lowercase().as_str() {
            "true" | "on" | "enforce" => StrictMode::Enforce,
            "false" | "off" => StrictMode::Off,
            "report" => StrictMode::Report,
            _ => {
                return Err(UsageError(format!(
                    "--strict-identity {raw:?}: use true, false or report"
                ))
                .into());
            }
        };
    }
    if let Some(raw) = &args.min_identity {
        settings.min_identity = match IdentityLevel::parse(&raw.to_ascii_lowercase()) {
            Some(level @ (IdentityLevel::Declared | IdentityLevel::Issued)) => level,
            _ => {
                return Err(
                    UsageError(format!("--min-identity {raw:?}: use declared or issued")).into()
                );
            }
        };
        // Naming a minimum only means something when strict mode is on.
        if args.strict_identity.is_none() && settings.strict == StrictMode::Off {
            settings.strict = StrictMode::Enforce;
        }
    }
    vault.set_identity_settings(settings)?;
    let strict = match settings.strict {
        StrictMode::Off => "off",
        StrictMode::Enforce => "enforced",
        StrictMode::Report => "report only",
    };
    println!("Strict identity: {strict}; minimum identity: {}", settings.min_identity.as_str());
    Ok(())
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
                    "No domains allowed yet; add one with: \
                     agentsecrets workspace allowlist add DOMAIN"
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
