//! `aviary coordinator`, `aviary rollout …`, `aviary clusters` and `aviary canaries` as
//! processes, with simulated agents on loopback.

use std::time::Duration;

use aviary_coordinator::client::ClientTls;
use aviary_coordinator::sim::{SimAgent, SimCanary, SimConfig};
use aviary_core::fleet::Revision;
use aviary_testkit::aviary::Pki;
use aviary_testkit::process::Log;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

/// Starts `aviary coordinator` on a free port; returns the process and its URL.
fn start_coordinator() -> (aviary_testkit::process::Process, String) {
    let quiet = |_: &str| false;
    aviary_testkit::aviary::coordinator(BIN, &["--log-level", "warn"], quiet)
}

fn aviary(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "ci-bot", args)
}

/// A one-thread runtime for the simulated agents (the test itself blocks on processes).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A simulated agent's configuration: cluster `cluster` in `region`, running podinfo 6.0.0.
fn sim_config(url: &str, cluster: &str, region: &str) -> SimConfig {
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    SimConfig::new(url, cluster, region, vec![SimCanary::new("test", "podinfo", rev)])
}

fn sim(url: &str, cluster: &str, region: &str) -> SimAgent {
    let mut cfg = sim_config(url, cluster, region);
    cfg.tls = ClientTls::from_dir(Pki::get(BIN).agent(cluster), cluster);
    cfg.tick = Duration::from_millis(200);
    SimAgent::spawn(cfg)
}

/// The rollout of 6.0.1 to `regions`, one wave each.
fn rollout(regions: &[&str]) -> String {
    aviary_testkit::manifests::fleet_rollout("podinfo:6.0.1", regions)
}

const BOTH: [&str; 2] = ["us-east-1", "eu-west-1"];

