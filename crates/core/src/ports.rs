//! Ports: what the engine needs from the world, as traits. Platforms implement them (Kubernetes in
//! aviary-kube, processes and a router in aviary-local, HTTP providers in aviary-providers, the
//! coordinator link in aviary-agent); tests and `aviary simulate` use the fakes in
//! [`crate::fakes`]. Every method takes the Canary it acts for, so one port object can serve many
//! canaries. Errors are plain messages: the engine turns them into Flagger's events.
//! [`SecretSource`] and [`BuiltinSource`] are not used by the engine itself: they are the ports
//! through which adapters (metric providers, notifiers) read credentials and built-in metrics, so
//! they stay independent of the platform.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use aviary_api::canary::{CanaryWebhook, NamespacedRef};
use aviary_api::{Canary, CanaryPhase, CanaryStatus, MetricTemplate, Strategy};
use serde::{Deserialize, Serialize};

use crate::judge::{CounterReading, EvidenceReport};

// === Target ===

/// The revision the target currently describes: its fingerprint (plus tracked configs and the
/// query route). Not to be confused with a fleet rollout's [`crate::fleet::Revision`] (images or a
/// version).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetRevision {
    /// Stable fingerprint of the workload template (see [`crate::fingerprint`]); stored in
    /// `status.lastAppliedSpec` when an analysis starts.
    pub fingerprint: String,
    /// Checksums of tracked ConfigMaps/Secrets (`configmap/<name>` → checksum), if tracked.
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// The `{{ route }}` of query templates when the platform knows better than
    /// `routeRef.name`: Knative's latest created revision.
    pub route: Option<String>,
}

/// A readiness failure: retriable (wait and try again next tick) or fatal (roll back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub retriable: bool,
    pub message: String,
}

impl NotReady {
    /// A failure that may clear by itself (a rollout in progress).
    pub fn retriable(message: impl Into<String>) -> Self {
        Self {
            retriable: true,
            message: message.into(),
        }
    }
    /// A failure that will not clear (a progress deadline exceeded, a crash loop).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retriable: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The workload under analysis: a Deployment, a Knative Service, a LocalService, …
#[async_trait]
pub trait Target: Send + Sync {
    /// The revision the target describes now.
    async fn revision(&self, canary: &Canary) -> Result<TargetRevision, String>;
    /// Creates what the canary needs besides the target (the `-primary` copy) when missing.
    async fn initialize(&self, canary: &Canary) -> Result<(), NotReady>;
    /// Whether the primary is ready to serve.
    async fn primary_ready(&self, canary: &Canary) -> Result<(), NotReady>;
    /// Whether the canary (the new revision) is ready to serve.
    async fn canary_ready(&self, canary: &Canary) -> Result<(), NotReady>;
    /// Copies the canary's template to the primary.
    async fn promote(&self, canary: &Canary) -> Result<(), String>;
    /// Scales the canary workload down (it is not serving).
    async fn scale_to_zero(&self, canary: &Canary) -> Result<(), String>;
    /// Scales the canary workload up for an analysis.
    async fn scale_from_zero(&self, canary: &Canary) -> Result<(), String>;
    /// Reverts the target on deletion (`revertOnDeletion`): scales it back up to serve alone.
    async fn finalize(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
}

// === Router ===

/// Session affinity cookies the router must honour (values include `name=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCookies {
    /// Pins a client to the canary (`status.sessionAffinityCookie`).
    pub canary: Option<String>,
    /// Pins a client to the primary (`status.primarySessionAffinityCookie`).
    pub primary: Option<String>,
    /// A cookie to expire (`status.previousSessionAffinityCookie`).
    pub previous: Option<String>,
}

/// The traffic split. Weights are percent and sum to 100.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub primary: i32,
    pub canary: i32,
    /// Mirror (shadow) requests to the canary.
    pub mirror: bool,
    /// Session affinity, when the canary uses it.
    pub session: Option<SessionCookies>,
}

impl Routes {
    /// `primary`/`canary` weights without mirroring.
    pub fn split(primary: i32, canary: i32) -> Self {
        Self {
            primary,
            canary,
            mirror: false,
            session: None,
        }
    }
}

/// The traffic router: a mesh, a gateway, Knative, or the local router.
#[async_trait]
pub trait Router: Send + Sync {
    /// Creates or takes over the routing objects (100% primary on creation).
    async fn reconcile(&self, canary: &Canary) -> Result<(), String>;
    /// Sets the split.
    async fn set_routes(&self, canary: &Canary, routes: &Routes) -> Result<(), String>;
    /// Reads the split back from the data plane (the source of truth each tick).
    async fn get_routes(&self, canary: &Canary) -> Result<Routes, String>;
    /// Reverts routing on deletion.
    async fn finalize(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
}

// === Metrics ===

/// The two built-in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinMetric {
    /// `request-success-rate`: percent of non-5xx responses.
    SuccessRate,
    /// `request-duration`: p99 latency in milliseconds.
    Duration,
}

