//! The coordinator's Prometheus metrics, served on `/metrics` of [`Coordinator::serve_metrics`]
//! (`aviary coordinator --metrics-listen`); docs/operations.md lists them and
//! deploy/grafana/fleet.json charts them.
//!
//! Counters are counted as calls arrive ([`CountCalls`], a layer on the gRPC server). Gauges
//! are read from the coordinator's state at scrape time, so there are no update hooks to forget.
//! The fleet and rollout gauges come from the leader only (followers hold no fleet state), so
//! `sum(...)` over all replicas is the fleet's figure.
//!
//! [`Coordinator::serve_metrics`]: crate::Coordinator::serve_metrics

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aviary_core::fleet::{ClusterPhase, RolloutPhase};
use jiff::Timestamp;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::agent_link::Sessions;
use crate::leader::Leadership;
use crate::rollouts::Rollouts;
use crate::store::RolloutRecord;

/// How long a finished rollout keeps its per-rollout series (Prometheus keeps the history).
const FINISHED_KEPT: Duration = Duration::from_secs(3600);

const ROLLOUT_PHASES: [RolloutPhase; 7] = [
    RolloutPhase::Pending,
    RolloutPhase::Running,
    RolloutPhase::Paused,
    RolloutPhase::RollingBack,
    RolloutPhase::Succeeded,
    RolloutPhase::Failed,
    RolloutPhase::Aborted,
];

const CLUSTER_PHASES: [ClusterPhase; 8] = [
    ClusterPhase::Pending,
    ClusterPhase::Starting,
    ClusterPhase::Progressing,
    ClusterPhase::Succeeded,
    ClusterPhase::Failed,
    ClusterPhase::Skipped,
    ClusterPhase::Reverting,
    ClusterPhase::Reverted,
];

/// Fails to compile when a phase is added without being listed above.
fn _every_phase_listed(r: RolloutPhase, c: ClusterPhase) {
    use ClusterPhase as C;
    use RolloutPhase as R;
    match r {
        R::Pending | R::Running | R::Paused | R::RollingBack | R::Succeeded | R::Failed | R::Aborted => {}
    }
    match c {
        C::Pending
        | C::Starting
        | C::Progressing
        | C::Succeeded
        | C::Failed
        | C::Skipped
        | C::Reverting
        | C::Reverted => {}
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    region: String,
    connected: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    rollout: String,
    canary: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutPhaseLabels {
    rollout: String,
    canary: String,
    phase: String,
}

/// Everything `/metrics` shows.
pub(crate) struct CoordinatorMetrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    leader: Gauge,
    sessions: Gauge,
    clusters: Family<ClusterLabels, Gauge>,
    rollouts: Family<PhaseLabels, Gauge>,
    rollout_phase: Family<RolloutPhaseLabels, Gauge>,
    rollout_waves: Family<RolloutLabels, Gauge>,
    rollout_waves_done: Family<RolloutLabels, Gauge>,
    rollout_clusters: Family<RolloutPhaseLabels, Gauge>,
    /// One scrape at a time: a scrape clears and refills the gauge families.
    scrape: Mutex<()>,
}

/// What the gauges are read from.
pub(crate) struct Sources {
    pub(crate) rollouts: Arc<Rollouts>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) leadership: Arc<dyn Leadership>,
}

/// Registers each metric (a clone shares its values) under its name and help text.
macro_rules! register {
    ($registry:expr, $($name:literal: $help:literal => $metric:expr,)*) => {
        $( $registry.register($name, $help, $metric.clone()); )*
    };
}

