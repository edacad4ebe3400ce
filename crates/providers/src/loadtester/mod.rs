//! The Flagger-compatible load tester (`aviary loadtester`): a webhook target that runs
//! commands and keeps manual gates, with Flagger's API so that manifests calling
//! `http://flagger-loadtester.test/` keep working.
//!
//! Every endpoint takes Flagger's webhook payload (`name`, `namespace`, `phase`, `checksum`,
//! `metadata`); unparsable JSON is 400 with the parser's message, a namespace that does not match
//! `--namespace-regexp` is 403 "Forbidden". As in Flagger the expression is unanchored (`test`
//! also matches `test-2` and `my-test`) unless `--anchor-namespace-regexp` asks for a match of the
//! whole namespace ([`namespace_filter`]). A name longer than [`MAX_NAME`] bytes, a namespace
//! longer than [`MAX_NAMESPACE`], either with a control character, or a `cmd` longer than
//! [`MAX_CMD`] is 400.
//!
//! - `POST /` (and any other path, as Flagger's catch-all route): a task from `metadata`
//!   (required: 400 "metadata not found in payload"). `type` defaults to `cmd`:
//!   - `cmd`: `sh -c <cmd>` started in the background, 202 at once; while the same command runs
//!     for the same canary a new request is skipped (still 202); with [`MAX_RUNNING`] commands
//!     running a new one is 429. `logCmdOutput: "true"` logs the output.
//!   - `bash`: `bash -c <cmd>`, blocking: 200 on exit 0 (the body is the output when
//!     `returnCmdOutput: "true"`), 500 with the output and exit status otherwise.
//!   - `helm`, `helmv3`, `kubectl`: the binary with the whitespace-separated words of `cmd`,
//!     blocking like `bash`; 400 when the binary is not installed.
//!   - `concord`: a Concord process, blocking (200, or 500 with why); `ngrinder`: an nGrinder
//!     test in the background (202; deduplicated per canary and test). Both drive their
//!     server's HTTP API as Flagger does (the `remote` module).
//!   - anything else: 400 "unknown task type …".
//!
//!   Every command is killed with its process group after `--timeout` (default 1h). Its captured
//!   output (answered, logged, quoted in errors) keeps the first and the last 64 KiB of each of
//!   stdout and stderr, with a marker saying how much was dropped between.
//! - Gates, one per canary (namespace and name): `/gate/approve` 200 "OK", `/gate/halt` 403
//!   "Forbidden", `/gate/check` 200 "Approved" when open else 403 "Forbidden", `/gate/open` and
//!   `/gate/close` 202. The rollback gate, another one per canary: `/rollback/check` 200
//!   "Approved" when open else 403, `/rollback/open` and `/rollback/close` 202. Opening a gate
//!   when [`MAX_OPEN_GATES`] are open is 507. With `--state-file` the gates are persisted
//!   and reloaded on start.
//!
//! Names, commands and output are logged as escaped fields (`cmd="a\nb"`), so that a payload
//! cannot forge log lines.
//! - `/healthz` 200 "OK"; `/metrics` in Prometheus text format.
//!
//! Shutdown stops accepting requests, kills running commands and waits for in-flight requests.
//! `fuzz` (feature `fuzzing`) is the fuzz target of `fuzz/` over the JSON it reads.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod gates;
mod remote;
mod tasks;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
/// Re-exported for `Config::namespace_regexp`.
pub use regex::Regex;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
pub use gates::MAX_OPEN_GATES;
use gates::{GateKey, GateKind, Gates, SetError};
use tasks::{Canary, Outcome, Runner, Started};

/// Flagger's per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long in-flight requests may finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest canary name (a Kubernetes object name).
pub const MAX_NAME: usize = 253;
/// Longest namespace (a DNS label).
pub const MAX_NAMESPACE: usize = 63;
/// Longest `metadata.cmd`.
pub const MAX_CMD: usize = 64 * 1024;
/// `cmd` tasks running at once.
pub const MAX_RUNNING: usize = 256;

/// The `--namespace-regexp` filter: `pattern` as given (Flagger's unanchored search), or when
/// `anchored` a match of the whole namespace (`^(?:pattern)$`).
pub fn namespace_filter(pattern: &str, anchored: bool) -> Result<Regex, regex::Error> {
    if anchored {
        Regex::new(&format!("^(?:{pattern})$"))
    } else {
        Regex::new(pattern)
    }
}

/// Settings of a load tester.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Only payloads whose namespace matches are served (403 otherwise).
    pub namespace_regexp: Option<Regex>,
    /// Where gate state is persisted; `None` keeps it in memory (lost on restart).
    pub state_file: Option<PathBuf>,
    /// When set, a `concord` task's `apiKeyPath` must lie in this directory (the key file is
    /// sent to the payload's server).
    pub concord_key_dir: Option<PathBuf>,
}

