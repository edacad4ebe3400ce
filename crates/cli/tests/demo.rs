//! `aviary demo` without a terminal: the outcome lines, the exit status, and no process left
//! behind (also when interrupted with Ctrl-C).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_testkit::process::{alive, descendants};

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

/// One demo at a time: both tests start a whole fleet.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the demo, collecting its output and every process it started; `interrupt_on` sends
/// SIGINT when a line containing it appears.
fn run_demo(interrupt_on: Option<&str>) -> (i32, Vec<String>, BTreeSet<u32>) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, d) = (seen.clone(), done.clone());
    let watcher = std::thread::spawn(move || {
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            s.lock().unwrap().extend(descendants(pid));
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("ERROR") || l.starts_with("error") {
                eprintln!("[demo] {l}");
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(trigger) = interrupt_on
            && line.contains(trigger)
        {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
        }
        lines.push(line);
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the demo must finish within about three minutes"
        );
    }
    let status = child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    (status.code().unwrap_or(-1), lines, seen)
}

#[test]
fn the_demo_rolls_out_by_region_and_stops_a_bad_release_in_the_first_region() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let (code, lines, pids) = run_demo(None);
    let text = lines.join("\n");
    assert_eq!(code, 0, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    assert!(text.contains("rollout podinfo-6-0-1 Succeeded"), "{text}");
    assert!(
        text.contains("rollout podinfo-6-0-2 Failed: cluster us-east-1a failed in mandatory wave us-east-1"),
        "{text}"
    );
    assert!(text.contains("Demo finished as expected."), "{text}");
    // the verdict carries the failing analysis values, not the last passing ones
    let verdict = lines
        .iter()
        .find(|l| l.contains("rollout podinfo-6-0-2 Failed"))
        .unwrap();
    let rate: f64 = verdict
        .split("request-success-rate=")
        .nth(1)
        .and_then(|r| r.split([')', ' ']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no success rate in the verdict: {verdict}\nthe whole demo:\n{text}"));
    assert!(rate < 99.0, "the verdict shows a passing success rate: {verdict}");
    // the summary: everyone on 6.0.1; eu-west-1 never touched by rollout 2
    let row = |rollout: &str, cluster: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(rollout) && l.contains(cluster))
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no summary row for {rollout} {cluster} in\n{text}"))
    };
    assert_eq!(
        row("podinfo-6-0-1", "eu-west-1b")[3..6],
        ["6.0.0", "6.0.1", "Succeeded"]
    );
    assert_eq!(
        row("podinfo-6-0-2", "us-east-1a")[3..6],
        ["6.0.1", "6.0.1", "Failed"]
    );
    assert_eq!(row("podinfo-6-0-2", "eu-west-1a")[5..], ["not", "started", "0"]);
    assert!(
        text.contains("Serving now: us-east-1a=6.0.1  eu-west-1a=6.0.1  eu-west-1b=6.0.1"),
        "{text}"
    );
    // The demo runs with mutual TLS and says how to reach it.
    assert!(text.contains("coordinator   https://127.0.0.1:"), "{text}");
    assert!(
        text.contains("AVIARY_CA=") && text.contains("AVIARY_CERT="),
        "{text}"
    );
    assert!(text.contains("grpcurl -cacert "), "{text}");
    assert!(text.contains("  dashboard     https://127.0.0.1:"), "{text}");
    assert!(text.contains("sign in with token "), "{text}");
    // six sample apps (2 replicas × 3 clusters) at least ran, and none is left
    assert!(pids.len() >= 6, "processes seen: {pids:?}");
    for p in pids {
        assert!(!alive(p), "process {p} outlived the demo");
    }
}

#[test]
fn ctrl_c_stops_the_demo_and_everything_it_started() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (code, lines, pids) = run_demo(Some("Rollout 1:"));
    let text = lines.join("\n");
    assert_ne!(code, 0, "an interrupted demo does not claim success: {text}");
    assert!(text.contains("Stopping the fleet"), "{text}");
    assert!(!pids.is_empty());
    for p in pids {
        assert!(!alive(p), "process {p} outlived the interrupted demo");
    }
}
