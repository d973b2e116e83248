//! Starting a proxy for [`crate::AgentSecrets::ensure_proxy`]: which binary, with which
//! arguments, detached from the program that starts it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::Error;

/// How to start a proxy.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The `agentsecrets` binary.
    pub binary: PathBuf,
    /// Extra `proxy start` arguments.
    pub args: Vec<String>,
    /// How long to wait for it to answer `/health`.
    pub timeout: Duration,
}

impl Launch {
    /// Runs `agentsecrets proxy start --port N ...` with the client's home, its standard
    /// streams closed and (on Unix) in a process group of its own, so that a Ctrl-C meant
    /// for the program does not stop the proxy too.
    pub fn spawn(&self, home: &Path, port: u16) -> Result<Child, Error> {
        let mut command = Command::new(&self.binary);
        command
            .args(["proxy", "start", "--port", &port.to_string()])
            .args(&self.args)
            .env("AGENTSECRETS_HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            command.process_group(0);
        }

        command.spawn().map_err(|err| Error::ProxyStart {
            message: format!(
                "cannot run {}: {err}; set AGENTSECRETS_BIN or put agentsecrets on PATH",
                self.binary.display()
            ),
        })
    }
}

/// Waits for the started proxy on a thread of its own, so that when it ends it does not
/// linger as a zombie of this program. The thread ends with the proxy, or with the
/// program, which leaves the proxy running.
pub(crate) fn reap_in_background(mut child: Child) {
    let spawned =
        std::thread::Builder::new().name("agentsecrets-proxy-reaper".to_owned()).spawn(move || {
            let _ = child.wait();
        });
    // Without a thread the proxy still runs; it is only reaped later, by init.
    drop(spawned);
}

/// The binary to run: the configured one, else `$AGENTSECRETS_BIN`, else `agentsecrets`,
/// which [`Command`] looks up on `PATH`.
pub(crate) fn resolve_binary(
    explicit: Option<PathBuf>,
    env: impl Fn(&str) -> Option<OsString>,
) -> PathBuf {
    explicit
        .or_else(|| env("AGENTSECRETS_BIN").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("agentsecrets"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_comes_from_the_override_then_the_environment_then_path() {
        let env = |name: &str| (name == "AGENTSECRETS_BIN").then(|| OsString::from("/opt/as"));
        let nothing = |_: &str| None;

        assert_eq!(resolve_binary(Some("/x/as".into()), env), PathBuf::from("/x/as"));
        assert_eq!(resolve_binary(None, env), PathBuf::from("/opt/as"));
        assert_eq!(resolve_binary(None, nothing), PathBuf::from("agentsecrets"));
    }

    #[test]
    fn a_missing_binary_is_a_start_error() {
        let launch = Launch {
            binary: PathBuf::from("/nonexistent/agentsecrets-binary"),
            args: Vec::new(),
            timeout: Duration::from_secs(1),
        };

        let err = launch.spawn(Path::new("/nonexistent-home"), 1).unwrap_err();

        assert!(matches!(err, Error::ProxyStart { .. }), "{err:?}");
    }
}
