//! Why a call was refused or failed: stable slugs, HTTP statuses and messages.
//!
//! Messages follow two rules. They never quote anything that may carry an injected value
//! (a URL's query, a header value). And they keep to the phrases the official Python SDK
//! classifies on: only a blocked domain mentions the workspace allowlist, only a missing
//! secret says "secret '...' not found", and only upstream failures say "upstream".

use serde::{Deserialize, Serialize};

/// The stable error slugs of the HTTP interface and the audit log's `reason` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slug {
    /// The target's host is not in the workspace allowlist.
    DomainNotInAllowlist,
    /// The agent token is missing a valid signature, expired, revoked or foreign.
    AgentUnauthorized,
    /// The workspace requires a stronger identity than the caller has.
    IdentityRequired,
    /// The agent's capability contract refuses the call.
    CapabilityDenied,
    /// The target resolves to a non-public address.
    SsrfBlocked,
    /// The target is plain HTTP where HTTPS is required.
    InsecureScheme,
    /// A named secret does not exist in the project.
    SecretNotFound,
    /// The request is malformed.
    BadRequest,
    /// The request or one of its parts is larger than the proxy accepts.
    PayloadTooLarge,
    /// The upstream could not be reached or broke the exchange.
    UpstreamError,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The proxy's session token is missing or wrong.
    SessionTokenRequired,
    /// The audit log cannot be written, so no credential may be used.
    AuditUnavailable,
    /// The vault could not be read.
    VaultUnavailable,
}

impl Slug {
    /// The slug as it appears on the wire and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Slug::DomainNotInAllowlist => "domain_not_in_allowlist",
            Slug::AgentUnauthorized => "agent_unauthorized",
            Slug::IdentityRequired => "identity_required",
            Slug::CapabilityDenied => "capability_denied",
            Slug::SsrfBlocked => "ssrf_blocked",
            Slug::InsecureScheme => "insecure_scheme",
            Slug::SecretNotFound => "secret_not_found",
            Slug::BadRequest => "bad_request",
            Slug::PayloadTooLarge => "payload_too_large",
            Slug::UpstreamError => "upstream_error",
            Slug::UpstreamTimeout => "upstream_timeout",
            Slug::SessionTokenRequired => "session_token_required",
            Slug::AuditUnavailable => "audit_unavailable",
            Slug::VaultUnavailable => "vault_unavailable",
        }
    }

    /// The HTTP status the proxy answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Slug::BadRequest => 400,
            Slug::AgentUnauthorized | Slug::SessionTokenRequired => 401,
            Slug::DomainNotInAllowlist
            | Slug::IdentityRequired
            | Slug::CapabilityDenied
            | Slug::SsrfBlocked
            | Slug::InsecureScheme => 403,
            Slug::SecretNotFound => 404,
            Slug::PayloadTooLarge => 413,
            Slug::UpstreamError => 502,
            Slug::AuditUnavailable | Slug::VaultUnavailable => 503,
            Slug::UpstreamTimeout => 504,
        }
    }

    /// Whether the refusal is a policy decision (`BLOCKED`) rather than a failure (`ERROR`).
    pub fn is_block(self) -> bool {
        self.http_status() == 401 || self.http_status() == 403
    }
}

/// A refused or failed call, ready to be rendered as the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The stable slug.
    #[serde(rename = "error")]
    pub slug: Slug,
    /// A human sentence saying what went wrong and what to do.
    pub message: String,
    /// The refused domain, for allowlist and SSRF refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The missing secret's name, for `secret_not_found`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The rule that refused the call, for `capability_denied` (`deny-secret KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Refusal {
    /// A refusal with a slug and a message and no context fields.
    pub fn new(slug: Slug, message: impl Into<String>) -> Refusal {
        Refusal { slug, message: message.into(), domain: None, key: None, rule: None }
    }

    /// Shorthand for a `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(Slug::BadRequest, message)
    }

    /// The host is not allowlisted.
    pub fn domain_not_allowed(domain: &str, allowlist_empty: bool) -> Refusal {
        let hint = if allowlist_empty { "; the allowlist is empty" } else { "" };
        let message = format!(
            "domain '{domain}' is not in the workspace allowlist{hint}; \
             allow it with: agentsecrets workspace allowlist add {domain}"
        );
        Refusal {
            domain: Some(domain.to_owned()),
            ..Refusal::new(Slug::DomainNotInAllowlist, message)
        }
    }

    /// A named secret is missing.
    pub fn secret_not_found(key: &str, project: &str) -> Refusal {
        let message = format!(
            "secret '{key}' not found in project '{project}'; \
             set it with: agentsecrets secrets set {key}"
        );
        Refusal { key: Some(key.to_owned()), ..Refusal::new(Slug::SecretNotFound, message) }
    }

    /// A capability contract (or the workspace's rules for callers without one) refuses
    /// the call; `whose` says which rules, `rule` which of them.
    pub fn capability_denied(whose: &str, rule: &str) -> Refusal {
        let message = format!(
            "capability denied by {whose}: rule {rule}; see the rules with: agentsecrets \
             agent policy show NAME, or ask the workspace owner to change them"
        );
        Refusal { rule: Some(rule.to_owned()), ..Refusal::new(Slug::CapabilityDenied, message) }
    }

    /// The HTTP status of this refusal.
    pub fn http_status(&self) -> u16 {
        self.slug.http_status()
    }

    /// The JSON body the proxy answers with.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and an enum cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.slug.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_refusal_puts_the_domain_in_the_first_quotes() {
        let refusal = Refusal::domain_not_allowed("evil.com", false);
        let first_quoted = refusal.message.split('\'').nth(1);

        assert_eq!(first_quoted, Some("evil.com"));
        assert_eq!(refusal.http_status(), 403);
        let json: serde_json::Value = serde_json::from_str(&refusal.to_json()).unwrap();
        assert_eq!(json["error"], "domain_not_in_allowlist");
        assert_eq!(json["domain"], "evil.com");
    }

    #[test]
    fn missing_secret_message_matches_the_sdk_phrase() {
        let refusal = Refusal::secret_not_found("STRIPE_KEY", "default");

        assert!(refusal.message.starts_with("secret 'STRIPE_KEY' not found"));
        assert_eq!(refusal.http_status(), 404);
    }

    #[test]
    fn only_refusals_of_policy_are_blocks() {
        assert!(Slug::SsrfBlocked.is_block());
        assert!(Slug::SessionTokenRequired.is_block());
        assert!(!Slug::UpstreamError.is_block());
        assert!(!Slug::SecretNotFound.is_block());
    }
}
