//! The agent registry: agents, their issued tokens, saved tokens and identity settings.
//!
//! The registry stores a token's SHA-256 and metadata, never its value (saved tokens
//! excepted: those are sealed under the vault key like any secret). Revoking a token or
//! deleting an agent writes a tombstone instead of removing the row.

use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::names::AgentName;
use agentsecrets_core::secret::SecretValue;
use agentsecrets_core::token::{self, TokenClaims};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::vault::Vault;
use crate::{Result, StoreError, db};

const SIGNING_KEY_AAD: &[u8] = b"agentsecrets/signing-key/v1";

/// One registered agent, live or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    /// The agent's name.
    pub name: String,
    /// When it was registered.
    pub created_at: String,
    /// When it was deleted, for tombstones.
    pub deleted_at: Option<String>,
    /// Tokens neither revoked nor expired.
    pub active_tokens: i64,
    /// Latest `last_used_at` of its tokens.
    pub last_used_at: Option<String>,
}

/// One issued token's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// `tok_...`.
    pub id: String,
    /// The owning agent's name.
    pub agent: String,
    /// Free-form label such as `production`.
    pub label: String,
    /// Short public fingerprint.
    pub fingerprint: String,
    /// Issue time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: Option<String>,
    /// Last use as the registry knows it (batched, so a little behind).
    pub last_used_at: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
    /// Whether the owning agent was deleted.
    pub agent_deleted: bool,
}

impl TokenRecord {
    /// `active`, `revoked` or `expired`.
    pub fn status(&self) -> &'static str {
        if self.revoked_at.is_some() || self.agent_deleted {
            return "revoked";
        }
        let expired = self.expires_at.as_deref().is_some_and(|at| at <= now().as_str());
        if expired { "expired" } else { "active" }
    }

    /// Whether the token may be used now.
    pub fn is_active(&self) -> bool {
        self.status() == "active"
    }
}

/// A freshly issued token: its record and the value, shown once.
pub struct IssuedToken {
    /// Metadata.
    pub record: TokenRecord,
    /// The `agt_...` value.
    pub value: SecretValue,
}

/// How strictly callers must identify themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrictMode {
    /// Every identity level is served.
    Off,
    /// Calls below the minimum level are refused.
    Enforce,
    /// Calls below the minimum level are served and logged as `identity_required_report`.
    Report,
}

/// The workspace's identity settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdentitySettings {
    /// Whether a minimum identity applies.
    pub strict: StrictMode,
    /// The minimum level when strict (declared unless set to issued).
    pub min_identity: IdentityLevel,
}

impl Default for IdentitySettings {
    fn default() -> IdentitySettings {
        IdentitySettings { strict: StrictMode::Off, min_identity: IdentityLevel::Declared }
    }
}

impl Vault {
    /// Issues a token for `agent`, registering the agent on first issue.
    pub fn issue_token(
        &self,
        agent: &AgentName,
        label: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<IssuedToken> {
        let conn = self.conn();
        db::immediate(&conn, self.path(), |conn| {
            let signing = self.signing_key(conn)?;
            let agent_row = self.live_agent_row(conn, agent.as_str(), true)?.unwrap_or_default();

            let issued_at = jiff::Timestamp::now();
            let claims = TokenClaims {
                token_id: new_token_id(),
                agent: agent.to_string(),
                issued_at: issued_at.as_second(),
                expires_at: expires_at.map(|t| t.as_second()),
            };
            let value = Zeroizing::new(token::issue(self.workspace_id(), &claims, &signing));
            let record = TokenRecord {
                id: claims.token_id.clone(),
                agent: agent.to_string(),
                label: label.to_owned(),
                fingerprint: token::fingerprint(&value),
                created_at: crate::format_timestamp(issued_at),
                expires_at: expires_at.map(crate::format_timestamp),
                last_used_at: None,
                revoked_at: None,
                agent_deleted: false,
            };
            conn.execute(
                "INSERT INTO agent_tokens (id, agent_row, label, token_hash, fingerprint, \
                 created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.id,
                    agent_row,
                    record.label,
                    token::token_hash(&value),
                    record.fingerprint,
                    record.created_at,
                    record.expires_at,
                ],
            )
            .map_err(|e| self.err(e))?;
            Ok(IssuedToken { record, value: SecretValue::from_str_value(&value) })
        })
    }

    /// Registers an agent without issuing a token; false when it already exists.
    pub fn register_agent(&self, agent: &AgentName) -> Result<bool> {
        let conn = self.conn();
        let existed = self.live_agent_row(&conn, agent.as_str(), false)?.is_some();
        if !existed {
            self.live_agent_row(&conn, agent.as_str(), true)?;
        }
        Ok(!existed)
    }

    /// Signs `message` with the workspace key (created on first use), for audit
    /// checkpoints.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        use ed25519_dalek::Signer as _;

