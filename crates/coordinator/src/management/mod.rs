//! The management-cluster adapter: FleetRollout objects in one namespace of a Kubernetes API
//! server are rollouts of this coordinator, so GitOps tools (Flux, Argo CD) can keep releases in
//! Git. Thin: the rollouts themselves are the same as over gRPC (`rollouts`, aviary-core).
//!
//! - An object becomes a rollout of the same name (created once; rollouts are immutable, so a
//!   later spec change is reported, not applied). A spec the coordinator refuses is `Rejected`;
//!   one whose canary has another active rollout is `Queued` and starts after it.
//! - `.status` carries the phase, `clusters` (`done/planned`), every wave and cluster, and the
//!   conditions Accepted, Ready, Succeeded, Reconciling and Stalled ([`status`]).
//! - Verbs as annotations: `aviary.dev/pause`, `aviary.dev/resume`, `aviary.dev/abort` (the
//!   value is the reason), `aviary.dev/approve` (wave names), `aviary.dev/skip` and
//!   `aviary.dev/retry` (cluster names), comma-separated; the actor is
//!   `aviary.dev/actor` (default `kubernetes`). Each is applied once, then removed; the
//!   outcome is `.status.lastVerb`.
//! - Deleting an object aborts its active rollout (rolling back per its failure policy)
//!   through the finalizer `aviary.dev/abort-on-delete`, which stays until the rollback ended;
//!   then the rollout is deleted too, so the name can be used again for a fresh rollout.
//! - Only the leader acts; followers requeue.

mod status;

use std::sync::Arc;
use std::time::Duration;

use aviary_api::FleetRollout;
use aviary_api::fleet::FleetRolloutStatus;
use aviary_core::fleet::{Stamp, verbs};
use futures::StreamExt as _;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::rollouts::Rollouts;
use crate::store::RolloutRecord;
use status::Refusal;

/// The finalizer through which deleting an object aborts its rollout.
pub const FINALIZER: &str = "aviary.dev/abort-on-delete";
/// Who acts for verbs given as annotations, unless `aviary.dev/actor` says.
const ACTOR: &str = "kubernetes";
const ACTOR_ANNOTATION: &str = "aviary.dev/actor";
/// Verb annotations, in the order they are applied.
const VERBS: [&str; 6] = [
    "aviary.dev/approve",
    "aviary.dev/skip",
    "aviary.dev/retry",
    "aviary.dev/pause",
    "aviary.dev/resume",
    "aviary.dev/abort",
];
/// How often an active rollout's status is refreshed (live weights, phases).
const REFRESH: Duration = Duration::from_secs(1);

/// Where the FleetRollout objects are.
#[derive(Clone, derive_more::Debug)]
pub struct ManagementCluster {
    #[debug(skip)]
    pub client: Client,
    pub namespace: String,
}

struct Ctx {
    rollouts: Arc<Rollouts>,
    api: Api<FleetRollout>,
}

/// Watches the namespace's FleetRollouts until `shutdown`.
pub(crate) async fn run(rollouts: Arc<Rollouts>, cluster: ManagementCluster, shutdown: CancellationToken) {
    let api: Api<FleetRollout> = Api::namespaced(cluster.client, &cluster.namespace);
    let ctx = Arc::new(Ctx {
        rollouts,
        api: api.clone(),
    });
    tracing::info!(namespace = %cluster.namespace, "watching FleetRollouts");
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "FleetRollout reconcile");
            }
        })
        .await;
}

