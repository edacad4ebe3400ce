//! The fleet for real: `aviary coordinator` and three `aviary agent --local` processes in two
//! regions, with real sample-app processes and real HTTP traffic. Rollout 1 succeeds region by
//! region while one agent is killed and restarted mid-canary and another is cut off from the
//! coordinator (it finishes on its own; its status arrives after the heal). Rollout 2 fails in
//! the second wave and the `all` rollback scope reverts the cluster promoted in the first wave,
//! while the last cluster is never started.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aviary_testkit::aviary::{LocalCluster, Pki, apply, coordinator, wait_initialized};
use aviary_testkit::manifests::{LocalCanary, version_rollout};
use aviary_testkit::net::curl_json;
use aviary_testkit::process::Process;
use aviary_testkit::traffic::Traffic;
use aviary_testkit::wait::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

/// Warnings and errors reach the test's output (everything with `FLEET_TEST_LOGS` set).
fn worth_echoing(line: &str) -> bool {
    line.contains("WARN") || line.contains("ERROR") || std::env::var_os("FLEET_TEST_LOGS").is_some()
}

/// One cluster on the local platform, in `region`, reporting to `coordinator`.
struct Cluster {
    local: LocalCluster,
    region: &'static str,
    coordinator: String,
}

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

impl Cluster {
    fn new(root: &Path, name: &'static str, region: &'static str, faulty: &str, coordinator: &str) -> Self {
        let local = LocalCluster::new(root, name, |port| LocalCanary {
            duration_check: false,
            ..LocalCanary::faulty_sample_app(BIN, port, faulty)
        });
        Self {
            local,
            region,
            coordinator: coordinator.into(),
        }
    }

    fn start(&self) -> Process {
        let mut args = vec!["--region", self.region, "--coordinator", &self.coordinator];
        let tls = Pki::get(BIN).agent_args(&self.name);
        args.extend(tls.iter().map(String::as_str));
        self.local.start(BIN, &args, worth_echoing)
    }

