//! The store's error type.

use std::path::PathBuf;

/// What went wrong in the store. Every message says what is wrong and what to do, and
/// none ever contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The home directory cannot be created or read.
    #[error("home {path}: {source}; check that the directory is readable and writable")]
    HomeIo {
        /// The home path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The home or a file in it can be read by other users.
    #[error(
        "{path} has mode {mode:04o}, which lets other users read it; \
         fix it with: chmod {want:o} {path}"
    )]
    Permissions {
        /// The offending path.
        path: PathBuf,
        /// Its current permission bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// A database file is not a readable SQLite database.
    #[error(
        "database {path} is corrupt or not an agentsecrets database ({detail}); \
         it was left untouched: restore it from a backup or move it aside"
    )]
    Corrupt {
        /// The database path.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// A database was written by a newer agentsecrets.
    #[error(
        "database {path} has schema version {found}, newer than this agentsecrets knows \
             ({known}); upgrade agentsecrets"
    )]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version known.
        known: i64,
    },
    /// Any other SQLite failure.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database path.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The vault key could not be found where the vault says it lives.
    #[error("{0}")]
    KeyMissing(String),
    /// The key or passphrase does not open this vault.
    #[error("{0}")]
    WrongKey(String),
    /// A stored value failed authentication: it was altered or moved.
    #[error(
        "secret '{key}' in project '{project}' failed its integrity check: the stored \
         value was altered or moved; set it again"
    )]
    Tampered {
        /// Project name.
        project: String,
        /// Secret name.
        key: String,
    },
    /// The named project does not exist.
    #[error("project '{0}' does not exist; list projects with: agentsecrets project list")]
    NoSuchProject(String),
    /// The project already exists.
    #[error("project '{0}' already exists")]
    ProjectExists(String),
    /// The request contradicts the stored state.
    #[error("{0}")]
    Invalid(String),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps a SQLite error, recognising a corrupt or foreign file.
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;

        let code = source.sqlite_error_code();
        if matches!(code, Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)) {
            return StoreError::Corrupt { path: path.to_owned(), detail: source.to_string() };
        }
        StoreError::Sqlite { path: path.to_owned(), source }
    }

    /// Whether the failure is SQLite being busy or locked beyond the timeout.
    pub fn is_busy(&self) -> bool {
        use rusqlite::ErrorCode;

        let StoreError::Sqlite { source, .. } = self else { return false };
        matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}
