//! The sample app over real HTTP, and as a real process (signals, orphaning).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aviary_testkit::process::alive;
use common::{client, get, h2c_client, request_count, sample_app};
use http::{StatusCode, Version};

#[tokio::test]
async fn routes_answer_like_podinfo() {
    let app = sample_app("6.0.1", 0.0, 0).await;
    let addr = app.local_addr();
    let c = client();

    let index = get(&c, addr, "/", &[]).await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "application/json; charset=utf-8");
    let json = index.json();
    assert_eq!(json["version"], "6.0.1");
    assert_eq!(json["goos"], "linux");
    assert_eq!(json["message"], "greetings from podinfo v6.0.1");
    assert!(!json["hostname"].as_str().unwrap().is_empty());

    assert_eq!(get(&c, addr, "/version", &[]).await.json()["version"], "6.0.1");
    for path in ["/healthz", "/readyz"] {
        let reply = get(&c, addr, path, &[]).await;
        assert_eq!(
            (reply.status, reply.json()["status"].as_str()),
            (StatusCode::OK, Some("OK"))
        );
    }
    for (path, status) in [
        ("/status/503", StatusCode::SERVICE_UNAVAILABLE),
        ("/status/201", StatusCode::CREATED),
        ("/status/abc", StatusCode::BAD_REQUEST),
        ("/nothing-here", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(get(&c, addr, path, &[]).await.status, status, "{path}");
    }

    let started = Instant::now();
    let delayed = get(&c, addr, "/delay/1", &[]).await;
    assert_eq!(delayed.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(1));

    // h2c prior knowledge works too.
    let h2 = get(&h2c_client(), addr, "/version", &[]).await;
    assert_eq!((h2.status, h2.version), (StatusCode::OK, Version::HTTP_2));

    let metrics = get(&c, addr, "/metrics", &[]).await.body;
    assert!(
        metrics.contains(r#"http_request_duration_seconds_bucket{le="0.005",method="GET",path="/status/{code}",status="503"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"http_request_duration_seconds_count{method="GET",path="/delay/{seconds}",status="200"} 1"#
    ));
    assert!(metrics.contains(r#"http_request_duration_seconds_sum{method="GET",path="/",status="200"}"#));
    assert_eq!(request_count(&c, addr, "/version", 200).await, 2);
    assert_eq!(request_count(&c, addr, "unmatched", 404).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn error_rate_and_latency_are_injected() {
    let c = client();
    let broken = sample_app("2", 1.0, 0).await;
    let reply = get(&c, broken.local_addr(), "/", &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Health and readiness never fail, so a faulty version still becomes ready.
    assert_eq!(
        get(&c, broken.local_addr(), "/readyz", &[]).await.status,
        StatusCode::OK
    );
    broken.stop().await;

    let half = sample_app("2", 0.5, 0).await;
    let mut errors = 0;
    for _ in 0..400 {
        if get(&c, half.local_addr(), "/", &[]).await.status == StatusCode::INTERNAL_SERVER_ERROR {
            errors += 1;
        }
    }
    assert!(
        (140..=260).contains(&errors),
        "{errors} of 400 failed with --error-rate 0.5"
    );
    half.stop().await;

    let slow = sample_app("3", 0.0, 150).await;
    let started = Instant::now();
    assert_eq!(
        get(&c, slow.local_addr(), "/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    slow.stop().await;
}

async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    common::eventually(timeout, || async move { !alive(pid) }).await
}

#[tokio::test]
async fn sigterm_stops_the_process() {
    let port = aviary_testkit::net::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aviary-sample-app"))
        .args(["--port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The signal handlers are installed before the app listens.
    let listening = common::eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(listening, "the sample app did not start listening on {port}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn an_orphaned_sample_app_exits() {
    // sh starts the app in the background, prints its pid and exits: the app is orphaned.
    let script = format!(
        "'{}' --port 0 >/dev/null 2>&1 & echo $!; sleep 1",
        env!("CARGO_BIN_EXE_aviary-sample-app")
    );
    let output = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)).await,
        "orphaned sample app {pid} is still running"
    );
}
