//! [`FaultProxy`]: a plain-HTTP proxy on 127.0.0.1 in front of the real API server, for the
//! faults a healthy server does not produce on demand: an error status for matching requests
//! (`fail`), a slow answer (`delay`), and every open watch cut at once (`drop_watches`). Requests
//! are forwarded with the identity of the `kube::Client` it was started with; every request and
//! its status is recorded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::control_plane::kubeconfig::{self, Identity};
use crate::error::Result;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Which requests a fault applies to: an optional method and a substring of path + query.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Only this method (any when `None`).
    pub method: Option<Method>,
    /// The request's path and query must contain this.
    pub contains: String,
}

impl Matcher {
    /// Any method, path or query containing `text`.
    pub fn path(text: &str) -> Self {
        Self {
            method: None,
            contains: text.to_string(),
        }
    }

    /// `method` requests whose path or query contains `text`.
    pub fn method(method: Method, text: &str) -> Self {
        Self {
            method: Some(method),
            contains: text.to_string(),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path.contains(&self.contains)
    }
}

#[derive(Clone, Debug)]
enum Action {
    Fail(u16),
    Delay(Duration),
}

#[derive(Clone, Debug)]
struct Rule {
    matcher: Matcher,
    action: Action,
    remaining: usize,
}

/// One forwarded (or failed) request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The status answered to the client.
    pub status: u16,
    /// Whether a fault rule answered it.
    pub injected: bool,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    watches: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fault-injecting proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts on 127.0.0.1 (ephemeral port), forwarding through `upstream`.
    pub async fn start(upstream: kube::Client) -> Result<Self> {
        let (listener, addr) = crate::net::bind_loopback("the fault proxy").await?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, upstream, state.clone(), stop.clone()));
        Ok(Self { addr, state, stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at the proxy (no credentials: the proxy adds its own).
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> Result<()> {
        kubeconfig::write(path, &self.url(), None, &Identity::None, namespace)
    }

    /// Answers the next `times` matching requests with `status` (a `metav1.Status` body).
    pub fn fail(&self, matcher: Matcher, status: u16, times: usize) {
        lock(&self.state).rules.push(Rule {
            matcher,
            action: Action::Fail(status),
            remaining: times,
        });
    }

    /// Holds the next `times` matching requests for `delay` before forwarding them.
    pub fn delay(&self, matcher: Matcher, delay: Duration, times: usize) {
        lock(&self.state).rules.push(Rule {
            matcher,
            action: Action::Delay(delay),
            remaining: times,
        });
    }

    /// Ends every watch open now (the clients see the stream close, as after a server restart).
    pub fn drop_watches(&self) {
        let old = std::mem::take(&mut lock(&self.state).watches);
        old.cancel();
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        lock(&self.state).watches.cancel();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    upstream: kube::Client,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let upstream = upstream.clone();
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, upstream.clone(), state.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

fn status_body(code: u16, message: &str) -> ProxyBody {
    let reason = match code {
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        429 => "TooManyRequests",
        409 => "Conflict",
        403 => "Forbidden",
        _ => "",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    Full::new(Bytes::from(body.to_string()))
        .map_err(|e: Infallible| -> BoxError { match e {} })
        .boxed_unsync()
}

fn answer(code: u16, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(status_body(code, message));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    upstream: kube::Client,
    state: Arc<Mutex<State>>,
) -> Result<Response<ProxyBody>, Infallible> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let action = {
        let mut st = lock(&state);
        let found = st
            .rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.matcher.matches(&method, &path));
        found.map(|r| {
            r.remaining -= 1;
            r.action.clone()
        })
    };
    let record = |status: u16, injected: bool| {
        lock(&state).seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            status,
            injected,
        });
    };
    match action {
        Some(Action::Fail(code)) => {
            record(code, true);
            return Ok(answer(
                code,
                &format!("injected by the test's fault proxy: {method} {path}"),
            ));
        }
        Some(Action::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(answer(400, &format!("reading the request body: {e}"))),
    };
    let mut out = Request::builder().method(parts.method).uri(path.clone());
    for (name, value) in &parts.headers {
        if name != http::header::HOST
            && name != http::header::AUTHORIZATION
            && name != http::header::CONTENT_LENGTH
        {
            out = out.header(name, value);
        }
    }
    let out = match out.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => return Ok(answer(400, &format!("rebuilding the request: {e}"))),
    };
    let is_watch = path.contains("watch=true") || path.contains("watch=1") || path.contains("/watch/");
    let resp = match upstream.send(out).await {
        Ok(r) => r,
        Err(e) => {
            record(502, false);
            return Ok(answer(
                502,
                &format!("the fault proxy could not reach the API server: {e}"),
            ));
        }
    };
    record(resp.status().as_u16(), false);
    let (parts, body) = resp.into_parts();
    let cut = lock(&state).watches.clone();
    let frames = http_body_util::BodyStream::new(body).map(|f| f.map_err(|e| -> BoxError { Box::new(e) }));
    let body: ProxyBody = if is_watch {
        BodyExt::boxed_unsync(StreamBody::new(
            frames
                .take_until(cut.cancelled_owned())
                .map(|f: Result<Frame<Bytes>, BoxError>| f),
        ))
    } else {
        BodyExt::boxed_unsync(StreamBody::new(frames))
    };
    Ok(Response::from_parts(parts, body))
}
