//! The process supervisor: runs a LocalService version as `replicas` processes on free loopback
//! ports, like a Deployment's pods.
//!
//! Each process gets its own process group (so stopping it also stops what it spawned), a clean
//! environment (see [`INHERITED_ENV`]: the agent's secrets and cloud credentials never reach a
//! workload), its stdout and stderr captured (the last lines in memory for error messages, everything in a log
//! file when a log directory is configured), an HTTP readiness probe, and restarts with
//! exponential backoff when it exits. Three exits within 30 s (configurable) are reported as a
//! crash loop; a command that cannot be started at all (ENOENT, EACCES) is reported as such.
//! Both keep being retried with the backoff capped, as Kubernetes does with CrashLoopBackOff; the
//! engine decides when a failing readiness becomes a rollback ([`FailureKind::is_fatal`]).
//!
//! Stopping a group sends SIGTERM to each process group and SIGKILL after the grace period.
//! Dropping the [`ProcessSupervisor`] sends SIGKILL to every process group at once, so nothing it started
//! outlives it. (If the agent itself is SIGKILLed, children that do not watch their parent, as
//! the sample app does, are left to the operating system: setting a parent-death signal needs
//! `unsafe` code, which the workspace forbids.)

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Timings and limits of a [`ProcessSupervisor`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSupervisorConfig {
    /// Between SIGTERM and SIGKILL when stopping.
    pub grace_period: Duration,
    /// First restart delay; doubled after each exit up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `crash_loop_exits` exits within `crash_loop_window` make a crash loop. A process that ran
    /// longer than the window also resets the backoff.
    pub crash_loop_exits: usize,
    pub crash_loop_window: Duration,
    /// Readiness probe period (probes run faster until the first success).
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// Consecutive failed probes that make a ready process unready (Kubernetes' default is 3).
    pub probe_failure_threshold: u32,
    /// Output lines kept per process for error messages.
    pub output_lines: usize,
    /// When set, each process' output is appended to `<dir>/<group>-<replica>.log`.
    pub log_dir: Option<PathBuf>,
}

impl Default for ProcessSupervisorConfig {
    fn default() -> Self {
        ProcessSupervisorConfig {
            grace_period: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            crash_loop_exits: 3,
            crash_loop_window: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            probe_failure_threshold: 3,
            output_lines: 40,
            log_dir: None,
        }
    }
}

/// The only variables a workload inherits from the agent: the program search path, the user's
/// home and identity, locale (`LANG`, `LANGUAGE` and every `LC_*`), time zone and temporary
/// directory. Everything else a workload needs is written in its spec's `env`. The agent's own
/// environment holds credentials (`AVIARY_SECRET_*`, `SLACK_URL`, `AWS_*`, `GOOGLE_*`,
/// `AZURE_*`, `DD_*`, …) that a workload, which may be any program, must not see.
pub const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "HOSTNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// Whether a variable of the agent's environment is passed on to workloads.
pub fn inherited(name: &str) -> bool {
    INHERITED_ENV.contains(&name) || name.starts_with("LC_")
}

/// A workload's environment: the inherited part of `agent_env`, then the spec's variables
/// (which win) with `{{port}}` and `{{version}}` expanded.
pub fn workload_env(
    agent_env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    spec: &GroupSpec,
    port: u16,
) -> BTreeMap<std::ffi::OsString, std::ffi::OsString> {
    let mut env: BTreeMap<_, _> = agent_env
        .into_iter()
        .filter(|(name, _)| name.to_str().is_some_and(inherited))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(k, v)| (k.into(), expand(v, port, &spec.version).into())),
    );
    env
}

/// One version of a LocalService to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// Names the group in messages and log files, e.g. `test/podinfo-canary`.
    pub name: String,
    /// Program and arguments; `{{port}}` and `{{version}}` are expanded.
    pub command: Vec<String>,
    /// The process' environment besides [`INHERITED_ENV`]; `{{port}}` and `{{version}}` are
    /// expanded in values.
    pub env: BTreeMap<String, String>,
    pub replicas: u32,
    /// Path of the HTTP readiness probe; a 2xx answer means ready.
    pub readiness_path: String,
    pub version: String,
}

/// Why a group is not (fully) ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The command could not be started (missing program, not executable, …).
    SpawnFailed,
    /// The process keeps exiting.
    CrashLoop,
    /// The process exited and is being restarted.
    Exited,
    /// The process runs but its readiness probe fails (yet).
    NotReady,
}

