//! The DaemonSet target (Flagger's pkg/canary/daemonset_controller.go, daemonset_ready.go,
//! daemonset_status.go): the `<target>-primary` DaemonSet owned by the Canary, ConfigMap/Secret
//! tracking as for Deployments, readiness from the DaemonSet's scheduled/updated/available pod
//! counts, and "scaling" through a node selector no node matches: a DaemonSet has no replicas,
//! so Flagger scales the canary to zero by adding `flagger.app/scale-to-zero: "true"` to its
//! pod template's `nodeSelector`, and back by removing it. That key never counts as a change of
//! revision and never reaches the primary.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::fingerprint::fingerprint;
use aviary_core::ports::{NotReady, Target, TargetRevision};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::client::{DAEMON_SET, Kube, not_found};
use crate::workload::{ConfigRef, DeploymentSettings, Selector, Workloads, copy_fields};

/// The node selector that matches no node (daemonset_controller.go:36-38).
pub const SCALE_TO_ZERO_KEY: &str = "flagger.app/scale-to-zero";
const SCALE_TO_ZERO_VALUE: &str = "true";

/// The DaemonSet target.
#[derive(Debug, Clone)]
pub struct DaemonSetTarget {
    workloads: Workloads,
}

impl DaemonSetTarget {
    pub fn new(kube: Kube, settings: DeploymentSettings) -> Self {
        Self {
            workloads: Workloads::new(kube, settings, DAEMON_SET),
        }
    }

    /// Flagger's `createPrimaryDaemonSet` (daemonset_controller.go:229-311): the primary gets the
    /// target's update strategy, history limit, min ready seconds and pod template, selecting
    /// `<value>-primary`.
    fn primary_spec(&self, target: &Value, sel: &Selector, tracked: &[(ConfigRef, Value)]) -> Value {
        let mut spec = json!({
            "selector": {"matchLabels": {sel.label.as_str(): sel.primary()}},
            "template": self.primary_template(target, sel, tracked),
        });
        copy_fields(&mut spec, target, COPIED_FIELDS);
        spec
    }

    /// The primary's pod template: as for a Deployment, without the scale-to-zero selector
    /// (daemonset_controller.go:149-154).
    fn primary_template(&self, target: &Value, sel: &Selector, tracked: &[(ConfigRef, Value)]) -> Value {
        let mut template = self.workloads.primary_template(target, sel, tracked, false);
        remove_scale_to_zero(&mut template);
        template
    }

    /// Adds (`true`) or removes the scale-to-zero node selector on the target's pod template.
    async fn set_scale_to_zero(&self, c: &Canary, on: bool) -> Result<(), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let result = self
            .workloads
            .kube
            .modify(DAEMON_SET, ns, name, |d| {
                if on {
                    let spec = &mut d["spec"]["template"]["spec"];
                    if !spec["nodeSelector"].is_object() {
                        spec["nodeSelector"] = json!({});
                    }
                    spec["nodeSelector"][SCALE_TO_ZERO_KEY] = Value::from(SCALE_TO_ZERO_VALUE);
                } else {
                    remove_scale_to_zero(&mut d["spec"]["template"]);
                }
                Ok(())
            })
            .await;
        match result {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "daemonset {name}.{ns} get query error: {}",
                not_found(DAEMON_SET, name)
            )),
            // daemonset_controller.go:68-71 and :87-90.
            Err(e) if on => Err(format!("updating daemonset {name}.{ns} failed: {e}")),
            Err(e) => Err(format!("scaling up daemonset {name}.{ns} failed: {e}")),
        }
    }
}

/// The primary's spec fields taken from the target (daemonset_controller.go:144-146, :284-286).
const COPIED_FIELDS: &[&str] = &["minReadySeconds", "revisionHistoryLimit", "updateStrategy"];

/// Removes the scale-to-zero key from a pod template's node selector (and an emptied selector:
/// Kubernetes stores none, and the fingerprint must not see a difference, as Flagger's
/// `HasTargetChanged` makes nil and empty selectors equal at daemonset_controller.go:195-203).
pub fn remove_scale_to_zero(template: &mut Value) {
    let spec = &mut template["spec"];
    let Some(sel) = spec.get_mut("nodeSelector").and_then(Value::as_object_mut) else {
        return;
    };
    sel.remove(SCALE_TO_ZERO_KEY);
    if sel.is_empty()
        && let Some(s) = spec.as_object_mut()
    {
        s.remove("nodeSelector");
    }
}

