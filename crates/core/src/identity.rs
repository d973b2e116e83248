//! Who made a call: the three identity levels and the identity a call resolved to.

use crate::names::AgentName;

/// How much the proxy knows about a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityLevel {
    /// The caller said nothing about itself.
    Anonymous,
    /// The caller named itself; the name is taken at its word.
    Declared,
    /// The caller presented a signed agent token that verified.
    Issued,
}

impl IdentityLevel {
    /// The lowercase name used in the audit log and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityLevel::Anonymous => "anonymous",
            IdentityLevel::Declared => "declared",
            IdentityLevel::Issued => "issued",
        }
    }

    /// Order of strength: anonymous < declared < issued.
    pub fn rank(self) -> u8 {
        match self {
            IdentityLevel::Anonymous => 0,
            IdentityLevel::Declared => 1,
            IdentityLevel::Issued => 2,
        }
    }

    /// Parses the lowercase name.
    pub fn parse(raw: &str) -> Option<IdentityLevel> {
        match raw {
            "anonymous" => Some(IdentityLevel::Anonymous),
            "declared" => Some(IdentityLevel::Declared),
            "issued" => Some(IdentityLevel::Issued),
            _ => None,
        }
    }
}

/// The identity a call resolved to, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity level.
    pub level: IdentityLevel,
    /// The agent's name; `None` for anonymous callers.
    pub agent: Option<AgentName>,
    /// The id (`tok_...`) of the token that verified, for issued callers.
    pub token_id: Option<String>,
}

impl Identity {
    /// A caller that said nothing.
    pub fn anonymous() -> Identity {
        Identity { level: IdentityLevel::Anonymous, agent: None, token_id: None }
    }

    /// A caller that named itself.
    pub fn declared(agent: AgentName) -> Identity {
        Identity { level: IdentityLevel::Declared, agent: Some(agent), token_id: None }
    }
}
