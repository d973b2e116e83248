//! The two tools: what a client is told about them, how their arguments become the
//! engine's [`CallSpec`], and how an answer or a refusal is rendered back.
//!
//! Everything here is pure except [`collect_body`], which reads the engine's response
//! stream; [`crate::server`] strings the steps together.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentsecrets_core::inject::Injection;
use agentsecrets_core::refusal::{Refusal, Slug};
use agentsecrets_proxy::CallSpec;
use agentsecrets_proxy::forward::BodyStream;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Name of the tool that lists the project's secret names.
pub const LIST_SECRETS: &str = "list_secrets";

/// Name of the tool that makes an HTTP call with secrets injected.
pub const API_CALL: &str = "api_call";

/// Most bytes of an upstream body returned in one tool result. The rest is read (so the
/// call completes and its audit entry settles as it should) and dropped, and the result
/// says `"truncated": true`.
pub const MAX_RESULT_BODY: usize = 1024 * 1024;

/// Both tools, as `tools/list` describes them.
pub fn definitions() -> Vec<Tool> {
    vec![list_secrets_tool(), api_call_tool()]
}

/// The tool of this name, if there is one.
pub fn definition(name: &str) -> Option<Tool> {
    definitions().into_iter().find(|tool| tool.name == name)
}

fn list_secrets_tool() -> Tool {
    let schema = json!({ "type": "object", "properties": {} });
    Tool::new(
        LIST_SECRETS,
        "Names of the secrets stored for the current project. Values are never shown: \
         pass a name to api_call and agentsecrets injects the value for you.",
        schema_object(schema),
    )
    .with_annotations(ToolAnnotations::new().read_only(true))
}

fn api_call_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "description": "The https URL to call. Its host must be on the workspace \
                                allowlist."
            },
            "method": {
                "type": "string",
                "description": "HTTP method.",
                "default": "GET"
            },
            "headers": {
                "type": "object",
                "additionalProperties": { "type": "string" },
                "description": "Extra request headers, name -> value. Never put a secret \
                                here: name it in injections instead."
            },
            "body": {
                "type": "string",
                "description": "Request body. A JSON object or array given here is sent as \
                                its JSON text."
            },
            "injections": {
                "type": "object",
                "additionalProperties": { "type": "string" },
                "minProperties": 1,
                "description": "Where each secret goes: style -> secret name. Styles: \
                                bearer, basic (the secret holds user:pass), header:NAME, \
                                query:NAME, body:path.to.field (JSON body), form:FIELD. \
                                Example: {\"bearer\": \"STRIPE_KEY\", \
                                \"header:X-Api-Key\": \"OTHER_KEY\"}"
            }
        },
        "required": ["url", "injections"],
        "additionalProperties": false
    });
    Tool::new(
        API_CALL,
        "Make one HTTP request with stored secrets injected by name. Returns the upstream \
         status, headers and body, with any echo of a secret value replaced by \
         [REDACTED_BY_AGENTSECRETS]. Refused, before any secret is read, when the host is \
         not allowlisted, resolves to a private address, or is plain http.",
        schema_object(schema),
    )
    .with_annotations(ToolAnnotations::new().read_only(false).open_world(true))
}

fn schema_object(schema: Value) -> Arc<JsonObject> {
    match schema {
        Value::Object(object) => Arc::new(object),
        // Every schema above is written as an object literal.
        _ => Arc::new(JsonObject::new()),
    }
}

/// The arguments of `api_call` as a client sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiCallArgs {
    url: String,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<Value>,
    injections: BTreeMap<String, String>,
}

