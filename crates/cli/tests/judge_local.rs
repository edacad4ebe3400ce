//! The statistical judge for real, on the local platform: `aviary agent --local` processes,
//! sample-app processes answering a configurable share of 500s, real HTTP traffic through the
//! local router, and `aviary coordinator`.
//!
//! 1. A canary failing 0.5% of requests against its primary's 0.1% passes Flagger's
//!    `request-success-rate ≥ 99%` (nearly) every check: without the judge it is promoted; with
//!    `judge.aviary.dev/mode: rollback` the judge rolls it back through Flagger's path.
//! 2. Three clusters in one wave, each with a canary at 0.4% against 0.1% (too small for
//!    Flagger's check, and each cluster's own judge only observes): the coordinator pools their
//!    evidence and stops the rollout before the last wave starts.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use aviary_testkit::aviary::{LocalCluster, Pki, apply, coordinator, wait_initialized};
use aviary_testkit::manifests::{LocalCanary, version_rollout};
use aviary_testkit::net::curl as get;
use aviary_testkit::process::Process;
use aviary_testkit::traffic::Traffic;
use aviary_testkit::wait::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

/// The two scenarios start many processes: one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn worth_echoing(line: &str) -> bool {
    line.contains("WARN") || line.contains("ERROR") || std::env::var_os("JUDGE_TEST_LOGS").is_some()
}

/// One local cluster (config and state dirs, the service port, the admin port).
struct Cluster(LocalCluster);

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl Cluster {
    /// The sample app fails `bad_rate` of the requests in version 6.0.1 and 0.1% otherwise;
    /// analysis every 10 s in steps of 5% up to 50% (about two minutes), success rate ≥ 99%
    /// over 1 m, threshold 5; the judge's mode annotation when given.
    fn new(root: &Path, name: &'static str, bad_rate: f64, judge: Option<&str>) -> Self {
        let sample_app = format!(
            r#"if [ "{{{{version}}}}" = "6.0.1" ]; then e={bad_rate}; else e=0.001; fi; exec {BIN} sample-app --port {{{{port}}}} --version {{{{version}}}} --error-rate $e"#
        );
        Self(LocalCluster::new(root, name, |port| LocalCanary {
            command: vec!["sh".into(), "-c".into(), sample_app],
            threshold: 5,
            step_weight: 5,
            max_weight: 50,
            interval: "10s".into(),
            metric_interval: "1m".into(),
            duration_check: false,
            annotations: judge
                .map(|m| [("judge.aviary.dev/mode".to_string(), m.to_string())].into())
                .unwrap_or_default(),
            ..LocalCanary::sample_app(BIN, port, "6.0.0")
        }))
    }

    fn start(&self, extra: &[&str]) -> Process {
        self.0.start(BIN, extra, worth_echoing)
    }

    fn events(&self) -> String {
        get(&format!(
            "http://127.0.0.1:{}/events?canary=test/podinfo",
            self.admin
        ))
        .unwrap_or_default()
    }

    fn release(&self, version: &str) {
        let path = self.dir.join("podinfo.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let tmp = self.dir.join(".podinfo.yaml.tmp");
        std::fs::write(&tmp, text.replace("6.0.0", version)).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Two request loops on the service (a few hundred requests a second on loopback).
    fn traffic(&self) -> [Traffic; 2] {
        [0, 1].map(|_| Traffic::start(self.port, Duration::from_millis(2)))
    }
}

#[test]
fn the_judge_rolls_back_a_canary_flaggers_threshold_promotes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let judged = Cluster::new(tmp.path(), "judged", 0.005, Some("rollback"));
    let flagger = Cluster::new(tmp.path(), "flagger", 0.005, None);
    let _agents = [judged.start(&[]), flagger.start(&[])];
    for c in [&judged, &flagger] {
        wait_until(
            &format!("{} initialized", c.name),
            Duration::from_secs(60),
            || c.phase() == "Initialized",
        );
    }
    let _traffic = [judged.traffic(), flagger.traffic()];
    // A minute of primary traffic before the release.
    std::thread::sleep(Duration::from_secs(20));
    judged.release("6.0.1");
    flagger.release("6.0.1");
    wait_until("both analyses to end", Duration::from_secs(300), || {
        let done = |p: String| p == "Succeeded" || p == "Failed";
        done(judged.phase()) && done(flagger.phase())
    });

    let events = flagger.events();
    assert_eq!(
        flagger.phase(),
        "Succeeded",
        "Flagger's thresholds promote it: {events}"
    );
    assert!(
        !events.contains("Statistical judge"),
        "no judge without the annotation: {events}"
    );

    let events = judged.events();
    assert_eq!(judged.phase(), "Failed", "the judge rolls it back: {events}");
    assert!(
        events.contains(
            "Statistical judge on podinfo.test: rollback: request-success-rate: error ratio canary/primary"
        ),
        "{events}"
    );
    // Flagger's rollback path, after the judge's verdict. (Flagger's own check may fail a tick or
    // two by granularity, one error among few canary requests, but never reaches the threshold:
    // the same canary without the judge is promoted.)
    let verdict = events
        .find("Statistical judge on podinfo.test: rollback:")
        .unwrap();
    let rollback = events
        .find("Rolling back podinfo.test failed checks threshold reached 5")
        .unwrap_or_else(|| panic!("Flagger's rollback path: {events}"));
    assert!(verdict < rollback, "{events}");
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "judge-test", args)
}

