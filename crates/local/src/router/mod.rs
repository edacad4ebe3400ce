//! The traffic router of one local service: it listens on the service port (HTTP/1.1 and h2c)
//! and forwards each request to a primary or canary process over keep-alive HTTP/1.1
//! connections, following [`Routes`] (weights, A/B rules, mirroring, session affinity; see
//! [`matching`] for the exact semantics).
//!
//! Connections are served by worker threads, each with a single-threaded runtime, like nginx
//! workers. Plain HTTP/1.1 takes a fast path (`fast`) that proxies heads and bodies itself; h2c,
//! HTTP/1.0, upgrades and other rarities are served by hyper with a pooled client per worker.
//!
//! Routes and backend pools are swapped atomically at runtime ([`HttpRouter::set_routes`],
//! [`HttpRouter::set_backends`]); the request path reads them without locks. Each backend records
//! status classes and latency ([`HttpRouter::stats`] over a window; [`RouterMetrics`] for
//! Prometheus). Mirrored copies are recorded as canary traffic, as the mesh telemetry Flagger reads
//! counts them at the canary workload, so the analysis of a mirroring step sees them; they are
//! also counted apart in `aviary_router_mirrored_requests_total`. Latency is measured to the
//! backend's response headers.

mod fast;
#[cfg(any(test, feature = "fuzzing"))]
pub use fast::fuzz::router_request;
pub mod matching;
pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use matching::{
    HeaderMatch, MatchRule, Routes, SameSite, SessionAffinity, StringMatch, random_cookie_value,
};
pub use stats::{Counters, WINDOW_SECONDS, WindowStats};

use crate::error::{Error, Result};
use crate::server;
use matching::CompiledRoutes;
use stats::{BackendStats, PROMETHEUS_BUCKETS};

/// Which process group a request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Primary,
    Canary,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Primary => "primary",
            Backend::Canary => "canary",
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity and listen address of a router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub namespace: String,
    /// The LocalService name (the `service` label of the metrics).
    pub service: String,
    /// Where clients call the service (the LocalService `spec.port` on loopback).
    pub listen: SocketAddr,
    /// How long in-flight requests may run on after [`HttpRouter::shutdown`].
    pub shutdown_grace: Duration,
    /// Worker threads serving the connections, each with its own single-threaded runtime and
    /// backend connection pool; 0 means one per CPU.
    pub workers: usize,
}

impl RouterConfig {
    pub fn new(namespace: impl Into<String>, service: impl Into<String>, listen: SocketAddr) -> RouterConfig {
        RouterConfig {
            namespace: namespace.into(),
            service: service.into(),
            listen,
            shutdown_grace: Duration::from_secs(5),
            workers: 0,
        }
    }
}

/// The current backend addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backends {
    pub primary: Vec<SocketAddr>,
    pub canary: Vec<SocketAddr>,
}

/// A running router. Dropping it stops it too (without waiting); prefer [`HttpRouter::shutdown`].
#[derive(Debug)]
pub struct HttpRouter {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Request bodies sent to backends: streamed, or buffered for mirroring.
type ForwardBody = Either<Incoming, Full<Bytes>>;
/// Response bodies: from a backend, or the router's own (errors).
type ResponseBody = Either<Incoming, Full<Bytes>>;

struct Shared {
    /// `router <namespace>/<service>`, for messages.
    what: String,
    namespace: String,
    service: String,
    routes: ArcSwap<CompiledRoutes>,
    primary: ArcSwap<Pool>,
    canary: ArcSwap<Pool>,
    /// Zero of the statistics clock (tokio's, so that tests can pause it).
    origin: Instant,
    primary_stats: BackendStats,
    canary_stats: BackendStats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// One backend pool, round robin.
#[derive(Debug, Default)]
struct Pool {
    addrs: Vec<SocketAddr>,
    /// The URI authority of each address, built once.
    authorities: Vec<Authority>,
    next: AtomicUsize,
}

impl Pool {
    fn new(addrs: Vec<SocketAddr>) -> Pool {
        let authorities = addrs
            .iter()
            .map(|a| {
                Authority::try_from(a.to_string().as_str()).expect("a socket address is a valid authority")
            })
            .collect();
        Pool {
            addrs,
            authorities,
            next: AtomicUsize::new(0),
        }
    }