    fn served_version(&self) -> String {
        curl_json(&format!("http://127.0.0.1:{}/", self.port))["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A TCP forwarder that can cut every connection and refuse new ones (a network partition).
struct Partition {
    cut: Arc<AtomicBool>,
    port: u16,
}

impl Partition {
    fn start(to: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = [0u8; 16384];
                        loop {
                            if c.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = into.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = into.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if into.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Self { cut, port }
    }
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "fleet-test", args)
}

fn rollout(url: &str, name: &str) -> serde_json::Value {
    let (code, out, err) = cli(url, &["rollout", "get", name, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("json")
}

fn cluster_phase(r: &serde_json::Value, cluster: &str) -> String {
    for w in r["waves"].as_array().into_iter().flatten() {
        for c in w["clusters"].as_array().into_iter().flatten() {
            if c["cluster"] == cluster {
                return c["phase"].as_str().unwrap_or("").to_string();
            }
        }
    }
    String::new()
}

fn history_count(r: &serde_json::Value, kind: &str, cluster: &str) -> usize {
    r["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["kind"] == kind && h["cluster"] == cluster)
        .count()
}

#[test]
fn a_fleet_of_local_agents_rolls_out_by_region_survives_a_kill_and_a_partition_and_reverts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_coordinator, url) = coordinator(BIN, &["--log-level", "info"], worth_echoing);
    let coord_addr = url.trim_start_matches("https://").to_string();
    let partition = Partition::start(coord_addr);

    let us = Cluster::new(tmp.path(), "us-east-1a", "us-east-1", "", &url);
    let eu_a = Cluster::new(tmp.path(), "eu-west-1a", "eu-west-1", "6.0.2", &url);
    let eu_b = Cluster::new(
        tmp.path(),
        "eu-west-1b",
        "eu-west-1",
        "",
        // A TCP proxy: mutual TLS passes through it (the certificate names 127.0.0.1).
        &format!("https://127.0.0.1:{}", partition.port),
    );
    let _us_agent = us.start();
    let mut eu_a_agent = eu_a.start();
    let _eu_b_agent = eu_b.start();
    let _traffic = [us.port, eu_a.port, eu_b.port].map(|p| Traffic::start(p, Duration::from_millis(15)));

    wait_initialized(|args| cli(&url, args), 3, Duration::from_secs(60));

    // Rollout 1: us-east-1 (bake: 3s and 20 requests) then eu-west-1 one cluster at a time.
    let r1 = version_rollout(
        "6.0.1",
        "  waves:
  - {name: us, regions: [us-east-1], bake: {duration: 3s, minRequests: 20}}
  - {name: eu, regions: [eu-west-1], maxConcurrent: 1}
  failurePolicy: {mandatoryWaves: [us], rollback: wave}
  clusterDeadline: 3m
",
    );
    apply(|args| cli(&url, args), tmp.path(), &r1);

    // Kill eu-west-1a's agent in the middle of its analysis, then start it again.
    wait_until("eu-west-1a to start its canary", Duration::from_secs(120), || {
        eu_a.phase() == "Progressing"
    });
    eu_a_agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    eu_a_agent = eu_a.start();

    // Cut eu-west-1b off when its canary runs: it finishes on its own.
    wait_until("eu-west-1b to start its canary", Duration::from_secs(120), || {
        eu_b.phase() == "Progressing"
    });
    partition.cut.store(true, Ordering::SeqCst);
    wait_until(
        "eu-west-1b to promote while partitioned",
        Duration::from_secs(60),
        || eu_b.phase() == "Succeeded",
    );
    let r = rollout(&url, "podinfo-6-0-1");
    assert_ne!(
        cluster_phase(&r, "eu-west-1b"),
        "Succeeded",
        "the coordinator cannot know yet: {r}"
    );
    partition.cut.store(false, Ordering::SeqCst);

    let (code, out, err) = cli(&url, &["rollout", "wait", "podinfo-6-0-1"]);
    assert_eq!(code, 0, "rollout 1 must succeed: {out}{err}");
    let r = rollout(&url, "podinfo-6-0-1");
    for c in ["us-east-1a", "eu-west-1a", "eu-west-1b"] {
        assert_eq!(cluster_phase(&r, c), "Succeeded", "{c}: {r}");
        assert_eq!(
            history_count(&r, "cluster-started", c),
            1,
            "{c} must be started exactly once: {r}"
        );
    }
    let us_wave = &r["waves"][0];
    assert!(
        us_wave["bakeRequests"].as_u64().unwrap_or(0) >= 20,
        "bake evidence: {us_wave}"
    );
    for c in [&us, &eu_a, &eu_b] {
        assert_eq!(c.served_version(), "6.0.1", "{} serves the new version", c.name);
    }

    // Rollout 2: 6.0.2 is fine in us-east-1 but fails in eu-west-1a; scope `all` reverts
    // us-east-1a, and eu-west-1b is never started.
    let r2 = version_rollout(
        "6.0.2",
        "  waves:
  - {name: us, regions: [us-east-1]}
  - {name: eu, regions: [eu-west-1], maxConcurrent: 1}
  failurePolicy: {maxFailedClusters: 0, rollback: all}
",
    );
    apply(|args| cli(&url, args), tmp.path(), &r2);
    let (code, out, _) = cli(&url, &["rollout", "wait", "podinfo-6-0-2"]);
    assert_eq!(code, 1, "rollout 2 must fail: {out}");
    let r = rollout(&url, "podinfo-6-0-2");
    assert_eq!(r["phase"], "Failed", "{r}");
    assert_eq!(cluster_phase(&r, "eu-west-1a"), "Failed", "{r}");
    assert_eq!(cluster_phase(&r, "us-east-1a"), "Reverted", "{r}");
    assert_eq!(history_count(&r, "cluster-started", "eu-west-1b"), 0, "{r}");
    wait_until("us-east-1a to serve 6.0.1 again", Duration::from_secs(30), || {
        us.served_version() == "6.0.1"
    });
    assert_eq!(eu_a.served_version(), "6.0.1");
    assert_eq!(eu_b.served_version(), "6.0.1");
    assert_eq!(eu_a.phase(), "Failed");
    let events = Command::new(BIN)
        .args([
            "events",
            "--agent",
            &format!("http://127.0.0.1:{}", us.admin),
            "--canary",
            "test/podinfo",
        ])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("Promotion completed! Canary analysis was skipped for podinfo.test"),
        "the revert skips the analysis: {events}"
    );
    drop(eu_a_agent);
}
