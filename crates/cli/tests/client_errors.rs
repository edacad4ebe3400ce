//! The CLI never hangs silently and never leaves you guessing when it cannot talk to the
//! coordinator: an address where nothing listens fails within seconds naming the URL and how
//! to point the CLI elsewhere; URL schemes the client cannot honour are refused; a port that
//! does not speak gRPC gets a hint; a connection lost during `watch` or `wait` says so. All of
//! these exit 3 (docs/cli.md).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_coordinator::client::ClientTls;
use aviary_coordinator::sim::{SimAgent, SimCanary, SimConfig};
use aviary_core::fleet::Revision;
use aviary_testkit::aviary::{ADMIN, Pki};
use aviary_testkit::process::{Log, Process};

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

fn aviary(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "ci-bot", args)
}

#[test]
fn an_unreachable_coordinator_fails_fast_with_the_url_and_a_hint() {
    let url = format!("127.0.0.1:{}", aviary_testkit::net::free_port());
    let started = Instant::now();
    let (code, _, err) = aviary(&url, &["clusters"]);
    let took = started.elapsed();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("http://{url}"))
            && err.contains("--coordinator")
            && err.contains("AVIARY_COORDINATOR")
            && err.contains("Connection refused"),
        "{err}"
    );
    // It used to retry silently for 15 s; the budget is ~2 s (a loose bound, not a benchmark).
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn schemes_the_client_cannot_honour_are_refused() {
    for (url, says) in [
        ("ftp://127.0.0.1:7400", "ftp:// is not supported"),
        ("gopher://127.0.0.1:7400", "gopher:// is not supported"),
    ] {
        let (code, _, err) = aviary(url, &["rollout", "list"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(says) && err.contains("http://HOST:PORT"),
            "{url}: {err}"
        );
    }
}

#[test]
fn a_port_that_is_not_grpc_gets_a_hint() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let web = rt.block_on(aviary_testkit::FakeWebhook::start()).unwrap();
    let (code, _, err) = aviary(web.url(), &["canaries"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is this aviary's gRPC port?"), "{err}");
}

/// A rollout held in its first cluster, a `watch` and a `wait` on it, then the coordinator is
/// killed: both end (no hang) saying the connection was lost, with exit status 3.
#[test]
fn a_connection_lost_during_watch_or_wait_says_so() {
    let quiet = |_: &str| false;
    let (mut coord, url) = aviary_testkit::aviary::coordinator(BIN, &["--log-level", "warn"], quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let agent = rt.block_on(async {
        let mut cfg = SimConfig::new(
            &url,
            "us-1",
            "us-east-1",
            vec![SimCanary::new("test", "podinfo", rev)],
        );
        cfg.tls = ClientTls::from_dir(Pki::get(BIN).agent("us-1"), "us-1");
        cfg.tick = Duration::from_millis(100);
        SimAgent::spawn(cfg)
    });
    agent.hold("test", "podinfo", true);
    for _ in 0..100 {
        if aviary(&url, &["clusters"]).1.contains(" yes ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(
        &file,
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {name: held}\nspec:\n  \
         canary: {namespace: test, name: podinfo}\n  revision: {containerImages: {podinfod: 'podinfo:6.0.1'}}\n  byRegion: [us-east-1]\n",
    )
    .unwrap();
    let (code, _, err) = aviary(&url, &["rollout", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let spawn = |verb: &str| {
        let mut child = Command::new(BIN)
            .args(["rollout", verb, "held", "--coordinator", &url])
            .envs(Pki::get(BIN).client_env(ADMIN, "admin"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::default();
        log.capture(verb, child.stderr.take().unwrap(), |_| false);
        (Process::new(child), log)
    };
    let (mut watch, watch_log) = spawn("watch");
    let (mut wait, wait_log) = spawn("wait");
    std::thread::sleep(Duration::from_secs(2));
    coord.kill9();

    for (name, p, log) in [("watch", &mut watch, watch_log), ("wait", &mut wait, wait_log)] {
        let status = p
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("rollout {name} still runs 20 s after the coordinator died"));
        std::thread::sleep(Duration::from_millis(100)); // the reader thread drains the pipe
        let err = log.lines().join("\n");
        assert_eq!(status.code(), Some(3), "rollout {name}: {err}");
        assert!(
            err.contains("lost the connection to the coordinator at") && err.contains("rollout held"),
            "rollout {name}: {err}"
        );
    }
    drop(agent);
}

#[test]
fn unknown_phases_are_refused_with_the_closest() {
    let (code, _, err) = aviary("127.0.0.1:1", &["canaries", "--phase", "progresing"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown phase (did you mean Progressing?)"), "{err}");
}

#[test]
fn conflicting_flags_are_refused() {
    for args in [
        &["canaries", "--agent", "http://127.0.0.1:1", "--cluster", "a"][..],
        &["canaries", "--agent", "http://127.0.0.1:1", "--region", "r"],
        &["agent", "--local", "x", "--state-dir", "y", "--leader-election"],
        &["agent", "--local", "x", "--state-dir", "y", "--watch-cache"],
        &["agent", "--local", "x", "--state-dir", "y", "--kubeconfig", "k"],
        &["coordinator", "--kubeconfig", "k", "--in-cluster"],
        &[
            "coordinator",
            "--insecure",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--client-ca",
            "a",
        ],
    ] {
        let (code, _, err) = aviary("127.0.0.1:1", args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
    for args in [
        &["coordinator", "--namespace", "fleet"][..],
        &["agent", "--leader-election-namespace", "x"],
        &["rollout", "delete", "r1", "--reason", "why"],
    ] {
        let (code, _, err) = aviary("127.0.0.1:1", args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("required arguments were not provided"),
            "{args:?}: {err}"
        );
    }
    // --actor belongs to the verbs only.
    let (code, _, err) = aviary("127.0.0.1:1", &["rollout", "list", "--actor", "me"]);
    assert_eq!(code, 2, "{err}");
}
