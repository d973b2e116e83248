//! `project create|list|use|delete`.

use agentsecrets_core::names::ProjectName;
use agentsecrets_store::project_link;
use agentsecrets_store::vault::DEFAULT_PROJECT;
use anyhow::Context as _;

use crate::UsageError;
use crate::cli::ProjectCommand;
use crate::commands::{current_project, open_vault};
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
            let current = current_project(&vault)?.name;
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
        }
    }
    Ok(())
}
