//! Shared helpers: an in-memory coordinator on a loopback port serving mutual TLS (one CA per
//! test binary, from the product's `security::certs`), simulated agents with their cluster's
//! certificate, an admin client, polling; replicas on a real etcd.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aviary_coordinator::client::{ClientTls, FleetConn, fleet_client_with};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::security::Role;
use aviary_coordinator::security::certs::{self, DEFAULT_TRUST_DOMAIN};
use aviary_coordinator::security::tls::ServerTlsFiles;
use aviary_coordinator::sim::{Outcome, SimAgent, SimCanary, SimConfig};
use aviary_coordinator::{Coordinator, CoordinatorConfig};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use aviary_testkit::etcd::LocalEtcd;

pub const NS: &str = "test";
pub const NAME: &str = "podinfo";

pub fn rev(tag: &str) -> Revision {
    Revision {
        container_images: [(
            "podinfod".to_string(),
            format!("ghcr.io/stefanprodan/podinfo:{tag}"),
        )]
        .into(),
        version: String::new(),
    }
}

/// The test binary's certificates: a CA, the serving certificate (localhost, 127.0.0.1) and
/// the `admin` user; agent certificates are issued on first use ([`agent_tls`]).
pub fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = aviary_testkit::aviary::pki_dir();
        certs::init(&dir, &[]).unwrap();
        certs::issue_user(&dir, "admin", Role::Admin, DEFAULT_TRUST_DOMAIN).unwrap();
        dir
    })
}

/// An in-memory coordinator with mutual TLS from the `aviary certs` files in `dir` (server
/// certificate, client CA) and its `tokens` file, 1 s agent heartbeats.
pub async fn tls_coordinator(dir: &std::path::Path) -> Coordinator {
    use aviary_coordinator::security::certs;
    let mut config = CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap());
    config.tls = Some(aviary_coordinator::security::tls::ServerTlsFiles {
        cert: dir.join(certs::SERVER),
        key: dir.join(certs::SERVER_KEY),
        client_ca: dir.join(certs::CA),
    });
    config.token_file = Some(dir.join("tokens"));
    config.heartbeat = Duration::from_secs(1);
    Coordinator::start(config).await.unwrap()
}

/// `config` serving mutual TLS with [`pki`]'s certificates.
pub fn secure(mut config: CoordinatorConfig) -> CoordinatorConfig {
    let dir = pki();
    config.tls = Some(ServerTlsFiles {
        cert: dir.join(certs::SERVER),
        key: dir.join(certs::SERVER_KEY),
        client_ca: dir.join(certs::CA),
    });
    config
}

/// An in-memory configuration on a free loopback port, with mutual TLS.
pub fn config() -> CoordinatorConfig {
    secure(CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap()))
}

/// The admin user's certificate.
pub fn admin() -> ClientTls {
    ClientTls::from_dir(pki(), "admin")
}

/// The agent certificate of `cluster` (issued the first time).
pub fn agent_tls(cluster: &str) -> ClientTls {
    static ISSUED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    if !issued.contains(cluster) {
        certs::issue_agent(pki(), cluster, DEFAULT_TRUST_DOMAIN).unwrap();
        issued.insert(cluster.to_string());
    }
    ClientTls::from_dir(pki(), cluster)
}

/// A Fleet client of the coordinator at `url` as admin.
pub fn fleet(url: &str) -> FleetConn {
    fleet_client_with(url, &admin()).unwrap()
}

pub async fn coordinator() -> Coordinator {
    Coordinator::start(config()).await.unwrap()
}

pub fn client(c: &Coordinator) -> FleetConn {
    fleet(&c.url())
}

pub fn agent_config(c: &Coordinator, cluster: &str, region: &str) -> SimConfig {
    let mut cfg = SimConfig::new(
        &c.url(),
        cluster,
        region,
        vec![SimCanary::new(NS, NAME, rev("6.0.0"))],
    );
    cfg.labels.insert("env".into(), "prod".into());
    cfg.tls = agent_tls(cluster);
    cfg
}

pub fn agent(c: &Coordinator, cluster: &str, region: &str) -> SimAgent {
    SimAgent::spawn(agent_config(c, cluster, region))
}

