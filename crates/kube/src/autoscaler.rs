//! `spec.autoscalerRef`: the `-primary` copy of the target's HorizontalPodAutoscaler
//! (autoscaling/v2) or KEDA ScaledObject (keda.sh/v1alpha1), pointed at the primary workload,
//! and the pause of the target's ScaledObject while the canary is scaled down. Flagger's
//! pkg/canary/hpa_reconciler.go and scaled_object_reconciler.go; called where Flagger's scheduler
//! calls `ReconcilePrimaryScaler`, `PauseTargetScaler` and `ResumeTargetScaler`.

use aviary_api::Canary;
use aviary_api::canary::AutoscalerRef;
use serde_json::{Map, Value, json};

use crate::client::{HPA, Kind, Kube, SCALED_OBJECT, not_found, owner_reference};
use crate::workload::strip_nulls;

/// KEDA's annotation that holds a ScaledObject's target at a fixed replica count.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "autoscaling.keda.sh/paused-replicas";

/// Keys Flux owns, never copied (Flagger's `filterMetadata`).
const TOOLKIT_MARKER: &str = "toolkit.fluxcd.io";

/// The autoscaler kinds Flagger supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scaler {
    Hpa,
    ScaledObject,
}

impl Scaler {
    fn of(a: &AutoscalerRef) -> Result<Self, String> {
        match a.kind.as_deref().unwrap_or_default() {
            "HorizontalPodAutoscaler" => Ok(Self::Hpa),
            "ScaledObject" => Ok(Self::ScaledObject),
            other => Err(format!(
                "autoscalerRef kind {other:?} (spec.autoscalerRef.kind) is not supported; use HorizontalPodAutoscaler or ScaledObject"
            )),
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::Hpa => HPA,
            Self::ScaledObject => SCALED_OBJECT,
        }
    }

    /// How Flagger names the kind in its errors.
    fn what(self) -> &'static str {
        match self {
            Self::Hpa => "HorizontalPodAutoscaler",
            Self::ScaledObject => "Keda ScaledObject",
        }
    }
}

/// The autoscaler of a canary's workload.
#[derive(Debug, Clone)]
pub struct Autoscalers {
    kube: Kube,
}

impl Autoscalers {
    pub fn new(kube: Kube) -> Self {
        Self { kube }
    }

    /// The target's autoscaler object, `Ok(None)` when the canary has no `autoscalerRef`.
    async fn target(&self, c: &Canary) -> Result<Option<(Scaler, String, Value)>, String> {
        let Some(a) = &c.spec.autoscaler_ref else {
            return Ok(None);
        };
        let scaler = Scaler::of(a)?;
        let ns = c.namespace();
        let name = a.name.clone().unwrap_or_default();
        let kind = scaler.kind();
        let context = format!("{} {name}.{ns} get query error", scaler.what());
        let o = self.kube.require(kind, ns, &name, &context).await?;
        Ok(Some((scaler, name, o)))
    }

