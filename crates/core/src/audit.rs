//! The audit entry: one record per call, and its renderings.
//!
//! The entry has no field that can hold a secret value: secrets appear by name only, and
//! the target URL is stored without its query string whenever a query injection was made.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::IdentityLevel;

/// How a call reached the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Through the HTTP proxy.
    Http,
    /// Through `agentsecrets call` without a running proxy.
    Cli,
    /// Through the MCP server.
    Mcp,
    /// Through `agentsecrets env`.
    Env,
}

impl Transport {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Cli => "cli",
            Transport::Mcp => "mcp",
            Transport::Env => "env",
        }
    }
}

/// The outcome of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallStatus {
    /// The call was forwarded and answered (whatever the upstream status).
    #[serde(rename = "OK")]
    Ok,
    /// A policy refused the call before any secret was used.
    #[serde(rename = "BLOCKED")]
    Blocked,
    /// The call failed: bad request, missing secret, upstream failure.
    #[serde(rename = "ERROR")]
    Error,
    /// The record was written before the credential left and the call has not ended
    /// yet; an entry left in this state means the process died mid-call.
    #[serde(rename = "PENDING")]
    Pending,
}

impl CallStatus {
    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ok => "OK",
            CallStatus::Blocked => "BLOCKED",
            CallStatus::Error => "ERROR",
            CallStatus::Pending => "PENDING",
        }
    }

    /// Parses the upper-case name, ignoring case.
    pub fn parse(raw: &str) -> Option<CallStatus> {
        match raw.to_ascii_uppercase().as_str() {
            "OK" => Some(CallStatus::Ok),
            "BLOCKED" => Some(CallStatus::Blocked),
            "ERROR" => Some(CallStatus::Error),
            "PENDING" => Some(CallStatus::Pending),
            _ => None,
        }
    }
}

/// One audit log entry, as stored and as printed by `log list --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `log_<ulid>`.
    pub id: String,
    /// Position in the log, from 1.
    pub seq: i64,
    /// RFC 3339 in UTC with microseconds and a `+00:00` offset.
    pub timestamp: String,
    /// Workspace id.
    pub workspace: String,
    /// Project name.
    pub project: String,
    /// The agent's name; null for anonymous callers.
    pub agent_id: Option<String>,
    /// Identity level of the caller.
    pub identity_level: IdentityLevel,
    /// Token id for issued callers.
    pub token_id: Option<String>,
    /// Short fingerprint of the token for issued callers.
    pub token_fingerprint: Option<String>,
    /// The caller's session id, when it sent one.
    pub session_id: Option<String>,
    /// How the call arrived.
    pub transport: Transport,
    /// HTTP method, or `ENV` for env injection.
    pub method: String,
    /// Target URL, never with an injected value in it.
    pub target_url: String,
    /// Target host.
    pub domain: String,
    /// Names of the secrets used.
    pub secret_keys: Vec<String>,
    /// Injection styles used.
    pub auth_styles: Vec<String>,
    /// Outcome.
    pub status: CallStatus,
    /// `-` or a slug.
    pub reason: String,
    /// Upstream HTTP status, or the proxy's refusal status.
    pub status_code: Option<u16>,
    /// Wall time of the call.
    pub duration_ms: u64,
    /// Whether an echoed secret was scrubbed from the response.
    pub redacted: bool,
    /// Content hash of the policy in force.
    pub policy_snapshot_id: Option<String>,
    /// Hash of the previous entry (hex), empty for the first.
    pub prev_hash: String,
    /// Hash of this entry's start-time fields and the previous hash (hex).
    pub hash: String,
    /// Hash of `hash` and the outcome fields (hex), set when the call settles; empty
    /// while the entry is `PENDING`.
    pub outcome_hash: String,
}

impl AuditEntry {
    /// The chain hash: SHA-256 over the previous hash and every field fixed when the call
    /// starts (who, what, where, when, under which policy). The outcome, settled later,
    /// is covered by [`AuditEntry::outcome_digest`].
    pub fn chain_hash(&self) -> String {
        let keys = self.secret_keys.join(",");
        let styles = self.auth_styles.join(",");
        let fields: [&str; 18] = [
            &self.prev_hash,
            &self.id,
            &self.timestamp,
            &self.workspace,
            &self.project,
            self.agent_id.as_deref().unwrap_or(""),
            self.identity_level.as_str(),
            self.token_id.as_deref().unwrap_or(""),
            self.token_fingerprint.as_deref().unwrap_or(""),
            self.session_id.as_deref().unwrap_or(""),
            self.transport.as_str(),
            &self.method,
            &self.target_url,
            &self.domain,
            &keys,
            &styles,
            self.policy_snapshot_id.as_deref().unwrap_or(""),
            &self.seq.to_string(),
        ];
        digest(&fields)
    }

