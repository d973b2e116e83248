//! Shared fixtures for the integration tests that drive the real `agentsecrets` binary:
//! a private home, a running proxy, and loopback upstream servers.
//!
//! Every upstream listens on `127.0.0.1` on a port the kernel picks; no test sends traffic
//! anywhere else.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

/// What replaces every echoed secret.
pub const MARKER: &str = "[REDACTED_BY_AGENTSECRETS]";

/// How long a test waits for a process or server to come up before it gives up.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentsecrets")
}

/// A port nothing listens on right now (bound, read and released).
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Standard base64 of some bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON string escaping of a text, without the surrounding quotes.
pub fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("serialize a string");
    quoted[1..quoted.len() - 1].to_owned()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The home
// ---------------------------------------------------------------------------------------

/// A private `AGENTSECRETS_HOME` in a temporary directory, with the keychain off.
pub struct TestHome {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Default for TestHome {
    fn default() -> Self {
        TestHome::new()
    }
}

impl TestHome {
    /// A fresh, empty home (the binary creates it on first use).
    pub fn new() -> TestHome {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let home = dir.path().join("home");
        TestHome { dir, home }
    }

    /// `$AGENTSECRETS_HOME`.
    pub fn path(&self) -> &Path {
        &self.home
    }

    /// The binary with this home and a clean environment: nothing of the test runner's
    /// environment (an `AGENTSECRETS_*` variable, `RUST_LOG`, a proxy setting) leaks in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("AGENTSECRETS_HOME", &self.home)
            .env("AGENTSECRETS_KEYCHAIN", "off")
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run agentsecrets")
    }

    /// Runs the binary with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.output().expect("run agentsecrets")
    }

    /// Runs the binary and insists on success; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "agentsecrets {args:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stores a secret, its value piped on stdin (any bytes but a trailing newline).
    pub fn set_secret(&self, key: &str, value: &[u8]) {
        let mut child = self
            .command(&["secrets", "set", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn secrets set");
        child.stdin.take().expect("stdin").write_all(value).expect("write the value");
        let out = child.wait_with_output().expect("wait for secrets set");
        assert!(out.status.success(), "secrets set {key} failed: {}", describe(&out));
    }

    /// Stores several secrets at once, given as `KEY=value` arguments.
    pub fn set_secrets(&self, secrets: &[(&str, &str)]) {
        let entries: Vec<String> = secrets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["secrets", "set"];
        args.extend(entries.iter().map(String::as_str));
        self.run_ok(&args);
    }

    /// Adds domains to the workspace allowlist.
    pub fn allow(&self, domains: &[&str]) {
        let mut args = vec!["workspace", "allowlist", "add"];
        args.extend_from_slice(domains);
        self.run_ok(&args);
    }

    /// Every audit entry, oldest first, read through `log list --format jsonl`.
    pub fn audit(&self) -> Vec<Value> {
        let out = self.run_ok(&["log", "list", "--format", "jsonl", "--last", "100000"]);
        out.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    }

    /// `session.json`, if present.
    pub fn session(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.home.join("session.json")).ok()?;
        Some(serde_json::from_str(&text).expect("session.json is JSON"))
    }

    /// Starts `proxy start` on a free port and waits until it answers `/health`.
    pub fn start_proxy(&self, options: ProxyOptions) -> ProxyProcess {
        ProxyProcess::start(self, options)
    }

    /// Every regular file under the home, recursively.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.home, &mut out);
        out
    }
}

/// Removes ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

/// Flags of `proxy start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyOptions {
    /// `--allow-local-http`.
    pub allow_local_http: bool,
    /// `--no-session-token`.
    pub no_session_token: bool,
    /// `AGENTSECRETS_UPSTREAM_TIMEOUT` in seconds.
    pub upstream_timeout_secs: Option<u64>,
}

impl ProxyOptions {
    /// `--allow-local-http` with a short upstream timeout: the usual test proxy.
    pub fn local() -> ProxyOptions {
        ProxyOptions {
            allow_local_http: true,
            no_session_token: false,
            upstream_timeout_secs: Some(2),
        }
    }
}

