//! SQLite persistence of agentsecrets.
//!
//! Two databases live under the home: `vault.db` holds workspaces, projects, encrypted
//! secrets and the allowlist; `audit.db` holds the append-only audit log, so that its
//! write load never blocks vault reads. Both run in WAL mode with a busy timeout and
//! migrate themselves at open.
//!
//! Invariants kept here:
//! - a secret value is stored only sealed (XChaCha20-Poly1305) under the vault key, with
//!   its project and name bound as associated data;
//! - a vault key is generated only for a vault that has none, never over an existing one;
//! - every file this crate creates is mode 0600 inside a 0700 home.

pub mod audit;
pub mod contracts;
mod crypto;
mod db;
mod error;
pub mod fixture;
pub mod home;
mod keys;
pub mod registry;
pub mod vault;

pub use audit::{
    AgentActivity, AuditLog, AuditQuery, ChainProblem, ChainReport, Checkpoint, CheckpointSigner,
    Count, NewAuditEntry, Outcome, SessionSummary, Summary,
};
pub use contracts::{AccessSettings, ContractChange, DeclaredContracts};
pub use error::StoreError;
pub use home::Home;
pub use keys::KeySource;
pub use registry::{AgentRecord, IdentitySettings, IssuedToken, StrictMode, TokenRecord};
pub use vault::{AllowlistChange, AllowlistEntry, Project, Vault};

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub mod project_link;

/// The current time as RFC 3339 in UTC with microseconds and a `+00:00` offset, the form
/// that every consumer of the audit log (Python 3.10's `fromisoformat` included) parses.
pub fn timestamp_now() -> String {
    format_timestamp(jiff::Timestamp::now())
}

/// Formats a timestamp like [`timestamp_now`].
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    let micros = ts.subsec_microsecond();
    format!("{}.{micros:06}+00:00", ts.strftime("%Y-%m-%dT%H:%M:%S"))
}
