//! The Deployment target (reference §6.1): the `<target>-primary` Deployment owned by the Canary,
//! its HorizontalPodAutoscaler copy, ConfigMap/Secret tracking with `-primary` copies, readiness
//! with ready thresholds and the progress deadline, scaling the canary to zero and back.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::fingerprint::{canonical_json, fingerprint, sha256_hex};
use aviary_core::ports::{NotReady, Target, TargetRevision};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::client::{CONFIG_MAP, DEPLOYMENT, HPA, Kind, Kube, SECRET, describe, owner_reference};

/// The pod-template annotation refreshed on every promotion (forces a rollout of the primary).
pub const FLAGGER_ID: &str = "flagger-id";
/// Opt a ConfigMap or Secret out of tracking (any value starting with `disable`).
pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";
/// Secret types whose data is tracked (as in Flagger).
const TRACKED_SECRET_TYPES: &[&str] = &[
    "",
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// How the Deployment target behaves (Flagger's controller flags).
#[derive(Debug, Clone)]
pub struct DeploymentSettings {
    /// `-selector-labels`: the first of these found in `spec.selector.matchLabels` is the selector.
    pub selector_labels: Vec<String>,
    /// `-include-label-prefix`: labels and annotations copied to the primary (`*` = all).
    pub include_label_prefixes: Vec<String>,
    /// `-enable-config-tracking`.
    pub config_tracking: bool,
}

impl Default for DeploymentSettings {
    fn default() -> Self {
        Self {
            selector_labels: vec!["app".into(), "name".into(), "app.kubernetes.io/name".into()],
            include_label_prefixes: Vec::new(),
            config_tracking: true,
        }
    }
}

/// The selector label of a workload and its value (`app: podinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub label: String,
    pub value: String,
}

impl Selector {
    /// The primary's value (`podinfo-primary`).
    pub fn primary(&self) -> String {
        format!("{}-primary", self.value)
    }
}

/// Flagger's `GetMetadata`: the selector label of a Deployment.
pub fn selector_of(deploy: &Value, labels: &[String]) -> Result<Selector, String> {
    let match_labels = &deploy["spec"]["selector"]["matchLabels"];
    for l in labels {
        if let Some(v) = match_labels[l.as_str()].as_str() {
            return Ok(Selector {
                label: l.clone(),
                value: v.to_string(),
            });
        }
    }
    Err(format!(
        "deployment {}.{} spec.selector.matchLabels must contain one of [{}]",
        deploy["metadata"]["name"].as_str().unwrap_or_default(),
        deploy["metadata"]["namespace"].as_str().unwrap_or_default(),
        labels.join(" ")
    ))
}

/// A ConfigMap or Secret referenced by a pod template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ConfigRef {
    secret: bool,
    name: String,
}

impl ConfigRef {
    fn kind(&self) -> Kind {
        if self.secret { SECRET } else { CONFIG_MAP }
    }
    fn key(&self) -> String {
        format!(
            "{}/{}",
            if self.secret { "secret" } else { "configmap" },
            self.name
        )
    }
}

/// Every ConfigMap and Secret the pod spec refers to: volumes (also projected), env `valueFrom`,
/// `envFrom`, in containers and init containers.
fn config_refs(pod: &Value) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    let mut add = |secret: bool, name: &Value| {
        if let Some(n) = name.as_str().filter(|n| !n.is_empty()) {
            refs.insert(ConfigRef {
                secret,
                name: n.to_string(),
            });
        }
    };
    for v in pod["volumes"].as_array().into_iter().flatten() {
        add(false, &v["configMap"]["name"]);
        add(true, &v["secret"]["secretName"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(false, &s["configMap"]["name"]);
            add(true, &s["secret"]["name"]);
        }
    }
    for list in ["containers", "initContainers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(false, &e["valueFrom"]["configMapKeyRef"]["name"]);
                add(true, &e["valueFrom"]["secretKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(false, &e["configMapRef"]["name"]);
                add(true, &e["secretRef"]["name"]);
            }
        }
    }
    refs
}

