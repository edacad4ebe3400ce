//! Failover benchmark: leader kills at random moments of running rollouts.
//!
//! `scripts/bench-failover` (or `cargo bench -p aviary-coordinator --bench failover -- [flags]`).
//! A local etcd (`/usr/bin/etcd`, one member by default), three coordinator replicas as child
//! processes (this binary with `--serve`: the same `Coordinator` + `EtcdStore` +
//! `EtcdLeadership` as `aviary coordinator --etcd`) on fixed loopback ports, and simulated
//! clusters in this process: each speaks AgentLink over gRPC, knows the three replica URLs,
//! follows `aviary-leader`, retries every 100 ms, acks `StartRevision` and reports the canary
//! `Succeeded` after `--analysis-ms`. Rollouts run back to back (two waves by region,
//! `maxConcurrent: 2`). `--kills` times, at a random moment (0.5 to 2.5 s after the previous
//! failover settled), the leader gets SIGKILL; the killed replica is started again on its port.
//!
//! Measured per kill: until another replica logs its election (takeover), and until a cluster
//! receives the next command from the new leader. At the end every rollout must have succeeded
//! with exactly the expected history (one `cluster-started` and one `cluster-succeeded` per
//! cluster, one `wave-started`/`wave-succeeded` per wave, one `rollout-succeeded`), every
//! cluster must have received exactly one distinct start command per rollout, and the terms in
//! each rollout's etcd write history must never go back. Anything else counts as a lost or
//! duplicated transition.
//!
//! Flags: `--kills 20 --lease-ttl 3 --clusters 16 --analysis-ms 400 --etcd-members 1 --seed N`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_coordinator::client::{agent_link_client, call_leader, leader_from_status};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::sim::fingerprint;
use aviary_coordinator::{Coordinator, CoordinatorConfig};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use aviary_proto::v1::agent_message::Msg as Up;
use aviary_proto::v1::coordinator_message::Msg as Down;
use aviary_testkit::bench::{flag, text_flag};
use aviary_testkit::etcd::LocalEtcd;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve(&args);
        return;
    }
    let Some(bin) = LocalEtcd::binary_or_skip("failover benchmark") else {
        return;
    };
    let opts = Opts {
        kills: flag(&args, "--kills", 20) as usize,
        lease_ttl: flag(&args, "--lease-ttl", 3),
        clusters: flag(&args, "--clusters", 16) as usize,
        analysis: Duration::from_millis(flag(&args, "--analysis-ms", 400)),
        members: flag(&args, "--etcd-members", 1) as usize,
        seed: flag(&args, "--seed", rand::random::<u32>() as u64),
    };
    let etcd = LocalEtcd::start(&bin, opts.members).expect("start etcd");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(opts, etcd));
}

struct Opts {
    kills: usize,
    lease_ttl: u64,
    clusters: usize,
    analysis: Duration,
    members: usize,
    seed: u64,
}

/// Child: one replica on etcd; prints its address; stops on SIGTERM.
fn serve(args: &[String]) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let listen = text_flag(args, "--listen").expect("--listen");
    let endpoints = text_flag(args, "--etcd").expect("--etcd");
    let ttl = flag(args, "--lease-ttl", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = EtcdConfig::new(&endpoints).unwrap();
        cfg.lease_ttl = Duration::from_secs(ttl);
        let leadership = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
        let store = Arc::new(EtcdStore::new(&cfg, &leadership));
        let mut config = CoordinatorConfig::in_memory(listen.parse().unwrap());
        config.heartbeat = Duration::from_secs(1);
        config.store = store;
        config.leadership = leadership;
        let c = Coordinator::start(config).await.unwrap();
        println!("{}", c.local_addr());
        c.run_until_signal().await.unwrap();
    });
}

