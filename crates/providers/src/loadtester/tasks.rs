//! Running task commands: each in its own process group, so that a timeout or a shutdown stops
//! the command and everything it started (`sh -c "hey …"` runs hey as a grandchild). Output is
//! captured bounded ([`OUTPUT_HEAD`] + [`OUTPUT_TAIL`] bytes per stream).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::MAX_RUNNING;
use super::metrics::Metrics;

/// Output kept from the start of each stream.
pub(crate) const OUTPUT_HEAD: usize = 64 * 1024;
/// Output kept from the end of each stream.
pub(crate) const OUTPUT_TAIL: usize = 64 * 1024;

/// The canary a task runs for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Canary {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl std::fmt::Display for Canary {
    /// `namespace/name`, control characters escaped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.namespace.escape_debug(),
            self.name.escape_debug()
        )
    }
}

/// What [`Runner::start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Started {
    Yes,
    /// The same command runs for the same canary.
    AlreadyRunning,
    /// [`MAX_RUNNING`] commands run already.
    TooMany,
}

/// The start and the end of a stream, and how much was dropped between.
#[derive(Default)]
struct Captured {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl Captured {
    fn push(&mut self, mut bytes: &[u8]) {
        let room = OUTPUT_HEAD - self.head.len();
        let first = bytes.len().min(room);
        self.head.extend_from_slice(&bytes[..first]);
        bytes = &bytes[first..];
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(OUTPUT_TAIL);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn text(self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("\n… [{} bytes of output dropped] …\n", self.dropped));
        }
        let (a, b) = self.tail.as_slices();
        text.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        text
    }
}

/// Reads a stream to its end, keeping its start and its end.
async fn capture(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => captured.push(&buf[..n]),
        }
    }
    captured.text()
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit status 0, with stdout followed by stderr.
    Success(String),
    /// A non-zero exit (or a signal), with the output.
    Failed { output: String, status: String },
    /// Killed after the per-command timeout.
    TimedOut,
    /// Killed because the load tester is shutting down.
    Cancelled,
    /// Could not be started.
    NotStarted(String),
}

