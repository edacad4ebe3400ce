//! `aviary.v1.Fleet`: the operator API.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aviary_api::FleetRollout;
use aviary_api::document::{Resource, parse_documents};
use aviary_core::fleet::{Command, Plan, RolloutState, verbs};
use aviary_proto::v1;
use aviary_proto::v1::fleet_server::Fleet as FleetApi;
use futures::Stream;
use jiff::Timestamp;
use tonic::{Request, Response, Status};

use crate::convert::{cluster_canary_to_proto, cluster_to_proto, render, spec_from_proto};
use crate::error::Error;
use crate::fleet::CanaryFilter;
use crate::rollouts::Rollouts;

/// The Fleet service.
pub(crate) struct FleetService {
    pub(crate) rollouts: Arc<Rollouts>,
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
        _r: Request<v1::ListClustersRequest>,
    ) -> Result<Response<v1::ListClustersResponse>, Status> {
        let clusters = self.rollouts.live_view().await?.list_clusters();
        Ok(Response::new(v1::ListClustersResponse {
            clusters: clusters.iter().map(cluster_to_proto).collect(),
        }))
    }

    async fn list_canaries(
        &self,
        r: Request<v1::ListCanariesRequest>,
    ) -> Result<Response<v1::ListCanariesResponse>, Status> {
        let q = r.get_ref();
        let filter = CanaryFilter {
            cluster: &q.cluster,
            region: &q.region,
            namespace: &q.namespace,
            phase: &q.phase,
        };
        let canaries = self.rollouts.live_view().await?.list_canaries(filter);
        Ok(Response::new(v1::ListCanariesResponse {
            canaries: canaries.iter().map(cluster_canary_to_proto).collect(),
        }))
    }

    async fn create_rollout(
        &self,
        r: Request<v1::CreateRolloutRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let req = r.into_inner();
        let rollout = rollout_from_request(&req)?;
        if req.dry_run {
            let planned = self.rollouts.plan(&rollout, &req.actor).await?;
            return Ok(self.rendered(&planned));
        }
        let created = self.rollouts.create(rollout, &req.actor).await?;
        Ok(self.rendered(&created))
    }

    async fn get_rollout(&self, r: Request<v1::GetRolloutRequest>) -> Result<Response<v1::Rollout>, Status> {
        let rec = self.rollouts.get(&r.get_ref().name).await?;
        Ok(self.rendered(&rec))
    }

    async fn list_rollouts(
        &self,
        _r: Request<v1::ListRolloutsRequest>,
    ) -> Result<Response<v1::ListRolloutsResponse>, Status> {
        let list = self.rollouts.list().await?;
        Ok(Response::new(v1::ListRolloutsResponse {
            rollouts: list
                .iter()
                .map(|r| render(r, &self.rollouts.fleet, false))
                .collect(),
        }))
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        r: Request<v1::GetRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let (entry, term) = self.rollouts.watchable(&r.get_ref().name).await?;
        let (mut records, mut live) = entry.subscribe();
        let rollouts = self.rollouts.clone();
        let stream = async_stream(move |tx| async move {
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
        let req = r.into_inner();
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
        self.rollout_verb(r.into_inner(), |p, s, actor, reason, now| {
            verbs::pause(p, s, actor, reason, now).map(|()| Vec::new())
        })
        .await
    }

    async fn resume_rollout(
        &self,
        r: Request<v1::RolloutVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        self.rollout_verb(r.into_inner(), |p, s, actor, reason, now| {
            verbs::resume(p, s, actor, reason, now).map(|()| Vec::new())
        })
        .await
    }

    async fn abort_rollout(
        &self,
        r: Request<v1::RolloutVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        self.rollout_verb(r.into_inner(), verbs::abort).await
    }

    async fn approve_wave(&self, r: Request<v1::WaveVerbRequest>) -> Result<Response<v1::Rollout>, Status> {
        let q = r.into_inner();
        let rec = self.rollouts.get(&q.name).await?;
        if rec.plan.wave_index(&q.wave).is_none() {
            return Err(not_found_wave(&rec, &q.wave).into());
        }
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| {
                verbs::approve_wave(p, s, &q.wave, &q.actor, now).map(|()| Vec::new())
            })
            .await?;
        Ok(self.rendered(&out))
    }

    async fn skip_cluster(
        &self,
        r: Request<v1::ClusterVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        self.cluster_verb(r.into_inner(), verbs::skip_cluster).await
    }

    async fn retry_cluster(
        &self,
        r: Request<v1::ClusterVerbRequest>,
    ) -> Result<Response<v1::Rollout>, Status> {
        self.cluster_verb(r.into_inner(), verbs::retry_cluster).await
    }
}

impl FleetService {
    /// A rollout on the wire, with its history and the live values of the fleet view.
    fn rendered(&self, rec: &crate::store::RolloutRecord) -> Response<v1::Rollout> {
        Response::new(render(rec, &self.rollouts.fleet, true))
    }

    /// Pause, resume or abort, by `q.actor` for `q.reason`.
    async fn rollout_verb<F>(
        &self,
        q: v1::RolloutVerbRequest,
        verb: F,
    ) -> Result<Response<v1::Rollout>, Status>
    where
        F: FnOnce(&Plan, &mut RolloutState, &str, &str, Timestamp) -> aviary_core::Result<Vec<Command>>,
    {
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| verb(p, s, &q.actor, &q.reason, now))
            .await?;
        Ok(self.rendered(&out))
    }

    /// Skip or retry: the cluster must be in the rollout's plan (NOT_FOUND otherwise).
    async fn cluster_verb(
        &self,
        q: v1::ClusterVerbRequest,
        verb: fn(&Plan, &mut RolloutState, &str, &str, Timestamp) -> aviary_core::Result<()>,
    ) -> Result<Response<v1::Rollout>, Status> {
        let rec = self.rollouts.get(&q.name).await?;
        if rec.plan.locate(&q.cluster).is_none() {
            return Err(not_found_cluster(&rec, &q.cluster).into());
        }
        let out = self
            .rollouts
            .verb(&q.name, |p, s, now| {
                verb(p, s, &q.cluster, &q.actor, now).map(|()| Vec::new())
            })
            .await?;
        Ok(self.rendered(&out))
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
