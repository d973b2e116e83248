//! [`Error`]: why a call did not produce an upstream response.
//!
//! The proxy marks its own refusals with the `x-as-refusal` response header and a JSON
//! body `{"error": slug, "message": ..}`; each slug a program is likely to handle has its
//! own variant. An upstream that answers 4xx or 5xx is not an error: its answer comes back
//! as a normal [`crate::Response`].

use agentsecrets_core::refusal::Slug;
use http::HeaderMap;

/// The header a proxy refusal carries.
pub(crate) const REFUSAL_HEADER: &str = "x-as-refusal";

/// Everything that can go wrong between a program and the upstream it calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target's host is not in the workspace allowlist (`domain_not_in_allowlist`).
    #[error("{message}")]
    DomainNotAllowed {
        /// The refused host.
        domain: String,
        /// The proxy's explanation, with the command that allows the domain.
        message: String,
    },
    /// The agent token is invalid, expired, revoked, foreign, or names another agent than
    /// the declared one (`agent_unauthorized`).
    #[error("{message}")]
    AgentUnauthorized {
        /// The proxy's explanation.
        message: String,
    },
    /// The workspace requires a stronger identity than the call carried
    /// (`identity_required`).
    #[error("{message}")]
    IdentityRequired {
        /// The proxy's explanation, naming the level required.
        message: String,
    },
    /// The agent's capability contract does not allow the call (`capability_denied`).
    #[error("{message}")]
    CapabilityDenied {
        /// The rule that refused the call, such as `deny-secret GITHUB_KEY`.
        rule: Option<String>,
        /// The proxy's explanation.
        message: String,
    },
    /// A named secret does not exist in the project (`secret_not_found`).
    #[error("{message}")]
    SecretNotFound {
        /// The missing secret's name.
        key: String,
        /// The proxy's explanation, with the command that sets the secret.
        message: String,
    },
    /// The target resolves to a loopback, private or otherwise non-public address
    /// (`ssrf_blocked`).
    #[error("{message}")]
    SsrfBlocked {
        /// The refused host, when the proxy named it.
        domain: Option<String>,
        /// The proxy's explanation.
        message: String,
    },
    /// The proxy could not reach the upstream, or it broke the exchange or did not answer
    /// in time (`upstream_error`, `upstream_timeout`).
    #[error("upstream failed ({status}): {message}")]
    Upstream {
        /// The proxy's status: 502 for a failure, 504 for a timeout.
        status: u16,
        /// The proxy's explanation.
        message: String,
    },
    /// Any other refusal by the proxy, such as `bad_request`, `insecure_scheme`,
    /// `session_token_required` or `audit_unavailable`.
    #[error("proxy refused the call ({slug}, {status}): {message}")]
    Refused {
        /// The stable slug from the `x-as-refusal` header.
        slug: String,
        /// The HTTP status of the refusal.
        status: u16,
        /// The proxy's explanation.
        message: String,
    },
    /// No proxy answers on the port from `session.json` (or the configured one).
    #[error(
        "no agentsecrets proxy is running: start one with `agentsecrets proxy start` or \
         call ensure_proxy"
    )]
    ProxyNotRunning,
    /// [`crate::AgentSecrets::ensure_proxy`] started the proxy, but it did not come up.
    #[error("cannot start the agentsecrets proxy: {message}")]
    ProxyStart {
        /// What went wrong.
        message: String,
    },
    /// The request was malformed before it left the program (a bad secret name, header
    /// or URL); nothing was sent.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong with it.
        message: String,
    },
    /// The client's settings are unusable (no home directory, a bad agent name).
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong with them.
        message: String,
    },
    /// An `agentsecrets` command run for a management call (policy) failed.
    #[error("agentsecrets {command} failed: {message}")]
    Command {
        /// The subcommand, such as `agent policy set`.
        command: String,
        /// What the command said on stderr.
        message: String,
    },
    /// A response body is not the JSON asked for by [`crate::Response::json`].
    #[error("response body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The HTTP exchange with the proxy failed.
    #[error("talking to the proxy: {0}")]
    Http(#[from] reqwest::Error),
    /// A local file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The proxy's refusal slug, when the proxy refused the call.
    pub fn slug(&self) -> Option<&str> {
        let slug = match self {
            Error::DomainNotAllowed { .. } => Slug::DomainNotInAllowlist,
            Error::AgentUnauthorized { .. } => Slug::AgentUnauthorized,
            Error::IdentityRequired { .. } => Slug::IdentityRequired,
            Error::CapabilityDenied { .. } => Slug::CapabilityDenied,
            Error::SecretNotFound { .. } => Slug::SecretNotFound,
            Error::SsrfBlocked { .. } => Slug::SsrfBlocked,
            Error::Upstream { status: 504, .. } => Slug::UpstreamTimeout,
            Error::Upstream { .. } => Slug::UpstreamError,
            Error::Refused { slug, .. } => return Some(slug),
            _ => return None,
        };
        Some(slug.as_str())
    }

    /// Whether the proxy refused the call on policy (an identity, allowlist, SSRF or
    /// capability rule) rather than failing at it.
    pub fn is_policy_refusal(&self) -> bool {
        match self {
            Error::Refused { status, .. } => matches!(status, 401 | 403),
            other => other.slug().and_then(parse_slug).is_some_and(Slug::is_block),
        }
    }
}