impl FailureKind {
    /// Whether waiting will not help: the readiness check should fail the canary instead of
    /// retrying (Flagger's non-retriable readiness error).
    pub fn is_fatal(self) -> bool {
        matches!(self, FailureKind::SpawnFailed | FailureKind::CrashLoop)
    }
}

/// A readiness failure with the last output lines of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupError {
    pub kind: FailureKind,
    pub message: String,
    pub output: Vec<String>,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if !self.output.is_empty() {
            write!(f, "; last output:\n{}", self.output.join("\n"))?;
        }
        Ok(())
    }
}

/// One process of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub ready: bool,
    pub restarts: u32,
}

/// What a group looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub replicas: u32,
    pub ready: u32,
    /// Addresses of the ready processes, for the router.
    pub backends: Vec<SocketAddr>,
    pub processes: Vec<ReplicaStatus>,
    /// The most severe current problem (fatal kinds first); `None` when every replica is ready.
    pub last_error: Option<GroupError>,
    /// Set once the group has been stopped.
    pub stopped: bool,
}

impl GroupStatus {
    pub fn is_ready(&self) -> bool {
        self.ready == self.replicas && !self.stopped
    }
}

/// Starts and stops process groups; dropping it kills everything it started.
#[derive(Debug)]
pub struct ProcessSupervisor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ProcessSupervisorConfig,
    probe: Client<HttpConnector, Empty<Bytes>>,
    /// Ports handed to live processes, so two replicas never get the same one.
    ports: Mutex<HashSet<u16>>,
    groups: Mutex<Vec<ProcessGroup>>,
}

/// A handle to a running group; clones refer to the same group.
#[derive(Clone, Debug)]
pub struct ProcessGroup {
    inner: Arc<GroupInner>,
}

#[derive(Debug)]
struct GroupInner {
    spec: GroupSpec,
    token: CancellationToken,
    status: watch::Sender<GroupStatus>,
    replicas: Mutex<Vec<Replica>>,
    /// Live process group ids, for the synchronous kill on drop.
    pgids: Mutex<HashSet<i32>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Clone, Debug, Default)]
