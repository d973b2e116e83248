//! Names that users and agents choose: secret keys, project names and agent names.
//!
//! Each is validated once, at the edge, and carried as a newtype afterwards so that code
//! deeper in does not need to validate again.

use std::fmt;

/// Longest secret key name accepted.
pub const MAX_KEY_LEN: usize = 128;

/// Longest agent name accepted.
pub const MAX_AGENT_LEN: usize = 64;

/// Longest project name accepted.
pub const MAX_PROJECT_LEN: usize = 64;

/// A name that broke its syntax rule. The message states the rule; the offending text is
/// escaped so that control characters never reach a terminal or a log line raw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown}: {rule}")]
pub struct NameError {
    kind: &'static str,
    shown: String,
    rule: &'static str,
}

impl NameError {
    fn new(kind: &'static str, raw: &str, rule: &'static str) -> NameError {
        NameError { kind, shown: escape_for_display(raw), rule }
    }
}

/// Whether `raw` is a usable session id: a caller-chosen label of 1 to 128 printable
/// ASCII characters without spaces, so it can sit in a header, a log line and a table.
pub fn is_valid_session_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic())
}

/// Renders untrusted text for a message: quoted, at most 70 characters, with control
/// characters and non-ASCII escaped.
pub fn escape_for_display(raw: &str) -> String {
    let mut shown: String = raw.chars().take(64).flat_map(char::escape_default).collect();
    if raw.chars().count() > 64 {
        shown.push_str("...");
    }
    format!("'{shown}'")
}

const KEY_RULE: &str =
    "secret names are 1 to 128 of A-Z, a-z, 0-9 and _, and do not start with a digit";

/// The name of a secret in the vault, such as `STRIPE_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    /// Validates `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_KEY_LEN`] bytes.
    pub fn parse(raw: &str) -> Result<SecretKey, NameError> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !rest_ok || raw.len() > MAX_KEY_LEN {
            return Err(NameError::new("secret name", raw, KEY_RULE));
        }
        Ok(SecretKey(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const AGENT_RULE: &str = "agent names are 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', \
     starting with a letter or digit";

/// The name an agent calls itself by, such as `billing-tool`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    /// Validates 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit.
    pub fn parse(raw: &str) -> Result<AgentName, NameError> {
        parse_label(raw, MAX_AGENT_LEN)
            .map(AgentName)
            .ok_or_else(|| NameError::new("agent name", raw, AGENT_RULE))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const PROJECT_RULE: &str = "project names are 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', \
     starting with a letter or digit";

/// The name of a project inside a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectName(String);

impl ProjectName {
    /// Validates the same shape as agent names.
    pub fn parse(raw: &str) -> Result<ProjectName, NameError> {
        parse_label(raw, MAX_PROJECT_LEN)
            .map(ProjectName)
            .ok_or_else(|| NameError::new("project name", raw, PROJECT_RULE))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_label(raw: &str, max: usize) -> Option<String> {
    let mut chars = raw.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (first_ok && rest_ok && raw.len() <= max).then(|| raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_follow_the_rule() {
        for good in ["STRIPE_KEY", "_x", "a1", &"K".repeat(128)] {
            assert!(SecretKey::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1ABC", "A-B", "A B", "KEY=", "ключ", &"K".repeat(129)] {
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_names_follow_the_rule() {
        for good in ["billing-tool", "a", "agent.v2_x", &"a".repeat(64)] {
            assert!(AgentName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-lead", ".x", "has space", "x\u{1b}[31m", "a\nb", &"a".repeat(65)] {
            assert!(AgentName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_escape_control_characters() {
        let err = AgentName::parse("evil\u{1b}[2J\nname").unwrap_err().to_string();

        assert!(!err.contains('\u{1b}'));
        assert!(!err.contains('\n'));
        assert!(err.contains("agent names are"));
    }
}
