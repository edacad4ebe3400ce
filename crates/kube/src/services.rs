//! The ClusterIP Services of a Deployment or DaemonSet canary (reference §6.2, Flagger's
//! KubernetesDefaultRouter), created whatever the traffic provider: `<apex>-canary` selects the
//! target's pods, `<apex>-primary` the primary's, and the apex `<apex>` always the primary's (the
//! mesh or gateway does the splitting).

use aviary_api::Canary;
use aviary_api::service::CustomMetadata;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

use crate::client::{DAEMON_SET, DEPLOYMENT, Kube, SERVICE, owned_by, owner_reference};
use crate::deployment::{Selector, selector_of};

/// Containers whose ports are never discovered.
const SIDECARS: &[&str] = &["istio-proxy", "envoy"];

/// Creates and reverts the three ClusterIP Services.
#[derive(Debug, Clone)]
pub struct ClusterIpServices {
    kube: Kube,
    selector_labels: Vec<String>,
}

/// Which of the three Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Apex,
    Primary,
    Canary,
}

impl ClusterIpServices {
    pub fn new(kube: Kube, selector_labels: Vec<String>) -> Self {
        Self {
            kube,
            selector_labels,
        }
    }

    /// The target workload (a Deployment or a DaemonSet) and its selector.
    pub async fn target(&self, c: &Canary) -> Result<(Value, Selector), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let (kind, word) = match c.target_kind() {
            "DaemonSet" => (DAEMON_SET, "daemonset"),
            _ => (DEPLOYMENT, "deployment"),
        };
        let context = format!("{word} {name}.{ns} get query error");
        let d = self.kube.require(kind, ns, name, &context).await?;
        let sel = selector_of(&d, &self.selector_labels)?;
        Ok((d, sel))
    }

    /// Creates or updates `<apex>-canary`, `<apex>-primary` and `<apex>`.
    pub async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let (target, sel) = self.target(c).await?;
        let apex = c.apex_name().to_string();
        let ports = ports(c, &target);
        for (role, name, value) in [
            (Role::Canary, format!("{apex}-canary"), sel.value.clone()),
            (Role::Primary, format!("{apex}-primary"), sel.primary()),
            (Role::Apex, apex.clone(), sel.primary()),
        ] {
            self.reconcile_one(c, role, &name, &sel.label, &value, &ports)
                .await?;
        }
        Ok(())
    }

    async fn reconcile_one(
        &self,
        c: &Canary,
        role: Role,
        name: &str,
        label: &str,
        value: &str,
        ports: &[Value],
    ) -> Result<(), String> {
        let ns = c.namespace();
        let svc = c.spec.service.clone().unwrap_or_default();
        let custom: Option<CustomMetadata> = match role {
            Role::Apex => svc.apex.as_deref().cloned(),
            Role::Primary => svc.primary.as_deref().cloned(),
            Role::Canary => svc.canary.as_deref().cloned(),
        };
        let mut labels: Map<String, Value> = custom
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        labels.insert(label.to_string(), Value::from(name));
        let mut annotations: Map<String, Value> = custom
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.contains("toolkit.fluxcd.io"))
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        crate::routing::add_flux_opt_out(&mut annotations);
        let mut spec = json!({
            "type": "ClusterIP",
            "selector": {label: value},
            "ports": ports,
        });
        if svc.headless == Some(true) {
            spec["clusterIP"] = Value::from("None");
        }
        if let Some(td) = &svc.traffic_distribution {
            spec["trafficDistribution"] = Value::from(td.clone());
        }
        let create = || {
            let metadata = json!({
                "name": name, "namespace": ns, "labels": labels, "annotations": annotations,
                "ownerReferences": [owner_reference(c)],
            });
            Ok(json!({"metadata": metadata, "spec": spec}))
        };
        let unmanaged = svc.unmanaged_metadata.clone().unwrap_or_default();
        let keep_labels = unmanaged.labels.unwrap_or_default();
        let keep_annotations = unmanaged.annotations.unwrap_or_default();
        self.kube
            .upsert(SERVICE, ns, name, create, |cur| {
                let owned = owned_by(cur, c);
                let ports = with_node_ports(&spec["ports"], &cur["spec"]["ports"]);
                if !owned && (cur["spec"]["selector"] != spec["selector"] || cur["spec"]["ports"] != ports) {
                    // Flagger marks a Service it did not create once it changes it.
                    let mut a = cur["metadata"]["annotations"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    crate::routing::add_flux_opt_out(&mut a);
                    cur["metadata"]["annotations"] = Value::Object(a);
                }
                cur["spec"]["selector"] = spec["selector"].clone();
                cur["spec"]["ports"] = ports;
                if owned {
                    for field in ["clusterIP", "trafficDistribution"] {
                        if let Some(v) = spec.get(field) {
                            cur["spec"][field] = v.clone();
                        }
                    }
                    let mut l = labels.clone();
                    let mut a = annotations.clone();
                    for k in &keep_labels {
                        if let Some(v) = cur["metadata"]["labels"].get(k) {
                            l.insert(k.clone(), v.clone());
                        }
                    }
                    for k in &keep_annotations {
                        if let Some(v) = cur["metadata"]["annotations"].get(k) {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                    cur["metadata"]["labels"] = Value::Object(l);
                    cur["metadata"]["annotations"] = Value::Object(a);
                }
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("service {name}.{ns} update error: {e}"))
    }

    /// On deletion: the apex Service selects the target's pods again (or the selector kept by
    /// kubectl when aviary did not create it).
    pub async fn finalize(&self, c: &Canary) -> Result<(), String> {
        let (_, sel) = self.target(c).await?;
        let ns = c.namespace();
        let apex = c.apex_name().to_string();
        self.kube
            .modify(SERVICE, ns, &apex, |cur| {
                let restored = (!owned_by(cur, c))
                    .then(|| {
                        crate::client::annotation(cur, "kubectl.kubernetes.io/last-applied-configuration")
                    })
                    .flatten()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .map(|o| o["spec"]["selector"].clone())
                    .filter(Value::is_object);
                cur["spec"]["selector"] = restored.unwrap_or_else(|| json!({sel.label.as_str(): sel.value}));
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("service {apex}.{ns} revert error: {e}"))
    }
}

/// The service ports: the canary's port, then (with `portDiscovery`) the target's other
/// container ports.
fn ports(c: &Canary, target: &Value) -> Vec<Value> {
    let svc = c.spec.service.clone().unwrap_or_default();
    let port = svc.port.unwrap_or(0);
    let mut main = json!({
        "name": svc.port_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "http".into()),
        "protocol": "TCP",
        "port": port,
        "targetPort": match svc.target_port.clone().unwrap_or(IntOrString::Int(port)) {
            IntOrString::Int(i) => Value::from(i),
            IntOrString::String(s) => Value::from(s),
        },
    });
    if let Some(ap) = &svc.app_protocol {
        main["appProtocol"] = Value::from(ap.clone());
    }
    let mut out = vec![main];
    if svc.port_discovery == Some(true) {
        for container in target["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let cname = container["name"].as_str().unwrap_or_default();
            if SIDECARS.contains(&cname) {
                continue;
            }
            for (i, p) in container["ports"].as_array().into_iter().flatten().enumerate() {
                let Some(cp) = p["containerPort"].as_i64() else {
                    continue;
                };
                if cp == i64::from(port) || out.iter().any(|o| o["port"] == cp) {
                    continue;
                }
                let name = p["name"]
                    .as_str()
                    .map_or_else(|| format!("tcp-{cname}-{i}"), str::to_string);
                out.push(json!({"name": name, "protocol": "TCP", "port": cp, "targetPort": cp}));
            }
        }
    }
    out
}

/// Keeps the nodePorts the cluster assigned to ports of the same number.
fn with_node_ports(desired: &Value, current: &Value) -> Value {
    let mut ports = desired.clone();
    for p in ports.as_array_mut().into_iter().flatten() {
        if let Some(np) = current
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["port"] == p["port"]))
            .and_then(|c| c.get("nodePort"))
        {
            p["nodePort"] = np.clone();
        }
    }
    ports
}