struct Replica {
    status: ReplicaStatus,
    error: Option<GroupError>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProcessSupervisor {
    pub fn new(config: ProcessSupervisorConfig) -> ProcessSupervisor {
        let probe = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        ProcessSupervisor {
            shared: Arc::new(Shared {
                config,
                probe,
                ports: Mutex::new(HashSet::new()),
                groups: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts `spec.replicas` processes. Only an invalid spec is an error here; start failures
    /// and crashes show in [`ProcessGroup::status`].
    pub fn start(&self, spec: GroupSpec) -> Result<ProcessGroup> {
        validate(&spec)?;
        if let Some(dir) = &self.shared.config.log_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(
                    format!("process group {}: cannot create {}", spec.name, dir.display()),
                    e,
                )
            })?;
        }
        let replicas = spec.replicas as usize;
        let initial = GroupStatus {
            replicas: spec.replicas,
            processes: vec![ReplicaStatus::default(); replicas],
            ..GroupStatus::default()
        };
        let group = ProcessGroup {
            inner: Arc::new(GroupInner {
                spec,
                token: CancellationToken::new(),
                status: watch::Sender::new(initial),
                replicas: Mutex::new(vec![Replica::default(); replicas]),
                pgids: Mutex::new(HashSet::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let tasks = (0..replicas)
            .map(|index| {
                tokio::spawn(run_replica(
                    Arc::clone(&self.shared),
                    Arc::clone(&group.inner),
                    index,
                ))
            })
            .collect();
        *lock(&group.inner.tasks) = tasks;
        let mut groups = lock(&self.shared.groups);
        groups.retain(|g| !g.inner.token.is_cancelled());
        groups.push(group.clone());
        Ok(group)
    }

    /// Stops every group (SIGTERM, then SIGKILL after the grace period) and waits for them.
    pub async fn shutdown(&self) {
        let groups: Vec<_> = lock(&self.shared.groups).drain(..).collect();
        let mut stopping = tokio::task::JoinSet::new();
        for group in groups {
            stopping.spawn(async move { group.stop().await });
        }
        while stopping.join_next().await.is_some() {}
    }
}

impl Drop for ProcessSupervisor {
    fn drop(&mut self) {
        for group in lock(&self.shared.groups).drain(..) {
            group.inner.kill_now();
        }
    }
}

fn validate(spec: &GroupSpec) -> Result<()> {
    let what = format!("process group {}", spec.name);
    match spec.command.first() {
        None => {
            return Err(Error::invalid(
                what,
                "spec.command",
                "is empty; give the program and its arguments",
            ));
        }
        Some(program) if program.trim().is_empty() => {
            return Err(Error::invalid(
                what,
                "spec.command[0]",
                "the program name is empty",
            ));
        }
        Some(_) => {}
    }
    if !spec.readiness_path.starts_with('/') {
        return Err(Error::invalid(
            what,
            "spec.readinessPath",
            format!(
                "`{}` must be an absolute path such as /readyz",
                spec.readiness_path
            ),
        ));
    }
    if let Some(key) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(Error::invalid(
            what,
            format!("spec.env.{key}"),
            "is not a valid environment variable name",
        ));
    }
    Ok(())
}

impl ProcessGroup {
    pub fn spec(&self) -> &GroupSpec {
        &self.inner.spec
    }

    pub fn status(&self) -> GroupStatus {
        self.inner.status.borrow().clone()
    }

    /// Changes of [`ProcessGroup::status`].
    pub fn subscribe(&self) -> watch::Receiver<GroupStatus> {
        self.inner.status.subscribe()
    }

    /// Waits until `done` holds for the status, at most `timeout`; on timeout returns the last
    /// status as the error.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&GroupStatus) -> bool,
    ) -> std::result::Result<GroupStatus, GroupStatus> {
        let mut rx = self.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            match rx.wait_for(|s| done(s)).await {
                Ok(status) => status.clone(),
                Err(_) => self.status(),
            }
        })
        .await;
        waited.map_err(|_| self.status())
    }

    /// Stops the group: SIGTERM to each process group, SIGKILL after the grace period, and waits
    /// until every process has been reaped.
    pub async fn stop(&self) {
        self.inner.token.cancel();
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.status.send_modify(|s| s.stopped = true);
    }
}

impl GroupInner {
    fn kill_now(&self) {
        self.token.cancel();
        for pgid in lock(&self.pgids).iter() {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Replica)) {
        let replicas = {
            let mut replicas = lock(&self.replicas);
            change(&mut replicas[index]);
            replicas.clone()
        };
        let backends = replicas
            .iter()
            .filter(|r| r.status.ready)
            .filter_map(|r| r.status.addr)
            .collect();
        let last_error = replicas
            .iter()
            .filter_map(|r| r.error.as_ref())
            .min_by_key(|e| !e.kind.is_fatal())
            .cloned();
        self.status.send_modify(|status| {
            status.ready = replicas.iter().filter(|r| r.status.ready).count() as u32;
            status.backends = backends;
            status.processes = replicas.iter().map(|r| r.status.clone()).collect();
            status.last_error = last_error;
        });
    }

    fn set_error(&self, index: usize, error: GroupError) {
        self.update(index, |r| {
            // A fatal diagnosis stays until the replica becomes ready.
            let keep = r.error.as_ref().is_some_and(|e| e.kind.is_fatal()) && !error.kind.is_fatal();
            if !keep {
                r.error = Some(error);
            }
        });
    }
}

/// Picks a free loopback port: bind port 0, note the port, release it. The process may still
/// lose a race for it; then it exits and is restarted on another port without counting as a
/// crash.
fn free_port(shared: &Shared) -> std::io::Result<u16> {
    for _ in 0..32 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if lock(&shared.ports).insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

fn expand(template: &str, port: u16, version: &str) -> String {
    template
        .replace("{{port}}", &port.to_string())
        .replace("{{version}}", version)
}

/// The last lines written by one process.
type Output = Arc<Mutex<VecDeque<String>>>;

fn recent(output: &Output) -> Vec<String> {
    lock(output).iter().cloned().collect()
}

fn looks_like_port_race(lines: &[String]) -> bool {
    lines.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("address already in use") || l.contains("address in use") || l.contains("eaddrinuse")
    })
}

enum Outcome {
    Exited(std::io::Result<ExitStatus>),
    Stopping,
}

async fn run_replica(shared: Arc<Shared>, group: Arc<GroupInner>, index: usize) {
    let config = &shared.config;
    let spec = &group.spec;
    let mut backoff = config.backoff_initial;
    let mut exits: VecDeque<Instant> = VecDeque::new();
    let mut port_races = 0u32;
    while !group.token.is_cancelled() {
        let port = match free_port(&shared) {
            Ok(port) => port,
            Err(e) => {
                group.set_error(
                    index,
                    GroupError {
                        kind: FailureKind::NotReady,
                        message: format!("process group {}: cannot find a free port: {e}", spec.name),
                        output: Vec::new(),
                    },
                );
                if !sleep_or_cancel(&group.token, backoff).await {
                    break;
                }
                continue;
            }
        };
        let argv: Vec<String> = spec
            .command
            .iter()
            .map(|a| expand(a, port, &spec.version))
            .collect();
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .envs(workload_env(std::env::vars_os(), spec, port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                lock(&shared.ports).remove(&port);
                group.set_error(
                    index,
                    GroupError {
                        kind: FailureKind::SpawnFailed,
                        message: format!(
                            "process group {}: cannot start `{}`: {e}; check spec.command (the program must exist on PATH and be executable)",
                            spec.name, argv[0]
                        ),
                        output: Vec::new(),
                    },
                );
                if !sleep_or_cancel(&group.token, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(config.backoff_max);
                continue;
            }
        };
        let pid = child.id();
        let pgid = pid.and_then(|p| i32::try_from(p).ok());
        if let Some(pgid) = pgid {
            lock(&group.pgids).insert(pgid);
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        group.update(index, |r| {
            r.status.addr = Some(addr);
            r.status.pid = pid;
            r.status.ready = false;
        });
        let output: Output = Arc::new(Mutex::new(VecDeque::with_capacity(config.output_lines)));
        let log_path = config
            .log_dir
            .as_ref()
            .map(|dir| dir.join(log_file_name(&spec.name, index)));
        let readers = [
            child.stdout.take().map(|s| {
                tokio::spawn(capture(
                    s,
                    Arc::clone(&output),
                    config.output_lines,
                    log_path.clone(),
                ))
            }),
            child.stderr.take().map(|s| {
                tokio::spawn(capture(
                    s,
                    Arc::clone(&output),
                    config.output_lines,
                    log_path.clone(),
                ))
            }),
        ];

        let started = Instant::now();
        let mut was_ready = false;
        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(status),
            never = probe(&shared, &group, index, addr, &output, &mut was_ready) => match never {},
            () = group.token.cancelled() => Outcome::Stopping,
        };
        match outcome {
            Outcome::Stopping => {
                terminate(&mut child, pgid, config.grace_period).await;
                finish(&shared, &group, pgid, port, readers).await;
                group.update(index, |r| {
                    r.status.ready = false;
                    r.status.pid = None;
                });
                break;
            }
            Outcome::Exited(status) => {
                // Stragglers of the group go with the leader, like a container's processes.
                if let Some(pgid) = pgid {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                finish(&shared, &group, pgid, port, readers).await;
                let lines = recent(&output);
                let exit = match status {
                    Ok(status) => describe(status),
                    Err(e) => format!("could not be waited for ({e})"),
                };
                if !was_ready && looks_like_port_race(&lines) && port_races < 5 {
                    // Lost the race for the port we picked: try another one right away.
                    port_races += 1;
                    group.update(index, |r| {
                        r.status.ready = false;
                        r.status.pid = None;
                    });
                    continue;
                }
                port_races = 0;
                let now = Instant::now();
                if now.duration_since(started) > config.crash_loop_window {
                    backoff = config.backoff_initial;
                }
                exits.push_back(now);
                while exits
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > config.crash_loop_window)
                {
                    exits.pop_front();
                }
                let error = if exits.len() >= config.crash_loop_exits {
                    GroupError {
                        kind: FailureKind::CrashLoop,
                        message: format!(
                            "process group {}: replica {index} is crash-looping: it exited {} times within {}s, last {exit}; restarting in {}s",
                            spec.name,
                            exits.len(),
                            config.crash_loop_window.as_secs(),
                            backoff.as_secs_f64()
                        ),
                        output: lines,
                    }
                } else {
                    GroupError {
                        kind: FailureKind::Exited,
                        message: format!(
                            "process group {}: replica {index} {exit}; restarting in {}s",
                            spec.name,
                            backoff.as_secs_f64()
                        ),
                        output: lines,
                    }
                };
                tracing::warn!(group = %spec.name, replica = index, "{}", error.message);
                group.update(index, |r| {
                    r.status.ready = false;
                    r.status.pid = None;
                    r.status.restarts += 1;
                });
                group.set_error(index, error);
                if !sleep_or_cancel(&group.token, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| signal.to_string());
            format!("was killed by {name}")
        }
        _ => format!("ended ({status})"),
    }
}

/// Releases what a finished process held and collects the rest of its output.
async fn finish(
    shared: &Shared,
    group: &GroupInner,
    pgid: Option<i32>,
    port: u16,
    readers: [Option<JoinHandle<()>>; 2],
) {
    if let Some(pgid) = pgid {
        lock(&group.pgids).remove(&pgid);
    }
    lock(&shared.ports).remove(&port);
    // The pipes close when the last process of the group is gone; do not wait for long if a
    // grandchild kept them open.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn terminate(child: &mut Child, pgid: Option<i32>, grace: Duration) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group.
    let _ = killpg(group, Signal::SIGKILL);
}

/// Returns false when cancelled first.
async fn sleep_or_cancel(token: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = token.cancelled() => false,
    }
}

fn log_file_name(group: &str, index: usize) -> String {
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{index}.log")
}

async fn capture(stream: impl AsyncRead + Unpin, output: Output, keep: usize, log: Option<PathBuf>) {
    let mut file = match &log {
        Some(path) => {
            match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
            {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot open the process log");
                    None
                }
            }
        }
        None => None,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut truncated = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => break,
        };
        let (chunk, end_of_line) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if let Some(f) = file.as_mut()
            && f.write_all(chunk).await.is_err()
        {
            file = None;
        }
        let room = MAX_KEPT_LINE.saturating_sub(line.len());
        truncated |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = chunk.len();
        reader.consume(consumed);
        if end_of_line {
            keep_line(&output, keep, &line, truncated);
            line.clear();
            truncated = false;
        }
    }
    if !line.is_empty() {
        keep_line(&output, keep, &line, truncated);
    }
}

