//! A podinfo-like workload for demos and tests (`aviary sample-app`).
//!
//! Routes: `/` (JSON with hostname and version), `/version`, `/healthz`, `/readyz`,
//! `/status/{code}`, `/delay/{seconds}` and `/metrics` (Prometheus text: `http_requests_total` and
//! the histogram `http_request_duration_seconds`, both labelled `method`, `path` (the route
//! template) and `status`, as podinfo does). `--error-rate` makes that share of the requests to
//! `/`, `/version`, `/delay/{seconds}` and unknown paths answer 500; `--latency-ms` is added to
//! every request. The health, readiness, status and metrics routes never inject errors, so a
//! faulty version still becomes ready and shows its failures in the traffic metrics.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::server;

/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often an app started through [`run`] checks that its parent is still alive.
const PARENT_POLL: Duration = Duration::from_millis(500);
/// podinfo's buckets (Prometheus' defaults), in seconds.
const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Command-line flags of `aviary sample-app`.
///
/// Note for the binary embedding it: this has a `--version` flag of its own, so the enclosing
/// command must not propagate clap's auto-generated `--version` to this subcommand.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SampleAppArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9898)]
    pub port: u16,
    /// Version reported by `/` and `/version`.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub version: String,
    /// Share of requests to the normal routes answered with 500, from 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_error_rate)]
    pub error_rate: f64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

impl Default for SampleAppArgs {
    fn default() -> Self {
        SampleAppArgs {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9898,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            error_rate: 0.0,
            latency_ms: 0,
        }
    }
}

fn parse_error_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{rate} is outside 0.0-1.0 (0.5 means half of the requests fail)"
        ))
    }
}

/// Runs the sample app until `shutdown` completes, SIGTERM or SIGINT arrives, or the parent
/// process dies (an orphaned app must not linger after its supervisor is killed).
pub async fn run(args: SampleAppArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let mut sigterm = unix_signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = unix_signal(tokio::signal::unix::SignalKind::interrupt())?;
    let app = SampleApp::start(args).await?;
    tracing::info!(addr = %app.local_addr(), "sample app listening");
    tokio::select! {
        () = shutdown => {}
        _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT received, shutting down"),
        () = parent_died() => tracing::info!("parent process exited, shutting down"),
    }
    app.stop().await;
    Ok(())
}

fn unix_signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).map_err(|e| Error::io("sample app: cannot install a signal handler", e))
}

