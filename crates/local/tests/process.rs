//! The supervisor with real processes: the compiled sample app and small shell scripts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_local::process::{
    FailureKind, GroupSpec, GroupStatus, ProcessGroup, ProcessSupervisor, ProcessSupervisorConfig,
};
use aviary_testkit::process::alive;
use common::{client, eventually, get};
use http::StatusCode;

const SAMPLE_APP: &str = env!("CARGO_BIN_EXE_aviary-sample-app");
const WAIT: Duration = Duration::from_secs(20);

fn fast_config() -> ProcessSupervisorConfig {
    ProcessSupervisorConfig {
        grace_period: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        probe_interval: Duration::from_millis(100),
        ..ProcessSupervisorConfig::default()
    }
}

/// One replica of `sh -c SCRIPT` as group `name`.
fn sh(name: &str, script: &str) -> GroupSpec {
    spec(name, &["sh", "-c", script], 1)
}

fn spec(name: &str, command: &[&str], replicas: u32) -> GroupSpec {
    GroupSpec {
        name: name.to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        replicas,
        readiness_path: "/readyz".to_owned(),
        version: "6.0.1".to_owned(),
    }
}

fn sample_app_spec(name: &str, replicas: u32) -> GroupSpec {
    spec(
        name,
        &[SAMPLE_APP, "--port", "{{port}}", "--version", "{{version}}"],
        replicas,
    )
}

/// A supervisor with [`fast_config`] running `spec`.
fn start(spec: GroupSpec) -> (ProcessSupervisor, ProcessGroup) {
    let supervisor = ProcessSupervisor::new(fast_config());
    let group = supervisor.start(spec).unwrap();
    (supervisor, group)
}

async fn all_gone(pids: &[u32]) -> bool {
    let pids = pids.to_vec();
    eventually(Duration::from_secs(10), move || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !alive(*p)) }
    })
    .await
}

async fn ready(group: &ProcessGroup) -> GroupStatus {
    group
        .wait_for(WAIT, GroupStatus::is_ready)
        .await
        .unwrap_or_else(|s| panic!("not ready in time: {s:#?}"))
}

fn pids(status: &GroupStatus) -> Vec<u32> {
    status.processes.iter().filter_map(|p| p.pid).collect()
}

#[tokio::test]
async fn replicas_become_ready_on_their_own_ports_and_stop() {
    let (_supervisor, group) = start(sample_app_spec("test/podinfo-primary", 2));
    let status = ready(&group).await;
    assert_eq!(
        (status.replicas, status.ready, status.last_error.clone()),
        (2, 2, None)
    );
    assert_eq!(status.backends.len(), 2);
    assert_ne!(status.backends[0], status.backends[1]);
    let c = client();
    for addr in &status.backends {
        // `{{version}}` and `{{port}}` were expanded.
        let reply = get(&c, *addr, "/version", &[]).await;
        assert_eq!(
            (reply.status, reply.json()["version"].as_str()),
            (StatusCode::OK, Some("6.0.1"))
        );
    }
    let pids = pids(&status);
    assert_eq!(pids.len(), 2);
    group.stop().await;
    assert!(all_gone(&pids).await, "processes survived stop: {pids:?}");
    let stopped = group.status();
    assert!(
        stopped.stopped && stopped.ready == 0 && stopped.backends.is_empty(),
        "{stopped:#?}"
    );
}

