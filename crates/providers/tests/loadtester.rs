//! The load tester over real HTTP: gates and their persistence across a restart, tasks (bash,
//! cmd with deduplication, the real `hey` against a sample app, `concord` and `ngrinder` against
//! local doubles of their servers' APIs), errors, metrics, shutdown.

mod common;

use common::{Reply, Seen, Server};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aviary_local::sample_app::{SampleApp, SampleAppArgs};
use aviary_providers::loadtester::{Config, Loadtester};
use common::bounded;
use regex::Regex;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn config(state_file: Option<&Path>) -> Config {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap());
    c.state_file = state_file.map(Path::to_path_buf);
    c
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.post_raw(path, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A counter or gauge from `/metrics`: the sum of the samples whose line contains every
    /// fragment.
    async fn metric(&self, name: &str, fragments: &[&str]) -> f64 {
        let (_, text) = self.get("/metrics").await;
        sum_metric(&text, name, fragments)
    }
}

/// Starts a load tester with `cfg`, and a client of it.
async fn start(cfg: Config) -> (Loadtester, Client) {
    let lt = Loadtester::start(cfg).await.unwrap();
    let c = Client::new(lt.local_addr());
    (lt, c)
}

fn sum_metric(text: &str, name: &str, fragments: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| fragments.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn payload(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "phase": "Progressing", "checksum": "abc"})
}

fn task(metadata: Value) -> Value {
    let mut p = payload("podinfo", "test");
    p["metadata"] = metadata;
    p
}

#[tokio::test]
async fn gates_open_close_and_survive_a_restart() {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("gates.json");
        let (lt, c) = start(config(Some(&state))).await;
        let p = payload("podinfo", "test");

        assert_eq!(c.post("/gate/approve", &p).await, (200, "OK".into()));
        assert_eq!(c.post("/gate/halt", &p).await, (403, "Forbidden".into()));
        assert_eq!(
            c.post("/gate/check", &p).await,
            (403, "Forbidden".into()),
            "unknown gates are closed"
        );
        assert_eq!(c.post("/gate/open", &p).await, (202, "Gate opened".into()));
        assert_eq!(c.post("/gate/check", &p).await, (200, "Approved".into()));
        assert_eq!(c.post("/gate/close", &p).await, (202, "Gate closed".into()));
        assert_eq!(c.post("/gate/check", &p).await.0, 403);
        assert_eq!(c.post("/gate/open", &p).await.0, 202);

        assert_eq!(c.post("/rollback/check", &p).await.0, 403);
        assert_eq!(
            c.post("/rollback/open", &p).await,
            (202, "Rollback gate opened".into())
        );
        assert_eq!(c.post("/rollback/check", &p).await, (200, "Approved".into()));
        // The rollback gate is separate from the rollout gate, and canaries from each other.
        assert_eq!(
            c.post("/rollback/close", &p).await,
            (202, "Rollback gate closed".into())
        );
        assert_eq!(c.post("/rollback/check", &p).await.0, 403);
        assert_eq!(c.post("/gate/check", &p).await.0, 200);
        assert_eq!(c.post("/gate/check", &payload("podinfo", "prod")).await.0, 403);
        assert_eq!(c.post("/rollback/open", &payload("other", "test")).await.0, 202);

        let (status, body) = c.post_raw("/gate/check", "{not json".into()).await;
        assert_eq!(status, 400);
        assert!(body.starts_with("invalid JSON payload:"), "{body}");

        assert_eq!(
            c.metric(
                "aviary_loadtester_gate_checks_total",
                &["gate=\"gate\"", "result=\"open\""]
            )
            .await,
            2.0
        );
        lt.stop().await.unwrap();

        let file: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(
            file,
            json!({"version": 2, "open": [
                {"kind": "gate", "namespace": "test", "name": "podinfo"},
                {"kind": "rollback", "namespace": "test", "name": "other"},
            ]})
        );

        // A new process on the same state file answers as before.
        let (lt, c) = start(config(Some(&state))).await;
        assert_eq!(c.post("/gate/check", &p).await, (200, "Approved".into()));
        assert_eq!(c.post("/rollback/check", &p).await.0, 403);
        assert_eq!(c.post("/rollback/check", &payload("other", "test")).await.0, 200);
        lt.stop().await.unwrap();

        // Without a state file the gates live in memory only.
        let (lt, c) = start(config(None)).await;
        assert_eq!(c.post("/gate/check", &p).await.0, 403);
        lt.stop().await.unwrap();
    })
    .await;
}

