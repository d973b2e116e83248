//! Injection specs: which secret goes where in the outbound request, and how it is put
//! there.
//!
//! A spec arrives in one of three spellings: a `call` flag (`--query apiKey=KEY`), a
//! per-style header (`X-AS-Inject-Query-apiKey: KEY`) or the case-preserving list header
//! (`X-AS-Inject: query:apiKey=KEY, bearer=KEY2`). All three parse into [`Injection`].
//! Applying an injection is pure: it edits a URL, a header list or a body buffer.

use base64::Engine as _;
use serde_json::{Map, Value};
use url::Url;

use crate::names::{SecretKey, escape_for_display};
use crate::secret::SecretValue;

/// Where a secret value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectStyle {
    /// `Authorization: Bearer <value>`.
    Bearer,
    /// `Authorization: Basic base64(<value>)`, the value being `user:pass`.
    Basic,
    /// A request header of this name, case kept.
    Header(String),
    /// A query parameter of this name, replacing any existing value.
    Query(String),
    /// A dotted path into a JSON object body, creating objects on the way.
    Body(Vec<String>),
    /// A field of an `application/x-www-form-urlencoded` body.
    Form(String),
}

impl InjectStyle {
    /// The style's name in the audit log's `auth_styles`.
    pub fn name(&self) -> &'static str {
        match self {
            InjectStyle::Bearer => "bearer",
            InjectStyle::Basic => "basic",
            InjectStyle::Header(_) => "header",
            InjectStyle::Query(_) => "query",
            InjectStyle::Body(_) => "body",
            InjectStyle::Form(_) => "form",
        }
    }
}

/// One secret to inject in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Where the value goes.
    pub style: InjectStyle,
    /// Which secret supplies the value.
    pub key: SecretKey,
}

/// A malformed injection spec, or an injection that cannot be applied to this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The spec names no known style.
    #[error("unknown injection style {0}: use bearer, basic, header, query, body or form")]
    UnknownStyle(String),
    /// The spec is not of the form the style needs.
    #[error("malformed injection {0}: expected {1}")]
    Malformed(String, &'static str),
    /// A secret key name broke the naming rule.
    #[error(transparent)]
    Key(#[from] crate::names::NameError),
    /// A header name is not a valid HTTP token, or is one the proxy controls.
    #[error("invalid header name {0} for injection: use letters, digits and -")]
    HeaderName(String),
    /// The body is not a JSON object, or the path crosses a non-object.
    #[error("cannot inject into JSON body path '{path}': {why}")]
    BodyPath {
        /// The dotted path.
        path: String,
        /// What is in the way.
        why: &'static str,
    },
    /// The secret's value cannot be placed where it was asked to go.
    #[error("secret '{key}' cannot be injected as {style}: {why}")]
    Value {
        /// The secret's name.
        key: String,
        /// The style name.
        style: &'static str,
        /// What is wrong with the value (never the value itself).
        why: &'static str,
    },
}

impl Injection {
    /// Parses `NAME=KEY` for a style that takes a name (`header`, `query`, `body`, `form`)
    /// or `KEY` for `bearer` and `basic`, as the `call` flags spell them.
    pub fn from_flag(style: &str, spec: &str) -> Result<Injection, InjectError> {
        match style {
            "bearer" | "basic" => Injection::with_target(style, "", spec.trim()),
            _ => {
                let (target, key) = spec
                    .split_once('=')
                    .ok_or_else(|| InjectError::Malformed(escape_for_display(spec), "NAME=KEY"))?;
                Injection::with_target(style, target.trim(), key.trim())
            }
        }
    }

    /// Parses one per-style header: `suffix` is what follows `X-AS-Inject-` (for example
    /// `Query-api_key`), `value` the key. Header names arrive lowercased over HTTP/2, so
    /// the target keeps whatever case the client sent.
    pub fn from_header(suffix: &str, value: &str) -> Result<Injection, InjectError> {
        let (style, target) = match suffix.split_once('-') {
            Some((style, target)) => (style.to_ascii_lowercase(), target),
            None => (suffix.to_ascii_lowercase(), ""),
        };
        let target = match style.as_str() {
            // Dashes in a header suffix stand for dots in the JSON path.
            "body" => target.replace('-', "."),
            _ => target.to_owned(),
        };
        Injection::with_target(&style, &target, value.trim())
    }

    /// Parses the case-preserving list form:
    /// `query:apiKey=KEY, header:X-Api-Key=KEY2, bearer=KEY3`.
    pub fn parse_list(list: &str) -> Result<Vec<Injection>, InjectError> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse_list_item)
            .collect()
    }

    fn with_target(style: &str, target: &str, key: &str) -> Result<Injection, InjectError> {
        let key = SecretKey::parse(key)?;
        let style = match style {
            "bearer" => InjectStyle::Bearer,
            "basic" => InjectStyle::Basic,
            "header" => InjectStyle::Header(header_name(target)?),
            "query" => InjectStyle::Query(plain_name(target, "query:NAME=KEY")?),
            "form" => InjectStyle::Form(plain_name(target, "form:FIELD=KEY")?),
            "body" => InjectStyle::Body(body_path(target)?),
            other => return Err(InjectError::UnknownStyle(escape_for_display(other))),
        };
        Ok(Injection { style, key })
    }
}