/// Points the pod spec's references to tracked configs at their `-primary` copies.
fn rewrite_config_refs(pod: &mut Value, tracked: &BTreeSet<ConfigRef>) {
    let rename = |secret: bool, parent: &mut Value, pointer: &str| {
        if let Some(name) = parent.pointer_mut(pointer)
            && let Some(n) = name.as_str()
            && tracked.contains(&ConfigRef {
                secret,
                name: n.to_string(),
            })
        {
            *name = Value::from(format!("{n}-primary"));
        }
    };
    if let Some(volumes) = pod.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes {
            rename(false, v, "/configMap/name");
            rename(true, v, "/secret/secretName");
            if let Some(sources) = v.pointer_mut("/projected/sources").and_then(Value::as_array_mut) {
                for s in sources {
                    rename(false, s, "/configMap/name");
                    rename(true, s, "/secret/name");
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for c in pod
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env {
                    rename(false, e, "/valueFrom/configMapKeyRef/name");
                    rename(true, e, "/valueFrom/secretKeyRef/name");
                }
            }
            if let Some(env_from) = c.get_mut("envFrom").and_then(Value::as_array_mut) {
                for e in env_from {
                    rename(false, e, "/configMapRef/name");
                    rename(true, e, "/secretRef/name");
                }
            }
        }
    }
}

/// Removes the `null`s that indexing into missing fields left behind.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                strip_nulls(x);
            }
            m.retain(|_, x| !matches!(x, Value::Object(o) if o.is_empty()));
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// First 16 hex characters of sha256 of the canonical JSON of the config's data.
fn config_checksum(obj: &Value) -> String {
    let data = match obj.get("binaryData") {
        Some(b) => json!({"data": obj.get("data").cloned().unwrap_or(json!({})), "binaryData": b}),
        None => obj.get("data").cloned().unwrap_or(json!({})),
    };
    sha256_hex(canonical_json(&data).as_bytes(), 16)
}

fn tracking_disabled(obj: &Value) -> bool {
    obj["metadata"]["annotations"][CONFIG_TRACKING_ANNOTATION]
        .as_str()
        .is_some_and(|v| v.starts_with("disable"))
}

/// Labels or annotations whose key starts with one of `prefixes` (`*` = all).
fn included(map: &Value, prefixes: &[String]) -> Map<String, Value> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    prefixes
                        .iter()
                        .any(|p| p == "*" || (!p.is_empty() && k.starts_with(p.as_str())))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Annotations copied to a primary at creation: all but Flux's and kubectl's bookkeeping.
fn copied_annotations(map: &Value) -> Map<String, Value> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !k.contains("toolkit.fluxcd.io")
                        && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites label selectors in topology spread constraints and pod anti-affinity whose value is
/// the target's, so the primary's pods spread among themselves.
fn rewrite_spread_selectors(pod: &mut Value, sel: &Selector, target: &str) {
    let fix = |term: &mut Value, pointer: &str| {
        if let Some(m) = term.pointer_mut(pointer).and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                if let Some(s) = v.as_str().filter(|s| *s == sel.value || *s == target) {
                    *v = Value::from(format!("{s}-primary"));
                }
            }
        }
    };
    if let Some(ts) = pod
        .get_mut("topologySpreadConstraints")
        .and_then(Value::as_array_mut)
    {
        for t in ts {
            fix(t, "/labelSelector/matchLabels");
        }
    }
    if let Some(anti) = pod.pointer_mut("/affinity/podAntiAffinity") {
        if let Some(ts) = anti
            .get_mut("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in ts {
                fix(t, "/labelSelector/matchLabels");
            }
        }
        if let Some(ts) = anti
            .get_mut("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in ts {
                fix(t, "/podAffinityTerm/labelSelector/matchLabels");
            }
        }
    }
}

/// The Deployment target.
#[derive(Debug, Clone)]
pub struct DeploymentTarget {
    kube: Kube,
    settings: DeploymentSettings,
}

fn retriable(e: impl std::fmt::Display) -> NotReady {
    NotReady::retriable(e.to_string())
}

impl DeploymentTarget {
    pub fn new(kube: Kube, settings: DeploymentSettings) -> Self {
        Self { kube, settings }
    }