/// Issue 15: gates are per (kind, namespace, name), never a joined string: a canary named
/// `rollback.app` does not open the rollback gate of `app`, nor `a.b`/`c` the gate of `a`/`b.c`.
/// Names, namespaces and commands are bounded and free of control characters.
#[tokio::test]
async fn gate_keys_are_unambiguous_and_payloads_bounded() {
    bounded(LIMIT, async {
        let (lt, c) = start(config(None)).await;
        assert_eq!(
            c.post("/gate/open", &payload("rollback.app", "test")).await.0,
            202
        );
        assert_eq!(c.post("/rollback/check", &payload("app", "test")).await.0, 403);
        assert_eq!(
            c.post("/gate/check", &payload("rollback.app", "test")).await.0,
            200
        );
        assert_eq!(c.post("/gate/open", &payload("a.b", "c")).await.0, 202);
        assert_eq!(c.post("/gate/check", &payload("a", "b.c")).await.0, 403);

        let long_name = "n".repeat(254);
        let (status, body) = c.post("/gate/open", &payload(&long_name, "test")).await;
        assert_eq!(status, 400);
        assert_eq!(body, "name is 254 bytes long; at most 253 are allowed");
        assert_eq!(
            c.post("/gate/open", &payload(&"n".repeat(253), "test")).await.0,
            202
        );
        assert_eq!(
            c.post("/gate/check", &payload("x", &"s".repeat(64))).await,
            (400, "namespace is 64 bytes long; at most 63 are allowed".into())
        );
        assert_eq!(
            c.post("/gate/open", &payload("a\nINFO forged", "test")).await,
            (400, "name contains a control character".into())
        );
        let mut huge = task(json!({"type": "bash", "cmd": format!("echo {}", "x".repeat(70_000))}));
        huge["name"] = json!("podinfo");
        let (status, body) = c.post("/", &huge).await;
        assert_eq!(status, 400);
        assert!(
            body.starts_with("cmd is 70005 bytes long; at most 65536"),
            "{body}"
        );
        lt.stop().await.unwrap();
    })
    .await;
}

