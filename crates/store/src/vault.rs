//! The vault database: workspace, projects, encrypted secrets and the allowlist.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use agentsecrets_core::names::{ProjectName, SecretKey};
use agentsecrets_core::secret::SecretValue;
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::crypto::{VaultKey, secret_aad};
use crate::home::Home;
use crate::keys::{self, KeySource};
use crate::{Result, StoreError, db};

/// Name of the project every fresh workspace starts with.
pub const DEFAULT_PROJECT: &str = "default";

const MIGRATIONS: &[&str] = &[
    // 1: workspace, projects, secrets, allowlist and its change log.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
     );
     CREATE TABLE projects (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (workspace_id, name)
     );
     CREATE TABLE secrets (
        project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project_id, name)
     );
     CREATE TABLE allowlist (
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        domain TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_at TEXT NOT NULL,
        PRIMARY KEY (workspace_id, domain)
     );
     CREATE TABLE allowlist_log (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        action TEXT NOT NULL,
        domain TEXT NOT NULL,
        actor TEXT NOT NULL,
        at TEXT NOT NULL
     );
     CREATE TABLE settings (
        workspace_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (workspace_id, key)
     );",
    // 2: the agent registry. Deleted agents and revoked tokens stay as tombstones, so
    // every audit entry keeps resolving to its agent, label and token.
    "CREATE TABLE agents (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        deleted_at TEXT
     );
     CREATE UNIQUE INDEX agents_live_name ON agents (workspace_id, name) WHERE deleted_at IS NULL;
     CREATE TABLE agent_tokens (
        id TEXT PRIMARY KEY,
        agent_row INTEGER NOT NULL REFERENCES agents (id),
        label TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        last_used_at TEXT,
        revoked_at TEXT
     );
     CREATE TABLE saved_tokens (
        agent_name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL
     );",
    // 3: capability contracts, one per live agent, and every change made to them. The
    // change log keeps the contract as set, so an old entry's rules stay readable.
    "CREATE TABLE agent_contracts (
        agent_row INTEGER PRIMARY KEY REFERENCES agents (id),
        contract TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );
     CREATE TABLE contract_log (
        id INTEGER PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        action TEXT NOT NULL,
        contract TEXT,
        actor TEXT NOT NULL,
        at TEXT NOT NULL
     );",
];

/// A project of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    /// Row id; bound into each secret's associated data.
    #[serde(skip)]
    pub id: i64,
    /// The project's name.
    pub name: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Number of secrets it holds.
    pub secrets: i64,
}

/// One allowlisted domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowlistEntry {
    /// The normalised host.
    pub domain: String,
    /// Who added it.
    pub added_by: String,
    /// When, RFC 3339.
    pub added_at: String,
}

/// One recorded change of the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowlistChange {
    /// When, RFC 3339.
    pub at: String,
    /// `add` or `remove`.
    pub action: String,
    /// The domain.
    pub domain: String,
    /// Who made the change.
    pub actor: String,
}

/// The open vault: its key, its workspace and one connection.
pub struct Vault {
    conn: Mutex<Connection>,
    pub(crate) key: VaultKey,
    key_source: KeySource,
    path: PathBuf,
    home: Home,
    workspace_id: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault under `home`, creating the home, the database, the vault key, the
    /// default workspace and the default project on first use.
    pub fn open(home: &Home) -> Result<Vault> {
        home.ensure()?;
        let path = home.vault_db();
        let conn = db::open(&path, MIGRATIONS, db::BUSY_TIMEOUT)?;

        let (key, key_source, workspace_id) = db::immediate(&conn, &path, |conn| {
            let (key, source) = keys::establish(conn, &path, home)?;
            let workspace = ensure_workspace(conn).map_err(|e| StoreError::sqlite(&path, e))?;
            Ok((key, source, workspace))
        })?;

        Ok(Vault {
            conn: Mutex::new(conn),
            key,
            key_source,
            path,
            home: home.clone(),
            workspace_id,
        })
    }

