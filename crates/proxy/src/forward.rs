//! Forwarding: the outbound request, and the response streamed back through redaction
//! while its audit entry waits to be settled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentsecrets_core::audit::CallStatus;
use agentsecrets_core::redact::{RedactionSet, StreamRedactor};
use agentsecrets_core::refusal::{Refusal, Slug};
use agentsecrets_store::Outcome;

use crate::audit_writer::AuditWriter;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

/// Responses at most this long (by `Content-Length`) are read whole before they are
/// returned, so `X-AS-Redacted` can say whether the body was scrubbed. Longer or
/// unsized ones stream.
const BUFFER_LIMIT: u64 = 1024 * 1024;

/// The header that tells a caller an echoed secret was scrubbed.
pub const REDACTED_HEADER: &str = "x-as-redacted";

/// A request ready to leave, secrets injected.
pub struct Outbound {
    /// Method.
    pub method: Method,
    /// URL, query injections applied.
    pub url: url::Url,
    /// Headers, header injections applied.
    pub headers: HeaderMap,
    /// Body, body injections applied.
    pub body: Bytes,
    /// Patterns to scrub from the response.
    pub redaction: Arc<RedactionSet>,
}

/// The body stream handed back to the caller.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// An upstream response, scrubbed of echoed secrets.
pub struct Forwarded {
    /// Upstream status.
    pub status: u16,
    /// Upstream headers, hop-by-hop and framing headers removed, values scrubbed.
    pub headers: HeaderMap,
    /// The body, scrubbed as it streams.
    pub body: BodyStream,
    /// Set once anything was scrubbed (headers included).
    pub redacted: Arc<AtomicBool>,
}

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header must not cross the proxy in either direction.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The caller's headers as they go upstream: without hop-by-hop headers (and any the
/// caller's `Connection` names), without `X-AS-*`, `Host` and `Content-Length`, which
/// the client sets from the target and body, and asking for an uncompressed answer so
/// redaction sees plain bytes.
pub fn outbound_headers(caller: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = caller
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();

    let mut out = HeaderMap::with_capacity(caller.len());
    for (name, value) in caller {
        let lower = name.as_str();
        let dropped = is_hop_by_hop(name)
            || named_by_connection.iter().any(|n| n == lower)
            || lower.starts_with("x-as-")
            || matches!(lower, "host" | "content-length" | "accept-encoding");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    out
}

/// Who called what, for the proxy's one log line per call.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// Agent name, or `(anonymous)`.
    pub agent: String,
    /// HTTP method.
    pub method: String,
    /// Target host.
    pub domain: String,
}

/// Settles the audit entry of a forwarded call when its response ends, however it ends.
pub struct AuditGuard {
    audit: AuditWriter,
    summary: CallSummary,
    id: String,
    started: Instant,
    status_code: Option<u16>,
    redacted: Arc<AtomicBool>,
    failure: Option<Slug>,
    report: Option<&'static str>,
    settled: bool,
}

impl AuditGuard {
    /// A guard for the entry `id`, begun at `started`.
    pub fn new(
        audit: AuditWriter,
        summary: CallSummary,
        id: String,
        started: Instant,
    ) -> AuditGuard {
        AuditGuard {
            audit,
            summary,
            id,
            started,
            status_code: None,
            redacted: Arc::new(AtomicBool::new(false)),
            failure: None,
            report: None,
            settled: false,
        }
    }

    /// Records the rule a report-mode policy would have refused the call by.
    pub fn set_report(&mut self, reason: Option<&'static str>) {
        self.report = reason;
    }

    fn settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (status, reason) = match self.failure {
            None => (CallStatus::Ok, self.report.unwrap_or("-").to_owned()),
            Some(slug) => (CallStatus::Error, slug.as_str().to_owned()),
        };
        let redacted = self.redacted.load(Ordering::Relaxed);
        let reason = if redacted && reason == "-" { "credential_echo".to_owned() } else { reason };
        let outcome = Outcome {
            status,
            reason,
            status_code: self.status_code,
            duration_ms: self.started.elapsed().as_millis() as u64,
            redacted,
        };
        let code = outcome.status_code;
        let (status, ms) = (outcome.status, outcome.duration_ms);
        self.audit.complete(self.id.clone(), outcome);
        tracing::info!(
            agent.id = %self.summary.agent,
            http.method = %self.summary.method,
            target.domain = %self.summary.domain,
            status = status.as_str(),
            code = ?code,
            ms,
            redacted,
            "call"
        );
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if !self.settled && self.failure.is_none() {
            // Dropped before the body ended: the caller went away mid-response.
            self.failure = Some(Slug::UpstreamError);
        }
        self.settle();
    }
}

