//! `call`: one API call with secrets injected, through the running proxy when there is
//! one, else through the same engine in-process.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use agentsecrets_core::audit::Transport;
use agentsecrets_core::inject::Injection;
use agentsecrets_core::names::AgentName;
use agentsecrets_core::refusal::Refusal;
use agentsecrets_proxy::forward::BodyStream;
use agentsecrets_proxy::remote::RunningProxy;
use agentsecrets_proxy::{CallSpec, Engine, EngineConfig};
use futures_util::StreamExt;
use http::HeaderMap;
use serde::Serialize;

use crate::cli::{CallArgs, CallOutput};
use crate::commands::{caller_identity, current_project, home, open_both, runtime};
use crate::{Reported, UsageError};

/// What `call` prints, in either format.
struct CallResult {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    redacted: bool,
    duration_ms: u64,
    /// Set when the proxy refused or the call failed before an upstream answer.
    refusal: Option<Refusal>,
}

/// The `--output json` envelope the official SDK parses.
#[derive(Serialize)]
struct Envelope<'a> {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
    redacted: bool,
    duration_ms: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

/// Runs `call`.
pub fn run(args: CallArgs) -> anyhow::Result<()> {
    let spec = call_spec(&args)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    if spec.explain {
        return explain(spec, timeout, args.output);
    }
    let started = Instant::now();

    let runtime = runtime()?;
    let session_path = home()?.session_file();
    let result = runtime.block_on(async {
        match RunningProxy::find(&session_path).await {
            Some(proxy) => via_proxy(&proxy, &spec, timeout).await,
            None => in_process(spec, timeout).await,
        }
    })?;
    let duration_ms = started.elapsed().as_millis() as u64;

    print_result(CallResult { duration_ms, ..result }, args.output)
}

/// Turns the flags into the engine's call spec; a malformed flag is a usage error.
fn call_spec(args: &CallArgs) -> anyhow::Result<CallSpec> {
    let mut injections = Vec::new();
    let groups: [(&str, &Vec<String>); 6] = [
        ("bearer", &args.bearer),
        ("basic", &args.basic),
        ("header", &args.header),
        ("query", &args.query),
        ("body", &args.body_field),
        ("form", &args.form_field),
    ];
    for (style, specs) in groups {
        for spec in specs {
            let injection = Injection::from_flag(style, spec)
                .map_err(|e| UsageError(format!("--{}: {e}", flag_name(style))))?;
            injections.push(injection);
        }
    }
    if injections.is_empty() {
        return Err(UsageError(
            "no secret to inject: add --bearer KEY, --basic KEY, --header NAME=KEY, \
             --query NAME=KEY, --body-field PATH=KEY or --form-field FIELD=KEY"
                .to_owned(),
        )
        .into());
    }

    let (agent_id, agent_token) = caller_identity(args.agent_id.as_deref(), args.token.as_deref())?;
    if let Some(name) = &agent_id {
        AgentName::parse(name).map_err(|e| UsageError(format!("--agent-id: {e}")))?;
    }
    Ok(CallSpec {
        target: args.url.clone(),
        method: args.method.to_ascii_uppercase(),
        headers: HeaderMap::new(),
        body: args.body.clone().map(bytes::Bytes::from).unwrap_or_default(),
        injections,
        agent_id,
        agent_token,
        session_id: args.session_id.clone(),
        explain: args.explain,
    })
}

fn flag_name(style: &str) -> &str {
    match style {
        "body" => "body-field",
        "form" => "form-field",
        other => other,
    }
}

async fn via_proxy(
    proxy: &RunningProxy,
    spec: &CallSpec,
    timeout: Duration,
) -> anyhow::Result<CallResult> {
    let answer = match proxy.call(spec, timeout).await {
        Ok(answer) => answer,
        Err(err) if err.is_timeout() => {
            return Ok(refused(Refusal::new(
                agentsecrets_core::refusal::Slug::UpstreamTimeout,
                "the call did not finish in time",
            )));
        }
        Err(err) => {
            anyhow::bail!("the running proxy on port {} failed: {err}", proxy.session().port)
        }
    };
    let redacted = answer.headers.get("x-as-redacted").is_some_and(|v| v == "true")
        || contains_marker(&answer.body);
    let refusal = answer.refusal.as_ref().map(|_| {
        serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| refusal_from_json(&v))
            .unwrap_or_else(|| Refusal::bad_request("the proxy refused the call"))
    });
    Ok(CallResult {
        status: answer.status,
        headers: answer.headers,
        body: answer.body.to_vec(),
        redacted,
        duration_ms: 0,
        refusal,
    })
}

async fn in_process(spec: CallSpec, timeout: Duration) -> anyhow::Result<CallResult> {
    let (vault, audit) = open_both()?;
    let project = current_project(&vault)?;
    let config = EngineConfig {
        allow_local_http: env_flag("AGENTSECRETS_ALLOW_LOCAL_HTTP"),
        transport: Transport::Cli,
        upstream_timeout: timeout,
        ..EngineConfig::default()
    };
    let engine = Engine::new(vault, audit, project, config)?;

    let called = engine.call(spec).await;
    engine.flush_token_use();
    let forwarded = match called {
        Ok(forwarded) => forwarded,
        Err(refusal) => return Ok(refused(refusal)),
    };
    let body = match tokio::time::timeout(timeout, collect(forwarded.body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) => {
            return Ok(refused(Refusal::new(
                agentsecrets_core::refusal::Slug::UpstreamError,
                format!("upstream body failed: {err}"),
            )));
        }
        Err(_) => {
            return Ok(refused(Refusal::new(
                agentsecrets_core::refusal::Slug::UpstreamTimeout,
                "the upstream did not finish the body in time",
            )));
        }
    };
    Ok(CallResult {
        status: forwarded.status,
        headers: forwarded.headers,
        body,
        redacted: forwarded.redacted.load(std::sync::atomic::Ordering::Relaxed),
        duration_ms: 0,
        refusal: None,
    })
}

