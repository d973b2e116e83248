//! `project create|list|use|delete`.

use agentsecrets_core::names::ProjectName;
use agentsecrets_store::project_link;
use agentsecrets_store::vault::DEFAULT_PROJECT;
use anyhow::Context as _;

use crate::UsageError;
use crate::cli::ProjectCommand;
use crate::commands::open_vault;
use crate::output::box_table;

/// Runs a `project` subcommand.
pub fn run(command: ProjectCommand) -> anyhow::Result<()> {
    let vault = open_vault()?;
    match command {
        ProjectCommand::Create { name } => {
            let name = ProjectName::parse(&name).map_err(|e| UsageError(e.to_string()))?;
            vault.create_project(&name)?;
            println!("Created project '{name}'");
        }
        ProjectCommand::List => {
            // The name the directory is linked to, even a deleted one: a stale link must
            // not stop the listing (the SDK's `projects.list()` runs right after a delete).
            let current = linked_project()?;
            let rows = vault
                .projects()?
                .into_iter()
                .map(|p| {
                    let current = if p.name == current { "current, " } else { "" };
                    let description = format!("{current}{} secrets", p.secrets);
                    vec![p.name, vault.workspace_id().to_owned(), description]
                })
                .collect();
            println!("{}", box_table(&["Project", "Workspace", "Description"], rows));
        }
        ProjectCommand::Use { name } => {
            let project = vault.project(&name)?;
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let path = project_link::write(&cwd, &project.name)?;
            println!("Using project '{}' here ({})", project.name, path.display());
        }
        ProjectCommand::Delete { name, force } => {
            let project = vault.project(&name)?;
            // The default project can never go, so --force would not help it: let the
            // store say so instead of asking for a flag.
            if project.secrets > 0 && !force && project.name != DEFAULT_PROJECT {
                anyhow::bail!(
                    "project '{name}' still holds {} secrets; delete them first or pass --force",
                    project.secrets
                );
            }
            vault.delete_project(&name)?;
            println!("Deleted project '{name}'");
            if linked_project()? == project.name {
                eprintln!(
                    "this directory is still linked to '{name}': link it to another project \
                     with: agentsecrets project use NAME"
                );
            }
        }
    }
    Ok(())
}

/// The project the current directory is linked to, else the default project's name.
fn linked_project() -> anyhow::Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(project_link::find(&cwd)?.unwrap_or_else(|| DEFAULT_PROJECT.to_owned()))
}