/// An agent whose analyses take `steps` ticks of 1 s (room to act while they run).
pub fn slow_agent(c: &Coordinator, cluster: &str, region: &str, steps: u32) -> SimAgent {
    let mut cfg = agent_config(c, cluster, region);
    cfg.steps = steps;
    SimAgent::spawn(cfg)
}

/// An agent whose analyses do not advance until released with `hold(NS, NAME, false)`.
pub fn held_agent(c: &Coordinator, cluster: &str, region: &str) -> SimAgent {
    let a = agent(c, cluster, region);
    a.hold(NS, NAME, true);
    a
}

pub fn failing_agent(c: &Coordinator, cluster: &str, region: &str) -> SimAgent {
    let a = agent(c, cluster, region);
    a.set_outcome(NS, NAME, Outcome::Fail);
    a
}

/// An agent whose analyses take 10 ticks of 2000 requests each, its canaries failing
/// `canary_error_rate` of them and its primaries `primary_error_rate` (the pooled evidence's
/// input; every simulated analysis itself succeeds).
pub fn judged_agent(
    c: &Coordinator,
    cluster: &str,
    region: &str,
    (canary_error_rate, primary_error_rate): (f64, f64),
) -> SimAgent {
    let mut cfg = agent_config(c, cluster, region);
    cfg.steps = 10;
    cfg.requests_per_tick = 2000;
    for k in &mut cfg.canaries {
        k.error_rates = Some((canary_error_rate, primary_error_rate));
    }
    SimAgent::spawn(cfg)
}

/// A simulated agent of [`start_fleet`]: its cluster, its region and how its analyses go.
pub struct Sim<'a> {
    cluster: &'a str,
    region: &'a str,
    runs: Runs,
}

enum Runs {
    Plain,
    Held,
    Failing,
    Slow(u32),
    Judged((f64, f64)),
}

impl<'a> Sim<'a> {
    /// An [`agent`] (its analyses succeed).
    pub fn plain(cluster: &'a str, region: &'a str) -> Self {
        Sim {
            cluster,
            region,
            runs: Runs::Plain,
        }
    }

    /// A [`held_agent`].
    pub fn held(cluster: &'a str, region: &'a str) -> Self {
        Sim {
            cluster,
            region,
            runs: Runs::Held,
        }
    }

    /// A [`failing_agent`].
    pub fn failing(cluster: &'a str, region: &'a str) -> Self {
        Sim {
            cluster,
            region,
            runs: Runs::Failing,
        }
    }

    /// A [`slow_agent`] of `steps` ticks.
    pub fn slow(cluster: &'a str, region: &'a str, steps: u32) -> Self {
        Sim {
            cluster,
            region,
            runs: Runs::Slow(steps),
        }
    }

    /// A [`judged_agent`] with these (canary, primary) error rates.
    pub fn judged(cluster: &'a str, region: &'a str, error_rates: (f64, f64)) -> Self {
        Sim {
            cluster,
            region,
            runs: Runs::Judged(error_rates),
        }
    }

    fn spawn(&self, c: &Coordinator) -> SimAgent {
        let (cluster, region) = (self.cluster, self.region);
        match self.runs {
            Runs::Plain => agent(c, cluster, region),
            Runs::Held => held_agent(c, cluster, region),
            Runs::Failing => failing_agent(c, cluster, region),
            Runs::Slow(steps) => slow_agent(c, cluster, region, steps),
            Runs::Judged(rates) => judged_agent(c, cluster, region, rates),
        }
    }
}

