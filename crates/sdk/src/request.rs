//! [`Request`]: one call to make through the proxy, naming secrets rather than holding
//! them.
//!
//! Building a request never fails: a malformed injection or header is remembered and
//! reported by [`crate::AgentSecrets::call`] as [`Error::InvalidRequest`], so that the
//! builder methods chain without a `?` after each.

use agentsecrets_core::inject::{InjectStyle, Injection};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::error::Error;

/// Headers that describe the connection to the proxy rather than the call.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A call to an upstream API, with the secrets it needs named by key.
///
/// The proxy resolves each named secret from the vault, puts its value where the request
/// says, and calls the target. The request itself never holds a secret value, so its
/// `Debug` output is safe to log; it shows header names and the body's length only.
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    injections: Vec<Injection>,
    problem: Option<String>,
}

impl Request {
    /// A request with this method to this target URL, with no injection yet.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            injections: Vec::new(),
            problem: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::GET, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::POST, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new(Method::PUT, url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Request {
        Request::new(Method::PATCH, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new(Method::DELETE, url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Request {
        Request::new(Method::HEAD, url)
    }

    /// Injects secret `key` as `Authorization: Bearer <value>`.
    pub fn bearer(self, key: &str) -> Request {
        self.inject("bearer", key.to_owned())
    }

    /// Injects secret `key`, whose value is `user:pass`, as `Authorization: Basic ...`.
    pub fn basic(self, key: &str) -> Request {
        self.inject("basic", key.to_owned())
    }

    /// Injects secret `key` as the value of header `name` (its case is kept).
    pub fn header_secret(self, name: &str, key: &str) -> Request {
        self.inject_named("header", name, key)
    }

    /// Injects secret `key` as query parameter `param`, replacing any value it has.
    pub fn query_secret(self, param: &str, key: &str) -> Request {
        self.inject_named("query", param, key)
    }

    /// Injects secret `key` at a dotted `path` (`a.b.c`) of the JSON object body, creating
    /// objects on the way and keeping every other field.
    pub fn body_secret(self, path: &str, key: &str) -> Request {
        self.inject_named("body", path, key)
    }

    /// Injects secret `key` as field `field` of the form-urlencoded body.
    pub fn form_secret(self, field: &str, key: &str) -> Request {
        self.inject_named("form", field, key)
    }

    /// Adds a plain header, forwarded to the target as it is. `X-AS-*` headers belong to
    /// the proxy, and framing and hop-by-hop headers (`Host`, `Content-Length`,
    /// `Connection`, ...) to the client; both are refused.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-as-") || RESERVED_HEADERS.contains(&lower.as_str()) {
            return self.fail(format!("header {name:?} is set by the client or the proxy"));
        }
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))
            .and_then(|name| {
                HeaderValue::from_str(value)
                    .map(|value| (name.clone(), value))
                    .map_err(|_| format!("invalid value for header {name}"))
            });
        match parsed {
            Ok((name, value)) => {
                self.headers.append(name, value);
                self
            }
            Err(problem) => self.fail(problem),
        }
    }