/// Flagger's `isDaemonSetReady` (daemonset_ready.go:63-94): `Err((retriable, message))` when
/// not ready. The deadline runs from the canary's `status.lastTransitionTime`; a canary without
/// one has no deadline yet.
pub fn daemonset_ready(
    ds: &Value,
    threshold: i32,
    last_transition: Option<Timestamp>,
    deadline_secs: i64,
    now: Timestamp,
) -> Result<(), (bool, String)> {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let status = &ds["status"];
    if int(&ds["metadata"]["generation"]) > int(&status["observedGeneration"]) {
        return Err((
            true,
            "waiting for rollout to finish: observed daemonset generation less than desired generation"
                .into(),
        ));
    }
    let desired = int(&status["desiredNumberScheduled"]);
    let updated = int(&status["updatedNumberScheduled"]);
    let available = int(&status["numberAvailable"]);
    // Go: int32(float32(desired) * float32(threshold) / 100).
    let ready_threshold_desired = (desired as f32 * (threshold as f32 / 100.0)) as i64;
    let new_pods_pending = updated < desired;
    let unavailable = available < ready_threshold_desired;
    if !new_pods_pending && !unavailable {
        return Ok(());
    }
    if let Some(from) = last_transition
        && from + jiff::SignedDuration::from_secs(deadline_secs) < now
    {
        return Err((
            false,
            format!("exceeded its progressDeadlineSeconds: {deadline_secs}"),
        ));
    }
    if new_pods_pending {
        return Err((
            true,
            format!("waiting for rollout to finish: {updated} out of {desired} new pods have been updated"),
        ));
    }
    Err((
        true,
        format!(
            "waiting for rollout to finish: {available} of {ready_threshold_desired} (readyThreshold {threshold}%) updated pods are available"
        ),
    ))
}

fn not_ready(message: String, retriable: bool) -> NotReady {
    if retriable {
        NotReady::retriable(message)
    } else {
        NotReady::fatal(message)
    }
}

fn last_transition(c: &Canary) -> Option<Timestamp> {
    c.status
        .as_ref()
        .and_then(|s| s.last_transition_time.as_ref())
        .map(|t| t.0)
}

