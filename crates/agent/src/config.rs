//! The agent's configuration (the flags of `aviary agent`).

pub use aviary_kube::ClientSettings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use aviary_providers::GlobalNotifier;

/// Settings shared by both platforms.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster's name in the fleet (alerts carry it as `Cluster`).
    pub cluster: String,
    /// The cluster's region.
    pub region: String,
    /// Labels for the coordinator's wave selectors.
    pub labels: BTreeMap<String, String>,
    /// The fleet coordinator (`http://host:port`, or `https://` for mutual TLS); `None` =
    /// plain Flagger behaviour.
    pub coordinator: Option<String>,
    /// The certificates for an `https://` coordinator.
    pub coordinator_tls: CoordinatorTls,
    /// Where `/healthz`, `/metrics`, `/canaries` and `/events` are served.
    pub admin_listen: SocketAddr,
    /// Floor of the analysis interval (Flagger's is 10s).
    pub min_analysis_interval: Duration,
    /// Prometheus for built-in metrics and inline queries, unless a canary sets `metricsServer`.
    pub metrics_server: String,
    /// Provider for canaries that do not set one (Flagger's `-mesh-provider`).
    pub default_provider: String,
    /// Global event webhook (Flagger's `-event-webhook`).
    pub event_webhook: Option<String>,
    /// The global notifier (alerts of canaries without `analysis.alerts`).
    pub notifier: GlobalNotifier,
    /// Which platform to run.
    pub platform: PlatformConfig,
}

/// The agent's certificates for the coordinator: the CA of the coordinator's certificate, and
/// its own certificate (identity: its cluster, in `spiffe://<trust-domain>/cluster/<name>`) and
/// key. Read at every connect, so rotated files are picked up on the next reconnect.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// The platform and its settings.
#[derive(Debug, Clone)]
pub enum PlatformConfig {
    /// Kubernetes through kube-rs.
    Kube {
        /// A kubeconfig file; in-cluster configuration when `None`.
        kubeconfig: Option<PathBuf>,
        /// Watch one namespace only.
        namespace: Option<String>,
        /// Elect one active replica through a coordination.k8s.io Lease.
        leader_election: bool,
        /// Namespace of the Lease.
        leader_election_namespace: String,
        /// The client-side rate limit of requests to the API server.
        client: ClientSettings,
    },
    /// The embedded local platform.
    Local {
        /// A YAML file or a directory of them (LocalService, Canary, MetricTemplate, AlertProvider).
        config: PathBuf,
        /// Where canary status, primary versions and overrides are persisted.
        state_dir: PathBuf,
    },
}
