//! What every agent records besides the platform's own status writes: Flagger's controller
//! metrics (reference §7, same names and labels) and a ring of recent events, fed by a Recorder
//! decorator so both platforms get them the same way. Event listeners (the coordinator link)
//! are told about every event too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryPhase, CanaryStatus, Strategy};
use aviary_core::ports::{EventType, Recorder};
use jiff::Timestamp;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryLabels {
    name: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeightLabels {
    workload: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnalysisLabels {
    name: String,
    namespace: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    name: String,
    namespace: String,
    deployment_strategy: String,
    analysis_status: String,
}

/// Flagger's controller metrics plus aviary's own.
pub struct ControllerMetrics {
    registry: Registry,
    total: Family<NamespaceLabels, Gauge>,
    status: Family<CanaryLabels, Gauge>,
    weight: Family<WeightLabels, Gauge>,
    duration: Family<CanaryLabels, Histogram>,
    analysis: Family<AnalysisLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
    lateness: Histogram,
    events_dropped: Counter,
}

impl ControllerMetrics {
    /// A registry with every metric registered; `provider` is the agent's default provider.
    pub fn new(version: &str, provider: &str) -> Self {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        let total = Family::<NamespaceLabels, Gauge>::default();
        let status = Family::<CanaryLabels, Gauge>::default();
        let weight = Family::<WeightLabels, Gauge>::default();
        let duration = Family::<CanaryLabels, Histogram>::new_with_constructor(|| {
            // Prometheus' default buckets, as Flagger uses them.
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let analysis = Family::<AnalysisLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let successes = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<OutcomeLabels, Counter>::default();
        let lateness = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let events_dropped = Counter::default();
        registry.register(
            "flagger_info",
            "Flagger version and mesh provider information",
            info.clone(),
        );
        registry.register(
            "flagger_canary_total",
            "Total number of canary object",
            total.clone(),
        );
        registry.register(
            "flagger_canary_status",
            "Last canary analysis result (0 = Progressing, 1 = other, 2 = Failed)",
            status.clone(),
        );
        registry.register(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            weight.clone(),
        );
        registry.register(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis.",
            duration.clone(),
        );
        registry.register(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            analysis.clone(),
        );
        registry.register(
            "flagger_canary_successes",
            "Total number of canary successes",
            successes.clone(),
        );
        registry.register(
            "flagger_canary_failures",
            "Total number of canary failures",
            failures.clone(),
        );
        registry.register(
            "aviary_canary_tick_lateness_seconds",
            "How late analysis ticks start against their schedule",
            lateness.clone(),
        );
        registry.register(
            "aviary_kubernetes_events_dropped",
            "Kubernetes Events not written because the API server did not keep up with the queue",
            events_dropped.clone(),
        );
        info.get_or_create(&InfoLabels {
            version: version.into(),
            mesh_provider: provider.into(),
        })
        .set(1);
        Self {
            registry,
            total,
            status,
            weight,
            duration,
            analysis,
            successes,
            failures,
            lateness,
            events_dropped,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }

    /// `flagger_canary_total` per namespace.
    pub fn set_totals<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        self.total.clear();
        for ns in namespaces {
            self.total
                .get_or_create(&NamespaceLabels { namespace: ns.into() })
                .inc();
        }
    }

    /// `aviary_kubernetes_events_dropped_total`, from the recorder's running count.
    pub fn set_events_dropped(&self, total: u64) {
        let seen = self.events_dropped.get();
        if total > seen {
            self.events_dropped.inc_by(total - seen);
        }
    }

    /// Records one tick (duration only when it reached the analysis, as Flagger does).
    pub fn observe_tick(
        &self,
        canary_target: &str,
        namespace: &str,
        duration: Duration,
        lateness: Duration,
        analysed: bool,
    ) {
        if analysed {
            self.duration
                .get_or_create(&CanaryLabels {
                    name: canary_target.into(),
                    namespace: namespace.into(),
                })
                .observe(duration.as_secs_f64());
        }
        self.lateness.observe(lateness.as_secs_f64());
    }

    fn labels(c: &Canary) -> CanaryLabels {
        CanaryLabels {
            name: c.target_name().into(),
            namespace: c.namespace().into(),
        }
    }

    fn outcome(c: &Canary, strategy: Strategy, status: &str) -> OutcomeLabels {
        OutcomeLabels {
            name: c.target_name().into(),
            namespace: c.namespace().into(),
            deployment_strategy: strategy.as_str().into(),
            analysis_status: status.into(),
        }
    }
}

/// One event as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// `namespace/name`.
    pub canary: String,
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub timestamp: String,
}

/// Called for every event (the coordinator link forwards them).
pub type EventListener = Arc<dyn Fn(&EventRecord) + Send + Sync>;

/// The most recent events, oldest first.
pub struct EventLog {
    events: Mutex<VecDeque<EventRecord>>,
    capacity: usize,
    listeners: Mutex<Vec<EventListener>>,
}

impl EventLog {
    /// Keeps the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Adds an event and tells the listeners.
    pub fn push(&self, record: EventRecord) {
        for l in self.listeners.lock().iter() {
            l(&record);
        }
        let mut events = self.events.lock();
        if events.len() == self.capacity {
            events.pop_front();
        }
        events.push_back(record);
    }

    /// Every kept event, optionally for one canary (`namespace/name`).
    pub fn list(&self, canary: Option<&str>) -> Vec<EventRecord> {
        self.events
            .lock()
            .iter()
            .filter(|e| canary.is_none_or(|c| e.canary == c))
            .cloned()
            .collect()
    }

    /// Registers a listener.
    pub fn subscribe(&self, listener: EventListener) {
        self.listeners.lock().push(listener);
    }
}

/// Told the last value of every analysis metric (the coordinator link keeps them for verdicts).
pub type AnalysisListener = Arc<dyn Fn(&Canary, &str, f64) + Send + Sync>;

/// A Recorder that adds metrics and the event log to the platform's own recorder.
pub struct Observed {
    inner: Arc<dyn Recorder>,
    metrics: Arc<ControllerMetrics>,
    events: Arc<EventLog>,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    on_analysis: Option<AnalysisListener>,
}

impl Observed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Recorder>, metrics: Arc<ControllerMetrics>, events: Arc<EventLog>) -> Self {
        Self {
            inner,
            metrics,
            events,
            clock: Arc::new(Timestamp::now),
            on_analysis: None,
        }
    }

    /// Also tells `listener` every value an analysis check measured, passing or not.
    pub fn with_analysis_listener(mut self, listener: Option<AnalysisListener>) -> Self {
        self.on_analysis = listener;
        self
    }
}

#[async_trait]
impl Recorder for Observed {
    async fn status(&self, canary: &Canary, status: &CanaryStatus) -> Result<(), String> {
        self.inner.status(canary, status).await
    }

    async fn event(&self, canary: &Canary, kind: EventType, message: &str) {
        self.inner.event(canary, kind, message).await;
        self.events.push(EventRecord {
            canary: canary.key(),
            namespace: canary.namespace().into(),
            name: canary.name().into(),
            kind: kind.as_str().into(),
            reason: "Synced".into(),
            message: message.into(),
            timestamp: (self.clock)().to_string(),
        });
    }

    fn set_phase_metric(&self, canary: &Canary, phase: CanaryPhase) {
        let v = match phase {
            CanaryPhase::Progressing => 0,
            CanaryPhase::Failed => 2,
            _ => 1,
        };
        self.metrics
            .status
            .get_or_create(&ControllerMetrics::labels(canary))
            .set(v);
        self.inner.set_phase_metric(canary, phase);
    }

    fn set_weight_metric(&self, canary: &Canary, primary: i32, canary_weight: i32) {
        let ns = canary.namespace().to_string();
        let target = canary.target_name();
        self.metrics
            .weight
            .get_or_create(&WeightLabels {
                workload: format!("{target}-primary"),
                namespace: ns.clone(),
            })
            .set(primary.into());
        self.metrics
            .weight
            .get_or_create(&WeightLabels {
                workload: target.into(),
                namespace: ns,
            })
            .set(canary_weight.into());
        self.inner.set_weight_metric(canary, primary, canary_weight);
    }

    fn set_analysis_metric(&self, canary: &Canary, metric: &str, value: f64) {
        self.metrics
            .analysis
            .get_or_create(&AnalysisLabels {
                name: canary.target_name().into(),
                namespace: canary.namespace().into(),
                metric: metric.into(),
            })
            .set(value);
        self.inner.set_analysis_metric(canary, metric, value);
    }

    fn observe_metric(&self, canary: &Canary, metric: &str, value: f64) {
        if let Some(l) = &self.on_analysis {
            l(canary, metric, value);
        }
        self.inner.observe_metric(canary, metric, value);
    }

    fn inc_successes(&self, canary: &Canary, strategy: Strategy, skipped: bool) {
        let status = if skipped { "skipped" } else { "completed" };
        self.metrics
            .successes
            .get_or_create(&ControllerMetrics::outcome(canary, strategy, status))
            .inc();
        self.inner.inc_successes(canary, strategy, skipped);
    }

    fn inc_failures(&self, canary: &Canary, strategy: Strategy) {
        self.metrics
            .failures
            .get_or_create(&ControllerMetrics::outcome(canary, strategy, "completed"))
            .inc();
        self.inner.inc_failures(canary, strategy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::fakes::FakeRecorder;

    fn canary() -> Canary {
        let mut c = Canary::new("podinfo", Default::default());
        c.metadata.namespace = Some("test".into());
        c.spec.target_ref = Some(aviary_api::canary::TargetRef {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("podinfo".into()),
        });
        c
    }

    #[tokio::test]
    async fn flaggers_metric_names_and_labels() {
        let metrics = Arc::new(ControllerMetrics::new("0.1.0", "kubernetes"));
        let events = Arc::new(EventLog::new(2));
        let rec = Observed::new(Arc::new(FakeRecorder::default()), metrics.clone(), events.clone());
        let c = canary();
        rec.set_phase_metric(&c, CanaryPhase::Failed);
        rec.set_weight_metric(&c, 90, 10);
        rec.set_analysis_metric(&c, "request-success-rate", 99.5);
        rec.inc_successes(&c, Strategy::Canary, false);
        rec.inc_failures(&c, Strategy::BlueGreen);
        metrics.set_totals(["test", "test", "prod"]);
        metrics.observe_tick(
            "podinfo",
            "test",
            Duration::from_millis(30),
            Duration::from_millis(2),
            true,
        );
        let text = metrics.encode();
        for want in [
            r#"flagger_info{version="0.1.0",mesh_provider="kubernetes"} 1"#,
            r#"flagger_canary_total{namespace="test"} 2"#,
            r#"flagger_canary_status{name="podinfo",namespace="test"} 2"#,
            r#"flagger_canary_weight{workload="podinfo-primary",namespace="test"} 90"#,
            r#"flagger_canary_weight{workload="podinfo",namespace="test"} 10"#,
            r#"flagger_canary_metric_analysis{name="podinfo",namespace="test",metric="request-success-rate"} 99.5"#,
            r#"flagger_canary_successes_total{name="podinfo",namespace="test",deployment_strategy="canary",analysis_status="completed"} 1"#,
            r#"flagger_canary_failures_total{name="podinfo",namespace="test",deployment_strategy="blue-green",analysis_status="completed"} 1"#,
            r#"flagger_canary_duration_seconds_count{name="podinfo",namespace="test"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[tokio::test]
    async fn event_log_keeps_the_latest_and_tells_listeners() {
        let events = Arc::new(EventLog::new(2));
        let seen = Arc::new(Mutex::new(0));
        let s = seen.clone();
        events.subscribe(Arc::new(move |_| *s.lock() += 1));
        let rec = Observed::new(
            Arc::new(FakeRecorder::default()),
            Arc::new(ControllerMetrics::new("v", "p")),
            events.clone(),
        );
        let c = canary();
        for m in ["a", "b", "c"] {
            rec.event(&c, EventType::Normal, m).await;
        }
        let kept: Vec<String> = events
            .list(Some("test/podinfo"))
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(*seen.lock(), 3);
        assert!(events.list(Some("other/x")).is_empty());
        assert_eq!(events.list(None)[0].reason, "Synced");
    }
}
