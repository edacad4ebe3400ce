//! `aviary.v1.Fleet`: the operator API.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aviary_api::FleetRollout;
use aviary_api::document::{Resource, parse_documents};
use aviary_core::fleet::{Command, Plan, RolloutState, Stamp, verbs};
use aviary_proto::v1;
use aviary_proto::v1::fleet_server::Fleet as FleetApi;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::convert::{cluster_canary_to_proto, cluster_to_proto, render, spec_from_proto};
use crate::error::Error;
use crate::fleet::CanaryFilter;
use crate::limits;
use crate::rollouts::Rollouts;
use crate::security::{Auth, Principal, Role};

/// History records in a verb's answer.
const VERB_HISTORY: usize = 20;

/// The Fleet service.
pub(crate) struct FleetService {
    pub(crate) rollouts: Arc<Rollouts>,
    pub(crate) auth: Arc<Auth>,
    /// Open WatchRollout and WaitRollout calls.
    pub(crate) watches: Arc<tokio::sync::Semaphore>,
}

/// One page of `items` (already in their order) after `token` (the key of the previous page's
/// last item), and the token of the next page (empty on the last one).
fn paginate<'a, T>(
    items: &'a [T],
    token: &str,
    asked: u32,
    key: impl Fn(&T) -> String,
) -> Result<(&'a [T], String), Status> {
    let start = if token.is_empty() {
        0
    } else {
        match items.iter().position(|i| key(i) == token) {
            Some(p) => p + 1,
            None => {
                return Err(Status::invalid_argument(
                    "page_token: no longer matches an item (it was removed); list again from the start",
                ));
            }
        }
    };
    let end = (start + limits::page_size(asked)).min(items.len());
    let next = if end < items.len() && end > 0 {
        key(&items[end - 1])
    } else {
        String::new()
    };
    Ok((&items[start..end], next))
}

/// Reads a CreateRollout request: a manifest, or name + spec.
fn rollout_from_request(r: &v1::CreateRolloutRequest) -> Result<FleetRollout, Error> {
    if !r.manifest.trim().is_empty() {
        let docs =
            parse_documents(&r.manifest).map_err(|e| Error::InvalidArgument(format!("manifest: {e}")))?;
        let mut found = Vec::new();
        for d in docs {
            match d {
                Ok(p) => match &p.resource {
                    Resource::FleetRollout(f) => {
                        // Strict, like `kubectl apply --validate=strict`: a misspelt field would
                        // otherwise silently fall back to a default.
                        let report = aviary_api::validate::validate(&p);
                        let unknown: Vec<String> = report
                            .errors()
                            .filter(|d| p.unknown_fields.contains(&d.path))
                            .map(|d| format!("{}: {}", d.path, d.message))
                            .collect();
                        if !unknown.is_empty() {
                            return Err(Error::InvalidArgument(format!(
                                "FleetRollout {}: {}",
                                f.name(),
                                unknown.join("; ")
                            )));
                        }
                        found.push((**f).clone());
                    }
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "manifest: {} is not a FleetRollout (apiVersion aviary.dev/v1alpha1, kind FleetRollout)",
                            p.id
                        )));
                    }
                },
                Err(e) => {
                    return Err(Error::InvalidArgument(format!(
                        "manifest: {}: {}: {}",
                        e.id, e.path, e.message
                    )));
                }
            }
        }
        return match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(Error::InvalidArgument(format!(
                "manifest: expected exactly one FleetRollout, found {n}"
            ))),
        };
    }
    let Some(spec) = &r.spec else {
        return Err(Error::InvalidArgument(
            "spec: required: send a manifest (YAML or JSON) or name + spec".into(),
        ));
    };
    let mut f = FleetRollout::new(&r.name, spec_from_proto(spec));
    f.metadata.name = Some(r.name.clone());
    Ok(f)
}

fn not_found_wave(rec: &crate::store::RolloutRecord, wave: &str) -> Error {
    let names: Vec<&str> = rec.plan.waves.iter().map(|w| w.name.as_str()).collect();
    Error::NotFound(format!(
        "rollout {} has no wave {wave:?}; its waves are {names:?}",
        rec.name
    ))
}

fn not_found_cluster(rec: &crate::store::RolloutRecord, cluster: &str) -> Error {
    Error::NotFound(format!(
        "cluster {cluster:?} is not in the plan of rollout {}; see `aviary rollout get {}`",
        rec.name, rec.name
    ))
}