/// A running `agentsecrets proxy start`, killed when dropped.
pub struct ProxyProcess {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The session token from `session.json`.
    pub token: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    client: reqwest::blocking::Client,
}

impl ProxyProcess {
    fn start(home: &TestHome, options: ProxyOptions) -> ProxyProcess {
        let mut last_failure = String::new();
        // A port picked by binding and releasing can be taken by someone else before the
        // proxy binds it; try a few.
        for _ in 0..5 {
            let port = free_port();
            match ProxyProcess::try_start(home, options, port) {
                Ok(proxy) => return proxy,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("the proxy did not start: {last_failure}");
    }

    fn try_start(home: &TestHome, options: ProxyOptions, port: u16) -> Result<Self, String> {
        let port_text = port.to_string();
        let mut args = vec!["proxy", "start", "--port", port_text.as_str()];
        if options.allow_local_http {
            args.push("--allow-local-http");
        }
        if options.no_session_token {
            args.push("--no-session-token");
        }
        let mut cmd = home.command(&args);
        if let Some(secs) = options.upstream_timeout_secs {
            cmd.env("AGENTSECRETS_UPSTREAM_TIMEOUT", secs.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });

        let mut proxy = ProxyProcess {
            child,
            port,
            token: String::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
            client: client(),
        };
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("exited with {status}: {}", proxy.stderr_text()));
            }
            if proxy.healthy() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no /health answer: {}", proxy.stderr_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let session = home.session().ok_or("no session.json while the proxy runs")?;
        assert_eq!(session["port"], port, "session.json names the proxy's port");
        assert_eq!(session["pid"], proxy.child.id(), "session.json names the proxy's pid");
        proxy.token = session["token"].as_str().expect("session token").to_owned();
        Ok(proxy)
    }

