//! The web dashboard in real headless Chromium (Debian's chromium and chromedriver, through
//! WebDriver): a fleet rollout on the local platform (`aviary coordinator --http-listen`, two
//! `aviary agent --local` with real sample apps and traffic) watched live by the page, approved
//! with its button, seen to the end; and a read-only dashboard whose viewer has no action
//! buttons and sees the refusal when an action is sent anyway (behind mutual TLS, like every
//! coordinator of the system tests but the one whose buttons are clicked).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_testkit::aviary::{Pki, start_coordinator};
use aviary_testkit::browser::Browser;
use aviary_testkit::manifests::LocalCanary;
use aviary_testkit::net::free_port;
use aviary_testkit::process::{Log, Process};
use aviary_testkit::traffic::Traffic;
use aviary_testkit::wait::wait_until;
use fantoccini::Locator;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

fn worth_echoing(line: &str) -> bool {
    line.contains("WARN") || line.contains("ERROR") || std::env::var_os("FLEET_TEST_LOGS").is_some()
}

/// A coordinator with the dashboard on a free port: (process, gRPC URL, dashboard URL).
fn coordinator(extra: &[&str]) -> (Process, String, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--http-listen", &http];
    args.extend_from_slice(extra);
    let (p, url) = start_coordinator(BIN, &args, "coordinator", &Log::default(), worth_echoing);
    (p, url, format!("http://{http}/"))
}

