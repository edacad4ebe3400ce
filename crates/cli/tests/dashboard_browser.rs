//! The web dashboard in real headless Chromium (Debian's chromium and chromedriver, through
//! WebDriver): a fleet rollout on the local platform (two `aviary coordinator --etcd
//! --http-listen` replicas on a real etcd, two `aviary agent --local` with real sample apps and
//! traffic) watched live by the page open on the follower, through `kill -9` of the leader,
//! approved with its button on the new leader, seen to the end; a dashboard behind mutual TLS
//! where a viewer signs in with a bearer token, has no action buttons and sees the refusal when
//! an action is sent anyway; and the dashboard `aviary demo` prints (signed in with the token
//! it prints).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_coordinator::security::Role;
use aviary_coordinator::security::auth::token_hash;
use aviary_coordinator::security::certs::{self, DEFAULT_TRUST_DOMAIN};
use aviary_testkit::aviary::{LocalCluster, apply, wait_initialized};
use aviary_testkit::browser::Browser;
use aviary_testkit::manifests::{LocalCanary, version_rollout};
use aviary_testkit::net::free_port;
use aviary_testkit::process::{Log, Process, announced};
use aviary_testkit::traffic::Traffic;
use aviary_testkit::wait::wait_until;
use fantoccini::Locator;
use fantoccini::elements::Element;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

fn worth_echoing(line: &str) -> bool {
    line.contains("WARN") || line.contains("ERROR") || std::env::var_os("FLEET_TEST_LOGS").is_some()
}

/// A plaintext coordinator (`--insecure`: the dashboard's own admin role) with the dashboard on
/// a free port: (process, gRPC URL, dashboard URL). The mutual-TLS dashboard is
/// [`tls_coordinator`].
fn coordinator(extra: &[&str]) -> (Process, String, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--insecure", "--http-listen", &http];
    args.extend_from_slice(extra);
    let (p, url) = aviary_testkit::aviary::coordinator(BIN, &args, worth_echoing);
    (p, url, format!("http://{http}/"))
}

/// A viewer's bearer token in the token file of [`pki`].
const VIEWER_TOKEN: &str = "wall-display-0123456789abcdef";

/// `aviary certs` in `dir`: the CA, a serving certificate for 127.0.0.1, one per agent of
/// `clusters`, an admin user `ops`, and a token file with a viewer token (`token:wall`).
fn pki(dir: &Path, clusters: &[&str]) {
    certs::init(dir, &[]).unwrap();
    for c in clusters {
        certs::issue_agent(dir, c, DEFAULT_TRUST_DOMAIN).unwrap();
    }
    certs::issue_user(dir, "ops", Role::Admin, DEFAULT_TRUST_DOMAIN).unwrap();
    std::fs::write(
        dir.join("tokens"),
        format!("{} wall viewer\n", token_hash(VIEWER_TOKEN)),
    )
    .unwrap();
}

/// A coordinator with mutual TLS, the token file of [`pki`] and the dashboard on a free port:
/// (process, gRPC URL, dashboard URL, its log).
fn tls_coordinator(pki: &Path) -> (Process, String, String, Log) {
    let http = format!("127.0.0.1:{}", free_port());
    let file = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let mut child = Command::new(BIN)
        .args(["coordinator", "--listen", "127.0.0.1:0", "--http-listen", &http])
        .args([
            "--tls-cert",
            &file(certs::SERVER),
            "--tls-key",
            &file(certs::SERVER_KEY),
        ])
        .args(["--client-ca", &file(certs::CA), "--token-file", &file("tokens")])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::default();
    log.capture("coordinator", child.stderr.take().unwrap(), worth_echoing);
    let addr = announced(child.stdout.take().unwrap(), "aviary coordinator listening on ");
    (
        Process::new(child),
        format!("https://{addr}"),
        format!("https://{http}/"),
        log,
    )
}

/// `aviary agent --local` for `cluster` with podinfo 6.0.0 on a sample app, and its traffic.
fn agent(root: &Path, cluster: &str, region: &str, coordinator: &str) -> (Process, Traffic) {
    agent_with(root, cluster, region, coordinator, None)
}