/// Turns `api_call` arguments into the engine's call spec, without identity or session
/// (the server adds those). A refusal here is the client's mistake: the server answers
/// it with a protocol error and records it in the audit log.
pub fn api_call_spec(
    arguments: Option<&JsonObject>,
    max_body_bytes: usize,
) -> Result<CallSpec, Refusal> {
    let Some(arguments) = arguments else {
        return Err(Refusal::bad_request("api_call needs arguments: at least url and injections"));
    };
    let args: ApiCallArgs = serde_json::from_value(Value::Object(arguments.clone()))
        .map_err(|err| Refusal::bad_request(format!("api_call arguments: {err}")))?;

    let body = match args.body {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) => Bytes::from(text),
        Some(other) => Bytes::from(other.to_string()),
    };
    if body.len() > max_body_bytes {
        return Err(Refusal::new(
            Slug::PayloadTooLarge,
            format!("the request body is larger than the server accepts ({max_body_bytes} bytes)"),
        ));
    }

    let mut injections = Vec::with_capacity(args.injections.len());
    for (style, key) in &args.injections {
        injections.push(parse_injection(style, key)?);
    }
    Ok(CallSpec {
        target: args.url,
        method: args.method.unwrap_or_else(|| "GET".to_owned()).to_ascii_uppercase(),
        headers: header_map(&args.headers.unwrap_or_default())?,
        body,
        injections,
        ..CallSpec::default()
    })
}

/// What can be read of malformed `api_call` arguments, for the audit entry of the
/// refusal.
pub fn partial_spec(arguments: Option<&JsonObject>) -> CallSpec {
    let text =
        |name: &str| arguments.and_then(|a| a.get(name)).and_then(Value::as_str).map(str::to_owned);
    let injections = arguments
        .and_then(|a| a.get("injections"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(style, key)| parse_injection(style, key.as_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    CallSpec {
        target: text("url").unwrap_or_default(),
        method: text("method").unwrap_or_else(|| "GET".to_owned()),
        injections,
        ..CallSpec::default()
    }
}

/// One entry of the `injections` object: `bearer` or `basic`, or `STYLE:NAME` for the
/// styles that need a name (`header`, `query`, `body`, `form`), mapped to a secret key.
pub fn parse_injection(style_spec: &str, key: &str) -> Result<Injection, Refusal> {
    let bad = |why: String| Refusal::bad_request(format!("injection {style_spec:?}: {why}"));
    let (style, name) = match style_spec.split_once(':') {
        Some((style, name)) => (style.trim().to_ascii_lowercase(), Some(name.trim())),
        None => (style_spec.trim().to_ascii_lowercase(), None),
    };

    let parsed = match (style.as_str(), name) {
        ("bearer" | "basic", None) => Injection::from_flag(&style, key),
        ("bearer" | "basic", Some(_)) => {
            return Err(bad(format!("{style} takes no name: write \"{style}\"")));
        }
        ("header" | "query" | "body" | "form", None) => {
            return Err(bad(format!("{style} needs a name: write \"{style}:NAME\"")));
        }
        (_, Some(name)) if name.contains('=') => {
            return Err(bad("a name cannot contain '='".to_owned()));
        }
        (_, Some(name)) => Injection::from_flag(&style, &format!("{name}={key}")),
        (_, None) => Injection::from_flag(&style, key),
    };
    parsed.map_err(|err| bad(err.to_string()))
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, Refusal> {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Refusal::bad_request(format!("header {name:?}: not a valid HTTP header name"))
        })?;
        let header_value = HeaderValue::from_str(value).map_err(|_| {
            Refusal::bad_request(format!("header {name:?}: the value holds a control character"))
        })?;
        out.append(header_name, header_value);
    }
    Ok(out)
}

/// A client's mistake as a JSON-RPC `invalid params` error, with the refusal (slug and
/// message) as its data.
pub fn protocol_error(refusal: &Refusal) -> ErrorData {
    let data = serde_json::to_value(refusal).ok();
    ErrorData::invalid_params(refusal.message.clone(), data)
}

/// The error of an unknown tool name.
pub fn unknown_tool(name: &str) -> ErrorData {
    let message = format!("unknown tool {name:?}: this server has {LIST_SECRETS} and {API_CALL}");
    ErrorData::invalid_params(Cow::Owned(message), None)
}

/// A refusal or failure as an MCP tool error: the text is the refusal's JSON
/// (`{"error": "<slug>", "message": ...}`), also given as structured content.
pub fn refusal_result(refusal: &Refusal) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(refusal.to_json())]);
    result.structured_content = serde_json::to_value(refusal).ok();
    result
}

