//! Kubernetes Events on canaries, written off the analysis tick.
//!
//! [`EventWriter::record`] queues an event and returns at once; a few writer tasks write the
//! queue, each owning the canaries whose key hashes to it, so the events of one canary keep
//! their order and a repeat of the same message within ten minutes bumps the `count` of one
//! Event, as client-go's recorder does. An API server that answers slowly must not hold up
//! every canary's analysis (at 1,000 canaries an event a tick is 100 writes a second): the
//! queue absorbs bursts (an agent starting with 1,000 canaries records ~2,000 events in its
//! first second). A full queue makes the caller wait for room, up to [`QUEUE_WAIT`], and only
//! then drops the event with a warning (client-go's broadcaster drops at once).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aviary_api::Canary;
use aviary_core::ports::EventType;
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{CANARY, EVENT, Kube, describe, is_not_found};

/// The reason of every event, as in Flagger.
pub const EVENT_REASON: &str = "Synced";
/// The event source component.
pub const EVENT_COMPONENT: &str = "aviary";
/// Repeats within this window bump the count of the same Event (client-go uses 10 minutes).
const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);
/// Bound of each writer's aggregation cache.
const CACHE_LIMIT: usize = 1024;
/// Writer tasks: events of different canaries are written this many at a time (eight kept
/// up with 1,000 analysing canaries but not with their initialization, when every tick of a
/// canary whose primary is not ready yet warns).
const WRITERS: usize = 32;
/// Events each writer may hold queued: 4,096 in all, a few MB at most (client-go's
/// broadcaster holds 1,000).
const QUEUE: usize = 128;
/// How long a caller waits for room in a full queue before the event is dropped: one default
/// interval, so only an API server that stays that far behind loses events.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// An event waiting to be written: what the tick saw, timed when it was recorded.
struct Pending {
    namespace: String,
    canary: String,
    uid: String,
    resource_version: String,
    kind: EventType,
    message: String,
    at: String,
}

enum Job {
    Write(Pending),
    /// Answered once every event queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Queues canary events and writes them in the background (see the module doc).
#[derive(Debug)]
pub(crate) struct EventWriter {
    kube: Kube,
    host: String,
    /// Started on first use, so a recorder can be built outside a runtime.
    queues: OnceLock<Vec<mpsc::Sender<Job>>>,
    dropped: AtomicU64,
}

/// Now, to the second, as Kubernetes writes event times.
pub(crate) fn now() -> String {
    Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| Timestamp::now().to_string())
}

impl EventWriter {
    pub(crate) fn new(kube: Kube, host: String) -> Self {
        Self {
            kube,
            host,
            queues: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn queues(&self) -> &[mpsc::Sender<Job>] {
        self.queues.get_or_init(|| {
            (0..WRITERS)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    let shard = Shard {
                        kube: self.kube.clone(),
                        host: Arc::from(self.host.as_str()),
                        seen: HashMap::new(),
                        counter: 0,
                    };
                    tokio::spawn(shard.run(rx));
                    tx
                })
                .collect()
        })
    }

