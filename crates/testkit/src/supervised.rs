//! [`Supervised`]: a child process that cannot outlive the test: it runs under a small `sh`
//! supervisor that kills it as soon as its stdin (a pipe held by this process) closes, which
//! happens when the handle is dropped and also when the test process dies in any way (panic,
//! SIGKILL, a static that is never dropped). Output goes to a log file; the program's own process
//! id is known (for `/proc` measurements).

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// The supervisor: runs the program, writes its pid to the file named by `$1`, kills it when
/// stdin reaches EOF, exits with its status. (Background jobs of a non-interactive shell get
/// /dev/null as stdin, hence fd 3.)
const SUPERVISOR: &str = r#"
pidfile=$1
shift
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
echo "$pid" >"$pidfile"
( cat <&3 >/dev/null; kill -KILL "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
"#;

/// Removes a directory once its stdin closes: a temporary control plane's files go with it even
/// when the test process dies without dropping it (a shared cluster is a static).
const JANITOR: &str = r#"cat >/dev/null; sleep 0.5; rm -rf "$1""#;

/// A supervised program (etcd, kube-apiserver, kube-controller-manager, a controller under test).
pub struct Supervised {
    name: String,
    log: PathBuf,
    pidfile: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// A process that removes `dir` when this handle drops or the test process ends.
    pub(crate) fn janitor(dir: &Path) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .arg("janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("starting the cleanup process", e))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: "janitor".into(),
            log: dir.join("janitor.log"),
            pidfile: PathBuf::new(),
            child,
            stdin,
        })
    }

    /// Starts `program args…`, appending its output to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// Starts `program args…` with extra environment variables, appending its output to `log`
    /// (its pid goes to `log` + `.pid`).
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut pidfile = log.as_os_str().to_owned();
        pidfile.push(".pid");
        let pidfile = PathBuf::from(pidfile);
        let _ = std::fs::remove_file(&pidfile);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(&pidfile)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            pidfile,
            child,
            stdin,
        })
    }

    /// The program's own process id (not the supervisor's), once it has started.
    pub fn pid(&self) -> Option<u32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.pidfile).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error when the program has exited, quoting the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
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

    /// True when the program exited and its log says its port was taken.
    pub(crate) fn lost_port_race(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_))) && self.log_tail(20).contains("address already in use")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the program (SIGKILL) and waits for it.
    pub fn kill(mut self) {
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
