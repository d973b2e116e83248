//! [`AgentSecrets`]: the async client, and the [`Builder`] that configures it.
//!
//! The client finds the running proxy through `session.json` in the agentsecrets home,
//! re-read on every call so that a restarted proxy (new port, rotated session token) is
//! picked up without rebuilding the client.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentsecrets_core::names::AgentName;
use http::{HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::error::{self, Error};
use crate::launch::Launch;
use crate::policy::Explanation;
use crate::request::Request;
use crate::response::Response;

/// The port a proxy listens on when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8765;

/// How long a `/health` probe waits.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting to the proxy may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const AGENT_ID: HeaderName = HeaderName::from_static("x-as-agent-id");
const AGENT_TOKEN: HeaderName = HeaderName::from_static("x-as-agent-token");
const SESSION_ID: HeaderName = HeaderName::from_static("x-as-session-id");
const SESSION_TOKEN: HeaderName = HeaderName::from_static("x-as-session-token");
const EXPLAIN: HeaderName = HeaderName::from_static("x-as-explain");
const TARGET_URL: HeaderName = HeaderName::from_static("x-as-target-url");
const METHOD: HeaderName = HeaderName::from_static("x-as-method");
const INJECT: HeaderName = HeaderName::from_static("x-as-inject");

/// A client of the local agentsecrets proxy.
///
/// Cheap to clone (the connection pool is shared). Its `Debug` output never shows the
/// agent token.
#[derive(Clone)]
pub struct AgentSecrets {
    home: PathBuf,
    port: Option<u16>,
    agent_id: Option<String>,
    session_id: Option<String>,
    has_token: bool,
    identity: HeaderMap,
    timeout: Option<Duration>,
    launch: Launch,
    http: reqwest::Client,
}

/// What `GET /health` says about a running proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Health {
    /// `ok` when the proxy is serving.
    pub status: String,
    /// The project the proxy serves.
    pub project: String,
    /// The proxy's version.
    pub version: String,
}

impl AgentSecrets {
    /// A builder with every setting at its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The agentsecrets home this client reads `session.json` from.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The declared agent name sent with every call, if any.
    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    /// The session id sent with every call, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The port calls go to now: the configured one, else the running proxy's from
    /// `session.json`, else [`DEFAULT_PORT`].
    pub fn port(&self) -> Result<u16, Error> {
        Ok(self.endpoint()?.0)
    }

    /// Makes one call through the proxy.
    ///
    /// An upstream answer of any status is `Ok`; the proxy's own refusals (allowlist,
    /// identity, missing secret, SSRF, upstream failure, ...) are typed [`Error`]s.
    pub async fn call(&self, request: Request) -> Result<Response, Error> {
        let (status, headers, body) = self.send(request, false).await?;
        if let Some(refusal) = error::refusal(status, &headers, &body) {
            return Err(refusal);
        }
        Ok(Response::new(status, headers, body))
    }

