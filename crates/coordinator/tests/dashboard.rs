//! The web dashboard's HTTP API over loopback (`Coordinator::serve_dashboard`) with simulated
//! agents: the embedded page, the list, the event stream following a rollout through a manual
//! approval to its end, actions going through the Fleet service (its refusals included), a
//! read-only dashboard whose viewer is refused, the gRPC API's mutual TLS, tokens and roles on
//! HTTPS, and a stream open on a follower that turns live when that replica takes over (two
//! replicas on a real etcd). The page itself is driven in Chromium by
//! crates/cli/tests/dashboard_browser.rs.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aviary_coordinator::security::Role;
use aviary_coordinator::security::auth::token_hash;
use aviary_coordinator::security::certs::{self, DEFAULT_TRUST_DOMAIN as TD};
use aviary_coordinator::{Coordinator, DashboardConfig};
use aviary_proto::v1;
use common::*;
use serde_json::{Value, json};

/// Simulated agents ticking every 100 ms (real time: the test reads a live HTTP stream).
fn quick_agent(c: &Coordinator, cluster: &str, region: &str) -> aviary_coordinator::sim::SimAgent {
    let mut cfg = agent_config(c, cluster, region);
    cfg.tick = Duration::from_millis(100);
    if c.url().starts_with("http://") {
        // A plaintext coordinator: no certificate, also for the bare leader address a
        // follower hands out (with a CA it would be tried as https://).
        cfg.tls = Default::default();
    }
    aviary_coordinator::sim::SimAgent::spawn(cfg)
}