type RolloutStream = Pin<Box<dyn Stream<Item = Result<v1::Rollout, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FleetApi for FleetService {
    async fn list_clusters(
        &self,
        r: Request<v1::ListClustersRequest>,
    ) -> Result<Response<v1::ListClustersResponse>, Status> {
        self.auth.require(&r, "ListClusters", Role::Viewer)?;
        let clusters = self.rollouts.live_view().await?.list_clusters();
        Ok(Response::new(v1::ListClustersResponse {
            clusters: clusters.iter().map(cluster_to_proto).collect(),
        }))
    }

    async fn deregister_cluster(
        &self,
        r: Request<v1::DeregisterClusterRequest>,
    ) -> Result<Response<v1::DeregisterClusterResponse>, Status> {
        let who = self.auth.require(&r, "DeregisterCluster", Role::Admin)?;
        let q = r.into_inner();
        limits::check_actor(&q.actor, &q.reason).map_err(Status::invalid_argument)?;
        if !aviary_api::validate::is_dns_label(&q.name) {
            return Err(Status::invalid_argument(
                "name: a cluster name is a DNS label (1-63 lowercase letters, digits and '-')",
            ));
        }
        let (actor, comment) = who.actor_and_comment(&q.actor);
        let gone = self.rollouts.forget_cluster(&q.name).await?;
        tracing::info!(
            target: "aviary::audit",
            actor,
            comment,
            reason = %q.reason,
            cluster = %q.name,
            "cluster deregistered"
        );
        Ok(Response::new(v1::DeregisterClusterResponse {
            cluster: Some(cluster_to_proto(&gone)),
        }))
    }

    async fn list_canaries(
        &self,
        r: Request<v1::ListCanariesRequest>,
    ) -> Result<Response<v1::ListCanariesResponse>, Status> {
        self.auth.require(&r, "ListCanaries", Role::Viewer)?;
        let q = r.get_ref();
        let filter = CanaryFilter {
            cluster: &q.cluster,
            region: &q.region,
            namespace: &q.namespace,
            phase: &q.phase,
        };
        let mut canaries = self.rollouts.live_view().await?.list_canaries(filter);
        canaries.sort_by(|a, b| (&a.cluster, &a.report.key).cmp(&(&b.cluster, &b.report.key)));
        let key = |c: &crate::fleet::ClusterCanary| {
            format!("{}/{}/{}", c.cluster, c.report.key.namespace, c.report.key.name)
        };
        let (page, next_page_token) = paginate(&canaries, &q.page_token, q.page_size, key)?;
        Ok(Response::new(v1::ListCanariesResponse {
            canaries: page.iter().map(cluster_canary_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_rollout(
        &self,
        r: Request<v1::CreateRolloutRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "CreateRollout", Role::Admin)?;
        let req = r.into_inner();
        limits::check_actor(&req.actor, "").map_err(Status::invalid_argument)?;
        let rollout = rollout_from_request(&req)?;
        if req.dry_run {
            let planned = self.rollouts.plan(&rollout, &req.actor).await?;
            return Ok(self.rendered(&planned));
        }
        let (actor, comment) = who.actor_and_comment(&req.actor);
        let created = self.rollouts.create(rollout, actor, comment).await?;
        Ok(self.rendered(&created))
    }

    async fn get_rollout(&self, r: Request<v1::GetRolloutRequest>) -> Result<Response<v1::Rollout>, Status> {
        self.auth.require(&r, "GetRollout", Role::Viewer)?;
        let rec = self.rollouts.get(&r.get_ref().name).await?;
        Ok(self.rendered(&rec))
    }

    async fn list_rollouts(
        &self,
        r: Request<v1::ListRolloutsRequest>,
    ) -> Result<Response<v1::ListRolloutsResponse>, Status> {
        self.auth.require(&r, "ListRollouts", Role::Viewer)?;
        let q = r.into_inner();
        let list = self.rollouts.list().await?;
        let (page, next_page_token) = paginate(&list, &q.page_token, q.page_size, |r| r.name.clone())?;
        let unreadable = self.rollouts.unreadable().await?;
        Ok(Response::new(v1::ListRolloutsResponse {
            next_page_token,
            rollouts: page
                .iter()
                .map(|r| render(r, &self.rollouts.fleet, false))
                .collect(),
            unreadable: unreadable
                .into_iter()
                .map(|u| v1::UnreadableRecord {
                    key: u.key,
                    name: u.name,
                    error: u.error,
                })
                .collect(),
        }))
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        r: Request<v1::GetRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        self.auth.require(&r, "WatchRollout", Role::Viewer)?;
        let permit = self.watch_permit()?;
        let (entry, term) = self.rollouts.watchable(&r.get_ref().name).await?;
        let (mut records, mut live) = entry.subscribe();
        let rollouts = self.rollouts.clone();
        let stream = async_stream(move |tx| async move {
            let _permit = permit;
            let mut last: Option<v1::Rollout> = None;
            // A watch shows the leader's view: when the term ends it ends with UNAVAILABLE
            // (and the new leader's address) so the client watches the new leader.
            let ended = rollouts.term_ended(term);
            tokio::pin!(ended);
            loop {
                let rec = records.borrow_and_update().clone();
                live.borrow_and_update();
                let now = render(&rec, &rollouts.fleet, true);
                if last.as_ref() != Some(&now) {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                if rec.state.phase.is_terminal() {
                    return;
                }
                tokio::select! {
                    r = records.changed() => if r.is_err() { return },
                    r = live.changed() => if r.is_err() { return },
                    e = &mut ended => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    _ = rollouts.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                }
                // Coalesce bursts of reports.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Response::new(stream))
    }

    async fn wait_rollout(
        &self,
        r: Request<v1::WaitRolloutRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        self.auth.require(&r, "WaitRollout", Role::Viewer)?;
        let req = r.into_inner();
        let _permit = self.watch_permit()?;
        let (entry, term) = self.rollouts.watchable(&req.name).await?;
        let (mut records, _) = entry.subscribe();
        let ended = self.rollouts.term_ended(term);
        tokio::pin!(ended);
        let wait = async {
            loop {
                let rec = records.borrow_and_update().clone();
                if rec.state.phase.is_terminal() {
                    return Ok(rec);
                }
                tokio::select! {
                    r = records.changed() => if r.is_err() {
                        return Err(Status::unavailable("the coordinator is shutting down; wait again"));
                    },
                    e = &mut ended => return Err(Status::from(e)),
                    _ = self.rollouts.shutdown.cancelled() => {
                        return Err(Status::unavailable("the coordinator is shutting down; wait again"));
                    }
                }
            }
        };
        let rec = if req.timeout_seconds == 0 {
            wait.await?
        } else {
            match tokio::time::timeout(Duration::from_secs(u64::from(req.timeout_seconds)), wait).await {
                Ok(r) => r?,
                Err(_) => {
                    let cur = entry.current();
                    return Err(Error::DeadlineExceeded(format!(
                        "rollout {} is still {} after {}s ({})",
                        req.name,
                        cur.state.phase.as_str(),
                        req.timeout_seconds,
                        cur.state.message
                    ))
                    .into());
                }
            }
        };
        Ok(self.rendered(&rec))
    }

    async fn pause_rollout(
        &self,
        r: Request<v1::RolloutVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "PauseRollout", Role::Operator)?;
        self.rollout_verb(who, r.into_inner(), |p, s, by, reason| {
            verbs::pause(p, s, by, reason).map(|()| Vec::new())
        })
        .await
    }

    async fn resume_rollout(
        &self,
        r: Request<v1::RolloutVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "ResumeRollout", Role::Operator)?;
        self.rollout_verb(who, r.into_inner(), |p, s, by, reason| {
            verbs::resume(p, s, by, reason).map(|()| Vec::new())
        })
        .await
    }

    async fn abort_rollout(
        &self,
        r: Request<v1::RolloutVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "AbortRollout", Role::Admin)?;
        self.rollout_verb(who, r.into_inner(), verbs::abort).await
    }

    async fn approve_wave(&self, r: Request<v1::WaveVerbRequest>) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "ApproveWave", Role::Operator)?;
        let q = r.into_inner();
        limits::check_actor(&q.actor, "").map_err(Status::invalid_argument)?;
        let rec = self.rollouts.get(&q.name).await?;
        if rec.plan.wave_index(&q.wave).is_none() {
            return Err(not_found_wave(&rec, &q.wave).into());
        }
        let (actor, comment) = who.actor_and_comment(&q.actor);
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| {
                let mark = s.history_mark();
                verbs::approve_wave(p, s, &q.wave, &Stamp::by(actor, now))?;
                s.comment_since(mark, comment);
                Ok(Vec::new())
            })
            .await?;
        Ok(self.rendered_verb(&out))
    }

    async fn skip_cluster(
        &self,
        r: Request<v1::ClusterVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "SkipCluster", Role::Operator)?;
        self.cluster_verb(who, r.into_inner(), verbs::skip_cluster).await
    }

    async fn retry_cluster(
        &self,
        r: Request<v1::ClusterVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let who = self.auth.require(&r, "RetryCluster", Role::Operator)?;
        self.cluster_verb(who, r.into_inner(), verbs::retry_cluster).await
    }

    async fn delete_rollout(
        &self,
        r: Request<v1::DeleteRolloutRequest>,
    ) -> Result<Response<v1::DeleteRolloutResponse>, Status> {
        let who = self.auth.require(&r, "DeleteRollout", Role::Admin)?;
        let q = r.into_inner();
        limits::check_actor(&q.actor, &q.reason).map_err(Status::invalid_argument)?;
        let (actor, _) = who.actor_and_comment(&q.actor);
        let wait = match q.timeout_seconds {
            0 => Duration::from_secs(60),
            s => Duration::from_secs(u64::from(s.min(3600))),
        };
        let deleted = self
            .rollouts
            .delete(&q.name, q.force, actor, &q.reason, wait)
            .await?;
        tracing::info!(
            target: "aviary::audit",
            subject = %who.subject,
            actor = %q.actor,
            rollout = %q.name,
            phase = deleted.as_ref().map_or("unreadable", |r| r.state.phase.as_str()),
            force = q.force,
            "rollout deleted"
        );
        Ok(Response::new(v1::DeleteRolloutResponse {
            rollout: deleted.map(|r| render(&r, &self.rollouts.fleet, true)),
        }))
    }
}

impl FleetService {
    /// One of the [`MAX_WATCHES`](limits::MAX_WATCHES) watches this replica serves at once.
    fn watch_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} rollout watches are open on this coordinator, the limit; close some or poll with GetRollout",
                limits::MAX_WATCHES
            ))
        })
    }

    /// A rollout on the wire, with its history and the live values of the fleet view.
    fn rendered(&self, rec: &crate::store::RolloutRecord) -> Response<v1::Rollout> {
        Response::new(render(rec, &self.rollouts.fleet, true))
    }

    /// The answer to a verb: the rollout with the newest [`VERB_HISTORY`] history records
    /// (GetRollout has them all).
    fn rendered_verb(&self, rec: &crate::store::RolloutRecord) -> Response<v1::Rollout> {
        let mut r = render(rec, &self.rollouts.fleet, true);
        let extra = r.history.len().saturating_sub(VERB_HISTORY);
        r.history.drain(..extra);
        Response::new(r)
    }

    /// Pause, resume or abort, by `q.actor` for `q.reason`.
    async fn rollout_verb<F>(
        &self,
        who: Principal,
        q: v1::RolloutVerbRequest,
        verb: F,
    ) -> Result<Response<v1::Rollout>, Status>
    where
        F: FnOnce(&Plan, &mut RolloutState, &Stamp, &str) -> aviary_core::Result<Vec<Command>>,
    {
        limits::check_actor(&q.actor, &q.reason).map_err(Status::invalid_argument)?;
        let (actor, comment) = who.actor_and_comment(&q.actor);
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| {
                let mark = s.history_mark();
                let cmds = verb(p, s, &Stamp::by(actor, now), &q.reason)?;
                s.comment_since(mark, comment);
                Ok(cmds)
            })
            .await?;
        Ok(self.rendered_verb(&out))
    }

    /// Skip or retry: the cluster must be in the rollout's plan (NOT_FOUND otherwise).
    async fn cluster_verb(
        &self,
        who: Principal,
        q: v1::ClusterVerbRequest,
        verb: fn(&Plan, &mut RolloutState, &str, &Stamp) -> aviary_core::Result<()>,
    ) -> Result<Response<v1::Rollout>, Status> {
        limits::check_actor(&q.actor, "").map_err(Status::invalid_argument)?;
        let rec = self.rollouts.get(&q.name).await?;
        if rec.plan.locate(&q.cluster).is_none() {
            return Err(not_found_cluster(&rec, &q.cluster).into());
        }
        let (actor, comment) = who.actor_and_comment(&q.actor);
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| {
                let mark = s.history_mark();
                verb(p, s, &q.cluster, &Stamp::by(actor, now))?;
                s.comment_since(mark, comment);
                Ok(Vec::new())
            })
            .await?;
        Ok(self.rendered_verb(&out))
    }
}

/// A stream fed by a task through a channel (the task ends when the receiver is dropped).
fn async_stream<F, Fut>(f: F) -> RolloutStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<v1::Rollout, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
