//! `init` and `status`.

use crate::cli::InitArgs;
use crate::commands::{current_project, home, open_vault, runtime};

/// Creates (or finds) the home, vault and default project, and says where they are.
pub fn run(_args: &InitArgs) -> anyhow::Result<()> {
    // Nothing here asks a question, so --non-interactive changes nothing; it is accepted
    // so scripts written for the reference tool keep working.
    let vault = open_vault()?;
    let home = vault.home();
    let project = current_project(&vault)?;

    println!("agentsecrets is ready");
    println!("  Home       {}", home.path().display());
    println!("  Vault      {}", home.vault_db().display());
    println!("  Audit log  {}", home.audit_db().display());
    println!("  Vault key  {}", key_location(&vault));
    println!("  Workspace  {}", vault.workspace_id());
    println!("  Project    {}", project.name);
    Ok(())
}

/// Prints where things are, the current project, and whether the proxy runs.
pub fn status() -> anyhow::Result<()> {
    let vault = open_vault()?;
    let project = current_project(&vault)?;
    let allowlist = vault.allowlist()?;
    let session_path = home()?.session_file();
    let running =
        runtime()?.block_on(agentsecrets_proxy::remote::RunningProxy::find(&session_path));

    println!("Home       {}", vault.home().path().display());
    println!("Vault key  {}", key_location(&vault));
    println!("Workspace  {}", vault.workspace_id());
    println!("Project    {} ({} secrets)", project.name, project.secrets);
    println!("Allowlist  {} domains", allowlist.len());
    match running {
        Some(proxy) => {
            let session = proxy.session();
            println!("Proxy      running on 127.0.0.1:{} (pid {})", session.port, session.pid);
        }
        None => println!("Proxy      not running"),
    }
    Ok(())
}

fn key_location(vault: &agentsecrets_store::Vault) -> String {
    match vault.key_source() {
        agentsecrets_store::KeySource::File => {
            format!("key file {}", vault.home().key_file().display())
        }
        agentsecrets_store::KeySource::Keychain => "OS keychain".to_owned(),
        agentsecrets_store::KeySource::Passphrase => {
            "wrapped by AGENTSECRETS_PASSPHRASE (Argon2id)".to_owned()
        }
    }
}