    /// Queues an event on `canary`; waits only when the queue is full (see the module doc).
    pub(crate) async fn record(&self, canary: &Canary, kind: EventType, message: &str) {
        let pending = Pending {
            namespace: canary.namespace().to_string(),
            canary: canary.name().to_string(),
            uid: canary.metadata.uid.clone().unwrap_or_default(),
            resource_version: canary.metadata.resource_version.clone().unwrap_or_default(),
            kind,
            message: message.to_string(),
            at: now(),
        };
        let queues = self.queues();
        let queue = &queues[shard_of(&canary.key(), queues.len())];
        let job = match queue.try_send(Job::Write(pending)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(job)) => job,
            Err(mpsc::error::TrySendError::Closed(_)) => return, // the runtime is shutting down
        };
        if queue.send_timeout(job, QUEUE_WAIT).await.is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per hundred drops: an overloaded API server is already noisy enough.
            if n % 100 == 1 {
                tracing::warn!(
                    canary = %canary.key(),
                    dropped = n,
                    "event queue full, event dropped: {message:?} (the API server is not keeping up with event writes)"
                );
            }
        }
    }

    /// Waits until every event recorded before this call is written (or given up).
    pub(crate) async fn flush(&self) {
        for queue in self.queues() {
            let (tx, rx) = oneshot::channel();
            if queue.send(Job::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Events dropped because the queue was full, since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Which writer owns the canary `key`: stable, so one canary's events stay in order.
fn shard_of(key: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

struct Seen {
    name: String,
    count: u64,
    last: Instant,
}

/// One writer task and the Events it wrote recently (for repeats).
struct Shard {
    kube: Kube,
    host: Arc<str>,
    seen: HashMap<(String, EventType, String), Seen>,
    counter: u64,
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Write(p) => self.write(p).await,
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn write(&mut self, p: Pending) {
        let key = (p.uid.clone(), p.kind, p.message.clone());
        let repeat = self
            .seen
            .get(&key)
            .filter(|s| s.last.elapsed() < AGGREGATION_WINDOW)
            .map(|s| (s.name.clone(), s.count + 1));
        if let Some((name, count)) = repeat {
            match self.bump(&p, &name, count).await {
                Ok(()) => {
                    if let Some(s) = self.seen.get_mut(&key) {
                        s.count = count;
                        s.last = Instant::now();
                    }
                    return;
                }
                Err(e) if is_not_found(&e) => {} // expired: start a new one
                Err(e) => {
                    tracing::warn!(canary = %format!("{}/{}", p.namespace, p.canary),
                        "cannot update event {name}: {}", describe(&e));
                    return;
                }
            }
        }
        let name = self.name(&p.canary);
        match self.kube.create(EVENT, &p.namespace, self.event(&p, &name)).await {
            Ok(_) => self.remember(key, name),
            Err(e) => tracing::warn!(canary = %format!("{}/{}", p.namespace, p.canary),
                "cannot record event {:?}: {}", p.message, describe(&e)),
        }
    }

    async fn bump(&self, p: &Pending, name: &str, count: u64) -> Result<(), kube::Error> {
        let patch = json!({"count": count, "lastTimestamp": p.at});
        self.kube
            .api(EVENT, &p.namespace)
            .patch(name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// A unique Event name, as client-go makes them: `<object>.<hex nanoseconds>`.
    fn name(&mut self, canary: &str) -> String {
        let nanos = Timestamp::now().as_nanosecond();
        self.counter += 1;
        format!("{canary}.{nanos:x}{:02x}", self.counter % 256)
    }

    fn event(&self, p: &Pending, name: &str) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "namespace": p.namespace},
            "involvedObject": {
                "apiVersion": CANARY.api_version(),
                "kind": CANARY.kind,
                "name": p.canary,
                "namespace": p.namespace,
                "uid": p.uid,
                "resourceVersion": p.resource_version,
            },
            "reason": EVENT_REASON,
            "message": p.message,
            "type": p.kind.as_str(),
            "source": {"component": EVENT_COMPONENT, "host": &*self.host},
            "firstTimestamp": p.at,
            "lastTimestamp": p.at,
            "count": 1,
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": &*self.host,
        })
    }

    fn remember(&mut self, key: (String, EventType, String), name: String) {
        if self.seen.len() >= CACHE_LIMIT {
            self.seen.retain(|_, s| s.last.elapsed() < AGGREGATION_WINDOW);
            if self.seen.len() >= CACHE_LIMIT {
                self.seen.clear();
            }
        }
        let seen = Seen {
            name,
            count: 1,
            last: Instant::now(),
        };
        self.seen.insert(key, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn a_canary_always_goes_to_the_same_writer_and_canaries_spread_over_them() {
        assert_eq!(shard_of("ns/app-1", 32), shard_of("ns/app-1", 32));
        let mut used = [0usize; 32];
        for i in 0..3200 {
            used[shard_of(&format!("ns/app-{i}"), 32)] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }
}