/// Flagger's query-template model (name, namespace, target, service, ingress, route, the
/// metric interval as written, templateVariables): the values behind the template functions.
pub use aviary_template::Model as MetricModel;

/// Why a query produced no number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricError {
    /// The query ran but found nothing (no traffic, wrong labels, …): a failed check.
    NoValues(String),
    /// The provider's credentials Secret could not be read.
    Secret { secret: String, message: String },
    /// The provider could not be built (bad address, missing credential key, …).
    Provider(String),
    /// The query failed.
    Query(String),
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoValues(m) | Self::Provider(m) | Self::Query(m) => f.write_str(m),
            Self::Secret { message, .. } => f.write_str(message),
        }
    }
}

/// One metric query: its value, or why there is none.
pub type MetricResult = Result<f64, MetricError>;

/// A MetricTemplate metric of a canary, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct TemplateQuery<'a> {
    /// The canary's metric (`analysis.metrics[].name`).
    pub metric: &'a str,
    pub template: &'a MetricTemplate,
    /// The metric's interval (`{{ interval }}` in the query).
    pub interval: &'a str,
    /// The query, rendered.
    pub query: &'a str,
}

/// One query → a value, no values, or an error.
#[async_trait]
pub trait Metrics: Send + Sync {
    /// Whether the metric backends the canary uses answer (checked at initialization).
    async fn check_providers(&self, canary: &Canary) -> Result<(), String>;
    /// A built-in metric over `model.interval`: percent for the success rate, ms for duration.
    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult;
    /// Looks up a MetricTemplate.
    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String>;
    /// Runs the rendered query of a MetricTemplate metric with the template's provider.
    async fn query(&self, q: TemplateQuery<'_>) -> MetricResult;
    /// Runs a deprecated inline query (the canary's metric `metric`) against its metrics server.
    async fn inline(&self, canary: &Canary, metric: &str, query: &str) -> MetricResult;
    /// The raw cumulative counters of both arms now (requests, 5xx, latency buckets), for the
    /// statistical judge. Only canaries with the judge on ask. `model` is the canary's metric
    /// model (its `route` is what the platform resolves, e.g. Knative's latest revision).
    async fn counters(&self, _canary: &Canary, _model: &MetricModel) -> Result<CounterReading, MetricError> {
        Err(MetricError::Provider(NO_COUNTERS.into()))
    }
}

/// Why a platform gives the judge no counters.
pub const NO_COUNTERS: &str =
    "this metrics source has no raw request counters for the judge (the local router and Prometheus have)";

/// Where built-in metrics and inline queries come from, behind the `Metrics` port of the
/// providers: Flagger's PromQL on Prometheus (aviary-providers) or the local router's statistics
/// (aviary-local). Like [`SecretSource`], the engine does not call it; adapters plug it in.
#[async_trait]
pub trait BuiltinSource: Send + Sync {
    /// Whether the backend answers, for the canary's built-in metrics and inline queries.
    async fn check(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
    /// A built-in metric over `model.interval`: percent for the success rate, milliseconds for
    /// the duration.
    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult;
    /// The raw cumulative counters of both arms (see [`Metrics::counters`]).
    async fn counters(&self, _canary: &Canary, _model: &MetricModel) -> Result<CounterReading, MetricError> {
        Err(MetricError::Provider(NO_COUNTERS.into()))
    }
    /// A deprecated inline `metrics[].query` (already rendered).
    async fn inline(&self, _canary: &Canary, _query: &str) -> MetricResult {
        Err(MetricError::Provider(
            "inline metric queries (metrics[].query) need a Prometheus metrics server; use a MetricTemplate"
                .into(),
        ))
    }
}

// === Secrets ===

/// Reads Secrets: the credentials of metric and alert providers. Kubernetes Secrets on the kube
/// platform; files or environment variables on the local platform.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The data of the Secret `namespace/name` (key → bytes). `Err` says why it cannot be read
    /// (missing, forbidden, unreadable); it never contains secret values.
    async fn secret(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String>;
}

// === Hooks ===

/// Flagger's webhook payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookPayload {
    pub name: String,
    pub namespace: String,
    pub phase: CanaryPhase,
    pub checksum: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Calls one webhook.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// POSTs `payload` to the webhook; `Err` carries the failure text (the response body or the
    /// transport error). A pass is a status ≤ 202.
    async fn call(&self, hook: &CanaryWebhook, payload: &HookPayload) -> Result<(), String>;
}

// === Notifier ===

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
    /// Parses a severity; empty means info (aviary's fix of Flagger's "empty receives nothing").
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "info" => Some(Self::Info),
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub message: String,
    pub severity: Severity,
    /// `(name, value)` pairs: Cluster, Target, Failed checks threshold, …
    pub fields: Vec<(String, String)>,
}

