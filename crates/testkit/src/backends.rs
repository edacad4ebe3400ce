//! Scriptable HTTP test doubles for what a canary analysis talks to:
//!
//! - [`FakePrometheus`]: a Prometheus-compatible `/api/v1/query` (GET or POST form) answering by
//!   matching the query text against scripted rules; a rule may script a sequence of answers
//!   (values, no values, errors), one per matching query; `vector(1)` (the availability probe)
//!   is 1.
//! - [`FakeWebhook`]: a webhook receiver that records every POST and answers with a scripted
//!   status per path (200 by default), or a scripted sequence of statuses and bodies.
//! - [`EchoServer`]: a careless upstream that quotes each request back in its answer
//!   ([`echo_text`]: path, query and headers, as sent, percent-encoded and JSON-escaped), for
//!   tests that credentials never come back out of aviary.
//!
//! All listen on 127.0.0.1 with an ephemeral port and stop when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::Result;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend serving its routes over a shared `S` on 127.0.0.1; stops when dropped.
struct Served<S> {
    url: String,
    state: Arc<Mutex<S>>,
    cancel: CancellationToken,
}

impl<S: Send + 'static> Served<S> {
    async fn start(state: S, routes: Router<Arc<Mutex<S>>>) -> Result<Self> {
        let state = Arc::new(Mutex::new(state));
        let (addr, cancel) = serve(routes.with_state(state.clone())).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            state,
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        lock(&self.state)
    }
}

impl<S> Drop for Served<S> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Routes every path, `/` included, to `handler`.
fn every_path<H, T, S>(handler: H) -> Router<S>
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/{*path}", any(handler.clone()))
        .route("/", any(handler))
}

async fn serve(router: Router) -> Result<(SocketAddr, CancellationToken)> {
    let (listener, addr) = crate::net::bind_loopback("a test backend").await?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok((addr, cancel))
}

/// What a [`FakePrometheus`] answers to one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An instant vector with one sample.
    Value(f64),
    /// An empty result (Flagger's "no values found").
    NoValues,
    /// An error: this HTTP status and Prometheus' error JSON with `error` = the text.
    Error(u16, String),
}

/// One scripted rule: queries containing every needle get the next answer of `answers`; the last
/// one repeats.
#[derive(Debug, Clone)]
struct Rule {
    needles: Vec<String>,
    answers: Vec<Answer>,
    used: usize,
}

#[derive(Debug, Default)]
struct PromState {
    rules: Vec<Rule>,
    default: Option<f64>,
    queries: Vec<String>,
    answered: Vec<Answer>,
}

/// A Prometheus-compatible query endpoint with scripted answers.
pub struct FakePrometheus {
    served: Served<PromState>,
}

impl FakePrometheus {
    /// Starts with no rules: every query but `vector(1)` has no values.
    pub async fn start() -> Result<Self> {
        let routes = Router::new()
            .route("/api/v1/query", get(prom_get).post(prom_post))
            .route("/-/healthy", get(|| async { "Prometheus is Healthy.\n" }));
        let served = Served::start(PromState::default(), routes).await?;
        Ok(Self { served })
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// Queries containing every one of `needles` answer `value`; the rule set last wins.
    pub fn set(&self, needles: &[&str], value: f64) {
        self.script(needles, vec![Answer::Value(value)]);
    }

    /// Queries containing every one of `needles` have no values.
    pub fn set_no_values(&self, needles: &[&str]) {
        self.script(needles, vec![Answer::NoValues]);
    }

    /// The n-th query containing every one of `needles` gets `answers[n]`, and every later one
    /// the last answer: the same values in the same order whenever the queries come. Replaces
    /// a rule with the same needles; the rule set last wins.
    pub fn script(&self, needles: &[&str], answers: Vec<Answer>) {
        let mut s = self.served.lock();
        let needles: Vec<String> = needles.iter().map(|n| n.to_string()).collect();
        s.rules.retain(|r| r.needles != needles);
        let answers = if answers.is_empty() {
            vec![Answer::NoValues]
        } else {
            answers
        };
        s.rules.push(Rule {
            needles,
            answers,
            used: 0,
        });
    }

    /// The answer of queries no rule matches (`None`: no values).
    pub fn set_default(&self, value: Option<f64>) {
        self.served.lock().default = value;
    }

    /// Forgets every rule.
    pub fn clear(&self) {
        self.served.lock().rules.clear();
    }

    /// Every query received, in order.
    pub fn queries(&self) -> Vec<String> {
        self.served.lock().queries.clone()
    }

    /// Every query received with the answer it got, in order.
    pub fn answered(&self) -> Vec<(String, Answer)> {
        let s = self.served.lock();
        s.queries
            .iter()
            .cloned()
            .zip(s.answered.iter().cloned())
            .collect()
    }
}

fn answer(state: &Mutex<PromState>, query: &str) -> Response {
    let mut s = lock(state);
    s.queries.push(query.to_string());
    let scripted = s
        .rules
        .iter_mut()
        .rev()
        .find(|r| r.needles.iter().all(|n| query.contains(n.as_str())))
        .map(|r| {
            let a = r.answers[r.used.min(r.answers.len() - 1)].clone();
            r.used += 1;
            a
        });
    let answer = scripted.unwrap_or(if query.trim() == "vector(1)" {
        Answer::Value(1.0)
    } else {
        s.default.map_or(Answer::NoValues, Answer::Value)
    });
    s.answered.push(answer.clone());
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let result = match answer {
        Answer::Value(v) => json!([{"metric": {}, "value": [now, v.to_string()]}]),
        Answer::NoValues => json!([]),
        Answer::Error(status, text) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = if code.is_client_error() {
                "bad_data"
            } else {
                "internal"
            };
            return (
                code,
                axum::Json(json!({"status": "error", "errorType": kind, "error": text})),
            )
                .into_response();
        }
    };
    axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
        .into_response()
}

