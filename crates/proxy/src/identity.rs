//! Who is calling: declared names, issued tokens verified on every call, and the
//! workspace's minimum identity.
//!
//! Verifying a token costs a signature check and a registry read, so a verified token is
//! cached by its SHA-256. The cache is dropped whenever the vault's change counter moves,
//! which any revocation or agent deletion by any process does: a revoked token fails on
//! the very next call, with no restart and no polling interval.

use std::collections::HashMap;
use std::sync::Mutex;

use agentsecrets_core::identity::{Identity, IdentityLevel};
use agentsecrets_core::names::AgentName;
use agentsecrets_core::refusal::{Refusal, Slug};
use agentsecrets_core::token::{self, MAX_TOKEN_LEN};
use agentsecrets_store::Vault;
use ed25519_dalek::VerifyingKey;

/// A token that verified, as the cache keeps it.
#[derive(Debug, Clone)]
struct Verified {
    token_id: String,
    agent: AgentName,
    expires_at: Option<i64>,
}

/// The outcome of identifying a caller, with what the audit entry should record even
/// when the caller is refused.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The identity, when it could be established.
    pub identity: Result<Identity, Refusal>,
    /// The token's fingerprint, when a token was presented.
    pub fingerprint: Option<String>,
    /// The id the token claims when it parses, logged with a refused token attempt (the
    /// claimed agent name is not: an unverified claim must not put calls on an agent).
    pub claimed_token_id: Option<String>,
}

/// Verifies agent tokens against one workspace's registry.
#[derive(Default)]
pub struct TokenVerifier {
    state: Mutex<VerifierState>,
    used: Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct VerifierState {
    data_version: Option<i64>,
    key: Option<VerifyingKey>,
    verified: HashMap<String, Verified>,
}

impl TokenVerifier {
    /// Identifies a caller from its token and declared name.
    pub fn identify(
        &self,
        vault: &Vault,
        token: Option<&str>,
        declared: Option<&str>,
    ) -> Identified {
        let declared = declared.filter(|d| !d.is_empty());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            let identity = match declared {
                None => Ok(Identity::anonymous()),
                Some(raw) => AgentName::parse(raw)
                    .map(Identity::declared)
                    .map_err(|err| Refusal::bad_request(err.to_string())),
            };
            return Identified { identity, fingerprint: None, claimed_token_id: None };
        };

        let fingerprint = (token.len() <= MAX_TOKEN_LEN).then(|| token::fingerprint(token));
        let verified = self.verify(vault, token);
        let claimed_token_id = match &verified {
            Ok(v) => Some(v.token_id.clone()),
            Err(claimed) => claimed.clone(),
        };
        let identity = verified.map_err(|_| unauthorized()).and_then(|v| {
            if declared.is_some_and(|d| d != v.agent.as_str()) {
                return Err(unauthorized());
            }
            self.note_used(&v.token_id);
            Ok(Identity {
                level: IdentityLevel::Issued,
                agent: Some(v.agent),
                token_id: Some(v.token_id),
            })
        });
        Identified { identity, fingerprint, claimed_token_id }
    }

    /// Token ids used since the last call, with their last-use time, for one batched
    /// registry write.
    pub fn take_used(&self) -> Vec<(String, String)> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.drain().collect()
    }

    fn note_used(&self, token_id: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(token_id.to_owned(), agentsecrets_store::timestamp_now());
    }

    /// Verifies a token. Every failure is the same `unauthorized`, so a failure carries
    /// only the token id it claimed, when it parsed.
    fn verify(&self, vault: &Vault, token: &str) -> Result<Verified, Option<String>> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(None);
        }
        let hash = token::token_hash(token);
        let now = jiff::Timestamp::now().as_second();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        refresh(&mut state, vault);

        if let Some(hit) = state.verified.get(&hash) {
            if hit.expires_at.is_some_and(|at| at <= now) {
                return Err(Some(hit.token_id.clone()));
            }
            return Ok(hit.clone());
        }

        let parsed = token::parse(token).map_err(|_| None)?;
        let claimed = Some(parsed.claims().token_id.clone());
        let refuse = |_| claimed.clone();
        if parsed.workspace() != vault.workspace_id() {
            return Err(claimed);
        }
        let key = state.key.ok_or_else(|| claimed.clone())?;
        parsed.verify(&key, now).map_err(refuse)?;

        let record = vault.token_by_hash(&hash).ok().flatten();
        let record = record
            .filter(|r| r.id == parsed.claims().token_id && r.is_active())
            .ok_or_else(|| claimed.clone())?;
        let agent = AgentName::parse(&record.agent).map_err(|_| claimed)?;
        let verified =
            Verified { token_id: record.id, agent, expires_at: parsed.claims().expires_at };
        state.verified.insert(hash, verified.clone());
        Ok(verified)
    }
}

/// Drops every cached verification when the registry changed since it was filled.
fn refresh(state: &mut VerifierState, vault: &Vault) {
    let version = vault.data_version().ok();
    if state.data_version.is_some() && state.data_version == version {
        return;
    }
    state.verified.clear();
    state.key = vault.verifying_key().ok().flatten();
    state.data_version = version;
}

/// The one answer every failed token gets: nothing an attacker can learn from.
fn unauthorized() -> Refusal {
    Refusal::new(
        Slug::AgentUnauthorized,
        "agent token unauthorized: it is invalid, expired or revoked; ask for a new one with: \
         agentsecrets agent token issue NAME",
    )
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier")
    }
}
