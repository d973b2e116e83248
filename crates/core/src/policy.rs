//! Capability contracts: what one agent may use, on top of the workspace's own rules.
//!
//! A contract narrows, it never widens: a call must pass the workspace allowlist and SSRF
//! rules first, and only then its agent's contract. Within a contract, deny rules win over
//! allow rules, and an empty allow list puts no limit on its dimension. A refusal names
//! the rule that refused the call, never the secrets a contract or the vault holds.

use serde::{Deserialize, Serialize};

use crate::net::normalize_host;

/// What a contract does with a call it would refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractMode {
    /// Refuse it with `capability_denied`.
    #[default]
    Enforce,
    /// Serve it, and log it with `reason: capability_denied_report`.
    Report,
}

impl ContractMode {
    /// Parses `enforce` or `report`.
    pub fn parse(raw: &str) -> Option<ContractMode> {
        match raw.to_ascii_lowercase().as_str() {
            "enforce" => Some(ContractMode::Enforce),
            "report" => Some(ContractMode::Report),
            _ => None,
        }
    }

    /// The mode as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractMode::Enforce => "enforce",
            ContractMode::Report => "report",
        }
    }
}

/// One agent's capability contract. The default contract restricts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contract {
    /// Secrets the agent may use; empty means any.
    pub allow_secrets: Vec<String>,
    /// Secrets the agent may never use, whatever the allow list says.
    pub deny_secrets: Vec<String>,
    /// Hosts the agent may reach (`api.example.com` or `*.example.com`); empty means any
    /// host of the workspace allowlist.
    pub allow_domains: Vec<String>,
    /// HTTP methods the agent may use (upper case); empty means any.
    pub allow_methods: Vec<String>,
    /// Calls per minute, over a sliding window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    /// Enforce the contract, or only report what it would refuse.
    pub mode: ContractMode,
}

/// The rule of a contract (or of the workspace's anonymous rules) that refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule, as a person reads it: `deny-secret GITHUB_KEY`.
    pub rule: String,
}

/// A contract's domain rule that is not a valid host or `*.host` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --allow-domain {entry:?}: {why}")]
pub struct DomainPatternError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub why: String,
}

impl Contract {
    /// Whether the contract restricts anything at all.
    pub fn is_empty(&self) -> bool {
        self.allow_secrets.is_empty()
            && self.deny_secrets.is_empty()
            && self.allow_domains.is_empty()
            && self.allow_methods.is_empty()
            && self.rate_per_minute.is_none()
    }

    /// Checks one secret against the secret rules.
    pub fn check_secret(&self, key: &str) -> Result<(), Denial> {
        if self.deny_secrets.iter().any(|k| k == key) {
            return Err(Denial { rule: format!("deny-secret {key}") });
        }
        if !self.allow_secrets.is_empty() && !self.allow_secrets.iter().any(|k| k == key) {
            return Err(Denial { rule: format!("allow-secret (does not include {key})") });
        }
        Ok(())
    }

    /// Checks the target host (already normalised) against the domain rules.
    pub fn check_domain(&self, host: &str) -> Result<(), Denial> {
        if self.allow_domains.is_empty()
            || self.allow_domains.iter().any(|p| domain_matches(p, host))
        {
            return Ok(());
        }
        Err(Denial { rule: format!("allow-domain (does not include {host})") })
    }

    /// Checks the HTTP method against the method rules.
    pub fn check_method(&self, method: &str) -> Result<(), Denial> {
        if self.allow_methods.is_empty()
            || self.allow_methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return Ok(());
        }
        Err(Denial { rule: format!("allow-method (does not include {method})") })
    }

    /// Checks a whole call: method, then domain, then every secret. The rate limit is
    /// stateful and checked by the engine.
    pub fn check_call(&self, method: &str, host: &str, keys: &[String]) -> Result<(), Denial> {
        self.check_method(method)?;
        self.check_domain(host)?;
        keys.iter().try_for_each(|key| self.check_secret(key))
    }

    /// Secrets named both in the allow and the deny list: the deny rule wins for each.
    pub fn contradictions(&self) -> Vec<String> {
        self.allow_secrets.iter().filter(|k| self.deny_secrets.contains(k)).cloned().collect()
    }
}

