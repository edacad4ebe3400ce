//! A highly available fleet on one machine for the `ha_*` tests: etcd (one or three members),
//! three `aviary coordinator --etcd` processes, and `aviary agent --local` processes (each with
//! its LocalService of `aviary sample-app` processes and real HTTP traffic through its router).
//! Every process is killed when its guard drops, also when a test fails.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_testkit::aviary::{Pki, cli, start_coordinator};
use aviary_testkit::etcd::LocalEtcd;
use aviary_testkit::history;
pub use aviary_testkit::manifests::LocalCanary;
pub use aviary_testkit::net::{curl, free_port};
pub use aviary_testkit::netns::Host;
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
        Coord::start_on(&Host::loopback(), name, etcd, Some(lease_ttl))
    }

    /// [`Coord::start`] on `host`, with the default lease TTL when `lease_ttl` is `None`.
    pub fn start_on(host: &Host, name: &str, etcd: &str, lease_ttl: Option<&str>) -> Coord {
        let log = Log::default();
        let mut args = vec!["--etcd", etcd, "--heartbeat-seconds", "1", "--log-level", "info"];
        if let Some(ttl) = lease_ttl {
            args.extend(["--lease-ttl", ttl]);
        }
        let (process, url) = start_coordinator(host, BIN, &args, name, &log, every_line);
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
    host: Host,
    config_dir: PathBuf,
    _traffic: Option<Traffic>,
    /// Traffic inside a lab host's namespace (`hey`).
    _hey: Option<Process>,
}

impl Agent {
    /// Starts the cluster's agent with its config in `dir/<cluster>`; traffic starts once its
    /// service answers.
    pub fn start(dir: &Path, cluster: &str, region: &str, coordinators: &str) -> Agent {
        Agent::start_on(&Host::loopback(), dir, cluster, region, coordinators)
    }

    /// [`Agent::start`] on `host` (its admin endpoint on the host's address).
    pub fn start_on(host: &Host, dir: &Path, cluster: &str, region: &str, coordinators: &str) -> Agent {
        Agent::launch(host, dir, cluster, Some((region, coordinators)), &config)
    }

