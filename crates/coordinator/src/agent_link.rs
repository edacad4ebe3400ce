//! `aviary.v1.AgentLink`: one bidirectional stream per agent.
//!
//! The first message must be Hello: it (re)registers the cluster, replaces the snapshot of its
//! canaries, and makes the coordinator re-send every command the cluster's current state implies
//! (same ids: agents treat repeats as no-ops). A newer stream of the same cluster replaces the
//! older one. Status updates only touch the in-memory fleet view. Both sides send heartbeats; a
//! stream silent for 3 heartbeat periods is closed and the cluster marked disconnected.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aviary_core::fleet::{CanaryKey, Command, GateAsk, Plan, Revision};
use aviary_proto::v1;
use aviary_proto::v1::agent_link_server::AgentLink;
use aviary_proto::v1::agent_message::Msg as In;
use aviary_proto::v1::coordinator_message::Msg as Out;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{command_message, report_from_proto};
use crate::fleet::{CanaryReport, Fleet};
use crate::limits;
use crate::rollouts::{CommandSink, Rollouts};
use crate::store::{ClusterRecord, Store};

/// Messages queued for one agent; a full queue closes the stream (the agent reconnects and
/// gets everything again).
const QUEUE: usize = 1024;

type Outbound = mpsc::Sender<Result<v1::CoordinatorMessage, Status>>;

struct Session {
    id: u64,
    tx: Outbound,
    cancel: CancellationToken,
}

/// The connected agents.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    next: AtomicU64,
}

impl Sessions {
    /// Registers a stream for `cluster`, closing the previous one. Returns its id.
    fn open(&self, cluster: &str, tx: Outbound, cancel: CancellationToken) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(old) = self
            .map
            .lock()
            .insert(cluster.to_string(), Session { id, tx, cancel })
        {
            old.cancel.cancel();
        }
        id
    }

    /// Removes the session if it is still `id`. True if it was.
    fn close(&self, cluster: &str, id: u64) -> bool {
        let mut map = self.map.lock();
        if map.get(cluster).is_some_and(|s| s.id == id) {
            map.remove(cluster);
            return true;
        }
        false
    }

    /// Queues a message for the cluster's agent. False if it is not connected.
    fn queue(&self, cluster: &str, msg: v1::CoordinatorMessage) -> bool {
        let mut map = self.map.lock();
        let Some(s) = map.get(cluster) else { return false };
        match s.tx.try_send(Ok(msg)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(cluster, "agent does not keep up (queue full); closing its stream");
                s.cancel.cancel();
                map.remove(cluster);
                false
            }
        }
    }

    /// How many streams are open.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Closes every stream (shutdown).
    pub(crate) fn close_all(&self) {
        for (_, s) in self.map.lock().drain() {
            s.cancel.cancel();
        }
    }
}

impl CommandSink for Sessions {
    fn send(&self, plan: &Plan, command: &Command) -> bool {
        self.queue(command.cluster(), command_message(plan, command))
    }
}

/// The AgentLink service.
pub(crate) struct AgentLinkService {
    pub(crate) rollouts: Arc<Rollouts>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) heartbeat: Duration,
    pub(crate) advertise: String,
    pub(crate) auth: Arc<crate::security::Auth>,
}

/// A checked Hello's registration and canaries (the Hello's snapshots are checked with it).
pub(crate) fn registration(hello: v1::Hello, now: jiff::Timestamp) -> (ClusterRecord, Vec<CanaryReport>) {
    let record = ClusterRecord {
        name: hello.cluster,
        region: hello.region,
        labels: hello.labels,
        agent_version: hello.agent_version,
        registered: now,
    };
    let canaries = hello
        .canaries
        .into_iter()
        .map(|c| report_from_proto(limits::trim_snapshot(c)))
        .collect();
    (record, canaries)
}

/// One canary snapshot from an agent, checked and converted (its message cut).
pub(crate) fn checked_report(s: v1::CanarySnapshot) -> Result<CanaryReport, limits::Refusal> {
    limits::check_snapshot("canary", &s)?;
    Ok(report_from_proto(limits::trim_snapshot(s)))
}

