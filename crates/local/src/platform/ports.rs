//! The engine's ports on the local platform: a LocalService's primary and canary process groups
//! are the Target, its router is the Router, the router's per-backend statistics are the built-in
//! metrics, and the state directory holds the status.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::duration::parse_go_duration;
use aviary_api::{Canary, CanaryStatus};
use aviary_core::judge::{ArmReading, CounterReading, SeriesHistogram};
use aviary_core::ports::{
    BuiltinMetric, BuiltinSource, EventType, MetricError, MetricModel, MetricResult, NotReady, Recorder,
    Router, Routes, Target, TargetRevision,
};

use super::runtime::Runtime;
use super::state::StateDir;
use super::translate::{local_routes, revision_of};
use crate::process::GroupStatus;
use crate::router::Backend;

/// `namespace/name` of the canary's LocalService.
pub(super) fn target_key(canary: &Canary) -> String {
    format!("{}/{}", canary.namespace(), canary.target_name())
}

/// Flagger's readiness rule: `int(replicas × threshold / 100)` ready replicas (at least one).
fn readiness(status: &GroupStatus, threshold: i32, prefix: &str) -> Result<(), NotReady> {
    let wanted = ((u64::from(status.replicas) * threshold.clamp(0, 100) as u64) / 100).max(1) as u32;
    if let Some(err) = &status.last_error
        && err.kind.is_fatal()
    {
        let tail: Vec<&String> = err
            .output
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let output = if tail.is_empty() {
            String::new()
        } else {
            format!(
                " (last output: {})",
                tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
            )
        };
        return Err(NotReady::fatal(format!(
            "{prefix} not ready: {}{output}",
            err.message
        )));
    }
    if status.ready >= wanted.min(status.replicas) && !status.stopped && status.replicas > 0 {
        return Ok(());
    }
    Err(NotReady::retriable(format!(
        "{prefix} not ready: waiting for rollout to finish: {} of {} (readyThreshold {threshold}%) updated replicas are available",
        status.ready, status.replicas
    )))
}

/// The Target port of one canary.
pub(super) struct LocalTarget {
    pub(super) runtime: Arc<Runtime>,
}

#[async_trait]
impl Target for LocalTarget {
    async fn revision(&self, canary: &Canary) -> Result<TargetRevision, String> {
        let spec = self.runtime.spec(&target_key(canary))?;
        Ok(TargetRevision {
            fingerprint: revision_of(&spec),
            tracked_configs: None,
            route: None,
        })
    }

    async fn initialize(&self, canary: &Canary) -> Result<(), NotReady> {
        self.runtime
            .ensure_primary(&target_key(canary))
            .map_err(NotReady::fatal)
    }

    async fn primary_ready(&self, canary: &Canary) -> Result<(), NotReady> {
        let key = target_key(canary);
        let status = self.runtime.primary_status(&key).map_err(NotReady::fatal)?;
        let threshold = canary.primary_ready_threshold();
        let prefix = format!("{}-primary.{}", canary.target_name(), canary.namespace());
        readiness(&status, threshold, &prefix)?;
        self.runtime.primary_became_ready(&key, None).await;
        Ok(())
    }

    async fn canary_ready(&self, canary: &Canary) -> Result<(), NotReady> {
        let key = target_key(canary);
        let status = self.runtime.canary_status(&key).map_err(NotReady::fatal)?;
        let threshold = canary.canary_ready_threshold();
        let prefix = format!(
            "canary deployment {}.{}",
            canary.target_name(),
            canary.namespace()
        );
        match status {
            // scaled to zero: nothing to wait for (Flagger's Deployment with 0 replicas is ready)
            None => Ok(()),
            Some(s) => readiness(&s, threshold, &prefix),
        }
    }

    async fn promote(&self, canary: &Canary) -> Result<(), String> {
        self.runtime.promote(&target_key(canary))
    }

    async fn scale_to_zero(&self, canary: &Canary) -> Result<(), String> {
        self.runtime.scale_canary(&target_key(canary), false).await
    }

    async fn scale_from_zero(&self, canary: &Canary) -> Result<(), String> {
        self.runtime.scale_canary(&target_key(canary), true).await
    }
}

/// The Router port of one canary: the LocalService's router.
pub(super) struct LocalRouter {
    pub(super) runtime: Arc<Runtime>,
}

