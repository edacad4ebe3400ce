//! Recording one side of one scenario as the API server shows it: a watch per kind in the
//! scenario's namespace (every version of the Canary and of every object a router or target
//! controller writes, in the order the server delivered them), and the driver's view of the
//! latest Canary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::scenario::Until;
use aviary_testkit::Objects;

/// The Canary's API version and kind.
pub const CANARY: (&str, &str) = ("flagger.app/v1beta1", "Canary");

/// The kinds recorded besides Canaries: whatever the routers and target controllers of the
/// scenarios write (kinds whose CRD is not installed are skipped).
pub const RECORDED: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("serving.knative.dev/v1", "Service"),
];

/// One version of one object, as delivered by a watch (`object: None` = deleted).
#[derive(Debug, Clone)]
pub struct Observed {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub object: Option<Value>,
}

/// The watches of one side of one scenario.
pub struct Recording {
    seen: Arc<Mutex<Vec<Observed>>>,
    canary: watch::Receiver<Option<Value>>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recording {
    /// Starts watching namespace `ns` (the Canary named `canary` feeds the driver).
    pub async fn start(objects: &Objects, ns: &str, canary: &str) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        for (av, kind) in std::iter::once(&CANARY).chain(RECORDED) {
            let api = objects.api(av, kind, Some(ns)).await?;
            let seen = seen.clone();
            let (av, kind) = (av.to_string(), kind.to_string());
            let feed = (kind == CANARY.1 && av == CANARY.0).then(|| (tx.clone(), canary.to_string()));
            let stream = watcher(api, watcher::Config::default());
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (obj, deleted) = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                        Ok(watcher::Event::Delete(o)) => (o, true),
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::debug!("watching {kind}: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                    if let Some((tx, canary)) = &feed
                        && *canary == name
                    {
                        tx.send_replace((!deleted).then(|| value.clone()));
                    }
                    lock(&seen).push(Observed {
                        api_version: av.clone(),
                        kind: kind.clone(),
                        name,
                        object: (!deleted).then_some(value),
                    });
                }
            }));
        }
        Ok(Self {
            seen,
            canary: rx,
            tasks,
        })
    }

    /// Waits until the canary is in state `until`, at most `timeout`; the error says what the
    /// canary showed last.
    pub async fn wait(&mut self, until: &Until, timeout: Duration) -> std::result::Result<(), String> {
        let found = tokio::time::timeout(
            timeout,
            self.canary
                .wait_for(|c| c.as_ref().is_some_and(|c| until.holds(c))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        match found {
            true => Ok(()),
            false => {
                let last = self.canary.borrow().clone();
                let status = last
                    .map(|c| {
                        let s = &c["status"];
                        format!(
                            "phase {}, weight {}, failedChecks {}, iterations {}",
                            s["phase"], s["canaryWeight"], s["failedChecks"], s["iterations"]
                        )
                    })
                    .unwrap_or_else(|| "no canary".into());
                Err(format!(
                    "did not reach {until} within {timeout:?} (last: {status})"
                ))
            }
        }
    }

    /// Stops watching and returns everything seen, in order.
    pub fn stop(self) -> Vec<Observed> {
        for t in &self.tasks {
            t.abort();
        }
        lock(&self.seen).clone()
    }
}