    /// An agent with the config `canary(port, "6.0.0")`, linked to `coordinators` in `region`
    /// when `link` is given (standalone otherwise).
    pub fn launch(
        host: &Host,
        dir: &Path,
        cluster: &str,
        link: Option<(&str, &str)>,
        canary: &dyn Fn(u16, &str) -> String,
    ) -> Agent {
        let base: PathBuf = dir.join(cluster);
        let config_dir = base.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        let port = free_port();
        std::fs::write(config_dir.join("podinfo.yaml"), canary(port, "6.0.0")).unwrap();
        let admin_port = free_port();
        let mut cmd = host.command(BIN);
        cmd.args(["agent", "--local"])
            .arg(&config_dir)
            .arg("--state-dir")
            .arg(base.join("state"));
        if let Some((region, coordinators)) = link {
            cmd.args([
                "--coordinator",
                coordinators,
                "--cluster",
                cluster,
                "--region",
                region,
            ])
            .args(Pki::get(BIN).agent_args(cluster));
        }
        let mut child = cmd
            .args(["--admin-listen", &format!("{}:{admin_port}", host.ip)])
            .args(["--min-analysis-interval", "1s"])
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
            admin: format!("http://{}:{admin_port}", host.ip),
            port,
            log,
            host: host.clone(),
            config_dir,
            _traffic: None,
            _hey: None,
        }
    }

    /// Replaces its config (atomically: the agent never reads half a file).
    pub fn deploy(&self, yaml: &str) {
        let tmp = self.config_dir.join(".podinfo.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.config_dir.join("podinfo.yaml")).unwrap();
    }

    /// 50 requests a second to its service (from inside its namespace on a lab host).
    pub fn start_traffic(&mut self) {
        if self.host.netns.is_none() {
            self._traffic = Some(Traffic::start(self.port, Duration::from_millis(20)));
            return;
        }
        let hey = self
            .host
            .command("hey")
            .args(["-z", "30m", "-c", "1", "-q", "50"])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hey (apt install hey)");
        self._hey = Some(Process::new(hey));
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

/// Waits (1 min each) until every agent's canary is initialized, then starts its traffic.
pub fn initialize(agents: &mut [Agent]) {
    for a in agents {
        wait_until(
            &format!("{} to initialize", a.cluster),
            Duration::from_secs(60),
            || a.canary().0 == "Initialized",
        );
        a.start_traffic();
    }
}

/// Waits (30 s) until the leader (asked through `url`) has the three clusters connected.
pub fn wait_connected(url: &str) {
    wait_until("the three clusters to connect", Duration::from_secs(30), || {
        let (_, out, _) = aviary(url, &["clusters", "-o", "json"]);
        out.matches("\"connected\": true").count() == 3
    });
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
        let loopback = [Host::loopback(), Host::loopback(), Host::loopback()];
        HaFleet::start_on(&loopback, &loopback, etcd_csv, Some(lease_ttl))
    }

    /// [`HaFleet::start`] with coordinator `i` on `coord_hosts[i]` and the agent of
    /// `CLUSTERS[i]` on `agent_hosts[i]`.
    pub fn start_on(
        coord_hosts: &[Host; 3],
        agent_hosts: &[Host; 3],
        etcd_csv: &str,
        lease_ttl: Option<&str>,
    ) -> HaFleet {
        let coords: Vec<Coord> = (0..3)
            .map(|i| Coord::start_on(&coord_hosts[i], &format!("c{i}"), etcd_csv, lease_ttl))
            .collect();
        let first = wait_leader(&coords, Duration::from_secs(20));
        let urls: Vec<String> = coords.iter().map(Coord::url).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut agents: Vec<Agent> = CLUSTERS
            .iter()
            .zip(agent_hosts)
            .map(|((c, r), h)| Agent::start_on(h, dir.path(), c, r, &urls.join(",")))
            .collect();
        initialize(&mut agents);
        wait_connected(&coords[first].url());
        HaFleet {
            coords,
            first,
            urls,
            agents,
            dir,
        }
    }

    /// Applies `yaml`, the FleetRollout `name`, with `aviary rollout apply -f` through replica
    /// `via` (through a follower, the CLI follows it to the leader).
    pub fn apply(&self, via: usize, name: &str, yaml: &str) {
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let (code, out, err) = aviary(
            &self.urls[via],
            &["rollout", "apply", "-f", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// Waits (2 min) for `podinfo-6-0-1` to succeed: [`succeeded`].
pub fn succeeded_once_each(urls: &[String]) -> serde_json::Value {
    succeeded(urls, "podinfo-6-0-1")
}

/// Waits (2 min) for rollout `name` to succeed, asked of `urls`; checks its history with the
/// shared checker and that every cluster of [`CLUSTERS`] started and succeeded exactly once;
/// returns the rollout.
pub fn succeeded(urls: &[String], name: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(
        &format!("rollout {name} to succeed"),
        Duration::from_secs(120),
        || {
            last = rollout(urls, name).unwrap_or_default();
            last["phase"] == "Succeeded"
        },
    );
    history::assert_consistent(&last, &[]);
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

/// The fence in a replica's latest "elected leader" line.
pub fn fence(c: &Coord) -> u64 {
    let lines = c.log.grep("elected leader");
    let line = lines.last().expect("an election line");
    line.split("fence=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no fence in {line:?}"))
}

/// Waits for another replica than `except` to log its election after `since`; returns it and
/// how long after `since` that was.
pub fn next_leader(coords: &[Coord], except: usize, since: Instant, limit: Duration) -> (usize, Duration) {
    let start = Instant::now();
    loop {
        for (i, c) in coords.iter().enumerate() {
            if i != except
                && let Some(t) = c.log.find("elected leader", since)
            {
                return (i, t - since);
            }
        }
        assert!(start.elapsed() < limit, "no new leader within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long after `since` every agent was connected to `c` again (printed: the agents' own
/// reconnect backoff decides it).
pub fn agents_back(c: &Coord, since: Instant) -> Duration {
    let mut last = since;
    wait_until(
        "the agents to reconnect to the new leader",
        Duration::from_secs(60),
        || {
            let times: Vec<Option<Instant>> = CLUSTERS
                .iter()
                .map(|(cluster, _)| {
                    c.log
                        .find(&format!("agent connected cluster=\"{cluster}\""), since)
                })
                .collect();
            if times.iter().all(Option::is_some) {
                last = times.into_iter().flatten().max().unwrap();
                return true;
            }
            false
        },
    );
    last - since
}

/// Waits until the cluster has been started by rollout `name` and its canary runs.
pub fn wait_running(urls: &[String], name: &str, agent: &Agent) {
    wait_until(
        &format!("{} to run", agent.cluster),
        Duration::from_secs(90),
        || {
            let started = rollout(urls, name)
                .is_some_and(|r| count(&r["history"], "cluster-started", &agent.cluster) == 1);
            let (phase, weight) = agent.canary();
            started && phase == "Progressing" && weight >= 25
        },
    );
}