/// A replica process and what it logged (with arrival times).
struct Replica {
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Replica {
    fn start(port: u16, etcd: &str, ttl: u64) -> Replica {
        let mut r = Replica {
            port,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        r.spawn(etcd, ttl);
        r
    }

    fn spawn(&mut self, etcd: &str, ttl: u64) {
        // A new process: its own log (the old one's "elected leader" is history).
        self.log = Arc::new(Mutex::new(Vec::new()));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--etcd",
                etcd,
            ])
            .args(["--lease-ttl", &ttl.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a replica");
        let log = self.log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BENCH_VERBOSE").is_some() {
                    eprintln!("{line}");
                }
                log.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "the replica did not start");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn leads(&self) -> bool {
        for (_, l) in self.log.lock().unwrap().iter().rev() {
            if l.contains("elected leader") {
                return true;
            }
            if l.contains("stepping down") || l.contains("resigned the leadership") {
                return false;
            }
        }
        false
    }

    fn elected_after(&self, t: Instant) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(at, l)| *at >= t && l.contains("elected leader"))
            .map(|(at, _)| *at)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Commands received by the simulated clusters: (when, cluster, command id).
type Received = Arc<Mutex<Vec<(Instant, String, String)>>>;

struct Canary {
    target: Revision,
    snap: v1::CanarySnapshot,
    done_at: Option<tokio::time::Instant>,
}

fn revision(version: &str) -> Revision {
    Revision {
        container_images: BTreeMap::new(),
        version: version.into(),
    }
}

fn proto_rev(r: &Revision) -> v1::Revision {
    v1::Revision {
        container_images: r.container_images.clone(),
        version: r.version.clone(),
    }
}

/// One simulated cluster: connects to the replicas in turn, follows the leader.
async fn cluster(name: String, region: String, urls: Vec<String>, analysis: Duration, received: Received) {
    let initial = revision("0");
    let fp = fingerprint(&initial);
    let mut canary = Canary {
        target: initial.clone(),
        snap: v1::CanarySnapshot {
            namespace: "test".into(),
            name: "podinfo".into(),
            target_kind: "LocalService".into(),
            target_name: "podinfo".into(),
            phase: "Succeeded".into(),
            last_applied_spec: fp.clone(),
            last_promoted_spec: fp,
            target_revision: Some(proto_rev(&initial)),
            primary_revision: Some(proto_rev(&initial)),
            primary_success_rate: Some(100.0),
            ..Default::default()
        },
        done_at: None,
    };
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    loop {
        let url = hint.take().unwrap_or_else(|| {
            next += 1;
            urls[next % urls.len()].clone()
        });
        let Ok(mut client) = agent_link_client(&url) else {
            continue;
        };
        let (tx, rx) = mpsc::channel(256);
        let hello = v1::AgentMessage {
            msg: Some(Up::Hello(v1::Hello {
                cluster: name.clone(),
                region: region.clone(),
                labels: BTreeMap::new(),
                agent_version: "bench".into(),
                canaries: vec![canary.snap.clone()],
            })),
        };
        let _ = tx.try_send(hello);
        let mut inbound =
            match tokio::time::timeout(Duration::from_secs(2), client.connect(ReceiverStream::new(rx))).await
            {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    if let Some(l) = leader_from_status(&status) {
                        hint = Some(format!("http://{l}"));
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => continue,
            };
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            let done = canary.done_at;
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        for reply in handle(&name, &mut canary, m, analysis, &received) {
                            let _ = tx.try_send(reply);
                        }
                    }
                    _ => break,
                },
                _ = beat.tick() => {
                    let _ = tx.try_send(v1::AgentMessage { msg: Some(Up::Heartbeat(v1::Heartbeat { time: None })) });
                }
                _ = async { tokio::time::sleep_until(done.unwrap()).await }, if done.is_some() => {
                    canary.done_at = None;
                    let fp = fingerprint(&canary.target);
                    canary.snap.phase = "Succeeded".into();
                    canary.snap.canary_weight = 0;
                    canary.snap.last_promoted_spec = fp;
                    canary.snap.primary_revision = Some(proto_rev(&canary.target));
                    let _ = tx.try_send(v1::AgentMessage {
                        msg: Some(Up::Status(v1::CanaryUpdate { canary: Some(canary.snap.clone()), canaries: Vec::new() })),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn handle(
    name: &str,
    canary: &mut Canary,
    m: v1::CoordinatorMessage,
    analysis: Duration,
    received: &Received,
) -> Vec<v1::AgentMessage> {
    let ack = |id: String, fp: String, snap: v1::CanarySnapshot| v1::AgentMessage {
        msg: Some(Up::Ack(v1::Ack {
            command_id: id,
            ok: true,
            message: String::new(),
            fingerprint: fp,
            canary: Some(snap),
        })),
    };
    let record = |id: &str| {
        received
            .lock()
            .unwrap()
            .push((Instant::now(), name.to_string(), id.to_string()))
    };
    match m.msg {
        Some(Down::StartRevision(s)) => {
            record(&s.command_id);
            let rev = revision(&s.revision.unwrap_or_default().version);
            let fp = fingerprint(&rev);
            if canary.target != rev {
                canary.target = rev.clone();
                canary.snap.target_revision = Some(proto_rev(&rev));
                canary.snap.phase = "Progressing".into();
                canary.snap.canary_weight = 25;
                canary.snap.last_applied_spec = fp.clone();
                canary.snap.rollout = s.rollout.clone();
                canary.done_at = Some(tokio::time::Instant::now() + analysis);
            }
            vec![ack(s.command_id, fp, canary.snap.clone())]
        }
        Some(
            Down::Revert(v1::Revert { command_id, .. })
            | Down::Rollback(v1::RollbackCanary { command_id, .. }),
        ) => {
            record(&command_id);
            vec![ack(command_id, String::new(), canary.snap.clone())]
        }
        Some(Down::GateDecision(_)) | Some(Down::Welcome(_)) | Some(Down::Heartbeat(_)) | None => Vec::new(),
    }
}

fn manifest(n: usize) -> String {
    format!(
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: r{n}}}\nspec:\n  \
         canary: {{namespace: test, name: podinfo}}\n  revision: {{version: \"{n}\"}}\n  \
         byRegion: [us-east-1, eu-west-1]\n  waveDefaults: {{maxConcurrent: 2}}\n  clusterDeadline: 30m\n"
    )
}

async fn rollout_phase(urls: &[String], name: &str) -> Option<v1::Rollout> {
    for u in urls {
        let name = name.to_string();
        let r = call_leader(u, |mut c| {
            let name = name.clone();
            async move { c.get_rollout(v1::GetRolloutRequest { name }).await }
        })
        .await;
        if let Ok(r) = r {
            return Some(r.into_inner());
        }
    }
    None
}

/// Keeps a rollout running: creates r1, r2, … one after the other.
async fn drive(urls: Vec<String>, current: Arc<Mutex<usize>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut n = 1usize;
    loop {
        // Create r{n} (retried through failovers; AlreadyExists means an earlier try went in).
        loop {
            let mut created = false;
            for u in &urls {
                let req = v1::CreateRolloutRequest {
                    manifest: manifest(n),
                    actor: "bench".into(),
                    ..Default::default()
                };
                match call_leader(u, |mut c| {
                    let req = req.clone();
                    async move { c.create_rollout(req).await }
                })
                .await
                {
                    Ok(_) => created = true,
                    Err(s) if s.code() == tonic::Code::AlreadyExists => created = true,
                    Err(_) => {}
                }
                if created {
                    break;
                }
            }
            if created {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        *current.lock().unwrap() = n;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(r) = rollout_phase(&urls, &format!("r{n}")).await
                && r.phase == "Succeeded"
            {
                break;
            }
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        n += 1;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn run(o: Opts, etcd: LocalEtcd) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let csv = etcd.endpoints_csv();
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut replicas: Vec<Replica> = ports
        .iter()
        .map(|p| Replica::start(*p, &csv, o.lease_ttl))
        .collect();
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    eprintln!(
        "failover benchmark: etcd {} member(s), 3 replicas (lease TTL {} s), {} clusters, analysis {:?}, {} kills, seed {}",
        o.members, o.lease_ttl, o.clusters, o.analysis, o.kills, o.seed
    );
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    for i in 0..o.clusters {
        let (name, region) = if i % 2 == 0 {
            (format!("us-{}", i / 2), "us-east-1")
        } else {
            (format!("eu-{}", i / 2), "eu-west-1")
        };
        tokio::spawn(cluster(
            name,
            region.into(),
            urls.clone(),
            o.analysis,
            received.clone(),
        ));
    }
    // Wait until the leader sees every cluster.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "clusters did not connect");
        if let Some(l) = replicas.iter().find(|r| r.leads()) {
            let list = aviary_coordinator::client::fleet_client(&l.url())
                .unwrap()
                .list_clusters(v1::ListClustersRequest {})
                .await;
            if list
                .is_ok_and(|l| l.into_inner().clusters.iter().filter(|c| c.connected).count() == o.clusters)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let current = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = tokio::spawn(drive(urls.clone(), current.clone(), stop.clone()));

    let mut takeovers = Vec::new();
    let mut next_commands = Vec::new();
    for k in 0..o.kills {
        let wait = Duration::from_millis(rng.random_range(500..2500));
        tokio::time::sleep(wait).await;
        let Some(leader) = replicas.iter().position(Replica::leads) else {
            panic!("no leader before kill {k}");
        };
        let running = *current.lock().unwrap();
        let killed = Instant::now();
        replicas[leader].kill();
        // Takeover: another replica logs its election.
        let (elected, by) = loop {
            if let Some((t, i)) = replicas
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leader)
                .find_map(|(i, r)| r.elected_after(killed).map(|t| (t, i)))
            {
                break (t, i);
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no takeover within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The new leader's first command to any cluster.
        let command = loop {
            let first = received
                .lock()
                .unwrap()
                .iter()
                .find(|(t, _, _)| *t >= elected)
                .map(|(t, c, id)| (*t, c.clone(), id.clone()));
            if let Some(c) = first {
                break c;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no command within 60 s of kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let takeover = elected - killed;
        let next = command.0 - killed;
        println!(
            "kill {:>2}: rollout r{running}, replica {leader} killed; replica {by} leads after {}, next command after {} ({} to {})",
            k + 1,
            secs(takeover),
            secs(next),
            command.2,
            command.1
        );
        takeovers.push(takeover);
        next_commands.push(next);
        replicas[leader].spawn(&csv, o.lease_ttl);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = *current.lock().unwrap();
    tokio::time::timeout(Duration::from_secs(120), driver)
        .await
        .expect("the last rollout finishes")
        .unwrap();

    // Audit: every rollout, its history, the commands the clusters got, the write history.
    let reader = {
        let cfg = EtcdConfig::new(&csv).unwrap();
        let l = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
        EtcdStore::new(&cfg, &l)
    };
    let got = received.lock().unwrap().clone();
    let mut lost = 0usize;
    let mut duplicated = 0usize;
    let mut resent = 0usize;
    let mut terms_back = 0usize;
    for n in 1..=last {
        let name = format!("r{n}");
        let r = rollout_phase(&urls, &name).await.expect("rollout readable");
        let count = |kind: &str, cluster: &str| {
            r.history
                .iter()
                .filter(|h| h.kind == kind && h.cluster == cluster)
                .count()
        };
        if r.phase != "Succeeded" {
            lost += 1;
            println!("{name}: {} ({})", r.phase, r.message);
        }
        let c = count("rollout-succeeded", "");
        lost += 1usize.saturating_sub(c);
        duplicated += c.saturating_sub(1);
        for kind in ["wave-started", "wave-succeeded"] {
            let c = r.history.iter().filter(|h| h.kind == kind).count();
            lost += 2usize.saturating_sub(c);
            duplicated += c.saturating_sub(2);
        }
        for w in &r.waves {
            for c in &w.clusters {
                for kind in ["cluster-started", "cluster-succeeded"] {
                    let k = count(kind, &c.cluster);
                    if k != 1 {
                        println!("{name}: {} has {k} {kind}", c.cluster);
                    }
                    lost += 1usize.saturating_sub(k);
                    duplicated += k.saturating_sub(1);
                }
                let ids: Vec<&String> = got
                    .iter()
                    .filter(|(_, cl, id)| *cl == c.cluster && id.starts_with(&format!("{name}/")))
                    .map(|(_, _, id)| id)
                    .collect();
                let mut distinct = ids.clone();
                distinct.sort();
                distinct.dedup();
                if distinct.len() != 1 {
                    println!("{name}: {} got start commands {distinct:?}", c.cluster);
                }
                lost += 1usize.saturating_sub(distinct.len());
                duplicated += distinct.len().saturating_sub(1);
                resent += ids.len() - distinct.len();
            }
        }
        let fences: Vec<u64> = reader
            .rollout_writes(&name)
            .await
            .unwrap()
            .iter()
            .map(|w| w.fence)
            .collect();
        terms_back += fences.windows(2).filter(|w| w[0] > w[1]).count();
    }
    takeovers.sort();
    next_commands.sort();
    println!();
    println!(
        "## Failover: {} leader kills (SIGKILL) during {last} rollouts × {} clusters; lease TTL {} s; etcd {} member(s)",
        o.kills, o.clusters, o.lease_ttl, o.members
    );
    println!();
    println!("| | p50 | p90 | max |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("kill → another replica leads", &takeovers),
        ("kill → the new leader's next command", &next_commands),
    ] {
        println!(
            "| {what} | {} | {} | {} |",
            secs(percentile(v, 0.5)),
            secs(percentile(v, 0.9)),
            secs(percentile(v, 1.0))
        );
    }
    println!();
    println!(
        "lost transitions: {lost}; duplicated transitions: {duplicated}; writes by a deposed term after its successor: {terms_back}; \
         start commands re-sent with the same id (idempotent, expected after a takeover): {resent}"
    );
    if lost + duplicated + terms_back > 0 {
        std::process::exit(1);
    }
}
