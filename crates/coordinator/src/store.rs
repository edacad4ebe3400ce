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

/// Where fleet state lives.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every rollout.
    async fn list_rollouts(&self) -> Result<Vec<Versioned<RolloutRecord>>>;
    /// One rollout.
    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>>;
    /// Creates a rollout if the fence holds and no rollout has that name
    /// ([`Error::AlreadyExists`] otherwise). Returns the record's revision.
    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64>;
    /// Replaces a rollout if the fence holds and its stored revision is `expected`
    /// ([`Error::Fenced`] / [`Error::Conflict`] otherwise). Returns the new revision.
    async fn update_rollout(&self, fence: Fence, record: &RolloutRecord, expected: u64) -> Result<u64>;
    /// Every registered cluster.
    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>>;
    /// Registers or updates a cluster if the fence holds.
    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()>;
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
    async fn list_rollouts(&self) -> Result<Vec<Versioned<RolloutRecord>>> {
        Ok(self.inner.lock().rollouts.values().cloned().collect())
    }

    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>> {
        Ok(self.inner.lock().rollouts.get(name).cloned())
    }

    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64> {
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

    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>> {
        Ok(self.inner.lock().clusters.values().cloned().collect())
    }

    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()> {
        let mut m = self.inner.lock();
        m.check_fence(fence)?;
        m.revision += 1;
        m.clusters.insert(record.name.clone(), record.clone());
        Ok(())
    }
}