fn error_policy(obj: Arc<FleetRollout>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(fleetrollout = %obj.name_any(), error = %e, "cannot reconcile; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(obj: Arc<FleetRollout>, ctx: Arc<Ctx>) -> Result<Action> {
    // Followers leave the objects to the leader.
    if ctx.rollouts.ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if obj.metadata.deletion_timestamp.is_some() {
        return ctx.deleted(&obj).await;
    }
    ctx.ensure_finalizer(&obj).await?;
    let name = obj.name_any();
    let record = match ctx.rollout_for(&obj).await? {
        Ok(record) => record,
        Err(refusal) => {
            let queued = matches!(refusal, Refusal::Queued(_));
            ctx.write_status(&obj, status::refused(&refusal, obj.metadata.generation))
                .await?;
            // A queued rollout starts once the other ends; a rejected one waits for an edit.
            return Ok(if queued {
                Action::requeue(Duration::from_secs(2))
            } else {
                Action::await_change()
            });
        }
    };
    let verb = ctx.verbs(&obj).await?;
    let record = if verb.is_some() {
        ctx.rollouts.get(&name).await?
    } else {
        record
    };
    let live = ctx.rollouts.fleet.live_for(&record.plan);
    let mut next = status::of_rollout(&record.plan, &record.state, &live, obj.metadata.generation);
    next.last_verb = verb;
    if record.spec != obj.spec {
        let note = "; the spec changed after the rollout was created: rollouts are immutable, so \
                    this status describes the pinned plan (create a new FleetRollout for the new spec)";
        next.message = Some(format!("{}{note}", next.message.unwrap_or_default()));
    }
    ctx.write_status(&obj, next).await?;
    Ok(if record.state.phase.is_terminal() {
        Action::await_change()
    } else {
        Action::requeue(REFRESH)
    })
}

impl Ctx {
    /// The object's rollout, created from it if there is none yet; or why there is none.
    async fn rollout_for(
        &self,
        obj: &FleetRollout,
    ) -> Result<std::result::Result<Arc<RolloutRecord>, Refusal>> {
        let name = obj.name_any();
        match self.rollouts.get(&name).await {
            Ok(r) => return Ok(Ok(r)),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let rollout = FleetRollout {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: obj.spec.clone(),
            status: None,
        };
        let actor = actor(obj);
        match self.rollouts.create(rollout, &actor, "").await {
            Ok(r) => {
                tracing::info!(fleetrollout = %name, %actor, "rollout created from the FleetRollout object");
                Ok(Ok(r))
            }
            Err(Error::InvalidArgument(m) | Error::AlreadyExists(m)) => Ok(Err(Refusal::Rejected(m))),
            Err(Error::FailedPrecondition(m)) => Ok(Err(Refusal::Queued(m))),
            Err(e) => Err(e),
        }
    }

    /// Applies the verb annotations (then removes them); what happened, if any was given.
    async fn verbs(&self, obj: &FleetRollout) -> Result<Option<String>> {
        let annotations = obj.annotations();
        let given: Vec<(&str, String)> = VERBS
            .iter()
            .filter_map(|k| annotations.get(*k).map(|v| (*k, v.clone())))
            .collect();
        if given.is_empty() {
            return Ok(None);
        }
        let name = obj.name_any();
        let actor = actor(obj);
        let mut outcomes = Vec::new();
        for (key, value) in &given {
            let verb = key.trim_start_matches("aviary.dev/");
            let result = self.verb(&name, verb, value, &actor).await;
            outcomes.push(match result {
                Ok(()) => format!("{verb} {value} by {actor}: done").replace("  ", " "),
                Err(e) => format!("{verb} {value} by {actor}: refused: {e}").replace("  ", " "),
            });
        }
        let removed: serde_json::Map<String, Value> = given
            .iter()
            .map(|(k, _)| ((*k).to_string(), Value::Null))
            .collect();
        self.merge_metadata(&name, json!({"annotations": removed}))
            .await?;
        let outcome = outcomes.join("; ");
        tracing::info!(fleetrollout = %name, "{outcome}");
        Ok(Some(outcome))
    }

    async fn verb(&self, name: &str, verb: &str, value: &str, actor: &str) -> Result<()> {
        let list = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match verb {
            "pause" => {
                self.rollouts
                    .verb(name, |p, s, now| {
                        verbs::pause(p, s, &Stamp::by(actor, now), value).map(|()| Vec::new())
                    })
                    .await?;
            }
            "resume" => {
                self.rollouts
                    .verb(name, |p, s, now| {
                        verbs::resume(p, s, &Stamp::by(actor, now), value).map(|()| Vec::new())
                    })
                    .await?;
            }
            "abort" => {
                self.rollouts
                    .verb(name, |p, s, now| {
                        verbs::abort(p, s, &Stamp::by(actor, now), value)
                    })
                    .await?;
            }
            "approve" => {
                for wave in list() {
                    self.rollouts
                        .verb(name, |p, s, now| {
                            verbs::approve_wave(p, s, wave, &Stamp::by(actor, now)).map(|()| Vec::new())
                        })
                        .await?;
                }
            }
            "skip" | "retry" => {
                let f = if verb == "skip" {
                    verbs::skip_cluster
                } else {
                    verbs::retry_cluster
                };
                for cluster in list() {
                    let rec = self.rollouts.get(name).await?;
                    if rec.plan.locate(cluster).is_none() {
                        return Err(Error::NotFound(format!(
                            "rollout {name} has no cluster {cluster:?}"
                        )));
                    }
                    self.rollouts
                        .verb(name, |p, s, now| {
                            f(p, s, cluster, &Stamp::by(actor, now)).map(|()| Vec::new())
                        })
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A deleted object: abort its rollout if active (rolling back per its policy) and keep
    /// the object (Terminating, its status following the rollback) until the rollback ended;
    /// then delete the rollout, so an object created later under the same name is a fresh
    /// rollout, and let the object go.
    async fn deleted(&self, obj: &FleetRollout) -> Result<Action> {
        let name = obj.name_any();
        let actor = actor(obj);
        // A Rejected object never had a rollout: one of that name (created over gRPC with
        // another spec) is not its to abort or delete.
        let rejected = obj
            .status
            .as_ref()
            .is_some_and(|s| s.phase.as_deref() == Some("Rejected"));
        let found = if rejected {
            Err(Error::NotFound(String::new()))
        } else {
            self.rollouts.get(&name).await
        };
        match found {
            Ok(rec) if !rec.state.phase.is_terminal() => {
                if rec.state.phase != aviary_core::fleet::RolloutPhase::RollingBack {
                    self.rollouts
                        .verb(&name, |p, s, now| {
                            verbs::abort(
                                p,
                                s,
                                &Stamp::by(&actor, now),
                                "the FleetRollout object was deleted",
                            )
                        })
                        .await?;
                    tracing::info!(fleetrollout = %name, "object deleted: rollout aborted; deleted once the rollback ends");
                }
                let rec = self.rollouts.get(&name).await?;
                let live = self.rollouts.fleet.live_for(&rec.plan);
                let next = status::of_rollout(&rec.plan, &rec.state, &live, obj.metadata.generation);
                self.write_status(obj, next).await?;
                return Ok(Action::requeue(REFRESH));
            }
            Ok(rec) => {
                self.rollouts
                    .delete(&name, false, &actor, "", Duration::ZERO)
                    .await?;
                tracing::info!(target: "aviary::audit", fleetrollout = %name, %actor, phase = rec.state.phase.as_str(), "rollout deleted with its FleetRollout object");
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if obj.finalizers().iter().any(|f| f == FINALIZER) {
            let rest: Vec<&String> = obj.finalizers().iter().filter(|f| *f != FINALIZER).collect();
            self.merge_metadata(&name, json!({"finalizers": rest})).await?;
        }
        Ok(Action::await_change())
    }

    async fn ensure_finalizer(&self, obj: &FleetRollout) -> Result<()> {
        if obj.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let mut all = obj.finalizers().to_vec();
        all.push(FINALIZER.to_string());
        self.merge_metadata(&obj.name_any(), json!({"finalizers": all}))
            .await
    }

    /// Merges `metadata` (annotations, finalizers) into the metadata of the object `name`.
    async fn merge_metadata(&self, name: &str, metadata: Value) -> Result<()> {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": metadata })),
            )
            .await
            .map_err(kube_error)?;
        Ok(())
    }

    /// Writes `.status` when it differs (condition transition times carried over).
    async fn write_status(&self, obj: &FleetRollout, next: FleetRolloutStatus) -> Result<()> {
        let next = status::carry_transitions(obj.status.as_ref(), next, jiff::Timestamp::now());
        if obj.status.as_ref() == Some(&next) {
            return Ok(());
        }
        self.api
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": next})),
            )
            .await
            .map_err(kube_error)?;
        Ok(())
    }
}

fn actor(obj: &FleetRollout) -> String {
    obj.annotations()
        .get(ACTOR_ANNOTATION)
        .filter(|a| !a.is_empty())
        .cloned()
        .unwrap_or_else(|| ACTOR.to_string())
}

fn kube_error(e: kube::Error) -> Error {
    Error::Kube(e.to_string())
}