    /// Flagger's `ReconcilePrimaryScaler`: creates `<autoscaler>-primary` when missing; unless
    /// `init`, brings its spec up to date with the target's (hpa_reconciler.go:55-146,
    /// scaled_object_reconciler.go:40-124).
    pub async fn reconcile_primary(&self, c: &Canary, init: bool) -> Result<(), String> {
        let Some((scaler, name, target)) = self.target(c).await? else {
            return Ok(());
        };
        let a = c.spec.autoscaler_ref.as_deref().expect("checked by target()");
        let spec = match scaler {
            Scaler::Hpa => primary_hpa_spec(c, a, &target),
            Scaler::ScaledObject => primary_scaled_object_spec(c, a, &target),
        };
        let ns = c.namespace();
        let primary = format!("{name}-primary");
        let mut created = json!({
            "metadata": {
                "name": primary,
                "namespace": ns,
                "labels": filter_metadata(&target["metadata"]["labels"]),
                "ownerReferences": [owner_reference(c)],
            },
            "spec": spec,
        });
        // The ScaledObject's annotations go along (KEDA's transfer-hpa-ownership, say); the
        // HPA's do not (makeObjectMeta vs makeObjectMetaSo).
        if scaler == Scaler::ScaledObject {
            created["metadata"]["annotations"] =
                Value::Object(filter_metadata(&target["metadata"]["annotations"]));
            if let Some(a) = created["metadata"]["annotations"].as_object_mut() {
                // The target's pause is not the primary's.
                a.remove(PAUSED_REPLICAS_ANNOTATION);
            }
        }
        strip_nulls(&mut created["metadata"]);
        let fields = updated_fields(scaler);
        self.kube
            .upsert(
                scaler.kind(),
                ns,
                &primary,
                || Ok(created.clone()),
                |cur| {
                    if !init {
                        for f in fields {
                            match spec.get(*f) {
                                Some(v) => cur["spec"][*f] = v.clone(),
                                None => {
                                    if let Some(o) = cur["spec"].as_object_mut() {
                                        o.remove(*f);
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("reconciling {} {primary}.{ns} failed: {e}", scaler.what()))
    }

    /// Flagger's `PauseTargetScaler`: a ScaledObject holds its target at 0 replicas
    /// (scaled_object_reconciler.go:126-145); an HPA needs nothing (hpa_reconciler.go:148-150:
    /// Kubernetes does not scale a Deployment at 0 replicas).
    pub async fn pause_target(&self, c: &Canary) -> Result<(), String> {
        self.set_pause(c, Some("0")).await
    }

    /// Flagger's `ResumeTargetScaler`: removes the pause (scaled_object_reconciler.go:147-167).
    pub async fn resume_target(&self, c: &Canary) -> Result<(), String> {
        self.set_pause(c, None).await
    }

    async fn set_pause(&self, c: &Canary, value: Option<&str>) -> Result<(), String> {
        let Some(a) = &c.spec.autoscaler_ref else {
            return Ok(());
        };
        if Scaler::of(a)? != Scaler::ScaledObject {
            return Ok(());
        }
        let (ns, name) = (c.namespace(), a.name.clone().unwrap_or_default());
        let updated = self
            .kube
            .modify(SCALED_OBJECT, ns, &name, |so| {
                crate::client::set_annotation(so, PAUSED_REPLICAS_ANNOTATION, value);
                Ok(())
            })
            .await
            .map_err(|e| format!("Keda ScaledObject {name}.{ns} update error: {e}"))?;
        let missing = || {
            let reason = not_found(SCALED_OBJECT, &name);
            format!("Keda ScaledObject {name}.{ns} get query error: {reason}")
        };
        updated.map(|_| ()).ok_or_else(missing)
    }

    /// The replicas a canary with an autoscaler is scaled up to: the autoscaler's minimum when
    /// above 1, else 1 (deployment_controller.go:187-203). Unreadable autoscalers count as 1.
    pub async fn min_replicas(&self, c: &Canary) -> i64 {
        let min = match self.target(c).await {
            Ok(Some((Scaler::Hpa, _, hpa))) => hpa["spec"]["minReplicas"].as_i64(),
            Ok(Some((Scaler::ScaledObject, _, so))) => so["spec"]["minReplicaCount"].as_i64(),
            _ => None,
        };
        min.filter(|m| *m > 1).unwrap_or(1)
    }
}

/// The spec fields an update of the primary brings up to date (the scale target is set once).
fn updated_fields(scaler: Scaler) -> &'static [&'static str] {
    match scaler {
        Scaler::Hpa => &["minReplicas", "maxReplicas", "metrics", "behavior"],
        Scaler::ScaledObject => &[
            "pollingInterval",
            "cooldownPeriod",
            "minReplicaCount",
            "maxReplicaCount",
            "advanced",
            "triggers",
            "fallback",
            "idleReplicaCount",
        ],
    }
}

/// Labels or annotations without Flux's keys (Flagger's `filterMetadata`).
fn filter_metadata(map: &Value) -> Map<String, Value> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains(TOOLKIT_MARKER))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The primary HPA's spec: the target's scale target kind and version on `<target>-primary`,
/// its bounds, metrics and behavior, then `primaryScalerReplicas` (hpa_reconciler.go:58-77).
fn primary_hpa_spec(c: &Canary, a: &AutoscalerRef, hpa: &Value) -> Value {
    let spec = &hpa["spec"];
    let mut out = json!({
        "scaleTargetRef": {
            "name": format!("{}-primary", c.target_name()),
            "kind": spec["scaleTargetRef"]["kind"],
            "apiVersion": spec["scaleTargetRef"]["apiVersion"],
        },
        "minReplicas": spec["minReplicas"],
        "maxReplicas": spec["maxReplicas"],
        "metrics": spec["metrics"],
        "behavior": spec["behavior"],
    });
    apply_replicas(&mut out, a, "minReplicas", "maxReplicas");
    strip_nulls(&mut out);
    out
}

/// The primary ScaledObject's spec (scaled_object_reconciler.go:47-77): the scale target on
/// `<target>-primary`, the target's triggers with their queries pointed at the primary, a
/// `-primary` HPA name when the target names its HPA, then `primaryScalerReplicas`.
fn primary_scaled_object_spec(c: &Canary, a: &AutoscalerRef, so: &Value) -> Value {
    let spec = &so["spec"];
    let target = &spec["scaleTargetRef"];
    let mut triggers = spec["triggers"].clone();
    primary_queries(c.target_name(), a, &mut triggers);
    let mut advanced = spec["advanced"].clone();
    primary_hpa_name(&mut advanced);
    let mut out = json!({
        "scaleTargetRef": {
            "name": format!("{}-primary", c.target_name()),
            "kind": target["kind"],
            "apiVersion": target["apiVersion"],
            "envSourceContainerName": target["envSourceContainerName"],
        },
        "pollingInterval": spec["pollingInterval"],
        "cooldownPeriod": spec["cooldownPeriod"],
        "minReplicaCount": spec["minReplicaCount"],
        "maxReplicaCount": spec["maxReplicaCount"],
        "advanced": advanced,
        "triggers": triggers,
        "fallback": spec["fallback"],
        "idleReplicaCount": spec["idleReplicaCount"],
    });
    apply_replicas(&mut out, a, "minReplicaCount", "maxReplicaCount");
    strip_nulls(&mut out);
    out
}

fn apply_replicas(spec: &mut Value, a: &AutoscalerRef, min: &str, max: &str) {
    if let Some(r) = &a.primary_scaler_replicas {
        if let Some(m) = r.min_replicas {
            spec[min] = Value::from(m);
        }
        if let Some(m) = r.max_replicas {
            spec[max] = Value::from(m);
        }
    }
}

/// Flagger's `setPrimaryScaledObjectQueries` (scaled_object_reconciler.go:183-212): with
/// `primaryScalerQueries`, each named trigger's `metadata.query` is replaced; otherwise every
/// `query` has `<target>` and `<target>-canary` replaced by `<target>-primary`.
fn primary_queries(target: &str, a: &AutoscalerRef, triggers: &mut Value) {
    let primary = format!("{target}-primary");
    for t in triggers.as_array_mut().into_iter().flatten() {
        match &a.primary_scaler_queries {
            Some(queries) => {
                if let Some(q) = t["name"].as_str().and_then(|n| queries.get(n)) {
                    t["metadata"]["query"] = Value::from(q.clone());
                }
            }
            None => {
                if let Some(q) = t["metadata"]["query"].as_str() {
                    t["metadata"]["query"] = Value::from(point_at_primary(q, target, &primary));
                }
            }
        }
    }
}

/// `podinfo-canary` and `podinfo` become `podinfo-primary`, never `podinfo-primary-canary` or
/// `podinfo-primary-primary` (Flagger goes through a random placeholder; splitting on the
/// canary name does the same without one).
fn point_at_primary(query: &str, target: &str, primary: &str) -> String {
    query
        .split(&format!("{target}-canary"))
        .map(|part| part.replace(target, primary))
        .collect::<Vec<_>>()
        .join(primary)
}

/// Flagger's `setPrimaryScaledObjectHPA` (scaled_object_reconciler.go:230-242): a named HPA
/// config gets `-primary`; an unnamed one is left to KEDA's default name.
fn primary_hpa_name(advanced: &mut Value) {
    if !advanced.is_object() {
        *advanced = json!({});
    }
    if !advanced["horizontalPodAutoscalerConfig"].is_object() {
        advanced["horizontalPodAutoscalerConfig"] = json!({});
    }
    let config = &mut advanced["horizontalPodAutoscalerConfig"];
    if let Some(n) = config["name"].as_str().filter(|n| !n.is_empty()) {
        config["name"] = Value::from(format!("{n}-primary"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_point_at_the_primary_once() {
        assert_eq!(
            point_at_primary(
                r#"sum(rate(http_requests_total{deployment="podinfo-canary"}[2m])) + sum(up{app="podinfo"})"#,
                "podinfo",
                "podinfo-primary"
            ),
            r#"sum(rate(http_requests_total{deployment="podinfo-primary"}[2m])) + sum(up{app="podinfo-primary"})"#
        );
        assert_eq!(point_at_primary("x", "podinfo", "podinfo-primary"), "x");
    }

    #[test]
    fn named_hpa_configs_get_a_primary_name() {
        let mut a = json!({"horizontalPodAutoscalerConfig": {"name": "keda-hpa-podinfo", "behavior": {}}});
        primary_hpa_name(&mut a);
        assert_eq!(
            a["horizontalPodAutoscalerConfig"]["name"],
            "keda-hpa-podinfo-primary"
        );
        let mut a = Value::Null;
        primary_hpa_name(&mut a);
        assert_eq!(a, json!({"horizontalPodAutoscalerConfig": {}}));
    }
}