/// [`agent`], with the certificate of `cluster` from `pki` when given.
fn agent_with(
    root: &Path,
    cluster: &str,
    region: &str,
    coordinator: &str,
    pki: Option<&Path>,
) -> (Process, Traffic) {
    let local = LocalCluster::new(root, cluster, |port| LocalCanary {
        threshold: 2,
        metric_interval: "3s".into(),
        duration_check: false,
        ..LocalCanary::sample_app(BIN, port, "6.0.0")
    });
    let mut cmd = local.command(BIN);
    cmd.args(["--region", region, "--coordinator", coordinator])
        .envs(pki.iter().flat_map(|d| tls_env(d, cluster)));
    let agent = local.spawn(&mut cmd, worth_echoing);
    (agent, Traffic::start(local.port, Duration::from_millis(15)))
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "browser-test", args)
}

/// `AVIARY_CA`, `AVIARY_CERT` and `AVIARY_KEY` for `name`'s certificate in `pki`.
fn tls_env(pki: &Path, name: &str) -> [(String, std::path::PathBuf); 3] {
    [
        ("AVIARY_CA".into(), pki.join(certs::CA)),
        ("AVIARY_CERT".into(), pki.join(format!("{name}.pem"))),
        ("AVIARY_KEY".into(), pki.join(format!("{name}-key.pem"))),
    ]
}

