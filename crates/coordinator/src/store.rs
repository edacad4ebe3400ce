//! Durable fleet state behind a trait: rollouts (spec, pinned plan, state) and cluster
//! registrations. Agents' status is *not* stored: it is re-observable (agents send a full
//! snapshot on every connect).
//!
//! Every write carries the leader's [`Fence`] and, for rollouts, the revision of the record it
//! replaces. [`EtcdStore`](crate::etcd::EtcdStore) does each write as one transaction:
//! `If(election key's revision == fence, record's mod_revision == expected) Then(put)`, so a
//! deposed leader or a stale read can never overwrite newer state. [`MemoryStore`] keeps the
//! same contract in memory (single replica, tests, `aviary demo`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aviary_api::FleetRolloutSpec;
use aviary_core::fleet::{Plan, RolloutState};
use jiff::Timestamp;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::leader::Fence;

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub name: String,
    /// The spec as submitted.
    pub spec: FleetRolloutSpec,
    pub plan: Plan,
    pub state: RolloutState,
}

/// A registered cluster (what its agent said in Hello).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub registered: Timestamp,
}

/// A value with the store revision it was read at (0 = never written).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// A stored record that cannot be decoded (written by hand, by another version, or damaged).
/// It is quarantined: skipped when the state is loaded, logged, and reported by ListRollouts,
/// so one bad key cannot keep every leader from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Where it is stored (the etcd key).
    pub key: String,
    /// The rollout or cluster name (the last segment of the key).
    pub name: String,
    /// Why it cannot be read.
    pub error: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored record {} cannot be read ({}); it is skipped: inspect it (etcdctl get {}) and \
             delete it (etcdctl del {}) or restore it from a backup",
            self.key, self.error, self.key, self.key
        )
    }
}

/// What a listing found: the records that decode and the ones that do not.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub records: Vec<T>,
    pub unreadable: Vec<Unreadable>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}

/// The largest record the coordinator writes (etcd refuses requests over 1.5 MiB by default).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Encodes a record as JSON and checks that it can be stored: at most [`MAX_RECORD_BYTES`],
/// and it decodes back (a value that would be written but never read again is refused here,
/// before it reaches the store).
pub(crate) fn encode_checked<T>(what: &str, value: &T) -> Result<Vec<u8>>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::Unstorable(format!("{what}: cannot encode: {e}")))?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Error::Unstorable(format!(
            "{what}: the record is {} bytes, over the limit of {MAX_RECORD_BYTES}",
            bytes.len()
        )));
    }
    if let Err(e) = serde_json::from_slice::<T>(&bytes) {
        return Err(Error::Unstorable(format!(
            "{what}: the encoded record would not decode ({e})"
        )));
    }
    Ok(bytes)
}

/// Where fleet state lives.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every rollout that decodes, and the ones that do not.
    async fn list_rollouts(&self) -> Result<Listing<Versioned<RolloutRecord>>>;
    /// One rollout ([`Error::Unreadable`] if it does not decode).
    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>>;
    /// Creates a rollout if the fence holds and no rollout has that name
    /// ([`Error::AlreadyExists`] otherwise). Returns the record's revision.
    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64>;
    /// Replaces a rollout if the fence holds and its stored revision is `expected`
    /// ([`Error::Fenced`] / [`Error::Conflict`] otherwise). Returns the new revision.
    async fn update_rollout(&self, fence: Fence, record: &RolloutRecord, expected: u64) -> Result<u64>;
    /// Removes a rollout if the fence holds and, when `expected` is given, its stored revision
    /// is `expected` ([`Error::Fenced`] / [`Error::Conflict`] otherwise; absent is a conflict
    /// with revision 0). `None` removes whatever is stored (an unreadable record).
    async fn delete_rollout(&self, fence: Fence, name: &str, expected: Option<u64>) -> Result<()>;
    /// Every registered cluster that decodes, and the ones that do not.
    async fn list_clusters(&self) -> Result<Listing<ClusterRecord>>;
    /// Registers or updates a cluster if the fence holds.
    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()>;
    /// Removes a cluster's registration if the fence holds (absent is not an error).
    async fn delete_cluster(&self, fence: Fence, name: &str) -> Result<()>;
}

#[derive(Default)]
struct Memory {
    revision: u64,
    /// The highest fencing token seen: a lower one is a deposed leader.
    fence: u64,
    rollouts: BTreeMap<String, Versioned<RolloutRecord>>,
    clusters: BTreeMap<String, ClusterRecord>,
}

impl Memory {
    /// Stores `record` at the next revision; that revision.
    fn put_rollout(&mut self, record: &RolloutRecord) -> u64 {
        self.revision += 1;
        self.rollouts.insert(
            record.name.clone(),
            Versioned {
                value: record.clone(),
                revision: self.revision,
            },
        );
        self.revision
    }

    fn check_fence(&mut self, fence: Fence) -> Result<()> {
        if fence.0 < self.fence {
            return Err(Error::Fenced { token: fence.0 });
        }
        self.fence = fence.0;
        Ok(())
    }
}

/// The in-memory store: one process, nothing survives a restart.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn list_rollouts(&self) -> Result<Listing<Versioned<RolloutRecord>>> {
        Ok(Listing {
            records: self.inner.lock().rollouts.values().cloned().collect(),
            unreadable: Vec::new(),
        })
    }

    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>> {
        Ok(self.inner.lock().rollouts.get(name).cloned())
    }

    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64> {
        encode_checked(&format!("create rollout {}", record.name), record)?;
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        if m.rollouts.contains_key(&record.name) {
            return Err(Error::AlreadyExists(format!(
                "rollout {} already exists; pick another metadata.name",
                record.name
            )));
        }
        Ok(m.put_rollout(record))
    }

    async fn update_rollout(&self, fence: Fence, record: &RolloutRecord, expected: u64) -> Result<u64> {
        encode_checked(&format!("update rollout {}", record.name), record)?;
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        let actual = m.rollouts.get(&record.name).map_or(0, |v| v.revision);
        if actual != expected {
            return Err(Error::Conflict {
                name: record.name.clone(),
                expected,
                actual,
            });
        }
        Ok(m.put_rollout(record))
    }

    async fn delete_rollout(&self, fence: Fence, name: &str, expected: Option<u64>) -> Result<()> {
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        let actual = m.rollouts.get(name).map_or(0, |v| v.revision);
        if let Some(expected) = expected
            && actual != expected
        {
            return Err(Error::Conflict {
                name: name.to_string(),
                expected,
                actual,
            });
        }
        m.revision += 1;
        m.rollouts.remove(name);
        Ok(())
    }

    async fn list_clusters(&self) -> Result<Listing<ClusterRecord>> {
        Ok(Listing {
            records: self.inner.lock().clusters.values().cloned().collect(),
            unreadable: Vec::new(),
        })
    }

    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()> {
        encode_checked(&format!("register cluster {}", record.name), record)?;
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        m.revision += 1;
        m.clusters.insert(record.name.clone(), record.clone());
        Ok(())
    }

    async fn delete_cluster(&self, fence: Fence, name: &str) -> Result<()> {
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        m.revision += 1;
        m.clusters.remove(name);
        Ok(())
    }
}
