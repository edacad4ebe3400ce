//! Test helpers: a recording HTTP server on 127.0.0.1 (ephemeral port) that answers from a script
//! and keeps every request it saw, and the CI rule for external tools.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub raw_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: None,
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::new(status, body.to_string()).with_header("content-type", "application/json")
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A recording server; it stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server answering each request with `script(request, index)`.
    pub async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (listener, addr) = aviary_testkit::net::bind_loopback("recording server")
            .await
            .unwrap();
        let s = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let script = Arc::clone(&script);
            let seen = Arc::clone(&s);
            async move { handle(req, script, seen).await }
        });
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Self {
            addr,
            seen,
            stop,
            task,
        }
    }

    /// A careless upstream: answers `status` with the request quoted back ([`echo_everything`]).
    pub async fn echoing(status: u16) -> Self {
        Self::start(move |r, _| Reply::new(status, echo_everything(r))).await
    }

    /// A server that always answers `reply`.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn only_request(&self) -> Seen {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected one request, got {r:#?}");
        r.into_iter().next().unwrap()
    }

    /// Stops the server and waits (up to 5 s) until it has; dropping it only asks it to stop.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(req: Request<Body>, script: Arc<Script>, seen: Arc<Mutex<Vec<Seen>>>) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query = url::form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let s = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        raw_query,
        headers: parts.headers,
        body,
    };
    let index = {
        let mut all = seen.lock();
        all.push(s.clone());
        all.len() - 1
    };
    let reply = script(&s, index);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// What a careless upstream answers: the request quoted back in every form a credential could
/// take, then padding ([`aviary_testkit::backends::echo_text`]). Error texts built from it must
/// show none of the credentials, and be bounded.
pub fn echo_everything(r: &Seen) -> String {
    aviary_testkit::backends::echo_text(&r.path, &r.raw_query, &r.headers)
}

/// Asserts that an error built from an [`echo_everything`] answer shows none of `secrets` and is
/// cut to under `max_len` bytes.
#[track_caller]
pub fn assert_bounded_without(e: &str, secrets: &[&str], max_len: usize) {
    for secret in secrets {
        assert!(!e.contains(secret), "{secret} in: {e}");
    }
    assert!(
        e.len() < max_len && e.contains("… [truncated, "),
        "{} bytes: {e}",
        e.len()
    );
}

/// An external tool the test needs. Missing: with `CI=true` the test fails with a clear message;
/// otherwise it prints a skip notice and the test returns early.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "`{name}` is not installed: install it (Debian: apt-get install {name}) to run this test"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: a missing test tool is an error)");
        }
        // Straight to the file descriptor: libtest would swallow `eprintln!` of a passing test.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    }
    found
}

/// Bounds a test body in time.
pub async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// The query model of Deployment `test/podinfo` (service and ingress `podinfo`) over 1 m, with
/// `route` (the Knative revision, or `podinfo`).
pub fn podinfo_model(route: &str) -> aviary_core::ports::MetricModel {
    aviary_core::ports::MetricModel {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        ingress: "podinfo".into(),
        route: route.into(),
        interval: "1m".into(),
        variables: Default::default(),
    }
}

/// Awaits `f` and asserts that it took a time in `range` (a timeout or back-off took effect, and
/// no more); returns what `f` gave.
pub async fn within<F: std::future::Future>(range: std::ops::Range<Duration>, f: F) -> F::Output {
    let started = std::time::Instant::now();
    let output = f.await;
    let took = started.elapsed();
    assert!(range.contains(&took), "took {took:?}, not in {range:?}");
    output
}