fn heartbeat_msg(now: jiff::Timestamp) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        msg: Some(Out::Heartbeat(v1::Heartbeat {
            time: Some(aviary_proto::ts::from_jiff(now)),
        })),
    }
}

/// The tonic handler (the service lives in an `Arc` shared with the stream readers).
pub(crate) struct AgentLinkHandler(pub(crate) Arc<AgentLinkService>);

#[tonic::async_trait]
impl AgentLink for AgentLinkHandler {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send + 'static>>;

    async fn connect(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let this = &self.0;
        // With TLS the stream belongs to the cluster its certificate names.
        let who = this.auth.principal(&request)?;
        // Agents follow the leader like the CLI does; a new leader first loads its state, so
        // the re-sent commands and gate answers of this session come from the stored rollouts.
        let fence = this.rollouts.ready().await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(this.heartbeat * 3, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 3 heartbeat periods"))??;
        let Some(v1::AgentMessage {
            msg: Some(In::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on AgentLink.Connect must be Hello",
            ));
        };
        limits::check_hello(&hello).map_err(Status::invalid_argument)?;
        if this.auth.is_secure() && who.cluster.as_deref() != Some(hello.cluster.as_str()) {
            tracing::warn!(target: "aviary::audit", subject = %who.subject, hello = %hello.cluster, "AgentLink refused: Hello names another cluster than the certificate");
            return Err(Status::permission_denied(format!(
                "{} may not connect as cluster {}: an agent's certificate names its cluster (spiffe://<trust-domain>/cluster/<name>)",
                who.subject, hello.cluster
            )));
        }
        let cluster = hello.cluster.clone();
        let region = hello.region.clone();
        let now = this.rollouts.clock.now();
        let (tx, rx) = mpsc::channel(QUEUE);
        let cancel = this.rollouts.shutdown.child_token();
        let session = this.sessions.open(&cluster, tx.clone(), cancel.clone());
        let (record, canaries) = registration(hello, now);
        let previous = this.fleet.hello(record.clone(), session, canaries, now);
        let changed = previous.is_none_or(|p| {
            (p.region, p.labels, p.agent_version)
                != (
                    record.region.clone(),
                    record.labels.clone(),
                    record.agent_version.clone(),
                )
        });
        if changed && let Err(e) = this.store.put_cluster(fence, &record).await {
            tracing::warn!(cluster, error = %e, "cannot store the cluster registration");
        }
        tracing::info!(cluster, region = %region, session, "agent connected");
        let welcome = v1::CoordinatorMessage {
            msg: Some(Out::Welcome(v1::Welcome {
                coordinator: this.advertise.clone(),
                heartbeat_seconds: this.heartbeat.as_secs().max(1) as u32,
            })),
        };
        let _ = tx.try_send(Ok(welcome));
        this.rollouts.on_agent(&cluster, true);

        let svc = this.clone();
        tokio::spawn(async move {
            svc.read(cluster, session, inbound, tx, cancel).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl AgentLinkService {
    /// One canary snapshot from `cluster`'s agent: checked, then into the fleet view. A
    /// snapshot that breaks a limit is dropped and logged (the agent's next one may pass).
    fn report(&self, cluster: &str, s: v1::CanarySnapshot, now: jiff::Timestamp) {
        let report = match checked_report(s) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(cluster, error = %why, "canary report refused");
                return;
            }
        };
        let key = report.key.clone();
        if let Err(why) = self.fleet.update(cluster, report, now) {
            tracing::warn!(cluster, error = %why, "canary report refused");
            return;
        }
        self.rollouts.on_report(cluster, &key);
    }

    /// Reads one agent's stream until it ends, goes silent, or is replaced.
    async fn read(
        self: Arc<Self>,
        cluster: String,
        session: u64,
        mut inbound: Streaming<v1::AgentMessage>,
        tx: Outbound,
        cancel: CancellationToken,
    ) {
        let silence = self.heartbeat * 3;
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.tick().await;
        let mut deadline = tokio::time::Instant::now() + silence;
        let reason = loop {
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        deadline = tokio::time::Instant::now() + silence;
                        self.handle(&cluster, m, &tx).await;
                    }
                    Ok(None) => break "stream closed by the agent".to_string(),
                    Err(s) => break format!("stream error: {}", s.message()),
                },
                _ = beat.tick() => {
                    let _ = tx.try_send(Ok(heartbeat_msg(self.rollouts.clock.now())));
                }
                _ = tokio::time::sleep_until(deadline) => break format!("silent for {silence:?}"),
                _ = cancel.cancelled() => break "replaced or shut down".to_string(),
            }
        };
        drop(tx);
        let owned = self.sessions.close(&cluster, session);
        if self.fleet.disconnected(&cluster, session) {
            tracing::info!(cluster, session, reason, "agent disconnected");
            self.rollouts.on_agent(&cluster, false);
        } else if owned {
            tracing::debug!(cluster, session, "session ended");
        }
    }