impl CoordinatorMetrics {
    pub(crate) fn new() -> Self {
        let info = Family::<InfoLabels, Gauge>::default();
        let mut m = Self {
            registry: Registry::default(),
            calls: Family::default(),
            leader: Gauge::default(),
            sessions: Gauge::default(),
            clusters: Family::default(),
            rollouts: Family::default(),
            rollout_phase: Family::default(),
            rollout_waves: Family::default(),
            rollout_waves_done: Family::default(),
            rollout_clusters: Family::default(),
            scrape: Mutex::new(()),
        };
        register!(&mut m.registry,
            "aviary_coordinator_info": "The coordinator's version" => info,
            "aviary_coordinator_grpc_requests": "gRPC calls by service, method and the status they were answered with (for streams: the status the stream opened with)" => m.calls,
            "aviary_coordinator_leader": "1 on the replica that leads (the one that sequences rollouts and holds the agent streams), 0 on followers" => m.leader,
            "aviary_coordinator_agent_sessions": "Open AgentLink streams (one per connected agent)" => m.sessions,
            "aviary_fleet_clusters": "Registered clusters by region and whether their agent is connected (leader only)" => m.clusters,
            "aviary_fleet_rollouts": "Fleet rollouts by phase (leader only)" => m.rollouts,
            "aviary_fleet_rollout_phase": "1 for the phase a rollout is in (active rollouts and those finished in the last hour; leader only)" => m.rollout_phase,
            "aviary_fleet_rollout_waves": "Waves in a rollout's plan (same rollouts)" => m.rollout_waves,
            "aviary_fleet_rollout_waves_succeeded": "Waves of a rollout that succeeded (same rollouts)" => m.rollout_waves_done,
            "aviary_fleet_rollout_clusters": "A rollout's planned clusters by their phase in it (same rollouts)" => m.rollout_clusters,
        );
        info.get_or_create(&InfoLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
        m
    }

    /// Counts one answered gRPC call. `path` is `/package.Service/Method`; `grpc_status` the
    /// numeric status of a trailers-only answer (an error), `None` for a call that answered.
    fn count_call(&self, path: &str, grpc_status: Option<i32>) {
        let code = tonic::Code::from(grpc_status.unwrap_or(0));
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        // Whatever path a client sends, the label values stay a small set.
        let known = service.starts_with("aviary.v1.") || service.starts_with("grpc.");
        let (service, method) = match (known, code) {
            (false, _) => ("other", "other"),
            (true, tonic::Code::Unimplemented) => (service, "unknown"),
            (true, _) => (service, method),
        };
        self.calls
            .get_or_create(&CallLabels {
                grpc_service: service.into(),
                grpc_method: method.into(),
                grpc_code: code_name(code).into(),
            })
            .inc();
    }

    /// The metrics in the OpenMetrics text format, gauges read from `s` now.
    pub(crate) fn encode(&self, s: &Sources) -> String {
        let _one = self.scrape.lock();
        self.refresh(s);
        let mut out = String::new();
        // `encode` ends with `# EOF`, which OpenMetrics requires (Prometheus refuses it otherwise).
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh(&self, s: &Sources) {
        self.leader.set(i64::from(s.leadership.check().is_ok()));
        self.sessions.set(s.sessions.len() as i64);
        self.clusters.clear();
        self.rollouts.clear();
        self.rollout_phase.clear();
        self.rollout_waves.clear();
        self.rollout_waves_done.clear();
        self.rollout_clusters.clear();
        // A follower shows no fleet: the leader's figures are the fleet's.
        let Some(records) = s.rollouts.held() else { return };
        // Both series of every region, so "none disconnected" is a 0, not a missing series.
        for cluster in s.rollouts.fleet.list_clusters() {
            for state in [true, false] {
                let c = self.clusters.get_or_create(&ClusterLabels {
                    region: cluster.record.region.clone(),
                    connected: state.to_string(),
                });
                if state == cluster.connected {
                    c.inc();
                }
            }
        }
        for p in ROLLOUT_PHASES {
            let n = records.iter().filter(|r| r.state.phase == p).count();
            self.rollouts
                .get_or_create(&PhaseLabels {
                    phase: p.as_str().into(),
                })
                .set(n as i64);
        }
        let now = s.rollouts.clock.now();
        for r in records.iter().filter(|r| recent(r, now)) {
            self.rollout(r);
        }
    }

    /// The per-rollout series of one rollout.
    fn rollout(&self, r: &RolloutRecord) {
        let labels = RolloutLabels {
            rollout: r.name.clone(),
            canary: r.plan.canary.to_string(),
        };
        let phased = |phase: &str| RolloutPhaseLabels {
            rollout: r.name.clone(),
            canary: r.plan.canary.to_string(),
            phase: phase.into(),
        };
        for p in ROLLOUT_PHASES {
            self.rollout_phase
                .get_or_create(&phased(p.as_str()))
                .set(i64::from(r.state.phase == p));
        }
        self.rollout_waves
            .get_or_create(&labels)
            .set(r.plan.waves.len() as i64);
        let done = r
            .state
            .waves
            .iter()
            .filter(|w| w.phase == aviary_core::fleet::WavePhase::Succeeded)
            .count();
        self.rollout_waves_done.get_or_create(&labels).set(done as i64);
        for p in CLUSTER_PHASES {
            let n = r.state.clusters().filter(|c| c.phase == p).count();
            self.rollout_clusters
                .get_or_create(&phased(p.as_str()))
                .set(n as i64);
        }
    }
}

/// Active, or finished less than [`FINISHED_KEPT`] ago.
fn recent(r: &RolloutRecord, now: Timestamp) -> bool {
    match r.state.finished {
        None => true,
        Some(f) => now
            .duration_since(f)
            .try_into()
            .is_ok_and(|d: Duration| d < FINISHED_KEPT),
    }
}

/// gRPC's canonical code names, as other gRPC servers' metrics spell them (`OK`, `NotFound`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "Canceled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}

/// A layer on the gRPC server counting every call in `aviary_coordinator_grpc_requests_total`.
#[derive(Clone)]
pub(crate) struct CountCalls(pub(crate) Arc<CoordinatorMetrics>);

impl<S> tower::Layer<S> for CountCalls {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`CountCalls`].
#[derive(Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    metrics: Arc<CoordinatorMetrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await;
            if let Ok(r) = &res {
                // An error is answered trailers-only: its grpc-status is in the headers.
                let status = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                metrics.count_call(&path, status);
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_labels_stay_a_small_set() {
        let m = CoordinatorMetrics::new();
        m.count_call("/aviary.v1.Fleet/PauseRollout", None);
        m.count_call("/aviary.v1.Fleet/PauseRollout", Some(5));
        m.count_call("/aviary.v1.Fleet/NoSuchThing", Some(12));
        m.count_call("/evil.Service/x", Some(12));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &m.registry).unwrap();
        for want in [
            r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.Fleet",grpc_method="PauseRollout",grpc_code="OK"} 1"#,
            r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.Fleet",grpc_method="PauseRollout",grpc_code="NotFound"} 1"#,
            r#"aviary_coordinator_grpc_requests_total{grpc_service="aviary.v1.Fleet",grpc_method="unknown",grpc_code="Unimplemented"} 1"#,
            r#"aviary_coordinator_grpc_requests_total{grpc_service="other",grpc_method="other",grpc_code="Unimplemented"} 1"#,
            r#"aviary_coordinator_info{version=""#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
