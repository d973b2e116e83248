//! The audit log database: one entry per call, written ahead of the credential's use.
//!
//! A call that may use a credential is recorded in two steps: [`AuditLog::begin`] commits
//! a `PENDING` entry before the credential leaves the process, and
//! [`AuditLog::complete`] settles its outcome when the call ends. A call refused before
//! any secret is read is recorded once, settled, by [`AuditLog::record`]. Each entry
//! carries the hash of the one before it, so `log verify` can find an edited or removed
//! entry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use agentsecrets_core::audit::{AuditEntry, CallStatus, Transport};
use agentsecrets_core::identity::IdentityLevel;
use rusqlite::{Connection, OptionalExtension, params};

use crate::home::Home;
use crate::{Result, StoreError, db};

/// How long a call waits for the audit log's write lock before it is refused with
/// `audit_unavailable`. Short, because the caller is waiting.
pub const AUDIT_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const MIGRATIONS: &[&str] = &[
    // 1: the log and the policy snapshots its entries point to.
    "CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        timestamp TEXT NOT NULL,
        workspace TEXT NOT NULL,
        project TEXT NOT NULL,
        agent_id TEXT,
        identity_level TEXT NOT NULL,
        token_id TEXT,
        token_fingerprint TEXT,
        session_id TEXT,
        transport TEXT NOT NULL,
        method TEXT NOT NULL,
        target_url TEXT NOT NULL,
        domain TEXT NOT NULL,
        secret_keys TEXT NOT NULL,
        auth_styles TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        status_code INTEGER,
        duration_ms INTEGER NOT NULL,
        redacted INTEGER NOT NULL,
        policy_snapshot_id TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        outcome_hash TEXT NOT NULL
     );
     CREATE INDEX audit_log_timestamp ON audit_log (timestamp);
     CREATE INDEX audit_log_agent ON audit_log (agent_id, seq);
     CREATE INDEX audit_log_identity ON audit_log (identity_level, seq);
     CREATE INDEX audit_log_session ON audit_log (session_id) WHERE session_id IS NOT NULL;
     CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at TEXT NOT NULL,
        signature BLOB NOT NULL
     );
     CREATE TABLE policy_snapshots (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        content TEXT NOT NULL
     );",
    // 2: `log list --token` finds one token's calls without a scan.
    "CREATE INDEX audit_log_token ON audit_log (token_id, seq) WHERE token_id IS NOT NULL;",
];

/// What the engine knows about a call when it starts.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// Workspace id.
    pub workspace: String,
    /// Project name.
    pub project: String,
    /// Agent name, `None` when anonymous.
    pub agent_id: Option<String>,
    /// Identity level.
    pub identity_level: IdentityLevel,
    /// Token id for issued callers.
    pub token_id: Option<String>,
    /// Token fingerprint for issued callers.
    pub token_fingerprint: Option<String>,
    /// Caller's session id.
    pub session_id: Option<String>,
    /// How the call arrived.
    pub transport: Transport,
    /// HTTP method.
    pub method: String,
    /// Target URL without any injected value.
    pub target_url: String,
    /// Target host.
    pub domain: String,
    /// Secret names.
    pub secret_keys: Vec<String>,
    /// Injection styles.
    pub auth_styles: Vec<String>,
    /// Policy snapshot id.
    pub policy_snapshot_id: Option<String>,
    /// The entry's time; `None` (always, outside fixtures) means now.
    pub at: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final status.
    pub status: CallStatus,
    /// `-` or a slug.
    pub reason: String,
    /// HTTP status returned to the caller.
    pub status_code: Option<u16>,
    /// Wall time.
    pub duration_ms: u64,
    /// Whether an echo was scrubbed.
    pub redacted: bool,
}