fn parse_list_item(item: &str) -> Result<Injection, InjectError> {
    let (head, key) = item
        .rsplit_once('=')
        .ok_or_else(|| InjectError::Malformed(escape_for_display(item), "STYLE[:NAME]=KEY"))?;
    let (style, target) = head.split_once(':').unwrap_or((head, ""));
    Injection::with_target(&style.trim().to_ascii_lowercase(), target.trim(), key.trim())
}

fn header_name(raw: &str) -> Result<String, InjectError> {
    let is_token = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let lower = raw.to_ascii_lowercase();
    // The proxy owns these: letting an injection set them would smuggle framing.
    let reserved = matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding")
        || lower.starts_with("x-as-");
    if !is_token || reserved {
        return Err(InjectError::HeaderName(escape_for_display(raw)));
    }
    Ok(raw.to_owned())
}

fn plain_name(raw: &str, expected: &'static str) -> Result<String, InjectError> {
    if raw.is_empty() || raw.chars().any(char::is_control) {
        return Err(InjectError::Malformed(escape_for_display(raw), expected));
    }
    Ok(raw.to_owned())
}

/// Most segments a JSON body path may have. Each segment can add a level of nesting to the
/// body, and serializing (and dropping) a JSON value recurses once per level: a path of tens
/// of thousands of segments, which fits in one header, would overflow the stack and abort
/// the proxy. 64 levels is far deeper than any API nests, and keeps the body within the
/// 128 levels that common JSON parsers (serde_json among them) accept.
pub const MAX_BODY_PATH_SEGMENTS: usize = 64;

fn body_path(raw: &str) -> Result<Vec<String>, InjectError> {
    let segments: Vec<String> = raw.split('.').map(str::to_owned).collect();
    if raw.is_empty() || segments.iter().any(|s| s.is_empty() || s.chars().any(char::is_control)) {
        return Err(InjectError::Malformed(escape_for_display(raw), "body:a.b.c=KEY"));
    }
    if segments.len() > MAX_BODY_PATH_SEGMENTS {
        return Err(InjectError::Malformed(
            escape_for_display(raw),
            "a body path of at most 64 segments",
        ));
    }
    Ok(segments)
}

/// The `Authorization` value for a bearer injection.
pub fn bearer_value(key: &SecretKey, value: &SecretValue) -> Result<SecretValue, InjectError> {
    check_header_safe(key, value, "bearer")?;
    let mut out = b"Bearer ".to_vec();
    out.extend_from_slice(value.expose());
    Ok(SecretValue::new(out))
}

/// The `Authorization` value for a basic injection; the value must be `user:pass`.
pub fn basic_value(key: &SecretKey, value: &SecretValue) -> Result<SecretValue, InjectError> {
    if !value.expose().contains(&b':') {
        return Err(value_error(key, "basic", "the value must have the form user:pass"));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(value.expose());
    Ok(SecretValue::new(format!("Basic {encoded}").into_bytes()))
}

/// Checks that a value can stand in a header as it is.
pub fn check_header_safe(
    key: &SecretKey,
    value: &SecretValue,
    style: &'static str,
) -> Result<(), InjectError> {
    if value.has_line_break_or_nul() {
        return Err(value_error(key, style, "the value holds a line break or NUL byte"));
    }
    Ok(())
}

/// Sets query parameter `param` to the value, replacing existing values of that name and
/// keeping every other parameter in order.
pub fn apply_query(
    url: &mut Url,
    param: &str,
    key: &SecretKey,
    value: &SecretValue,
) -> Result<(), InjectError> {
    let text = utf8_value(key, value, "query")?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != param)
        .map(|(n, v)| (n.into(), v.into()))
        .collect();

    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (name, existing) in &kept {
        pairs.append_pair(name, existing);
    }
    pairs.append_pair(param, text);
    drop(pairs);
    Ok(())
}