    /// Asks the proxy what it would decide about `request` (`X-AS-Explain`): allowed, or
    /// the refusal and the rule behind it. No secret is read, the upstream is not
    /// contacted, and the audit log records an `explain` entry only.
    pub async fn explain(&self, request: Request) -> Result<Explanation, Error> {
        let (status, headers, body) = self.send(request, true).await?;
        // A refusal before the decision (a missing session token) is still an error.
        if let Some(refusal) = error::refusal(status, &headers, &body) {
            return Err(refusal);
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Sends a request to `/proxy` and reads the whole answer.
    async fn send(
        &self,
        request: Request,
        explain: bool,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), Error> {
        let parts = request.into_parts()?;
        let (port, session_token) = self.endpoint()?;

        let mut headers = parts.headers;
        for (name, value) in &self.identity {
            headers.insert(name, value.clone());
        }
        headers.insert(TARGET_URL, parts.target);
        headers.insert(METHOD, parts.method);
        if let Some(inject) = parts.inject {
            headers.insert(INJECT, inject);
        }
        if let Some(token) = session_token {
            headers.insert(SESSION_TOKEN, sensitive(&token)?);
        }
        if explain {
            headers.insert(EXPLAIN, HeaderValue::from_static("1"));
        }

        let mut outbound =
            self.http.post(proxy_url(port, "/proxy")).headers(headers).body(parts.body);
        if let Some(timeout) = self.timeout {
            outbound = outbound.timeout(timeout);
        }
        let answer = outbound.send().await.map_err(not_running_if_unreachable)?;

        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = answer.bytes().await?;
        Ok((status, headers, body))
    }

    /// The `agentsecrets` binary this client runs (for `ensure_proxy` and policy calls).
    pub(crate) fn binary(&self) -> &Path {
        &self.launch.binary
    }

    /// Asks the proxy whether it is up (`GET /health`, no session token needed).
    pub async fn health(&self) -> Result<Health, Error> {
        self.health_at(self.endpoint()?.0).await
    }

    /// Makes sure a proxy is running, starting one if none answers.
    ///
    /// The proxy is `agentsecrets proxy start --port N` (the binary from
    /// [`Builder::binary`], else `$AGENTSECRETS_BIN`, else `agentsecrets` on `PATH`; `N`
    /// the configured port or [`DEFAULT_PORT`]), run detached with its standard streams
    /// closed and this client's home, so it outlives the program. It is waited for until
    /// it answers `/health`, at most [`Builder::start_timeout`] (10 s by default).
    pub async fn ensure_proxy(&self) -> Result<Health, Error> {
        match self.health().await {
            Err(Error::ProxyNotRunning) => {}
            answered => return answered,
        }

        let port = self.port.unwrap_or(DEFAULT_PORT);
        let mut child = self.launch.spawn(&self.home, port)?;
        let deadline = tokio::time::Instant::now() + self.launch.timeout;
        loop {
            // The proxy writes session.json before it serves: an answer without it comes
            // from some other proxy on that port (of another home), not from ours.
            if self.session_port() == Some(port)
                && let Ok(health) = self.health_at(port).await
            {
                crate::launch::reap_in_background(child);
                return Ok(health);
            }
            if let Some(status) = child.try_wait()? {
                let message = format!(
                    "the proxy exited ({status}) before answering on 127.0.0.1:{port} (is \
                     the port taken?); run `agentsecrets proxy start --port {port}` to see why"
                );
                return Err(Error::ProxyStart { message });
            }
            if tokio::time::Instant::now() >= deadline {
                // A proxy that never answered is of no use to anyone: stop the one we
                // started rather than leave it half up.
                let _ = child.kill();
                let _ = child.wait();
                let secs = self.launch.timeout.as_secs_f32();
                let message = format!("no answer on 127.0.0.1:{port} within {secs:.1} s");
                return Err(Error::ProxyStart { message });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health_at(&self, port: u16) -> Result<Health, Error> {
        let answer = self
            .http
            .get(proxy_url(port, "/health"))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(not_running_if_unreachable)?;
        if !answer.status().is_success() {
            return Err(Error::ProxyNotRunning);
        }
        let body = answer.bytes().await?;
        serde_json::from_slice(&body).map_err(|_| Error::ProxyNotRunning)
    }

    /// The port in `session.json`, if there is a readable one.
    fn session_port(&self) -> Option<u16> {
        read_session(&self.home.join("session.json")).ok().flatten()?.port
    }

    /// The port to call and the session token to present, from the configuration and
    /// `session.json`.
    fn endpoint(&self) -> Result<(u16, Option<Zeroizing<String>>), Error> {
        let session = read_session(&self.home.join("session.json"))?;
        let (session_port, token) = match session {
            Some(session) => (session.port, session.token.map(Zeroizing::new)),
            None => (None, None),
        };
        Ok((self.port.or(session_port).unwrap_or(DEFAULT_PORT), token))
    }
}

impl std::fmt::Debug for AgentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSecrets")
            .field("home", &self.home)
            .field("port", &self.port)
            .field("agent_id", &self.agent_id)
            .field("agent_token", &self.has_token.then_some("[redacted]"))
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Configures an [`AgentSecrets`] client. Every setting is optional.
#[derive(Clone, Default)]
pub struct Builder {
    home: Option<PathBuf>,
    port: Option<u16>,
    agent_id: Option<String>,
    agent_token: Option<Zeroizing<String>>,
    session_id: Option<String>,
    timeout: Option<Duration>,
    binary: Option<PathBuf>,
    start_args: Vec<String>,
    start_timeout: Option<Duration>,
}

impl Builder {
    /// Declares the calling agent's name (`X-AS-Agent-ID`): 1 to 64 of
    /// `[A-Za-z0-9._-]`, starting with a letter or digit. Without it,
    /// `$AGENTSECRETS_AGENT_ID` is used when set.
    pub fn agent_id(mut self, name: impl Into<String>) -> Builder {
        self.agent_id = Some(name.into());
        self
    }

    /// Presents an issued agent token (`X-AS-Agent-Token`, `agt_...`), which the proxy
    /// verifies on every call. Without it, `$AGENTSECRETS_TOKEN` (or `$AS_AGENT_TOKEN`) is
    /// used when set. The token is never shown by `Debug`.
    pub fn agent_token(mut self, token: impl Into<String>) -> Builder {
        self.agent_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// Ties every call of this client to one agent run (`X-AS-Session-ID`), as recorded in
    /// the audit log.
    pub fn session_id(mut self, id: impl Into<String>) -> Builder {
        self.session_id = Some(id.into());
        self
    }

    /// The agentsecrets home; default `$AGENTSECRETS_HOME`, else `~/.agentsecrets`.
    pub fn home(mut self, path: impl Into<PathBuf>) -> Builder {
        self.home = Some(path.into());
        self
    }

    /// The proxy's port; default the running proxy's from `session.json`, else 8765.
    /// [`AgentSecrets::ensure_proxy`] starts a proxy on this port.
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// A limit on the whole of each call, upstream time included; default none (the
    /// proxy applies its own upstream timeouts).
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.timeout = Some(timeout);
        self
    }

    /// The `agentsecrets` binary [`AgentSecrets::ensure_proxy`] runs; default
    /// `$AGENTSECRETS_BIN`, else `agentsecrets` found on `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Builder {
        self.binary = Some(path.into());
        self
    }

    /// Extra arguments for `agentsecrets proxy start` when
    /// [`AgentSecrets::ensure_proxy`] starts a proxy, such as `--allow-local-http`.
    pub fn start_args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.start_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// How long [`AgentSecrets::ensure_proxy`] waits for a proxy it started; default 10 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Builder {
        self.start_timeout = Some(timeout);
        self
    }

    /// Checks the settings and builds the client. Nothing is contacted: a proxy need not
    /// be running yet.
    pub fn build(self) -> Result<AgentSecrets, Error> {
        self.build_with_env(|name| std::env::var_os(name))
    }

    /// [`Builder::build`], reading the environment through `env`.
    pub(crate) fn build_with_env(
        self,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<AgentSecrets, Error> {
        let text = |name: &str| {
            env(name).and_then(|v| v.into_string().ok()).filter(|v| !v.trim().is_empty())
        };
        let home = resolve_home(self.home, &env)?;
        let agent_id = self.agent_id.or_else(|| text("AGENTSECRETS_AGENT_ID"));
        let agent_token = self
            .agent_token
            .or_else(|| text("AGENTSECRETS_TOKEN").map(Zeroizing::new))
            .or_else(|| text("AS_AGENT_TOKEN").map(Zeroizing::new));

        let mut identity = HeaderMap::new();
        if let Some(name) = &agent_id {
            AgentName::parse(name).map_err(|err| Error::Config { message: err.to_string() })?;
            identity.insert(AGENT_ID, config_value(name, "agent id")?);
        }
        if let Some(token) = &agent_token {
            let value = sensitive(token).map_err(|_| Error::Config {
                message: "the agent token must be printable ASCII".to_owned(),
            })?;
            identity.insert(AGENT_TOKEN, value);
        }
        if let Some(id) = &self.session_id {
            if id.is_empty() {
                return Err(Error::Config { message: "the session id is empty".to_owned() });
            }
            identity.insert(SESSION_ID, config_value(id, "session id")?);
        }

        let binary = crate::launch::resolve_binary(self.binary, &env);
        let launch = Launch {
            binary,
            args: self.start_args,
            timeout: self.start_timeout.unwrap_or(Duration::from_secs(10)),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;

        Ok(AgentSecrets {
            home,
            port: self.port,
            agent_id,
            session_id: self.session_id,
            has_token: agent_token.is_some(),
            identity,
            timeout: self.timeout,
            launch,
            http,
        })
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("home", &self.home)
            .field("port", &self.port)
            .field("agent_id", &self.agent_id)
            .field("agent_token", &self.agent_token.as_ref().map(|_| "[redacted]"))
            .field("session_id", &self.session_id)
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

/// `session.json` as the proxy writes it; only what the client needs.
#[derive(serde::Deserialize)]
struct SessionFile {
    token: Option<String>,
    port: Option<u16>,
}

/// Reads `session.json`; `None` when there is none (no proxy has run, or it stopped
/// cleanly).
fn read_session(path: &Path) -> Result<Option<SessionFile>, Error> {
    let text = match std::fs::read(path) {
        Ok(text) => Zeroizing::new(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            let message = format!("{}: {err}", path.display());
            return Err(Error::Io(std::io::Error::new(err.kind(), message)));
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|err| Error::Config {
        message: format!("{}: not a proxy session file: {err}", path.display()),
    })
}

/// `$AGENTSECRETS_HOME`, else `$HOME/.agentsecrets`, unless given.
pub(crate) fn resolve_home(
    explicit: Option<PathBuf>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, Error> {
    if let Some(home) = explicit {
        return Ok(home);
    }
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(home) = set("AGENTSECRETS_HOME") {
        return Ok(PathBuf::from(home));
    }
    let user_home = set("HOME").or_else(|| set("USERPROFILE")).ok_or_else(|| Error::Config {
        message: "cannot find the agentsecrets home: set AGENTSECRETS_HOME or HOME".to_owned(),
    })?;
    Ok(PathBuf::from(user_home).join(".agentsecrets"))
}

fn config_value(value: &str, what: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::Config { message: format!("the {what} must be printable ASCII") })
}

/// A header value that `Debug` and HTTP/2 header compression treat as a secret.
fn sensitive(value: &str) -> Result<HeaderValue, Error> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| Error::Config { message: "a token must be printable ASCII".to_owned() })?;
    header.set_sensitive(true);
    Ok(header)
}

fn proxy_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// A connection the proxy's port refused means no proxy; anything else stays an HTTP
/// error.
fn not_running_if_unreachable(err: reqwest::Error) -> Error {
    if err.is_connect() { Error::ProxyNotRunning } else { Error::Http(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_home_comes_from_the_override_then_the_environment() {
        let env = env_of(&[("AGENTSECRETS_HOME", "/srv/as"), ("HOME", "/home/u")]);
        let only_home = env_of(&[("HOME", "/home/u"), ("AGENTSECRETS_HOME", "")]);

        assert_eq!(resolve_home(Some("/x".into()), &env).unwrap(), PathBuf::from("/x"));
        assert_eq!(resolve_home(None, &env).unwrap(), PathBuf::from("/srv/as"));
        assert_eq!(resolve_home(None, &only_home).unwrap(), PathBuf::from("/home/u/.agentsecrets"));
        assert!(resolve_home(None, env_of(&[])).is_err());
    }

    #[test]
    fn identity_falls_back_to_the_environment() {
        let env = env_of(&[
            ("HOME", "/home/u"),
            ("AGENTSECRETS_AGENT_ID", "env-agent"),
            ("AS_AGENT_TOKEN", "agt_ws_fromenv"),
        ]);

        let client = AgentSecrets::builder().build_with_env(&env).unwrap();
        let explicit = AgentSecrets::builder().agent_id("mine").build_with_env(&env).unwrap();

        assert_eq!(client.agent_id(), Some("env-agent"));
        assert_eq!(client.identity[AGENT_TOKEN], "agt_ws_fromenv");
        assert_eq!(explicit.agent_id(), Some("mine"));
    }

    #[test]
    fn a_bad_agent_name_is_refused_at_build() {
        let env = env_of(&[("HOME", "/home/u")]);

        let err = AgentSecrets::builder().agent_id("bad name\x1b[31m").build_with_env(&env);

        assert!(matches!(err, Err(Error::Config { .. })));
    }

    #[test]
    fn debug_never_shows_the_agent_token() {
        let env = env_of(&[("HOME", "/home/u")]);
        let builder = AgentSecrets::builder().agent_id("bot").agent_token("agt_ws_very_secret");

        let builder_shown = format!("{builder:?}");
        let client_shown = format!("{:?}", builder.build_with_env(&env).unwrap());

        for shown in [builder_shown, client_shown] {
            assert!(!shown.contains("very_secret"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn the_port_comes_from_the_override_then_the_session_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[]);
        let client = AgentSecrets::builder().home(dir.path()).build_with_env(&env).unwrap();
        let pinned =
            AgentSecrets::builder().home(dir.path()).port(9001).build_with_env(&env).unwrap();

        assert_eq!(client.port().unwrap(), DEFAULT_PORT);
        std::fs::write(dir.path().join("session.json"), r#"{"token":"as_sess_x","port":4242}"#)
            .unwrap();
        assert_eq!(client.port().unwrap(), 4242);
        assert_eq!(pinned.port().unwrap(), 9001);
        assert_eq!(client.endpoint().unwrap().1.as_deref().map(String::as_str), Some("as_sess_x"));
    }

    #[tokio::test]
    async fn a_closed_port_means_no_proxy_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = AgentSecrets::builder()
            .home(dir.path())
            .port(port)
            .build_with_env(env_of(&[]))
            .unwrap();

        let health = client.health().await;
        let call = client.call(Request::get("https://x.test").bearer("K")).await;

        assert!(matches!(health, Err(Error::ProxyNotRunning)), "{health:?}");
        assert!(matches!(call, Err(Error::ProxyNotRunning)), "{call:?}");
    }
}