#[tokio::test]
async fn a_killed_process_is_restarted() {
    let (supervisor, group) = start(sample_app_spec("test/podinfo-canary", 1));
    let before = ready(&group).await;
    let old_pid = before.processes[0].pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let after = group
        .wait_for(WAIT, |s| {
            s.is_ready() && s.processes[0].pid.is_some_and(|p| p != old_pid)
        })
        .await
        .unwrap_or_else(|s| panic!("not restarted: {s:#?}"));
    assert_eq!(after.processes[0].restarts, 1);
    assert_eq!(after.last_error, None, "a ready replica has no error");
    let reply = get(&client(), after.backends[0], "/readyz", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    supervisor.shutdown().await;
    assert!(all_gone(&[after.processes[0].pid.unwrap()]).await);
}

#[tokio::test]
async fn a_crash_loop_is_reported_with_the_last_output() {
    let (supervisor, group) = start(sh(
        "test/broken",
        "echo starting on {{port}}; echo 'fatal: no config' >&2; exit 3",
    ));
    let status = group
        .wait_for(WAIT, |s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.kind == FailureKind::CrashLoop)
        })
        .await
        .unwrap_or_else(|s| panic!("no crash loop reported: {s:#?}"));
    let error = status.last_error.unwrap();
    assert!(error.kind.is_fatal());
    assert!(
        error
            .message
            .starts_with("process group test/broken: replica 0 is crash-looping"),
        "{}",
        error.message
    );
    assert!(error.message.contains("exited with code 3"), "{}", error.message);
    assert!(
        error.output.iter().any(|l| l == "fatal: no config"),
        "{:?}",
        error.output
    );
    assert!(
        error.output.iter().any(|l| l.starts_with("starting on ")),
        "{:?}",
        error.output
    );
    assert!(error.to_string().contains("last output:\n"));
    assert_eq!(status.ready, 0);
    supervisor.shutdown().await;
}

/// Issue 15: output lines reach error messages (and so the canary's events) bounded, with a
/// marker; the log file still gets every byte.
#[tokio::test]
async fn long_output_lines_are_truncated_in_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(ProcessSupervisorConfig {
        log_dir: Some(dir.path().to_owned()),
        ..fast_config()
    });
    let group = supervisor
        .start(sh(
            "test/chatty",
            "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo short; exit 3",
        ))
        .unwrap();
    let status = group
        .wait_for(WAIT, |s| {
            s.last_error.as_ref().is_some_and(|e| e.output.len() >= 2)
        })
        .await
        .unwrap_or_else(|s| panic!("no error with output: {s:#?}"));
    let output = status.last_error.unwrap().output;
    let long = output
        .iter()
        .find(|l| l.starts_with("xxx"))
        .expect("the long line");
    assert!(long.len() < 1100, "kept {} bytes", long.len());
    assert!(
        long.ends_with("… [line truncated]"),
        "{}",
        &long[long.len() - 40..]
    );
    assert!(output.iter().any(|l| l == "short"), "{output:?}");
    supervisor.shutdown().await;
    let logged = std::fs::read_to_string(dir.path().join("test_chatty-0.log")).unwrap();
    assert!(
        logged.lines().any(|l| l.len() == 1_000_000),
        "the log keeps the whole line"
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_clear_error() {
    let (supervisor, group) = start(spec(
        "test/typo",
        &["/nonexistent/podinfo", "--port", "{{port}}"],
        2,
    ));
    let status = group
        .wait_for(WAIT, |s| s.last_error.is_some())
        .await
        .unwrap_or_else(|s| panic!("no error reported: {s:#?}"));
    let error = status.last_error.unwrap();
    assert_eq!(error.kind, FailureKind::SpawnFailed);
    assert!(
        error.message.starts_with(
            "process group test/typo: cannot start `/nonexistent/podinfo`: No such file or directory"
        ),
        "{}",
        error.message
    );
    assert!(error.message.contains("check spec.command"));
    // An invalid spec is refused up front.
    let err = supervisor
        .start(spec("test/empty", &[], 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.command"), "{err}");
    supervisor.shutdown().await;
}

#[tokio::test]
async fn stop_kills_the_whole_process_group_even_when_sigterm_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessSupervisorConfig {
        grace_period: Duration::from_millis(300),
        ..fast_config()
    };
    let supervisor = ProcessSupervisor::new(config);
    // The shell starts a background child in the same process group, then becomes the app.
    let bg = dir.path().join("bg.pid");
    let script = format!(
        "sleep 300 & echo $! > '{}'; exec '{SAMPLE_APP}' --port {{{{port}}}}",
        bg.display()
    );
    let app = supervisor
        .start(spec("test/with-child", &["sh", "-c", &script], 1))
        .unwrap();
    // A process that ignores SIGTERM (and so do its children).
    let stubborn = supervisor
        .start(spec(
            "test/stubborn",
            &["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"],
            1,
        ))
        .unwrap();
    let app_status = ready(&app).await;
    let stubborn_pid = stubborn
        .wait_for(WAIT, |s| s.processes[0].pid.is_some())
        .await
        .unwrap()
        .processes[0]
        .pid
        .unwrap();
    let bg_pid: u32 = std::fs::read_to_string(&bg).unwrap().trim().parse().unwrap();
    let mut pids = pids(&app_status);
    pids.extend([bg_pid, stubborn_pid]);
    assert!(pids.iter().all(|p| alive(*p)));

    supervisor.shutdown().await;
    assert!(all_gone(&pids).await, "processes survived shutdown: {pids:?}");
}

#[tokio::test]
async fn dropping_the_supervisor_leaves_no_orphans() {
    let (supervisor, group) = start(sample_app_spec("test/dropped", 2));
    let pids = pids(&ready(&group).await);
    drop(supervisor);
    assert!(
        all_gone(&pids).await,
        "processes survived the supervisor: {pids:?}"
    );
}

#[tokio::test]
async fn output_goes_to_the_log_and_env_values_are_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessSupervisorConfig {
        log_dir: Some(dir.path().to_owned()),
        ..fast_config()
    };
    let supervisor = ProcessSupervisor::new(config);
    let mut spec = sh(
        "test/podinfo-canary",
        &format!("echo \"$GREETING\"; exec '{SAMPLE_APP}' --port {{{{port}}}}"),
    );
    spec.env.insert(
        "GREETING".to_owned(),
        "hello from {{version}} on {{port}}".to_owned(),
    );
    let group = supervisor.start(spec).unwrap();
    let status = ready(&group).await;
    let port = status.backends[0].port();
    let log = dir.path().join("test_podinfo-canary-0.log");
    let expected = format!("hello from 6.0.1 on {port}");
    let logged = eventually(Duration::from_secs(5), || {
        let log = log.clone();
        let expected = expected.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|text| text.lines().any(|l| l == expected)) }
    })
    .await;
    assert!(logged, "{:?}", std::fs::read_to_string(&log));
    supervisor.shutdown().await;
}

