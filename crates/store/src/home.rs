//! The home directory: where it is, and that only its owner can read it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// The directory that holds every file of agentsecrets.
#[derive(Debug, Clone)]
pub struct Home {
    path: PathBuf,
}

impl Home {
    /// `$AGENTSECRETS_HOME`, else `~/.agentsecrets`.
    pub fn locate() -> Result<Home> {
        if let Some(path) = std::env::var_os("AGENTSECRETS_HOME").filter(|p| !p.is_empty()) {
            return Ok(Home { path: PathBuf::from(path) });
        }
        let home = std::env::var_os("HOME").filter(|p| !p.is_empty()).ok_or_else(|| {
            StoreError::Invalid(
                "cannot find the home directory: set AGENTSECRETS_HOME or HOME".to_owned(),
            )
        })?;
        Ok(Home { path: PathBuf::from(home).join(".agentsecrets") })
    }

    /// A home at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> Home {
        Home { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vault database.
    pub fn vault_db(&self) -> PathBuf {
        self.path.join("vault.db")
    }

    /// The audit database.
    pub fn audit_db(&self) -> PathBuf {
        self.path.join("audit.db")
    }

    /// The vault key file, used when no OS keychain answers.
    pub fn key_file(&self) -> PathBuf {
        self.path.join("vault.key")
    }

    /// The running proxy's session file.
    pub fn session_file(&self) -> PathBuf {
        self.path.join("session.json")
    }

    /// Creates the home (0700) if missing, and refuses one that others can read.
    pub fn ensure(&self) -> Result<()> {
        match fs::metadata(&self.path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if self.create()? {
                    return Ok(());
                }
                // Another process created it first: judge it like any existing home.
                self.check_existing()
            }
            Err(source) => Err(StoreError::HomeIo { path: self.path.clone(), source }),
            Ok(_) => self.check_existing(),
        }
    }

    fn check_existing(&self) -> Result<()> {
        let meta = fs::metadata(&self.path)
            .map_err(|source| StoreError::HomeIo { path: self.path.clone(), source })?;
        if !meta.is_dir() {
            return Err(StoreError::HomeIo {
                path: self.path.clone(),
                source: std::io::Error::other("exists but is not a directory"),
            });
        }
        check_private(&self.path, 0o700)
    }

    /// Creates the home with mode 0700 from the start, never open to others even for an
    /// instant (a concurrent first use would see that, and refuse the home). Returns false
    /// when it already existed.
    fn create(&self) -> Result<bool> {
        let io = |source| StoreError::HomeIo { path: self.path.clone(), source };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io)?;
        }

        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(io(source)),
        }
        // The umask can only have taken bits away; set the mode exactly.
        set_mode(&self.path, 0o700)?;
        Ok(true)
    }
}

/// Refuses a path whose group or world permission bits are set.
pub fn check_private(path: &Path, want: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;

        let meta = fs::metadata(path)
            .map_err(|source| StoreError::HomeIo { path: path.to_owned(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Permissions { path: path.to_owned(), mode, want });
        }
    }
    let _ = (path, want);
    Ok(())
}

/// Sets a path's permission bits (a no-op where there are none).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;

        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    }
    let _ = (path, mode);
    Ok(())
}

/// Writes a file that only its owner can read, atomically: a temporary file in the same
/// directory, synced, then renamed over the target.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;

    let io = |source| StoreError::Io { path: path.to_owned(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", file_name(path), std::process::id()));

    let mut file = open_private(&tmp, false).map_err(io)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(source));
    }
    fs::rename(&tmp, path).map_err(io)
}

/// Opens a new file with mode 0600; with `exclusive`, fails if it already exists.
pub fn open_private(path: &Path, exclusive: bool) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