/// Filters of `log list` and `proxy logs`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// At most this many of the most recent matching entries.
    pub last: Option<usize>,
    /// Only entries that used this secret.
    pub secret: Option<String>,
    /// Only entries of this agent.
    pub agent: Option<String>,
    /// Only entries made with this token id (`tok_...`).
    pub token: Option<String>,
    /// Only entries with one of these identity levels.
    pub identity: Vec<IdentityLevel>,
    /// Only entries with this status.
    pub status: Option<CallStatus>,
    /// Only entries to this domain.
    pub domain: Option<String>,
    /// Only entries with this reason slug.
    pub reason: Option<String>,
    /// Only entries of this session.
    pub session: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only entries before this RFC 3339 time.
    pub until: Option<String>,
}

/// Counters filled by one pass over the log for [`AuditLog::summary`].
#[derive(Default)]
struct Tally {
    total: i64,
    by_identity: HashMap<String, i64>,
    agents: HashMap<String, i64>,
    secrets: HashMap<String, i64>,
    domains: HashMap<String, i64>,
    by_status: HashMap<String, i64>,
    refusals: HashMap<String, i64>,
    ok_durations: Vec<i64>,
}

impl Tally {
    fn add(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let bump = |map: &mut HashMap<String, i64>, key: &str| match map.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                map.insert(key.to_owned(), 1);
            }
        };
        self.total += 1;
        bump(&mut self.by_identity, row.get_ref(0)?.as_str()?);
        if let Some(agent) = row.get_ref(1)?.as_str_or_null()? {
            bump(&mut self.agents, agent);
        }
        bump(&mut self.domains, row.get_ref(2)?.as_str()?);
        let status = row.get_ref(3)?.as_str()?;
        bump(&mut self.by_status, status);
        if status == "OK" {
            self.ok_durations.push(row.get(6)?);
        } else if status != "PENDING" {
            let reason = row.get_ref(4)?.as_str()?;
            bump(&mut self.refusals, &format!("{status} {reason}"));
        }
        // Secret names are a JSON list of plain names, written by this crate.
        let keys = row.get_ref(5)?.as_str()?;
        for key in keys.trim_matches(['[', ']']).split(',').filter(|k| !k.is_empty()) {
            bump(&mut self.secrets, key.trim_matches('"'));
        }
        Ok(())
    }

    fn finish(mut self) -> Summary {
        let percentile = |sorted: &[i64], p: f64| {
            (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p) as usize])
        };
        self.ok_durations.sort_unstable();
        Summary {
            total: self.total,
            by_identity: top(self.by_identity, 10),
            top_agents: top(self.agents, 10),
            top_secrets: top(self.secrets, 10),
            top_domains: top(self.domains, 10),
            by_status: top(self.by_status, 10),
            refusals: top(self.refusals, 50),
            p50_ms: percentile(&self.ok_durations, 0.50),
            p95_ms: percentile(&self.ok_durations, 0.95),
        }
    }
}

/// The `limit` largest counts, largest first, ties by name.
fn top(counts: HashMap<String, i64>, limit: usize) -> Vec<Count> {
    let mut list: Vec<Count> =
        counts.into_iter().map(|(name, calls)| Count { name, calls }).collect();
    list.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
    list.truncate(limit);
    list
}

/// A name and how many calls it had.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    /// The agent, secret, domain, level or reason.
    pub name: String,
    /// Number of calls.
    pub calls: i64,
}

/// Totals of `log summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// All matching calls.
    pub total: i64,
    /// Calls per identity level.
    pub by_identity: Vec<Count>,
    /// Agents with the most calls.
    pub top_agents: Vec<Count>,
    /// Secrets used most.
    pub top_secrets: Vec<Count>,
    /// Domains called most.
    pub top_domains: Vec<Count>,
    /// Calls per status.
    pub by_status: Vec<Count>,
    /// Blocked and failed calls per `STATUS reason`.
    pub refusals: Vec<Count>,
    /// Median duration of successful calls.
    pub p50_ms: Option<i64>,
    /// 95th percentile duration of successful calls.
    pub p95_ms: Option<i64>,
}