/// A tool result holding `value` as JSON text and as structured content.
pub fn json_result<T: Serialize>(value: &T) -> CallToolResult {
    let text = serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"));
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = serde_json::to_value(value).ok();
    result
}

/// What `list_secrets` returns.
#[derive(Debug, Serialize)]
pub struct SecretList {
    /// The project the names belong to.
    pub project: String,
    /// Secret names, sorted.
    pub secrets: Vec<String>,
}

/// What `api_call` returns for an upstream answer, whatever its status.
#[derive(Debug, Serialize)]
pub struct ApiCallResult {
    /// The upstream's HTTP status.
    pub status: u16,
    /// Response headers, lowercase names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced), secrets already scrubbed.
    pub body: String,
    /// Whether an injected value was scrubbed from the headers or body.
    pub redacted: bool,
    /// Whether the body was cut at [`MAX_RESULT_BODY`] bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl ApiCallResult {
    /// The result of an answered call.
    pub fn new(status: u16, headers: &HeaderMap, body: &Body, redacted: bool) -> ApiCallResult {
        let mut rendered: BTreeMap<String, String> = BTreeMap::new();
        // `X-AS-*` are the proxy's words to an HTTP caller (`x-as-redacted`); here the
        // `redacted` field says the same.
        let upstream = headers.iter().filter(|(name, _)| !name.as_str().starts_with("x-as-"));
        for (name, value) in upstream {
            let value = String::from_utf8_lossy(value.as_bytes());
            rendered
                .entry(name.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        ApiCallResult {
            status,
            headers: rendered,
            body: String::from_utf8_lossy(&body.bytes).into_owned(),
            redacted,
            truncated: body.truncated,
        }
    }
}

/// A response body as read for a tool result.
#[derive(Debug, Default)]
pub struct Body {
    /// The first [`MAX_RESULT_BODY`] bytes at most.
    pub bytes: Vec<u8>,
    /// Whether more followed.
    pub truncated: bool,
}

/// Reads a response body to its end within `deadline`, keeping at most `limit` bytes.
///
/// Reading on past the limit lets the engine see the response end, so the call's audit
/// entry settles as completed rather than abandoned.
pub async fn collect_body(
    mut stream: BodyStream,
    limit: usize,
    deadline: Duration,
) -> Result<Body, Refusal> {
    let read = async {
        let mut body = Body::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| {
                Refusal::new(Slug::UpstreamError, format!("upstream body failed: {err}"))
            })?;
            let room = limit.saturating_sub(body.bytes.len());
            if chunk.len() > room {
                body.truncated = true;
            }
            body.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok::<Body, Refusal>(body)
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => {
            Err(Refusal::new(Slug::UpstreamTimeout, "the upstream did not finish the body in time"))
        }
    }
}

#[cfg(test)]
mod tests {
    use agentsecrets_core::inject::InjectStyle;

    use super::*;

