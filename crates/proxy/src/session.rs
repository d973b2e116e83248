//! `session.json`: how a running proxy is found, and the token that proves a caller is
//! local and allowed to use it.

use std::path::Path;

use agentsecrets_store::home::write_private;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The running proxy's session, as written to `$AGENTSECRETS_HOME/session.json`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// `as_sess_...`, rotated at every start.
    pub token: String,
    /// Listening port on 127.0.0.1.
    pub port: u16,
    /// Process id of the proxy.
    pub pid: u32,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Whether `/proxy` requires the token.
    #[serde(default = "default_true")]
    pub token_required: bool,
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"[redacted]")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("started_at", &self.started_at)
            .finish()
    }
}

impl Session {
    /// A new session for this process with a fresh random token.
    pub fn new(port: u16, token_required: bool) -> Session {
        let mut bytes = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token =
            format!("as_sess_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        Session {
            token,
            port,
            pid: std::process::id(),
            started_at: agentsecrets_store::timestamp_now(),
            token_required,
        }
    }

    /// Writes the session file (0600, atomically).
    pub fn write(&self, path: &Path) -> agentsecrets_store::Result<()> {
        // Serializing plain fields cannot fail.
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_private(path, &body)
    }

    /// Reads the session file, if there is a readable one.
    pub fn read(path: &Path) -> Option<Session> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Removes the session file if it still belongs to this process.
    pub fn remove_if_ours(path: &Path) {
        if Session::read(path).is_some_and(|s| s.pid == std::process::id()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