#[test]
fn pooled_evidence_stops_a_fleet_rollout_no_cluster_would_stop() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (_coordinator, url) = coordinator(BIN, &["--log-level", "info"], worth_echoing);
    let clusters = [
        (Cluster::new(tmp.path(), "a", 0.004, Some("observe")), "one"),
        (Cluster::new(tmp.path(), "b", 0.004, Some("observe")), "one"),
        (Cluster::new(tmp.path(), "c", 0.004, Some("observe")), "one"),
        (Cluster::new(tmp.path(), "d", 0.004, Some("observe")), "two"),
    ];
    let _agents: Vec<Process> = clusters
        .iter()
        .map(|(c, region)| {
            let tls = Pki::get(BIN).agent_args(&c.name);
            let mut args = vec!["--region", region, "--coordinator", &url];
            args.extend(tls.iter().map(String::as_str));
            c.start(&args)
        })
        .collect();
    let _traffic: Vec<Traffic> = clusters
        .iter()
        .map(|(c, _)| Traffic::start(c.port, Duration::from_millis(2)))
        .collect();
    wait_initialized(|args| cli(&url, args), 4, Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(20));
    let manifest = version_rollout(
        "6.0.1",
        "  waves:
  - {name: one, regions: [one], maxConcurrent: 3}
  - {name: two, regions: [two]}
  evidence: {pooled: true, alpha: 0.05}
  clusterDeadline: 10m
",
    );
    apply(|args| cli(&url, args), tmp.path(), &manifest);
    let (code, out, err) = cli(&url, &["rollout", "wait", "podinfo-6-0-1"]);
    assert_ne!(code, 0, "the rollout must fail: {out}{err}");

    let (_, text, _) = cli(&url, &["rollout", "get", "podinfo-6-0-1"]);
    let (code, json, err) = cli(&url, &["rollout", "get", "podinfo-6-0-1", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["phase"], "Failed", "{text}");
    // Stopped by the anytime evidence (at 0.1 α) or by the planned look at the last wave's gate
    // (at 0.9 α), whichever came first.
    let message = r["message"].as_str().unwrap_or("");
    let anytime = message.contains("pooled evidence: rollback");
    assert!(
        anytime || message.contains("pooled evidence, planned look at the last wave"),
        "{text}"
    );
    if anytime {
        assert_eq!(r["evidence"]["decision"], "rollback", "{text}");
        assert!(text.contains("Evidence:  rollback (pooled evidence"), "{text}");
    } else {
        assert!(r["evidence"]["plannedLookP"].as_f64().unwrap() <= 0.045, "{text}");
    }
    assert!(text.contains("error ratio canary/primary"), "{text}");
    // No cluster failed on its own before the stop: Flagger's checks passed throughout.
    let history = r["history"].as_array().cloned().unwrap_or_default();
    let stop = history
        .iter()
        .position(|h| h["kind"] == "rollback-started")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        !history[..stop].iter().any(|h| h["kind"] == "cluster-failed"),
        "{text}"
    );
    assert!(
        r["waves"][1]["clusters"][0]["phase"] == "Pending",
        "the last wave never started: {text}"
    );
    // Each cluster's own analysis was rolled back by the coordinator, not by its checks; and
    // the pooled evidence got there before the clusters' own judges (each at the same α).
    let mut own_verdicts = 0;
    for (c, _) in &clusters[..3] {
        let events = c.events();
        assert!(
            events.contains("requested by aviary-coordinator") && events.contains("pooled evidence"),
            "{}: {events}",
            c.name
        );
        assert!(
            !events.contains("failed checks threshold reached"),
            "{}: {events}",
            c.name
        );
        if events.contains("Statistical judge on podinfo.test: rollback:") {
            own_verdicts += 1;
        }
    }
    eprintln!("clusters whose own judge had reached rollback by the end: {own_verdicts} of 3");
    assert!(
        own_verdicts < 3,
        "the pool must be faster than every single cluster"
    );
}