    fn pick_addr(&self) -> Option<SocketAddr> {
        match self.addrs.len() {
            0 => None,
            1 => Some(self.addrs[0]),
            n => Some(self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    fn pick(&self) -> Option<(SocketAddr, Authority)> {
        match self.addrs.len() {
            0 => None,
            1 => Some((self.addrs[0], self.authorities[0].clone())),
            n => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                Some((self.addrs[i], self.authorities[i].clone()))
            }
        }
    }
}

impl HttpRouter {
    /// Binds `config.listen` and starts routing everything to the (empty) primary pool; set
    /// backends and routes next.
    pub async fn start(config: RouterConfig) -> Result<HttpRouter> {
        let what = format!("router {}/{}", config.namespace, config.service);
        let listener = server::bind(&what, config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("{what}: local address"), e))?;
        let routes = CompiledRoutes::compile(&what, Routes::default())?;
        let shared = Arc::new(Shared {
            what,
            namespace: config.namespace,
            service: config.service,
            routes: ArcSwap::from_pointee(routes),
            primary: ArcSwap::from_pointee(Pool::default()),
            canary: ArcSwap::from_pointee(Pool::default()),
            origin: Instant::now(),
            primary_stats: BackendStats::default(),
            canary_stats: BackendStats::default(),
        });
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let for_workers = Arc::clone(&shared);
        let make_worker = move || {
            // Runs on the worker thread: the pool and builder belong to that thread's runtime.
            let worker = Arc::new(Worker::new(Arc::clone(&for_workers)));
            move |stream, shutdown| fast::serve(Arc::clone(&worker), stream, shutdown)
        };
        let shutdown = CancellationToken::new();
        let what = shared.what.clone();
        let task = server::serve_on_workers(
            &what,
            listener,
            workers,
            make_worker,
            shutdown.clone(),
            config.shutdown_grace,
        )?;
        Ok(HttpRouter {
            shared,
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the router listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the routes atomically. An invalid configuration is rejected and the previous
    /// routes stay in force.
    pub fn set_routes(&self, routes: Routes) -> Result<()> {
        let compiled = CompiledRoutes::compile(&self.shared.what, routes)?;
        self.shared.routes.store(Arc::new(compiled));
        Ok(())
    }

    /// The routes in force (what Flagger's `GetRoutes` reads back).
    pub fn routes(&self) -> Routes {
        self.shared.routes.load().source().clone()
    }

    /// Replaces both backend pools atomically. Requests already forwarded are not affected.
    pub fn set_backends(&self, backends: Backends) {
        self.set_pool(Backend::Primary, backends.primary);
        self.set_pool(Backend::Canary, backends.canary);
    }

    /// Replaces one backend pool. A request routed to an empty pool gets 503 (recorded as a 5xx of
    /// that backend).
    pub fn set_pool(&self, backend: Backend, addrs: Vec<SocketAddr>) {
        self.shared.pool(backend).store(Arc::new(Pool::new(addrs)));
    }

    pub fn backends(&self) -> Backends {
        Backends {
            primary: self.shared.primary.load().addrs.clone(),
            canary: self.shared.canary.load().addrs.clone(),
        }
    }

    /// Requests, success rate and p99 latency of `backend` over the last `window` (rounded up to
    /// whole seconds, at most [`WINDOW_SECONDS`]).
    pub fn stats(&self, backend: Backend, window: Duration) -> WindowStats {
        let seconds = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        self.shared
            .stats(backend)
            .window(self.shared.now_second(), seconds)
    }

    /// Requests answered by `backend` since the router started (mirrored copies included for
    /// the canary); the agent derives "requests served since promotion" from it.
    pub fn requests_total(&self, backend: Backend) -> u64 {
        self.shared.stats(backend).lifetime().count
    }

    /// Lifetime request, 5xx and latency-bucket counters of `backend` (the statistical judge
    /// differences two readings; a restarted router starts from zero, which it reads as a reset).
    pub fn counters(&self, backend: Backend) -> Counters {
        self.shared.stats(backend).lifetime().counters()
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and returns
    /// when every connection is closed.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const X_AVIARY_BACKEND: HeaderName = HeaderName::from_static("x-aviary-backend");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.remove(header::CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            headers.remove(name);
        }
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn plain_response(status: StatusCode, message: String) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Shared {
    fn pool(&self, backend: Backend) -> &ArcSwap<Pool> {
        match backend {
            Backend::Primary => &self.primary,
            Backend::Canary => &self.canary,
        }
    }

    fn stats(&self, backend: Backend) -> &BackendStats {
        match backend {
            Backend::Primary => &self.primary_stats,
            Backend::Canary => &self.canary_stats,
        }
    }

    fn now_second(&self) -> u64 {
        self.origin.elapsed().as_secs()
    }

    fn record(&self, backend: Backend, status: StatusCode, start: Instant, mirrored: bool) {
        let now = Instant::now();
        let second = now.duration_since(self.origin).as_secs();
        self.stats(backend)
            .record(second, status.as_u16(), now.duration_since(start), mirrored);
    }
}

/// Pooled keep-alive HTTP/1.1 connections to the backends.
fn backend_client() -> Client<HttpConnector, ForwardBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// The per-worker-thread side of a router.
struct Worker {
    shared: Arc<Shared>,
    /// For the general path and mirrored copies.
    client: Client<HttpConnector, ForwardBody>,
    builder: auto::Builder<TokioExecutor>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        Worker {
            shared,
            client: backend_client(),
            builder,
        }
    }

    /// Serves a connection the fast path handed over, with hyper, until it closes.
    async fn serve_general(self: Arc<Self>, io: fast::Rewound, shutdown: CancellationToken) {
        let worker = Arc::clone(&self);
        let service = service_fn(move |req| {
            let worker = Arc::clone(&worker);
            async move { Ok::<_, Infallible>(worker.forward(req).await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }

    /// The general path for one request.
    async fn forward(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        let shared = &*self.shared;
        let start = Instant::now();
        let decision = {
            let routes = shared.routes.load();
            routes.decide(req.headers(), &mut rand::rng())
        };
        let backend = decision.backend;
        let Some((addr, authority)) = shared.pool(backend).load().pick() else {
            shared.record(backend, StatusCode::SERVICE_UNAVAILABLE, start, false);
            let mut response = plain_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: no {backend} backend is ready\n", shared.what),
            );
            response
                .headers_mut()
                .insert(X_AVIARY_BACKEND, backend.header_value());
            return response;
        };

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST) {
            // h2 carries the host in :authority; HTTP/1.1 backends need it as Host.
            if let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.version = Version::HTTP_11;

        let body = if decision.mirror {
            // The copy needs the whole body; buffer it once and share the bytes.
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return plain_response(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {error}\n"),
                    );
                }
            };
            self.spawn_mirror(
                parts.method.clone(),
                path.clone(),
                parts.headers.clone(),
                bytes.clone(),
            );
            Either::Right(Full::new(bytes))
        } else {
            Either::Left(body)
        };
        parts.uri = backend_uri(authority, path);

        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(cookie) = decision.set_cookie {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                parts.headers.insert(X_AVIARY_BACKEND, backend.header_value());
                shared.record(backend, parts.status, start, false);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                shared.record(backend, StatusCode::BAD_GATEWAY, start, false);
                let mut response = plain_response(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{}: {backend} backend {addr}: {}\n",
                        shared.what,
                        crate::error::chain(&error)
                    ),
                );
                response
                    .headers_mut()
                    .insert(X_AVIARY_BACKEND, backend.header_value());
                response
            }
        }
    }

    /// Mirrors a request of the fast path.
    fn mirror_raw(self: &Arc<Self>, view: &fast::View<'_>, body: Bytes) {
        if let Some((method, path, headers)) = fast::mirror_parts(view) {
            self.spawn_mirror(method, path, headers, body);
        }
    }

    /// Sends a copy of a primary request to the canary in the background; its response is
    /// drained (so the connection is reused) and discarded.
    fn spawn_mirror(
        self: &Arc<Self>,
        method: http::Method,
        path: PathAndQuery,
        headers: HeaderMap,
        body: Bytes,
    ) {
        let Some((_, authority)) = self.shared.canary.load().pick() else {
            return;
        };
        let mut copy = Request::new(Either::Right(Full::new(body)));
        *copy.method_mut() = method;
        *copy.uri_mut() = backend_uri(authority, path);
        *copy.headers_mut() = headers;
        let worker = Arc::clone(self);
        tokio::spawn(async move {
            let shared = &worker.shared;
            let start = Instant::now();
            match worker.client.request(copy).await {
                Ok(response) => {
                    let status = response.status();
                    shared.record(Backend::Canary, status, start, true);
                    let _ = response.into_body().collect().await;
                }
                Err(_) => shared.record(Backend::Canary, StatusCode::BAD_GATEWAY, start, true),
            }
        });
    }
}

fn backend_uri(authority: Authority, path: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
}

/// The Prometheus exposition of every registered router, for the agent's `/metrics`.
///
/// Register it once in the agent's `prometheus_client` registry
/// (`registry.register_collector(Box::new(metrics.clone()))`) and add each router with
/// [`RouterMetrics::register`]; a router that has been shut down and dropped disappears. Families:
/// - `aviary_router_requests_total{namespace,service,backend,code}` (code = `1xx`..`5xx`)
/// - `aviary_router_request_duration_seconds{namespace,service,backend}` (histogram, to the
///   response headers)
/// - `aviary_router_mirrored_requests_total{namespace,service}` (copies sent to the canary, also
///   included in the canary's requests above)
#[derive(Clone, Debug, Default)]
pub struct RouterMetrics {
    routers: Arc<Mutex<Vec<Weak<Shared>>>>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouterMetrics {
    pub fn new() -> RouterMetrics {
        RouterMetrics::default()
    }

    pub fn register(&self, router: &HttpRouter) {
        let mut routers = self.routers.lock().unwrap_or_else(|p| p.into_inner());
        routers.retain(|r| r.strong_count() > 0);
        routers.push(Arc::downgrade(&router.shared));
    }

    /// The whole exposition as OpenMetrics text (ending with `# EOF`), for callers without a
    /// registry of their own.
    pub fn encode(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn live(&self) -> Vec<Arc<Shared>> {
        let routers = self.routers.lock().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<_> = routers.iter().filter_map(Weak::upgrade).collect();
        live.sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
        live
    }
}

impl Collector for RouterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::result::Result<(), std::fmt::Error> {
        let routers = self.live();
        let snapshots: Vec<_> = routers
            .iter()
            .flat_map(|r| [Backend::Primary, Backend::Canary].map(|b| (r, b, r.stats(b).lifetime())))
            .collect();

        let mut family = encoder.encode_descriptor(
            "aviary_router_requests",
            "Requests forwarded by the local router, by backend and status class",
            None,
            MetricType::Counter,
        )?;
        for (router, backend, lifetime) in &snapshots {
            for (class, count) in CLASSES.iter().zip(lifetime.classes) {
                let labels = [
                    ("namespace", router.namespace.as_str()),
                    ("service", router.service.as_str()),
                    ("backend", backend.as_str()),
                    ("code", class),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "aviary_router_request_duration_seconds",
            "Time from receiving a request to the backend's response headers",
            None,
            MetricType::Histogram,
        )?;
        for (router, backend, lifetime) in &snapshots {
            let labels = [
                ("namespace", router.namespace.as_str()),
                ("service", router.service.as_str()),
                ("backend", backend.as_str()),
            ];
            let buckets: Vec<(f64, u64)> = PROMETHEUS_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(lifetime.buckets)
                .collect();
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                lifetime.sum_seconds,
                lifetime.count,
                &buckets,
                None,
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "aviary_router_mirrored_requests",
            "Copies of primary requests sent to the canary (their responses are discarded)",
            None,
            MetricType::Counter,
        )?;
        for (router, backend, lifetime) in &snapshots {
            if *backend == Backend::Canary {
                let labels = [
                    ("namespace", router.namespace.as_str()),
                    ("service", router.service.as_str()),
                ];
                ConstCounter::new(lifetime.mirrored).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