/// One agent run: every entry that carried the same session id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub session_id: String,
    /// Time of its first call.
    pub first_call: String,
    /// Time of its last call.
    pub last_call: String,
    /// Number of calls.
    pub calls: i64,
    /// Agents that made them (`(anonymous)` for anonymous calls).
    pub agents: Vec<String>,
    /// Secrets they named.
    pub secrets: Vec<String>,
    /// Blocked calls among them.
    pub blocked: i64,
    /// Failed calls among them.
    pub errors: i64,
}

/// A signed statement that entry `seq` had chain hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// Position in the log.
    pub seq: i64,
    /// The entry's chain hash.
    pub hash: String,
    /// `interval` (every [`CHECKPOINT_EVERY`] entries) or `prune`.
    pub kind: String,
    /// When it was written.
    pub created_at: String,
    /// Ed25519 signature by the workspace key over [`checkpoint_message`].
    #[serde(skip)]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// Whether the signature verifies; without a key, only its shape is checked.
    pub fn signature_ok(&self, key: Option<&ed25519_dalek::VerifyingKey>) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&self.signature) else {
            return false;
        };
        key.is_none_or(|key| {
            key.verify_strict(&checkpoint_message(self.seq, &self.hash), &signature).is_ok()
        })
    }
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    let mut message = b"agentsecrets audit checkpoint v1\0".to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash.as_bytes());
    message
}

/// The result of walking the hash chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked before the first problem (all of them when there is none).
    pub entries: u64,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    /// Entries still `PENDING` (a process died mid-call, or calls are in flight).
    pub pending: u64,
    /// The first broken entry.
    pub first_problem: Option<ChainProblem>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// Sequence number of the entry found broken.
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// What is wrong.
    pub problem: &'static str,
}

/// What is wrong with `entry` given the entry before it, if anything.
fn chain_problem(entry: &AuditEntry, previous: Option<&(i64, String)>) -> Option<&'static str> {
    let (expected_seq, expected_prev) = match previous {
        Some((seq, hash)) => (seq + 1, hash.as_str()),
        None => (entry.seq, ""),
    };
    if previous.is_none() && entry.seq != 1 && entry.prev_hash.is_empty() {
        return Some("the first entry does not start the chain");
    }
    if entry.seq != expected_seq {
        return Some("entries are missing before this one");
    }
    if previous.is_some() && entry.prev_hash != expected_prev {
        return Some("it does not follow the entry before it (removed or reordered)");
    }
    if entry.hash != entry.chain_hash() {
        return Some("its recorded fields were edited");
    }
    let sealed = !entry.outcome_hash.is_empty();
    if (sealed || entry.status != CallStatus::Pending)
        && entry.outcome_hash != entry.outcome_digest()
    {
        return Some("its outcome was edited after the call ended");
    }
    None
}

/// What the log says about one named agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentActivity {
    /// Agent name.
    pub agent: String,
    /// Identity levels it called with.
    pub levels: Vec<String>,
    /// Number of calls.
    pub calls: i64,
    /// Time of its last call.
    pub last_call: String,
}

/// Signs checkpoint messages with the workspace key.
pub type CheckpointSigner = Box<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

/// A signed checkpoint is written every this many entries, so an export or a pruned log
/// can be checked against the workspace key on its own.
pub const CHECKPOINT_EVERY: i64 = 1000;