/// Longest output line kept in memory for error messages (the log file gets every byte): a
/// workload printing megabytes without a newline must not grow the agent, nor its events.
const MAX_KEPT_LINE: usize = 1024;

fn keep_line(output: &Output, keep: usize, line: &[u8], truncated: bool) {
    if keep == 0 {
        return;
    }
    let mut text = String::from_utf8_lossy(line).trim_end().to_owned();
    if truncated {
        text.push_str("… [line truncated]");
    }
    let mut lines = lock(output);
    if lines.len() == keep {
        lines.pop_front();
    }
    lines.push_back(text);
}

/// Probes readiness forever, updating the replica's state.
/// When a replica that has not answered its readiness probe since `since` is worth a warning:
/// after [`Unready::AFTER`], then every [`Unready::EVERY`].
struct Unready {
    since: Instant,
    warned: Option<Instant>,
}

impl Unready {
    const AFTER: Duration = Duration::from_secs(10);
    const EVERY: Duration = Duration::from_secs(30);

    fn new(since: Instant) -> Self {
        Self { since, warned: None }
    }

    /// How long the replica has been unready, when that calls for a warning now.
    fn warn_now(&mut self, now: Instant) -> Option<Duration> {
        let unready = now.duration_since(self.since);
        let due = unready >= Self::AFTER && self.warned.is_none_or(|w| now.duration_since(w) >= Self::EVERY);
        due.then(|| {
            self.warned = Some(now);
            unready
        })
    }
}

