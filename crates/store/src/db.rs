//! Opening a SQLite database: file mode, pragmas and migrations.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::home::{check_private, open_private};
use crate::{Result, StoreError};

/// How long a writer waits for another process's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if missing, mode 0600) a database and brings its schema up to date.
/// `migrations[i]` moves the schema from version `i` to `i + 1`; applied migrations are
/// never edited, only appended to.
pub fn open(path: &Path, migrations: &[&str], busy: Duration) -> Result<Connection> {
    create_private_if_missing(path)?;
    check_private(path, 0o600)?;

    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
    conn.busy_timeout(busy).map_err(|e| StoreError::sqlite(path, e))?;

    // WAL lets readers go on while one writer commits; NORMAL syncs at checkpoints, so
    // a committed transaction survives a killed process (not a power cut).
    enable_wal(&conn, path, busy)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| StoreError::sqlite(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| StoreError::sqlite(path, e))?;

    migrate(&conn, path, migrations)?;
    Ok(conn)
}

/// Switches the database to WAL. On a fresh database, still in rollback mode, that takes
/// an exclusive lock; when several processes open it at once, SQLite sees a possible
/// deadlock and answers "busy" at once instead of calling the busy handler, so the wait
/// happens here, up to the same `busy` timeout.
fn enable_wal(conn: &Connection, path: &Path, busy: Duration) -> Result<()> {
    let deadline = Instant::now() + busy;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(StoreError::sqlite(path, err)),
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(err.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

fn create_private_if_missing(path: &Path) -> Result<()> {
    match open_private(path, true) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_owned(), source }),
    }
}

fn migrate(conn: &Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let sql = |e| StoreError::sqlite(path, e);
    let known = migrations.len() as i64;

    // IMMEDIATE takes the write lock first, so two processes opening a fresh database
    // at once cannot both run the same migration.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let result = (|| {
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        if version > known {
            return Err(StoreError::TooNew { path: path.to_owned(), found: version, known });
        }
        for (index, migration) in migrations.iter().enumerate().skip(version as usize) {
            conn.execute_batch(migration).map_err(sql)?;
            conn.pragma_update(None, "user_version", index as i64 + 1).map_err(sql)?;
            tracing::debug!(db = %path.display(), version = index + 1, "applied migration");
        }
        Ok(())
    })();

    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// Runs `body` inside `BEGIN IMMEDIATE ... COMMIT`, rolling back on error.
pub fn immediate<T>(
    conn: &Connection,
    path: &Path,
    body: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    // Cached statements: on the audit writer's path, parsing these two anew on every
    // transaction was a visible share of its time.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([]));
    run("BEGIN IMMEDIATE").map_err(|e| StoreError::sqlite(path, e))?;
    match body(conn) {
        Ok(value) => {
            run("COMMIT").map_err(|e| StoreError::sqlite(path, e))?;
            Ok(value)
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}