/// Sets a dotted path in a JSON object body (an empty body counts as `{}`), creating
/// objects along the way and keeping every other field.
pub fn apply_json_body(
    body: &[u8],
    path: &[String],
    key: &SecretKey,
    value: &SecretValue,
) -> Result<Vec<u8>, InjectError> {
    let joined = path.join(".");
    if path.len() > MAX_BODY_PATH_SEGMENTS {
        return Err(InjectError::BodyPath {
            path: joined,
            why: "the path is more than 64 levels deep",
        });
    }
    let text = utf8_value(key, value, "body")?;
    let mut root: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|_| InjectError::BodyPath {
            path: joined.clone(),
            why: "the request body is not JSON",
        })?
    };

    let mut node = &mut root;
    for (depth, segment) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            let why = if depth == 0 {
                "the request body is not a JSON object"
            } else {
                "the path runs through a value that is not an object"
            };
            return Err(InjectError::BodyPath { path: joined, why });
        };
        let is_last = depth + 1 == path.len();
        let fill = if is_last { Value::Null } else { Value::Object(Map::new()) };
        node = map.entry(segment.clone()).or_insert(fill);
    }
    *node = Value::String(text.to_owned());

    // Serializing a `Value` built from valid JSON cannot fail.
    Ok(serde_json::to_vec(&root).unwrap_or_default())
}

/// Sets a field of a form-urlencoded body, replacing existing values of that field.
pub fn apply_form(
    body: &[u8],
    field: &str,
    key: &SecretKey,
    value: &SecretValue,
) -> Result<Vec<u8>, InjectError> {
    let text = utf8_value(key, value, "form")?;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, existing) in url::form_urlencoded::parse(body) {
        if name != field {
            out.append_pair(&name, &existing);
        }
    }
    out.append_pair(field, text);
    Ok(out.finish().into_bytes())
}

fn utf8_value<'v>(
    key: &SecretKey,
    value: &'v SecretValue,
    style: &'static str,
) -> Result<&'v str, InjectError> {
    value.expose_str().ok_or_else(|| value_error(key, style, "the value is not UTF-8 text"))
}