async fn probe(
    shared: &Shared,
    group: &GroupInner,
    index: usize,
    addr: SocketAddr,
    output: &Output,
    was_ready: &mut bool,
) -> std::convert::Infallible {
    let config = &shared.config;
    let uri: http::Uri = match format!("http://{addr}{}", group.spec.readiness_path).parse() {
        Ok(uri) => uri,
        Err(_) => return std::future::pending::<std::convert::Infallible>().await,
    };
    let startup_interval = config.probe_interval.min(Duration::from_millis(100));
    let mut ready = false;
    let mut failures = 0u32;
    // The engine says only "1 of 2 … replicas are available"; the log says why.
    let mut unready = Unready::new(Instant::now());
    loop {
        let result = tokio::time::timeout(config.probe_timeout, async {
            let response = shared
                .probe
                .get(uri.clone())
                .await
                .map_err(|e| crate::error::chain(&e))?;
            let status = response.status();
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}ms", config.probe_timeout.as_millis())));
        match result {
            Ok(()) => {
                failures = 0;
                unready = Unready::new(Instant::now());
                if !ready {
                    ready = true;
                    *was_ready = true;
                    group.update(index, |r| {
                        r.status.ready = true;
                        r.error = None;
                    });
                }
            }
            Err(reason) => {
                failures += 1;
                if !ready || failures >= config.probe_failure_threshold {
                    if ready {
                        ready = false;
                        group.update(index, |r| r.status.ready = false);
                    }
                    let message = format!(
                        "process group {}: replica {index} is not ready: GET {uri}: {reason}",
                        group.spec.name
                    );
                    if let Some(since) = unready.warn_now(Instant::now()) {
                        tracing::warn!(group = %group.spec.name, replica = index, "{message} (for {}s)", since.as_secs());
                    }
                    group.set_error(
                        index,
                        GroupError {
                            kind: FailureKind::NotReady,
                            message,
                            output: recent(output),
                        },
                    );
                }
            }
        }
        tokio::time::sleep(if ready {
            config.probe_interval
        } else {
            startup_interval
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unready_replica_is_reported_after_ten_seconds_then_every_thirty() {
        let t0 = Instant::now();
        let mut u = Unready::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(u.warn_now(at(9)), None);
        assert_eq!(u.warn_now(at(10)), Some(Duration::from_secs(10)));
        assert_eq!(u.warn_now(at(11)), None);
        assert_eq!(u.warn_now(at(39)), None);
        assert_eq!(u.warn_now(at(40)), Some(Duration::from_secs(40)));
    }

    #[test]
    fn templates_expand_port_and_version() {
        assert_eq!(expand("--port={{port}}", 8080, "1.0"), "--port=8080");
        assert_eq!(expand("v{{version}}-{{version}}", 1, "6.0.1"), "v6.0.1-6.0.1");
        assert_eq!(expand("plain", 1, "x"), "plain");
    }

    #[test]
    fn workloads_inherit_only_the_allow_list() {
        let agent: Vec<(std::ffi::OsString, std::ffi::OsString)> = [
            ("PATH", "/usr/bin"),
            ("LC_TIME", "C"),
            ("TZ", "UTC"),
            ("AVIARY_SECRET_TEST_DATADOG_API_KEY", "dd"),
            ("SLACK_URL", "https://hooks.slack.com/services/T/B/X"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/key.json"),
            ("DD_API_KEY", "dd"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let spec = GroupSpec {
            name: "test/podinfo".into(),
            command: vec!["x".into()],
            env: BTreeMap::from([
                ("HOME".into(), "/srv/{{version}}".into()),
                ("DD_API_KEY".into(), "given explicitly".into()),
            ]),
            replicas: 1,
            readiness_path: "/readyz".into(),
            version: "6.0.1".into(),
        };
        let env = workload_env(agent, &spec, 9000);
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("DD_API_KEY", "given explicitly"),
                ("HOME", "/srv/6.0.1"),
                ("LC_TIME", "C"),
                ("PATH", "/usr/bin"),
                ("TZ", "UTC"),
            ]
        );
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let spec = GroupSpec {
            name: "test/podinfo-canary".into(),
            command: vec![],
            env: BTreeMap::new(),
            replicas: 1,
            readiness_path: "/readyz".into(),
            version: "1".into(),
        };
        assert_eq!(
            validate(&spec).unwrap_err().to_string(),
            "process group test/podinfo-canary: spec.command: is empty; give the program and its arguments"
        );
        let spec = GroupSpec {
            command: vec!["x".into()],
            readiness_path: "readyz".into(),
            ..spec
        };
        assert!(
            validate(&spec)
                .unwrap_err()
                .to_string()
                .contains("spec.readinessPath")
        );
    }

    #[test]
    fn crash_diagnostics() {
        assert!(looks_like_port_race(&[
            "Error: Address already in use (os error 98)".to_owned()
        ]));
        assert!(!looks_like_port_race(&["boom".to_owned()]));
        assert_eq!(
            log_file_name("test/podinfo canary", 1),
            "test_podinfo_canary-1.log"
        );
        assert!(FailureKind::CrashLoop.is_fatal() && !FailureKind::NotReady.is_fatal());
    }
}
