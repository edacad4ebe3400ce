//! The agent's supervisor: one [`CanaryActor`] per canary, registered as
//! `<prefix>/<namespace>/<name>` (the registry refuses a second one), updated when the spec
//! changes, stopped when the canary is deleted, and restarted after a panic from the status the
//! platform persisted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use aviary_api::{Canary, CanaryStatus};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use crate::canary::{CanaryActor, CanaryArgs, CanaryMsg};
use crate::platform::{Platform, Settings};

/// Messages of the [`CanarySupervisor`].
pub enum SupervisorMsg {
    /// Create the canary's actor, or hand it a changed spec.
    Apply(Box<Canary>),
    /// The canary was deleted: stop its actor.
    Remove { namespace: String, name: String },
    /// Every canary with its latest status (and actors that could not be kept running).
    List(RpcReplyPort<Vec<CanaryView>>),
    /// From a canary actor: its status after a tick.
    Observed { key: String, status: Arc<CanaryStatus> },
}

/// One canary as the supervisor sees it.
#[derive(Debug, Clone)]
pub struct CanaryView {
    pub canary: Canary,
    /// Set when the actor failed and was not restarted (restart budget spent).
    pub failure: Option<String>,
    /// How many times the actor was restarted.
    pub restarts: usize,
}

/// Start arguments of the [`CanarySupervisor`].
pub struct SupervisorArgs {
    pub platform: Arc<dyn Platform>,
    pub settings: Arc<Settings>,
}

/// The supervisor actor.
pub struct CanarySupervisor;

struct Entry {
    /// The spec (shared with the actor; `status` is always `None` here).
    spec: Arc<Canary>,
    status: Option<Arc<CanaryStatus>>,
    actor: Option<ActorRef<CanaryMsg>>,
    restarts: VecDeque<Instant>,
    total_restarts: usize,
    failure: Option<String>,
}

/// The supervisor's state.
pub struct SupervisorState {
    platform: Arc<dyn Platform>,
    settings: Arc<Settings>,
    entries: BTreeMap<String, Entry>,
    by_actor: HashMap<ActorId, String>,
}

impl SupervisorState {
    fn actor_name(&self, key: &str) -> String {
        format!("{}/{key}", self.settings.name_prefix)
    }

    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, key: &str) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let mut canary = (*entry.spec).clone();
        canary.status = entry.status.as_deref().cloned();
        if let Some(status) = self.platform.load_status(&canary).await {
            canary.status = Some(status);
        }
        let args = CanaryArgs {
            ports: self.platform.ports(&canary),
            canary,
            settings: self.settings.clone(),
            supervisor: Some(myself.clone()),
        };
        let name = self.actor_name(key);
        match Actor::spawn_linked(Some(name.clone()), CanaryActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), key.to_string());
                if let Some(e) = self.entries.get_mut(key) {
                    e.actor = Some(actor);
                    e.failure = None;
                }
            }
            Err(err) => {
                tracing::error!(canary = key, "cannot start the actor {name}: {err}");
                if let Some(e) = self.entries.get_mut(key) {
                    e.failure = Some(format!("cannot start the actor: {err}"));
                }
            }
        }
    }
}

impl Actor for CanarySupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            platform: args.platform,
            settings: args.settings,
            entries: BTreeMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Apply(canary) => {
                let key = canary.key();
                match state.entries.get_mut(&key) {
                    Some(entry) => {
                        let changed = entry.spec.spec != canary.spec
                            || entry.spec.metadata.labels != canary.metadata.labels
                            || entry.spec.metadata.annotations != canary.metadata.annotations;
                        if !changed {
                            return Ok(());
                        }
                        let mut spec = *canary;
                        spec.status = None;
                        entry.spec = Arc::new(spec);
                        match &entry.actor {
                            Some(actor) => {
                                let ports = state.platform.ports(&entry.spec);
                                actor.cast(CanaryMsg::Update(entry.spec.clone(), ports))?;
                            }
                            None => {
                                // a failed canary gets a fresh start when its spec changes
                                entry.restarts.clear();
                                state.spawn(&myself, &key).await;
                            }
                        }
                    }
                    None => {
                        let mut spec = *canary;
                        let status = spec.status.take().map(Arc::new);
                        state.entries.insert(
                            key.clone(),
                            Entry {
                                spec: Arc::new(spec),
                                status,
                                actor: None,
                                restarts: VecDeque::new(),
                                total_restarts: 0,
                                failure: None,
                            },
                        );
                        state.spawn(&myself, &key).await;
                    }
                }
            }
            SupervisorMsg::Remove { namespace, name } => {
                let key = format!("{namespace}/{name}");
                if let Some(entry) = state.entries.remove(&key)
                    && let Some(actor) = entry.actor
                {
                    state.by_actor.remove(&actor.get_id());
                    actor.stop(Some("canary deleted".into()));
                }
            }
            SupervisorMsg::List(reply) => {
                let views = state
                    .entries
                    .values()
                    .map(|e| {
                        let mut canary = (*e.spec).clone();
                        canary.status = e.status.as_deref().cloned();
                        CanaryView {
                            canary,
                            failure: e.failure.clone(),
                            restarts: e.total_restarts,
                        }
                    })
                    .collect();
                let _ = reply.send(views);
            }
            SupervisorMsg::Observed { key, status } => {
                if let Some(entry) = state.entries.get_mut(&key) {
                    entry.status = Some(status);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(key) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(canary = %key, "canary actor failed: {err}; restarting from the persisted status");
                restart(myself, state, &key, format!("{err}")).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                terminated(state, &cell, reason);
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for entry in state.entries.values() {
            if let Some(actor) = &entry.actor {
                actor.stop(Some("agent stopping".into()));
            }
        }
        Ok(())
    }
}

async fn restart(myself: ActorRef<SupervisorMsg>, state: &mut SupervisorState, key: &str, why: String) {
    let (max, window) = (state.settings.max_restarts, state.settings.restart_window);
    let Some(entry) = state.entries.get_mut(key) else {
        return;
    };
    entry.actor = None;
    let now = Instant::now();
    while entry
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        entry.restarts.pop_front();
    }
    if entry.restarts.len() as u32 >= max {
        tracing::error!(
            canary = key,
            "canary actor failed {max} times within {window:?}; not restarting it until its spec changes"
        );
        entry.failure = Some(format!(
            "actor failed {max} times within {}s, last: {why}",
            window.as_secs()
        ));
        return;
    }
    entry.restarts.push_back(now);
    entry.total_restarts += 1;
    state.spawn(&myself, key).await;
}

fn terminated(state: &mut SupervisorState, cell: &ActorCell, reason: Option<String>) {
    if let Some(key) = state.by_actor.remove(&cell.get_id()) {
        tracing::debug!(canary = %key, "canary actor stopped: {}", reason.unwrap_or_default());
        if let Some(e) = state.entries.get_mut(&key) {
            e.actor = None;
        }
    }
}
