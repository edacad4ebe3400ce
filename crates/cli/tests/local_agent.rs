//! `aviary agent --local` end to end: real sample-app processes, real HTTP traffic through the
//! local router, a promotion, a rollback, a kill and resume, and no orphans.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aviary_testkit::manifests::LocalCanary;
use aviary_testkit::net::{curl as get, free_port};
use aviary_testkit::process::{alive, descendants};
use aviary_testkit::traffic::Traffic;
use aviary_testkit::wait::wait_until;

fn aviary() -> &'static str {
    env!("CARGO_BIN_EXE_aviary")
}

/// Two replicas of the sample app (with `extra` arguments) and a canary that steps by 10% to
/// 50% with 3 failed checks allowed.
fn config(port: u16, version: &str, extra: &[&str]) -> String {
    let mut c = LocalCanary {
        replicas: 2,
        progress_deadline_seconds: Some(60),
        threshold: 3,
        step_weight: 10,
        metric_interval: "3s".into(),
        ..LocalCanary::sample_app(aviary(), port, version)
    };
    c.command.extend(extra.iter().map(|a| a.to_string()));
    c.yaml()
}

struct AgentProc {
    child: Child,
    admin: String,
}

impl AgentProc {
    /// Asserts that the events of test/podinfo include each of `messages`.
    #[track_caller]
    fn assert_events(&self, messages: &[&str]) {
        let events = get(&format!("{}/events?canary=test/podinfo", self.admin)).unwrap();
        for m in messages {
            assert!(events.contains(m), "{m} not in {events}");
        }
    }
}

fn start_agent(dir: &Path, state: &Path, admin_port: u16) -> AgentProc {
    let mut child = aviary_testkit::aviary::local_agent(aviary(), dir, state, admin_port, "local-test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[agent] {line}");
        }
    });
    AgentProc {
        child,
        admin: format!("http://127.0.0.1:{admin_port}"),
    }
}