/// The refusal body as the proxy writes it; every field optional so that a newer or older
/// proxy still maps to something useful.
#[derive(Default, serde::Deserialize)]
struct RefusalBody {
    error: Option<String>,
    message: Option<String>,
    domain: Option<String>,
    key: Option<String>,
    rule: Option<String>,
}

/// The error for a response, when it is a refusal by the proxy rather than an upstream
/// answer.
pub(crate) fn refusal(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<Error> {
    let slug = headers.get(REFUSAL_HEADER)?.to_str().unwrap_or_default().trim().to_owned();
    let parsed: RefusalBody = serde_json::from_slice(body).unwrap_or_default();
    let slug = if slug.is_empty() { parsed.error.unwrap_or_default() } else { slug };
    let message = parsed.message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());

    let error = match parse_slug(&slug) {
        Some(Slug::DomainNotInAllowlist) => {
            Error::DomainNotAllowed { domain: parsed.domain.unwrap_or_default(), message }
        }
        Some(Slug::AgentUnauthorized) => Error::AgentUnauthorized { message },
        Some(Slug::IdentityRequired) => Error::IdentityRequired { message },
        Some(Slug::CapabilityDenied) => Error::CapabilityDenied { rule: parsed.rule, message },
        Some(Slug::SecretNotFound) => {
            Error::SecretNotFound { key: parsed.key.unwrap_or_default(), message }
        }
        Some(Slug::SsrfBlocked) => Error::SsrfBlocked { domain: parsed.domain, message },
        Some(Slug::UpstreamError | Slug::UpstreamTimeout) => Error::Upstream { status, message },
        _ => Error::Refused { slug, status, message },
    };
    Some(error)
}

fn parse_slug(slug: &str) -> Option<Slug> {
    serde_json::from_value(serde_json::Value::String(slug.to_owned())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, slug: &str, body: &str) -> Option<Error> {
        let mut headers = HeaderMap::new();
        headers.insert(REFUSAL_HEADER, slug.parse().unwrap());
        refusal(status, &headers, body.as_bytes())
    }

    #[test]
    fn an_upstream_error_status_without_the_header_is_no_refusal() {
        let body = br#"{"error":"secret_not_found","message":"from the upstream"}"#;

        assert!(refusal(404, &HeaderMap::new(), body).is_none());
    }

    #[test]
    fn each_slug_maps_to_its_variant_with_context() {
        let domain = refused(403, "domain_not_in_allowlist", r#"{"message":"m","domain":"e.com"}"#);
        let key = refused(404, "secret_not_found", r#"{"message":"m","key":"STRIPE_KEY"}"#);
        let agent = refused(401, "agent_unauthorized", r#"{"message":"unauthorized"}"#);
        let timeout = refused(504, "upstream_timeout", r#"{"message":"slow"}"#);

        assert!(
            matches!(domain, Some(Error::DomainNotAllowed { domain, .. }) if domain == "e.com")
        );
        assert!(matches!(key, Some(Error::SecretNotFound { key, .. }) if key == "STRIPE_KEY"));
        assert!(
            matches!(agent, Some(Error::AgentUnauthorized { message }) if message == "unauthorized")
        );
        assert!(matches!(timeout, Some(Error::Upstream { status: 504, .. })));
    }

    #[test]
    fn an_unknown_slug_keeps_its_name_and_status() {
        let err = refused(418, "brand_new_rule", r#"{"message":"no"}"#).unwrap();

        assert_eq!(err.slug(), Some("brand_new_rule"));
        assert!(matches!(err, Error::Refused { status: 418, .. }));
    }

    #[test]
    fn a_body_that_is_not_json_becomes_the_message() {
        let err = refused(403, "capability_denied", "plain words").unwrap();

        assert!(matches!(err, Error::CapabilityDenied { message, .. } if message == "plain words"));
    }

    #[test]
    fn policy_refusals_are_told_from_failures() {
        let blocked = refused(403, "identity_required", "{}").unwrap();
        let failed = refused(502, "upstream_error", "{}").unwrap();
        let session = refused(401, "session_token_required", "{}").unwrap();

        assert!(blocked.is_policy_refusal());
        assert!(!failed.is_policy_refusal());
        assert!(session.is_policy_refusal());
        assert_eq!(failed.slug(), Some("upstream_error"));
    }
}
