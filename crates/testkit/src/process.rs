//! Processes a test starts: killed when their guard drops (also when the test fails), their
//! stderr captured, and the process tree inspected for orphans; programs run with input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `signal` to `pid` (errors are ignored: the process may be gone).
pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// A child process that is stopped when dropped: SIGTERM and up to `grace` to exit (so it can
/// stop what it started), then SIGKILL. A paused process (SIGSTOP) is continued first.
pub struct Process {
    child: Child,
    grace: Duration,
    paused: bool,
}

impl Process {
    /// Guards `child`; dropping the guard kills it at once.
    pub fn new(child: Child) -> Self {
        Self {
            child,
            grace: Duration::ZERO,
            paused: false,
        }
    }

    /// Dropping the guard sends SIGTERM and waits up to `grace` before SIGKILL.
    pub fn graceful(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now, and reap it.
    pub fn kill9(&mut self) {
        signal(self.id(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM (returns at once).
    pub fn term(&self) {
        signal(self.id(), Signal::SIGTERM);
    }

    /// SIGSTOP: the process stops running until [`Process::resume`].
    pub fn pause(&mut self) {
        signal(self.id(), Signal::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        signal(self.id(), Signal::SIGCONT);
        self.paused = false;
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.paused {
            signal(self.id(), Signal::SIGCONT);
        }
        if !self.grace.is_zero() {
            self.term();
            if self.wait_exit(self.grace).is_some() {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines a child wrote (stderr, usually), with when they arrived; echoed to the test's output
/// with a prefix when `echo` says so.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    /// Reads `stream` on a thread until it closes.
    pub fn capture(
        &self,
        prefix: impl Into<String>,
        stream: impl Read + Send + 'static,
        echo: fn(&str) -> bool,
    ) {
        let (lines, prefix) = (self.0.clone(), prefix.into());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if echo(&line) {
                    eprintln!("[{prefix}] {line}");
                }
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
    }

    /// Every line so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When the first line containing `pattern` arrived at or after `since`.
    pub fn find(&self, pattern: &str, since: Instant) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(t, l)| *t >= since && l.contains(pattern))
            .map(|(t, _)| *t)
    }

    /// Every line containing `pattern`.
    pub fn grep(&self, pattern: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.contains(pattern)).collect()
    }

    /// Asserts that a line contains every one of `needles`; otherwise shows the lines with the
    /// first.
    #[track_caller]
    pub fn assert_line_with(&self, needles: &[&str]) {
        let candidates = self.grep(needles[0]);
        assert!(
            candidates.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "no line with all of {needles:?}: {candidates:#?}"
        );
    }
}

/// Echo every line.
pub fn every_line(_: &str) -> bool {
    true
}

/// Reads the first line of `stream` and returns what follows `prefix` in it (a process that
/// announces its address, e.g. `aviary coordinator listening on 127.0.0.1:PORT`).
pub fn announced(stream: impl Read, prefix: &str) -> String {
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected a first line starting with {prefix:?}, got {line:?}"))
        .to_string()
}

/// PIDs of every descendant of `pid` (from /proc).
pub fn descendants(pid: u32) -> BTreeSet<u32> {
    // One pass over /proc (a parent of a thousand children would otherwise rescan per child).
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(child);
        }
    }
    let mut all = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &child in children.get(&p).into_iter().flatten() {
            if all.insert(child) {
                frontier.push(child);
            }
        }
    }
    all
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Spawns `cmd` with stdout and stderr piped and `stdin` written to its standard input (closed
/// after it; `/dev/null` without input).
pub fn spawn_with_input(cmd: &mut Command, stdin: Option<&[u8]>) -> Child {
    let mut child = cmd
        .stdin(input(stdin.is_some()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    if let Some(input) = stdin {
        // Dropping the handle closes stdin, so the program sees the end of its input.
        let mut pipe = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut pipe, input).expect("write stdin");
    }
    child
}

/// A piped standard input for a program given input, `/dev/null` otherwise.
pub fn input(given: bool) -> Stdio {
    if given { Stdio::piped() } else { Stdio::null() }
}

/// Runs `cmd` to its end and returns its output; panics unless it succeeded, naming `what`
/// and showing its stderr.
pub fn output_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
