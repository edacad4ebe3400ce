//! A highly available fleet on one machine for the `ha_*` tests: etcd (one or three members),
//! three `aviary coordinator --etcd` processes, and `aviary agent --local` processes (each with
//! its LocalService of `aviary sample-app` processes and real HTTP traffic through its router).
//! Every process is killed when its guard drops, also when a test fails.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aviary_testkit::etcd::LocalEtcd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::sync::Mutex;

pub const BIN: &str = env!("CARGO_BIN_EXE_aviary");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd for a test, or `None` after a skip notice (a panic under `CI=true`).
pub fn etcd(test: &str, members: usize) -> Option<LocalEtcd> {
    let bin = LocalEtcd::binary_or_skip(test)?;
    Some(LocalEtcd::start(&bin, members).expect("start etcd"))
}

fn signal(pid: u32, s: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), s);
}

/// Lines a child wrote to stderr, with when they arrived.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    fn capture(&self, prefix: String, stream: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[{prefix}] {line}");
                lines.lock().unwrap().push((Instant::now(), line));
            }
        });
    }

    /// When the first line containing `pattern` arrived at or after `since`.
    pub fn find(&self, pattern: &str, since: Instant) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(t, l)| *t >= since && l.contains(pattern))
            .map(|(t, _)| *t)
    }

    /// Every line containing `pattern`.
    pub fn grep(&self, pattern: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(pattern))
            .map(|(_, l)| l.clone())
            .collect()
    }
}

/// One `aviary coordinator --etcd` process.
pub struct Coord {
    pub name: String,
    child: Child,
    pub addr: String,
    pub log: Log,
    stopped: bool,
}