    async fn get(&self, ns: &str, name: &str) -> Result<Value, String> {
        match self.kube.get(DEPLOYMENT, ns, name).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(format!(
                "deployment {name}.{ns} get query error: deployments.apps \"{name}\" not found"
            )),
            Err(e) => Err(format!(
                "deployment {name}.{ns} get query error: {}",
                describe(&e)
            )),
        }
    }

    async fn target(&self, c: &Canary) -> Result<Value, String> {
        self.get(c.namespace(), c.target_name()).await
    }

    /// The tracked ConfigMaps and Secrets of the target (existing, not opted out) with their data.
    async fn tracked(&self, c: &Canary, target: &Value) -> Result<Vec<(ConfigRef, Value)>, String> {
        if !self.settings.config_tracking {
            return Ok(Vec::new());
        }
        let ns = c.namespace();
        let mut out = Vec::new();
        for r in config_refs(&target["spec"]["template"]["spec"]) {
            let obj = match self.kube.get(r.kind(), ns, &r.name).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    tracing::debug!(canary = %c.key(), "{} referenced by the target does not exist; not tracked", r.key());
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "{} {}.{ns} get query error: {}",
                        r.kind().kind,
                        r.name,
                        describe(&e)
                    ));
                }
            };
            if tracking_disabled(&obj) {
                continue;
            }
            if r.secret && !TRACKED_SECRET_TYPES.contains(&obj["type"].as_str().unwrap_or("")) {
                continue;
            }
            out.push((r, obj));
        }
        Ok(out)
    }

    /// Creates or updates the `-primary` copies of the tracked configs.
    async fn copy_configs(&self, c: &Canary, tracked: &[(ConfigRef, Value)]) -> Result<(), String> {
        let ns = c.namespace();
        for (r, obj) in tracked {
            let name = format!("{}-primary", r.name);
            let mut desired = json!({
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": obj["metadata"]["labels"].clone(),
                    "ownerReferences": [owner_reference(c)],
                },
            });
            for field in ["data", "binaryData", "type", "stringData"] {
                if let Some(v) = obj.get(field) {
                    desired[field] = v.clone();
                }
            }
            strip_nulls(&mut desired);
            let d = desired.clone();
            self.kube
                .upsert(
                    r.kind(),
                    ns,
                    &name,
                    || Ok(d.clone()),
                    |cur| {
                        for field in ["data", "binaryData"] {
                            match desired.get(field) {
                                Some(v) => cur[field] = v.clone(),
                                None => {
                                    if let Some(o) = cur.as_object_mut() {
                                        o.remove(field);
                                    }
                                }
                            }
                        }
                        Ok(())
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The primary's pod template: the target's with the selector label rewritten, a fresh
    /// `flagger-id`, config references pointing at the `-primary` copies.
    fn primary_template(
        &self,
        target: &Value,
        sel: &Selector,
        target_name: &str,
        tracked: &[(ConfigRef, Value)],
    ) -> Value {
        let mut template = target["spec"]["template"].clone();
        if !template["metadata"].is_object() {
            template["metadata"] = json!({});
        }
        if !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        template["metadata"]["labels"][sel.label.as_str()] = Value::from(sel.primary());
        if !template["metadata"]["annotations"].is_object() {
            template["metadata"]["annotations"] = json!({});
        }
        template["metadata"]["annotations"][FLAGGER_ID] = Value::from(uuid::Uuid::new_v4().to_string());
        let refs: BTreeSet<ConfigRef> = tracked.iter().map(|(r, _)| r.clone()).collect();
        if template["spec"].is_object() {
            rewrite_config_refs(&mut template["spec"], &refs);
            rewrite_spread_selectors(&mut template["spec"], sel, target_name);
        }
        template
    }

    /// Sets the primary's spec from the target's (everything but replicas and selector).
    fn copy_spec(primary_spec: &mut Value, target: &Value, template: Value) {
        for field in [
            "progressDeadlineSeconds",
            "minReadySeconds",
            "revisionHistoryLimit",
            "strategy",
        ] {
            match target["spec"].get(field) {
                Some(v) if !v.is_null() => primary_spec[field] = v.clone(),
                _ => {
                    if let Some(o) = primary_spec.as_object_mut() {
                        o.remove(field);
                    }
                }
            }
        }
        primary_spec["template"] = template;
    }

    fn primary_labels(&self, target: &Value, sel: &Selector) -> Map<String, Value> {
        let mut labels = included(
            &target["metadata"]["labels"],
            &self.settings.include_label_prefixes,
        );
        labels.insert(sel.label.clone(), Value::from(sel.primary()));
        labels
    }

    async fn create_primary(
        &self,
        c: &Canary,
        target: &Value,
        sel: &Selector,
        tracked: &[(ConfigRef, Value)],
    ) -> Result<(), String> {
        let ns = c.namespace();
        let name = format!("{}-primary", c.target_name());
        let replicas = target["spec"]["replicas"]
            .as_i64()
            .filter(|r| *r > 0)
            .unwrap_or(1);
        let template = self.primary_template(target, sel, c.target_name(), tracked);
        let mut spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {sel.label.as_str(): sel.primary()}},
        });
        Self::copy_spec(&mut spec, target, template);
        let mut obj = json!({
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": self.primary_labels(target, sel),
                "annotations": copied_annotations(&target["metadata"]["annotations"]),
                "ownerReferences": [owner_reference(c)],
            },
            "spec": spec,
        });
        strip_nulls(&mut obj["metadata"]);
        match self.kube.create(DEPLOYMENT, ns, obj).await {
            Ok(_) => {
                tracing::info!(canary = %c.key(), "Deployment {name}.{ns} created");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!(
                "creating deployment {name}.{ns} failed: {}",
                describe(&e)
            )),
        }
    }

    /// The HPA `<hpa>-primary` targeting `<target>-primary` (autoscaling/v2).
    async fn reconcile_primary_hpa(&self, c: &Canary, create_only: bool) -> Result<(), String> {
        let Some(a) = &c.spec.autoscaler_ref else {
            return Ok(());
        };
        let kind = a.kind.as_deref().unwrap_or_default();
        if kind != "HorizontalPodAutoscaler" {
            return Err(format!(
                "autoscalerRef kind {kind} is not supported by aviary (spec.autoscalerRef.kind); use a HorizontalPodAutoscaler"
            ));
        }
        let ns = c.namespace();
        let name = a.name.clone().unwrap_or_default();
        let hpa = match self.kube.get(HPA, ns, &name).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                return Err(format!(
                    "HorizontalPodAutoscaler {name}.{ns} get query error: horizontalpodautoscalers.autoscaling \"{name}\" not found"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "HorizontalPodAutoscaler {name}.{ns} get query error: {}",
                    describe(&e)
                ));
            }
        };
        let mut spec = hpa["spec"].clone();
        spec["scaleTargetRef"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{}-primary", c.target_name())});
        if let Some(r) = &a.primary_scaler_replicas {
            if let Some(min) = r.min_replicas {
                spec["minReplicas"] = Value::from(min);
            }
            if let Some(max) = r.max_replicas {
                spec["maxReplicas"] = Value::from(max);
            }
        }
        let primary = format!("{name}-primary");
        let mut obj = json!({
            "metadata": {
                "name": primary,
                "namespace": ns,
                "labels": included(&hpa["metadata"]["labels"], &self.settings.include_label_prefixes),
                "annotations": included(&hpa["metadata"]["annotations"], &self.settings.include_label_prefixes),
                "ownerReferences": [owner_reference(c)],
            },
            "spec": spec.clone(),
        });
        strip_nulls(&mut obj["metadata"]);
        self.kube
            .upsert(
                HPA,
                ns,
                &primary,
                || Ok(obj.clone()),
                |cur| {
                    if !create_only {
                        cur["spec"] = spec.clone();
                    }
                    Ok(())
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Sets the target's replicas.
    async fn scale(&self, c: &Canary, replicas: i64) -> Result<(), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        match self
            .kube
            .modify(DEPLOYMENT, ns, name, |d| {
                d["spec"]["replicas"] = Value::from(replicas);
                Ok(())
            })
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "deployment {name}.{ns} get query error: deployments.apps \"{name}\" not found"
            )),
            Err(e) => Err(format!("scaling {name}.{ns} to {replicas} failed: {e}")),
        }
    }

    /// The replicas a canary is scaled up to (Flagger's ScaleFromZero rule).
    async fn scale_up_replicas(&self, c: &Canary, target: &Value) -> i64 {
        if let Some(r) = target["spec"]["replicas"].as_i64().filter(|r| *r > 0) {
            return r;
        }
        let ns = c.namespace();
        match &c.spec.autoscaler_ref {
            None => {
                let primary = format!("{}-primary", c.target_name());
                if let Ok(Some(p)) = self.kube.get(DEPLOYMENT, ns, &primary).await
                    && let Some(r) = p["spec"]["replicas"].as_i64().filter(|r| *r > 0)
                {
                    return r;
                }
                1
            }
            Some(a) => {
                let name = a.name.clone().unwrap_or_default();
                if let Ok(Some(h)) = self.kube.get(HPA, ns, &name).await
                    && let Some(min) = h["spec"]["minReplicas"].as_i64().filter(|m| *m > 1)
                {
                    return min;
                }
                1
            }
        }
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
        let target = self.target(c).await?;
        let tracked = self.tracked(c, &target).await?;
        let configs: BTreeMap<String, String> = tracked
            .iter()
            .map(|(r, obj)| (r.key(), config_checksum(obj)))
            .collect();
        Ok(TargetRevision {
            fingerprint: fingerprint(&target["spec"]["template"]),
            // Flagger stores the (possibly empty) map whenever config tracking is on
            // (`trackedConfigs: {}` in the status), nothing when it is off.
            tracked_configs: self.settings.config_tracking.then_some(configs),
            route: None,
        })
    }

    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        let target = self.target(c).await.map_err(NotReady::retriable)?;
        let sel = selector_of(&target, &self.settings.selector_labels).map_err(NotReady::retriable)?;
        let primary = format!("{}-primary", c.target_name());
        let exists = self
            .kube
            .get(DEPLOYMENT, c.namespace(), &primary)
            .await
            .map_err(|e| {
                retriable(format!(
                    "deployment {primary}.{} get query error: {}",
                    c.namespace(),
                    describe(&e)
                ))
            })?;
        if exists.is_none() {
            let tracked = self.tracked(c, &target).await.map_err(NotReady::retriable)?;
            self.copy_configs(c, &tracked)
                .await
                .map_err(NotReady::retriable)?;
            self.create_primary(c, &target, &sel, &tracked)
                .await
                .map_err(NotReady::retriable)?;
        }
        self.reconcile_primary_hpa(c, true)
            .await
            .map_err(NotReady::retriable)
    }

    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let ns = c.namespace();
        let name = format!("{}-primary", c.target_name());
        let d = self.get(ns, &name).await.map_err(NotReady::retriable)?;
        let threshold = c.analysis().primary_ready_threshold.unwrap_or(100);
        deployment_ready(
            &d,
            c.progress_deadline().as_secs() as i64,
            threshold,
            Timestamp::now(),
        )
        .map_err(|e| not_ready(format!("{name}.{ns}"), e))
    }

    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let d = self.target(c).await.map_err(NotReady::retriable)?;
        let threshold = c.analysis().canary_ready_threshold.unwrap_or(100);
        deployment_ready(
            &d,
            c.progress_deadline().as_secs() as i64,
            threshold,
            Timestamp::now(),
        )
        .map_err(|e| {
            not_ready(
                format!("canary deployment {}.{}", c.target_name(), c.namespace()),
                e,
            )
        })
    }

    async fn promote(&self, c: &Canary) -> Result<(), String> {
        let ns = c.namespace();
        let target = self.target(c).await?;
        let sel = selector_of(&target, &self.settings.selector_labels)?;
        let tracked = self.tracked(c, &target).await?;
        self.copy_configs(c, &tracked).await?;
        let primary = format!("{}-primary", c.target_name());
        let template = self.primary_template(&target, &sel, c.target_name(), &tracked);
        let labels = self.primary_labels(&target, &sel);
        let annotations = included(
            &target["metadata"]["annotations"],
            &self.settings.include_label_prefixes,
        );
        let copy_replicas = c.spec.autoscaler_ref.is_none();
        let updated = self
            .kube
            .modify(DEPLOYMENT, ns, &primary, |p| {
                Self::copy_spec(&mut p["spec"], &target, template.clone());
                if copy_replicas && let Some(r) = target["spec"]["replicas"].as_i64().filter(|r| *r > 0) {
                    p["spec"]["replicas"] = Value::from(r);
                }
                p["metadata"]["labels"] = Value::Object(labels.clone());
                p["metadata"]["annotations"] = Value::Object(annotations.clone());
                Ok(())
            })
            .await
            .map_err(|e| format!("updating deployment {primary}.{ns} template spec failed: {e}"))?;
        if updated.is_none() {
            return Err(format!(
                "deployment {primary}.{ns} get query error: deployments.apps \"{primary}\" not found"
            ));
        }
        self.reconcile_primary_hpa(c, false).await
    }

    async fn scale_to_zero(&self, c: &Canary) -> Result<(), String> {
        self.scale(c, 0).await
    }

    async fn scale_from_zero(&self, c: &Canary) -> Result<(), String> {
        let target = self.target(c).await?;
        let replicas = self.scale_up_replicas(c, &target).await;
        if target["spec"]["replicas"].as_i64() == Some(replicas) {
            return Ok(());
        }
        self.scale(c, replicas).await
    }

    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        let ns = c.namespace();
        let primary = format!("{}-primary", c.target_name());
        let replicas = match self.kube.get(DEPLOYMENT, ns, &primary).await {
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
        let e = deployment_ready(
            &deploy(json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 2})),
            600,
            100,
            now,
        )
        .unwrap_err();
        assert_eq!(
            e.1,
            "waiting for rollout to finish: 1 out of 2 new replicas have been updated"
        );
        let e = deployment_ready(
            &deploy(json!({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3})),
            600,
            100,
            now,
        )
        .unwrap_err();
        assert_eq!(
            e.1,
            "waiting for rollout to finish: 1 old replicas are pending termination"
        );
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

    #[test]
    fn config_refs_are_found_and_rewritten() {
        let mut pod = json!({
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "sec-vol"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "sec-proj"}}]}},
            ],
            "containers": [{"name": "app", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                {"name": "Y", "value": "plain"},
            ], "envFrom": [{"secretRef": {"name": "sec-envfrom"}}]}],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
        });
        let refs = config_refs(&pod);
        let keys: Vec<String> = refs.iter().map(ConfigRef::key).collect();
        assert_eq!(
            keys,
            [
                "configmap/cm-env",
                "configmap/cm-init",
                "configmap/cm-proj",
                "configmap/cm-vol",
                "secret/sec-envfrom",
                "secret/sec-proj",
                "secret/sec-vol"
            ]
        );
        let only: BTreeSet<ConfigRef> = refs.into_iter().filter(|r| r.name != "cm-vol").collect();
        rewrite_config_refs(&mut pod, &only);
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "cm-vol");
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "sec-vol-primary");
        assert_eq!(
            pod["volumes"][2]["projected"]["sources"][1]["secret"]["name"],
            "sec-proj-primary"
        );
        assert_eq!(
            pod["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"],
            "cm-env-primary"
        );
        assert_eq!(
            pod["containers"][0]["env"][1],
            json!({"name": "Y", "value": "plain"})
        );
        assert_eq!(
            pod["initContainers"][0]["envFrom"][0]["configMapRef"]["name"],
            "cm-init-primary"
        );
    }

    #[test]
    fn spread_selectors_follow_the_primary() {
        let sel = Selector {
            label: "app".into(),
            value: "podinfo".into(),
        };
        let mut pod = json!({
            "topologySpreadConstraints": [{"maxSkew": 1, "labelSelector": {"matchLabels": {"app": "podinfo"}}}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "podinfo", "tier": "web"}}}}
            ]}},
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        });
        rewrite_spread_selectors(&mut pod, &sel, "podinfo");
        assert_eq!(
            pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app"],
            "podinfo-primary"
        );
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            term["podAffinityTerm"]["labelSelector"]["matchLabels"],
            json!({"app": "podinfo-primary", "tier": "web"})
        );
        assert_eq!(pod["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));
        assert!(
            pod["affinity"]["podAntiAffinity"]
                .get("requiredDuringSchedulingIgnoredDuringExecution")
                .is_none()
        );
    }

    #[test]
    fn checksum_is_16_hex_of_the_data() {
        let a = config_checksum(&json!({"data": {"b": "2", "a": "1"}}));
        let b = config_checksum(&json!({"data": {"a": "1", "b": "2"}}));
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        assert_ne!(a, config_checksum(&json!({"data": {"a": "1", "b": "3"}})));
    }

    #[test]
    fn selector_label_is_the_first_configured_one() {
        let labels = DeploymentSettings::default().selector_labels;
        let d = json!({"metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "x", "name": "podinfo"}}}});
        assert_eq!(
            selector_of(&d, &labels).unwrap(),
            Selector {
                label: "name".into(),
                value: "podinfo".into()
            }
        );
        let d = json!({"metadata": {"name": "podinfo", "namespace": "test"}, "spec": {"selector": {"matchLabels": {"tier": "web"}}}});
        assert_eq!(
            selector_of(&d, &labels).unwrap_err(),
            "deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
    }
}
