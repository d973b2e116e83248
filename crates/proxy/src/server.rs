//! The proxy's HTTP face: `GET /health`, `ANY /proxy` and the local admin endpoints
//! used by `proxy status` and `proxy stop`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use agentsecrets_core::inject::Injection;
use agentsecrets_core::refusal::{Refusal, Slug};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::engine::{CallSpec, Engine};
use crate::session::{Session, tokens_match};

/// Largest total size of a request's headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The header a proxy refusal carries, so a client can tell it from an upstream error.
pub const REFUSAL_HEADER: &str = "x-as-refusal";

/// Everything a request handler needs.
pub struct ProxyState {
    engine: Arc<Engine>,
    session: Session,
    started: Instant,
    stop: Notify,
}

/// Binds the listener; a busy port is reported to the caller before anything else starts.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// Serves until `proxy stop`, Ctrl-C or SIGTERM. The session file is written once the
/// listener is bound and removed on a clean stop.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    session: Session,
    session_path: &std::path::Path,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    engine.set_own_port(port);
    session.write(session_path).map_err(std::io::Error::other)?;

    let state =
        Arc::new(ProxyState { engine, session, started: Instant::now(), stop: Notify::new() });
    let app = Router::new()
        .route("/health", get(health))
        .route("/proxy", any(proxy))
        .route("/admin/status", get(status))
        .route("/admin/stop", post(stop))
        .with_state(state.clone());

    let flusher = tokio::spawn(flush_token_use(state.engine.clone()));
    let shutdown = shutdown_signal(state.clone());
    // Without TCP_NODELAY a response written in two parts waits on the caller's delayed
    // ACK (40 ms on Linux) whenever its second part is small.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a caller's connection");
        }
    });
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    flusher.abort();
    state.engine.flush_token_use();
    crate::session::Session::remove_if_ours(session_path);
    tracing::info!("proxy stopped");
    result
}

/// Token last-use times are written in batches, so that verifying a token on the hot path
/// is never a registry write.
async fn flush_token_use(engine: Arc<Engine>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        every.tick().await;
        let engine = engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.flush_token_use()).await;
    }
}

async fn shutdown_signal(state: Arc<ProxyState>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
        () = state.stop.notified() => {},
    }
    tracing::info!("proxy stopping");
}

async fn health(State(state): State<Arc<ProxyState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "project": state.engine.project().name,
        "version": env!("CARGO_PKG_VERSION"),
    });
    axum::Json(body).into_response()
}

async fn status(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if !has_session_token(&state, &headers) {
        return refusal_response(&session_refusal());
    }
    let body = serde_json::json!({
        "status": "running",
        "port": state.session.port,
        "pid": state.session.pid,
        "started_at": state.session.started_at,
        "uptime_secs": state.started.elapsed().as_secs(),
        "calls_served": state.engine.calls_served(),
        "project": state.engine.project().name,
        "session_token_required": state.session.token_required,
    });
    axum::Json(body).into_response()
}

async fn stop(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if !has_session_token(&state, &headers) {
        return refusal_response(&session_refusal());
    }
    state.stop.notify_one();
    axum::Json(serde_json::json!({ "status": "stopping" })).into_response()
}

async fn proxy(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if state.session.token_required && !has_session_token(&state, &parts.headers) {
        let refusal = session_refusal();
        let partial = partial_spec(&parts.headers, parts.method.as_str());
        state.engine.refuse_early(&partial, &refusal);
        return refusal_response(&refusal);
    }
    let mut spec = match call_spec(&parts.headers, parts.method.as_str()) {
        Ok(spec) => spec,
        Err(refusal) => {
            let partial = partial_spec(&parts.headers, parts.method.as_str());
            state.engine.refuse_early(&partial, &refusal);
            return refusal_response(&refusal);
        }
    };

    let limit = state.engine.config().max_body_bytes;
    spec.body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let refusal = Refusal::new(
                Slug::PayloadTooLarge,
                format!(
                    "the request body is larger than the proxy accepts ({limit} bytes) or \
                         was cut off"
                ),
            );
            state.engine.refuse_early(&spec, &refusal);
            return refusal_response(&refusal);
        }
    };

    if spec.explain {
        return axum::Json(state.engine.explain(spec).await).into_response();
    }
    match state.engine.call(spec).await {
        Ok(forwarded) => forwarded_response(forwarded),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// `X-AS-Explain: 1` (or `true`): answer with the decision instead of making the call.
fn wants_explain(headers: &HeaderMap) -> bool {
    headers
        .get("x-as-explain")
        .is_some_and(|v| matches!(v.as_bytes(), b"1" | b"true" | b"yes" | b"TRUE" | b"True"))
}

fn has_session_token(state: &ProxyState, headers: &HeaderMap) -> bool {
    let given = headers.get("x-as-session-token").map(HeaderValue::as_bytes).unwrap_or_default();
    tokens_match(given, state.session.token.as_bytes())
}

fn session_refusal() -> Refusal {
    Refusal::new(
        Slug::SessionTokenRequired,
        "missing or wrong X-AS-Session-Token: read the token from session.json in the \
         agentsecrets home, or start the proxy with --no-session-token",
    )
}

/// Reads the control headers of a `/proxy` request.
pub fn call_spec(headers: &HeaderMap, request_method: &str) -> Result<CallSpec, Refusal> {
    let header_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Refusal::new(
            Slug::PayloadTooLarge,
            format!(
                "the request headers are larger than the proxy accepts ({MAX_HEADER_BYTES} \
                     bytes)"
            ),
        ));
    }

    let mut spec = partial_spec(headers, request_method);
    if spec.target.is_empty() {
        return Err(Refusal::bad_request(
            "missing X-AS-Target-URL: name the URL the proxy should call",
        ));
    }
    spec.injections = injections(headers)?;
    Ok(spec)
}

/// What can be read of a request without failing, for the audit entry of a refusal.
fn partial_spec(headers: &HeaderMap, request_method: &str) -> CallSpec {
    let text =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned());
    CallSpec {
        target: text("x-as-target-url").unwrap_or_default(),
        method: text("x-as-method").unwrap_or_else(|| request_method.to_owned()),
        headers: headers.clone(),
        body: bytes::Bytes::new(),
        injections: injections(headers).unwrap_or_default(),
        agent_id: text("x-as-agent-id"),
        agent_token: text("x-as-agent-token"),
        session_id: text("x-as-session-id"),
        explain: wants_explain(headers),
    }
}

fn injections(headers: &HeaderMap) -> Result<Vec<Injection>, Refusal> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let Some(rest) = name.strip_prefix("x-as-inject") else { continue };
        let value = value
            .to_str()
            .map_err(|_| Refusal::bad_request(format!("header {name} must be plain ASCII text")))?;
        let parsed = if rest.is_empty() {
            Injection::parse_list(value)
        } else if let Some(suffix) = rest.strip_prefix('-') {
            Injection::from_header(suffix, value).map(|i| vec![i])
        } else {
            continue;
        };
        out.extend(parsed.map_err(|err| Refusal::bad_request(err.to_string()))?);
    }
    Ok(out)
}

fn forwarded_response(forwarded: crate::forward::Forwarded) -> Response {
    let status = StatusCode::from_u16(forwarded.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from_stream(forwarded.body));
    *response.status_mut() = status;
    *response.headers_mut() = forwarded.headers;
    response
}

/// The JSON error body of a refusal, with its status and the refusal header.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, refusal.to_json()).into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(slug) = HeaderValue::from_str(refusal.slug.as_str()) {
        headers.insert(REFUSAL_HEADER, slug);
    }
    response
}