impl Coord {
    /// Starts a replica on a free port of 127.0.0.1 with 1 s agent heartbeats.
    pub fn start(name: &str, etcd: &str, lease_ttl: &str) -> Coord {
        let mut child = Command::new(BIN)
            .args(["coordinator", "--listen", "127.0.0.1:0", "--etcd", etcd])
            .args([
                "--lease-ttl",
                lease_ttl,
                "--heartbeat-seconds",
                "1",
                "--log-level",
                "info",
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aviary coordinator");
        let log = Log::default();
        log.capture(name.to_string(), child.stderr.take().unwrap());
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("aviary coordinator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Coord {
            name: name.into(),
            child,
            addr,
            log,
            stopped: false,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it leads now (by its log: elected, and not stepped down or resigned since).
    pub fn leads(&self) -> bool {
        let lines = self.log.0.lock().unwrap();
        for (_, l) in lines.iter().rev() {
            if l.contains("elected leader") {
                return true;
            }
            if l.contains("stepping down") || l.contains("resigned the leadership") {
                return false;
            }
        }
        false
    }

    pub fn kill9(&mut self) {
        signal(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn term(&self) {
        signal(self.pid(), Signal::SIGTERM);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pause(&mut self) {
        signal(self.pid(), Signal::SIGSTOP);
        self.stopped = true;
    }

    pub fn resume(&mut self) {
        signal(self.pid(), Signal::SIGCONT);
        self.stopped = false;
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        if self.stopped {
            signal(self.pid(), Signal::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leader among `coords` (the one whose log says it leads).
pub fn leader(coords: &[Coord]) -> Option<usize> {
    let leading: Vec<usize> = (0..coords.len()).filter(|&i| coords[i].leads()).collect();
    match leading.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Waits until exactly one of `coords` leads.
pub fn wait_leader(coords: &[Coord], limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        if let Some(i) = leader(coords) {
            return i;
        }
        assert!(start.elapsed() < limit, "no single leader after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The LocalService + Canary of one cluster: analysis every 1 s, two steps (25%, 50%).
pub fn config(port: u16, version: &str) -> String {
    format!(
        r#"apiVersion: aviary.dev/v1alpha1
kind: LocalService
metadata: {{name: podinfo, namespace: test}}
spec:
  port: {port}
  version: {version}
  replicas: 1
  command: ["{bin}", sample-app, --port, "{{{{port}}}}", --version, "{{{{version}}}}"]
  readinessPath: /readyz
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  provider: local
  targetRef: {{apiVersion: aviary.dev/v1alpha1, kind: LocalService, name: podinfo}}
  progressDeadlineSeconds: 120
  analysis:
    interval: 1s
    threshold: 5
    maxWeight: 50
    stepWeight: 25
    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: 5s
    - name: request-duration
      thresholdRange: {{max: 500}}
      interval: 5s
"#,
        bin = BIN
    )
}

/// Steady HTTP traffic to a router port, so the built-in metrics are real.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::new();
                while !s.load(Ordering::Relaxed) {
                    if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/")).send().await
                        && r.status().is_success()
                    {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        });
        Self {
            stop,
            ok,
            handle: Some(handle),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One `aviary agent --local` process (a cluster).
pub struct Agent {
    pub cluster: String,
    child: Child,
    pub admin: String,
    pub port: u16,
    pub log: Log,
    _traffic: Option<Traffic>,
}

impl Agent {
    /// Starts the cluster's agent with its config in `dir/<cluster>`; traffic starts once its
    /// service answers.
    pub fn start(dir: &Path, cluster: &str, region: &str, coordinators: &str) -> Agent {
        let base: PathBuf = dir.join(cluster);
        let config_dir = base.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        let port = free_port();
        std::fs::write(config_dir.join("podinfo.yaml"), config(port, "6.0.0")).unwrap();
        let admin_port = free_port();
        let mut child = Command::new(BIN)
            .args(["agent", "--local"])
            .arg(&config_dir)
            .arg("--state-dir")
            .arg(base.join("state"))
            .args([
                "--coordinator",
                coordinators,
                "--cluster",
                cluster,
                "--region",
                region,
            ])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--min-analysis-interval", "1s"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aviary agent");
        let log = Log::default();
        log.capture(cluster.to_string(), child.stderr.take().unwrap());
        Agent {
            cluster: cluster.into(),
            child,
            admin: format!("http://127.0.0.1:{admin_port}"),
            port,
            log,
            _traffic: None,
        }
    }

    pub fn start_traffic(&mut self) {
        self._traffic = Some(Traffic::start(self.port));
    }

    /// The canary's (phase, weight) from the admin endpoint.
    pub fn canary(&self) -> (String, i64) {
        let Some(body) = curl(&format!("{}/canaries", self.admin)) else {
            return Default::default();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let c = &v["items"][0]["status"];
        (
            c["phase"].as_str().unwrap_or_default().to_string(),
            c["canaryWeight"].as_i64().unwrap_or(0),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM: the agent stops its sample-app processes; then make sure it is gone.
        signal(self.child.id(), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `aviary ARGS` against `url`; (exit code, stdout, stderr).
pub fn aviary(url: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .env("AVIARY_COORDINATOR", url)
        .env("USER", "ha-test")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `aviary rollout get NAME -o json` against the first replica that answers.
pub fn rollout(urls: &[String], name: &str) -> Option<serde_json::Value> {
    for url in urls {
        let (code, out, _) = aviary(url, &["rollout", "get", name, "-o", "json"]);
        if code == 0
            && let Ok(v) = serde_json::from_str(&out)
        {
            return Some(v);
        }
    }
    None
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// How often each cluster appears in a `kind` history record.
pub fn count(history: &serde_json::Value, kind: &str, cluster: &str) -> usize {
    history
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| e["kind"] == kind && e["cluster"] == cluster)
                .count()
        })
        .unwrap_or(0)
}

/// The cluster's phase in a rendered rollout.
pub fn cluster_phase(r: &serde_json::Value, cluster: &str) -> String {
    r["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["clusters"].as_array().into_iter().flatten())
        .find(|c| c["cluster"] == cluster)
        .and_then(|c| c["phase"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The clusters of the HA tests: two in us-east-1, one in eu-west-1.
pub const CLUSTERS: [(&str, &str); 3] = [
    ("us-1", "us-east-1"),
    ("us-2", "us-east-1"),
    ("eu-1", "eu-west-1"),
];

/// Three coordinators on `etcd_csv` and one local agent per cluster of [`CLUSTERS`], every
/// canary initialized and under traffic, every cluster connected to the leader.
pub struct HaFleet {
    pub coords: Vec<Coord>,
    /// The replica that led first.
    pub first: usize,
    pub urls: Vec<String>,
    pub agents: Vec<Agent>,
    pub dir: tempfile::TempDir,
}

impl HaFleet {
    pub fn start(etcd_csv: &str, lease_ttl: &str) -> HaFleet {
        let coords: Vec<Coord> = (0..3)
            .map(|i| Coord::start(&format!("c{i}"), etcd_csv, lease_ttl))
            .collect();
        let first = wait_leader(&coords, Duration::from_secs(20));
        let urls: Vec<String> = coords.iter().map(Coord::url).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut agents: Vec<Agent> = CLUSTERS
            .iter()
            .map(|(c, r)| Agent::start(dir.path(), c, r, &urls.join(",")))
            .collect();
        for a in &mut agents {
            wait_until(
                &format!("{} to initialize", a.cluster),
                Duration::from_secs(60),
                || a.canary().0 == "Initialized",
            );
            a.start_traffic();
        }
        wait_until("the three clusters to connect", Duration::from_secs(30), || {
            let (_, out, _) = aviary(&coords[first].url(), &["clusters", "-o", "json"]);
            out.matches("\"connected\": true").count() == 3
        });
        HaFleet {
            coords,
            first,
            urls,
            agents,
            dir,
        }
    }
}

/// Waits (2 min) for `podinfo-6-0-1` to succeed, asked of `urls`; checks that its history shows
/// every cluster of [`CLUSTERS`] started and succeeded exactly once; returns the rollout.
pub fn succeeded_once_each(urls: &[String]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until("the rollout to succeed", Duration::from_secs(120), || {
        last = rollout(urls, "podinfo-6-0-1").unwrap_or_default();
        last["phase"] == "Succeeded"
    });
    for (c, _) in CLUSTERS {
        for kind in ["cluster-started", "cluster-succeeded"] {
            assert_eq!(
                count(&last["history"], kind, c),
                1,
                "{c} {kind}: {}",
                last["history"]
            );
        }
    }
    last
}