/// The dashboard's URL without the final slash.
/// A coordinator without TLS: the dashboard's own roles (`--dashboard-read-only` or admin) as
/// they are on an `--insecure` coordinator; behind mutual TLS (`common::coordinator`) the
/// dashboard takes the gRPC API's identities instead (the mutual-TLS test below).
async fn plaintext() -> Coordinator {
    Coordinator::start(aviary_coordinator::CoordinatorConfig::in_memory(
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap()
}

async fn dashboard(c: &Coordinator, read_only: bool) -> String {
    let addr: SocketAddr = c
        .serve_dashboard("127.0.0.1:0".parse().unwrap(), DashboardConfig { read_only })
        .await
        .unwrap();
    c.dashboard_url(addr).trim_end_matches('/').to_string()
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
        Self::open_with(&reqwest::Client::new(), url).await
    }

    async fn open_with(client: &reqwest::Client, url: &str) -> Self {
        let response = client.get(url).send().await.unwrap();
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
    let c = plaintext().await;
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
        json!({"caller": {"name": "anonymous", "role": "admin"}, "canAct": true, "signedIn": false, "leading": true, "leader": null})
    );

    create_r1(&c, GATED).await;
    let mut events = r1_events(&web, json!({"leading": true, "leader": null})).await;
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
    let kinds = aviary_testkit::json::strings(&r["history"], "kind");
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
    let c = plaintext().await;
    let web = dashboard(&c, true).await;
    let _agents = [quick_agent(&c, "us-1", "us-east-1")];
    wait_connected(&c, 1).await;
    let (_, session) = get_json(&format!("{web}/api/session")).await;
    assert_eq!(session["caller"], json!({"name": "anonymous", "role": "viewer"}));
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
                "{action} rollout r1: the dashboard is read-only (--dashboard-read-only): anonymous may only view here; use `aviary rollout ...` with their own credentials"
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

/// A CA, a serving certificate for 127.0.0.1, an agent, a viewer (alice) and an operator (bob)
/// certificate, and a token file with a viewer, an operator and an admin token.
/// Two waves: `first` (us-east-1), then `rest` behind a manual approval.
const GATED: &str =
    "  waves:\n    - {name: first, regions: [us-east-1]}\n    - {name: rest, approval: manual}\n";

/// The event stream of rollout `r1` at the dashboard `web`; its first event says which
/// replica answers (`replica`).
async fn r1_events(web: &str, replica: serde_json::Value) -> Events {
    let mut events = Events::open(&format!("{web}/api/rollouts/r1/events")).await;
    assert_eq!(events.next().await, Some(("replica".into(), replica)));
    events
}

fn pki(dir: &Path) {
    certs::init(dir, &[]).unwrap();
    certs::issue_agent(dir, "us-1", TD).unwrap();
    certs::issue_user(dir, "alice", Role::Viewer, TD).unwrap();
    certs::issue_user(dir, "bob", Role::Operator, TD).unwrap();
    std::fs::write(
        dir.join("tokens"),
        format!(
            "{} wall viewer\n{} oncall operator\n{} ci admin\n",
            token_hash(WALL_TOKEN),
            token_hash(ONCALL_TOKEN),
            token_hash(CI_TOKEN)
        ),
    )
    .unwrap();
}

const WALL_TOKEN: &str = "wall-0123456789abcdef";
const ONCALL_TOKEN: &str = "oncall-0123456789abcdef";
const CI_TOKEN: &str = "ci-admin-0123456789abcdef";

/// An HTTPS client trusting the fleet's CA, with user `user`'s client certificate if given.
fn https(dir: &Path, user: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join(certs::CA)).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca);
    if let Some(u) = user {
        let mut pem = std::fs::read(dir.join(format!("{u}.pem"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{u}-key.pem"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_mutual_tls_the_dashboard_has_the_grpc_apis_identities_and_roles() {
    use aviary_coordinator::client::{ClientTls, fleet_client_with};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    let c = tls_coordinator(dir).await;
    let web = dashboard(&c, false).await;
    assert!(web.starts_with("https://127.0.0.1:"), "{web}");
    let mut cfg = agent_config(&c, "us-1", "us-east-1");
    cfg.tick = Duration::from_millis(100);
    cfg.tls = ClientTls::from_dir(dir, "us-1");
    let _agent = aviary_coordinator::sim::SimAgent::spawn(cfg);

    // Plain HTTP gets no answer from the HTTPS listener.
    let plain = web.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/api/session")).await.is_err());

    // Without credentials: the page (it shows the sign-in form), nothing else.
    let anon = https(dir, None);
    let (status, _, _) = send(anon.get(format!("{web}/"))).await;
    assert_eq!(status, 200);
    for path in [
        "/api/session",
        "/api/rollouts",
        "/api/rollouts/r1",
        "/api/rollouts/r1/events",
    ] {
        let (status, e, _) = send(anon.get(format!("{web}{path}"))).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{path}: {e}"
        );
    }
    let (status, e, _) = send(
        anon.post(format!("{web}/api/rollouts/r1/approve"))
            .json(&json!({"wave": "all"})),
    )
    .await;
    assert_eq!(status, 401, "{e}");
    let (status, e, _) = send(
        anon.get(format!("{web}/api/session"))
            .bearer_auth("not-a-token-of-the-file"),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("unknown bearer token")));

    // An agent's certificate opens AgentLink only.
    let (status, e, _) = send(https(dir, Some("us-1")).get(format!("{web}/api/session"))).await;
    assert_eq!(status, 403, "{e}");

    // The rollout is created over gRPC by an admin token.
    let admin = ClientTls {
        ca: Some(dir.join(certs::CA)),
        token: Some(CI_TOKEN.into()),
        ..Default::default()
    };
    fleet_client_with(&c.url(), &admin)
        .unwrap()
        .create_rollout(v1::CreateRolloutRequest {
            manifest: manifest("r1", "  waves: [{name: all, approval: manual}]\n"),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A viewer's certificate: sees, watches, is refused by the Fleet service's own check.
    let alice = https(dir, Some("alice"));
    let (status, session, _) = send(alice.get(format!("{web}/api/session"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        session,
        json!({"caller": {"name": "user:alice", "role": "viewer"}, "canAct": false, "signedIn": false, "leading": true, "leader": null})
    );
    let mut events = Events::open_with(&alice, &format!("{web}/api/rollouts/r1/events")).await;
    events
        .until("the wave to wait for approval", |r| {
            r["waves"][0]["phase"] == "WaitingApproval"
        })
        .await;
    let (status, e, _) = send(
        alice
            .post(format!("{web}/api/rollouts/r1/approve"))
            .json(&json!({"wave": "all"})),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["code"], "PERMISSION_DENIED");
    assert_eq!(
        e["error"],
        "ApproveWave needs role operator or higher; user:alice has role viewer"
    );
    // A viewer token in the header: the same.
    let (_, session, _) = send(anon.get(format!("{web}/api/session")).bearer_auth(WALL_TOKEN)).await;
    assert_eq!(session["caller"], json!({"name": "token:wall", "role": "viewer"}));

    // Signing in with an operator token: an HttpOnly, Secure, SameSite=Strict cookie.
    let (status, e, _) = send(
        anon.post(format!("{web}/api/session"))
            .json(&json!({"token": "wrong-token-0123"})),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("unknown bearer token")));
    let (status, session, headers) = send(
        anon.post(format!("{web}/api/session"))
            .json(&json!({"token": ONCALL_TOKEN})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        session["caller"],
        json!({"name": "token:oncall", "role": "operator"})
    );
    assert_eq!(session["canAct"], true);
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert_eq!(
        set_cookie,
        format!("aviary_token={ONCALL_TOKEN}; Path=/; HttpOnly; Secure; SameSite=Strict")
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (_, session, _) = send(anon.get(format!("{web}/api/session")).header("cookie", &cookie)).await;
    assert_eq!(session["signedIn"], true);
    // Abort needs admin, as on the gRPC API.
    let (status, e, _) = send(
        anon.post(format!("{web}/api/rollouts/r1/abort"))
            .header("cookie", &cookie)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        e["error"],
        "AbortRollout needs role admin or higher; token:oncall has role operator"
    );
    // An operator's certificate behind --dashboard-read-only is a viewer there.
    let read_only = dashboard(&c, true).await;
    let bob = https(dir, Some("bob"));
    let (status, e, _) = send(
        bob.post(format!("{read_only}/api/rollouts/r1/approve"))
            .json(&json!({"wave": "all"})),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("the dashboard is read-only"),
        "{e}"
    );
    // The operator approves from the page; the history records the authenticated identity.
    let (status, r, _) = send(
        anon.post(format!("{web}/api/rollouts/r1/approve"))
            .header("cookie", &cookie)
            .json(&json!({"wave": "all"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["waves"][0]["approvedBy"], "token:oncall");
    let (r, _) = events
        .until("the rollout to succeed", |r| r["phase"] == "Succeeded")
        .await;
    let approved = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "wave-approved")
        .unwrap();
    assert_eq!(
        (approved["actor"].as_str(), approved["comment"].as_str()),
        (Some("token:oncall"), Some("dashboard"))
    );
    // Signing out clears the cookie.
    let (_, _, headers) = send(
        anon.delete(format!("{web}/api/session"))
            .header("cookie", &cookie),
    )
    .await;
    assert!(headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    c.shutdown().await.unwrap();
}

/// One coordinator replica on `etcd` with its dashboard: (replica, its leadership, dashboard URL).
async fn etcd_replica(
    etcd: &aviary_testkit::etcd::LocalEtcd,
) -> (
    Coordinator,
    std::sync::Arc<aviary_coordinator::etcd::EtcdLeadership>,
    String,
) {
    use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
    let mut cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    cfg.lease_ttl = Duration::from_secs(3);
    let leadership = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    let store = std::sync::Arc::new(EtcdStore::new(&cfg, &leadership));
    let mut config = aviary_coordinator::CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap());
    config.heartbeat = Duration::from_secs(1);
    config.store = store;
    config.leadership = leadership.clone();
    let c = Coordinator::start(config).await.unwrap();
    let web = dashboard(&c, false).await;
    (c, leadership, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_on_the_follower_turns_live_when_it_takes_over() {
    use aviary_coordinator::Leadership as _;
    let Some(bin) = aviary_testkit::etcd::LocalEtcd::binary_or_skip("the dashboard failover") else {
        return;
    };
    let etcd = tokio::task::spawn_blocking(move || aviary_testkit::etcd::LocalEtcd::start(&bin, 1))
        .await
        .unwrap()
        .unwrap();
    let (a, la, _) = etcd_replica(&etcd).await;
    eventually("a to lead", Duration::from_secs(10), || async { la.check().ok() }).await;
    let (b, lb, web_b) = etcd_replica(&etcd).await;
    let a_addr = a.local_addr().to_string();
    eventually("b to follow a", Duration::from_secs(10), || async {
        lb.check()
            .is_err_and(|e| e.to_string().contains(&a_addr))
            .then_some(())
    })
    .await;
    let _agents = [
        quick_agent(&b, "us-1", "us-east-1"),
        quick_agent(&b, "eu-1", "eu-west-1"),
    ];
    wait_connected(&a, 2).await;
    create_r1(&a, GATED).await;

    // On the follower: the stored rollout, refused actions with the leader's address.
    let mut events = r1_events(&web_b, json!({"leading": false, "leader": a_addr})).await;
    events
        .until("the follower to show the gated wave", |r| {
            r["waves"][1]["phase"] == "WaitingApproval"
        })
        .await;
    let (status, e) = post(
        &format!("{web_b}/api/rollouts/r1/approve"),
        json!({"wave": "rest"}),
    )
    .await;
    assert_eq!(status, 503, "{e}");
    assert_eq!(
        (e["code"].as_str(), e["leader"].as_str()),
        (Some("UNAVAILABLE"), Some(a_addr.as_str()))
    );

    // The leader goes; the same stream says this replica leads and goes on live (between
    // the two terms it may say that nobody leads).
    a.shutdown().await.unwrap();
    let replicas = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        loop {
            match events.next().await {
                Some((event, data)) if event == "replica" => {
                    seen.push(data.clone());
                    if data["leading"] == true {
                        return seen;
                    }
                }
                Some(_) => {}
                None => panic!("the stream ended; replica events: {seen:?}"),
            }
        }
    })
    .await
    .expect("this replica to lead within 20 s of the leader's shutdown");
    println!("replica events after the shutdown: {replicas:?}");
    assert_eq!(replicas.last(), Some(&json!({"leading": true, "leader": null})));
    assert!(
        replicas[..replicas.len() - 1]
            .iter()
            .all(|r| r == &json!({"leading": false, "leader": null})),
        "{replicas:?}"
    );
    let (status, r) = post(
        &format!("{web_b}/api/rollouts/r1/approve"),
        json!({"wave": "rest"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (r, _) = events
        .until("the rollout to succeed on the new leader", |r| {
            r["phase"] == "Succeeded"
        })
        .await;
    assert_eq!(cell(&r, "eu-1")["phase"], "Succeeded");
    assert_eq!(events.next().await, Some(("end".into(), json!({}))));
    b.shutdown().await.unwrap();
}