    /// The outcome hash: SHA-256 over [`AuditEntry::hash`] and the fields settled when
    /// the call ends (status, reason, code, duration, redaction).
    pub fn outcome_digest(&self) -> String {
        let code = self.status_code.map(|c| c.to_string()).unwrap_or_default();
        let fields: [&str; 6] = [
            &self.hash,
            self.status.as_str(),
            &self.reason,
            &code,
            &self.duration_ms.to_string(),
            if self.redacted { "1" } else { "0" },
        ];
        digest(&fields)
    }

    /// The one-line rendering of `log list` and `proxy logs` on a terminal:
    ///
    /// ```text
    /// 14:22:01  billing-tool   issued    STRIPE_KEY  api.stripe.com  POST /v1/charges  200  143ms
    /// ```
    pub fn one_line(&self) -> String {
        let time = self.timestamp.get(11..19).unwrap_or(&self.timestamp);
        let agent = self.agent_id.as_deref().unwrap_or("(anonymous)");
        let keys =
            if self.secret_keys.is_empty() { "-".to_owned() } else { self.secret_keys.join(",") };
        let path = url_path(&self.target_url);
        let outcome = match (self.status, self.status_code) {
            (CallStatus::Ok, Some(code)) => code.to_string(),
            (CallStatus::Ok, None) => "OK".to_owned(),
            (status, _) => format!("{} {}", status.as_str(), self.reason),
        };
        format!(
            "{time}  {agent:<14} {level:<9} {keys:<11} {domain:<15} {method:<4} {path}  \
             {outcome}  {ms}ms",
            level = self.identity_level.as_str(),
            domain = self.domain,
            method = self.method,
            ms = self.duration_ms,
        )
    }
}

fn url_path(url: &str) -> &str {
    // Entries of `env` name a command, not a URL.
    let Some((_, after_scheme)) = url.split_once("://") else { return url };
    let path = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
    path.split('?').next().unwrap_or(path)
}

/// SHA-256 over length-prefixed fields, so no two field lists hash alike.
fn digest(fields: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            id: "log_01".into(),
            seq: 1,
            timestamp: "2026-06-11T14:22:01.000000+00:00".into(),
            workspace: "ws".into(),
            project: "default".into(),
            agent_id: Some("billing-tool".into()),
            identity_level: IdentityLevel::Declared,
            token_id: None,
            token_fingerprint: None,
            session_id: None,
            transport: Transport::Http,
            method: "POST".into(),
            target_url: "https://api.stripe.com/v1/charges".into(),
            domain: "api.stripe.com".into(),
            secret_keys: vec!["STRIPE_KEY".into()],
            auth_styles: vec!["bearer".into()],
            status: CallStatus::Ok,
            reason: "-".into(),
            status_code: Some(200),
            duration_ms: 143,
            redacted: false,
            policy_snapshot_id: None,
            prev_hash: String::new(),
            hash: String::new(),
            outcome_hash: String::new(),
        }
    }

    #[test]
    fn one_line_shows_who_what_where() {
        let line = entry().one_line();
        assert!(line.starts_with("14:22:01  billing-tool"));
        assert!(line.contains("STRIPE_KEY"));
        assert!(line.contains("POST /v1/charges  200  143ms"));
    }

    #[test]
    fn chain_hash_changes_with_any_identity_field() {
        let base = entry().chain_hash();
        let mut other = entry();
        other.agent_id = Some("someone-else".into());

        assert_ne!(base, other.chain_hash());
        assert_eq!(base, entry().chain_hash());
    }

    #[test]
    fn outcome_digest_covers_the_settled_fields() {
        let base = entry().outcome_digest();
        let mut other = entry();
        other.status_code = Some(500);

        assert_ne!(base, other.outcome_digest());
    }

    #[test]
    fn json_uses_upper_case_status_and_lower_case_levels() {
        let json = serde_json::to_value(entry()).unwrap();
        assert_eq!(json["status"], "OK");
        assert_eq!(json["identity_level"], "declared");
        assert_eq!(json["transport"], "http");
    }
}
