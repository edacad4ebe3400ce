//! The scheduler and kubelet stand-in: one Node (`aviary-test-node`, Ready) is registered; a new
//! pod is bound to it (the `pods/binding` subresource, as the scheduler does) and marked Running
//! and Ready at once with a pod IP (there are no containers); a terminating pod is removed with a
//! zero grace period, as a kubelet does once its containers stopped. The real endpoint
//! controllers skip pods without an existing node, hence the Node.
//!
//! The Node's `not-ready` taint is lifted, as the node lifecycle controller does for a Ready
//! Node. Like the scheduler, it binds only pods the Node fits: `nodeSelector` and required node
//! affinity (the DaemonSet controller pins each of its pods to a node with `matchFields`
//! `metadata.name`); others stay Pending with `PodScheduled=False` (`Unschedulable`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{NEVER_READY_ANNOTATION, now, retry_soon};

struct Ctx {
    client: kube::Client,
    next_ip: AtomicU32,
}

/// The one node every pod runs on.
pub(super) const NODE: &str = "aviary-test-node";
/// Its labels (the kubelet's well-known ones).
const NODE_LABELS: &[(&str, &str)] = &[
    ("kubernetes.io/hostname", NODE),
    ("kubernetes.io/os", "linux"),
    ("kubernetes.io/arch", "amd64"),
];

pub(super) async fn run(client: kube::Client) {
    while let Err(e) = register_node(&client).await {
        tracing::debug!("kubelet stand-in: registering node {NODE}: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        next_ip: AtomicU32::new(0),
    });
    Controller::new(Api::<Pod>::all(client), watcher::Config::default())
        .run(reconcile, retry_soon::<Pod, Ctx>("kubelet"), ctx)
        .for_each(|_| async {})
        .await;
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn never_ready(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NEVER_READY_ANNOTATION))
        .is_some_and(|v| v == "true")
}

async fn register_node(client: &kube::Client) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(NODE.into()),
                labels: Some(
                    NODE_LABELS
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await?;
    }
    let at = now();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "aviary test kubelet stand-in", "lastHeartbeatTime": at, "lastTransitionTime": at}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    // Admission taints a new Node `node.kubernetes.io/not-ready:NoSchedule`; the node lifecycle
    // controller (not run here) lifts it once the Node is Ready. DaemonSet pods do not tolerate it.
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    Ok(())
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    if pod.metadata.deletion_timestamp.is_some() {
        // The containers "stopped": the kubelet's final delete.
        match api.delete(name, &DeleteParams::default().grace_period(0)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        return Ok(Action::await_change());
    }
    if pod.spec.as_ref().is_some_and(|s| s.node_name.is_none()) {
        if !fits(&pod) {
            return mark_unschedulable(&api, &pod, name).await;
        }
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(NODE.into()),
                ..Default::default()
            },
        };
        match api
            .create_subresource::<Binding, Binding>("binding", name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => {}
            // Bound meanwhile (409) or gone (404): the next event says which.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
        return Ok(Action::await_change());
    }
    if never_ready(&pod) || is_ready(&pod) {
        return Ok(Action::await_change());
    }
    let n = ctx.next_ip.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 1);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(running(&pod, &ip)))
        .await?;
    Ok(Action::await_change())
}

/// Whether the Node fits the pod: its `nodeSelector` and required node affinity (any term whose
/// expressions and fields all match), as the scheduler's NodeAffinity filter decides.
fn fits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let label = |k: &str| NODE_LABELS.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| label(k) != Some(v.as_str()))
    {
        return false;
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    else {
        return true;
    };
    let matches = |key: &str, value: Option<&str>, op: &str, values: &[String]| match op {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        other => {
            tracing::debug!("kubelet stand-in: node selector operator {other} on {key} not modelled; no fit");
            false
        }
    };
    required.node_selector_terms.iter().any(|term| {
        term.match_expressions.iter().flatten().all(|e| {
            matches(
                &e.key,
                label(&e.key),
                &e.operator,
                e.values.as_deref().unwrap_or_default(),
            )
        }) && term.match_fields.iter().flatten().all(|f| {
            let value = (f.key == "metadata.name").then_some(NODE);
            matches(
                &f.key,
                value,
                &f.operator,
                f.values.as_deref().unwrap_or_default(),
            )
        })
    })
}

/// Leaves a pod the Node does not fit Pending, saying so as the scheduler does.
async fn mark_unschedulable(api: &Api<Pod>, pod: &Pod, name: &str) -> Result<Action, kube::Error> {
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        });
    if !already {
        let status = json!({"status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
            "lastTransitionTime": now(),
        }]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(Action::await_change())
}

/// The status a kubelet reports for a started pod whose containers are all ready.
fn running(pod: &Pod, ip: &str) -> Value {
    let at = now();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": at});
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": at}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "startTime": at,
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": containers,
    }})
}