#[test]
fn rollout_commands_against_a_coordinator_process() {
    let (coord, url) = start_coordinator();
    let rt = runtime();
    let _agents = rt.block_on(async { [sim(&url, "us-1", "us-east-1"), sim(&url, "eu-1", "eu-west-1")] });
    let _guard = rt.enter();

    // Wait for both agents.
    let mut clusters = String::new();
    for _ in 0..100 {
        clusters = aviary(&url, &["clusters"]).1;
        if clusters.matches(" yes ").count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(clusters.starts_with("NAME"), "{clusters}");
    assert!(
        clusters.contains("eu-1") && clusters.contains("us-east-1"),
        "{clusters}"
    );

    let (code, out, _) = aviary(&url, &["canaries", "--region", "eu-west-1"]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("CLUSTER") && header.ends_with("LASTTRANSITIONTIME"),
        "{header}"
    );
    assert!(out.lines().nth(1).unwrap().starts_with("eu-1"), "{out}");
    // The versions the primary and the canary run, also per cluster.
    assert!(
        header.contains(" PRIMARY ") && header.contains(" CANARY "),
        "{header}"
    );
    assert!(out.lines().nth(1).unwrap().contains(" podinfod:6.0.0 "), "{out}");
    assert!(clusters.contains("test/podinfo=podinfod:6.0.0"), "{clusters}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, rollout(&["mars"])).unwrap();
    let (code, _, err) = aviary(&url, &["rollout", "apply", "-f", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("InvalidArgument") && err.contains("spec.byRegion[0]"),
        "{err}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, rollout(&BOTH)).unwrap();
    // --dry-run prints the pinned plan and creates nothing.
    let (code, out, err) = aviary(
        &url,
        &["rollout", "apply", "--dry-run", "-f", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Wave us-east-1 — Pending")
            && out.contains("Wave eu-west-1 — Pending")
            && out.contains("  eu-1"),
        "{out}"
    );
    assert!(out.contains("dry run: the plan above was not created"), "{out}");
    let (code, _, err) = aviary(&url, &["rollout", "get", "podinfo-6-0-1"]);
    assert!(code != 0 && err.contains("NotFound"), "{err}");
    let (code, out, err) = aviary(&url, &["rollout", "apply", "-f", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Rollout:   podinfo-6-0-1"), "{out}");
    // The same manifest again (a CI retry) is a no-op.
    let (code, out, err) = aviary(&url, &["rollout", "apply", "-f", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Rollout:   podinfo-6-0-1"), "{out}");

    // watch without a terminal prints lines (each change once) and ends with the rollout.
    let (code, out, err) = aviary(&url, &["rollout", "watch", "podinfo-6-0-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cluster us-1 Progressing"), "{out}");
    let bodies: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, b)| b))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        assert!(
            !bodies[..i].contains(b) || b.starts_with("rollout "),
            "printed twice: {b}\n{out}"
        );
    }
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("rollout podinfo-6-0-1 Succeeded"),
        "{out}"
    );

    let (code, out, _) = aviary(&url, &["rollout", "wait", "podinfo-6-0-1"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = aviary(&url, &["rollout", "get", "podinfo-6-0-1", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["phase"], "Succeeded");
    // The authenticated identity; the free-text actor ($USER) is the comment beside it.
    assert_eq!(v["history"][0]["actor"], "user:admin");
    assert_eq!(v["history"][0]["comment"], "ci-bot");
    let (code, out, _) = aviary(&url, &["rollout", "list", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(out.contains("name: podinfo-6-0-1"), "{out}");
    let (code, _, err) = aviary(&url, &["rollout", "pause", "podinfo-6-0-1"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("FailedPrecondition") && err.contains("already ended Succeeded"),
        "{err}"
    );
    let (code, _, err) = aviary(&url, &["rollout", "get", "nope"]);
    assert!(code != 0 && err.contains("NotFound"), "{err}");

    // A failing rollout: wait exits 1.
    _agents_fail(&_agents);
    let failing = dir.path().join("fail.yaml");
    std::fs::write(
        &failing,
        rollout(&BOTH).replace("6-0-1", "6-0-2").replace("6.0.1", "6.0.2"),
    )
    .unwrap();
    assert_eq!(
        aviary(&url, &["rollout", "apply", "-f", failing.to_str().unwrap()]).0,
        0
    );
    let (code, out, _) = aviary(&url, &["rollout", "wait", "podinfo-6-0-2"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("rollout podinfo-6-0-2 Failed"), "{out}");

    // delete: an ended rollout goes (its name is free again); an unknown one is NotFound.
    let (code, out, err) = aviary(&url, &["rollout", "delete", "podinfo-6-0-2", "--actor", "erin"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("rollout podinfo-6-0-2 deleted (it had ended Failed: "),
        "{out}"
    );
    let (code, _, err) = aviary(&url, &["rollout", "get", "podinfo-6-0-2"]);
    assert!(code != 0 && err.contains("NotFound"), "{err}");
    let (code, _, err) = aviary(&url, &["rollout", "delete", "podinfo-6-0-2"]);
    assert!(code != 0 && err.contains("NotFound"), "{err}");

    // SIGTERM stops the coordinator gracefully.
    let mut coord = coord;
    coord.term();
    let status = coord.wait_exit(Duration::from_secs(10));
    assert!(status.expect("exited after SIGTERM").success());
}

fn _agents_fail(agents: &[SimAgent; 2]) {
    agents[0].set_outcome("test", "podinfo", aviary_coordinator::sim::Outcome::Fail);
}

/// The one test of plaintext (every other coordinator of the tests serves mutual TLS): it
/// takes an explicit `--insecure`, is refused on a non-loopback address without
/// `--insecure-listen-anywhere`, warns loudly, and then serves anyone as admin.
#[test]
fn plaintext_needs_insecure_and_loopback_unless_said_twice() {
    let refused = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .args(["coordinator", "--log-level", "warn"])
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} started");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = refused(&["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("serves mutual TLS") && err.contains("--insecure"),
        "{err}"
    );
    let err = refused(&["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(
        err.contains("--insecure on 0.0.0.0:0") && err.contains("--insecure-listen-anywhere"),
        "{err}"
    );

    let log = Log::default();
    let (_coord, url) = aviary_testkit::aviary::start_coordinator(
        &aviary_testkit::netns::Host::loopback(),
        BIN,
        &["--insecure", "--log-level", "warn"],
        "coordinator",
        &log,
        |_| false,
    );
    assert!(url.starts_with("http://"), "{url}");
    aviary_testkit::wait::wait_until("the warning", Duration::from_secs(5), || {
        !log.grep("WARNING: INSECURE").is_empty()
    });
    // No certificate: an agent may say it is any cluster, a caller is admin.
    let rt = runtime();
    let cfg = sim_config(&url, "us-1", "us-east-1");
    let _agent = rt.block_on(async { SimAgent::spawn(cfg) });
    aviary_testkit::wait::wait_until("us-1 to connect", Duration::from_secs(20), || {
        aviary(&url, &["clusters"]).1.contains(" yes ")
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(&file, rollout(&["us-east-1"])).unwrap();
    let (code, out, err) = aviary(&url, &["rollout", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = aviary(&url, &["rollout", "get", "podinfo-6-0-1", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["history"][0]["actor"], "ci-bot",
        "anyone may claim any actor: {v}"
    );
}

/// Registrations expire a TTL after their agent left, and an admin deregisters a disconnected
/// cluster with `aviary clusters deregister` (refused while connected, refused to a viewer);
/// both are in the audit log.
#[test]
fn clusters_expire_after_the_ttl_and_admins_deregister_them() {
    let log = Log::default();
    let metrics = format!("127.0.0.1:{}", aviary_testkit::net::free_port());
    let (_coord, url) = aviary_testkit::aviary::start_coordinator(
        &aviary_testkit::netns::Host::loopback(),
        BIN,
        &[
            "--cluster-ttl",
            "4s",
            "--metrics-listen",
            &metrics,
            "--log-level",
            "warn,aviary::audit=info",
        ],
        "coordinator",
        &log,
        |_| false,
    );
    // The probe of Kubernetes (which cannot speak TLS to the gRPC port): plain HTTP.
    assert_eq!(
        aviary_testkit::net::curl(&format!("http://{metrics}/healthz")).as_deref(),
        Some("ok\n")
    );
    let rt = runtime();
    let agents = rt.block_on(async { [sim(&url, "gone-1", "us-east-1"), sim(&url, "gone-2", "us-east-1")] });
    aviary_testkit::wait::wait_until("both agents", Duration::from_secs(20), || {
        aviary(&url, &["clusters"]).1.matches(" yes ").count() == 2
    });
    let (code, _, err) = aviary(&url, &["clusters", "deregister", "gone-1"]);
    assert!(code != 0 && err.contains("cluster gone-1 is connected"), "{err}");

    let [a, b] = agents;
    rt.block_on(async {
        a.stop().await;
        b.stop().await;
    });
    aviary_testkit::wait::wait_until("both gone", Duration::from_secs(20), || {
        aviary(&url, &["clusters"]).1.matches(" no ").count() == 2
    });
    let viewer = Pki::get(BIN).client_env("ann", "viewer");
    let o = std::process::Command::new(BIN)
        .args(["clusters", "deregister", "gone-1", "--coordinator", &url])
        .envs(viewer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("DeregisterCluster needs role admin"),
        "{err}"
    );
    let (code, out, err) = aviary(
        &url,
        &["clusters", "deregister", "gone-1", "--reason", "decommissioned"],
    );
    assert_eq!((code, out.trim()), (0, "cluster gone-1 deregistered"), "{err}");
    let (code, _, err) = aviary(&url, &["clusters", "deregister", "gone-1"]);
    assert!(code != 0 && err.contains("NotFound"), "{err}");
    // gone-2 expires by itself within the TTL plus a sweep.
    aviary_testkit::wait::wait_until("gone-2 to expire", Duration::from_secs(10), || {
        !aviary(&url, &["clusters"]).1.contains("gone-2")
    });
    aviary_testkit::wait::wait_until("the audit lines", Duration::from_secs(5), || {
        log.grep("cluster registration expired")
            .iter()
            .any(|l| l.contains("gone-2"))
    });
    log.assert_line_with(&["cluster deregistered", "user:admin", "gone-1", "decommissioned"]);
}