impl Config {
    /// Listen on `listen` with Flagger's defaults otherwise.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            timeout: DEFAULT_TIMEOUT,
            namespace_regexp: None,
            state_file: None,
            concord_key_dir: None,
        }
    }
}

/// Runs a load tester until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let lt = Loadtester::start(config).await?;
    tracing::info!(addr = %lt.local_addr(), "load tester listening");
    shutdown.await;
    tracing::info!("load tester shutting down");
    lt.stop().await
}

/// A running load tester.
#[derive(Debug)]
pub struct Loadtester {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    runner: Arc<Runner>,
}

impl Loadtester {
    /// Loads the gate state, binds and starts serving.
    pub async fn start(config: Config) -> Result<Self> {
        let gates = Gates::load(config.state_file.clone())?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("load tester: cannot listen on {}", config.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("load tester: local address", e))?;
        let metrics = Arc::new(metrics::Metrics::new());
        let stop = CancellationToken::new();
        let runner = Runner::new(config.timeout, stop.child_token(), Arc::clone(&metrics));
        let client = reqwest::Client::builder()
            .user_agent(concat!("aviary-loadtester/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("load tester: HTTP client: {e}")))?;
        let app = Arc::new(App {
            gates,
            runner: Arc::clone(&runner),
            namespaces: config.namespace_regexp,
            metrics,
            client,
            concord_key_dir: config.concord_key_dir,
        });
        let router = Router::new()
            .route("/healthz", any(|| async { "OK" }))
            .route("/metrics", any(serve_metrics))
            .route("/gate/approve", any(gate_approve))
            .route("/gate/halt", any(gate_halt))
            .route("/gate/check", any(|a, b| check_gate(a, b, GateKind::Gate)))
            .route("/gate/open", any(|a, b| set_gate(a, b, GateKind::Gate, true)))
            .route("/gate/close", any(|a, b| set_gate(a, b, GateKind::Gate, false)))
            .route(
                "/rollback/check",
                any(|a, b| check_gate(a, b, GateKind::Rollback)),
            )
            .route(
                "/rollback/open",
                any(|a, b| set_gate(a, b, GateKind::Rollback, true)),
            )
            .route(
                "/rollback/close",
                any(|a, b| set_gate(a, b, GateKind::Rollback, false)),
            )
            .fallback(task)
            .with_state(app);
        let graceful = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { graceful.cancelled().await })
                .await
        });
        Ok(Self {
            addr,
            stop,
            server,
            runner,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, kills running commands, and waits (bounded) for in-flight requests.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.runner.shutdown().await;
        match tokio::time::timeout(SHUTDOWN_GRACE, self.server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::io("load tester: serving failed", e)),
            Ok(Err(e)) => Err(Error::Config(format!("load tester: server task failed: {e}"))),
            Err(_) => {
                tracing::warn!("load tester: in-flight requests still running after {SHUTDOWN_GRACE:?}");
                Ok(())
            }
        }
    }
}

struct App {
    gates: Gates,
    runner: Arc<Runner>,
    namespaces: Option<Regex>,
    metrics: Arc<metrics::Metrics>,
    /// For the task types that call another server (`concord`, `ngrinder`).
    client: reqwest::Client,
    concord_key_dir: Option<PathBuf>,
}

type Shared = State<Arc<App>>;

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn forbidden() -> Response {
    text(StatusCode::FORBIDDEN, "Forbidden")
}

impl App {
    /// Parses the payload and applies the namespace filter.
    fn payload(&self, body: &[u8]) -> Result<Payload, (StatusCode, String)> {
        parse_payload(body, self.namespaces.as_ref())
    }

    async fn set_gate(&self, key: GateKey, open: bool) -> Response {
        let message = match (key.kind, open) {
            (GateKind::Gate, true) => "Gate opened",
            (GateKind::Gate, false) => "Gate closed",
            (GateKind::Rollback, true) => "Rollback gate opened",
            (GateKind::Rollback, false) => "Rollback gate closed",
        };
        match self.gates.set(&key, open).await {
            Ok(()) => {
                tracing::info!(gate = ?key.kind, namespace = ?key.namespace, name = ?key.name, "{message}");
                text(StatusCode::ACCEPTED, message)
            }
            Err(SetError::Full) => text(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("{MAX_OPEN_GATES} gates are open already; close the gates of finished canaries"),
            ),
            Err(SetError::Persist(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }

    fn check_gate(&self, key: &GateKey) -> Response {
        let open = self.gates.is_open(key);
        let endpoint = match key.kind {
            GateKind::Gate => "gate",
            GateKind::Rollback => "rollback",
        };
        self.metrics.gate(endpoint, open);
        if open {
            text(StatusCode::OK, "Approved")
        } else {
            forbidden()
        }
    }
}

/// Parses a webhook payload and applies the namespace filter.
fn parse_payload(body: &[u8], namespaces: Option<&Regex>) -> Result<Payload, (StatusCode, String)> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid JSON payload: {e}; expected Flagger's webhook payload"),
        )
    })?;
    check_name("name", &p.name, MAX_NAME)?;
    check_name("namespace", &p.namespace, MAX_NAMESPACE)?;
    if let Some(re) = namespaces
        && !re.is_match(&p.namespace)
    {
        return Err((StatusCode::FORBIDDEN, "Forbidden".into()));
    }
    Ok(p)
}

