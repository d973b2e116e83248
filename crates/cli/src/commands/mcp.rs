//! `mcp serve|install`: the MCP server over stdio, and its registration with MCP
//! clients. The server itself lives in `agentsecrets-mcp`; this module wires flags to it.
//!
//! While `mcp serve` runs, stdout is the protocol channel: nothing here prints to it.

use agentsecrets_core::names::AgentName;
use agentsecrets_mcp::install::{self, Change, Client, Plan, ServerEntry};
use agentsecrets_mcp::{McpServer, ServeOptions};
use agentsecrets_proxy::EngineConfig;
use anyhow::Context as _;

use crate::UsageError;
use crate::cli::{McpClient, McpCommand, McpInstallArgs, McpServeArgs};
use crate::commands::{caller_identity, current_project, open_both, runtime};

/// Runs an `mcp` subcommand.
pub fn run(command: McpCommand) -> anyhow::Result<()> {
    match command {
        McpCommand::Serve(args) => serve(&args),
        McpCommand::Install(args) => install(&args),
    }
}

fn serve(args: &McpServeArgs) -> anyhow::Result<()> {
    let (agent_id, agent_token) = caller_identity(args.agent_id.as_deref(), args.token.as_deref())?;
    if let Some(name) = &agent_id {
        AgentName::parse(name).map_err(|e| UsageError(format!("--agent-id: {e}")))?;
    }

    // The vault opens before the async runtime starts: a keychain backend may run its
    // own runtime, which must not nest inside ours.
    let (vault, audit) = open_both()?;
    let project = current_project(&vault)?;
    let options = ServeOptions {
        agent_id,
        agent_token,
        engine: EngineConfig { allow_local_http: args.allow_local_http, ..EngineConfig::default() },
    };

    let runtime = runtime()?;
    let served = runtime.block_on(async {
        let server = McpServer::new(vault, audit, project, options)?;
        server.serve_stdio().await
    });
    // A read of stdin may still be parked on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    Ok(served?)
}

fn install(args: &McpInstallArgs) -> anyhow::Result<()> {
    let client = match args.client {
        McpClient::Claude => Client::Claude,
        McpClient::Cursor => Client::Cursor,
    };
    let path = match &args.config {
        Some(path) => path.clone(),
        None => client.config_path()?,
    };
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let plan = install::plan(&path, &server_entry(&exe)?)?;

    print_plan(&plan, args.dry_run);
    if args.dry_run {
        println!("dry run: nothing written");
        return Ok(());
    }
    let backup = install::apply(&plan)?;
    if let Some(backup) = backup {
        println!("previous file kept as {}", backup.display());
    }
    if plan.change != Change::Unchanged {
        println!("restart {} to load it", client_title(client));
    }
    Ok(())
}

/// `<exe> mcp serve`, with the vault home passed on when it is not the default one: an MCP
/// client starts the server with its own environment, which lacks `AGENTSECRETS_HOME`.
fn server_entry(exe: &std::path::Path) -> anyhow::Result<ServerEntry> {
    let entry = ServerEntry::for_exe(exe);
    let Some(home) = std::env::var_os("AGENTSECRETS_HOME").filter(|p| !p.is_empty()) else {
        return Ok(entry);
    };
    let home = std::path::absolute(&home).context("cannot resolve AGENTSECRETS_HOME")?;
    let home = home.to_str().context("AGENTSECRETS_HOME is not valid UTF-8")?;
    Ok(entry.with_env("AGENTSECRETS_HOME", home))
}

fn print_plan(plan: &Plan, dry_run: bool) {
    let path = plan.path.display();
    let key = format!("mcpServers.{}", install::SERVER_NAME);
    match (plan.change, dry_run) {
        (Change::Added, false) => println!("added {key} to {path}"),
        (Change::Added, true) => println!("would add {key} to {path}"),
        (Change::Updated, false) => println!("updated {key} in {path}"),
        (Change::Updated, true) => println!("would update {key} in {path}"),
        (Change::Unchanged, _) => println!("unchanged: {key} in {path} is up to date"),
    }
    if let Some(previous) = plan.previous.as_ref().filter(|_| plan.change == Change::Updated) {
        println!("  was: {previous}");
    }
    if plan.change != Change::Unchanged {
        println!("  now: {}", plan.entry);
    }
}

fn client_title(client: Client) -> &'static str {
    match client {
        Client::Claude => "Claude Desktop",
        Client::Cursor => "Cursor",
    }
}
