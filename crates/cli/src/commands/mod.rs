//! One module per command group. Each opens what it needs and calls into the libraries.

pub mod agent;
pub mod call;
pub mod env;
pub mod init;
pub mod log;
pub mod mcp;
pub mod policy;
pub mod project;
pub mod proxy;
pub mod secrets;
pub mod workspace;

use std::sync::Arc;

use agentsecrets_store::vault::Project;
use agentsecrets_store::{AuditLog, Home, Vault};
use anyhow::Context as _;

/// The home named by the environment.
pub fn home() -> anyhow::Result<Home> {
    Ok(Home::locate()?)
}

/// Opens the vault, creating it on first use.
pub fn open_vault() -> anyhow::Result<Vault> {
    let home = home()?;
    Ok(Vault::open(&home)?)
}

/// Opens the vault and the audit log.
pub fn open_both() -> anyhow::Result<(Arc<Vault>, Arc<AuditLog>)> {
    let vault = open_vault()?;
    let audit = AuditLog::open(vault.home())?;
    Ok((Arc::new(vault), Arc::new(audit)))
}

/// The project for the current directory.
pub fn current_project(vault: &Vault) -> anyhow::Result<Project> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(vault.resolve_project(&cwd)?)
}

/// A single-threaded-enough runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The caller's identity from `--agent-id` and `--token` (or their environment
/// variables): `(agent_id, agent_token)`.
///
/// `--token` takes an `agt_...` value, or the official SDK's `<NAME>_TOKEN` reference to
/// a token saved with `--save-token`. With no saved token behind a reference, the caller
/// is declared as NAME (the registered agent's spelling when one matches), never refused:
/// that is how the SDK sends a plain `agent_id`.
pub fn caller_identity(
    agent_id: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let fallback = std::env::var("AS_AGENT_TOKEN").ok();
    let token = token.or(fallback.as_deref()).filter(|t| !t.is_empty());
    let agent_id = agent_id.filter(|a| !a.is_empty()).map(str::to_owned);
    let Some(reference) = token.filter(|t| !t.starts_with("agt_")) else {
        return Ok((agent_id, token.map(str::to_owned)));
    };

    let upper = reference.to_ascii_uppercase();
    let name = upper.strip_suffix("_TOKEN").filter(|n| !n.is_empty()).unwrap_or(&upper);
    let vault = open_vault()?;
    if let Some(saved) = vault.saved_token(name)?
        && let Some(value) = saved.expose_str()
    {
        return Ok((agent_id, Some(value.to_owned())));
    }
    let declared = vault.find_agent(name)?.unwrap_or_else(|| name.to_ascii_lowercase());
    Ok((Some(declared), None))
}