/// Completes when the process that started us has gone (we were re-parented to init or a
/// subreaper). Polling is portable and needs no `unsafe` `prctl(PR_SET_PDEATHSIG)` in a pre-exec hook.
async fn parent_died() {
    let parent = std::os::unix::process::parent_id();
    if parent == 1 {
        // Started by init itself (a container entrypoint): there is no parent to outlive.
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(PARENT_POLL);
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// A running sample app (in this process). [`run`] is the process entry point; tests and
/// benchmarks may start several apps in one process with this.
#[derive(Debug)]
pub struct SampleApp {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl SampleApp {
    /// Binds `args.host:args.port` and starts serving.
    pub async fn start(args: SampleAppArgs) -> Result<SampleApp> {
        if let Err(message) = parse_error_rate(&args.error_rate.to_string()) {
            return Err(Error::invalid("sample app", "--error-rate", message));
        }
        let listener = server::bind("sample app", SocketAddr::new(args.host, args.port)).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("sample app: local address", e))?;
        let state = Arc::new(AppState::new(&args));
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(state.handle(req).await) }
        });
        let shutdown = CancellationToken::new();
        let connections = server::Connections::new(move || service.clone());
        let task = tokio::spawn(connections.run(listener, shutdown.clone(), SHUTDOWN_GRACE));
        Ok(SampleApp { addr, shutdown, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    path: &'static str,
    status: u16,
}

struct AppState {
    version: String,
    error_rate: f64,
    latency: Duration,
    /// The JSON of `/` and `/version` never changes: render it once.
    index_body: Bytes,
    version_body: Bytes,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Index,
    Version,
    Healthz,
    Readyz,
    Metrics,
    Status(Option<u16>),
    Delay(Option<u64>),
    NotFound,
}

impl Route {
    fn parse(path: &str) -> Route {
        match path {
            "/" => Route::Index,
            "/version" => Route::Version,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            _ => {
                if let Some(code) = path.strip_prefix("/status/") {
                    Route::Status(code.parse().ok().filter(|c| (200..=599).contains(c)))
                } else if let Some(seconds) = path.strip_prefix("/delay/") {
                    Route::Delay(seconds.parse().ok())
                } else {
                    Route::NotFound
                }
            }
        }
    }

    /// The route template used as the `path` label (bounded cardinality).
    fn template(self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::Version => "/version",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Status(_) => "/status/{code}",
            Route::Delay(_) => "/delay/{seconds}",
            Route::NotFound => "unmatched",
        }
    }

    fn injects_errors(self) -> bool {
        matches!(
            self,
            Route::Index | Route::Version | Route::Delay(_) | Route::NotFound
        )
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

impl AppState {
    fn new(args: &SampleAppArgs) -> AppState {
        let index = serde_json::json!({
            "hostname": hostname(),
            "version": args.version,
            "revision": "",
            "color": "#34577c",
            "logo": "",
            "message": format!("greetings from podinfo v{}", args.version),
            "goos": "linux",
            "goarch": go_arch(),
            "runtime": "rust",
            "num_cpu": std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
        });
        let version = serde_json::json!({"version": args.version, "commit": ""});
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register("http_requests", "Total number of HTTP requests", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Duration of HTTP requests",
            durations.clone(),
        );
        AppState {
            version: args.version.clone(),
            error_rate: args.error_rate,
            latency: Duration::from_millis(args.latency_ms),
            index_body: Bytes::from(format!("{index:#}\n")),
            version_body: Bytes::from(format!("{version:#}\n")),
            registry,
            requests,
            durations,
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let start = Instant::now();
        let route = Route::parse(req.uri().path());
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let response =
            if route.injects_errors() && self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_body(500, "injected error (--error-rate)"),
                )
            } else {
                self.respond(route).await
            };
        let labels = RequestLabels {
            method: method_label(req.method()),
            path: route.template(),
            status: response.status().as_u16(),
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        response
    }

    async fn respond(&self, route: Route) -> Response<Full<Bytes>> {
        match route {
            Route::Index => json(StatusCode::OK, self.index_body.clone()),
            Route::Version => json(StatusCode::OK, self.version_body.clone()),
            Route::Healthz | Route::Readyz => {
                json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"OK\"}\n"))
            }
            Route::Metrics => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => {
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        response
                    }
                    Err(_) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        error_body(500, "cannot encode metrics"),
                    ),
                }
            }
            Route::Status(Some(code)) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json(status, Bytes::from(format!("{{\"status\":{code}}}\n")))
            }
            Route::Status(None) => json(
                StatusCode::BAD_REQUEST,
                error_body(400, "the status code must be a number from 200 to 599"),
            ),
            Route::Delay(Some(seconds)) => {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                json(StatusCode::OK, Bytes::from(format!("{{\"delay\":{seconds}}}\n")))
            }
            Route::Delay(None) => json(
                StatusCode::BAD_REQUEST,
                error_body(400, "the delay must be a whole number of seconds"),
            ),
            Route::NotFound => json(StatusCode::NOT_FOUND, error_body(404, "not found")),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn error_body(code: u16, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"code": code, "message": message}).to_string() + "\n")
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SampleAppArgs,
    }

    #[test]
    fn flags_parse_and_validate_the_error_rate() {
        let cli = Cli::try_parse_from([
            "x",
            "--port",
            "0",
            "--version",
            "6.0.1",
            "--error-rate",
            "0.5",
            "--latency-ms",
            "20",
        ])
        .unwrap();
        assert_eq!(cli.args.version, "6.0.1");
        assert_eq!(cli.args.error_rate, 0.5);
        assert_eq!(cli.args.latency_ms, 20);
        assert_eq!(cli.args.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let err = Cli::try_parse_from(["x", "--error-rate", "1.5"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("outside 0.0-1.0"), "{err}");
        assert!(Cli::try_parse_from(["x", "--error-rate", "lots"]).is_err());
    }

    #[test]
    fn routes_map_to_bounded_templates() {
        assert_eq!(Route::parse("/status/503"), Route::Status(Some(503)));
        assert_eq!(Route::parse("/status/99"), Route::Status(None));
        assert_eq!(Route::parse("/delay/2"), Route::Delay(Some(2)));
        assert_eq!(Route::parse("/delay/x"), Route::Delay(None));
        assert_eq!(Route::parse("/nope").template(), "unmatched");
        assert!(!Route::parse("/readyz").injects_errors());
        assert!(Route::parse("/").injects_errors());
    }
}
