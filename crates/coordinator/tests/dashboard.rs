//! The web dashboard's HTTP API over loopback (`Coordinator::serve_dashboard`) with simulated
//! agents: the embedded page, the list, the event stream following a rollout through a manual
//! approval to its end, actions going through the Fleet service (its refusals included), and a
//! read-only dashboard whose viewer is refused. The page itself is driven in Chromium by
//! crates/cli/tests/dashboard_browser.rs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aviary_coordinator::{Coordinator, CoordinatorConfig, DashboardConfig};
use common::*;
use serde_json::{Value, json};

/// Simulated agents ticking every 100 ms (real time: the test reads a live HTTP stream).
fn quick_agent(c: &Coordinator, cluster: &str, region: &str) -> aviary_coordinator::sim::SimAgent {
    let mut cfg = agent_config(c, cluster, region);
    cfg.tick = Duration::from_millis(100);
    aviary_coordinator::sim::SimAgent::spawn(cfg)
}

async fn dashboard(c: &Coordinator, read_only: bool) -> String {
    let addr: SocketAddr = c
        .serve_dashboard("127.0.0.1:0".parse().unwrap(), DashboardConfig { read_only })
        .await
        .unwrap();
    format!("http://{addr}")
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Server-Sent Events, parsed as they arrive.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(url: &str) -> Self {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200);
        let ct = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next (event, data), or None when the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Rollout events until one satisfies `pred` (panics if the stream ends first).
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        while let Some((event, data)) = self.next().await {
            if event == "rollout" {
                seen.push(data.clone());
                if pred(&data) {
                    return (data, seen);
                }
            }
        }
        panic!("the stream ended before {what}; last: {:?}", seen.last());
    }
}

fn cell<'a>(r: &'a Value, cluster: &str) -> &'a Value {
    r["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["clusters"].as_array().unwrap())
        .find(|c| c["cluster"] == cluster)
        .unwrap()
}

