//! `workspace allowlist add|remove|list|log`.

use agentsecrets_core::net::normalize_host;

use crate::UsageError;
use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::names::SecretKey;
use agentsecrets_store::{DeclaredContracts, StrictMode, Vault};

use crate::cli::{AllowlistCommand, UpdateArgs, WorkspaceCommand};
use crate::commands::{current_project, open_vault};
use crate::output::box_table;

/// Runs a `workspace` subcommand.
pub fn run(command: WorkspaceCommand) -> anyhow::Result<()> {
    match command {
        WorkspaceCommand::Allowlist(cmd) => allowlist(cmd),
        WorkspaceCommand::Update(args) => update(&args),
    }
}

fn update(args: &UpdateArgs) -> anyhow::Result<()> {
    let identity = args.strict_identity.is_some() || args.min_identity.is_some();
    let access = args.declared_contracts.is_some() || args.anonymous_secrets.is_some();
    if !identity && !access {
        return Err(UsageError(
            "nothing to update: give --strict-identity true|false|report, --min-identity \
             LEVEL, --declared-contracts enforce|ignore or --anonymous-secrets K1,K2|none|all"
                .to_owned(),
        )
        .into());
    }
    // Every flag is checked before anything is written, so a bad one changes nothing.
    let declared = args.declared_contracts.as_deref().map(parse_declared).transpose()?;
    let anonymous = args.anonymous_secrets.as_deref().map(parse_anonymous).transpose()?;
    let vault = open_vault()?;
    if identity {
        update_identity(&vault, args)?;
    }
    if let Some(mode) = declared {
        vault.set_declared_contracts(mode)?;
        println!("Declared contracts: {}", mode.as_str());
    }
    if let Some(keys) = anonymous {
        vault.set_anonymous_secrets(keys.as_deref())?;
        let shown = match &keys {
            None => "all".to_owned(),
            Some(keys) if keys.is_empty() => "none".to_owned(),
            Some(keys) => keys.join(", "),
        };
        println!("Anonymous secrets: {shown}");
        warn_unknown_secrets(&vault, keys.as_deref().unwrap_or_default())?;
    }
    Ok(())
}

fn parse_declared(raw: &str) -> anyhow::Result<DeclaredContracts> {
    DeclaredContracts::parse(&raw.to_ascii_lowercase()).ok_or_else(|| {
        UsageError(format!("--declared-contracts {raw:?}: use enforce or ignore")).into()
    })
}

/// `all` (no restriction), `none`, or a comma-separated list of valid key names.
fn parse_anonymous(raw: &str) -> anyhow::Result<Option<Vec<String>>> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "all" => return Ok(None),
        "none" | "" => return Ok(Some(Vec::new())),
        _ => {}
    }
    let keys = raw
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            SecretKey::parse(k)
                .map(|key| key.to_string())
                .map_err(|e| UsageError(format!("--anonymous-secrets: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(keys))
}

/// Warns (on stderr) of names that no project of the vault holds yet: setting them is
/// allowed, since the secret may be added later.
pub(crate) fn warn_unknown_secrets(vault: &Vault, keys: &[String]) -> anyhow::Result<()> {
    let project = current_project(vault)?;
    let stored = vault.secret_names(&project)?;
    for key in keys.iter().filter(|k| !stored.contains(k)) {
        eprintln!("warning: project {} holds no secret named {key} (yet)", project.name);
    }
    Ok(())
}

fn update_identity(vault: &Vault, args: &UpdateArgs) -> anyhow::Result<()> {
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
pub(crate) fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "local".to_owned())
}
