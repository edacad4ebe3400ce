//! The Deployment target (reference §6.1): the `<target>-primary` Deployment owned by the Canary,
//! its autoscaler copy, ConfigMap/Secret tracking with `-primary` copies, readiness with ready
//! thresholds and the progress deadline, scaling the canary to zero and back
//! (pkg/canary/deployment_controller.go, deployment_ready.go).

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::fingerprint::fingerprint;
use aviary_core::ports::{NotReady, Target, TargetRevision};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::autoscaler::Autoscalers;
use crate::client::{DEPLOYMENT, Kube, not_found};
pub use crate::workload::{
    CONFIG_TRACKING_ANNOTATION, DeploymentSettings, FLAGGER_ID, Selector, selector_of,
};
use crate::workload::{ConfigRef, Workloads, copy_fields};

/// The spec fields a primary takes from the target besides its template (not the replicas, the
/// selector).
const COPIED_FIELDS: &[&str] = &[
    "progressDeadlineSeconds",
    "minReadySeconds",
    "revisionHistoryLimit",
    "strategy",
];

/// The Deployment target.
#[derive(Debug, Clone)]
pub struct DeploymentTarget {
    workloads: Workloads,
    scalers: Autoscalers,
}

impl DeploymentTarget {
    pub fn new(kube: Kube, settings: DeploymentSettings) -> Self {
        Self {
            scalers: Autoscalers::new(kube.clone()),
            workloads: Workloads::new(kube, settings, DEPLOYMENT),
        }
    }

    /// The primary's spec: the target's pod template, replicas (at least 1) and [`COPIED_FIELDS`].
    fn primary_spec(&self, target: &Value, sel: &Selector, tracked: &[(ConfigRef, Value)]) -> Value {
        let replicas = target["spec"]["replicas"]
            .as_i64()
            .filter(|r| *r > 0)
            .unwrap_or(1);
        let template = self.workloads.primary_template(target, sel, tracked, true);
        let mut spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {sel.label.as_str(): sel.primary()}},
        });
        copy_fields(&mut spec, target, COPIED_FIELDS);
        spec["template"] = template;
        spec
    }

    /// Sets the target's replicas.
    async fn scale(&self, c: &Canary, replicas: i64) -> Result<(), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        match self
            .workloads
            .kube
            .modify(DEPLOYMENT, ns, name, |d| {
                d["spec"]["replicas"] = Value::from(replicas);
                Ok(())
            })
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "deployment {name}.{ns} get query error: {}",
                not_found(DEPLOYMENT, name)
            )),
            Err(e) => Err(format!("scaling {name}.{ns} to {replicas} failed: {e}")),
        }
    }

    /// The replicas a canary is scaled up to (Flagger's ScaleFromZero rule,
    /// deployment_controller.go:166-211): its own, else the primary's (no autoscaler) or the
    /// autoscaler's minimum above 1, else 1.
    async fn scale_up_replicas(&self, c: &Canary, target: &Value) -> i64 {
        if let Some(r) = target["spec"]["replicas"].as_i64().filter(|r| *r > 0) {
            return r;
        }
        if c.spec.autoscaler_ref.is_some() {
            return self.scalers.min_replicas(c).await;
        }
        let primary = format!("{}-primary", c.target_name());
        if let Ok(Some(p)) = self.workloads.kube.get(DEPLOYMENT, c.namespace(), &primary).await
            && let Some(r) = p["spec"]["replicas"].as_i64().filter(|r| *r > 0)
        {
            return r;
        }
        1
    }
}

