//! `proxy start|status|stop|logs`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentsecrets_core::audit::Transport;
use agentsecrets_proxy::remote::RunningProxy;
use agentsecrets_proxy::session::Session;
use agentsecrets_proxy::{Engine, EngineConfig, server};
use anyhow::Context as _;

use crate::cli::{ProxyCommand, ProxyStartArgs};
use crate::commands::{current_project, home, open_both, runtime};
use crate::{Reported, UsageError};

/// Runs a `proxy` subcommand.
pub fn run(command: ProxyCommand) -> anyhow::Result<()> {
    match command {
        ProxyCommand::Start(args) => start(&args),
        ProxyCommand::Status => status(),
        ProxyCommand::Stop => stop(),
        ProxyCommand::Logs(filters) => crate::commands::log::list(&filters),
    }
}

fn start(args: &ProxyStartArgs) -> anyhow::Result<()> {
    if args.detach {
        return detach(args.port);
    }
    // The vault opens before the async runtime starts: a keychain backend may run its
    // own runtime, which must not nest inside ours.
    let (vault, audit) = open_both()?;
    let project = current_project(&vault)?;
    let session_path = vault.home().session_file();
    let config = EngineConfig {
        allow_local_http: args.allow_local_http,
        transport: Transport::Http,
        ..timeouts_from_env()?
    };

    runtime()?.block_on(async {
        let listener = server::bind(args.port).await.map_err(|err| busy_port(args.port, &err))?;
        let port = listener.local_addr()?.port();
        let engine = Arc::new(Engine::new(vault, audit, project.clone(), config)?);
        let session = Session::new(port, !args.no_session_token);

        tracing::info!(port, project = %project.name, session_token = !args.no_session_token,
            local_http = args.allow_local_http, "proxy listening on 127.0.0.1:{port}");
        server::serve(listener, engine, session, &session_path).await?;
        Ok(())
    })
}

fn busy_port(port: u16, err: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot listen on 127.0.0.1:{port}: {err}; another proxy may be running there \
         (check with: agentsecrets proxy status) or choose another --port"
    )
}

/// How long `proxy start --detach` waits for the background proxy to answer `/health`.
const DETACH_WAIT: Duration = Duration::from_secs(10);

/// The variable that asks `proxy start` to detach (the official SDK's `proxy.start()`
/// passes only `--port`); removed from the detached process's environment.
const DETACH_ENV: &str = "AGENTSECRETS_PROXY_DETACH";

/// `proxy start --detach`: this same command line minus `--detach`, run as a background
/// process in its own process group, stdin from /dev/null and its output appended to
/// `$AGENTSECRETS_HOME/proxy.log` (0600). Returns once that process answers `/health`, so
/// the caller's pipes close at once (the official SDK's `proxy.start()` captures them).
fn detach(port: u16) -> anyhow::Result<()> {
    // A busy port is reported here, to the caller, rather than only in the log file.
    if port != 0 {
        drop(
            std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                .map_err(|err| busy_port(port, &err))?,
        );
    }
    let home = home()?;
    home.ensure()?;
    let log_path = home.path().join("proxy.log");
    let log = open_log(&log_path)?;
    let program = std::env::current_exe().context("cannot find this program to re-run it")?;
    let mut command = std::process::Command::new(program);
    command
        .args(std::env::args_os().skip(1).filter(|arg| arg != "--detach"))
        .env_remove(DETACH_ENV)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the proxy log")?)
        .stderr(log);
    own_process_group(&mut command);
    let mut child = command.spawn().context("cannot start the proxy in the background")?;
    let pid = child.id();

    let session_path = home.session_file();
    let runtime = runtime()?;
    let deadline = Instant::now() + DETACH_WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            let reason = last_line(&log_path).unwrap_or_else(|| status.to_string());
            anyhow::bail!("the proxy stopped before it answered: {reason}");
        }
        let answering = runtime.block_on(RunningProxy::find(&session_path));
        if let Some(proxy) = answering.filter(|p| p.session().pid == pid) {
            println!("proxy started on 127.0.0.1:{} (pid {pid})", proxy.session().port);
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "the proxy did not answer /health within {} seconds; see {}",
                DETACH_WAIT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Its own process group, so that the terminal's Ctrl-C and hang-up spare it.
#[cfg(unix)]
fn own_process_group(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    command.process_group(0);
}

#[cfg(not(unix))]
fn own_process_group(_command: &mut std::process::Command) {}

/// Opens the proxy log for appending, creating it 0600.
fn open_log(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// The last non-empty line of the proxy log: why a detached proxy stopped.
fn last_line(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned())
}

/// The engine's defaults, with `AGENTSECRETS_CONNECT_TIMEOUT` and
/// `AGENTSECRETS_UPSTREAM_TIMEOUT` (whole seconds) overriding its upstream timeouts.
fn timeouts_from_env() -> anyhow::Result<EngineConfig> {
    let mut config = EngineConfig::default();
    if let Some(timeout) = env_seconds("AGENTSECRETS_CONNECT_TIMEOUT")? {
        config.connect_timeout = timeout;
    }
    if let Some(timeout) = env_seconds("AGENTSECRETS_UPSTREAM_TIMEOUT")? {
        config.upstream_timeout = timeout;
    }
    Ok(config)
}

fn env_seconds(name: &str) -> anyhow::Result<Option<Duration>> {
    let Ok(raw) = std::env::var(name) else { return Ok(None) };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    match raw.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => {
            Err(UsageError(format!("{name}={raw:?}: give a whole number of seconds above 0"))
                .into())
        }
    }
}

fn status() -> anyhow::Result<()> {
    let session_path = home()?.session_file();
    runtime()?.block_on(async {
        let Some(proxy) = RunningProxy::find(&session_path).await else {
            println!("proxy: not running");
            return Err(Reported.into());
        };
        let status = proxy.status().await?;
        let field = |name: &str| status.get(name).map(|v| v.to_string()).unwrap_or_default();
        println!("proxy: running");
        println!("  Port          {}", field("port"));
        println!("  PID           {}", field("pid"));
        println!("  Started       {}", field("started_at").trim_matches('"'));
        println!("  Uptime        {}s", field("uptime_secs"));
        println!("  Calls served  {}", field("calls_served"));
        println!("  Project       {}", field("project").trim_matches('"'));
        Ok(())
    })
}

fn stop() -> anyhow::Result<()> {
    let session_path = home()?.session_file();
    runtime()?.block_on(async {
        let Some(proxy) = RunningProxy::find(&session_path).await else {
            eprintln!("proxy is not running");
            return Ok(());
        };
        proxy.stop().await?;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if RunningProxy::find(&session_path).await.is_none() {
                println!("proxy stopped");
                return Ok(());
            }
        }
        anyhow::bail!("the proxy (pid {}) did not stop within 5 seconds", proxy.session().pid)
    })
}