        let conn = self.conn();
        let key = db::immediate(&conn, self.path(), |conn| self.signing_key(conn))?;
        Ok(key.sign(message).to_bytes().to_vec())
    }

    /// The workspace's token verifying key, once a token has been issued.
    pub fn verifying_key(&self) -> Result<Option<VerifyingKey>> {
        let raw: Option<Vec<u8>> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'verifying_key'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(raw) = raw else { return Ok(None) };
        let bytes: [u8; 32] =
            raw.as_slice().try_into().map_err(|_| self.corrupt("verifying key"))?;
        VerifyingKey::from_bytes(&bytes).map(Some).map_err(|_| self.corrupt("verifying key"))
    }

    /// The token whose value hashes to `hash`.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("{TOKEN_SELECT} WHERE t.token_hash = ?1");
        self.conn().query_row(&sql, [hash], token_row).optional().map_err(|e| self.err(e))
    }

    /// The token with this id.
    pub fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("{TOKEN_SELECT} WHERE t.id = ?1");
        self.conn().query_row(&sql, [id], token_row).optional().map_err(|e| self.err(e))
    }

    /// Every token, or those of agents of one name (tombstones included), oldest first.
    pub fn tokens(&self, agent: Option<&str>) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let sql = format!(
            "{TOKEN_SELECT} WHERE a.workspace_id = ?1 AND (?2 IS NULL OR a.name = ?2) \
             ORDER BY t.created_at, t.id"
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![self.workspace_id(), agent], token_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Revokes one token; false when it was already revoked. An unknown id, or one that
    /// belongs to another agent than `agent`, is an error.
    pub fn revoke_token(&self, id: &str, agent: Option<&str>) -> Result<bool> {
        let record = self.token_by_id(id)?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "no token with id {id}; list tokens with: agentsecrets agent token list"
            ))
        })?;
        if agent.is_some_and(|a| a != record.agent) {
            return Err(StoreError::Invalid(format!(
                "token {id} does not belong to agent {}",
                agent.unwrap_or_default()
            )));
        }
        let changed = self
            .conn()
            .execute(
                "UPDATE agent_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// Revokes every live token of an agent; returns how many were revoked.
    pub fn revoke_all(&self, agent: &str) -> Result<usize> {
        self.conn()
            .execute(
                "UPDATE agent_tokens SET revoked_at = ?3 WHERE revoked_at IS NULL AND agent_row IN \
                 (SELECT id FROM agents WHERE workspace_id = ?1 AND name = ?2)",
                params![self.workspace_id(), agent, now()],
            )
            .map_err(|e| self.err(e))
    }

    /// Deletes an agent: revokes its tokens and marks it deleted, in one transaction.
    /// The name may be registered again later; its old tokens stay revoked.
    pub fn delete_agent(&self, agent: &str) -> Result<usize> {
        let conn = self.conn();
        db::immediate(&conn, self.path(), |conn| {
            let Some(row) = self.live_agent_row(conn, agent, false)? else {
                return Err(StoreError::Invalid(format!(
                    "no agent named {agent}; list agents with: agentsecrets agent list"
                )));
            };
            let at = now();
            let revoked = conn
                .execute(
                    "UPDATE agent_tokens SET revoked_at = ?2 \
                     WHERE agent_row = ?1 AND revoked_at IS NULL",
                    params![row, at],
                )
                .map_err(|e| self.err(e))?;
            conn.execute("UPDATE agents SET deleted_at = ?2 WHERE id = ?1", params![row, at])
                .map_err(|e| self.err(e))?;
            conn.execute("DELETE FROM saved_tokens WHERE agent_name = ?1", [agent.to_lowercase()])
                .map_err(|e| self.err(e))?;
            Ok(revoked)
        })
    }

    /// Every registered agent (tombstones included), by name.
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT a.name, a.created_at, a.deleted_at, \
                 (SELECT count(*) FROM agent_tokens t WHERE t.agent_row = a.id \
                    AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?2)), \
                 (SELECT max(t.last_used_at) FROM agent_tokens t WHERE t.agent_row = a.id) \
                 FROM agents a WHERE a.workspace_id = ?1 ORDER BY a.name, a.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![self.workspace_id(), now()], |r| {
                Ok(AgentRecord {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    deleted_at: r.get(2)?,
                    active_tokens: r.get(3)?,
                    last_used_at: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// The live agent of this name, matched ignoring case (the SDK upper-cases names).
    pub fn find_agent(&self, name: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT name FROM agents WHERE workspace_id = ?1 AND deleted_at IS NULL \
                 AND lower(name) = lower(?2) ORDER BY name = ?2 DESC LIMIT 1",
                params![self.workspace_id(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records last-use times in one transaction: `(token id, RFC 3339 time)`.
    pub fn touch_tokens(&self, used: &[(String, String)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let conn = self.conn();
        db::immediate(&conn, self.path(), |conn| {
            for (id, at) in used {
                conn.execute(
                    "UPDATE agent_tokens SET last_used_at = ?2 WHERE id = ?1 \
                     AND (last_used_at IS NULL OR last_used_at < ?2)",
                    params![id, at],
                )
                .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    /// Saves a token value for `<NAME>_TOKEN` references (`--save-token`).
    pub fn save_token(&self, agent: &str, value: &SecretValue) -> Result<()> {
        let name = agent.to_lowercase();
        let (nonce, sealed) = self.key.seal(value.expose(), &saved_aad(&name));
        self.conn()
            .execute(
                "INSERT INTO saved_tokens (agent_name, nonce, ciphertext) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (agent_name) DO UPDATE SET nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext",
                params![name, nonce, sealed],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The saved token of an agent, matched ignoring case.
    pub fn saved_token(&self, agent: &str) -> Result<Option<SecretValue>> {
        let name = agent.to_lowercase();
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT nonce, ciphertext FROM saved_tokens WHERE agent_name = ?1",
                [&name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((nonce, sealed)) = row else { return Ok(None) };
        let plain = self.key.open(&nonce, &sealed, &saved_aad(&name)).ok_or_else(|| {
            StoreError::Tampered { project: "(saved tokens)".to_owned(), key: name.clone() }
        })?;
        Ok(Some(SecretValue::new(plain.to_vec())))
    }

    /// The workspace's identity settings.
    pub fn identity_settings(&self) -> Result<IdentitySettings> {
        let strict = match self.setting("strict_identity")?.as_deref() {
            Some("true") => StrictMode::Enforce,
            Some("report") => StrictMode::Report,
            _ => StrictMode::Off,
        };
        let min_identity = self
            .setting("min_identity")?
            .and_then(|raw| IdentityLevel::parse(&raw))
            .unwrap_or(IdentityLevel::Declared);
        Ok(IdentitySettings { strict, min_identity })
    }

    /// Stores the workspace's identity settings.
    pub fn set_identity_settings(&self, settings: IdentitySettings) -> Result<()> {
        let strict = match settings.strict {
            StrictMode::Off => "false",
            StrictMode::Enforce => "true",
            StrictMode::Report => "report",
        };
        self.set_setting("strict_identity", strict)?;
        self.set_setting("min_identity", settings.min_identity.as_str())
    }

    pub(crate) fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT value FROM settings WHERE workspace_id = ?1 AND key = ?2",
                params![self.workspace_id(), key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub(crate) fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO settings (workspace_id, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value",
                params![self.workspace_id(), key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn remove_setting(&self, key: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM settings WHERE workspace_id = ?1 AND key = ?2",
                params![self.workspace_id(), key],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The row id of the live agent of this name; with `create`, registers it if missing.
    fn live_agent_row(&self, conn: &Connection, name: &str, create: bool) -> Result<Option<i64>> {
        let found: Option<i64> = conn
            .query_row(
                "SELECT id FROM agents \
                 WHERE workspace_id = ?1 AND name = ?2 AND deleted_at IS NULL",
                params![self.workspace_id(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if found.is_some() || !create {
            return Ok(found);
        }
        conn.execute(
            "INSERT INTO agents (workspace_id, name, created_at) VALUES (?1, ?2, ?3)",
            params![self.workspace_id(), name, now()],
        )
        .map_err(|e| self.err(e))?;
        Ok(Some(conn.last_insert_rowid()))
    }

    /// The workspace's signing key, created (and sealed under the vault key) on first use.
    fn signing_key(&self, conn: &Connection) -> Result<SigningKey> {
        let meta = |key: &str| -> Result<Option<Vec<u8>>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))
        };
        if let (Some(nonce), Some(sealed)) = (meta("signing_key_nonce")?, meta("signing_key")?) {
            let raw = self
                .key
                .open(&nonce, &sealed, SIGNING_KEY_AAD)
                .ok_or_else(|| self.corrupt("signing key"))?;
            let bytes: [u8; 32] =
                raw.as_slice().try_into().map_err(|_| self.corrupt("signing key"))?;
            return Ok(SigningKey::from_bytes(&bytes));
        }

        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill(seed.as_mut());
        let signing = SigningKey::from_bytes(&seed);
        let (nonce, sealed) = self.key.seal(seed.as_ref(), SIGNING_KEY_AAD);
        let verifying = signing.verifying_key().to_bytes().to_vec();
        for (key, value) in
            [("signing_key_nonce", nonce), ("signing_key", sealed), ("verifying_key", verifying)]
        {
            conn.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![key, value])
                .map_err(|e| self.err(e))?;
        }
        Ok(signing)
    }

    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt { path: self.path().to_owned(), detail: format!("damaged {what}") }
    }
}

const TOKEN_SELECT: &str = "SELECT t.id, a.name, t.label, t.fingerprint, t.created_at, \
    t.expires_at, t.last_used_at, t.revoked_at, a.deleted_at IS NOT NULL \
    FROM agent_tokens t JOIN agents a ON a.id = t.agent_row";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        agent: r.get(1)?,
        label: r.get(2)?,
        fingerprint: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
        agent_deleted: r.get(8)?,
    })
}

fn saved_aad(name: &str) -> Vec<u8> {
    format!("agentsecrets/saved-token/v1\0{name}").into_bytes()
}

fn now() -> String {
    crate::timestamp_now()
}

/// `tok_` and 12 characters of lowercase base32: 60 random bits, unique in practice and
/// short enough for the SDK's 20-column token table.
fn new_token_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rngs::OsRng;
    let id: String = (0..12).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("tok_{id}")
}