/// Issue 15: `--namespace-regexp` is unanchored as in Flagger; `--anchor-namespace-regexp`
/// matches the whole namespace.
#[tokio::test]
async fn the_namespace_filter_is_unanchored_unless_asked() {
    bounded(LIMIT, async {
        for (pattern, anchored, allowed, forbidden) in [
            ("test", false, vec!["test", "my-test", "test-2"], vec!["prod"]),
            (
                "test|prod",
                true,
                vec!["test", "prod"],
                vec!["my-test", "test-2", "production", "my-prod"],
            ),
        ] {
            let mut cfg = config(None);
            cfg.namespace_regexp =
                Some(aviary_providers::loadtester::namespace_filter(pattern, anchored).unwrap());
            let (lt, c) = start(cfg).await;
            for ns in allowed {
                assert_eq!(
                    c.post("/gate/check", &payload("x", ns)).await.0,
                    403,
                    "{ns} is served"
                );
                assert_eq!(c.post("/gate/open", &payload("x", ns)).await.0, 202, "{ns}");
            }
            for ns in forbidden {
                assert_eq!(
                    c.post("/gate/open", &payload("x", ns)).await,
                    (403, "Forbidden".into()),
                    "anchored={anchored} {ns}"
                );
            }
            lt.stop().await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn bash_tasks_block_and_report_exit_status() {
    bounded(LIMIT, async {
        let mut cfg = config(None);
        cfg.timeout = Duration::from_secs(1);
        let (lt, c) = start(cfg).await;

        let ok = task(json!({"type": "bash", "cmd": "echo hello from $0", "returnCmdOutput": "true"}));
        assert_eq!(c.post("/", &ok).await, (200, "hello from bash\n".into()));
        let quiet = task(json!({"type": "bash", "cmd": "echo hidden"}));
        assert_eq!(c.post("/", &quiet).await, (200, String::new()));

        let fail = task(json!({"type": "bash", "cmd": "echo broken >&2; exit 3"}));
        let (status, body) = c.post("/", &fail).await;
        assert_eq!(status, 500);
        assert!(
            body.contains("failed: broken") && body.contains("exit status: 3"),
            "{body}"
        );

        let started = std::time::Instant::now();
        let slow = task(json!({"type": "bash", "cmd": "sleep 20"}));
        let (status, body) = c.post("/", &slow).await;
        assert_eq!(status, 500);
        assert_eq!(body, "command sleep 20 killed after the timeout of 1s");
        assert!(started.elapsed() < Duration::from_secs(5));

        assert_eq!(
            c.metric(
                "aviary_loadtester_tasks_total",
                &["type=\"bash\"", "outcome=\"succeeded\""]
            )
            .await,
            2.0
        );
        lt.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn requests_that_cannot_run() {
    bounded(LIMIT, async {
        let mut cfg = config(None);
        cfg.namespace_regexp = Some(Regex::new("^(test|prod)$").unwrap());
        let (lt, c) = start(cfg).await;

        assert_eq!(
            c.post("/", &payload("podinfo", "test")).await,
            (400, "metadata not found in payload".into())
        );
        let (status, body) = c.post_raw("/", "[1, 2".into()).await;
        assert_eq!(status, 400);
        assert!(body.starts_with("invalid JSON payload:"), "{body}");
        assert_eq!(
            c.post("/", &task(json!({"type": "jmeter", "cmd": "x"}))).await,
            (400, "unknown task type jmeter".into())
        );
        // Concord's metadata errors are 500 as in Flagger (server.go:393-399); nGrinder's 400.
        assert_eq!(
            c.post("/", &task(json!({"type": "concord", "cmd": "x"}))).await,
            (500, "`server` is required with type concord".into())
        );
        assert_eq!(
            c.post("/", &task(json!({"type": "ngrinder", "server": "http://x"})))
                .await,
            (
                400,
                "server, clone, username and passwd are required metadata".into()
            )
        );
        let (status, body) = c.post("/", &task(json!({"type": "bash"}))).await;
        assert_eq!(status, 400);
        assert!(body.starts_with("cmd not found in metadata"), "{body}");

        // Namespaces outside --namespace-regexp are forbidden, tasks and gates alike.
        let mut other = task(json!({"type": "bash", "cmd": "true"}));
        other["namespace"] = json!("kube-system");
        assert_eq!(c.post("/", &other).await, (403, "Forbidden".into()));
        assert_eq!(c.post("/gate/open", &payload("x", "kube-system")).await.0, 403);
        assert_eq!(c.post("/gate/open", &payload("x", "prod")).await.0, 202);

        // helm and kubectl run only when installed.
        for (kind, binary) in [("helm", "helm"), ("helmv3", "helm"), ("kubectl", "kubectl")] {
            let installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(binary).is_file());
            let (status, body) = c
                .post("/", &task(json!({"type": kind, "cmd": "version --client"})))
                .await;
            if installed {
                assert_ne!(status, 400, "{kind}: {body}");
            } else {
                assert_eq!(status, 400, "{kind}: {body}");
                assert!(
                    body.contains(&format!("needs the {kind} binary"))
                        || body.contains("needs the helmv3 binary"),
                    "{body}"
                );
            }
        }

        assert_eq!(c.get("/healthz").await, (200, "OK".into()));
        let (status, text) = c.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("# TYPE aviary_loadtester_tasks counter"), "{text}");
        lt.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn cmd_tasks_run_in_the_background_once_at_a_time() {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (lt, c) = start(config(None)).await;
        let marker = dir.path().join("runs");
        let cmd = format!("echo run >> {}; sleep 1", marker.display());
        let t = task(json!({"type": "cmd", "cmd": cmd, "logCmdOutput": "true"}));

        let started = std::time::Instant::now();
        assert_eq!(c.post("/", &t).await.0, 202);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "cmd tasks do not block"
        );
        // The same command for the same canary while it runs: skipped.
        assert_eq!(c.post("/", &t).await.0, 202);
        // The same command for another canary: runs.
        let mut other = t.clone();
        other["name"] = json!("other");
        assert_eq!(c.post("/", &other).await.0, 202);
        assert_eq!(
            c.metric("aviary_loadtester_tasks_total", &["outcome=\"skipped\""])
                .await,
            1.0
        );
        // Wait (bounded) for both to finish.
        while c.metric("aviary_loadtester_commands_running", &[]).await > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let runs = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(runs.lines().count(), 2);
        // Once finished, the command can run again.
        assert_eq!(c.post("/", &t).await.0, 202);
        assert_eq!(
            c.metric("aviary_loadtester_tasks_total", &["outcome=\"skipped\""])
                .await,
            1.0
        );
        lt.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn shutdown_kills_running_commands() {
    bounded(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let (lt, c) = start(config(None)).await;
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        assert_eq!(c.post("/", &task(json!({"cmd": cmd}))).await.0, 202);
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        let started = std::time::Instant::now();
        lt.stop().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
                .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "the command's process {pid} survived the shutdown");
        // The port is closed.
        assert!(
            tokio::net::TcpStream::connect(c.base.trim_start_matches("http://"))
                .await
                .is_err()
        );
    })
    .await;
}

/// The seed's load test: `hey` through the load tester against a real sample app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hey_load_reaches_the_sample_app() {
    if common::tool("hey").is_none() {
        return;
    }
    bounded(LIMIT, async {
        let app = SampleApp::start(SampleAppArgs {
            port: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let app_url = format!("http://{}", app.local_addr());
        let (lt, c) = start(config(None)).await;
        let app_client = Client::new(app.local_addr());
        let count = |text: &str| sum_metric(text, "http_requests_total", &["path=\"/\"", "status=\"200\""]);
        assert_eq!(count(&app_client.get("/metrics").await.1), 0.0);

        let cmd = format!("hey -z 5s -q 5 -c 2 {app_url}/");
        let t = task(json!({"type": "cmd", "cmd": cmd, "logCmdOutput": "true"}));
        assert_eq!(c.post("/", &t).await.0, 202);
        // hey sends 5 requests per second per worker for 5 s: about 50.
        loop {
            let done = c
                .metric("aviary_loadtester_tasks_total", &["outcome=\"succeeded\""])
                .await;
            if done >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let requests = count(&app_client.get("/metrics").await.1);
        eprintln!("hey through the load tester: the sample app counted {requests} requests");
        assert!(
            (30.0..=60.0).contains(&requests),
            "the sample app counted {requests} requests"
        );
        lt.stop().await.unwrap();
        app.stop().await;
    })
    .await;
}

// === concord and ngrinder: their servers' HTTP APIs, as local doubles ===

/// The fields of a multipart/form-data body (what Go's multipart.Writer sends).
fn form_fields(r: &Seen) -> std::collections::BTreeMap<String, String> {
    let ct = r.header("content-type").unwrap_or_default();
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary")
        .trim_matches('"');
    let body = String::from_utf8_lossy(&r.body).into_owned();
    body.split(&format!("--{boundary}"))
        .filter_map(|part| {
            let (head, value) = part.split_once("\r\n\r\n")?;
            let name = head.split("name=\"").nth(1)?.split('"').next()?;
            Some((name.to_string(), value.trim_end_matches("\r\n").to_string()))
        })
        .collect()
}

/// Concord's process API: a process per start; the first status read of all is RUNNING, later
/// ones FINISHED (FAILED for the entry point `fail`, RUNNING forever for `hang`); requests need
/// the API key.
async fn concord_server() -> Server {
    Server::start(|r, i| {
        if r.header("authorization") != Some("concord-api-key-42") {
            return Reply::json(401, json!({"message": "unauthorized"}));
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/api/v1/process") => {
                let entry = form_fields(r).get("entryPoint").cloned().unwrap_or_default();
                Reply::json(200, json!({"instanceId": format!("{entry}-{i}"), "ok": true}))
            }
            ("GET", p) if p.starts_with("/api/v1/process/") => {
                let id = &p["/api/v1/process/".len()..];
                let status = if id.starts_with("hang") || i == 1 {
                    "RUNNING"
                } else if id.starts_with("fail") {
                    "FAILED"
                } else {
                    "FINISHED"
                };
                Reply::json(200, json!({"instanceId": id, "status": status}))
            }
            _ => Reply::json(404, json!({"message": "not found"})),
        }
    })
    .await
}

#[tokio::test]
async fn concord_processes_are_started_and_awaited() {
    bounded(LIMIT, async {
        let concord = concord_server().await;
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("concord-api-key");
        std::fs::write(&key, "concord-api-key-42\n").unwrap();
        let mut cfg = config(None);
        cfg.concord_key_dir = Some(keys.path().to_path_buf());
        let (lt, c) = start(cfg).await;
        let meta = |entry: &str| {
            json!({"type": "concord", "server": format!("{}/ignored/path", concord.url()), "org": "my-org",
                "project": "my-project", "repo": "load-tests", "entrypoint": entry,
                "apiKeyPath": key.to_str().unwrap(), "endpoint": "http://podinfo-canary.test:9898/",
                "arguments.users": "10", "pollInterval": "1", "pollTimeout": "5"})
        };
        assert_eq!(c.post("/", &task(meta("main"))).await, (200, "".into()));
        // The start (concord.go:215-250): the form, the key as Authorization, the absolute
        // process path (ResolveReference drops the server's own path).
        let seen = concord.requests();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/api/v1/process");
        assert!(
            seen[0]
                .header("content-type")
                .unwrap()
                .starts_with("multipart/form-data; boundary=")
        );
        let fields = form_fields(&seen[0]);
        let expected: std::collections::BTreeMap<String, String> = [
            ("org", "my-org"),
            ("project", "my-project"),
            ("repo", "load-tests"),
            ("entryPoint", "main"),
            ("arguments.endpoint", "http://podinfo-canary.test:9898/"),
            ("arguments.users", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(fields, expected);
        // Then the status, once a second, until FINISHED (:252-282).
        assert_eq!(seen[1].path, "/api/v1/process/main-0");
        assert_eq!(seen.len(), 3, "{seen:#?}");

        let (status, body) = c.post("/", &task(meta("fail"))).await;
        assert_eq!(status, 500);
        assert!(
            body.starts_with("concord instanceID: fail-") && body.ends_with(" failed"),
            "{body}"
        );
        let started = std::time::Instant::now();
        assert_eq!(
            c.post("/", &task(meta("hang"))).await,
            (500, "concord process timed out, after 5 seconds".into())
        );
        assert!(started.elapsed() < Duration::from_secs(8));

        // A key file outside --concord-key-dir is refused before any request.
        let before = concord.requests().len();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let mut m = meta("main");
        m["apiKeyPath"] = json!(outside.path().to_str().unwrap());
        let (status, body) = c.post("/", &task(m)).await;
        assert_eq!(status, 500);
        assert!(body.contains("is outside --concord-key-dir"), "{body}");
        assert_eq!(concord.requests().len(), before);
        assert_eq!(
            c.metric("aviary_loadtester_tasks_total", &["concord", "succeeded"])
                .await,
            1.0
        );

        // A server that quotes the request back: the answer (an event in Flagger's webhook
        // failure) never shows the key.
        let echo = Server::echoing(200).await;
        let mut m = meta("main");
        m["server"] = json!(echo.url());
        let (status, body) = c.post("/", &task(m)).await;
        assert_eq!(status, 500);
        assert!(
            !body.contains("concord-api-key-42") && body.contains("[redacted]"),
            "{body}"
        );
        echo.stop().await;
        lt.stop().await.unwrap();
        concord.stop().await;
    })
    .await;
}

/// nGrinder's perftest API: clone_and_start answers test 7 (or `success: false` for template
/// 13); test 7 runs for two status reads, then FINISHED (template 21's test 8 never ends).
async fn ngrinder_server() -> Server {
    Server::start(|r, _| {
        // admin:s3cret
        if r.header("authorization") != Some("Basic YWRtaW46czNjcmV0") {
            return Reply::json(401, json!({"success": false, "message": "unauthorized"}));
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/ngrinder/perftest/api/42/clone_and_start") => {
                Reply::json(200, json!({"id": 7, "status": "READY", "testName": "podinfo"}))
            }
            ("POST", "/ngrinder/perftest/api/21/clone_and_start") => Reply::json(200, json!({"id": 8})),
            ("POST", "/ngrinder/perftest/api/13/clone_and_start") => {
                Reply::json(200, json!({"success": false, "message": "no such test"}))
            }
            ("GET", "/ngrinder/perftest/api/7/status") => Reply::json(
                200,
                json!({"status": [{"id": 7, "status_id": "FINISHED", "name": "Finished"}]}),
            ),
            ("GET", "/ngrinder/perftest/api/8/status") => Reply::json(
                200,
                json!({"status": [{"id": 8, "status_id": "TESTING", "name": "Testing"}]}),
            ),
            ("PUT", "/ngrinder/perftest/api/8") => Reply::json(200, json!({"success": true})),
            _ => Reply::json(404, json!({"success": false, "message": "not found"})),
        }
    })
    .await
}

#[tokio::test]
async fn ngrinder_tests_are_cloned_started_and_stopped() {
    bounded(LIMIT, async {
        let ngrinder = ngrinder_server().await;
        let mut cfg = config(None);
        cfg.timeout = Duration::from_secs(2);
        let (lt, c) = start(cfg).await;
        let meta = |clone: &str| {
            json!({"type": "ngrinder", "server": format!("{}/ngrinder/", ngrinder.url()), "clone": clone,
                "username": "admin", "passwd": "czNjcmV0", "pollInterval": "200ms"})
        };
        // Accepted at once and run in the background (task_ngrinder.go:104-149).
        assert_eq!(
            c.post("/", &task(meta("42"))).await,
            (202, "Task accepted".into())
        );
        let wait_for = |n: f64, outcome: &'static str| {
            let c = &c;
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while c
                    .metric("aviary_loadtester_tasks_total", &["ngrinder", outcome])
                    .await
                    < n
                {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no {outcome} ngrinder task"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        wait_for(1.0, "succeeded").await;
        let seen = ngrinder.requests();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/ngrinder/perftest/api/42/clone_and_start")
        );
        assert_eq!(
            (seen[1].method.as_str(), seen[1].path.as_str()),
            ("GET", "/ngrinder/perftest/api/7/status")
        );

        // A refused clone fails the task.
        assert_eq!(c.post("/", &task(meta("13"))).await.0, 202);
        wait_for(1.0, "failed").await;

        // A test still running at --timeout is stopped; a second request meanwhile is skipped.
        assert_eq!(c.post("/", &task(meta("21"))).await.0, 202);
        assert_eq!(c.post("/", &task(meta("21"))).await.0, 202);
        wait_for(2.0, "failed").await;
        assert_eq!(
            c.metric("aviary_loadtester_tasks_total", &["ngrinder", "skipped"])
                .await,
            1.0
        );
        let stops: Vec<Seen> = ngrinder
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .collect();
        assert_eq!(stops.len(), 1, "{stops:#?}");
        assert_eq!(stops[0].path, "/ngrinder/perftest/api/8");
        assert_eq!(stops[0].raw_query, "action=stop");
        let clones = ngrinder
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/21/clone_and_start"))
            .count();
        assert_eq!(clones, 1);
        lt.stop().await.unwrap();
        ngrinder.stop().await;
    })
    .await;
}