fn value_error(key: &SecretKey, style: &'static str, why: &'static str) -> InjectError {
    InjectError::Value { key: key.as_str().to_owned(), style, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey::parse(name).unwrap()
    }

    fn secret(text: &str) -> SecretValue {
        SecretValue::from_str_value(text)
    }

    #[test]
    fn list_form_keeps_case_and_parses_every_style() {
        let list = "query:apiKey=K1, header:X-Api-Key=K2, bearer=K3, basic=K4, \
                    body:auth.token=K5, form:client_Secret=K6";
        let parsed = Injection::parse_list(list).unwrap();

        let styles: Vec<InjectStyle> = parsed.into_iter().map(|i| i.style).collect();
        assert_eq!(
            styles,
            vec![
                InjectStyle::Query("apiKey".into()),
                InjectStyle::Header("X-Api-Key".into()),
                InjectStyle::Bearer,
                InjectStyle::Basic,
                InjectStyle::Body(vec!["auth".into(), "token".into()]),
                InjectStyle::Form("client_Secret".into()),
            ]
        );
    }

    #[test]
    fn header_form_turns_dashes_into_body_dots() {
        let parsed = Injection::from_header("Body-data-api-key", "K").unwrap();
        assert_eq!(
            parsed.style,
            InjectStyle::Body(vec!["data".into(), "api".into(), "key".into()])
        );
    }

    #[test]
    fn unknown_style_and_bad_names_are_refused() {
        assert!(matches!(
            Injection::from_header("Cookie-x", "K"),
            Err(InjectError::UnknownStyle(_))
        ));
        assert!(Injection::from_flag("header", "Bad Name=K").is_err());
        assert!(Injection::from_flag("header", "X-AS-Target-URL=K").is_err());
        assert!(Injection::from_flag("header", "Host=K").is_err());
        assert!(Injection::from_flag("query", "novalue").is_err());
        assert!(Injection::from_flag("bearer", "not-a-key").is_err());
        assert!(Injection::from_flag("body", "a..b=K").is_err());
    }

    #[test]
    fn query_injection_keeps_other_parameters() {
        let mut url = Url::parse("https://api.example.com/v1?limit=5&api_key=old&x=1").unwrap();
        apply_query(&mut url, "api_key", &key("K"), &secret("s3 cr&t")).unwrap();

        assert_eq!(url.query(), Some("limit=5&x=1&api_key=s3+cr%26t"));
    }

    #[test]
    fn body_injection_creates_nested_objects_and_keeps_fields() {
        let body = br#"{"amount":100,"auth":{"user":"bob"}}"#;
        let path = vec!["auth".to_owned(), "token".to_owned()];
        let out = apply_json_body(body, &path, &key("K"), &secret("v")).unwrap();

        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["amount"], 100);
        assert_eq!(json["auth"]["user"], "bob");
        assert_eq!(json["auth"]["token"], "v");
    }

    #[test]
    fn body_path_too_deep_overflowed_the_stack() {
        // Found by the json_body fuzz target: every segment nests one more object, and a path
        // of 30000 segments (60 kB, one header) overflowed the stack when serialized.
        let deep = vec!["a"; 30_000].join("-");
        let err = Injection::from_header(&format!("Body-{deep}"), "KEY").unwrap_err();
        assert!(matches!(err, InjectError::Malformed(..)), "{err}");
        let list = format!("body:{}=KEY", vec!["a"; MAX_BODY_PATH_SEGMENTS + 1].join("."));
        assert!(Injection::parse_list(&list).is_err());

        let too_deep = vec!["a".to_owned(); MAX_BODY_PATH_SEGMENTS + 1];
        let err = apply_json_body(b"{}", &too_deep, &key("K"), &secret("v")).unwrap_err();
        assert!(matches!(err, InjectError::BodyPath { .. }), "{err}");

        let deepest = vec!["a"; MAX_BODY_PATH_SEGMENTS].join(".");
        let Ok(Injection { style: InjectStyle::Body(path), .. }) =
            Injection::from_flag("body", &format!("{deepest}=K"))
        else {
            panic!("a path of the maximal depth is accepted");
        };
        let out = apply_json_body(b"", &path, &key("K"), &secret("v")).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        let leaf = path.iter().fold(&parsed, |node, segment| &node[segment.as_str()]);
        assert_eq!(leaf, "v");
    }

    #[test]
    fn body_injection_on_empty_body_starts_from_an_object() {
        let out = apply_json_body(b"", &["a".into(), "b".into()], &key("K"), &secret("v")).unwrap();
        assert_eq!(out, br#"{"a":{"b":"v"}}"#);
    }

    #[test]
    fn body_injection_refusals_name_the_path() {
        let path = vec!["auth".to_owned(), "token".to_owned()];
        let not_json = apply_json_body(b"a=b", &path, &key("K"), &secret("v")).unwrap_err();
        let through_scalar =
            apply_json_body(br#"{"auth":5}"#, &path, &key("K"), &secret("v")).unwrap_err();
        let array = apply_json_body(b"[1]", &path, &key("K"), &secret("v")).unwrap_err();

        for err in [not_json, through_scalar, array] {
            assert!(err.to_string().contains("'auth.token'"), "{err}");
        }
    }

    #[test]
    fn form_injection_replaces_the_field_and_keeps_others() {
        let out = apply_form(b"a=1&secret=old&b=2", "secret", &key("K"), &secret("n w")).unwrap();
        assert_eq!(out, b"a=1&b=2&secret=n+w");
    }

    #[test]
    fn basic_needs_user_and_password() {
        let ok = basic_value(&key("K"), &secret("user:pass")).unwrap();
        assert_eq!(ok.expose(), b"Basic dXNlcjpwYXNz");

        let err = basic_value(&key("K"), &secret("nocolon")).unwrap_err().to_string();
        assert!(!err.contains("nocolon"));
    }

    #[test]
    fn header_values_with_line_breaks_are_refused_without_quoting_them() {
        let err = bearer_value(&key("K"), &secret("abc\r\nX-Evil: 1")).unwrap_err().to_string();
        assert!(err.contains("line break"));
        assert!(!err.contains("X-Evil"));
    }
}
