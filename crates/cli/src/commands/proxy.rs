//! `proxy start|status|stop|logs`.

use std::sync::Arc;
use std::time::Duration;

use agentsecrets_core::audit::Transport;
use agentsecrets_proxy::remote::RunningProxy;
use agentsecrets_proxy::session::Session;
use agentsecrets_proxy::{Engine, EngineConfig, server};

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
        let listener = server::bind(args.port).await.map_err(|err| {
            anyhow::anyhow!(
                "cannot listen on 127.0.0.1:{}: {err}; another proxy may be running there \
                 (check with: agentsecrets proxy status) or choose another --port",
                args.port
            )
        })?;
        let port = listener.local_addr()?.port();
        let engine = Arc::new(Engine::new(vault, audit, project.clone(), config)?);
        let session = Session::new(port, !args.no_session_token);

        tracing::info!(port, project = %project.name, session_token = !args.no_session_token,
            local_http = args.allow_local_http, "proxy listening on 127.0.0.1:{port}");
        server::serve(listener, engine, session, &session_path).await?;
        Ok(())
    })
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