async fn prom_get(
    State(state): State<Arc<Mutex<PromState>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match q.get("query") {
        Some(query) => answer(&state, query),
        None => bad_query(),
    }
}

async fn prom_post(State(state): State<Arc<Mutex<PromState>>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url_decode_form(&String::from_utf8_lossy(&body));
    match form.get("query") {
        Some(query) => answer(&state, query),
        None => bad_query(),
    }
}

fn bad_query() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"status": "error", "errorType": "bad_data", "error": "parameter \"query\" is missing"}),
        ),
    )
        .into_response()
}

/// `application/x-www-form-urlencoded` without a dependency.
fn url_decode_form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// One request received by a [`FakeWebhook`].
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookCall {
    pub path: String,
    /// The JSON body (`Null` when the body is not JSON).
    pub body: Value,
}

#[derive(Debug, Default)]
struct HookState {
    calls: Vec<WebhookCall>,
    /// When each call arrived (same order as `calls`).
    arrivals: Vec<std::time::Instant>,
    status: HashMap<String, u16>,
    /// Scripted answers per path: (status, body) in order, the last one repeating; calls so far.
    scripts: HashMap<String, (Vec<(u16, String)>, usize)>,
    /// Paths whose requests are never answered (a hanging webhook).
    hanging: std::collections::HashSet<String>,
}

/// A webhook receiver: records POSTs, answers 200 unless scripted otherwise.
pub struct FakeWebhook {
    served: Served<HookState>,
}

impl FakeWebhook {
    pub async fn start() -> Result<Self> {
        let served = Served::start(HookState::default(), every_path(hook)).await?;
        Ok(Self { served })
    }

    /// Base URL (`http://127.0.0.1:PORT`); any path is accepted.
    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// Answers requests to `path` (e.g. `/gate`) with `status`.
    pub fn set_status(&self, path: &str, status: u16) {
        let mut s = self.served.lock();
        s.scripts.remove(path);
        s.status.insert(path.to_string(), status);
    }

    /// The n-th request to `path` gets `answers[n]` (status, body), every later one the last
    /// answer: a gate that opens on the third call is `[(403, "closed"), (403, "closed"), (200, "")]`.
    pub fn script(&self, path: &str, answers: Vec<(u16, String)>) {
        let mut s = self.served.lock();
        s.status.remove(path);
        if !answers.is_empty() {
            s.scripts.insert(path.to_string(), (answers, 0));
        }
    }

