//! Where the vault key lives, and how it is found again.
//!
//! The vault records in its `meta` table where its key lives (`key_source`) and a
//! key-check value (a fixed marker sealed under the key). Opening a vault loads the key
//! from that one place and proves it with the check value; only a vault with no
//! `key_source` yet gets a new key. So a missing key file or a wrong passphrase is an
//! error that names the problem, never a reason to make a new key.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::crypto::{VaultKey, derive_from_passphrase};
use crate::home::{Home, check_private, open_private};
use crate::{Result, StoreError};

const CHECK_AAD: &[u8] = b"agentsecrets/key-check/v1";
const CHECK_MARKER: &[u8] = b"agentsecrets vault key check";
const WRAP_AAD: &[u8] = b"agentsecrets/wrapped-vault-key/v1";
const KEYCHAIN_SERVICE: &str = "agentsecrets";

/// Where a vault's key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The OS keychain (macOS Keychain, Windows Credential Manager, Secret Service).
    Keychain,
    /// A 0600 key file beside the vault.
    File,
    /// Wrapped under a passphrase (Argon2id) and stored in the vault itself.
    Passphrase,
}

impl KeySource {
    /// The name stored in the vault and shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Keychain => "keychain",
            KeySource::File => "file",
            KeySource::Passphrase => "passphrase",
        }
    }

    fn parse(raw: &str) -> Option<KeySource> {
        match raw {
            "keychain" => Some(KeySource::Keychain),
            "file" => Some(KeySource::File),
            "passphrase" => Some(KeySource::Passphrase),
            _ => None,
        }
    }
}

/// Loads the vault's key, or creates one for a vault that has none. Runs inside the
/// caller's write transaction, so concurrent first uses agree on one key.
pub fn establish(conn: &Connection, db: &Path, home: &Home) -> Result<(VaultKey, KeySource)> {
    let sql = |e| StoreError::sqlite(db, e);
    let recorded: Option<String> = meta_text(conn, "key_source").map_err(sql)?;

    let Some(recorded) = recorded else {
        return create(conn, db, home);
    };
    let source = KeySource::parse(&recorded).ok_or_else(|| StoreError::Corrupt {
        path: db.to_owned(),
        detail: format!("unknown key source {recorded:?}"),
    })?;
    let key = load(conn, db, home, source)?;
    verify(conn, db, &key, source, home)?;
    Ok((key, source))
}

fn create(conn: &Connection, db: &Path, home: &Home) -> Result<(VaultKey, KeySource)> {
    let (key, source) = if let Some(passphrase) = passphrase() {
        (create_wrapped(conn, db, &passphrase)?, KeySource::Passphrase)
    } else if let Some(key) = create_in_keychain(home) {
        (key, KeySource::Keychain)
    } else {
        (create_key_file(home)?, KeySource::File)
    };

    let (nonce, check) = key.seal(CHECK_MARKER, CHECK_AAD);
    let sql = |e| StoreError::sqlite(db, e);
    set_meta(conn, "key_source", source.as_str().as_bytes()).map_err(sql)?;
    set_meta(conn, "key_check_nonce", &nonce).map_err(sql)?;
    set_meta(conn, "key_check", &check).map_err(sql)?;
    tracing::info!(source = source.as_str(), "created a new vault key");
    Ok((key, source))
}

fn load(conn: &Connection, db: &Path, home: &Home, source: KeySource) -> Result<VaultKey> {
    match source {
        KeySource::File => load_key_file(home),
        KeySource::Keychain => load_from_keychain(home),
        KeySource::Passphrase => {
            let passphrase = passphrase().ok_or_else(|| {
                StoreError::KeyMissing(
                    "this vault is protected by a passphrase: set AGENTSECRETS_PASSPHRASE"
                        .to_owned(),
                )
            })?;
            unwrap_with_passphrase(conn, db, &passphrase)
        }
    }
}

fn verify(
    conn: &Connection,
    db: &Path,
    key: &VaultKey,
    source: KeySource,
    home: &Home,
) -> Result<()> {
    let sql = |e| StoreError::sqlite(db, e);
    let nonce = meta_blob(conn, "key_check_nonce").map_err(sql)?.unwrap_or_default();
    let check = meta_blob(conn, "key_check").map_err(sql)?.unwrap_or_default();
    if key.open(&nonce, &check, CHECK_AAD).is_some() {
        return Ok(());
    }
    let message = match source {
        KeySource::Passphrase => {
            "the passphrase in AGENTSECRETS_PASSPHRASE does not open this vault".to_owned()
        }
        KeySource::File => format!(
            "the key file {} does not belong to this vault; restore the original key file",
            home.key_file().display()
        ),
        KeySource::Keychain => "the key in the OS keychain does not belong to this vault; \
             restore the original keychain entry"
            .to_owned(),
    };
    Err(StoreError::WrongKey(message))
}

fn passphrase() -> Option<Zeroizing<String>> {
    std::env::var("AGENTSECRETS_PASSPHRASE").ok().filter(|p| !p.is_empty()).map(Zeroizing::new)
}

