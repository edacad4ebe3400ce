//! What the Deployment and DaemonSet targets share (reference §6.1): the selector label, the
//! ConfigMaps and Secrets a pod template tracks with their `-primary` copies, the primary's pod
//! template, labels and annotations as Flagger builds them (pkg/canary/util.go,
//! config_tracker.go).

use std::collections::{BTreeMap, BTreeSet};

use aviary_api::Canary;
use aviary_core::fingerprint::{canonical_json, sha256_hex};
use serde_json::{Map, Value, json};

use crate::client::{CONFIG_MAP, Kind, Kube, SECRET, describe, meta, not_found, owner_reference};

/// Keys Flux owns, never copied to a primary (Flagger's `toolkitMarker`).
const TOOLKIT_MARKER: &str = "toolkit.fluxcd.io";

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

/// How the Deployment and DaemonSet targets behave (Flagger's controller flags).
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

/// Flagger's `getSelectorLabel`: the selector label of a Deployment or DaemonSet (the object's
/// `kind` names it in the error, as Flagger's two controllers do: deployment_controller.go:373,
/// daemonset_controller.go:321-324, stray quote included).
pub fn selector_of(workload: &Value, labels: &[String]) -> Result<Selector, String> {
    let match_labels = &workload["spec"]["selector"]["matchLabels"];
    for l in labels {
        if let Some(v) = match_labels[l.as_str()].as_str() {
            return Ok(Selector {
                label: l.clone(),
                value: v.to_string(),
            });
        }
    }
    let (name, ns) = (meta(workload, "name"), meta(workload, "namespace"));
    let list = labels.join(" ");
    Err(if workload["kind"] == "DaemonSet" {
        format!("daemonset {name}.{ns} spec.selector.matchLabels must contain one of [{list}]'")
    } else {
        format!("deployment {name}.{ns} spec.selector.matchLabels must contain one of [{list}]")
    })
}

/// A ConfigMap or Secret referenced by a pod template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ConfigRef {
    pub(crate) secret: bool,
    pub(crate) name: String,
}

impl ConfigRef {
    pub(crate) fn kind(&self) -> Kind {
        if self.secret { SECRET } else { CONFIG_MAP }
    }
    pub(crate) fn key(&self) -> String {
        format!(
            "{}/{}",
            if self.secret { "secret" } else { "configmap" },
            self.name
        )
    }
}

/// Every ConfigMap and Secret the pod spec refers to: volumes (also projected), env `valueFrom`,
/// `envFrom`, in containers and init containers.
pub(crate) fn config_refs(pod: &Value) -> BTreeSet<ConfigRef> {
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
pub(crate) fn rewrite_config_refs(pod: &mut Value, tracked: &BTreeSet<ConfigRef>) {
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
    // Renames in each entry of a list: (is it a Secret, where the name is).
    let each = |list: Option<&mut Value>, refs: [(bool, &str); 2]| {
        for entry in list.and_then(Value::as_array_mut).into_iter().flatten() {
            for (secret, pointer) in refs {
                rename(secret, entry, pointer);
            }
        }
    };
    for v in pod
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        rename(false, v, "/configMap/name");
        rename(true, v, "/secret/secretName");
        let sources = v.pointer_mut("/projected/sources");
        each(sources, [(false, "/configMap/name"), (true, "/secret/name")]);
    }
    for list in ["containers", "initContainers"] {
        for c in pod
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let env = [
                (false, "/valueFrom/configMapKeyRef/name"),
                (true, "/valueFrom/secretKeyRef/name"),
            ];
            each(c.get_mut("env"), env);
            each(
                c.get_mut("envFrom"),
                [(false, "/configMapRef/name"), (true, "/secretRef/name")],
            );
        }
    }
}

