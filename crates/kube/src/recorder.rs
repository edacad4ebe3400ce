//! The `Recorder` port on Kubernetes: the Canary's status through the status subresource, and
//! core/v1 Events on the Canary (reason `Synced`, source component `aviary`), with repeats of
//! the same message aggregated by bumping `count` as client-go's event recorder does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryStatus};
use aviary_core::ports::{EventType, Recorder};
use jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{CANARY, EVENT, Kube, describe, is_not_found};

/// The reason of every event, as in Flagger.
pub const EVENT_REASON: &str = "Synced";
/// The event source component.
pub const EVENT_COMPONENT: &str = "aviary";
/// Repeats within this window bump the count of the same Event (client-go uses 10 minutes).
const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);
/// Bound of the aggregation cache.
const CACHE_LIMIT: usize = 4096;

struct Seen {
    name: String,
    count: u64,
    last: Instant,
}

/// Writes status and events for canaries.
pub struct KubeRecorder {
    kube: Kube,
    host: String,
    seen: Mutex<HashMap<(String, String, String), Seen>>,
    counter: AtomicU64,
}

impl std::fmt::Debug for KubeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRecorder")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Now, to the second, as Kubernetes writes event times.
fn now() -> String {
    Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| Timestamp::now().to_string())
}

impl KubeRecorder {
    /// `host` is written as the event source host (the agent's pod name).
    pub fn new(kube: Kube, host: impl Into<String>) -> Self {
        Self {
            kube,
            host: host.into(),
            seen: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Emits an event on `canary` (also used by the watchers for invalid specs and deletion).
    pub async fn emit(&self, canary: &Canary, kind: EventType, message: &str) {
        let ns = canary.namespace().to_string();
        let key = (
            canary.metadata.uid.clone().unwrap_or_else(|| canary.key()),
            kind.as_str().to_string(),
            message.to_string(),
        );
        let repeat = {
            let seen = self.seen.lock();
            seen.get(&key)
                .filter(|s| s.last.elapsed() < AGGREGATION_WINDOW)
                .map(|s| (s.name.clone(), s.count + 1))
        };
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": now()});
            let api = self.kube.api(EVENT, &ns);
            match api
                .patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Some(s) = self.seen.lock().get_mut(&key) {
                        s.count = count;
                        s.last = Instant::now();
                    }
                    return;
                }
                Err(e) if is_not_found(&e) => {} // expired: start a new one
                Err(e) => {
                    tracing::warn!(canary = %canary.key(), "cannot update event {name}: {}", describe(&e));
                    return;
                }
            }
        }
        let nanos = Timestamp::now().as_nanosecond();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{:x}{:02x}", canary.name(), nanos, n % 256);
        let t = now();
        let event = json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": CANARY.api_version(),
                "kind": CANARY.kind,
                "name": canary.name(),
                "namespace": ns,
                "uid": canary.metadata.uid.clone().unwrap_or_default(),
                "resourceVersion": canary.metadata.resource_version.clone().unwrap_or_default(),
            },
            "reason": EVENT_REASON,
            "message": message,
            "type": kind.as_str(),
            "source": {"component": EVENT_COMPONENT, "host": self.host},
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.host,
        });
        match self.kube.create(EVENT, &ns, event).await {
            Ok(_) => {
                let mut seen = self.seen.lock();
                if seen.len() >= CACHE_LIMIT {
                    seen.retain(|_, s| s.last.elapsed() < AGGREGATION_WINDOW);
                    if seen.len() >= CACHE_LIMIT {
                        seen.clear();
                    }
                }
                seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        last: Instant::now(),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(canary = %canary.key(), "cannot record event {message:?}: {}", describe(&e))
            }
        }
    }

    /// Writes `status` through the status subresource.
    pub async fn write_status(&self, canary: &Canary, status: &Value) -> Result<(), String> {
        match self
            .kube
            .write_status(CANARY, canary.namespace(), canary.name(), status)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "canary {}.{} not found",
                canary.name(),
                canary.namespace()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[async_trait]
impl Recorder for KubeRecorder {
    async fn status(&self, canary: &Canary, status: &CanaryStatus) -> Result<(), String> {
        let value = serde_json::to_value(status).map_err(|e| e.to_string())?;
        self.write_status(canary, &value).await
    }

    async fn event(&self, canary: &Canary, kind: EventType, message: &str) {
        // The engine logs every event itself; this only writes the Kubernetes Event.
        self.emit(canary, kind, message).await;
    }
}