/// A payload's name or namespace: bounded, without control characters (they would end up in
/// logs and in the state file).
fn check_name(field: &str, value: &str, max: usize) -> Result<(), (StatusCode, String)> {
    if value.len() > max {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{field} is {} bytes long; at most {max} are allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{field} contains a control character"),
        ));
    }
    Ok(())
}

macro_rules! with_payload {
    ($app:expr, $body:expr) => {
        match $app.payload(&$body) {
            Ok(p) => p,
            Err((status, message)) => return text(status, message),
        }
    };
}

async fn gate_approve(State(app): Shared, body: Bytes) -> Response {
    let _ = with_payload!(app, body);
    text(StatusCode::OK, "OK")
}

async fn gate_halt(State(app): Shared, body: Bytes) -> Response {
    let _ = with_payload!(app, body);
    forbidden()
}

/// `/<kind>/check`: 200 "Approved" when the canary's gate of `kind` is open, else 403.
async fn check_gate(State(app): Shared, body: Bytes, kind: GateKind) -> Response {
    let p = with_payload!(app, body);
    app.check_gate(&GateKey::new(kind, &p.namespace, &p.name))
}

/// `/<kind>/open` and `/<kind>/close`.
async fn set_gate(State(app): Shared, body: Bytes, kind: GateKind, open: bool) -> Response {
    let p = with_payload!(app, body);
    app.set_gate(GateKey::new(kind, &p.namespace, &p.name), open)
        .await
}