/// Removes the `null`s that indexing into missing fields left behind.
pub(crate) fn strip_nulls(v: &mut Value) {
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
pub(crate) fn config_checksum(obj: &Value) -> String {
    let data = match obj.get("binaryData") {
        Some(b) => json!({"data": obj.get("data").cloned().unwrap_or(json!({})), "binaryData": b}),
        None => obj.get("data").cloned().unwrap_or(json!({})),
    };
    sha256_hex(canonical_json(&data).as_bytes(), 16)
}

pub(crate) fn tracking_disabled(obj: &Value) -> bool {
    obj["metadata"]["annotations"][CONFIG_TRACKING_ANNOTATION]
        .as_str()
        .is_some_and(|v| v.starts_with("disable"))
}

/// Labels or annotations whose key starts with one of `prefixes` (`*` = all).
pub(crate) fn included(map: &Value, prefixes: &[String]) -> Map<String, Value> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !k.contains(TOOLKIT_MARKER)
                        && prefixes
                            .iter()
                            .any(|p| p == "*" || (!p.is_empty() && k.starts_with(p.as_str())))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Annotations copied to a primary at creation: all but Flux's and kubectl's bookkeeping.
pub(crate) fn copied_annotations(map: &Value) -> Map<String, Value> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !k.contains(TOOLKIT_MARKER)
                        && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites label selectors in topology spread constraints and pod anti-affinity whose value is
/// the target's, so the primary's pods spread among themselves.
pub(crate) fn rewrite_spread_selectors(pod: &mut Value, sel: &Selector, target: &str) {
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

/// Reads, config tracking and the `-primary` copy, for one kind of workload.
#[derive(Debug, Clone)]
pub(crate) struct Workloads {
    pub(crate) kube: Kube,
    pub(crate) settings: DeploymentSettings,
    /// Deployments or DaemonSets.
    pub(crate) kind: Kind,
}

/// Sets `fields` of the primary's spec to the target's, removing those the target lacks.
pub(crate) fn copy_fields(primary_spec: &mut Value, target: &Value, fields: &[&str]) {
    for field in fields {
        match target["spec"].get(field) {
            Some(v) if !v.is_null() => primary_spec[*field] = v.clone(),
            _ => {
                if let Some(o) = primary_spec.as_object_mut() {
                    o.remove(*field);
                }
            }
        }
    }
}

/// The last step of Flagger's promotions: the canary's `-primary` of `kind` rewritten by `copy`,
/// with exactly these labels and annotations; `part` names what is copied in the error.
pub(crate) async fn update_primary(
    kube: &Kube,
    kind: Kind,
    c: &Canary,
    part: &str,
    (labels, annotations): (&Map<String, Value>, &Map<String, Value>),
    copy: impl Fn(&mut Value) + Send + Sync,
) -> Result<(), String> {
    let ns = c.namespace();
    let primary = format!("{}-primary", c.target_name());
    let word = kind.kind.to_lowercase();
    let updated = kube
        .modify(kind, ns, &primary, |p| {
            copy(p);
            p["metadata"]["labels"] = Value::Object(labels.clone());
            p["metadata"]["annotations"] = Value::Object(annotations.clone());
            Ok(())
        })
        .await
        .map_err(|e| format!("updating {word} {primary}.{ns} {part} failed: {e}"))?;
    let missing = || {
        format!(
            "{}: {}",
            get_query_error(kind, ns, &primary),
            not_found(kind, &primary)
        )
    };
    updated.map(|_| ()).ok_or_else(missing)
}

/// Flagger's words for a failed read of a workload: `deployment <name>.<ns> get query error`.
fn get_query_error(kind: Kind, ns: &str, name: &str) -> String {
    format!("{} {name}.{ns} get query error", kind.kind.to_lowercase())
}

impl Workloads {
    pub(crate) fn new(kube: Kube, settings: DeploymentSettings, kind: Kind) -> Self {
        Self { kube, settings, kind }
    }

    /// The workload `name`, or Flagger's `deployment <name>.<ns> get query error: …`.
    pub(crate) async fn get(&self, ns: &str, name: &str) -> Result<Value, String> {
        let kind = self.kind;
        self.kube
            .require(kind, ns, name, &get_query_error(kind, ns, name))
            .await
    }

    /// The canary's `-primary`, and its name.
    pub(crate) async fn primary(&self, c: &Canary) -> Result<(String, Value), String> {
        let name = format!("{}-primary", c.target_name());
        let primary = self.get(c.namespace(), &name).await?;
        Ok((name, primary))
    }

    /// The canary's target.
    pub(crate) async fn target(&self, c: &Canary) -> Result<Value, String> {
        self.get(c.namespace(), c.target_name()).await
    }

    /// Flagger's initialization of the `-primary` when it is missing: the `-primary` copies of
    /// the tracked configs, then the primary with the spec `spec` makes from the target's
    /// selector and tracked configs.
    pub(crate) async fn initialize_primary(
        &self,
        c: &Canary,
        target: &Value,
        spec: impl FnOnce(&Selector, &[(ConfigRef, Value)]) -> Value,
    ) -> Result<(), String> {
        let sel = selector_of(target, &self.settings.selector_labels)?;
        if self.primary_exists(c).await? {
            return Ok(());
        }
        let tracked = self.tracked(c, target).await?;
        self.copy_configs(c, &tracked).await?;
        self.create_primary(c, target, &sel, spec(&sel, &tracked)).await
    }

    /// Whether the canary's `-primary` exists yet.
    async fn primary_exists(&self, c: &Canary) -> Result<bool, String> {
        let kind = self.kind;
        let (ns, primary) = (c.namespace(), format!("{}-primary", c.target_name()));
        match self.kube.get(kind, ns, &primary).await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(format!(
                "{}: {}",
                get_query_error(kind, ns, &primary),
                describe(&e)
            )),
        }
    }

    /// Flagger's Promote of a workload: the `-primary` copies of the tracked configs, then on the
    /// primary the target's pod template (with `spread` as in [`Self::primary_template`]), the
    /// spec fields `copy` takes from the target, and the labels and annotations Flagger copies.
    pub(crate) async fn promote(
        &self,
        c: &Canary,
        spread: bool,
        copy: impl Fn(&mut Value, &Value) + Send + Sync,
    ) -> Result<(), String> {
        let target = self.target(c).await?;
        let sel = selector_of(&target, &self.settings.selector_labels)?;
        let tracked = self.tracked(c, &target).await?;
        self.copy_configs(c, &tracked).await?;
        let template = self.primary_template(&target, &sel, &tracked, spread);
        let labels = self.primary_labels(&target, &sel);
        let annotations = included(
            &target["metadata"]["annotations"],
            &self.settings.include_label_prefixes,
        );
        let metadata = (&labels, &annotations);
        update_primary(&self.kube, self.kind, c, "template spec", metadata, |p| {
            p["spec"]["template"] = template.clone();
            copy(&mut p["spec"], &target);
        })
        .await
    }

    /// The tracked ConfigMaps and Secrets of the target (existing, not opted out) with their data.
    pub(crate) async fn tracked(
        &self,
        c: &Canary,
        target: &Value,
    ) -> Result<Vec<(ConfigRef, Value)>, String> {
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
    pub(crate) async fn copy_configs(
        &self,
        c: &Canary,
        tracked: &[(ConfigRef, Value)],
    ) -> Result<(), String> {
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

    /// The primary's pod template: the target's with the selector label rewritten (Flagger's
    /// `makePrimaryLabels`), a fresh `flagger-id` (`makeAnnotations`), Flux's keys dropped,
    /// config references pointing at the `-primary` copies and, for a Deployment (`spread`),
    /// spread and anti-affinity selectors following the primary
    /// (`getPrimaryDeploymentTemplateSpec`; Flagger's DaemonSet controller does not do that).
    pub(crate) fn primary_template(
        &self,
        target: &Value,
        sel: &Selector,
        tracked: &[(ConfigRef, Value)],
        spread: bool,
    ) -> Value {
        let mut template = target["spec"]["template"].clone();
        if !template["metadata"].is_object() {
            template["metadata"] = json!({});
        }
        for field in ["labels", "annotations"] {
            let mut map = template["metadata"][field]
                .as_object()
                .cloned()
                .unwrap_or_default();
            map.retain(|k, _| !k.contains(TOOLKIT_MARKER));
            template["metadata"][field] = Value::Object(map);
        }
        template["metadata"]["labels"][sel.label.as_str()] = Value::from(sel.primary());
        template["metadata"]["annotations"][FLAGGER_ID] = Value::from(uuid::Uuid::new_v4().to_string());
        let refs: BTreeSet<ConfigRef> = tracked.iter().map(|(r, _)| r.clone()).collect();
        if template["spec"].is_object() {
            rewrite_config_refs(&mut template["spec"], &refs);
            if spread {
                let target_name = meta(target, "name").to_string();
                rewrite_spread_selectors(&mut template["spec"], sel, &target_name);
            }
        }
        template
    }

    /// The checksums of the tracked configs (`configmap/<name>` → checksum), if any.
    pub(crate) fn checksums(tracked: &[(ConfigRef, Value)]) -> Option<BTreeMap<String, String>> {
        let configs: BTreeMap<String, String> = tracked
            .iter()
            .map(|(r, obj)| (r.key(), config_checksum(obj)))
            .collect();
        (!configs.is_empty()).then_some(configs)
    }

    /// Creates `<target>-primary` with `spec`, the primary's labels, the target's copied
    /// annotations and the canary as owner; one that exists already is left as it is.
    async fn create_primary(
        &self,
        c: &Canary,
        target: &Value,
        sel: &Selector,
        spec: Value,
    ) -> Result<(), String> {
        let (kind, ns) = (self.kind, c.namespace());
        let name = format!("{}-primary", c.target_name());
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
        match self.kube.create(kind, ns, obj).await {
            Ok(_) => {
                tracing::info!(canary = %c.key(), "{} {name}.{ns} created", kind.kind);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!(
                "creating {} {name}.{ns} failed: {}",
                kind.kind.to_lowercase(),
                describe(&e)
            )),
        }
    }

    /// The primary's own labels: the target's that `-include-label-prefix` admits, and the
    /// selector label.
    pub(crate) fn primary_labels(&self, target: &Value, sel: &Selector) -> Map<String, Value> {
        let mut labels = included(
            &target["metadata"]["labels"],
            &self.settings.include_label_prefixes,
        );
        labels.insert(sel.label.clone(), Value::from(sel.primary()));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
