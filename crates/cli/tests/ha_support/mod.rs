//! A highly available fleet on one machine for the `ha_*` tests: etcd (one or three members),
//! three `aviary coordinator --etcd` processes, and `aviary agent --local` processes (each with
//! its LocalService of `aviary sample-app` processes and real HTTP traffic through its router).
//! Every process is killed when its guard drops, also when a test fails.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_testkit::aviary::{Pki, cli, start_coordinator};
use aviary_testkit::etcd::LocalEtcd;
pub use aviary_testkit::manifests::LocalCanary;
pub use aviary_testkit::net::{curl, free_port};
use aviary_testkit::process::{Log, Process, every_line};
use aviary_testkit::traffic::Traffic;
pub use aviary_testkit::wait::wait_until;

pub const BIN: &str = env!("CARGO_BIN_EXE_aviary");

/// etcd for a test, or `None` after a skip notice (a panic under `CI=true`).
pub fn etcd(test: &str, members: usize) -> Option<LocalEtcd> {
    let bin = LocalEtcd::binary_or_skip(test)?;
    Some(LocalEtcd::start(&bin, members).expect("start etcd"))
}

/// One `aviary coordinator --etcd` process.
pub struct Coord {
    pub name: String,
    process: Process,
    url: String,
    pub log: Log,
}

impl Coord {
    /// Starts a replica on a free port of 127.0.0.1 with 1 s agent heartbeats.
    pub fn start(name: &str, etcd: &str, lease_ttl: &str) -> Coord {
        let log = Log::default();
        let args = [
            "--etcd",
            etcd,
            "--lease-ttl",
            lease_ttl,
            "--heartbeat-seconds",
            "1",
            "--log-level",
            "info",
        ];
        let (process, url) = start_coordinator(BIN, &args, name, &log, every_line);
        Coord {
            name: name.into(),
            process,
            url,
            log,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Whether it leads now (by its log: elected, and not stepped down or resigned since).
    pub fn leads(&self) -> bool {
        for l in self.log.lines().iter().rev() {
            if l.contains("elected leader") {
                return true;
            }
            if l.contains("stepping down") || l.contains("resigned the leadership") {
                return false;
            }
        }
        false
    }
}

/// The process's signals (kill9, term, pause, resume, wait_exit).
impl std::ops::Deref for Coord {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Coord {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
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
    LocalCanary {
        progress_deadline_seconds: Some(120),
        ..LocalCanary::sample_app(BIN, port, version)
    }
    .yaml()
}

/// One `aviary agent --local` process (a cluster); SIGTERM on drop, so it stops its
/// sample-app processes.
pub struct Agent {
    pub cluster: String,
    _process: Process,
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
            .args(Pki::get(BIN).agent_args(cluster))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aviary agent");
        let log = Log::default();
        log.capture(cluster, child.stderr.take().unwrap(), every_line);
        Agent {
            cluster: cluster.into(),
            _process: Process::new(child).graceful(Duration::from_secs(10)),
            admin: format!("http://127.0.0.1:{admin_port}"),
            port,
            log,
            _traffic: None,
        }
    }

    pub fn start_traffic(&mut self) {
        self._traffic = Some(Traffic::start(self.port, Duration::from_millis(20)));
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

/// Runs `aviary ARGS` against `url`; (exit code, stdout, stderr).
pub fn aviary(url: &str, args: &[&str]) -> (i32, String, String) {
    cli(BIN, url, "ha-test", args)
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

/// The rollout of the HA tests: 6.0.1 region by region.
pub const ROLLOUT: &str = "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: podinfo-6-0-1}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {version: 6.0.1}
  byRegion: [us-east-1, eu-west-1]
  clusterDeadline: 10m
";

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

/// The terms (fences) of every stored write of rollout `name`, oldest first, read from etcd at
/// `csv`; they never go back (no deposed leader wrote after its successor).
pub fn rollout_write_terms(rt: &tokio::runtime::Runtime, csv: &str, name: &str) -> Vec<u64> {
    let writes = rt.block_on(async {
        let cfg = EtcdConfig::new(csv).unwrap();
        let reader = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
        EtcdStore::new(&cfg, &reader).rollout_writes(name).await.unwrap()
    });
    let fences: Vec<u64> = writes.iter().map(|w| w.fence).collect();
    println!("rollout writes by term: {fences:?}");
    assert!(
        fences.windows(2).all(|w| w[0] <= w[1]),
        "terms went back: {fences:?}"
    );
    fences
}
