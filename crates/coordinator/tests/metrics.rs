//! `/metrics` of `Coordinator::serve_metrics` over real HTTP while simulated agents connect, a
//! rollout fails in its second wave and an agent goes away: the exact figures of the gauges and
//! the call counter (the Grafana test in crates/cli checks that every dashboard query finds them).

mod common;

use std::time::Duration;

use aviary_proto::v1;
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET /metrics` (HTTP/1.1, plain).
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("content-type: application/openmetrics-text"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF: {text}");
    text
}

/// The value of one sample line (`name{labels}`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn assert_samples(text: &str, want: &[(&str, f64)]) {
    for (series, value) in want {
        assert_eq!(sample(text, series), Some(*value), "{series} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn gauges_follow_the_fleet_and_calls_are_counted_by_method_and_code() {
    let c = coordinator().await;
    let addr = c.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut agents = vec![
        agent(&c, "us-1", "us-east-1"),
        agent(&c, "us-2", "us-east-1"),
        failing_agent(&c, "eu-1", "eu-west-1"),
    ];
    wait_connected(&c, 3).await;
    let text = scrape(addr).await;
    assert_samples(
        &text,
        &[
            ("aviary_coordinator_leader", 1.0),
            ("aviary_coordinator_agent_sessions", 3.0),
            (
                r#"aviary_fleet_clusters{region="us-east-1",connected="true"}"#,
                2.0,
            ),
            (
                r#"aviary_fleet_clusters{region="us-east-1",connected="false"}"#,
                0.0,
            ),
            (
                r#"aviary_fleet_clusters{region="eu-west-1",connected="true"}"#,
                1.0,
            ),
            (r#"aviary_fleet_rollouts{phase="Running"}"#, 0.0),
            (
                r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.AgentLink",grpc_method="Connect",grpc_code="OK"}"#,
                3.0,
            ),
        ],
    );

    create(&c, &manifest("r1", "  byRegion: [us-east-1, eu-west-1]\n"))
        .await
        .unwrap();
    let done = wait(&c, "r1").await;
    assert_eq!(done.phase, "Failed", "{}", done.message);
    let missing = client(&c)
        .get_rollout(v1::GetRolloutRequest { name: "r2".into() })
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    let text = scrape(addr).await;
    let r1 = r#"rollout="r1",canary="test/podinfo""#;
    assert_samples(
        &text,
        &[
            (r#"aviary_fleet_rollouts{phase="Failed"}"#, 1.0),
            (r#"aviary_fleet_rollouts{phase="Running"}"#, 0.0),
            (&format!("aviary_fleet_rollout_waves{{{r1}}}"), 2.0),
            (&format!("aviary_fleet_rollout_waves_succeeded{{{r1}}}"), 1.0),
            (
                &format!(r#"aviary_fleet_rollout_phase{{{r1},phase="Failed"}}"#),
                1.0,
            ),
            (
                &format!(r#"aviary_fleet_rollout_phase{{{r1},phase="Running"}}"#),
                0.0,
            ),
            (
                &format!(r#"aviary_fleet_rollout_clusters{{{r1},phase="Failed"}}"#),
                1.0,
            ),
            (
                r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.Fleet",grpc_method="CreateRollout",grpc_code="OK"}"#,
                1.0,
            ),
            (
                r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.Fleet",grpc_method="GetRollout",grpc_code="NotFound"}"#,
                1.0,
            ),
        ],
    );
    let clusters: f64 = text
        .lines()
        .filter(|l| l.starts_with(&format!("aviary_fleet_rollout_clusters{{{r1}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(clusters, 3.0, "every planned cluster in one phase:\n{text}");

    // An agent goes away: its cluster stays registered, disconnected.
    drop(agents.remove(1));
    eventually("us-2 to show disconnected", Duration::from_secs(60), || async {
        let text = scrape(addr).await;
        (sample(
            &text,
            r#"aviary_fleet_clusters{region="us-east-1",connected="false"}"#,
        ) == Some(1.0)
            && sample(&text, "aviary_coordinator_agent_sessions") == Some(2.0))
        .then_some(())
    })
    .await;
    c.shutdown().await.unwrap();
}