    /// Sets the request body, sent to the target as it is (after any body injection).
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and, unless one is set already, `Content-Type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Request {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = Bytes::from(body);
                if !self.headers.contains_key(http::header::CONTENT_TYPE) {
                    let json = HeaderValue::from_static("application/json");
                    self.headers.insert(http::header::CONTENT_TYPE, json);
                }
                self
            }
            Err(err) => self.fail(format!("cannot serialize the JSON body: {err}")),
        }
    }

    /// The HTTP method used on the target.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The target URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The plain headers to forward.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body as it leaves the client, before the proxy's injections.
    pub fn body_bytes(&self) -> &Bytes {
        &self.body
    }

    /// The injections, rendered in the proxy's case-preserving `X-AS-Inject` list form
    /// (`bearer=KEY, query:apiKey=KEY2`). Holds key names only.
    pub fn inject_list(&self) -> String {
        let items: Vec<String> = self.injections.iter().map(render_injection).collect();
        items.join(", ")
    }

    /// The parts the client sends, or the first problem found while building.
    pub(crate) fn into_parts(self) -> Result<Parts, Error> {
        if let Some(message) = self.problem {
            return Err(Error::InvalidRequest { message });
        }
        let inject = self.inject_list();
        let inject = match inject.is_empty() {
            true => None,
            false => Some(HeaderValue::from_str(&inject).map_err(|_| Error::InvalidRequest {
                message: "injection names must be printable ASCII".to_owned(),
            })?),
        };
        let method = HeaderValue::from_str(self.method.as_str()).map_err(|_| {
            Error::InvalidRequest { message: format!("invalid method {:?}", self.method.as_str()) }
        })?;
        let target = HeaderValue::from_str(&self.url).map_err(|_| Error::InvalidRequest {
            message: "the target URL must be printable ASCII (percent-encode the rest)".to_owned(),
        })?;
        Ok(Parts { method, target, inject, headers: self.headers, body: self.body })
    }

    fn inject(mut self, style: &str, spec: String) -> Request {
        match Injection::from_flag(style, &spec) {
            Ok(injection) => {
                self.injections.push(injection);
                self
            }
            Err(err) => self.fail(err.to_string()),
        }
    }

    fn inject_named(self, style: &str, name: &str, key: &str) -> Request {
        // The list header separates items with commas and a name from its key with `=`,
        // so neither may appear in a name.
        if name.contains([',', '=']) || name.trim() != name {
            let problem = format!(
                "{style} name {name:?} cannot be sent to the proxy: it may not hold ',' or '=' \
                 or start or end with a space"
            );
            return self.fail(problem);
        }
        self.inject(style, format!("{name}={key}"))
    }

    fn fail(mut self, problem: String) -> Request {
        self.problem.get_or_insert(problem);
        self
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("inject", &self.inject_list())
            .field("headers", &header_names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the client puts on the wire to the proxy.
pub(crate) struct Parts {
    /// `X-AS-Method`.
    pub method: HeaderValue,
    /// `X-AS-Target-URL`.
    pub target: HeaderValue,
    /// `X-AS-Inject`, absent when the request names no secret.
    pub inject: Option<HeaderValue>,
    /// Plain headers to forward.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

fn render_injection(injection: &Injection) -> String {
    let key = &injection.key;
    match &injection.style {
        InjectStyle::Bearer => format!("bearer={key}"),
        InjectStyle::Basic => format!("basic={key}"),
        InjectStyle::Header(name) => format!("header:{name}={key}"),
        InjectStyle::Query(name) => format!("query:{name}={key}"),
        InjectStyle::Body(path) => format!("body:{}={key}", path.join(".")),
        InjectStyle::Form(name) => format!("form:{name}={key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_renders_in_the_list_form_with_case_kept() {
        let request = Request::post("https://api.example.com/v1")
            .bearer("A_KEY")
            .basic("B_KEY")
            .header_secret("X-Api-Key", "C_KEY")
            .query_secret("apiKey", "D_KEY")
            .body_secret("auth.token", "E_KEY")
            .form_secret("client_secret", "F_KEY");

        assert_eq!(
            request.inject_list(),
            "bearer=A_KEY, basic=B_KEY, header:X-Api-Key=C_KEY, query:apiKey=D_KEY, \
             body:auth.token=E_KEY, form:client_secret=F_KEY"
        );
    }

    #[test]
    fn the_list_form_parses_back_to_the_same_injections() {
        let request = Request::get("https://x.test").query_secret("api_Key", "K").bearer("B");

        let parsed = Injection::parse_list(&request.inject_list()).unwrap();

        assert_eq!(parsed, request.injections);
    }

    #[test]
    fn a_bad_key_name_is_reported_at_call_time() {
        let request = Request::get("https://x.test").bearer("not a key").header("X-Ok", "1");

        let err = request.into_parts().err().unwrap();

        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    }

    #[test]
    fn names_that_would_break_the_list_header_are_refused() {
        for name in ["a,b", "a=b", " a"] {
            let request = Request::get("https://x.test").query_secret(name, "KEY");
            assert!(request.into_parts().is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn proxy_control_headers_cannot_be_set_by_hand() {
        let request = Request::get("https://x.test").bearer("K").header("X-AS-Agent-ID", "x");

        assert!(request.into_parts().is_err());
    }

    #[test]
    fn json_sets_the_body_and_content_type() {
        let request = Request::post("https://x.test").json(&serde_json::json!({"a": 1}));

        let parts = request.into_parts().unwrap();

        assert_eq!(&parts.body[..], br#"{"a":1}"#);
        assert_eq!(parts.headers[http::header::CONTENT_TYPE], "application/json");
        assert!(parts.inject.is_none());
    }

    #[test]
    fn debug_shows_names_and_sizes_only() {
        let request = Request::post("https://x.test")
            .bearer("STRIPE_KEY")
            .header("Authorization", "Bearer user-own-value")
            .body("payload-text");

        let shown = format!("{request:?}");

        assert!(shown.contains("STRIPE_KEY"));
        assert!(!shown.contains("user-own-value"));
        assert!(!shown.contains("payload-text"));
    }
}
