//! One module per command group. Each opens what it needs and calls into the libraries.

pub mod call;
pub mod init;
pub mod log;
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