#[async_trait]
impl Target for DaemonSetTarget {
    /// The pod template without the scale-to-zero selector (daemonset_status.go:29-53), and the
    /// tracked configs.
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        let target = self.workloads.target(c).await?;
        let tracked = self.workloads.tracked(c, &target).await?;
        let mut template = target["spec"]["template"].clone();
        remove_scale_to_zero(&mut template);
        Ok(TargetRevision {
            fingerprint: fingerprint(&template),
            tracked_configs: Workloads::checksums(&tracked),
            route: None,
        })
    }

    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        let target = self.workloads.target(c).await.map_err(NotReady::retriable)?;
        // Only a RollingUpdate DaemonSet can be a target.
        let (ns, name) = (c.namespace(), c.target_name());
        let strategy = target["spec"]["updateStrategy"]["type"].as_str().unwrap_or("");
        if !strategy.is_empty() && strategy != "RollingUpdate" {
            return Err(NotReady::retriable(format!(
                "daemonset {name}.{ns} must have RollingUpdate strategy but have {strategy}"
            )));
        }
        let spec = |sel: &Selector, tracked: &[_]| self.primary_spec(&target, sel, tracked);
        self.workloads
            .initialize_primary(c, &target, spec)
            .await
            .map_err(NotReady::retriable)
    }

    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let (name, ds) = self.workloads.primary(c).await.map_err(NotReady::retriable)?;
        let ns = c.namespace();
        let threshold = c.primary_ready_threshold();
        let deadline = c.progress_deadline().as_secs() as i64;
        daemonset_ready(&ds, threshold, last_transition(c), deadline, Timestamp::now()).map_err(
            |(retriable, e)| {
                // daemonset_ready.go:41.
                not_ready(format!("primary daemonset {name}.{ns} not ready: {e}"), retriable)
            },
        )
    }

    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let (ns, name) = (c.namespace(), c.target_name());
        let ds = self.workloads.get(ns, name).await.map_err(NotReady::retriable)?;
        let threshold = c.canary_ready_threshold();
        let deadline = c.progress_deadline().as_secs() as i64;
        daemonset_ready(&ds, threshold, last_transition(c), deadline, Timestamp::now()).map_err(
            |(retriable, e)| {
                // daemonset_ready.go:57-58, Flagger's wording and spelling.
                not_ready(
                    format!("canary damonset {name}.{ns} not ready with retryable {retriable}: {e}"),
                    retriable,
                )
            },
        )
    }

    /// Flagger's `Promote` (daemonset_controller.go:112-185): configs, then the primary's spec,
    /// pod template, labels and annotations from the target.
    async fn promote(&self, c: &Canary) -> Result<(), String> {
        self.workloads
            .promote(c, false, |spec, target| {
                copy_fields(spec, target, COPIED_FIELDS);
                remove_scale_to_zero(&mut spec["template"]);
            })
            .await
    }

    /// daemonset_controller.go:50-73.
    async fn scale_to_zero(&self, c: &Canary) -> Result<(), String> {
        self.set_scale_to_zero(c, true).await
    }

    /// daemonset_controller.go:75-92.
    async fn scale_from_zero(&self, c: &Canary) -> Result<(), String> {
        self.set_scale_to_zero(c, false).await
    }

    /// daemonset_controller.go:331-337.
    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        self.set_scale_to_zero(c, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "ds", "generation": generation}, "status": status})
    }

    /// Every branch of isDaemonSetReady, with Flagger's messages.
    #[test]
    fn readiness_follows_flaggers_daemonset_ready() {
        let now = Timestamp::now();
        let recent = Some(now - jiff::SignedDuration::from_secs(10));
        let ok = json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2});
        assert_eq!(daemonset_ready(&ds(1, ok.clone()), 100, recent, 600, now), Ok(()));
        assert_eq!(
            daemonset_ready(&ds(2, ok), 100, recent, 600, now),
            Err((
                true,
                "waiting for rollout to finish: observed daemonset generation less than desired generation"
                    .into()
            ))
        );
        let updating = json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1, "numberAvailable": 2});
        assert_eq!(
            daemonset_ready(&ds(1, updating.clone()), 100, recent, 600, now),
            Err((
                true,
                "waiting for rollout to finish: 1 out of 2 new pods have been updated".into()
            ))
        );
        let unavailable = json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 1});
        assert_eq!(
            daemonset_ready(&ds(1, unavailable.clone()), 100, recent, 600, now),
            Err((
                true,
                "waiting for rollout to finish: 1 of 3 (readyThreshold 100%) updated pods are available"
                    .into()
            ))
        );
        // int32(float32(3) * 0.5) = 1: one available pod is enough at 50%.
        assert_eq!(daemonset_ready(&ds(1, unavailable), 50, recent, 600, now), Ok(()));
        // Past the deadline (from the canary's last transition): not retriable.
        let old = Some(now - jiff::SignedDuration::from_secs(700));
        assert_eq!(
            daemonset_ready(&ds(1, updating.clone()), 100, old, 600, now),
            Err((false, "exceeded its progressDeadlineSeconds: 600".into()))
        );
        assert!(
            daemonset_ready(&ds(1, updating), 100, None, 600, now)
                .unwrap_err()
                .0
        );
        // A DaemonSet scaled to zero (no node selected) is ready.
        let none = json!({"observedGeneration": 1, "desiredNumberScheduled": 0});
        assert_eq!(daemonset_ready(&ds(1, none), 100, recent, 600, now), Ok(()));
    }

    #[test]
    fn the_scale_to_zero_selector_is_not_part_of_the_template() {
        let mut t = json!({"spec": {"nodeSelector": {SCALE_TO_ZERO_KEY: "true"}, "containers": []}});
        remove_scale_to_zero(&mut t);
        assert_eq!(t, json!({"spec": {"containers": []}}));
        let mut t = json!({"spec": {"nodeSelector": {SCALE_TO_ZERO_KEY: "true", "disk": "ssd"}}});
        remove_scale_to_zero(&mut t);
        assert_eq!(t, json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let a = json!({"spec": {"containers": [{"name": "a"}]}});
        let mut b =
            json!({"spec": {"containers": [{"name": "a"}], "nodeSelector": {SCALE_TO_ZERO_KEY: "true"}}});
        remove_scale_to_zero(&mut b);
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }
}