/// `call --explain`: the decision, from the running proxy when there is one (its policy
/// is the one that counts), else from the engine in-process. Exit 1 when denied.
fn explain(spec: CallSpec, timeout: Duration, output: CallOutput) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let session_path = home()?.session_file();
    let explanation: serde_json::Value = runtime.block_on(async {
        if let Some(proxy) = RunningProxy::find(&session_path).await {
            let answer = proxy.call(&spec, timeout).await?;
            return serde_json::from_slice(&answer.body)
                .map_err(|_| anyhow::anyhow!("the running proxy did not answer the explain"));
        }
        let (vault, audit) = open_both()?;
        let project = current_project(&vault)?;
        let config = EngineConfig {
            allow_local_http: env_flag("AGENTSECRETS_ALLOW_LOCAL_HTTP"),
            transport: Transport::Cli,
            ..EngineConfig::default()
        };
        let engine = Engine::new(vault, audit, project, config)?;
        let explanation = engine.explain(spec).await;
        engine.flush_token_use();
        anyhow::Ok(serde_json::to_value(explanation)?)
    })?;

    let mut stdout = std::io::stdout().lock();
    match output {
        CallOutput::Json => writeln!(stdout, "{explanation}")?,
        CallOutput::Text => write_explanation(&mut stdout, &explanation)?,
    }
    let allowed = explanation["decision"] == "allow";
    if allowed { Ok(()) } else { Err(Reported.into()) }
}

/// The explanation for people: the decision first, then who, what and under which policy.
fn write_explanation(out: &mut impl Write, e: &serde_json::Value) -> std::io::Result<()> {
    let text = |key: &str| e[key].as_str().unwrap_or("-").to_owned();
    let keys: Vec<&str> =
        e["secret_keys"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
    let agent = e["agent_id"].as_str().unwrap_or("(anonymous)");
    if e["decision"] == "allow" {
        writeln!(out, "allowed")?;
    } else {
        writeln!(out, "denied: {}", text("error"))?;
        writeln!(out, "  message  {}", text("message"))?;
    }
    if let Some(rule) = e["rule"].as_str() {
        writeln!(out, "  rule     {rule}")?;
    }
    if let Some(report) = e["report"].as_str() {
        writeln!(out, "  report   {report} (served, but flagged in the audit log)")?;
    }
    writeln!(out, "  caller   {agent} ({})", text("identity_level"))?;
    writeln!(out, "  call     {} {}", text("method"), text("domain"))?;
    writeln!(out, "  secrets  {}", if keys.is_empty() { "-".to_owned() } else { keys.join(", ") })?;
    writeln!(out, "  policy   {}", text("policy_snapshot_id"))
}

fn refused(refusal: Refusal) -> CallResult {
    CallResult {
        status: refusal.http_status(),
        headers: HeaderMap::new(),
        body: refusal.to_json().into_bytes(),
        redacted: false,
        duration_ms: 0,
        refusal: Some(refusal),
    }
}

fn refusal_from_json(value: &serde_json::Value) -> Option<Refusal> {
    let slug_text = value.get("error")?.as_str()?;
    let message = value.get("message").and_then(|m| m.as_str()).unwrap_or(slug_text);
    let slug = serde_json::from_value(serde_json::Value::String(slug_text.to_owned())).ok()?;
    Some(Refusal {
        slug,
        message: message.to_owned(),
        domain: value.get("domain").and_then(|d| d.as_str()).map(str::to_owned),
        key: value.get("key").and_then(|k| k.as_str()).map(str::to_owned),
        rule: value.get("rule").and_then(|r| r.as_str()).map(str::to_owned),
    })
}

fn print_result(result: CallResult, output: CallOutput) -> anyhow::Result<()> {
    let failed = result.refusal.is_some() || result.status >= 400;
    match output {
        CallOutput::Json => print_json(&result)?,
        CallOutput::Text => print_text(&result)?,
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

fn print_json(result: &CallResult) -> anyhow::Result<()> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &result.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(title_case(name.as_str())).or_default().push(value);
    }
    if result.refusal.is_some() {
        headers.insert("Content-Type".to_owned(), vec!["application/json".to_owned()]);
    }
    let error = match (&result.refusal, result.status) {
        (Some(refusal), _) => refusal.to_string(),
        (None, code) if code >= 400 => format!("upstream answered HTTP {code}"),
        _ => String::new(),
    };
    let envelope = Envelope {
        status: result.status,
        headers,
        body: String::from_utf8_lossy(&result.body).into_owned(),
        redacted: result.redacted,
        duration_ms: result.duration_ms,
        error: &error,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &envelope)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn print_text(result: &CallResult) -> anyhow::Result<()> {
    if let Some(refusal) = &result.refusal {
        eprintln!("agentsecrets: error: {refusal}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    write!(out, "HTTP {}\n\n", result.status)?;
    out.write_all(&result.body)?;
    out.write_all(b"\n")?;
    out.flush()?;
    if result.status >= 400 {
        eprintln!("agentsecrets: error: upstream answered HTTP {}", result.status);
    }
    Ok(())
}

fn contains_marker(body: &[u8]) -> bool {
    let marker = agentsecrets_core::redact::REDACTION_MARKER.as_bytes();
    body.windows(marker.len()).any(|w| w == marker)
}

/// `Content-Type` from `content-type`: how the SDK's examples spell header names.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"))
}

/// Reads a body stream to its end.
async fn collect(mut body: BodyStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