/// Sends the request and returns the scrubbed response, or settles the entry with the
/// failure and returns it as a refusal.
pub async fn send(
    client: &reqwest::Client,
    outbound: Outbound,
    mut guard: AuditGuard,
    timeout: Duration,
) -> Result<Forwarded, Refusal> {
    let redaction = outbound.redaction.clone();
    let request =
        client.request(outbound.method, outbound.url).headers(outbound.headers).body(outbound.body);

    let response = match tokio::time::timeout(timeout, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Err(fail(&mut guard, upstream_refusal(&err))),
        Err(_) => {
            let refusal =
                Refusal::new(Slug::UpstreamTimeout, "the upstream did not answer in time");
            return Err(fail(&mut guard, refusal));
        }
    };

    let status = response.status().as_u16();
    guard.status_code = Some(status);
    let redacted = guard.redacted.clone();
    let headers = response_headers(response.headers(), &redaction, &redacted);
    let small = response.content_length().is_some_and(|len| len <= BUFFER_LIMIT);

    if small {
        return buffered(response, status, headers, redaction, guard).await;
    }
    let body = redacting_stream(response, redaction, guard);
    Ok(Forwarded { status, headers, body, redacted })
}

async fn buffered(
    response: reqwest::Response,
    status: u16,
    mut headers: HeaderMap,
    redaction: Arc<RedactionSet>,
    mut guard: AuditGuard,
) -> Result<Forwarded, Refusal> {
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(err) => return Err(fail(&mut guard, upstream_refusal(&err))),
    };
    let (clean, matched) = redaction.redact_all(&bytes);
    let redacted = guard.redacted.clone();
    if matched {
        redacted.store(true, Ordering::Relaxed);
    }
    if redacted.load(Ordering::Relaxed) {
        headers.insert(REDACTED_HEADER, HeaderValue::from_static("true"));
    }
    guard.settle();

    let body: BodyStream =
        Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(clean)) }));
    Ok(Forwarded { status, headers, body, redacted })
}

fn redacting_stream(
    response: reqwest::Response,
    redaction: Arc<RedactionSet>,
    guard: AuditGuard,
) -> BodyStream {
    struct State {
        upstream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
        redactor: StreamRedactor,
        guard: AuditGuard,
        done: bool,
    }
    let state = State {
        upstream: Box::pin(response.bytes_stream()),
        redactor: StreamRedactor::new(redaction),
        guard,
        done: false,
    };

    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            match state.upstream.next().await {
                Some(Ok(chunk)) => {
                    let out = state.redactor.push(&chunk);
                    note_redaction(&state.redactor, &state.guard);
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), state));
                    }
                }
                Some(Err(err)) => {
                    state.done = true;
                    state.guard.failure = Some(Slug::UpstreamError);
                    state.guard.settle();
                    let io = std::io::Error::other(format!("upstream body failed: {err}"));
                    return Some((Err(io), state));
                }
                None => {
                    state.done = true;
                    let out = state.redactor.finish();
                    note_redaction(&state.redactor, &state.guard);
                    state.guard.settle();
                    return Some((Ok(Bytes::from(out)), state));
                }
            }
        }
    }))
}

fn note_redaction(redactor: &StreamRedactor, guard: &AuditGuard) {
    if redactor.redacted() {
        guard.redacted.store(true, Ordering::Relaxed);
    }
}

/// Upstream headers as the caller sees them: no hop-by-hop or framing headers (the body
/// may change length when scrubbed), every value scrubbed, `Location` included.
fn response_headers(
    upstream: &HeaderMap,
    redaction: &RedactionSet,
    redacted: &AtomicBool,
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        // X-AS-* headers are the proxy's own words to its caller: an upstream must not be
        // able to forge a refusal or a redaction notice.
        let ours = name.as_str().starts_with("x-as-");
        if is_hop_by_hop(name) || name == header::CONTENT_LENGTH || ours {
            continue;
        }
        let (clean, matched) = redaction.redact_all(value.as_bytes());
        if matched {
            redacted.store(true, Ordering::Relaxed);
        }
        if let Ok(clean) = HeaderValue::from_bytes(&clean) {
            out.append(name.clone(), clean);
        }
    }
    out
}

fn fail(guard: &mut AuditGuard, refusal: Refusal) -> Refusal {
    guard.failure = Some(refusal.slug);
    guard.status_code = Some(refusal.http_status());
    guard.settle();
    refusal
}

/// Describes a client error without its URL (which may carry an injected query value).
fn upstream_refusal(err: &reqwest::Error) -> Refusal {
    if err.is_timeout() {
        return Refusal::new(Slug::UpstreamTimeout, "the upstream did not answer in time");
    }
    let what = if err.is_connect() {
        "the upstream refused or dropped the connection"
    } else if err.is_body() || err.is_decode() {
        "the upstream sent a broken body"
    } else {
        "the upstream broke the exchange"
    };
    Refusal::new(Slug::UpstreamError, what)
}