/// An in-memory coordinator with `agents` started and connected to it.
pub async fn start_fleet<const N: usize>(agents: [Sim<'_>; N]) -> (Coordinator, [SimAgent; N]) {
    let c = coordinator().await;
    let agents = agents.map(|a| a.spawn(&c));
    wait_connected(&c, N).await;
    (c, agents)
}

/// The image of `podinfod` in the primary of `agent`'s test/podinfo.
pub fn primary_image(agent: &SimAgent) -> String {
    let snap = agent.snapshot(NS, NAME).unwrap();
    snap.primary_revision.unwrap().container_images["podinfod"].clone()
}

/// Polls `f` every 50 ms (tokio time: instant on a paused clock) for up to `limit` of it.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` clusters are registered and connected.
pub async fn wait_connected(c: &Coordinator, n: usize) {
    let mut cl = client(c);
    eventually("agents to connect", Duration::from_secs(30), || {
        let mut cl = cl.clone();
        async move {
            let list = cl
                .list_clusters(v1::ListClustersRequest {})
                .await
                .ok()?
                .into_inner();
            (list.clusters.iter().filter(|c| c.connected).count() >= n).then_some(())
        }
    })
    .await;
    let _ = &mut cl;
}

pub async fn create(c: &Coordinator, manifest: &str) -> Result<v1::Rollout, tonic::Status> {
    client(c)
        .create_rollout(v1::CreateRolloutRequest {
            manifest: manifest.into(),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn get(c: &Coordinator, name: &str) -> v1::Rollout {
    client(c)
        .get_rollout(v1::GetRolloutRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Blocks on WaitRollout.
pub async fn wait(c: &Coordinator, name: &str) -> v1::Rollout {
    client(c)
        .wait_rollout(v1::WaitRolloutRequest {
            name: name.into(),
            timeout_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
}

/// ListRollouts (its first page) of `c`, and the names of the rollouts listed, in order.
pub async fn list_rollouts(c: &Coordinator) -> (v1::ListRolloutsResponse, Vec<String>) {
    let list = client(c)
        .list_rollouts(v1::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names = list.rollouts.iter().map(|r| r.name.clone()).collect();
    (list, names)
}

/// Waits for rollout `name` to end (WaitRollout); asserts that it ended `phase`, showing its
/// message and clusters when not.
pub async fn ended(c: &Coordinator, name: &str, phase: &str) -> v1::Rollout {
    let done = wait(c, name).await;
    let clusters: Vec<_> = done.waves.iter().flat_map(|w| &w.clusters).collect();
    assert_eq!(done.phase, phase, "{} {clusters:?}", done.message);
    done
}

/// Polls GetRollout until `pred` holds (one connection; panics with the last state).
pub async fn until(
    c: &Coordinator,
    name: &str,
    what: &str,
    pred: impl Fn(&v1::Rollout) -> bool,
) -> v1::Rollout {
    let mut cl = client(c);
    let start = tokio::time::Instant::now();
    loop {
        let r = cl
            .get_rollout(v1::GetRolloutRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        if pred(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "timed out waiting for {what}: {} {} {:?}",
            r.phase,
            r.message,
            r.waves
                .iter()
                .flat_map(|w| &w.clusters)
                .map(|c| (&c.cluster, &c.phase, &c.verdict))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that a call was refused with `code` and a message containing `text` (any message
/// when empty); returns the status.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    answer: Result<T, tonic::Status>,
    code: tonic::Code,
    text: &str,
) -> tonic::Status {
    let e = match answer {
        Ok(answer) => panic!("expected {code:?} ({text}), got {answer:?}"),
        Err(e) => e,
    };
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(text), "{}", e.message());
    e
}

/// A verb on wave `wave` of rollout `r1` by `actor`.
pub fn wave_verb(wave: &str, actor: &str) -> v1::WaveVerbRequest {
    v1::WaveVerbRequest {
        name: "r1".into(),
        wave: wave.into(),
        actor: actor.into(),
    }
}

/// A verb on `cluster` of rollout `r1` by `actor`.
pub fn cluster_verb(cluster: &str, actor: &str) -> v1::ClusterVerbRequest {
    v1::ClusterVerbRequest {
        name: "r1".into(),
        cluster: cluster.into(),
        actor: actor.into(),
    }
}

/// A verb on rollout `name` by `actor`, for `reason`.
pub fn rollout_verb(name: &str, actor: &str, reason: &str) -> v1::RolloutVerbRequest {
    v1::RolloutVerbRequest {
        name: name.into(),
        actor: actor.into(),
        reason: reason.into(),
    }
}

/// Creates the rollout `r1` of [`manifest`] with `spec_tail`.
pub async fn create_r1(c: &Coordinator, spec_tail: &str) -> v1::Rollout {
    create(c, &manifest("r1", spec_tail)).await.unwrap()
}

/// Waits until `cluster` of `r1` is Progressing (its analysis runs).
pub async fn until_progressing(c: &Coordinator, cluster_name: &str) -> v1::Rollout {
    let what = format!("{cluster_name} to progress");
    until(c, "r1", &what, |r| {
        cluster(r, cluster_name).phase == "Progressing"
    })
    .await
}

/// Waits until the first wave of `name` bakes.
pub async fn until_baking(c: &Coordinator, name: &str) -> v1::Rollout {
    until(c, name, "the first wave to bake", |r| {
        r.waves[0].phase == "Baking"
    })
    .await
}

/// The first history record of `kind` (in `wave`, unless empty).
pub fn record<'a>(r: &'a v1::Rollout, kind: &str, wave: &str) -> &'a v1::HistoryEntry {
    r.history
        .iter()
        .find(|h| h.kind == kind && (wave.is_empty() || h.wave == wave))
        .unwrap_or_else(|| panic!("no {kind} record in {:?}", r.history))
}

pub fn cluster<'a>(r: &'a v1::Rollout, name: &str) -> &'a v1::ClusterStatus {
    r.waves
        .iter()
        .flat_map(|w| w.clusters.iter())
        .find(|c| c.cluster == name)
        .unwrap_or_else(|| panic!("cluster {name} not in rollout"))
}

pub fn phases(r: &v1::Rollout) -> Vec<(String, String)> {
    r.waves
        .iter()
        .flat_map(|w| w.clusters.iter())
        .map(|c| (c.cluster.clone(), c.phase.clone()))
        .collect()
}

pub fn history_kinds(r: &v1::Rollout, cluster: &str) -> Vec<String> {
    r.history
        .iter()
        .filter(|h| h.cluster == cluster)
        .map(|h| h.kind.clone())
        .collect()
}

/// A push-mode rollout of test/podinfo to 6.0.1. A paused clock can jump far while sockets
/// are busy, so the cluster deadline is a day unless the test sets one.
pub fn manifest(name: &str, spec_tail: &str) -> String {
    let deadline = if spec_tail.contains("clusterDeadline") {
        ""
    } else {
        "  clusterDeadline: 24h\n"
    };
    format!(
        "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata:
  name: {name}
spec:
  canary: {{namespace: test, name: podinfo}}
  revision:
    containerImages: {{podinfod: ghcr.io/stefanprodan/podinfo:6.0.1}}
{spec_tail}{deadline}"
    )
}

/// Polls the async condition `done` every 50 ms until it holds; panics after `limit` (real
/// time: for tests against real processes such as etcd), naming `what`.
pub async fn poll<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, limit: Duration, done: F) {
    tokio::time::timeout(limit, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"));
}

/// A simulated agent of `cluster` in `region` at `url` with its certificate, running
/// `podinfo:6.0.0` (the image the etcd tests roll out from).
pub fn sim_config(url: &str, cluster: &str, region: &str) -> SimConfig {
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let mut cfg = SimConfig::new(url, cluster, region, vec![SimCanary::new(NS, NAME, rev)]);
    cfg.tls = agent_tls(cluster);
    cfg
}

/// A one-member etcd for `test`, or `None` (the test skips) without an etcd binary.
pub async fn start_etcd(test: &str) -> Option<LocalEtcd> {
    let bin = LocalEtcd::binary_or_skip(test)?;
    Some(
        tokio::task::spawn_blocking(move || LocalEtcd::start(&bin, 1))
            .await
            .unwrap()
            .unwrap(),
    )
}

/// A coordinator replica on `etcd` (its store and its election, 1 s heartbeats, mutual TLS),
/// with a lease of `lease_ttl` when given.
pub async fn etcd_replica(
    etcd: &LocalEtcd,
    lease_ttl: Option<Duration>,
) -> (Coordinator, Arc<EtcdLeadership>) {
    let mut cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    if let Some(ttl) = lease_ttl {
        cfg.lease_ttl = ttl;
    }
    let leadership = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    let mut config = config();
    config.heartbeat = Duration::from_secs(1);
    config.store = Arc::new(EtcdStore::new(&cfg, &leadership));
    config.leadership = leadership.clone();
    (Coordinator::start(config).await.unwrap(), leadership)
}