    /// From now on requests to `path` are recorded but never answered: the connection stays
    /// open and silent (a webhook that hangs), until the receiver drops.
    pub fn hang(&self, path: &str) {
        self.served.lock().hanging.insert(path.to_string());
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<WebhookCall> {
        self.served.lock().calls.clone()
    }

    /// The path of every request so far with the moment it arrived, in order.
    pub fn arrivals(&self) -> Vec<(String, std::time::Instant)> {
        let s = self.served.lock();
        s.calls
            .iter()
            .map(|c| c.path.clone())
            .zip(s.arrivals.iter().copied())
            .collect()
    }
}

async fn hook(State(state): State<Arc<Mutex<HookState>>>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (code, text) = {
        let mut s = lock(&state);
        s.calls.push(WebhookCall {
            path: path.clone(),
            body,
        });
        s.arrivals.push(std::time::Instant::now());
        if s.hanging.contains(&path) {
            None
        } else {
            Some(match s.scripts.get_mut(&path) {
                Some((answers, used)) => {
                    let a = answers[(*used).min(answers.len() - 1)].clone();
                    *used += 1;
                    a
                }
                None => (s.status.get(&path).copied().unwrap_or(200), String::new()),
            })
        }
    }
    .unwrap_or_default();
    if code == 0 {
        // Hanging: the caller's timeout ends it.
        std::future::pending::<()>().await;
    }
    (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), text).into_response()
}

/// A request quoted back in every form a credential in it could take: the path whole and
/// segment by segment, the query, every header, the path percent-encoded and everything again
/// as JSON (which escapes `/` in some encoders: both are written), then 8 KiB of padding so that
/// the answer is longer than any error text should quote.
pub fn echo_text(path: &str, query: &str, headers: &HeaderMap) -> String {
    let mut parts = vec![format!("path {path}"), format!("query {query}")];
    parts.extend(path.split('/').map(|s| format!("segment {s}")));
    let mut named = serde_json::Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        parts.push(format!("header {name}: {value}"));
        named.insert(name.to_string(), Value::String(value));
    }
    let encoded: String = path
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    parts.push(format!("encoded {encoded}"));
    let json = json!({"path": path, "query": query, "headers": named}).to_string();
    parts.push(format!("json {}", json.replace('/', "\\/")));
    parts.push(format!("json {json}"));
    parts.push("x".repeat(8192));
    parts.join("\n")
}

/// One request received by an [`EchoServer`].
#[derive(Debug, Clone)]
pub struct EchoedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct EchoState {
    requests: Vec<EchoedRequest>,
    status: u16,
    /// Fixed answers by path: (status, body).
    replies: HashMap<String, (u16, String)>,
}

/// A careless upstream: answers every request with its status (500 unless set) and the request
/// quoted back ([`echo_text`]), except for paths given a fixed reply; records every request.
pub struct EchoServer {
    served: Served<EchoState>,
}

impl EchoServer {
    /// Starts answering `status` with the echo.
    pub async fn start(status: u16) -> Result<Self> {
        let state = EchoState {
            status,
            ..EchoState::default()
        };
        let served = Served::start(state, every_path(echo)).await?;
        Ok(Self { served })
    }

    /// Base URL (`http://127.0.0.1:PORT`); any path is accepted.
    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// Requests to `path` get `status` and `body` instead of the echo.
    pub fn set_reply(&self, path: &str, status: u16, body: &str) {
        self.served
            .lock()
            .replies
            .insert(path.to_string(), (status, body.to_string()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<EchoedRequest> {
        self.served.lock().requests.clone()
    }
}

async fn echo(State(state): State<Arc<Mutex<EchoState>>>, req: axum::extract::Request) -> Response {
    let (parts, _) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let mut s = lock(&state);
    s.requests.push(EchoedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
    });
    let (status, body) = match s.replies.get(&path) {
        Some(reply) => reply.clone(),
        None => (s.status, echo_text(&path, &query, &parts.headers)),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_quote_every_form() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer tok/1".parse().unwrap());
        let text = echo_text("/services/T1/secret", "k=v%2F1", &headers);
        for needle in [
            "path /services/T1/secret",
            "segment secret",
            "query k=v%2F1",
            "header authorization: Bearer tok/1",
            "encoded %2Fservices%2FT1%2Fsecret",
            r#"\/services\/T1\/secret"#,
            r#""authorization":"Bearer tok/1""#,
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn form_decoding() {
        let f = url_decode_form("query=sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29+%2A+100&time=1");
        assert_eq!(f["query"], r#"sum(rate(x{a="b"}[1m])) * 100"#);
        assert_eq!(f["time"], "1");
    }
}