#[tokio::test]
async fn the_page_watches_a_rollout_live_and_acts_through_the_fleet_api() {
    // Plaintext: the dashboard's HTTP has no client identity yet, so behind mutual TLS it is
    // read-only (the next test); its actions can only be exercised without TLS.
    let c = Coordinator::start(CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let web = dashboard(&c, false).await;
    let _agents = [
        quick_agent(&c, "us-1", "us-east-1"),
        quick_agent(&c, "eu-1", "eu-west-1"),
    ];
    wait_connected(&c, 2).await;

    // The embedded page and its script.
    let page = reqwest::get(format!("{web}/")).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains(r#"<script src="app.js">"#));
    let js = reqwest::get(format!("{web}/app.js")).await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("new EventSource("));
    let (status, session) = get_json(&format!("{web}/api/session")).await;
    assert_eq!(status, 200);
    assert_eq!(
        session,
        json!({"caller": {"name": "dashboard", "role": "admin"}, "canAct": true, "leading": true, "leader": null})
    );

    let spec = "  waves:\n    - {name: first, regions: [us-east-1]}\n    - {name: rest, approval: manual}\n";
    create(&c, &manifest("r1", spec)).await.unwrap();
    let mut events = Events::open(&format!("{web}/api/rollouts/r1/events")).await;
    assert_eq!(
        events.next().await,
        Some(("replica".into(), json!({"leading": true, "leader": null})))
    );
    let (r, seen) = events
        .until("the second wave waits for approval", |r| {
            r["waves"][1]["phase"] == "WaitingApproval"
        })
        .await;
    // The cell of us-1 changed live: seen progressing, then succeeded.
    let us1: Vec<&str> = seen
        .iter()
        .map(|r| cell(r, "us-1")["phase"].as_str().unwrap())
        .collect();
    assert!(us1.contains(&"Progressing"), "{us1:?}");
    assert_eq!(cell(&r, "us-1")["phase"], "Succeeded");
    assert_eq!(cell(&r, "eu-1")["phase"], "Pending");

    // The Fleet service's refusals, as JSON errors.
    let (status, e) = post(&format!("{web}/api/rollouts/r1/approve"), json!({"wave": "nope"})).await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["code"], "NOT_FOUND");
    assert!(
        e["error"].as_str().unwrap().contains("has no wave \"nope\""),
        "{e}"
    );
    let (status, e) = post(&format!("{web}/api/rollouts/r1/frobnicate"), json!({})).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        &format!("{web}/api/rollouts/r1/retry"),
        json!({"cluster": "us-1"}),
    )
    .await;
    assert_eq!(status, 409, "retrying a succeeded cluster: {e}");
    assert_eq!(e["code"], "FAILED_PRECONDITION");

    let (status, r) = post(&format!("{web}/api/rollouts/r1/approve"), json!({"wave": "rest"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["waves"][1]["approvedBy"], "dashboard");
    let (r, _) = events
        .until("the rollout succeeds", |r| r["phase"] == "Succeeded")
        .await;
    assert_eq!(cell(&r, "eu-1")["phase"], "Succeeded");
    let kinds: Vec<&str> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"wave-approved"), "{kinds:?}");
    assert_eq!(events.next().await, Some(("end".into(), json!({}))));
    assert_eq!(events.next().await, None, "the stream closes after the end");

    let (_, list) = get_json(&format!("{web}/api/rollouts")).await;
    assert_eq!(list["rollouts"][0]["name"], "r1");
    assert_eq!(list["rollouts"][0]["phase"], "Succeeded");
    let (status, e) = get_json(&format!("{web}/api/rollouts/nope")).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("NOT_FOUND")), "{e}");
    let mut unknown = Events::open(&format!("{web}/api/rollouts/nope/events")).await;
    let (event, data) = unknown.next().await.unwrap();
    assert_eq!(event, "problem");
    assert!(
        data["error"].as_str().unwrap().contains("rollout nope not found"),
        "{data}"
    );
    assert_eq!(unknown.next().await, Some(("end".into(), json!({}))));

    // An open stream does not hold up the shutdown.
    let _open = Events::open(&format!("{web}/api/rollouts/r1/events")).await;
    tokio::time::timeout(Duration::from_secs(10), c.shutdown())
        .await
        .expect("shutdown within 10 s")
        .unwrap();
}

#[tokio::test]
async fn a_read_only_dashboard_shows_but_refuses_every_action() {
    // Behind mutual TLS the dashboard is read-only without being asked.
    let c = coordinator().await;
    let web = dashboard(&c, false).await;
    let _agents = [quick_agent(&c, "us-1", "us-east-1")];
    wait_connected(&c, 1).await;
    let (_, session) = get_json(&format!("{web}/api/session")).await;
    assert_eq!(session["caller"], json!({"name": "viewer", "role": "viewer"}));
    assert_eq!(session["canAct"], false);

    create(&c, &manifest("r1", "  waves: [{name: all, approval: manual}]\n"))
        .await
        .unwrap();
    for (action, body) in [
        ("approve", json!({"wave": "all"})),
        ("pause", json!({})),
        ("resume", json!({})),
        ("abort", json!({})),
        ("skip", json!({"cluster": "us-1"})),
        ("retry", json!({"cluster": "us-1"})),
    ] {
        let (status, e) = post(&format!("{web}/api/rollouts/r1/{action}"), body).await;
        assert_eq!(status, 403, "{action}: {e}");
        assert_eq!(e["code"], "PERMISSION_DENIED");
        assert_eq!(
            e["error"],
            format!(
                "{action} rollout r1: viewer is a viewer; it needs the operator role (this dashboard is read-only)"
            )
        );
    }
    // Reads work and nothing was done.
    let (status, r) = get_json(&format!("{web}/api/rollouts/r1")).await;
    assert_eq!(status, 200);
    assert_eq!(r["waves"][0]["phase"], "WaitingApproval");
    assert_eq!(r["phase"], "Running");
    c.shutdown().await.unwrap();
}
