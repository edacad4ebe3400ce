//! The core Service target (Flagger's pkg/canary/service_controller.go): a canary of a
//! Kubernetes Service rather than of a workload. Flagger copies the target Service to
//! `<target>-canary` (kept equal to the target on every tick) and `<target>-primary` (created
//! once, then overwritten with the target on promotion); the mesh or gateway router then splits
//! traffic between those two. Nothing is scaled, nothing is awaited (a Service is always ready),
//! and no ClusterIP Services are generated (Flagger's KubernetesNoopRouter for kind `Service`,
//! pkg/router/factory.go:64-69). The revision is the target's `spec`.
//!
//! Deliberate differences, each to keep the copies creatable and owned: every address Kubernetes
//! allocates (`clusterIP`/`clusterIPs` unless headless, `nodePort`, `healthCheckNodePort`) is
//! left to Kubernetes on creation and kept on update (Flagger resets only a ClusterIP Service's
//! `clusterIP`, so a NodePort target's copy is refused as "port already allocated"); the
//! primary keeps its owner reference on promotion (Flagger's copy takes the target's).

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::fingerprint::fingerprint;
use aviary_core::ports::{NotReady, Target, TargetRevision};
use serde_json::{Value, json};

use crate::client::{Kube, SERVICE, describe, owner_reference};
use crate::workload::{included, strip_nulls, update_primary};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Spec fields whose values Kubernetes allocates.
const ALLOCATED: &[&str] = &["clusterIP", "clusterIPs", "healthCheckNodePort"];

/// The Service target.
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    kube: Kube,
    include_label_prefixes: Vec<String>,
}

impl ServiceTarget {
    pub fn new(kube: Kube, include_label_prefixes: Vec<String>) -> Self {
        Self {
            kube,
            include_label_prefixes,
        }
    }

    async fn get(&self, ns: &str, name: &str) -> Result<Option<Value>, String> {
        self.kube
            .get(SERVICE, ns, name)
            .await
            .map_err(|e| format!("service {name}.{ns} get query error: {}", describe(&e)))
    }

    async fn target(&self, c: &Canary) -> Result<Value, String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let context = format!("service {name}.{ns} get query error");
        self.kube.require(SERVICE, ns, name, &context).await
    }

    async fn create(&self, c: &Canary, name: &str, src: &Value) -> Result<(), String> {
        let ns = c.namespace();
        let mut obj = copy_of(c, name, src);
        release_allocations(&mut obj["spec"]);
        match self.kube.create(SERVICE, ns, obj).await {
            Ok(_) => {
                tracing::info!(canary = %c.key(), "Service {name}.{ns} created");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!(
                "creating service {name}.{ns} query error: {}",
                describe(&e)
            )),
        }
    }

    /// `<target>-canary`: created, or made equal to the target (service_controller.go:90-118).
    async fn reconcile_canary(&self, c: &Canary, src: &Value) -> Result<(), String> {
        let ns = c.namespace();
        let name = format!("{}-canary", c.target_name());
        if self.get(ns, &name).await?.is_none() {
            return self.create(c, &name, src).await;
        }
        let desired = copy_of(c, &name, src);
        self.kube
            .modify(SERVICE, ns, &name, |cur| {
                let spec = keep_allocations(&desired["spec"], &cur["spec"]);
                cur["spec"] = spec;
                for field in ["labels", "annotations", "ownerReferences"] {
                    cur["metadata"][field] = desired["metadata"][field].clone();
                }
                strip_nulls(&mut cur["metadata"]);
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("updating service {name}.{ns} failed: {e}"))
    }
}