/// `aviary agent --local` for `cluster` with podinfo 6.0.0 on a sample app, and its traffic.
fn agent(root: &Path, cluster: &str, region: &str, coordinator: &str) -> (Process, Traffic) {
    let dir = root.join(cluster);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let port = free_port();
    let yaml = LocalCanary {
        threshold: 2,
        metric_interval: "3s".into(),
        duration_check: false,
        ..LocalCanary::sample_app(BIN, port, "6.0.0")
    }
    .yaml();
    std::fs::write(dir.join("config/podinfo.yaml"), yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["agent", "--local"])
        .arg(dir.join("config"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--admin-listen", "127.0.0.1:0", "--min-analysis-interval", "1s"])
        .args([
            "--cluster",
            cluster,
            "--region",
            region,
            "--coordinator",
            coordinator,
        ])
        .args(if coordinator.starts_with("https://") {
            Pki::get(BIN).agent_args(cluster)
        } else {
            Vec::new()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Log::default().capture(cluster, child.stderr.take().unwrap(), worth_echoing);
    let agent = Process::new(child).graceful(Duration::from_secs(5));
    (agent, Traffic::start(port, Duration::from_millis(15)))
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "browser-test", args)
}

fn wait_initialized(url: &str, n: usize) {
    wait_until("canaries initialized", Duration::from_secs(60), || {
        let (code, out, _) = cli(url, &["canaries", "-o", "json"]);
        code == 0 && out.matches("\"Initialized\"").count() == n
    });
}

fn apply(root: &Path, url: &str, yaml: &str) {
    let file = root.join("rollout.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, out, err) = cli(url, &["rollout", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The value of `attr` on the first element matching `css`, if any.
async fn attr(b: &Browser, css: &str, attr: &str) -> Option<String> {
    let e = b.client.find(Locator::Css(css)).await.ok()?;
    e.attr(attr).await.ok().flatten()
}

/// Polls the page until `attr` of `css` is `want`; returns the values seen on the way.
async fn until_attr(b: &Browser, css: &str, name: &str, want: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let now = attr(b, css, name).await.unwrap_or_default();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == want {
            return seen;
        }
        assert!(
            start.elapsed() < limit,
            "{css} {name} never became {want} within {limit:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_fleet_rollout_live_and_approves_its_gated_wave() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Plaintext: the dashboard's HTTP has no client identity yet, so behind mutual TLS it is
    // read-only (the next test) and its buttons can only be exercised on an --insecure one.
    let (_coordinator, url, web) = coordinator(&["--insecure"]);
    let _us = agent(tmp.path(), "us-east-1a", "us-east-1", &url);
    let _eu = agent(tmp.path(), "eu-west-1a", "eu-west-1", &url);
    wait_initialized(&url, 2);
    apply(
        tmp.path(),
        &url,
        r#"apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: podinfo-6-0-1}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {version: 6.0.1}
  waves:
  - {name: us, regions: [us-east-1]}
  - {name: eu, regions: [eu-west-1], approval: manual}
  clusterDeadline: 3m
"#,
    );

    // The list links to the rollout.
    browser.client.goto(&web).await.unwrap();
    let link = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(r#"tr[data-rollout="podinfo-6-0-1"] a"#))
        .await
        .unwrap();
    link.click().await.unwrap();

    // The cells change as the agents report: us-east-1a runs its analysis and succeeds.
    let us = until_attr(
        &browser,
        r#".cell[data-cluster="us-east-1a"]"#,
        "data-phase",
        "Succeeded",
        Duration::from_secs(120),
    )
    .await;
    assert!(
        us.iter().any(|p| p == "Progressing"),
        "the page should have shown us-east-1a progressing: {us:?}"
    );
    until_attr(
        &browser,
        r#".wave[data-wave="eu"]"#,
        "data-phase",
        "WaitingApproval",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        attr(&browser, r#".cell[data-cluster="eu-west-1a"]"#, "data-phase")
            .await
            .as_deref(),
        Some("Pending")
    );
    // The weight chart of us-east-1a has a line.
    browser
        .client
        .find(Locator::Css(r#"[data-chart="us-east-1a"] svg path"#))
        .await
        .expect("a chart for us-east-1a");

    browser
        .client
        .find(Locator::Css(r#"button[data-action="approve"][data-wave="eu"]"#))
        .await
        .expect("an Approve button on the gated wave")
        .click()
        .await
        .unwrap();
    until_attr(
        &browser,
        r#".cell[data-cluster="eu-west-1a"]"#,
        "data-phase",
        "Succeeded",
        Duration::from_secs(120),
    )
    .await;
    until_attr(
        &browser,
        "#phase .badge",
        "data-phase",
        "Succeeded",
        Duration::from_secs(30),
    )
    .await;
    let approved = browser
        .client
        .find(Locator::Css(r#"#timeline li[data-kind="wave-approved"]"#))
        .await
        .expect("the approval in the timeline")
        .text()
        .await
        .unwrap();
    assert!(approved.contains("eu by dashboard"), "{approved}");
    let error_shown = browser
        .client
        .find(Locator::Id("error"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap();
    assert!(!error_shown, "no error shown");

    // Everything arrived over one event stream: the page never polled the rollout.
    let requests = browser
        .client
        .execute(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)",
            vec![],
        )
        .await
        .unwrap();
    let requests: Vec<String> = serde_json::from_value(requests).unwrap();
    let streams = requests.iter().filter(|p| p.ends_with("/events")).count();
    let gets = requests
        .iter()
        .filter(|p| *p == "/api/rollouts/podinfo-6-0-1")
        .count();
    assert_eq!((streams, gets), (1, 0), "{requests:?}");
    let (code, out, _) = cli(&url, &["rollout", "get", "podinfo-6-0-1", "-o", "json"]);
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["phase"], "Succeeded");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_action_buttons_and_a_refused_action_shows_the_error() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_coordinator, url, web) = coordinator(&["--dashboard-read-only"]);
    let _us = agent(tmp.path(), "us-east-1a", "us-east-1", &url);
    wait_initialized(&url, 1);
    apply(
        tmp.path(),
        &url,
        r#"apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: gated}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {version: 6.0.1}
  waves: [{name: all, approval: manual}]
"#,
    );
    browser
        .client
        .goto(&format!("{web}#/rollouts/gated"))
        .await
        .unwrap();
    until_attr(
        &browser,
        r#".wave[data-wave="all"]"#,
        "data-phase",
        "WaitingApproval",
        Duration::from_secs(30),
    )
    .await;
    let who = browser
        .client
        .find(Locator::Id("who"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(who, "viewer · viewer");
    let buttons = browser.client.find_all(Locator::Css("button")).await.unwrap();
    assert!(
        buttons.is_empty(),
        "a viewer sees no buttons, found {}",
        buttons.len()
    );

    // The same request an Approve button sends, from the page: refused, and the page says why.
    browser
        .client
        .execute("act('approve', {wave: 'all'})", vec![])
        .await
        .unwrap();
    let error = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#error:not([hidden])"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        error,
        "approve: approve rollout gated: viewer is a viewer; it needs the operator role (this dashboard is read-only)"
    );
    let (_, out, _) = cli(&url, &["rollout", "get", "gated", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["waves"][0]["phase"], "WaitingApproval", "nothing was approved");
    browser.close().await;
}

/// `aviary demo` prints its dashboard; the page shows rollout 1 running and rollout 2 failed
/// with its failing metric values. With `AVIARY_UPDATE_SCREENSHOTS=1` the two views are saved
/// as the screenshots of README and docs (docs/img/dashboard-*.png).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_dashboard_which_shows_both_rollouts() {
    let Some(browser) = Browser::start(1200, 760).await else {
        return;
    };
    let mut child = Command::new(BIN)
        .args(["demo", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Process::new(child).graceful(Duration::from_secs(20));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line_with = |text: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(text) => return l,
                Ok(_) => {}
                Err(e) => panic!("the demo never printed {text:?}: {e}"),
            }
        }
    };
    let dashboard = line_with("  dashboard ")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{dashboard}");
    let update = std::env::var_os("AVIARY_UPDATE_SCREENSHOTS").is_some();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");

    line_with("Rollout 1:");
    browser
        .client
        .goto(&format!("{dashboard}#/rollouts/podinfo-6-0-1"))
        .await
        .unwrap();
    until_attr(
        &browser,
        r#".cell[data-cluster="us-east-1a"]"#,
        "data-phase",
        "Progressing",
        Duration::from_secs(60),
    )
    .await;
    // A few analysis steps, so the chart has a shape.
    tokio::time::sleep(Duration::from_secs(6)).await;
    if update {
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(docs.join("dashboard-rollout.png"), png).unwrap();
    }

    line_with("Rollout 2:");
    browser
        .client
        .goto(&format!("{dashboard}#/rollouts/podinfo-6-0-2"))
        .await
        .unwrap();
    until_attr(
        &browser,
        "#phase .badge",
        "data-phase",
        "Failed",
        Duration::from_secs(120),
    )
    .await;
    let cell = browser
        .client
        .find(Locator::Css(r#".cell[data-cluster="us-east-1a"]"#))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        cell.contains("request-success-rate"),
        "the failing values are shown: {cell}"
    );
    assert!(
        browser
            .client
            .find_all(Locator::Css("button"))
            .await
            .unwrap()
            .is_empty(),
        "a finished rollout has no actions"
    );
    if update {
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(docs.join("dashboard-failed.png"), png).unwrap();
    }
    browser.close().await;
}
