//! A fake Kubernetes API server: a **test double**, not a cluster.
//!
//! It speaks the Kubernetes REST protocol over plain HTTP well enough for kube-rs and the real
//! `kubectl` (1.32): discovery, CRUD with resourceVersion conflicts, merge/JSON/strategic patches,
//! watches with bookmarks, the status subresource, finalizers, server-side tables, CRDs, and
//! simulators for the controllers aviary depends on (Deployments, Knative, Gateway API). There is
//! no authentication, admission, schema validation, pruning, server-side apply or conversion.
//!
//! ```no_run
//! # async fn demo() -> aviary_testkit::Result<()> {
//! use aviary_testkit::FakeApiServer;
//! let server = FakeApiServer::start().await?;
//! let client = server.client()?;            // kube::Client
//! server.write_kubeconfig("/tmp/kubeconfig")?; // for kubectl --kubeconfig
//! let deploy = server.store().get("apps/v1", "Deployment", Some("test"), "podinfo");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod discovery;
mod http;
mod patch;
mod proto;
mod resources;
mod selector;
mod simulators;
mod store;
mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use resources::{CellSource, Column, ResourceType, ScaleDef, VersionDef};
pub use simulators::{GATEWAY_CONTROLLER_NAME, NEVER_READY_ANNOTATION, SimulatorConfig, Simulators};
pub use store::{Event, EventType, Store};

use crate::error::{Error, Result};

/// Name of the cluster, context and user in the generated kubeconfig.
pub const KUBECONFIG_NAME: &str = "aviary-fake";

/// Settings of a [`FakeApiServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Which simulators run, and their delay.
    pub simulators: SimulatorConfig,
    /// Changes kept for watches that resume from a resourceVersion; older ones get 410 Gone.
    pub watch_history: usize,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Kubernetes version reported by `/version` (`major.minor.patch`). The kubectl on the
    /// development machines picks its client version from it.
    pub kubernetes_version: String,
    /// Serve aggregated discovery to clients that ask for it (kubectl, kube-rs
    /// `Discovery::run_aggregated`); off = legacy discovery only.
    pub aggregated_discovery: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            simulators: SimulatorConfig::default(),
            watch_history: 100_000,
            bookmark_interval: Duration::from_secs(5),
            kubernetes_version: "1.32.0".into(),
            aggregated_discovery: true,
        }
    }
}

/// A running fake API server. Dropping it stops it; [`FakeApiServer::shutdown`] also waits.
pub struct FakeApiServer {
    addr: SocketAddr,
    url: String,
    store: Arc<Store>,
    simulators: Simulators,
    cancel: CancellationToken,
    app: Arc<http::App>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with an ephemeral port and default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts with `options`.
    pub async fn start_with(options: Options) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|e| Error::io(format!("binding the fake API server to {}", options.addr), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let store = Arc::new(Store::new(options.watch_history));
        let cancel = CancellationToken::new();
        let simulators = Simulators::new(&options.simulators);
        let app = Arc::new(http::App {
            store: store.clone(),
            cancel: cancel.clone(),
            kube_version: options.kubernetes_version.clone(),
            server_address: addr.to_string(),
            bookmark_interval: options.bookmark_interval,
            aggregated_discovery: options.aggregated_discovery,
            watches: Default::default(),
        });
        let router = http::router(app.clone());
        let shutdown = cancel.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!("fake API server stopped: {e}");
            }
        });
        let sims = simulators.spawn(store.clone(), cancel.clone());
        tracing::info!("fake API server listening on http://{addr}");
        Ok(Self {
            addr,
            url: format!("http://{addr}"),
            store,
            simulators,
            cancel,
            app,
            tasks: vec![server, sims],
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Direct access to the objects, for assertions and for injecting state.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Number of watch requests served so far (to see that a client re-watched).
    pub fn watch_requests(&self) -> u64 {
        self.app.watches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Run-time toggles of the simulators.
    pub fn simulators(&self) -> &Simulators {
        &self.simulators
    }

    /// A kubeconfig (YAML) with one cluster (`server: http://…`), one context (namespace
    /// `default`) and one user without credentials, all named [`KUBECONFIG_NAME`].
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(&self.url)
    }

    /// Writes [`FakeApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig())
            .map_err(|e| Error::io(format!("writing the kubeconfig to {}", path.display()), e))
    }

    /// A kube-rs configuration for this server (default namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        let mut cfg = kube::Config::new(self.url.parse().expect("the server URL is a valid URI"));
        cfg.default_namespace = "default".into();
        cfg
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.kube_config()).map_err(|e| Error::Kube(Box::new(e)))
    }

    /// Stops serving: open watches end, the listener closes, simulators stop.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            // In-flight requests get a moment; a stuck connection must not hang a test.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The kubeconfig YAML for a server at `url`.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {KUBECONFIG_NAME}
  cluster:
    server: {url}
contexts:
- name: {KUBECONFIG_NAME}
  context:
    cluster: {KUBECONFIG_NAME}
    user: {KUBECONFIG_NAME}
    namespace: default
current-context: {KUBECONFIG_NAME}
users:
- name: {KUBECONFIG_NAME}
  user: {{}}
preferences: {{}}
"
    )
}
