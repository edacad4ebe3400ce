//! A child process that cannot outlive the test: it runs under a small `sh` supervisor that
//! kills it as soon as its stdin (a pipe held by this process) closes, which happens when the
//! handle is dropped and also when the test process dies in any way (panic, SIGKILL, a static
//! that is never dropped). Output goes to a log file.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// The supervisor: runs the program, kills it when stdin reaches EOF, exits with its status.
/// (Background jobs of a non-interactive shell get /dev/null as stdin, hence fd 3.)
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
( cat <&3 >/dev/null; kill -KILL "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
status=$?
# A temporary control plane's directory goes with its etcd, even when the test process is gone.
[ -n "${AVIARY_CLEANUP_DIR:-}" ] && rm -rf "$AVIARY_CLEANUP_DIR"
exit $status
"#;

/// A supervised program (etcd, kube-apiserver, kube-controller-manager).
pub(crate) struct Supervised {
    name: String,
    log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program args…`, appending its output to `log`; `cleanup` is removed once the
    /// program has exited.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new("sh");
        if let Some(dir) = cleanup {
            cmd.env("AVIARY_CLEANUP_DIR", dir);
        }
        let mut child = cmd
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
            stdin,
        })
    }

    /// An error when the program has exited, quoting the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Setup(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            ))),
            Err(e) => Err(Error::io(format!("checking on {}", self.name), e)),
        }
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the program (SIGKILL) and waits for it.
    pub(crate) fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // EOF on the supervisor's stdin: it kills the program, then `wait` returns.
        if self.stdin.take().is_some() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