async fn serve_metrics(State(app): Shared) -> Response {
    match app.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /`: run a task.
async fn task(State(app): Shared, body: Bytes) -> Response {
    let p = with_payload!(app, body);
    let Some(meta) = p.metadata.as_ref().filter(|m| !m.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "metadata not found in payload");
    };
    let canary = Canary {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
    };
    let kind = meta.get("type").map(String::as_str).unwrap_or("cmd");
    match kind {
        "concord" => return concord(&app, canary, meta).await,
        "ngrinder" => return ngrinder(&app, canary, meta),
        _ => {}
    }
    let flag = |k: &str| meta.get(k).is_some_and(|v| v == "true");
    let Some(cmd) = meta.get("cmd").filter(|c| !c.trim().is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("cmd not found in metadata (a {kind} task needs metadata.cmd)"),
        );
    };
    if cmd.len() > MAX_CMD {
        return text(
            StatusCode::BAD_REQUEST,
            format!("cmd is {} bytes long; at most {MAX_CMD} are allowed", cmd.len()),
        );
    }
    let (program, args): (String, Vec<String>) = match kind {
        "cmd" => {
            // A duplicate of a running command is skipped (the runner counts it) but, as in
            // Flagger, still answered 202.
            return match app.runner.start(canary, cmd.clone(), flag("logCmdOutput")) {
                Started::Yes => {
                    app.metrics.task("cmd", "accepted");
                    text(StatusCode::ACCEPTED, "Task accepted")
                }
                Started::AlreadyRunning => text(StatusCode::ACCEPTED, "Task accepted"),
                Started::TooMany => {
                    app.metrics.task("cmd", "refused");
                    text(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("{MAX_RUNNING} commands are running already; try again later"),
                    )
                }
            };
        }
        "bash" => ("bash".into(), vec!["-c".into(), cmd.clone()]),
        "helm" | "helmv3" | "kubectl" => {
            let candidates: &[&str] = match kind {
                "helmv3" => &["helmv3", "helm"],
                "helm" => &["helm"],
                _ => &["kubectl"],
            };
            let Some(bin) = candidates.iter().find_map(|c| tasks::which(c)) else {
                app.metrics.task(kind, "unavailable");
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "task type {kind} needs the {} binary, which is not installed on this load tester; \
                         install it in the image or use a bash task",
                        candidates[0]
                    ),
                );
            };
            (
                bin.to_string_lossy().into_owned(),
                cmd.split_whitespace().map(str::to_string).collect(),
            )
        }
        other => {
            return text(StatusCode::BAD_REQUEST, format!("unknown task type {other}"));
        }
    };
    tracing::info!(%canary, kind, cmd = ?cmd, "command starting");
    let outcome = tasks::run(&program, &args, app.runner.timeout(), app.runner.cancel_token()).await;
    let log = flag("logCmdOutput");
    match outcome {
        Outcome::Success(out) => {
            app.metrics.task(kind, "succeeded");
            if log {
                tracing::info!(%canary, cmd = ?cmd, output = ?out, "command finished");
            }
            let body = if flag("returnCmdOutput") {
                out
            } else {
                String::new()
            };
            text(StatusCode::OK, body)
        }
        Outcome::Failed { output, status } => {
            app.metrics.task(kind, "failed");
            tracing::warn!(%canary, cmd = ?cmd, %status, output = ?output, "command failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("command {cmd} failed: {}: {status}", output.trim_end()),
            )
        }
        Outcome::TimedOut => {
            app.metrics.task(kind, "timeout");
            let t = aviary_api::duration::format_go_duration(app.runner.timeout());
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("command {cmd} killed after the timeout of {t}"),
            )
        }
        Outcome::Cancelled => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("command {cmd} stopped: the load tester is shutting down"),
        ),
        Outcome::NotStarted(e) => {
            app.metrics.task(kind, "failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// A `concord` task: blocking, bounded by `--timeout` (Flagger's server.go:390-419).
async fn concord(app: &App, canary: Canary, meta: &BTreeMap<String, String>) -> Response {
    let task = match remote::Concord::from_metadata(meta, app.concord_key_dir.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%canary, "concord task init error: {e}");
            app.metrics.task("concord", "failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    };
    tracing::info!(%canary, "concord task starting");
    let cancel = app.runner.cancel_token();
    let outcome = tokio::time::timeout(app.runner.timeout(), task.run(&app.client, cancel))
        .await
        .unwrap_or_else(|_| Err("context timedout".into()));
    match outcome {
        Ok(()) => {
            app.metrics.task("concord", "succeeded");
            text(StatusCode::OK, "")
        }
        Err(e) => {
            tracing::warn!(%canary, "concord task error: {e}");
            app.metrics.task("concord", "failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// An `ngrinder` task: in the background like `cmd` (task_ngrinder.go, runner.go:60-92).
fn ngrinder(app: &App, canary: Canary, meta: &BTreeMap<String, String>) -> Response {
    let task = match remote::NGrinder::from_metadata(meta) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let (client, timeout, cancel) = (
        app.client.clone(),
        app.runner.timeout(),
        app.runner.cancel_token().clone(),
    );
    let c = canary.clone();
    let key = task.key();
    let started = app.runner.spawn(canary, "ngrinder", key, async move {
        tracing::info!(canary = %c, task = ?task, "nGrinder test starting");
        if task.run(&client, timeout, &cancel).await {
            tracing::info!(canary = %c, "nGrinder test finished");
            "succeeded"
        } else {
            "failed"
        }
    });
    match started {
        Started::Yes | Started::AlreadyRunning => text(StatusCode::ACCEPTED, "Task accepted"),
        Started::TooMany => text(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_RUNNING} tasks are running already; try again later"),
        ),
    }
}

mod metrics {
    //! The load tester's own metrics.

    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TaskLabels {
        r#type: String,
        outcome: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct GateLabels {
        gate: String,
        result: String,
    }

    pub(crate) struct Metrics {
        registry: Registry,
        tasks: Family<TaskLabels, Counter>,
        gates: Family<GateLabels, Counter>,
        pub(crate) running: Gauge,
    }

    impl std::fmt::Debug for Metrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Metrics").finish_non_exhaustive()
        }
    }

    impl Metrics {
        pub(crate) fn new() -> Self {
            let mut registry = Registry::with_prefix("aviary_loadtester");
            let tasks = Family::<TaskLabels, Counter>::default();
            let gates = Family::<GateLabels, Counter>::default();
            let running = Gauge::default();
            registry.register(
                "tasks",
                "Tasks by type and outcome (accepted, skipped, succeeded, failed, timeout, …)",
                tasks.clone(),
            );
            registry.register(
                "gate_checks",
                "Gate and rollback checks by answer (open, closed)",
                gates.clone(),
            );
            registry.register("commands_running", "cmd tasks running now", running.clone());
            Self {
                registry,
                tasks,
                gates,
                running,
            }
        }

        pub(crate) fn task(&self, kind: &str, outcome: &str) {
            self.tasks
                .get_or_create(&TaskLabels {
                    r#type: kind.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc();
        }

        pub(crate) fn gate(&self, gate: &str, open: bool) {
            self.gates
                .get_or_create(&GateLabels {
                    gate: gate.to_string(),
                    result: if open { "open" } else { "closed" }.to_string(),
                })
                .inc();
        }

        pub(crate) fn encode(&self) -> Result<String, String> {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &self.registry).map_err(|e| e.to_string())?;
            Ok(out)
        }
    }
}