/// Runs a program to completion, killing its process group on timeout or cancellation.
pub(crate) async fn run(
    program: &str,
    args: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Outcome {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::NotStarted(format!("cannot start {program}: {e}")),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let kill_group = || {
        if let Some(id) = pgid {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
        }
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (stdout, stderr, status) = tokio::join!(capture(stdout), capture(stderr), child.wait());
        (stdout + &stderr, status)
    };
    tokio::select! {
        (text, status) = finished => {
            // Background children of a finished command do not outlive it either.
            kill_group();
            match status {
                Ok(status) if status.success() => Outcome::Success(text),
                Ok(status) => Outcome::Failed { output: text, status: status.to_string() },
                Err(e) => Outcome::NotStarted(format!("waiting for {program} failed: {e}")),
            }
        }
        () = tokio::time::sleep(timeout) => {
            kill_group();
            Outcome::TimedOut
        }
        () = cancel.cancelled() => {
            kill_group();
            Outcome::Cancelled
        }
    }
}

/// The first `name` found on `PATH` that is an executable file.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Background tasks (`cmd`, `ngrinder`), deduplicated while running.
#[derive(Debug)]
pub(crate) struct Runner {
    running: Mutex<HashSet<(Canary, &'static str, String)>>,
    timeout: Duration,
    cancel: CancellationToken,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl Runner {
    pub(crate) fn new(timeout: Duration, cancel: CancellationToken, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::new(HashSet::new()),
            timeout,
            cancel,
            tracker: TaskTracker::new(),
            metrics,
        })
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Starts `sh -c <cmd>` for `canary` unless the same command is already running for it, or
    /// [`MAX_RUNNING`] commands are.
    pub(crate) fn start(self: &Arc<Self>, canary: Canary, cmd: String, log_output: bool) -> Started {
        let this = Arc::clone(self);
        let c = canary.clone();
        let command = cmd.clone();
        self.spawn(canary, "cmd", cmd, async move {
            let (canary, cmd) = (c, command);
            tracing::info!(%canary, cmd = ?cmd, "command starting");
            let args = vec!["-c".to_string(), cmd.clone()];
            let outcome = run("sh", &args, this.timeout, &this.cancel).await;
            match &outcome {
                Outcome::Success(out) => {
                    if log_output {
                        tracing::info!(%canary, cmd = ?cmd, output = ?out, "command finished");
                    } else {
                        tracing::info!(%canary, cmd = ?cmd, "command finished");
                    }
                    "succeeded"
                }
                Outcome::Failed { output, status } => {
                    tracing::warn!(%canary, cmd = ?cmd, %status, output = ?output, "command failed");
                    "failed"
                }
                Outcome::TimedOut => {
                    tracing::warn!(%canary, cmd = ?cmd, timeout = ?this.timeout, "command killed after the timeout");
                    "timeout"
                }
                Outcome::Cancelled => "cancelled",
                Outcome::NotStarted(e) => {
                    tracing::warn!(%canary, cmd = ?cmd, error = %e, "command not started");
                    "failed"
                }
            }
        })
    }

    /// Runs `work` (answering its outcome for the metrics) in the background for `canary`,
    /// unless a task of `kind` with the same `key` runs for it already, or [`MAX_RUNNING`]
    /// tasks run.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        canary: Canary,
        kind: &'static str,
        key: String,
        work: impl Future<Output = &'static str> + Send + 'static,
    ) -> Started {
        let id = (canary, kind, key);
        {
            let mut running = self.running.lock();
            if running.contains(&id) {
                drop(running);
                tracing::info!(canary = %id.0, kind, key = ?id.2, "task skipped: it is already running");
                self.metrics.task(kind, "skipped");
                return Started::AlreadyRunning;
            }
            if running.len() >= MAX_RUNNING {
                drop(running);
                tracing::warn!(canary = %id.0, kind, key = ?id.2, "task refused: {MAX_RUNNING} tasks are running");
                return Started::TooMany;
            }
            running.insert(id.clone());
        }
        self.metrics.running.inc();
        let this = Arc::clone(self);
        self.tracker.spawn(async move {
            let result = work.await;
            this.metrics.task(kind, result);
            this.metrics.running.dec();
            this.running.lock().remove(&id);
        });
        Started::Yes
    }

    /// Stops every running command and waits for their tasks.
    pub(crate) async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_report_output_and_exit_status() {
        let cancel = CancellationToken::new();
        let t = Duration::from_secs(10);
        let sh = |s: &str| vec!["-c".to_string(), s.to_string()];
        assert_eq!(
            run("sh", &sh("echo out; echo err >&2"), t, &cancel).await,
            Outcome::Success("out\nerr\n".into())
        );
        match run("sh", &sh("echo nope; exit 3"), t, &cancel).await {
            Outcome::Failed { output, status } => {
                assert_eq!(output, "nope\n");
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("/nonexistent/binary", &[], t, &cancel).await,
            Outcome::NotStarted(_)
        ));
    }

    /// Alive unless gone or a zombie (an orphan may wait for a reaper that never comes).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|rest| rest.trim_start().to_string()))
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    }

    #[tokio::test]
    async fn timeouts_kill_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cancel = CancellationToken::new();
        let out = run("sh", &["-c".to_string(), script], Duration::from_secs(1), &cancel).await;
        assert_eq!(out, Outcome::TimedOut);
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        // SIGKILL is asynchronous: allow the kernel a moment, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(&pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(&pid),
            "the grandchild {pid} of a timed-out command survived"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_a_running_command() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let stop = async move {
            tokio::task::yield_now().await;
            c.cancel();
        };
        let args = ["-c".to_string(), "sleep 30".to_string()];
        let (out, ()) = tokio::join!(run("sh", &args, Duration::from_secs(60), &cancel), stop);
        assert_eq!(out, Outcome::Cancelled);
    }

    /// Issue 15: a command printing far more than the caps keeps its start and its end, with a
    /// marker between; memory stays bounded.
    #[tokio::test]
    async fn output_is_captured_bounded() {
        let cancel = CancellationToken::new();
        let script = "echo first; head -c 5000000 /dev/zero | tr '\\0' y; echo; echo last";
        let out = run(
            "sh",
            &["-c".to_string(), script.to_string()],
            Duration::from_secs(30),
            &cancel,
        )
        .await;
        let Outcome::Success(text) = out else {
            panic!("{out:?}")
        };
        assert!(
            text.len() <= OUTPUT_HEAD + OUTPUT_TAIL + 100,
            "{} bytes",
            text.len()
        );
        assert!(text.starts_with("first\n"), "{}", &text[..20]);
        assert!(text.ends_with("\nlast\n"), "{}", &text[text.len() - 20..]);
        assert!(text.contains(" bytes of output dropped] …"));
        let mut small = Captured::default();
        small.push(b"abc");
        small.push(b"def");
        assert_eq!(small.text(), "abcdef");
    }

    #[test]
    fn canaries_are_shown_escaped() {
        let c = Canary {
            namespace: "test".into(),
            name: "a\nINFO forged".into(),
        };
        assert_eq!(c.to_string(), "test/a\\nINFO forged");
    }

    #[test]
    fn which_finds_executables() {
        assert!(which("sh").is_some());
        assert!(which("aviary-no-such-binary").is_none());
    }
}