/// Sends alerts.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends to one AlertProvider (`Some`) or to the agent's global notifier (`None`).
    /// Failures are reported and never block the analysis.
    async fn notify(
        &self,
        canary: &Canary,
        provider: Option<&NamespacedRef>,
        alert: &Alert,
    ) -> Result<(), String>;
}

// === Recorder ===

/// Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Persists status, emits events, and keeps Flagger's controller metrics.
#[async_trait]
pub trait Recorder: Send + Sync {
    /// Persists the canary's status (the source of truth across restarts).
    async fn status(&self, canary: &Canary, status: &CanaryStatus) -> Result<(), String>;
    /// Emits an event on the canary (reason `Synced`).
    async fn event(&self, canary: &Canary, kind: EventType, message: &str);
    /// `flagger_canary_status`.
    fn set_phase_metric(&self, _canary: &Canary, _phase: CanaryPhase) {}
    /// `flagger_canary_weight`.
    fn set_weight_metric(&self, _canary: &Canary, _primary: i32, _canary_weight: i32) {}
    /// `flagger_canary_metric_analysis` (request-duration in seconds). As in Flagger, every
    /// measured value sets it, before its threshold is compared.
    fn set_analysis_metric(&self, _canary: &Canary, _metric: &str, _value: f64) {}
    /// Every value an analysis check measured, passing or not (request-duration in seconds):
    /// what the fleet coordinator's verdicts show.
    fn observe_metric(&self, _canary: &Canary, _metric: &str, _value: f64) {}
    /// `flagger_canary_successes_total` (`skipped` when the analysis was skipped).
    fn inc_successes(&self, _canary: &Canary, _strategy: Strategy, _skipped: bool) {}
    /// `flagger_canary_failures_total`.
    fn inc_failures(&self, _canary: &Canary, _strategy: Strategy) {}
}

// === Gate ===

/// The answer of an outside authority (the fleet coordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    Open,
    Closed(String),
}

/// An outside authority over this canary: the fleet coordinator. With none configured the
/// agent behaves like plain Flagger ([`NoGate`]).
#[async_trait]
pub trait Gate: Send + Sync {
    /// The gate's name in events (`Confirm-rollout check <name> passed`); `None` = no gate.
    fn name(&self) -> Option<&str>;
    /// May the analysis of `revision` start?
    async fn confirm_rollout(&self, canary: &Canary, revision: &TargetRevision) -> GateDecision;
    /// Does the authority want the running analysis rolled back now? `Some(reason)` if so.
    async fn rollback_requested(&self, canary: &Canary) -> Option<String>;
    /// Should the current revision be promoted without analysis? The coordinator asks for it
    /// when it reverts a cluster to its known-good previous revision.
    async fn skip_analysis(&self, _canary: &Canary) -> bool {
        false
    }
    /// One interval of the judge's evidence for the authority to pool across clusters
    /// (the coordinator). Fire and forget: a report that cannot be sent now is queued or lost,
    /// never retried into another interval.
    async fn report_evidence(&self, _canary: &Canary, _report: &EvidenceReport) {}
}

/// No outside authority: every gate is open.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGate;

#[async_trait]
impl Gate for NoGate {
    fn name(&self) -> Option<&str> {
        None
    }
    async fn confirm_rollout(&self, _canary: &Canary, _revision: &TargetRevision) -> GateDecision {
        GateDecision::Open
    }
    async fn rollback_requested(&self, _canary: &Canary) -> Option<String> {
        None
    }
}

/// All ports of one canary, borrowed for one tick.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub target: &'a dyn Target,
    pub router: &'a dyn Router,
    pub metrics: &'a dyn Metrics,
    pub hooks: &'a dyn Hooks,
    pub notifier: &'a dyn Notifier,
    pub recorder: &'a dyn Recorder,
    pub gate: &'a dyn Gate,
}

/// One port of each kind, owned (the fakes, the simulator's world); [`PortSet::ports`] lends
/// them for a tick.
#[derive(Debug, Clone, Default)]
pub struct PortSet<T, R, M, H, N, Rec, G> {
    pub target: T,
    pub router: R,
    pub metrics: M,
    pub hooks: H,
    pub notifier: N,
    pub recorder: Rec,
    pub gate: G,
}

impl<T, R, M, H, N, Rec, G> PortSet<T, R, M, H, N, Rec, G>
where
    T: Target,
    R: Router,
    M: Metrics,
    H: Hooks,
    N: Notifier,
    Rec: Recorder,
    G: Gate,
{
    /// The ports for one tick.
    pub fn ports(&self) -> Ports<'_> {
        Ports {
            target: &self.target,
            router: &self.router,
            metrics: &self.metrics,
            hooks: &self.hooks,
            notifier: &self.notifier,
            recorder: &self.recorder,
            gate: &self.gate,
        }
    }
}