fn create_wrapped(conn: &Connection, db: &Path, passphrase: &str) -> Result<VaultKey> {
    let key = VaultKey::generate();
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let wrapping = derive_from_passphrase(passphrase.as_bytes(), &salt);
    let (nonce, wrapped) = wrapping.seal(key.expose(), WRAP_AAD);

    let sql = |e| StoreError::sqlite(db, e);
    set_meta(conn, "kdf_salt", &salt).map_err(sql)?;
    set_meta(conn, "wrapped_key_nonce", &nonce).map_err(sql)?;
    set_meta(conn, "wrapped_key", &wrapped).map_err(sql)?;
    Ok(key)
}

fn unwrap_with_passphrase(conn: &Connection, db: &Path, passphrase: &str) -> Result<VaultKey> {
    let sql = |e| StoreError::sqlite(db, e);
    let salt = meta_blob(conn, "kdf_salt").map_err(sql)?.unwrap_or_default();
    let nonce = meta_blob(conn, "wrapped_key_nonce").map_err(sql)?.unwrap_or_default();
    let wrapped = meta_blob(conn, "wrapped_key").map_err(sql)?.unwrap_or_default();

    let wrapping = derive_from_passphrase(passphrase.as_bytes(), &salt);
    let raw = wrapping.open(&nonce, &wrapped, WRAP_AAD).ok_or_else(|| {
        StoreError::WrongKey(
            "the passphrase in AGENTSECRETS_PASSPHRASE does not open this vault".to_owned(),
        )
    })?;
    VaultKey::from_slice(&raw).ok_or_else(|| StoreError::Corrupt {
        path: db.to_owned(),
        detail: "wrapped vault key has the wrong length".to_owned(),
    })
}

fn create_key_file(home: &Home) -> Result<VaultKey> {
    let path = home.key_file();
    // A key file without a recorded key source is left by a first use that died before
    // committing; the vault it was made for may hold values already, so keep it.
    if path.exists() {
        return load_key_file(home);
    }
    let key = VaultKey::generate();
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    write_new_file(&path, encoded.as_bytes())?;
    Ok(key)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;

    let io = |source| StoreError::Io { path: path.to_owned(), source };
    let mut file = open_private(path, true).map_err(io)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io)
}

fn load_key_file(home: &Home) -> Result<VaultKey> {
    let path = home.key_file();
    let text = match fs::read_to_string(&path) {
        Ok(text) => Zeroizing::new(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::KeyMissing(format!(
                "the vault key file {} is missing, so the vault cannot be opened; restore it \
                 from a backup (a new key would not open the values already stored)",
                path.display()
            )));
        }
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    check_private(&path, 0o600)?;

    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default(),
    );
    VaultKey::from_slice(&raw).ok_or_else(|| {
        StoreError::WrongKey(format!(
            "the key file {} is damaged (not a 32-byte base64 key); restore it from a backup",
            path.display()
        ))
    })
}

fn keychain_enabled() -> bool {
    let setting = std::env::var("AGENTSECRETS_KEYCHAIN").unwrap_or_default();
    !matches!(setting.to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no")
}

fn keychain_account(home: &Home) -> String {
    let path = fs::canonicalize(home.path()).unwrap_or_else(|_| home.path().to_owned());
    format!("vault-key:{}", path.display())
}

/// Runs a keychain operation on its own thread: some backends start an async runtime of
/// their own, which must not nest inside the caller's.
fn with_keychain<T: Send + 'static>(
    account: String,
    op: impl FnOnce(keyring::Entry) -> keyring::Result<T> + Send + 'static,
) -> Option<keyring::Result<T>> {
    std::thread::spawn(move || keyring::Entry::new(KEYCHAIN_SERVICE, &account).and_then(op))
        .join()
        .ok()
}

fn create_in_keychain(home: &Home) -> Option<VaultKey> {
    if !keychain_enabled() {
        return None;
    }
    let key = VaultKey::generate();
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    let stored = encoded.to_string();

    // Write, then read back: only a keychain that returns what it was given counts.
    let result = with_keychain(keychain_account(home), move |entry| {
        entry.set_password(&stored)?;
        entry.get_password()
    });
    match result {
        Some(Ok(back)) if back == *encoded => Some(key),
        _ => {
            tracing::debug!("no OS keychain answered; the vault key goes to a key file");
            None
        }
    }
}

fn load_from_keychain(home: &Home) -> Result<VaultKey> {
    let missing = |why: String| {
        StoreError::KeyMissing(format!(
            "the vault key is kept in the OS keychain, which did not return it ({why}); \
             unlock the keychain and try again"
        ))
    };
    let text = match with_keychain(keychain_account(home), |entry| entry.get_password()) {
        Some(Ok(text)) => Zeroizing::new(text),
        Some(Err(err)) => return Err(missing(err.to_string())),
        None => return Err(missing("the keychain backend failed".to_owned())),
    };
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default(),
    );
    VaultKey::from_slice(&raw).ok_or_else(|| missing("the entry is damaged".to_owned()))
}

fn meta_blob(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

fn meta_text(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    Ok(meta_blob(conn, key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

fn set_meta(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