    fn args(value: Value) -> JsonObject {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn every_style_parses() {
        let cases = [
            ("bearer", InjectStyle::Bearer),
            ("BASIC", InjectStyle::Basic),
            ("header:X-Api-Key", InjectStyle::Header("X-Api-Key".to_owned())),
            ("query:api_key", InjectStyle::Query("api_key".to_owned())),
            ("body:auth.token", InjectStyle::Body(vec!["auth".to_owned(), "token".to_owned()])),
            ("form:secret", InjectStyle::Form("secret".to_owned())),
        ];
        for (spec, style) in cases {
            let injection = parse_injection(spec, "MY_KEY").expect(spec);
            assert_eq!(injection.style, style, "{spec}");
            assert_eq!(injection.key.as_str(), "MY_KEY");
        }
    }

    #[test]
    fn malformed_styles_are_bad_requests() {
        for spec in ["bogus", "header", "query", "bearer:x", "query:a=b", "header:Host", ""] {
            let refusal = parse_injection(spec, "MY_KEY").expect_err(spec);
            assert_eq!(refusal.slug, Slug::BadRequest, "{spec}");
        }
        let refusal = parse_injection("bearer", "not a key").expect_err("bad key");
        assert_eq!(refusal.slug, Slug::BadRequest);
    }

    #[test]
    fn arguments_map_to_a_call_spec() {
        let arguments = args(json!({
            "url": "https://api.example.com/v1",
            "method": "post",
            "headers": { "X-Trace": "abc" },
            "body": { "a": 1 },
            "injections": { "bearer": "K1", "query:api_key": "K2" }
        }));
        let spec = api_call_spec(Some(&arguments), 1024).expect("valid");
        assert_eq!(spec.target, "https://api.example.com/v1");
        assert_eq!(spec.method, "POST");
        assert_eq!(spec.headers.get("x-trace").map(|v| v.as_bytes()), Some(&b"abc"[..]));
        assert_eq!(&spec.body[..], br#"{"a":1}"#);
        assert_eq!(spec.injections.len(), 2);
        assert!(spec.agent_id.is_none() && spec.session_id.is_none());
    }

    #[test]
    fn method_defaults_to_get() {
        let arguments = args(json!({ "url": "https://a.example", "injections": {"bearer": "K"} }));
        assert_eq!(api_call_spec(Some(&arguments), 1024).expect("valid").method, "GET");
    }

    #[test]
    fn missing_or_unknown_arguments_are_refused() {
        let cases = [
            json!({ "injections": { "bearer": "K" } }),
            json!({ "url": "https://a.example" }),
            json!({ "url": "https://a.example", "injections": {"bearer": "K"}, "extra": 1 }),
            json!({ "url": 5, "injections": { "bearer": "K" } }),
            json!({ "url": "https://a.example", "injections": {"bearer": "K"},
                    "headers": { "bad header": "x" } }),
        ];
        for case in cases {
            let refusal = api_call_spec(Some(&args(case.clone())), 1024).expect_err("refused");
            assert_eq!(refusal.slug, Slug::BadRequest, "{case}");
        }
        assert!(api_call_spec(None, 1024).is_err());
    }

    #[test]
    fn oversized_body_is_refused() {
        let arguments = args(json!({
            "url": "https://a.example", "body": "x".repeat(11), "injections": {"bearer": "K"}
        }));
        let refusal = api_call_spec(Some(&arguments), 10).expect_err("too large");
        assert_eq!(refusal.slug, Slug::PayloadTooLarge);
    }

    #[test]
    fn partial_spec_keeps_what_parses() {
        let arguments = args(json!({ "url": "https://a.example", "injections": {"bearer": "K",
            "bogus": "K2"}, "extra": true }));
        let spec = partial_spec(Some(&arguments));
        assert_eq!(spec.target, "https://a.example");
        assert_eq!(spec.injections.len(), 1);
    }

    #[test]
    fn refusal_result_is_a_tool_error_with_the_slug() {
        let refusal = Refusal::domain_not_allowed("evil.example", false);
        let result = refusal_result(&refusal);
        assert_eq!(result.is_error, Some(true));
        let text = result.content[0].as_text().expect("text").text.clone();
        assert_eq!(text, refusal.to_json());
        assert!(text.contains("domain_not_in_allowlist"));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-as-redacted", HeaderValue::from_static("true"));
        let body = Body { bytes: b"ok".to_vec(), truncated: false };
        let result = ApiCallResult::new(200, &headers, &body, false);
        assert_eq!(result.headers["x-a"], "1, 2");
        assert!(!result.headers.contains_key("x-as-redacted"));
        let text = serde_json::to_string(&result).expect("json");
        assert!(!text.contains("truncated"));
    }

    #[tokio::test]
    async fn long_bodies_are_cut_but_read_to_the_end() {
        let chunks = vec![Ok(Bytes::from_static(b"abcd")), Ok(Bytes::from_static(b"efgh"))];
        let stream: BodyStream = Box::pin(futures_util::stream::iter(chunks));
        let body = collect_body(stream, 6, Duration::from_secs(5)).await.expect("read");
        assert_eq!(body.bytes, b"abcdef");
        assert!(body.truncated);
    }
}