/// Issue 15: a workload starts with a clean environment. Every variable of this test process
/// that is not on the allow-list (cargo sets several `CARGO_*`) stays out of it; `PATH` and the
/// spec's own variables are in.
#[tokio::test]
async fn workloads_get_a_clean_environment() {
    let leaked: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !aviary_local::process::inherited(k))
        // `sh` sets these itself.
        .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str()))
        .collect();
    assert!(
        !leaked.is_empty(),
        "the test needs a variable outside the allow-list in its own environment"
    );
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("env");
    let supervisor = ProcessSupervisor::new(fast_config());
    let mut spec = sh(
        "test/env",
        &format!(
            "env > '{}'; exec '{SAMPLE_APP}' --port {{{{port}}}}",
            dump.display()
        ),
    );
    spec.env.insert("GIVEN".to_owned(), "v{{version}}".to_owned());
    let group = supervisor.start(spec).unwrap();
    ready(&group).await;
    let text = std::fs::read_to_string(&dump).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &leaked {
        assert!(
            !names.contains(&name.as_str()),
            "{name} reached the workload: {text}"
        );
    }
    assert!(text.lines().any(|l| l == "GIVEN=v6.0.1"), "{text}");
    assert!(names.contains(&"PATH"), "{text}");
    supervisor.shutdown().await;
}

#[tokio::test]
async fn an_unready_process_reports_why() {
    let supervisor = ProcessSupervisor::new(fast_config());
    let mut spec = sample_app_spec("test/wrong-probe", 1);
    spec.readiness_path = "/status/503".to_owned();
    let group = supervisor.start(spec).unwrap();
    let status = group
        .wait_for(WAIT, |s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.message.contains("answered 503"))
        })
        .await
        .unwrap_or_else(|s| panic!("{s:#?}"));
    let error = status.last_error.unwrap();
    assert_eq!(error.kind, FailureKind::NotReady);
    assert!(!error.kind.is_fatal());
    assert!(error.message.contains("/status/503"), "{}", error.message);
    assert_eq!(status.ready, 0);
    supervisor.shutdown().await;
}
