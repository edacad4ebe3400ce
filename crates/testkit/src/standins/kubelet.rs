//! The kubelet stand-in: pods become Running and Ready at once (there are no nodes, no
//! scheduler and no containers). Unbound pods are deleted at once by the API server itself, so
//! terminating needs nothing here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{NEVER_READY_ANNOTATION, now, retry_soon};

struct Ctx {
    client: kube::Client,
    next_ip: AtomicU32,
}

pub(super) async fn run(client: kube::Client) {
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

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if pod.metadata.deletion_timestamp.is_some() || never_ready(&pod) || is_ready(&pod) {
        return Ok(Action::await_change());
    }
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let n = ctx.next_ip.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 1);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(running(&pod, &ip)))
        .await?;
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
