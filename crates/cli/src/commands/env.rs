//! `env -- COMMAND [ARGS...]`: run a program with the project's secrets in its
//! environment. Nothing is written to disk and nothing is printed to stdout; on Unix the
//! program replaces this process, so its signals and exit code are its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agentsecrets_core::audit::Transport;
use agentsecrets_core::names::SecretKey;
use agentsecrets_core::secret::SecretValue;
use agentsecrets_proxy::{CallSpec, Engine, EngineConfig};

use crate::UsageError;
use crate::cli::EnvArgs;
use crate::commands::{caller_identity, current_project, open_both};

/// Runs `env`.
pub fn run(args: EnvArgs) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| UsageError("name the command to run after --".to_owned()))?;
    let (agent_id, agent_token) = caller_identity(args.agent_id.as_deref(), args.token.as_deref())?;
    // A name that cannot be a secret cannot be an environment variable either: refuse it
    // before anything runs, rather than report it missing.
    for name in &args.only {
        SecretKey::parse(name).map_err(|e| {
            UsageError(format!("--only: {e}; every name must also be an environment variable name"))
        })?;
    }
    let Some(path) = find_program(program) else {
        anyhow::bail!("command not found: {program}");
    };

    let (vault, audit) = open_both()?;
    let project = current_project(&vault)?;
    let config = EngineConfig { transport: Transport::Env, ..EngineConfig::default() };
    let engine = Engine::new(vault, audit, project, config)?;
    let session_id = run_session_id();
    let caller = CallSpec {
        agent_id,
        agent_token,
        session_id: Some(session_id.clone()),
        ..CallSpec::default()
    };

    // The engine commits the audit entry before it hands out any value.
    let values = engine
        .env_secrets(&program_name(program), &args.only, &caller)
        .map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
    engine.flush_token_use();

    let mut command = std::process::Command::new(path);
    command.args(rest);
    // The program's own calls (`agentsecrets call`, the SDK) join this run's session.
    command.env("AGENTSECRETS_SESSION_ID", &session_id);
    for (name, value) in &values {
        if value.expose().contains(&0) {
            anyhow::bail!("secret '{name}' holds a NUL byte and cannot be an environment variable");
        }
        command.env(name, os_value(value));
    }
    exec(command, program)
}

/// The session of this run: the one this process inherited when it runs inside another
/// agent run, else a new `env_<ulid>`.
fn run_session_id() -> String {
    match std::env::var("AGENTSECRETS_SESSION_ID") {
        Ok(inherited) if !inherited.is_empty() => inherited,
        _ => format!("env_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
    }
}

#[cfg(unix)]
fn exec(mut command: std::process::Command, program: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;

    // `exec` only returns on failure.
    let err = command.exec();
    anyhow::bail!("cannot run {program}: {err}")
}

#[cfg(not(unix))]
fn exec(mut command: std::process::Command, program: &str) -> anyhow::Result<()> {
    let status = command.status().map_err(|err| anyhow::anyhow!("cannot run {program}: {err}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

#[cfg(unix)]
fn os_value(value: &SecretValue) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(value.expose()).to_owned()
}

#[cfg(not(unix))]
fn os_value(value: &SecretValue) -> OsString {
    OsString::from(String::from_utf8_lossy(value.expose()).into_owned())
}

/// The program's path: as given when it holds a separator, else the first match on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains(std::path::MAIN_SEPARATOR) {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The command's file name only: its arguments may carry values and are never logged.
fn program_name(program: &str) -> String {
    Path::new(program)
        .file_name()
        .map_or_else(|| program.to_owned(), |name| name.to_string_lossy().into_owned())
}