    async fn handle(&self, cluster: &str, m: v1::AgentMessage, tx: &Outbound) {
        let now = self.rollouts.clock.now();
        match m.msg {
            Some(In::Status(u)) => {
                for s in u.canary.into_iter().chain(u.canaries) {
                    self.report(cluster, s, now);
                }
            }
            Some(In::Event(e)) => {
                self.fleet.seen(cluster, now);
                tracing::debug!(
                    cluster,
                    canary = ?format!("{}/{}", limits::cut(&e.namespace, 64), limits::cut(&e.name, 253)),
                    reason = ?limits::cut(&e.reason, 256),
                    message = ?limits::cut(&e.message, limits::MAX_MESSAGE),
                    "agent event"
                );
            }
            Some(In::GateRequest(g)) => {
                if let Err(why) = limits::check_gate_request(&g) {
                    tracing::warn!(cluster, error = %why, "gate request refused");
                    return;
                }
                let key = CanaryKey::new(g.namespace.clone(), g.name.clone());
                let ask = GateAsk {
                    fingerprint: g.fingerprint.clone(),
                    revision: g.revision.as_ref().map(Revision::from).unwrap_or_default(),
                };
                let answer = self.rollouts.gate(cluster, &key, &ask);
                self.fleet.gate_request(cluster, key.clone(), ask);
                let _ = tx.try_send(Ok(v1::CoordinatorMessage {
                    msg: Some(Out::GateDecision(v1::GateDecision {
                        rollout: answer.rollout.unwrap_or_default(),
                        namespace: g.namespace,
                        name: g.name,
                        fingerprint: g.fingerprint,
                        open: answer.open,
                        reason: answer.reason,
                    })),
                }));
                self.rollouts.on_report(cluster, &key);
            }
            Some(In::Ack(a)) => {
                if let Some(s) = a.canary.clone() {
                    self.report(cluster, s, now);
                }
                if a.command_id.len() > limits::MAX_SHORT {
                    tracing::warn!(cluster, "ack with an oversized command id ignored");
                    return;
                }
                // Command ids are ROLLOUT/CLUSTER/ATTEMPT[/…]: an agent acks its own only.
                if a.command_id.split('/').nth(1) != Some(cluster) {
                    tracing::warn!(target: "aviary::audit", cluster, command = ?a.command_id, "ack refused: the command is for another cluster");
                    return;
                }
                let message = limits::cut(&a.message, limits::MAX_MESSAGE);
                let a = v1::Ack { message, ..a };
                if !a.ok {
                    tracing::warn!(cluster, command = %a.command_id, message = ?a.message, "agent refused a command");
                }
                self.rollouts
                    .on_ack(&a.command_id, a.ok, &a.fingerprint, &a.message)
                    .await;
            }
            Some(In::Heartbeat(_)) => self.fleet.seen(cluster, now),
            Some(In::Evidence(e)) => {
                self.fleet.seen(cluster, now);
                let key = CanaryKey::new(e.namespace.clone(), e.name.clone());
                self.rollouts
                    .on_evidence(cluster, &key, &e.to_report(cluster))
                    .await;
            }
            Some(In::Hello(_)) => {
                tracing::warn!(
                    cluster,
                    "a second Hello on one stream is ignored; reconnect to re-register"
                );
            }
            None => {}
        }
    }
}