/// Flagger's `buildService` (service_controller.go:151-174): the source Service under another
/// name, owned by the canary, without kubectl's last-applied annotation, with the canary's
/// `service.trafficDistribution` when set.
fn copy_of(c: &Canary, name: &str, src: &Value) -> Value {
    let mut annotations = src["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.remove(LAST_APPLIED);
    let mut spec = src["spec"].clone();
    let td = crate::routing::service_field(c, |s| s.traffic_distribution.clone());
    if !td.is_empty() {
        spec["trafficDistribution"] = Value::from(td);
    }
    let mut obj = json!({
        "metadata": {
            "name": name,
            "namespace": c.namespace(),
            "labels": src["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [owner_reference(c)],
        },
        "spec": spec,
    });
    strip_nulls(&mut obj["metadata"]);
    obj
}

/// Leaves every allocated address to Kubernetes (a headless Service stays headless).
fn release_allocations(spec: &mut Value) {
    let headless = spec["clusterIP"] == "None";
    if let Some(s) = spec.as_object_mut() {
        for f in ALLOCATED {
            if !(headless && f.starts_with("clusterIP")) {
                s.remove(*f);
            }
        }
    }
    for p in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            p.remove("nodePort");
        }
    }
}

/// `desired` with the addresses `current` was allocated (by port number for node ports).
fn keep_allocations(desired: &Value, current: &Value) -> Value {
    let mut spec = desired.clone();
    release_allocations(&mut spec);
    for f in ALLOCATED {
        if let Some(v) = current.get(*f) {
            spec[*f] = v.clone();
        }
    }
    for p in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(np) = current["ports"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["port"] == p["port"]))
            .and_then(|c| c.get("nodePort"))
        {
            p["nodePort"] = np.clone();
        }
    }
    spec
}

#[async_trait]
impl Target for ServiceTarget {
    /// The target's spec (service_controller.go:225-233).
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        let target = self.target(c).await?;
        Ok(TargetRevision {
            fingerprint: fingerprint(&target["spec"]),
            tracked_configs: None,
            route: None,
        })
    }

    /// service_controller.go:68-88: the canary copy, then the primary copy when missing.
    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        let target = self.target(c).await.map_err(NotReady::retriable)?;
        self.reconcile_canary(c, &target)
            .await
            .map_err(NotReady::retriable)?;
        let ns = c.namespace();
        let primary = format!("{}-primary", c.target_name());
        if self
            .get(ns, &primary)
            .await
            .map_err(NotReady::retriable)?
            .is_none()
        {
            self.create(c, &primary, &target)
                .await
                .map_err(NotReady::retriable)?;
        }
        Ok(())
    }

    /// service_controller.go:257-259.
    async fn primary_ready(&self, _c: &Canary) -> Result<(), NotReady> {
        Ok(())
    }

    /// service_controller.go:261-263.
    async fn canary_ready(&self, _c: &Canary) -> Result<(), NotReady> {
        Ok(())
    }

    /// The target's spec, and the labels and annotations `-include-label-prefix` admits, on
    /// the primary (service_controller.go:176-223).
    async fn promote(&self, c: &Canary) -> Result<(), String> {
        let target = self.target(c).await?;
        let labels = included(&target["metadata"]["labels"], &self.include_label_prefixes);
        let annotations = included(&target["metadata"]["annotations"], &self.include_label_prefixes);
        update_primary(&self.kube, SERVICE, c, "spec", (&labels, &annotations), |cur| {
            cur["spec"] = keep_allocations(&target["spec"], &cur["spec"]);
        })
        .await
    }

    /// service_controller.go:236-238.
    async fn scale_to_zero(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }

    /// service_controller.go:240-242.
    async fn scale_from_zero(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_released_then_kept() {
        let src = json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "x"}});
        let mut created = src.clone();
        release_allocations(&mut created);
        assert_eq!(
            created,
            json!({"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "x"}})
        );
        let current = json!({"clusterIP": "10.96.0.99", "clusterIPs": ["10.96.0.99"], "ports": [{"port": 80, "nodePort": 31000}]});
        let kept = keep_allocations(&src, &current);
        assert_eq!(kept["clusterIP"], "10.96.0.99");
        assert_eq!(kept["ports"][0]["nodePort"], 31000);
        // A headless Service stays headless; an ExternalName one gets no `ports: null`.
        let mut headless = json!({"clusterIP": "None", "clusterIPs": ["None"]});
        release_allocations(&mut headless);
        assert_eq!(headless, json!({"clusterIP": "None", "clusterIPs": ["None"]}));
        let external = json!({"type": "ExternalName", "externalName": "podinfo.example.com"});
        assert_eq!(keep_allocations(&external, &json!({})), external);
    }
}
