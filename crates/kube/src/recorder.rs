//! The `Recorder` port on Kubernetes: the Canary's status through the status subresource
//! (written before the tick goes on), and core/v1 Events on the Canary (reason `Synced`, source
//! component `aviary`) queued for the `events` writers, which aggregate repeats of the
//! same message by bumping `count` as client-go's event recorder does.

use async_trait::async_trait;
use aviary_api::{Canary, CanaryStatus};
use aviary_core::ports::{EventType, Recorder};
use serde_json::Value;

use crate::client::{CANARY, Kube};
use crate::events::EventWriter;
pub use crate::events::{EVENT_COMPONENT, EVENT_REASON};

/// Writes status and events for canaries.
#[derive(Debug)]
pub struct KubeRecorder {
    kube: Kube,
    events: EventWriter,
}

impl KubeRecorder {
    /// `host` is written as the event source host (the agent's pod name).
    pub fn new(kube: Kube, host: impl Into<String>) -> Self {
        Self {
            events: EventWriter::new(kube.clone(), host.into()),
            kube,
        }
    }

    /// Queues an event on `canary` (also used by the watchers for invalid specs and deletion);
    /// it is written in the background, after the events queued before it for this canary.
    /// Waits only while the queue is full.
    pub async fn emit(&self, canary: &Canary, kind: EventType, message: &str) {
        self.events.record(canary, kind, message).await;
    }

    /// Waits until every event queued before this call is written (or given up): before a
    /// graceful exit, and in tests that read the events back.
    pub async fn flush(&self) {
        self.events.flush().await;
    }

    /// Events dropped because the API server did not keep up with the queue.
    pub fn dropped_events(&self) -> u64 {
        self.events.dropped()
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
        // The engine logs every event itself; this only queues the Kubernetes Event.
        self.emit(canary, kind, message).await;
    }
}
