//! aviary's actor runtime on ractor: one actor per canary, supervised.
//!
//! - [`canary`]: `CanaryActor`, which owns one canary's timer, ports and last status and runs
//!   one engine tick per timer event.
//! - [`supervisor`]: `CanarySupervisor`, one per agent: spawns, updates, stops and restarts the
//!   canary actors.
//! - [`platform`]: what a platform provides (ports per canary, persisted status) and the
//!   agent-wide settings.
//! - [`CanaryActors`]: a handle to a running supervisor and its canary actors (one per agent).
//! - `error`: the crate's [`Error`].

pub mod canary;
mod error;
pub mod platform;
pub mod supervisor;

use std::sync::Arc;

use aviary_api::Canary;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

pub use error::{Error, Result};
pub use platform::{CanaryPorts, Clock, Platform, Settings, TickReport};
pub use supervisor::{CanaryView, SupervisorMsg};

/// A running supervisor and its canaries.
pub struct CanaryActors {
    supervisor: ActorRef<SupervisorMsg>,
    handle: JoinHandle<()>,
}

impl CanaryActors {
    /// Starts a supervisor for `platform`.
    pub async fn start(platform: Arc<dyn Platform>, settings: Settings) -> Result<Self> {
        let args = supervisor::SupervisorArgs {
            platform,
            settings: Arc::new(settings),
        };
        let (supervisor, handle) = Actor::spawn(None, supervisor::CanarySupervisor, args)
            .await
            .map_err(|e| Error::Spawn(e.to_string()))?;
        Ok(Self { supervisor, handle })
    }

    /// Creates or updates a canary.
    pub fn apply(&self, canary: Canary) -> Result<()> {
        self.supervisor
            .cast(SupervisorMsg::Apply(Box::new(canary)))
            .map_err(|e| Error::Gone(e.to_string()))
    }

    /// Stops a deleted canary's actor.
    pub fn remove(&self, namespace: &str, name: &str) -> Result<()> {
        self.supervisor
            .cast(SupervisorMsg::Remove {
                namespace: namespace.into(),
                name: name.into(),
            })
            .map_err(|e| Error::Gone(e.to_string()))
    }

    /// Every canary with its latest status.
    pub async fn list(&self) -> Result<Vec<CanaryView>> {
        ractor::call!(self.supervisor, SupervisorMsg::List).map_err(|e| Error::Gone(e.to_string()))
    }

    /// The supervisor's actor reference.
    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.supervisor
    }

    /// Stops every canary actor and the supervisor, and waits for them.
    pub async fn stop(self) {
        self.supervisor.stop(Some("agent stopping".into()));
        let _ = self.handle.await;
    }
}
