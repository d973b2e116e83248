//! The `agentsecrets` binary: argument parsing and output only. Every command is a thin
//! call into `agentsecrets-store` or `agentsecrets-proxy`.
//!
//! Exit codes: 0 success, 1 failure, 2 usage. Data goes to stdout, diagnostics to
//! stderr, and nothing ever prompts when stdin or stdout is not a terminal.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// A mistake in how a command was invoked; exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A failure already reported on stdout or stderr; exits with status 1 and prints nothing
/// more.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
pub struct Reported;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.command);

    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => commands::init::run(&args),
        Command::Status => commands::init::status(),
        Command::Project(cmd) => commands::project::run(cmd),
        Command::Secrets(cmd) => commands::secrets::run(cmd),
        Command::Workspace(cmd) => commands::workspace::run(cmd),
        Command::Call(args) => commands::call::run(*args),
        Command::Env(args) => commands::env::run(args),
        Command::Proxy(cmd) => commands::proxy::run(cmd),
        Command::Log(cmd) => commands::log::run(cmd),
        Command::Agent(cmd) => commands::agent::run(cmd),
        Command::Mcp(cmd) => commands::mcp::run(cmd),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<Reported>().is_some() {
        return ExitCode::from(1);
    }
    let broken_pipe = err.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        let json =
            cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind);
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        // The reader went away (`| head`): that is not a failure of ours.
        return ExitCode::SUCCESS;
    }
    eprintln!("agentsecrets: error: {err:#}");
    if err.downcast_ref::<UsageError>().is_some() {
        return ExitCode::from(2);
    }
    ExitCode::from(1)
}

/// Logs go to stderr. The proxy logs one line per call at info; every other command stays
/// quiet below warnings unless `RUST_LOG` asks for more.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Proxy(cli::ProxyCommand::Start(_)) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}