/// Flagger's `isDeploymentReady`: `Err((retriable, message))` when not ready.
pub fn deployment_ready(
    d: &Value,
    deadline_secs: i64,
    threshold: i32,
    now: Timestamp,
) -> Result<(), (bool, String)> {
    let status = &d["status"];
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if generation > observed {
        return Err((
            true,
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .into(),
        ));
    }
    let cond = |t: &str| {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
    };
    let mut retriable = true;
    if cond("Progressing").is_some()
        && let Some(a) = cond("Available")
        && a["status"] == "False"
        && a["reason"] == "MinimumReplicasUnavailable"
        && let Some(from) = a["lastUpdateTime"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
    {
        retriable = from + jiff::SignedDuration::from_secs(deadline_secs) >= now;
    }
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    if cond("Progressing").is_some_and(|p| p["reason"] == "ProgressDeadlineExceeded") {
        return Err((
            false,
            format!("deployment {name:?} exceeded its progress deadline"),
        ));
    }
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let updated = int(&status["updatedReplicas"]);
    let total = int(&status["replicas"]);
    let available = int(&status["availableReplicas"]);
    let ready_threshold_updated = (updated as f64 * f64::from(threshold) / 100.0) as i64;
    if let Some(desired) = d["spec"]["replicas"].as_i64()
        && updated < desired
    {
        return Err((
            retriable,
            format!(
                "waiting for rollout to finish: {updated} out of {desired} new replicas have been updated"
            ),
        ));
    }
    if total > updated {
        return Err((
            retriable,
            format!(
                "waiting for rollout to finish: {} old replicas are pending termination",
                total - updated
            ),
        ));
    }
    if available < ready_threshold_updated {
        return Err((
            retriable,
            format!(
                "waiting for rollout to finish: {available} of {ready_threshold_updated} (readyThreshold {threshold}%) updated replicas are available"
            ),
        ));
    }
    Ok(())
}

/// [`deployment_ready`] now, with the canary's progress deadline.
fn ready_now(c: &Canary, d: &Value, threshold: i32) -> Result<(), (bool, String)> {
    let deadline = c.progress_deadline().as_secs() as i64;
    deployment_ready(d, deadline, threshold, Timestamp::now())
}

fn not_ready(prefix: String, (retriable, msg): (bool, String)) -> NotReady {
    let message = format!("{prefix} not ready: {msg}");
    if retriable {
        NotReady::retriable(message)
    } else {
        NotReady::fatal(message)
    }
}

#[async_trait]
impl Target for DeploymentTarget {
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        let target = self.workloads.target(c).await?;
        let tracked = self.workloads.tracked(c, &target).await?;
        Ok(TargetRevision {
            fingerprint: fingerprint(&target["spec"]["template"]),
            // Flagger stores the (possibly empty) map whenever config tracking is on
            // (`trackedConfigs: {}` in the status), nothing when it is off.
            tracked_configs: self
                .workloads
                .settings
                .config_tracking
                .then(|| Workloads::checksums(&tracked).unwrap_or_default()),
            route: None,
        })
    }

    /// The primary when missing, then the primary autoscaler when missing (scheduler.go:224-235).
    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        let target = self.workloads.target(c).await.map_err(NotReady::retriable)?;
        let spec = |sel: &Selector, tracked: &[_]| self.primary_spec(&target, sel, tracked);
        self.workloads
            .initialize_primary(c, &target, spec)
            .await
            .map_err(NotReady::retriable)?;
        self.scalers
            .reconcile_primary(c, true)
            .await
            .map_err(NotReady::retriable)
    }

    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let (name, d) = self.workloads.primary(c).await.map_err(NotReady::retriable)?;
        let shown = format!("{name}.{}", c.namespace());
        ready_now(c, &d, c.primary_ready_threshold()).map_err(|e| not_ready(shown, e))
    }

    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let d = self.workloads.target(c).await.map_err(NotReady::retriable)?;
        let shown = format!("canary deployment {}.{}", c.target_name(), c.namespace());
        ready_now(c, &d, c.canary_ready_threshold()).map_err(|e| not_ready(shown, e))
    }

    /// Copies the target to the primary (deployment_controller.go:64-137), then brings the
    /// primary autoscaler up to date, which Flagger does on the Promoting ticks that follow the
    /// copy (scheduler.go:381-386) and after a promotion without analysis (:809-813).
    async fn promote(&self, c: &Canary) -> Result<(), String> {
        let copy_replicas = c.spec.autoscaler_ref.is_none();
        self.workloads
            .promote(c, true, |spec, target| {
                copy_fields(spec, target, COPIED_FIELDS);
                if copy_replicas && let Some(r) = target["spec"]["replicas"].as_i64().filter(|r| *r > 0) {
                    spec["replicas"] = Value::from(r);
                }
            })
            .await?;
        self.scalers.reconcile_primary(c, false).await
    }

    /// Pauses the target's ScaledObject, then 0 replicas (scheduler.go:393-400, :971-982).
    async fn scale_to_zero(&self, c: &Canary) -> Result<(), String> {
        self.scalers.pause_target(c).await?;
        self.scale(c, 0).await
    }

    /// Resumes the target's ScaledObject, then scales up (scheduler.go:914-923).
    async fn scale_from_zero(&self, c: &Canary) -> Result<(), String> {
        self.scalers.resume_target(c).await?;
        let target = self.workloads.target(c).await?;
        let replicas = self.scale_up_replicas(c, &target).await;
        if target["spec"]["replicas"].as_i64() == Some(replicas) {
            return Ok(());
        }
        self.scale(c, replicas).await
    }

    /// Resumes the target's ScaledObject and scales the target like the primary
    /// (finalizer.go:58-72).
    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        self.scalers.resume_target(c).await?;
        let ns = c.namespace();
        let primary = format!("{}-primary", c.target_name());
        let replicas = match self.workloads.kube.get(DEPLOYMENT, ns, &primary).await {
            Ok(Some(p)) => p["spec"]["replicas"].as_i64().filter(|r| *r > 0),
            _ => None,
        };
        match replicas {
            Some(r) => self.scale(c, r).await,
            None => self.scale_from_zero(c).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(status: Value) -> Value {
        json!({
            "metadata": {"name": "podinfo", "namespace": "test", "generation": 2},
            "spec": {"replicas": 2},
            "status": status,
        })
    }

    #[test]
    fn readiness_messages_are_flaggers() {
        let now = Timestamp::now();
        let e = deployment_ready(&deploy(json!({"observedGeneration": 1})), 600, 100, now).unwrap_err();
        assert_eq!(
            e,
            (
                true,
                "waiting for rollout to finish: observed deployment generation less than desired generation"
                    .into()
            )
        );
        for (updated, replicas, message) in [
            (
                1,
                2,
                "waiting for rollout to finish: 1 out of 2 new replicas have been updated",
            ),
            (
                2,
                3,
                "waiting for rollout to finish: 1 old replicas are pending termination",
            ),
        ] {
            let s = json!({"observedGeneration": 2, "updatedReplicas": updated, "replicas": replicas});
            let e = deployment_ready(&deploy(s), 600, 100, now).unwrap_err();
            assert_eq!(e.1, message);
        }
        let s = json!({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1});
        let e = deployment_ready(&deploy(s.clone()), 600, 100, now).unwrap_err();
        assert_eq!(
            e.1,
            "waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas are available"
        );
        assert!(deployment_ready(&deploy(s), 600, 50, now).is_ok());
        let e = deployment_ready(
            &deploy(json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]})),
            600,
            100,
            now,
        )
        .unwrap_err();
        assert_eq!(
            e,
            (
                false,
                "deployment \"podinfo\" exceeded its progress deadline".into()
            )
        );
        // Available=False for longer than the deadline: not retriable.
        let old = (now - jiff::SignedDuration::from_secs(700)).to_string();
        let s = json!({"observedGeneration": 2, "updatedReplicas": 0, "replicas": 2, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "lastUpdateTime": old},
        ]});
        assert!(!deployment_ready(&deploy(s.clone()), 600, 100, now).unwrap_err().0);
        assert!(deployment_ready(&deploy(s), 800, 100, now).unwrap_err().0);
    }
}