    /// The home this vault lives in.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The vault database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the vault key is kept.
    pub fn key_source(&self) -> KeySource {
        self.key_source
    }

    /// The workspace's short id, as it appears in agent tokens and the audit log.
    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    /// A number that changes whenever another connection commits to the vault; cheap,
    /// so a long-running proxy can check it on every call to drop stale caches.
    pub fn data_version(&self) -> Result<i64> {
        // A cached statement: preparing the pragma anew cost more than running it.
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("PRAGMA data_version").map_err(|e| self.err(e))?;
        stmt.query_row([], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Creates a project.
    pub fn create_project(&self, name: &ProjectName) -> Result<Project> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT INTO projects (workspace_id, name, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            params![self.workspace_id, name.as_str(), crate::timestamp_now()],
        );
        match inserted.map_err(|e| self.err(e))? {
            0 => Err(StoreError::ProjectExists(name.to_string())),
            _ => {
                drop(conn);
                self.project(name.as_str())
            }
        }
    }

    /// Every project with its secret count, by name.
    pub fn projects(&self) -> Result<Vec<Project>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT p.id, p.name, p.created_at, \
                 (SELECT count(*) FROM secrets s WHERE s.project_id = p.id) \
                 FROM projects p WHERE p.workspace_id = ?1 ORDER BY p.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([&self.workspace_id], project_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// The project of this name.
    pub fn project(&self, name: &str) -> Result<Project> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT p.id, p.name, p.created_at, \
                 (SELECT count(*) FROM secrets s WHERE s.project_id = p.id) \
                 FROM projects p WHERE p.workspace_id = ?1 AND p.name = ?2",
                params![self.workspace_id, name],
                project_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        found.ok_or_else(|| StoreError::NoSuchProject(name.to_owned()))
    }

    /// Deletes a project and its secrets. The default project stays.
    pub fn delete_project(&self, name: &str) -> Result<()> {
        if name == DEFAULT_PROJECT {
            return Err(StoreError::Invalid(
                "the default project cannot be deleted; delete its secrets instead".to_owned(),
            ));
        }
        let project = self.project(name)?;
        self.conn()
            .execute("DELETE FROM projects WHERE id = ?1", [project.id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The project a command run in `cwd` works on: the nearest
    /// `.agentsecrets/project.json` above `cwd`, else the default project.
    pub fn resolve_project(&self, cwd: &Path) -> Result<Project> {
        match crate::project_link::find(cwd)? {
            Some(name) => self.project(&name),
            None => self.project(DEFAULT_PROJECT),
        }
    }

    /// Stores several secrets in one transaction: all or none.
    pub fn set_secrets(
        &self,
        project: &Project,
        values: &[(SecretKey, SecretValue)],
    ) -> Result<()> {
        let conn = self.conn();
        let now = crate::timestamp_now();
        db::immediate(&conn, &self.path, |conn| {
            for (name, value) in values {
                let (nonce, sealed) =
                    self.key.seal(value.expose(), &secret_aad(project.id, name.as_str()));
                conn.execute(
                    "INSERT INTO secrets \
                     (project_id, name, nonce, ciphertext, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                     ON CONFLICT (project_id, name) DO UPDATE SET \
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                     updated_at = excluded.updated_at",
                    params![project.id, name.as_str(), nonce, sealed, now],
                )
                .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    /// Opens one secret; `None` when the project has no secret of that name.
    pub fn secret(&self, project: &Project, name: &str) -> Result<Option<SecretValue>> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT nonce, ciphertext FROM secrets WHERE project_id = ?1 AND name = ?2",
                params![project.id, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((nonce, sealed)) = row else { return Ok(None) };

        let opened = self.key.open(&nonce, &sealed, &secret_aad(project.id, name));
        let plain = opened.ok_or_else(|| StoreError::Tampered {
            project: project.name.clone(),
            key: name.to_owned(),
        })?;
        Ok(Some(SecretValue::new(plain.to_vec())))
    }

    /// The names of a project's secrets, sorted.
    pub fn secret_names(&self, project: &Project) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name FROM secrets WHERE project_id = ?1 ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([project.id], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Deletes a secret; false when there was none of that name.
    pub fn delete_secret(&self, project: &Project, name: &str) -> Result<bool> {
        let deleted = self
            .conn()
            .execute(
                "DELETE FROM secrets WHERE project_id = ?1 AND name = ?2",
                params![project.id, name],
            )
            .map_err(|e| self.err(e))?;
        Ok(deleted > 0)
    }

    /// The allowlist, sorted by domain.
    pub fn allowlist(&self) -> Result<Vec<AllowlistEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT domain, added_by, added_at FROM allowlist \
                 WHERE workspace_id = ?1 ORDER BY domain",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([&self.workspace_id], |r| {
                Ok(AllowlistEntry { domain: r.get(0)?, added_by: r.get(1)?, added_at: r.get(2)? })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Adds normalised domains, recording each new one; returns those that were new.
    pub fn allow_domains(&self, domains: &[String], actor: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let now = crate::timestamp_now();
        db::immediate(&conn, &self.path, |conn| {
            let mut added = Vec::new();
            for domain in domains {
                let inserted = conn
                    .execute(
                        "INSERT INTO allowlist (workspace_id, domain, added_by, added_at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                        params![self.workspace_id, domain, actor, now],
                    )
                    .map_err(|e| self.err(e))?;
                if inserted > 0 {
                    self.log_allowlist(conn, "add", domain, actor, &now)?;
                    added.push(domain.clone());
                }
            }
            Ok(added)
        })
    }

    /// Removes a domain, recording the change; false when it was not listed.
    pub fn disallow_domain(&self, domain: &str, actor: &str) -> Result<bool> {
        let conn = self.conn();
        let now = crate::timestamp_now();
        db::immediate(&conn, &self.path, |conn| {
            let removed = conn
                .execute(
                    "DELETE FROM allowlist WHERE workspace_id = ?1 AND domain = ?2",
                    params![self.workspace_id, domain],
                )
                .map_err(|e| self.err(e))?;
            if removed > 0 {
                self.log_allowlist(conn, "remove", domain, actor, &now)?;
            }
            Ok(removed > 0)
        })
    }

    /// Every recorded allowlist change, oldest first.
    pub fn allowlist_log(&self) -> Result<Vec<AllowlistChange>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT at, action, domain, actor FROM allowlist_log \
                 WHERE workspace_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([&self.workspace_id], |r| {
                Ok(AllowlistChange {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    domain: r.get(2)?,
                    actor: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    fn log_allowlist(
        &self,
        conn: &Connection,
        action: &str,
        domain: &str,
        actor: &str,
        at: &str,
    ) -> Result<()> {
        conn.execute(
            "INSERT INTO allowlist_log (workspace_id, action, domain, actor, at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![self.workspace_id, action, domain, actor, at],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock only means another thread panicked mid-call; SQLite's own
        // transactions keep the data consistent, so the connection is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, source)
    }
}

fn project_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        secrets: row.get(3)?,
    })
}

fn ensure_workspace(conn: &Connection) -> rusqlite::Result<String> {
    let existing: Option<String> = conn
        .query_row("SELECT id FROM workspaces ORDER BY created_at LIMIT 1", [], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }

    let id = new_workspace_id();
    let now = crate::timestamp_now();
    conn.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?1, 'personal', ?2)",
        params![id, now],
    )?;
    conn.execute(
        "INSERT INTO projects (workspace_id, name, created_at) VALUES (?1, ?2, ?3)",
        params![id, DEFAULT_PROJECT, now],
    )?;
    Ok(id)
}

/// Eight lowercase letters and digits: short enough for token prefixes, and with 41 bits
/// of randomness enough to tell a foreign workspace's tokens apart.
fn new_workspace_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..8).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
