//! Running task commands: each in its own process group, so that a timeout or a shutdown stops
//! the command and everything it started (`sh -c "hey …"` runs hey as a grandchild).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::Metrics;

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
    let child = match cmd.spawn() {
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
    tokio::select! {
        out = child.wait_with_output() => {
            // Background children of a finished command do not outlive it either.
            kill_group();
            match out {
                Ok(out) => {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    if out.status.success() {
                        Outcome::Success(text)
                    } else {
                        Outcome::Failed { output: text, status: out.status.to_string() }
                    }
                }
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

/// Asynchronous `cmd` tasks, deduplicated while running.
#[derive(Debug)]
pub(crate) struct Runner {
    running: Mutex<HashSet<(String, String)>>,
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

    /// Starts `sh -c <cmd>` for `canary` unless the same command is already running for it.
    /// Returns whether it was started.
    pub(crate) fn start(self: &Arc<Self>, canary: String, cmd: String, log_output: bool) -> bool {
        let key = (canary.clone(), cmd.clone());
        if !self.running.lock().insert(key.clone()) {
            tracing::info!(canary = %canary, "command skipped {cmd} is already running");
            self.metrics.task("cmd", "skipped");
            return false;
        }
        self.metrics.running.inc();
        let this = Arc::clone(self);
        self.tracker.spawn(async move {
            tracing::info!(canary = %canary, "command starting {cmd}");
            let args = vec!["-c".to_string(), cmd.clone()];
            let outcome = run("sh", &args, this.timeout, &this.cancel).await;
            let result = match &outcome {
                Outcome::Success(out) => {
                    if log_output {
                        tracing::info!(canary = %canary, "command finished {cmd}\n{out}");
                    } else {
                        tracing::info!(canary = %canary, "command finished {cmd}");
                    }
                    "succeeded"
                }
                Outcome::Failed { output, status } => {
                    tracing::warn!(canary = %canary, "command failed {cmd}: {status}\n{output}");
                    "failed"
                }
                Outcome::TimedOut => {
                    tracing::warn!(canary = %canary, "command {cmd} killed after {:?}", this.timeout);
                    "timeout"
                }
                Outcome::Cancelled => "cancelled",
                Outcome::NotStarted(e) => {
                    tracing::warn!(canary = %canary, "command {cmd} not started: {e}");
                    "failed"
                }
            };
            this.metrics.task("cmd", result);
            this.metrics.running.dec();
            this.running.lock().remove(&key);
        });
        true
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

    #[test]
    fn which_finds_executables() {
        assert!(which("sh").is_some());
        assert!(which("aviary-no-such-binary").is_none());
    }
}