/// Normalises a contract's domain rule: a host as the allowlist normalises it, or `*.`
/// followed by one.
pub fn normalize_domain_pattern(entry: &str) -> Result<String, DomainPatternError> {
    let entry = entry.trim();
    let error = |why: String| DomainPatternError { entry: entry.to_owned(), why };
    match entry.strip_prefix("*.") {
        Some(rest) if rest.contains('*') => Err(error("only one leading *. is allowed".into())),
        Some(rest) => normalize_host(rest)
            .map(|host| format!("*.{host}"))
            .map_err(|err| error(err.to_string())),
        None => normalize_host(entry).map_err(|err| error(err.to_string())),
    }
}

/// Whether a normalised host matches a rule: exactly, or, for `*.example.com`, as a
/// subdomain of `example.com` at any depth (never `example.com` itself, and never a host
/// that merely ends in the same letters).
pub fn domain_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            host.strip_suffix(parent).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        }
        None => pattern == host,
    }
}

/// Parses a rate such as `60/min`, `60/m` or `60`: calls per minute, at least 1.
pub fn parse_rate(raw: &str) -> Result<u32, String> {
    let raw = raw.trim();
    let number = raw
        .strip_suffix("/min")
        .or_else(|| raw.strip_suffix("/m"))
        .or_else(|| raw.strip_suffix("/minute"))
        .unwrap_or(raw);
    match number.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid rate {raw:?}: write calls per minute as N/min with N at least 1, \
             for example 60/min"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        Contract {
            allow_secrets: vec!["STRIPE_KEY".into(), "GITHUB_KEY".into()],
            deny_secrets: vec!["GITHUB_KEY".into()],
            allow_domains: vec!["api.stripe.com".into(), "*.example.com".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            ..Contract::default()
        }
    }

    #[test]
    fn deny_wins_over_allow_and_the_rule_is_named() {
        let denial = contract().check_secret("GITHUB_KEY").unwrap_err();
        assert_eq!(denial.rule, "deny-secret GITHUB_KEY");
        assert_eq!(contract().contradictions(), vec!["GITHUB_KEY".to_owned()]);
        assert!(contract().check_secret("STRIPE_KEY").is_ok());
        assert!(contract().check_secret("OPENAI_KEY").is_err());
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        assert!(domain_matches("*.example.com", "api.example.com"));
        assert!(domain_matches("*.example.com", "a.b.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(!domain_matches("*.example.com", "evilexample.com"));
        assert!(!domain_matches("api.stripe.com", "api.stripe.com.evil.io"));
    }

    #[test]
    fn a_call_is_checked_on_every_dimension() {
        let c = contract();
        assert!(c.check_call("POST", "api.stripe.com", &["STRIPE_KEY".into()]).is_ok());
        assert!(c.check_call("DELETE", "api.stripe.com", &["STRIPE_KEY".into()]).is_err());
        assert!(c.check_call("GET", "api.github.com", &["STRIPE_KEY".into()]).is_err());
        assert!(Contract::default().check_call("PUT", "x.io", &["ANY".into()]).is_ok());
    }

    #[test]
    fn patterns_and_rates_are_normalised_or_refused() {
        assert_eq!(normalize_domain_pattern("*.Example.COM.").unwrap(), "*.example.com");
        assert_eq!(normalize_domain_pattern("API.stripe.com").unwrap(), "api.stripe.com");
        assert!(normalize_domain_pattern("*.*.example.com").is_err());
        assert!(normalize_domain_pattern("https://x.io").is_err());
        assert_eq!(parse_rate("30/min"), Ok(30));
        assert_eq!(parse_rate("5"), Ok(5));
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