#[async_trait]
impl Router for LocalRouter {
    async fn reconcile(&self, canary: &Canary) -> Result<(), String> {
        // After an agent restart the router's statistics are gone: skip this tick so the next
        // one analyses fresh traffic at the resumed split.
        match self.runtime.restore(&target_key(canary), canary).await? {
            true => Err(format!(
                "resumed {}.{} at canary weight {} after an agent restart; the analysis continues on the next tick",
                canary.name(),
                canary.namespace(),
                canary.status.as_ref().map(|s| s.canary_weight).unwrap_or(0)
            )),
            false => Ok(()),
        }
    }

    async fn set_routes(&self, canary: &Canary, routes: &Routes) -> Result<(), String> {
        let router = self.runtime.router(&target_key(canary))?;
        let interval = canary.analysis_interval(Duration::from_secs(1));
        router
            .set_routes(local_routes(canary, routes, interval))
            .map_err(|e| e.to_string())
    }

    async fn get_routes(&self, canary: &Canary) -> Result<Routes, String> {
        let router = self.runtime.router(&target_key(canary))?;
        let r = router.routes();
        Ok(Routes {
            primary: r.primary_weight as i32,
            canary: r.canary_weight as i32,
            mirror: r.mirror,
            session: None,
        })
    }
}

/// Built-in metrics from the router's canary statistics over the metric interval.
pub(super) struct LocalBuiltins {
    pub(super) runtime: Arc<Runtime>,
}

#[async_trait]
impl BuiltinSource for LocalBuiltins {
    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult {
        let router = self
            .runtime
            .router(&target_key(canary))
            .map_err(MetricError::Query)?;
        let window = parse_go_duration(&model.interval).unwrap_or(Duration::from_secs(60));
        let stats = router.stats(Backend::Canary, window);
        let none = || {
            MetricError::NoValues(format!(
                "no values found: the canary of {}.{} served no requests in the last {}",
                canary.target_name(),
                canary.namespace(),
                model.interval
            ))
        };
        match metric {
            BuiltinMetric::SuccessRate => stats.success_rate.ok_or_else(none),
            BuiltinMetric::Duration => stats.p99_ms.ok_or_else(none),
        }
    }
    /// The router's own lifetime counters of both backends (one series each).
    async fn counters(&self, canary: &Canary, _model: &MetricModel) -> Result<CounterReading, MetricError> {
        let router = self
            .runtime
            .router(&target_key(canary))
            .map_err(MetricError::Query)?;
        let arm = |b: Backend| {
            let c = router.counters(b);
            let mut a = ArmReading::default();
            a.requests.insert(0, c.requests as f64);
            a.errors.insert(0, c.errors as f64);
            a.latency.insert(
                0,
                SeriesHistogram {
                    bounds_ms: c.bounds_ms,
                    cumulative: c.cumulative.into_iter().map(|n| n as f64).collect(),
                },
            );
            a
        };
        Ok(CounterReading {
            at: jiff::Timestamp::now(),
            canary: arm(Backend::Canary),
            primary: arm(Backend::Primary),
        })
    }
}

/// Persists status in the state directory (events go to the agent's event log).
pub(super) struct LocalRecorder {
    pub(super) state: StateDir,
}

#[async_trait]
impl Recorder for LocalRecorder {
    async fn status(&self, canary: &Canary, status: &CanaryStatus) -> Result<(), String> {
        self.state
            .save_canary_status(canary.namespace(), canary.name(), status)
            .map_err(|e| format!("cannot persist the status of {}: {e}", canary.key()))
    }

    async fn event(&self, _canary: &Canary, _kind: EventType, _message: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{FailureKind, GroupError};

    fn status(replicas: u32, ready: u32) -> GroupStatus {
        GroupStatus {
            replicas,
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn readiness_follows_flaggers_threshold_and_texts() {
        assert!(readiness(&status(2, 2), 100, "podinfo-primary.test").is_ok());
        let e = readiness(&status(2, 1), 100, "podinfo-primary.test").unwrap_err();
        assert!(e.retriable);
        assert_eq!(
            e.message,
            "podinfo-primary.test not ready: waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas are available"
        );
        assert!(readiness(&status(2, 1), 50, "x").is_ok());
        assert!(
            readiness(&status(2, 0), 10, "x").is_err(),
            "at least one replica must be ready"
        );
        let mut crash = status(2, 0);
        crash.last_error = Some(GroupError {
            kind: FailureKind::CrashLoop,
            message: "crash loop: 3 exits within 30s".into(),
            output: vec!["panic: boom".into()],
        });
        let e = readiness(&crash, 100, "canary deployment podinfo.test").unwrap_err();
        assert!(!e.retriable);
        assert_eq!(
            e.message,
            "canary deployment podinfo.test not ready: crash loop: 3 exits within 30s (last output: panic: boom)"
        );
    }
}