/// The open audit log.
pub struct AuditLog {
    conn: Mutex<Connection>,
    path: PathBuf,
    signer: std::sync::OnceLock<CheckpointSigner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating on first use) the audit log under `home`.
    pub fn open(home: &Home) -> Result<AuditLog> {
        home.ensure()?;
        let path = home.audit_db();
        let conn = db::open(&path, MIGRATIONS, AUDIT_BUSY_TIMEOUT)?;
        Ok(AuditLog { conn: Mutex::new(conn), path, signer: std::sync::OnceLock::new() })
    }

    /// Gives the log the workspace key's signer, for checkpoints. Without one, entries
    /// are still chained but no checkpoint is written.
    pub fn set_signer(&self, signer: CheckpointSigner) {
        let _ = self.signer.set(signer);
    }

    /// Commits a `PENDING` entry for a call about to use a credential; returns its id.
    pub fn begin(&self, entry: &NewAuditEntry) -> Result<String> {
        let pending = Outcome {
            status: CallStatus::Pending,
            reason: "-".to_owned(),
            status_code: None,
            duration_ms: 0,
            redacted: false,
        };
        self.append(entry, &pending)
    }

    /// Commits a settled entry for a call that used no credential.
    pub fn record(&self, entry: &NewAuditEntry, outcome: &Outcome) -> Result<String> {
        self.append(entry, outcome)
    }

    /// Settles the outcome of an entry written by [`AuditLog::begin`], sealing it with its
    /// outcome hash.
    pub fn complete(&self, id: &str, outcome: &Outcome) -> Result<()> {
        self.commit_batch(&[(id, outcome)], &[]).map(drop)
    }

    /// Settles `completions` and appends `entries` (pending or settled) in one
    /// transaction, so one commit serves them all: the group commit of a writer that
    /// batches concurrent calls. Returns the ids of the appended entries, in order.
    pub fn commit_batch(
        &self,
        completions: &[(&str, &Outcome)],
        entries: &[(&NewAuditEntry, &Outcome)],
    ) -> Result<Vec<String>> {
        let conn = self.conn();
        db::immediate(&conn, &self.path, |conn| {
            for (id, outcome) in completions {
                self.settle(conn, id, outcome)?;
            }
            self.append_in(conn, entries)
        })
    }

    /// Writes the outcome of entry `id` and its outcome hash; an unknown id (pruned
    /// meanwhile) is left alone.
    fn settle(&self, conn: &Connection, id: &str, outcome: &Outcome) -> Result<()> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE id = ?1");
        let found = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], entry_row).optional())
            .map_err(|e| self.err(e))?;
        let Some(mut entry) = found else { return Ok(()) };
        entry.status = outcome.status;
        entry.reason = outcome.reason.clone();
        entry.status_code = outcome.status_code;
        entry.duration_ms = outcome.duration_ms;
        entry.redacted = outcome.redacted;
        entry.outcome_hash = entry.outcome_digest();

        let mut update = conn
            .prepare_cached(
                "UPDATE audit_log SET status = ?2, reason = ?3, status_code = ?4, \
                 duration_ms = ?5, redacted = ?6, outcome_hash = ?7 WHERE id = ?1",
            )
            .map_err(|e| self.err(e))?;
        update
            .execute(params![
                id,
                entry.status.as_str(),
                entry.reason,
                entry.status_code,
                entry.duration_ms as i64,
                entry.redacted,
                entry.outcome_hash,
            ])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One entry by id.
    pub fn entry(&self, id: &str) -> Result<Option<AuditEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE id = ?1");
        self.conn().query_row(&sql, [id], entry_row).optional().map_err(|e| self.err(e))
    }

    /// The highest sequence number written so far (0 for an empty log).
    pub fn last_seq(&self) -> Result<i64> {
        self.conn()
            .query_row("SELECT coalesce(max(seq), 0) FROM audit_log", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Walks the whole chain in order and returns the first entry that is missing,
    /// reordered, edited or whose outcome was changed after it was sealed. With the
    /// workspace's verifying key, checkpoint signatures are checked too; a pruned log
    /// must start right after its newest prune checkpoint.
    pub fn verify(&self, key: Option<&ed25519_dalek::VerifyingKey>) -> Result<ChainReport> {
        let checkpoints = self.checkpoints()?;
        let mut report = ChainReport::default();
        if let Some(bad) = checkpoints.iter().find(|c| !c.signature_ok(key)) {
            report.first_problem = Some(ChainProblem {
                seq: bad.seq,
                id: format!("checkpoint {}", bad.seq),
                problem: "its signature does not match the workspace key",
            });
            return Ok(report);
        }
        let mut previous: Option<(i64, String)> =
            checkpoints.iter().rev().find(|c| c.kind == "prune").map(|c| (c.seq, c.hash.clone()));
        let signed: std::collections::HashMap<i64, &str> =
            checkpoints.iter().map(|c| (c.seq, c.hash.as_str())).collect();

        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq");
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let entry = entry_row(row).map_err(|e| self.err(e))?;
            let problem = chain_problem(&entry, previous.as_ref()).or_else(|| {
                let mismatch = signed.get(&entry.seq).is_some_and(|h| *h != entry.hash);
                mismatch.then_some("it differs from the signed checkpoint at its position")
            });
            if let Some(problem) = problem {
                report.first_problem = Some(ChainProblem { seq: entry.seq, id: entry.id, problem });
                return Ok(report);
            }
            report.entries += 1;
            report.pending += u64::from(entry.status == CallStatus::Pending);
            previous = Some((entry.seq, entry.hash));
        }
        report.checkpoints = checkpoints.len() as u64;
        Ok(report)
    }

    /// Deletes every entry older than `before` (RFC 3339), after writing a signed
    /// checkpoint of the last one deleted, so the remaining chain still verifies.
    /// Returns how many entries were removed.
    pub fn prune(&self, before: &str) -> Result<u64> {
        if self.signer.get().is_none() {
            return Err(StoreError::Invalid(
                "pruning needs the workspace key to sign a checkpoint".to_owned(),
            ));
        }
        let conn = self.conn();
        db::immediate(&conn, &self.path, |conn| {
            let last: Option<(i64, String)> = conn
                .query_row(
                    "SELECT seq, hash FROM audit_log WHERE seq <= (SELECT max(seq) FROM \
                     audit_log WHERE timestamp < ?1 AND status != 'PENDING') ORDER BY seq DESC \
                     LIMIT 1",
                    [before],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let Some((seq, hash)) = last else { return Ok(0) };
            conn.execute("DELETE FROM audit_checkpoints WHERE seq = ?1", [seq])
                .map_err(|e| self.err(e))?;
            self.checkpoint(conn, seq, &hash, "prune")?;
            let removed = conn
                .execute("DELETE FROM audit_log WHERE seq <= ?1", [seq])
                .map_err(|e| self.err(e))?;
            Ok(removed as u64)
        })
    }

    fn checkpoint(&self, conn: &Connection, seq: i64, hash: &str, kind: &str) -> Result<()> {
        let Some(sign) = self.signer.get() else { return Ok(()) };
        let signature = sign(&checkpoint_message(seq, hash))?;
        conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, kind, created_at, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, hash, kind, crate::timestamp_now(), signature],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, hash, kind, created_at, signature FROM audit_checkpoints ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                    kind: r.get(2)?,
                    created_at: r.get(3)?,
                    signature: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Stores a policy snapshot once per distinct content.
    pub fn save_snapshot(&self, id: &str, content: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO policy_snapshots (id, created_at, content) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![id, crate::timestamp_now(), content],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The content of a policy snapshot.
    pub fn snapshot(&self, id: &str) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT content FROM policy_snapshots WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The matching entries, oldest first (the last `query.last` of them).
    pub fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let (clause, values) = where_clause(query);
        let limit = query.last.map_or(-1, |n| n as i64);
        let sql = format!(
            "SELECT * FROM \
             (SELECT {COLUMNS} FROM audit_log {clause} ORDER BY seq DESC LIMIT {limit}) \
             ORDER BY seq"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), entry_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Calls every matching entry in order, reading one row at a time (constant memory
    /// for any log size). `query.last` is ignored.
    pub fn for_each(
        &self,
        query: &AuditQuery,
        mut visit: impl FnMut(AuditEntry) -> std::io::Result<()>,
    ) -> Result<u64> {
        let (clause, values) = where_clause(query);
        let sql = format!("SELECT {COLUMNS} FROM audit_log {clause} ORDER BY seq");
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows =
            stmt.query(rusqlite::params_from_iter(values.iter())).map_err(|e| self.err(e))?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let entry = entry_row(row).map_err(|e| self.err(e))?;
            visit(entry).map_err(|source| StoreError::Io { path: self.path.clone(), source })?;
            count += 1;
        }
        Ok(count)
    }

    /// How many entries match.
    pub fn count(&self, query: &AuditQuery) -> Result<u64> {
        let (clause, values) = where_clause(query);
        let sql = format!("SELECT count(*) FROM audit_log {clause}");
        self.conn()
            .query_row(&sql, rusqlite::params_from_iter(values.iter()), |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Totals for `log summary` over the matching entries, in one pass over the rows.
    pub fn summary(&self, query: &AuditQuery) -> Result<Summary> {
        let (clause, values) = where_clause(query);
        let sql = format!(
            "SELECT identity_level, agent_id, domain, status, reason, secret_keys, duration_ms \
             FROM audit_log {clause}"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows =
            stmt.query(rusqlite::params_from_iter(values.iter())).map_err(|e| self.err(e))?;

        let mut tally = Tally::default();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            tally.add(row).map_err(|e| self.err(e))?;
        }
        Ok(tally.finish())
    }

    /// The sessions among the matching entries, the most recently active first.
    pub fn sessions(&self, query: &AuditQuery) -> Result<Vec<SessionSummary>> {
        let (clause, values) = where_clause(query);
        let clause = if clause.is_empty() {
            "WHERE session_id IS NOT NULL".to_owned()
        } else {
            format!("{clause} AND session_id IS NOT NULL")
        };
        let sql = format!(
            "SELECT session_id, timestamp, coalesce(agent_id, '(anonymous)'), secret_keys, status \
             FROM audit_log {clause} ORDER BY seq"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows =
            stmt.query(rusqlite::params_from_iter(values.iter())).map_err(|e| self.err(e))?;

        let mut sessions: std::collections::HashMap<String, SessionSummary> = Default::default();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let id: String = row.get(0).map_err(|e| self.err(e))?;
            let at: String = row.get(1).map_err(|e| self.err(e))?;
            let agent: String = row.get(2).map_err(|e| self.err(e))?;
            let keys: String = row.get(3).map_err(|e| self.err(e))?;
            let status: String = row.get(4).map_err(|e| self.err(e))?;
            let session = sessions.entry(id.clone()).or_insert_with(|| SessionSummary {
                session_id: id,
                first_call: at.clone(),
                last_call: at.clone(),
                calls: 0,
                agents: Vec::new(),
                secrets: Vec::new(),
                blocked: 0,
                errors: 0,
            });
            session.last_call = at;
            session.calls += 1;
            session.blocked += i64::from(status == "BLOCKED");
            session.errors += i64::from(status == "ERROR");
            if !session.agents.contains(&agent) {
                session.agents.push(agent);
            }
            for key in serde_json::from_str::<Vec<String>>(&keys).unwrap_or_default() {
                if !session.secrets.contains(&key) {
                    session.secrets.push(key);
                }
            }
        }
        let mut sessions: Vec<SessionSummary> = sessions.into_values().collect();
        sessions.sort_by(|a, b| b.last_call.cmp(&a.last_call));
        Ok(sessions)
    }

    /// Calls per named agent: levels seen, number of calls, last call.
    pub fn agent_activity(&self) -> Result<Vec<AgentActivity>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT agent_id, group_concat(DISTINCT identity_level), count(*), max(timestamp) \
                 FROM audit_log WHERE agent_id IS NOT NULL GROUP BY agent_id ORDER BY agent_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let levels: String = r.get(1)?;
                Ok(AgentActivity {
                    agent: r.get(0)?,
                    levels: levels.split(',').map(str::to_owned).collect(),
                    calls: r.get(2)?,
                    last_call: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// The entries after sequence number `after`, oldest first (for `--tail`).
    pub fn after(&self, after: i64, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let (clause, mut values) = where_clause(query);
        let joiner = if clause.is_empty() { "WHERE" } else { "AND" };
        values.push(after.to_string());
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log {clause} {joiner} seq > ?{} ORDER BY seq",
            values.len()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), entry_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    fn append(&self, entry: &NewAuditEntry, outcome: &Outcome) -> Result<String> {
        let mut ids = self.append_many(std::slice::from_ref(&(entry, outcome)))?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Commits several settled entries in one transaction (one commit for all): what a
    /// writer batching concurrent calls, or a fixture generator, uses. Returns their ids.
    pub fn record_many(&self, entries: &[(NewAuditEntry, Outcome)]) -> Result<Vec<String>> {
        let refs: Vec<(&NewAuditEntry, &Outcome)> = entries.iter().map(|(e, o)| (e, o)).collect();
        self.append_many(&refs)
    }

    fn append_many(&self, entries: &[(&NewAuditEntry, &Outcome)]) -> Result<Vec<String>> {
        self.commit_batch(&[], entries)
    }

    /// Appends `entries` after the last one, inside the caller's transaction.
    fn append_in(
        &self,
        conn: &Connection,
        entries: &[(&NewAuditEntry, &Outcome)],
    ) -> Result<Vec<String>> {
        {
            let last: Option<(i64, String)> = conn
                .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .and_then(|mut stmt| stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(|e| self.err(e))?;
            let (mut seq, mut prev_hash) = last.unwrap_or((0, String::new()));

            let mut ids = Vec::with_capacity(entries.len());
            for (entry, outcome) in entries {
                seq += 1;
                let mut full = to_entry(entry, outcome, seq, prev_hash);
                full.hash = full.chain_hash();
                if full.status != CallStatus::Pending {
                    full.outcome_hash = full.outcome_digest();
                }
                insert(conn, &full).map_err(|e| self.err(e))?;
                if full.seq.rem_euclid(CHECKPOINT_EVERY) == 0 {
                    self.checkpoint(conn, full.seq, &full.hash, "interval")?;
                }
                prev_hash = full.hash;
                ids.push(full.id);
            }
            Ok(ids)
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // See `Vault::conn`: SQLite keeps the data consistent across a poisoned lock.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, source)
    }
}

const COLUMNS: &str = "seq, id, timestamp, workspace, project, agent_id, identity_level, \
    token_id, token_fingerprint, session_id, transport, method, target_url, domain, \
    secret_keys, auth_styles, status, reason, status_code, duration_ms, redacted, \
    policy_snapshot_id, prev_hash, hash, outcome_hash";

fn where_clause(query: &AuditQuery) -> (String, Vec<String>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut push = |condition: &str, value: String| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };

    if let Some(secret) = &query.secret {
        push("EXISTS (SELECT 1 FROM json_each(secret_keys) WHERE value = ?)", secret.clone());
    }
    if let Some(agent) = &query.agent {
        push("agent_id = ?", agent.clone());
    }
    if let Some(token) = &query.token {
        push("token_id = ?", token.clone());
    }
    if let Some(status) = query.status {
        push("status = ?", status.as_str().to_owned());
    }
    if let Some(domain) = &query.domain {
        push("domain = ?", domain.clone());
    }
    if let Some(reason) = &query.reason {
        push("reason = ?", reason.clone());
    }
    if let Some(session) = &query.session {
        push("session_id = ?", session.clone());
    }
    if let Some(since) = &query.since {
        push("timestamp >= ?", since.clone());
    }
    if let Some(until) = &query.until {
        push("timestamp < ?", until.clone());
    }
    if !query.identity.is_empty() {
        let levels: Vec<String> =
            query.identity.iter().map(|l| format!("'{}'", l.as_str())).collect();
        conditions.push(format!("identity_level IN ({})", levels.join(",")));
    }

    if conditions.is_empty() {
        return (String::new(), values);
    }
    (format!("WHERE {}", conditions.join(" AND ")), values)
}

fn to_entry(entry: &NewAuditEntry, outcome: &Outcome, seq: i64, prev_hash: String) -> AuditEntry {
    AuditEntry {
        id: format!("log_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
        seq,
        timestamp: entry.at.clone().unwrap_or_else(crate::timestamp_now),
        workspace: entry.workspace.clone(),
        project: entry.project.clone(),
        agent_id: entry.agent_id.clone(),
        identity_level: entry.identity_level,
        token_id: entry.token_id.clone(),
        token_fingerprint: entry.token_fingerprint.clone(),
        session_id: entry.session_id.clone(),
        transport: entry.transport,
        method: entry.method.clone(),
        target_url: entry.target_url.clone(),
        domain: entry.domain.clone(),
        secret_keys: entry.secret_keys.clone(),
        auth_styles: entry.auth_styles.clone(),
        status: outcome.status,
        reason: outcome.reason.clone(),
        status_code: outcome.status_code,
        duration_ms: outcome.duration_ms,
        redacted: outcome.redacted,
        policy_snapshot_id: entry.policy_snapshot_id.clone(),
        prev_hash,
        hash: String::new(),
        outcome_hash: String::new(),
    }
}

fn insert(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    // Serializing a list of strings cannot fail.
    let keys = serde_json::to_string(&e.secret_keys).unwrap_or_default();
    let styles = serde_json::to_string(&e.auth_styles).unwrap_or_default();
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES \
                  (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                   ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
    ))?;
    stmt.execute(params![
        e.seq,
        e.id,
        e.timestamp,
        e.workspace,
        e.project,
        e.agent_id,
        e.identity_level.as_str(),
        e.token_id,
        e.token_fingerprint,
        e.session_id,
        e.transport.as_str(),
        e.method,
        e.target_url,
        e.domain,
        keys,
        styles,
        e.status.as_str(),
        e.reason,
        e.status_code,
        e.duration_ms as i64,
        e.redacted,
        e.policy_snapshot_id,
        e.prev_hash,
        e.hash,
        e.outcome_hash,
    ])?;
    Ok(())
}

fn entry_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let text = |i: usize| row.get::<_, String>(i);
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        Ok(serde_json::from_str(&row.get::<_, String>(i)?).unwrap_or_default())
    };
    let transport = match text(10)?.as_str() {
        "cli" => Transport::Cli,
        "mcp" => Transport::Mcp,
        "env" => Transport::Env,
        _ => Transport::Http,
    };
    Ok(AuditEntry {
        seq: row.get(0)?,
        id: text(1)?,
        timestamp: text(2)?,
        workspace: text(3)?,
        project: text(4)?,
        agent_id: row.get(5)?,
        identity_level: IdentityLevel::parse(&text(6)?).unwrap_or(IdentityLevel::Anonymous),
        token_id: row.get(7)?,
        token_fingerprint: row.get(8)?,
        session_id: row.get(9)?,
        transport,
        method: text(11)?,
        target_url: text(12)?,
        domain: text(13)?,
        secret_keys: list(14)?,
        auth_styles: list(15)?,
        status: CallStatus::parse(&text(16)?).unwrap_or(CallStatus::Error),
        reason: text(17)?,
        status_code: row.get(18)?,
        duration_ms: row.get::<_, i64>(19)? as u64,
        redacted: row.get(20)?,
        policy_snapshot_id: row.get(21)?,
        prev_hash: text(22)?,
        hash: text(23)?,
        outcome_hash: text(24)?,
    })
}