/// `aviary ARGS` against `url`, as the admin `ops` of `pki` when given.
fn cli_as(url: &str, pki: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let Some(pki) = pki else { return cli(url, args) };
    let o = Command::new(BIN)
        .args(args)
        .env("AVIARY_COORDINATOR", url)
        .envs(tls_env(pki, "ops"))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn wait_initialized_as(url: &str, pki: Option<&Path>, n: usize) {
    wait_initialized(|args| cli_as(url, pki, args), n, Duration::from_secs(60));
}

fn apply_as(root: &Path, url: &str, pki: Option<&Path>, yaml: &str) {
    apply(|args| cli_as(url, pki, args), root, yaml);
}

/// Signs in on the page's form with `token` and waits for the header to name the caller.
async fn sign_in(b: &Browser, url: &str, token: &str, who: &str) {
    open(b, url).await;
    let input = appearing(b, Locator::Id("token"), "the sign-in form").await;
    input.send_keys(token).await.unwrap();
    click(b, "#signin button[type=submit]", "the sign-in button").await;
    until_text(b, "who", who, Duration::from_secs(10)).await;
}

/// Polls the page until the text of the element with id `id` is `want`; returns how long it took.
async fn until_text(b: &Browser, id: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = text_of(b, id).await;
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "#{id} never said {want:?} within {limit:?}; it says {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `attr` on the first element matching `css`, if any.
async fn attr(b: &Browser, css: &str, attr: &str) -> Option<String> {
    let e = b.client.find(Locator::Css(css)).await.ok()?;
    e.attr(attr).await.ok().flatten()
}

/// Polls the page (for up to `secs` seconds) until the `data-phase` of `css` is `want`; returns
/// the phases seen on the way.
async fn until_phase(b: &Browser, css: &str, want: &str, secs: u64) -> Vec<String> {
    let limit = Duration::from_secs(secs);
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let now = attr(b, css, "data-phase").await.unwrap_or_default();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == want {
            return seen;
        }
        assert!(
            start.elapsed() < limit,
            "{css} data-phase never became {want} within {limit:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CSS selector of the cell of `cluster`.
fn cell(cluster: &str) -> String {
    format!(r#".cell[data-cluster="{cluster}"]"#)
}

/// Opens `url` in the page.
async fn open(b: &Browser, url: &str) {
    b.client.goto(url).await.unwrap();
}

/// The text of the first element matching `css` (`what` names it when there is none).
async fn text_at(b: &Browser, css: &str, what: &str) -> String {
    b.client
        .find(Locator::Css(css))
        .await
        .expect(what)
        .text()
        .await
        .unwrap()
}

/// The text of the element with id `id`.
async fn text_of(b: &Browser, id: &str) -> String {
    text_at(b, &format!("#{id}"), id).await
}

/// The element `locator` finds, waiting up to 10 s for it to appear (`what` names it).
async fn appearing(b: &Browser, locator: Locator<'_>, what: &str) -> Element {
    b.client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(locator)
        .await
        .expect(what)
}

/// Clicks the first element matching `css` (`what` names it when there is none).
async fn click(b: &Browser, css: &str, what: &str) {
    let button = b.client.find(Locator::Css(css)).await.expect(what);
    button.click().await.unwrap();
}

/// Two replicas on a real etcd; the page stays open on the follower while the leader is killed
/// in the middle of the first wave: the same page (one event stream, never reloaded) says this
/// replica leads now, keeps following the rollout live, and approves the gated wave there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_fleet_rollout_live_through_a_leader_failover_and_approves_its_gated_wave() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let Some(etcd_bin) = aviary_testkit::etcd::LocalEtcd::binary_or_skip("the dashboard through a failover")
    else {
        return;
    };
    let etcd = tokio::task::spawn_blocking(move || aviary_testkit::etcd::LocalEtcd::start(&etcd_bin, 1))
        .await
        .unwrap()
        .unwrap();
    let csv = etcd.endpoints_csv();
    let replica = [
        "--etcd",
        csv.as_str(),
        "--lease-ttl",
        "2s",
        "--heartbeat-seconds",
        "1",
    ];
    let tmp = tempfile::tempdir().unwrap();
    // A leads first (the cluster list answers only where a leader is), then B joins.
    let (mut leader, url, _) = coordinator(&replica);
    wait_until("the first replica to lead", Duration::from_secs(20), || {
        cli(&url, &["clusters"]).0 == 0
    });
    let (_follower, url_b, web) = coordinator(&replica);
    let both = format!("{url},{url_b}");
    let _us = agent(tmp.path(), "us-east-1a", "us-east-1", &both);
    let _eu = agent(tmp.path(), "eu-west-1a", "eu-west-1", &both);
    wait_initialized_as(&url, None, 2);
    apply_as(
        tmp.path(),
        &url,
        None,
        &version_rollout(
            "6.0.1",
            "  waves:
  - {name: us, regions: [us-east-1]}
  - {name: eu, regions: [eu-west-1], approval: manual}
  clusterDeadline: 3m
",
        ),
    );

    // The list links to the rollout.
    open(&browser, &web).await;
    let row = Locator::Css(r#"tr[data-rollout="podinfo-6-0-1"] a"#);
    let link = appearing(&browser, row, "the rollout's row").await;
    link.click().await.unwrap();

    // On the follower: the rollout from etcd, and who leads.
    let follower = format!("follower · leader {}", url.trim_start_matches("http://"));
    until_text(&browser, "replica", &follower, Duration::from_secs(10)).await;
    until_phase(&browser, &cell("us-east-1a"), "Progressing", 60).await;

    // The leader dies in the middle of the first wave; the page's replica takes over.
    leader.kill9();
    let took = until_text(&browser, "replica", "leader", Duration::from_secs(20)).await;
    println!("the page showed its replica leading {took:?} after the kill");

    // The cells keep changing as the agents report to the new leader.
    let us = until_phase(&browser, &cell("us-east-1a"), "Succeeded", 120).await;
    assert!(
        us.iter().any(|p| p == "Progressing"),
        "the page should have shown us-east-1a progressing: {us:?}"
    );
    until_phase(&browser, r#".wave[data-wave="eu"]"#, "WaitingApproval", 60).await;
    assert_eq!(
        attr(&browser, &cell("eu-west-1a"), "data-phase").await.as_deref(),
        Some("Pending")
    );
    // The weight chart of us-east-1a has a line.
    browser
        .client
        .find(Locator::Css(r#"[data-chart="us-east-1a"] svg path"#))
        .await
        .expect("a chart for us-east-1a");

    let approve = r#"button[data-action="approve"][data-wave="eu"]"#;
    click(&browser, approve, "an Approve button on the gated wave").await;
    until_phase(&browser, &cell("eu-west-1a"), "Succeeded", 120).await;
    until_phase(&browser, "#phase .badge", "Succeeded", 30).await;
    let approved = text_at(
        &browser,
        r#"#timeline li[data-kind="wave-approved"]"#,
        "the approval in the timeline",
    )
    .await;
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
    let (code, out, _) = cli(&url_b, &["rollout", "get", "podinfo-6-0-1", "-o", "json"]);
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
    let pki_dir = tmp.path().join("pki");
    pki(&pki_dir, &["us-east-1a"]);
    let pki = Some(pki_dir.as_path());
    let (_coordinator, url, web, log) = tls_coordinator(&pki_dir);
    assert!(web.starts_with("https://"), "{web}");
    let _us = agent_with(tmp.path(), "us-east-1a", "us-east-1", &url, pki);
    wait_initialized_as(&url, pki, 1);
    apply_as(
        tmp.path(),
        &url,
        pki,
        r#"apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: gated}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {version: 6.0.1}
  waves: [{name: all, approval: manual}]
"#,
    );
    // Behind mutual TLS the page asks who you are; a viewer's token signs in.
    sign_in(&browser, &web, VIEWER_TOKEN, "token:wall · viewer").await;
    open(&browser, &format!("{web}#/rollouts/gated")).await;
    until_phase(&browser, r#".wave[data-wave="all"]"#, "WaitingApproval", 30).await;
    let buttons = browser.client.find_all(Locator::Css("button")).await.unwrap();
    assert!(
        buttons.is_empty(),
        "a viewer sees no buttons, found {}",
        buttons.len()
    );

    // The same request an Approve button sends, from the page: refused by the Fleet service's
    // role check, and the page says why.
    browser
        .client
        .execute("act('approve', {wave: 'all'})", vec![])
        .await
        .unwrap();
    let shown = Locator::Css("#error:not([hidden])");
    let error = appearing(&browser, shown, "the error").await;
    let error = error.text().await.unwrap();
    assert_eq!(
        error,
        "approve: ApproveWave needs role operator or higher; token:wall has role viewer"
    );
    let (_, out, _) = cli_as(&url, pki, &["rollout", "get", "gated", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["waves"][0]["phase"], "WaitingApproval", "nothing was approved");
    // Audited as any refused gRPC call, with the authenticated identity.
    log.assert_line_with(&["aviary::audit", "refused", "subject=token:wall", "ApproveWave"]);
    browser.close().await;
}

/// `aviary demo` prints its dashboard and a token to sign in with; the page shows rollout 1
/// running and rollout 2 failed with its failing metric values. With `AVIARY_UPDATE_SCREENSHOTS=1` the two views are saved
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
    assert!(dashboard.starts_with("https://127.0.0.1:"), "{dashboard}");
    let token = line_with("sign in with token ")
        .split_whitespace()
        .nth(4)
        .unwrap()
        .to_string();
    let update = std::env::var_os("AVIARY_UPDATE_SCREENSHOTS").is_some();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");

    sign_in(&browser, &dashboard, &token, "token:dashboard · operator").await;
    line_with("Rollout 1:");
    open(&browser, &format!("{dashboard}#/rollouts/podinfo-6-0-1")).await;
    until_phase(&browser, &cell("us-east-1a"), "Progressing", 60).await;
    // A few analysis steps, so the chart has a shape.
    tokio::time::sleep(Duration::from_secs(6)).await;
    if update {
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(docs.join("dashboard-rollout.png"), png).unwrap();
    }

    line_with("Rollout 2:");
    open(&browser, &format!("{dashboard}#/rollouts/podinfo-6-0-2")).await;
    until_phase(&browser, "#phase .badge", "Failed", 120).await;
    let us = text_at(&browser, &cell("us-east-1a"), "the cell of us-east-1a").await;
    assert!(
        us.contains("request-success-rate"),
        "the failing values are shown: {us}"
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
