//! Test-side stand-ins for the controllers a test control plane lacks, each a kube-runtime
//! controller with the admin identity against the real API server:
//!
//! - `kubelet`: there are no nodes; pods of ReplicaSets are marked Running/Ready like a kubelet
//!   would (phase, pod IP, conditions, container statuses), so the real Deployment, ReplicaSet
//!   and endpoint controllers see available replicas. Pods annotated
//!   [`NEVER_READY_ANNOTATION`] stay Pending.
//! - `knative`: Knative Serving's controller, reduced to what Flagger reads: a Revision per
//!   Service template, Ready (unless annotated never-ready), and the Service's status (latest
//!   created/ready revision, `status.traffic` resolved from `spec.traffic`, conditions).
//! - `gateway`: a Gateway API implementation's status writer: every `parentRefs` entry of an
//!   HTTPRoute gets `Accepted` and `ResolvedRefs` at the route's generation. It can be paused
//!   per namespace ([`StandIns::pause_gateway`]) to show a route no gateway has accepted.
//!
//! No traffic flows anywhere: there are no pods to run, no Knative data plane and no mesh.

mod gateway;
mod knative;
mod kubelet;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use tokio::sync::broadcast;

/// On a pod (through its Deployment's pod template), a Knative Service or a Revision: never
/// becomes ready.
pub const NEVER_READY_ANNOTATION: &str = "testkit.aviary.dev/never-ready";

/// `controllerName` in the HTTPRoute parent statuses the gateway stand-in writes.
pub const GATEWAY_CONTROLLER_NAME: &str = "testkit.aviary.dev/gateway-controller";

/// Handles to the running stand-ins.
#[derive(Clone, Default)]
pub struct StandIns {
    paused_gateway: Arc<Mutex<HashSet<String>>>,
    resync: Option<broadcast::Sender<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StandIns {
    /// Spawns the three stand-ins on the current runtime; they stop with it.
    pub(crate) fn spawn(client: kube::Client) -> Self {
        let (tx, _) = broadcast::channel(16);
        let me = Self {
            paused_gateway: Default::default(),
            resync: Some(tx),
        };
        tokio::spawn(kubelet::run(client.clone()));
        tokio::spawn(knative::run(client.clone()));
        tokio::spawn(gateway::run(client, me.clone()));
        me
    }

    /// Stops accepting HTTPRoutes in `ns` (their status is left as it is).
    pub fn pause_gateway(&self, ns: &str) {
        lock(&self.paused_gateway).insert(ns.to_string());
    }

    /// Accepts HTTPRoutes in `ns` again, reconciling the existing ones.
    pub fn resume_gateway(&self, ns: &str) {
        lock(&self.paused_gateway).remove(ns);
        if let Some(tx) = &self.resync {
            let _ = tx.send(());
        }
    }

    pub(crate) fn gateway_paused(&self, ns: &str) -> bool {
        lock(&self.paused_gateway).contains(ns)
    }

    /// A stream that yields whenever the stand-ins should reconcile everything.
    pub(crate) fn resyncs(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let rx = self.resync.as_ref().map(|tx| tx.subscribe());
        futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(()) => return Some(((), Some(rx))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

/// Now as an RFC 3339 timestamp (seconds), as Kubernetes writes them.
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// A condition that keeps its `lastTransitionTime` while its status does not change (so
/// reconciling is idempotent).
pub(crate) fn condition(
    prev_status: &serde_json::Value,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> serde_json::Value {
    let old = prev_status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let transition = old
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map_or_else(now, str::to_string);
    let mut c = serde_json::json!({"type": type_, "status": status, "lastTransitionTime": transition});
    if !reason.is_empty() {
        c["reason"] = reason.into();
    }
    if !message.is_empty() {
        c["message"] = message.into();
    }
    c
}

/// Logs a stand-in's failed reconcile and retries it soon.
pub(crate) fn retry_soon<K, C>(
    name: &'static str,
) -> impl Fn(Arc<K>, &kube::Error, Arc<C>) -> kube::runtime::controller::Action {
    move |_, e, _| {
        tracing::debug!("{name} stand-in: {e}");
        kube::runtime::controller::Action::requeue(std::time::Duration::from_millis(500))
    }
}
