//! Leadership behind a trait. The coordinator checks [`Leadership::check`] before every write
//! and passes the returned [`Fence`] to the [`Store`](crate::store::Store), which rejects writes
//! of a deposed leader. State changes are published on a watch channel: the rollout loops stop
//! when leadership is lost and a new leader reloads everything from the store.
//!
//! [`AlwaysLeader`] is the single replica; [`EtcdLeadership`](crate::etcd::EtcdLeadership) is
//! one replica of several, elected on etcd (the election key's create revision is the fence).

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// A fencing token: the leader's term (an etcd election key revision). Stores reject writes
/// with a token lower than one they have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence(pub u64);

/// Where this replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderState {
    /// This replica leads; writes carry `fence`.
    Leader { fence: Fence },
    /// Another replica leads (its advertised address, when known).
    Follower { leader: Option<String> },
}

/// A replica's view of the election.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// The current state and every change.
    fn watch(&self) -> watch::Receiver<LeaderState>;

    /// The fence to write with, or [`Error::NotLeader`] with the leader's address.
    fn check(&self) -> Result<Fence> {
        match &*self.watch().borrow() {
            LeaderState::Leader { fence } => Ok(*fence),
            LeaderState::Follower { leader } => Err(Error::NotLeader {
                leader: leader.clone(),
            }),
        }
    }

    /// Called once when the coordinator serves, with the address it advertises (an election
    /// campaigns from then on, with that address as the leader's value).
    fn start(&self, _advertise: &str) {}

    /// Gives leadership up (on shutdown), so another replica takes over at once.
    async fn resign(&self) {}
}

/// A single replica: always the leader, with fence 1.
pub struct AlwaysLeader {
    tx: watch::Sender<LeaderState>,
}

impl AlwaysLeader {
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(LeaderState::Leader { fence: Fence(1) }),
        }
    }
}

impl Default for AlwaysLeader {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Leadership for AlwaysLeader {
    fn watch(&self) -> watch::Receiver<LeaderState> {
        self.tx.subscribe()
    }
}
