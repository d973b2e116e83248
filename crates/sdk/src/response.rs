//! [`Response`]: the upstream's answer as the proxy passed it back, scrubbed of any echo
//! of the injected secrets.

use bytes::Bytes;
use http::HeaderMap;

use crate::error::Error;

/// The header the proxy sets when it scrubbed an echoed secret from the response.
pub(crate) const REDACTED_HEADER: &str = "x-as-redacted";

/// An upstream response. Any status, 4xx and 5xx included, is a response: only the
/// proxy's own refusals become [`Error`]s.
#[derive(Debug, Clone)]
pub struct Response {
    /// The upstream's HTTP status.
    pub status: u16,
    /// The upstream's headers, scrubbed, without hop-by-hop headers.
    pub headers: HeaderMap,
    /// The whole body, scrubbed.
    pub body: Bytes,
    /// Whether the proxy replaced an echoed secret with `[REDACTED_BY_AGENTSECRETS]`, as
    /// its `x-as-redacted: true` header says. The proxy can only say so for a response it
    /// reads whole before answering (a `Content-Length` of at most 1 MiB); for a larger or
    /// unsized one that it streams, the body is scrubbed just the same but this stays
    /// `false`, and the audit log has the final word.
    pub redacted: bool,
}

impl Response {
    /// The response as the client read it from the proxy.
    pub(crate) fn new(status: u16, headers: HeaderMap, body: Bytes) -> Response {
        let redacted = headers
            .get(REDACTED_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Response { status, headers, body, redacted }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; bytes that are not UTF-8 become U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The first value of a header, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redaction_header_sets_the_flag() {
        let mut headers = HeaderMap::new();
        headers.insert(REDACTED_HEADER, "true".parse().unwrap());

        let response = Response::new(200, headers, Bytes::from_static(b"{\"a\":[1]}"));

        assert!(response.redacted);
        assert!(response.is_success());
        let value: serde_json::Value = response.json().unwrap();
        assert_eq!(value["a"][0], 1);
    }

    #[test]
    fn an_upstream_failure_status_is_still_a_response() {
        let response = Response::new(503, HeaderMap::new(), Bytes::from_static(b"down"));

        assert!(!response.redacted);
        assert!(!response.is_success());
        assert_eq!(response.text(), "down");
        assert!(response.json::<serde_json::Value>().is_err());
    }
}