    fn healthy(&self) -> bool {
        self.client
            .get(format!("http://127.0.0.1:{}/health", self.port))
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    /// `GET /health`.
    pub fn health(&self) -> Reply {
        let response = self
            .client
            .get(format!("http://127.0.0.1:{}/health", self.port))
            .send()
            .expect("GET /health");
        Reply::read(response)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>/proxy`.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}/proxy", self.port)
    }

    /// A `POST /proxy` aimed at `target`, with the session token.
    pub fn call(&self, target: &str) -> reqwest::blocking::RequestBuilder {
        self.bare_call(target).header("X-AS-Session-Token", &self.token)
    }

    /// A `POST /proxy` aimed at `target`, without the session token.
    pub fn bare_call(&self, target: &str) -> reqwest::blocking::RequestBuilder {
        self.client.post(self.proxy_url()).header("X-AS-Target-URL", target)
    }

    /// A raw request to the proxy port, for requests no client library would send.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to proxy");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        stream.write_all(request).expect("send raw request");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the proxy has logged at least `expected` per-call lines (its stderr
    /// is read by another thread), then returns how many there are.
    pub fn call_log_lines(&self, expected: usize) -> usize {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            let count = strip_ansi(&self.stderr_text())
                .lines()
                .filter(|line| line.contains(": call ") || line.ends_with(": call"))
                .count();
            if count >= expected || Instant::now() > deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the proxy with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit on its own (after `proxy stop`); returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(Instant::now() < deadline, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

/// A blocking client that neither decompresses nor follows redirects nor uses a proxy, so
/// tests see exactly what the agentsecrets proxy sent.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("build the test client")
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads a response to its end.
    pub fn read(response: reqwest::blocking::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().expect("read the response body").to_vec();
        Reply { status, headers, body }
    }

    /// Sends a request and reads the response.
    pub fn send(request: reqwest::blocking::RequestBuilder) -> Reply {
        Reply::read(request.send().expect("send the request"))
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Status line, headers and body as one byte string (what a caller can see).
    pub fn everything(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.status).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Asserts a proxy refusal: this status, this slug, JSON body.
    pub fn assert_refused(&self, status: u16, slug: &str) -> Value {
        assert_eq!(self.status, status, "status of {}", self.text());
        let json = self.json();
        assert_eq!(json["error"], slug, "slug of {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "message of {json}");
        json
    }
}

// ---------------------------------------------------------------------------------------
// Upstream servers
// ---------------------------------------------------------------------------------------

/// The runtime every upstream server runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start the upstream runtime")
    })
}

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Decoded query pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url_decode_pairs(&self.query)
    }

    /// Everything received, as one byte string.
    pub fn everything(&self) -> Vec<u8> {
        let mut out = format!("{} {}?{}\n", self.method, self.path, self.query).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The secret the upstream reflects back: the `X-Secret` header if sent, else the
    /// bearer token.
    fn secret(&self) -> String {
        if let Some(value) = self.header("x-secret") {
            return value.to_owned();
        }
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned()
    }
}

/// Decodes `a=1&b=x%20y` into pairs (`+` is a space).
pub fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// A loopback HTTP upstream that records every request it receives and answers by path:
///
/// - `/slow`: sleeps 30 s, then answers (longer than any test timeout);
/// - `/chunked`: streams a body in 3-byte chunks that splits the secret, its base64 and
///   its URL-encoded form across chunk boundaries;
/// - `/large`: a 3 MiB body with a `Content-Length`, holding the secret;
/// - `/broken`: starts a chunked body holding the secret, then breaks the connection;
/// - `/stream`: server-sent events, one about every 20 ms for 30 s;
/// - `/gzip`, `/deflate`, `/br`, `/zstd`: a body holding the secret, compressed with
///   that `Content-Encoding` whatever `Accept-Encoding` said;
/// - `/reflect`: the secret raw, base64, URL-encoded and JSON-escaped in the body, and
///   raw in an `X-Reflected` response header;
/// - `/redirect`: `302` to `/landing?token=<secret>&x=1` on this same server;
/// - `/status/<code>`: an empty answer with that status;
/// - anything else (the echo): a JSON object with the method, path, query, headers and
///   body it received.
///
/// "The secret" is the `X-Secret` request header when there is one, else the bearer token.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What an upstream remembers.
#[derive(Default)]
struct UpstreamState {
    received: Mutex<Vec<Received>>,
    /// `/stream` answers that sent their last event.
    streams_finished: std::sync::atomic::AtomicUsize,
}

impl Upstream {
    /// Starts the upstream on `127.0.0.1:0`.
    pub fn start() -> Upstream {
        let state: Arc<UpstreamState> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let log = state.clone();
        let addr = runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let app = axum::Router::new().fallback(move |request: Request| {
                let log = log.clone();
                async move { respond(request, log).await }
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
            addr
        });
        Upstream { addr, state, shutdown: Some(tx) }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// How many `/stream` answers ran to their end.
    pub fn streams_finished(&self) -> usize {
        self.state.streams_finished.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most recent request.
    pub fn last(&self) -> Received {
        self.received().pop().expect("the upstream received a request")
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn respond(request: Request, state: Arc<UpstreamState>) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default().to_vec();
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
        body,
    };
    state.received.lock().unwrap().push(received.clone());
    let secret = received.secret();

    let path = received.path.as_str();
    match path {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            plain(200, "finally")
        }
        "/chunked" => chunked(&secret),
        "/stream" => stream(state),
        "/broken" => broken(&secret),
        "/large" => Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Body::from(large_body(&secret)))
            .unwrap(),
        "/gzip" | "/deflate" | "/br" | "/zstd" => compressed(&path[1..], &secret),
        "/reflect" => reflect(&secret),
        "/redirect" => Response::builder()
            .status(302)
            .header("location", format!("/landing?token={}&x=1", url_encode(&secret)))
            .header("x-plain", "kept")
            .body(Body::from("moved"))
            .unwrap(),
        _ if path.starts_with("/status/") => {
            let code = path["/status/".len()..].parse().unwrap_or(500);
            plain(code, "status as asked")
        }
        _ => echo(&received),
    }
}

fn plain(status: u16, body: &'static str) -> Response {
    Response::builder().status(status).body(Body::from(body)).unwrap()
}

fn echo(received: &Received) -> Response {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &received.headers {
        headers.entry(name.clone()).or_default().push(value.clone());
    }
    let body = json!({
        "method": received.method,
        "path": received.path,
        "query": received.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&received.body),
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The body that reflects the secret in four forms.
pub fn reflected_body(secret: &str) -> String {
    format!(
        "{{\"raw\":\"{secret}\",\"b64\":\"{}\",\"url\":\"{}\",\"json\":\"{}\"}}",
        b64(secret.as_bytes()),
        url_encode(secret),
        json_escape(secret)
    )
}

fn reflect(secret: &str) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-reflected", secret)
        .header("x-reflected-b64", b64(secret.as_bytes()))
        .header("x-plain", "kept")
        .body(Body::from(reflected_body(secret)))
        .unwrap()
}

/// The body the chunked endpoint streams.
pub fn chunked_body(secret: &str) -> String {
    let filler = "lorem ipsum dolor sit amet ".repeat(40);
    format!(
        "start {filler} raw={secret} {filler} b64={} {filler} url={} end",
        b64(secret.as_bytes()),
        url_encode(secret)
    )
}

fn chunked(secret: &str) -> Response {
    let body = chunked_body(secret).into_bytes();
    let chunks: Vec<Vec<u8>> = body.chunks(3).map(<[u8]>::to_vec).collect();
    let stream = futures_stream(chunks);
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A stream that yields each chunk on its own, with a pause every few chunks so they
/// really travel separately.
fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(chunks.into_iter().enumerate()).then(|(i, chunk)| async move {
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(chunk)
    })
}

/// The `/large` answer: 3 MiB with a `Content-Length`, the secret in the middle and at
/// the end, too large for the proxy to read whole before answering.
pub fn large_body(secret: &str) -> String {
    let half = "0123456789abcdef".repeat(96 * 1024);
    format!("{half}{secret}{half}{}", b64(secret.as_bytes()))
}

fn broken(secret: &str) -> Response {
    let first = format!("partial answer raw={secret} and then");
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(first), Err(std::io::Error::other("the upstream breaks the body"))];
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap()
}

/// One server-sent event of the `/stream` answer.
pub fn stream_event(n: usize) -> String {
    format!("event: tick\ndata: {n:06} {}\n\n", "x".repeat(180))
}

fn stream(state: Arc<UpstreamState>) -> Response {
    use futures_util::StreamExt as _;
    let events = futures_util::stream::iter(0..1500).then(move |n| {
        let state = state.clone();
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if n == 1499 {
                state.streams_finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok::<_, std::io::Error>(stream_event(n))
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

/// The plain text the compressing endpoints send (before compression).
pub fn compressed_plain(secret: &str) -> String {
    format!("compressed answer: raw={secret} b64={} end", b64(secret.as_bytes()))
}

fn compressed(encoding: &str, secret: &str) -> Response {
    let plain = compressed_plain(secret).into_bytes();
    let body = compress(encoding, &plain);
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("content-encoding", encoding)
        .body(Body::from(body))
        .unwrap()
}

/// Compresses with an HTTP content coding.
pub fn compress(encoding: &str, plain: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(plain).unwrap();
            enc.finish().unwrap()
        }
        "deflate" => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(plain).unwrap();
            enc.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                enc.write_all(plain).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(plain, 3).unwrap(),
        other => panic!("unknown encoding {other}"),
    }
}

/// An upstream that reads a request and closes the connection without answering.
pub struct DroppingUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<Mutex<usize>>,
}

impl DroppingUpstream {
    /// Starts it on `127.0.0.1:0`.
    pub fn start() -> DroppingUpstream {
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        let addr = runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    *count.lock().unwrap() += 1;
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 4096];
                        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                            .await;
                        drop(socket);
                    });
                }
            });
            addr
        });
        DroppingUpstream { addr, accepted }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}