fn canary(admin: &str) -> Option<serde_json::Value> {
    let body = get(&format!("{admin}/canaries"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["items"].as_array()?.first().cloned()
}

fn phase_weight(admin: &str) -> (String, i64) {
    canary(admin)
        .map(|c| {
            (
                c["status"]["phase"].as_str().unwrap_or("").to_string(),
                c["status"]["canaryWeight"].as_i64().unwrap_or(0),
            )
        })
        .unwrap_or_default()
}

fn served_version(port: u16) -> String {
    let body = get(&format!("http://127.0.0.1:{port}/")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["version"].as_str().map(String::from))
        .unwrap_or_default()
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".podinfo.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("podinfo.yaml")).unwrap();
}

#[test]
fn local_canary_promotes_rolls_back_resumes_and_leaves_no_orphans() {
    let (_tmp, dir, state) = dirs();
    let port = free_port();
    write(&dir, &config(port, "6.0.0", &[]));
    let admin_port = free_port();
    let mut agent = start_agent(&dir, &state, admin_port);

    wait_until("initialization", Duration::from_secs(30), || {
        phase_weight(&agent.admin).0 == "Initialized"
    });
    assert_eq!(served_version(port), "6.0.0");
    let traffic = Traffic::start(port, Duration::from_millis(10));

    // 6.0.1: promoted through 10..50
    write(&dir, &config(port, "6.0.1", &[]));
    let mut weights = Vec::new();
    wait_until("promotion of 6.0.1", Duration::from_secs(90), || {
        let (p, w) = phase_weight(&agent.admin);
        if weights.last() != Some(&w) {
            weights.push(w);
        }
        p == "Succeeded"
    });
    assert!(
        weights.contains(&10) && weights.contains(&50),
        "weights seen: {weights:?}"
    );
    wait_until("the new primary to serve", Duration::from_secs(20), || {
        served_version(port) == "6.0.1"
    });
    agent.assert_events(&[
        "Advance podinfo.test canary weight 50",
        "Promotion completed! Scaling down podinfo.test",
    ]);
    let table = Command::new(aviary())
        .args(["canaries", "--agent", &agent.admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
    );
    let row: Vec<&str> = rows.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["test", "podinfo", "Succeeded", "0"], "{table}");
    let events = Command::new(aviary())
        .args(["events", "--agent", &agent.admin, "--canary", "test/podinfo"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("Normal   Synced  test/podinfo"),
        "events table"
    );
    let metrics = get(&format!("{}/metrics", agent.admin)).unwrap();
    assert!(metrics.contains("flagger_canary_successes_total{name=\"podinfo\",namespace=\"test\",deployment_strategy=\"canary\",analysis_status=\"completed\"} 1"), "{metrics}");
    assert!(metrics.contains("aviary_router_requests_total"), "{metrics}");

    // 6.0.2 answers half of the requests with 500: rolled back to 6.0.1
    write(&dir, &config(port, "6.0.2", &["--error-rate", "0.5"]));
    wait_until("rollback of 6.0.2", Duration::from_secs(90), || {
        phase_weight(&agent.admin).0 == "Failed"
    });
    agent.assert_events(&[
        "Rolling back podinfo.test failed checks threshold reached 3",
        "Canary failed! Scaling down podinfo.test",
    ]);
    assert_eq!(phase_weight(&agent.admin).1, 0);
    for _ in 0..20 {
        assert_eq!(
            served_version(port),
            "6.0.1",
            "traffic must be 100% primary after a rollback"
        );
    }

    // 6.0.3: kill the agent mid-analysis; the new one resumes at the persisted weight
    write(&dir, &config(port, "6.0.3", &[]));
    wait_until("6.0.3 at weight 20", Duration::from_secs(60), || {
        let (p, w) = phase_weight(&agent.admin);
        p == "Progressing" && w >= 20
    });
    let before = agent.child.id();
    let kids: Vec<u32> = descendants(before).into_iter().collect();
    assert!(kids.len() >= 4, "primary and canary processes: {kids:?}");
    let _ = Command::new("kill").args(["-9", &before.to_string()]).status();
    let _ = agent.child.wait();
    // the sample apps notice their parent is gone and exit
    wait_until("orphans to exit", Duration::from_secs(10), || {
        kids.iter().all(|p| !alive(*p))
    });
    let persisted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("canaries/test/podinfo.json")).unwrap()).unwrap();
    let persisted_weight = persisted["canaryWeight"].as_i64().unwrap();
    assert!(persisted_weight >= 20);

    agent = start_agent(&dir, &state, admin_port);
    wait_until("the restarted agent to report", Duration::from_secs(30), || {
        !phase_weight(&agent.admin).0.is_empty()
    });
    let (phase, weight) = phase_weight(&agent.admin);
    assert_eq!(phase, "Progressing");
    assert!(
        weight >= persisted_weight,
        "resumed at {weight}, persisted {persisted_weight}"
    );
    let served = traffic.ok();
    assert!(served > 100, "the traffic generator got {served} answers");
    wait_until(
        "promotion of 6.0.3 after the restart",
        Duration::from_secs(90),
        || phase_weight(&agent.admin).0 == "Succeeded",
    );
    let c = canary(&agent.admin).unwrap();
    assert_eq!(
        c["status"]["failedChecks"], 0,
        "the restart must not cost failed checks: {c}"
    );
    let events = get(&format!("{}/events?canary=test/podinfo", agent.admin)).unwrap();
    assert!(
        !events.contains("Starting canary analysis"),
        "the restarted agent must not restart the analysis: {events}"
    );
    wait_until("6.0.3 to serve", Duration::from_secs(20), || {
        served_version(port) == "6.0.3"
    });
    drop(traffic);

    // SIGTERM: everything the agent started goes down with it
    let kids = descendants(agent.child.id());
    assert!(!kids.is_empty());
    let _ = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exit: {status:?}");
    for p in kids {
        assert!(!alive(p), "process {p} outlived the agent");
    }
}

fn canary_named(admin: &str, name: &str) -> Option<serde_json::Value> {
    let body = get(&format!("{admin}/canaries"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .cloned()
}

fn phase_of(admin: &str, name: &str) -> String {
    canary_named(admin, name)
        .and_then(|c| c["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A temporary directory with the agent's `config` directory (created) and `state` path.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    (tmp, dir, state)
}

fn simple_canary(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: {name}, namespace: test}}
spec:
  provider: local
  targetRef: {{apiVersion: aviary.dev/v1alpha1, kind: LocalService, name: {name}}}
  progressDeadlineSeconds: 60
  analysis:
    interval: 1s
    threshold: 3
    maxWeight: 50
    stepWeight: 10{extra}
"#
    )
}

/// Issue 4: an invalid Canary is reported (log, Warning event, `Validated=False` in `/canaries`)
/// and skipped; a command that cannot start and a port in use fail only their own canary's
/// readiness with a message saying why; the agent and the other canaries keep running, and the
/// service whose port was taken starts once the port is free.
#[test]
fn invalid_resources_and_unstartable_services_are_reported_and_the_rest_keeps_running() {
    let (_tmp, dir, state) = dirs();
    let port = free_port();
    std::fs::write(dir.join("good.yaml"), config(port, "6.0.0", &[])).unwrap();
    // parses, but the webhook URL has no scheme: invalid
    let bad = simple_canary(
        "bad",
        "\n    webhooks:\n    - name: smoke\n      url: flagger-loadtester.test/",
    )
    .replace("name: bad}", "name: podinfo}");
    std::fs::write(dir.join("bad.yaml"), bad).unwrap();
    let busy_port_holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy_port_holder.local_addr().unwrap().port();
    let broken = format!(
        r#"apiVersion: aviary.dev/v1alpha1
kind: LocalService
metadata: {{name: broken, namespace: test}}
spec:
  port: {broken_port}
  version: 1.0.0
  command: ["/nonexistent/aviary-no-such-program", "{{{{port}}}}"]
---
{broken_canary}---
apiVersion: aviary.dev/v1alpha1
kind: LocalService
metadata: {{name: busy, namespace: test}}
spec:
  port: {busy_port}
  version: 1.0.0
  command: ["{bin}", sample-app, --port, "{{{{port}}}}", --version, "{{{{version}}}}"]
---
{busy_canary}"#,
        broken_port = free_port(),
        broken_canary = simple_canary("broken", ""),
        busy_canary = simple_canary("busy", ""),
        bin = aviary(),
    );
    std::fs::write(dir.join("broken.yaml"), broken).unwrap();
    let admin_port = free_port();
    let mut agent = start_agent(&dir, &state, admin_port);

    wait_until("podinfo to initialize", Duration::from_secs(30), || {
        phase_of(&agent.admin, "podinfo") == "Initialized"
    });
    assert_eq!(served_version(port), "6.0.0");

    // the invalid canary: listed with its condition, a Warning event, never run
    let c = canary_named(&agent.admin, "bad").expect("the invalid canary is listed");
    let cond = &c["status"]["conditions"][0];
    assert_eq!(cond["type"], "Validated", "{c}");
    assert_eq!(cond["status"], "False", "{c}");
    assert_eq!(cond["reason"], "InvalidSpec", "{c}");
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.starts_with("invalid canary spec: ") && msg.contains("spec.analysis.webhooks[0].url"),
        "{msg}"
    );
    assert_eq!(c["status"]["phase"], "", "an invalid canary never runs: {c}");
    let events = get(&format!("{}/events?canary=test/bad", agent.admin)).unwrap();
    assert!(
        events.contains("\"InvalidSpec\"") && events.contains("spec.analysis.webhooks[0].url"),
        "{events}"
    );

    // a command that cannot start: that canary fails, saying why
    wait_until("the broken canary to report", Duration::from_secs(30), || {
        get(&format!("{}/events?canary=test/broken", agent.admin))
            .is_some_and(|e| e.contains("cannot start `/nonexistent/aviary-no-such-program`"))
    });
    // a port in use: that canary is not ready, saying why
    wait_until("the busy canary to report", Duration::from_secs(30), || {
        get(&format!("{}/events?canary=test/busy", agent.admin)).is_some_and(|e| {
            e.contains(&format!(
                "LocalService test/busy is unavailable: cannot start its router on 127.0.0.1:{busy_port}"
            )) && e.contains("Address already in use")
        })
    });
    assert_ne!(phase_of(&agent.admin, "busy"), "Initialized");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent must keep running"
    );

    // the port is freed: the agent retries and the service starts
    drop(busy_port_holder);
    wait_until(
        "busy to initialize once its port is free",
        Duration::from_secs(30),
        || phase_of(&agent.admin, "busy") == "Initialized",
    );
    assert_eq!(served_version(busy_port), "1.0.0");
    assert_eq!(phase_of(&agent.admin, "podinfo"), "Initialized");

    let _ = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exit: {status:?}");
}
