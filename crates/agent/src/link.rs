//! The agent's link to the fleet coordinator (`--coordinator URL[,URL…]`).
//!
//! One bidirectional gRPC stream (`aviary.v1.AgentLink/Connect`). After every (re)connect the
//! agent sends a full Hello with a snapshot of every canary, then the events it buffered while
//! disconnected; from then on status updates and events as they happen. It reconnects with
//! exponential backoff, follows a follower's `aviary-leader` hint, and considers a stream that
//! is silent for three heartbeat periods broken.
//!
//! Commands (each idempotent, each acknowledged): `StartRevision` applies a revision to the
//! canary's target (a no-op when the target already describes it), `GateDecision` opens or
//! keeps closed the gate of one fingerprint, `Revert` applies the previous revision and has it
//! promoted without analysis, `RollbackCanary` rolls the running analysis back.
//!
//! The link is also the engine's [`Gate`]: a new revision asks the coordinator (a `GateRequest`)
//! and waits closed until it answers. The statistical judge's evidence (one `Evidence` per
//! canary interval) goes to the coordinator the same way, kept (bounded) while disconnected
//! and sent after the next Hello: late evidence is still valid evidence. While disconnected every new gate stays closed, and the
//! canaries already running finish under their own analysis (partition rule).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryPhase};
use aviary_core::fleet::Revision;
use aviary_core::judge::EvidenceReport;
use aviary_core::ports::{Gate, GateDecision, TargetRevision};
use aviary_proto::v1::{self, agent_message, coordinator_message};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::EventRecord;

/// The name of the coordinator in events (`Confirm-rollout check aviary-coordinator passed`).
pub const GATE_NAME: &str = "aviary-coordinator";

/// What the link needs from the platform.
#[async_trait]
pub trait FleetTarget: Send + Sync + 'static {
    /// Every canary with its status.
    async fn canaries(&self) -> Vec<Canary>;
    /// What the canary's target describes now.
    async fn target_revision(&self, canary: &Canary) -> Revision;
    /// What the canary's primary runs.
    async fn primary_revision(&self, canary: &Canary) -> Revision;
    /// Requests the primary's current revision served since its promotion, and its recent
    /// success rate (%), when the platform measures them (`(0, None)` when it does not).
    async fn served(&self, canary: &Canary) -> (u64, Option<f64>);
    /// The fingerprint of what the target describes now.
    async fn fingerprint(&self, canary: &Canary) -> Option<String>;
    /// Applies a revision to the canary's target (a new image or version).
    async fn apply_revision(&self, canary: &Canary, revision: &Revision, rollout: &str)
    -> Result<(), String>;
    /// Makes the same revision new again (a retry after a failure: Flagger never re-analyses a
    /// revision that failed), e.g. by bumping an annotation of the pod template.
    async fn retry(&self, canary: &Canary, rollout: &str) -> Result<(), String>;
}

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Coordinator URLs, tried in turn.
    pub urls: Vec<String>,
    pub cluster: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    /// Heartbeat period (the coordinator's Welcome may change it).
    pub heartbeat: Duration,
    /// Events kept while disconnected.
    pub event_buffer: usize,
    /// Certificates for `https://` coordinators.
    pub tls: crate::config::CoordinatorTls,
}

impl LinkConfig {
    /// Settings from a comma-separated `--coordinator` value.
    pub fn new(urls: &str, cluster: &str, region: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            urls: urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            cluster: cluster.into(),
            region: region.into(),
            labels,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            heartbeat: Duration::from_secs(5),
            event_buffer: 1000,
            tls: Default::default(),
        }
    }
}

enum Outgoing {
    Status(Box<Canary>),
    Event(EventRecord),
    Gate(v1::GateRequest),
    Evidence(v1::Evidence),
}

/// What waits for the next connection.
#[derive(Default)]
struct Buffered {
    events: VecDeque<EventRecord>,
    evidence: VecDeque<v1::Evidence>,
}

#[derive(Default)]
struct State {
    /// Decisions per `namespace/name` and fingerprint.
    decisions: HashMap<(String, String), Result<(), String>>,
    /// Gate requests already sent on this connection (asked again after a reconnect).
    asked: HashMap<(String, String), Instant>,
    /// Rollbacks the coordinator asked for, per canary.
    rollbacks: HashMap<String, String>,
    /// Reverts in progress: canary → the fingerprint being restored.
    reverts: HashMap<String, Option<String>>,
    /// The rollout that last commanded each canary.
    rollouts: HashMap<String, String>,
    /// The last metric values of each canary's analysis, and the revision they belong to.
    metrics: HashMap<String, BTreeMap<String, f64>>,
    analysed: HashMap<String, String>,
    /// Command ids already carried out (a repeated id is a no-op).
    done: HashMap<String, String>,
    connected: bool,
}

struct Shared {
    config: LinkConfig,
    target: OnceLock<Arc<dyn FleetTarget>>,
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Outgoing>,
}

/// A handle to the link; cheap to clone.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

/// The running link's task.
pub struct LinkTask {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl LinkTask {
    /// Stops the link.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

impl Link {
    /// A link (not yet running: call [`Link::start`] once the platform exists).
    pub fn new(config: LinkConfig) -> (Self, LinkStarter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Self {
            shared: Arc::new(Shared {
                config,
                target: OnceLock::new(),
                state: Mutex::new(State::default()),
                tx,
            }),
        };
        (link.clone(), LinkStarter { link, rx })
    }

    /// The engine's gate backed by this link.
    pub fn gate(&self) -> Arc<dyn Gate> {
        Arc::new(LinkGate { link: self.clone() })
    }

    /// Reports a canary's new state (from the actors, after each tick).
    pub fn on_status(&self, canary: &Canary) {
        let key = canary.key();
        let phase = canary.status.as_ref().map(|s| s.phase).unwrap_or_default();
        {
            let mut st = self.shared.state.lock();
            // A new revision's analysis starts with no values: never show the last one's.
            let applied = canary
                .status
                .as_ref()
                .map(|s| s.last_applied_spec.clone())
                .unwrap_or_default();
            if st.analysed.get(&key) != Some(&applied) {
                st.metrics.remove(&key);
                st.analysed.insert(key.clone(), applied);
            }
            // A rollback request is done once the analysis ended.
            if matches!(phase, CanaryPhase::Failed | CanaryPhase::Succeeded) {
                st.rollbacks.remove(&key);
            }
            // A revert is done once its revision is promoted.
            if let Some(Some(fp)) = st.reverts.get(&key)
                && phase == CanaryPhase::Succeeded
                && canary
                    .status
                    .as_ref()
                    .is_some_and(|s| &s.last_promoted_spec == fp)
            {
                st.reverts.remove(&key);
            }
        }
        let _ = self.shared.tx.send(Outgoing::Status(Box::new(canary.clone())));
    }

    /// Reports an event.
    pub fn on_event(&self, event: &EventRecord) {
        let _ = self.shared.tx.send(Outgoing::Event(event.clone()));
    }

    /// Records the last value of an analysis metric (for the coordinator's verdicts).
    pub fn on_metric(&self, canary: &Canary, metric: &str, value: f64) {
        self.shared
            .state
            .lock()
            .metrics
            .entry(canary.key())
            .or_default()
            .insert(metric.to_string(), value);
    }

    /// Whether the stream is up.
    pub fn connected(&self) -> bool {
        self.shared.state.lock().connected
    }

    fn target(&self) -> Option<&Arc<dyn FleetTarget>> {
        self.shared.target.get()
    }

    async fn snapshot(&self, c: &Canary) -> v1::CanarySnapshot {
        let status = c.status.clone().unwrap_or_default();
        let (served, rate, target_revision, primary_revision) = match self.target() {
            Some(t) => {
                let (s, r) = t.served(c).await;
                (
                    s,
                    r,
                    Some(v1::Revision::from(&t.target_revision(c).await)),
                    Some(v1::Revision::from(&t.primary_revision(c).await)),
                )
            }
            None => (0, None, None, None),
        };
        let st = self.shared.state.lock();
        v1::CanarySnapshot {
            namespace: c.namespace().into(),
            name: c.name().into(),
            target_kind: c.target_kind().into(),
            target_name: c.target_name().into(),
            phase: status.phase.as_str().into(),
            canary_weight: status.canary_weight,
            failed_checks: status.failed_checks,
            iterations: status.iterations,
            last_applied_spec: status.last_applied_spec.clone(),
            last_promoted_spec: status.last_promoted_spec.clone(),
            last_transition_time: status
                .last_transition_time
                .as_ref()
                .map(|t| aviary_proto::ts::from_jiff(t.0)),
            target_revision,
            primary_revision,
            served_requests: served,
            primary_success_rate: rate,
            message: status
                .conditions
                .iter()
                .find(|k| k.type_ == aviary_api::status::VALIDATED_CONDITION)
                .or_else(|| status.promoted_condition())
                .map(|k| k.message.clone())
                .unwrap_or_default(),
            metrics: st.metrics.get(&c.key()).cloned().unwrap_or_default(),
            rollout: st.rollouts.get(&c.key()).cloned().unwrap_or_default(),
        }
    }
}

/// Starts the link's task once the platform is there.
pub struct LinkStarter {
    link: Link,
    rx: mpsc::UnboundedReceiver<Outgoing>,
}

impl LinkStarter {
    /// Runs the link against `target` until stopped.
    pub fn start(self, target: Arc<dyn FleetTarget>) -> LinkTask {
        let _ = self.link.shared.target.set(target);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(self.link, self.rx, stop.clone()));
        LinkTask { stop, handle }
    }
}

fn msg(m: agent_message::Msg) -> v1::AgentMessage {
    v1::AgentMessage { msg: Some(m) }
}

fn event_msg(e: &EventRecord) -> v1::AgentMessage {
    let time = e
        .timestamp
        .parse::<jiff::Timestamp>()
        .ok()
        .map(aviary_proto::ts::from_jiff);
    msg(agent_message::Msg::Event(v1::CanaryEvent {
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        r#type: e.kind.clone(),
        reason: e.reason.clone(),
        message: e.message.clone(),
        time,
    }))
}

async fn run(link: Link, mut rx: mpsc::UnboundedReceiver<Outgoing>, stop: CancellationToken) {
    let mut buffered = Buffered::default();
    let mut backoff = Duration::from_millis(250);
    let mut url_index = 0usize;
    let mut leader_hint: Option<String> = None;
    let mut last_error: Option<String> = None;
    // Set when a follower answered since the last session: the coordinators are up and
    // electing (which takes one to three seconds), so retry every half second instead of
    // backing off to 5 s; a follower's answer costs it next to nothing.
    let mut electing = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let urls = &link.shared.config.urls;
        let url = leader_hint
            .take()
            .unwrap_or_else(|| urls[url_index % urls.len().max(1)].clone());
        let outcome = session(&link, &url, &mut rx, &mut buffered, &stop).await;
        // A session that connected starts the next round of attempts afresh: after a leader
        // dies or hands over, the agent must find the new one within a second or two.
        if std::mem::replace(&mut link.shared.state.lock().connected, false) {
            backoff = Duration::from_millis(250);
            electing = false;
        }
        match outcome {
            SessionEnd::Stopped => return,
            SessionEnd::Leader(addr) => {
                electing = true;
                tracing::info!("coordinator {url} is a follower; following the leader at {addr}");
                leader_hint = Some(leader_url(&url, &addr));
                continue;
            }
            SessionEnd::Failed(e) => {
                // Logged once per change of state, not per attempt.
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("coordinator link to {url}: {e}; retrying with backoff");
                    last_error = Some(e);
                }
                url_index += 1;
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        // keep only the newest events while disconnected; statuses are resent with the Hello
        let cap = link.shared.config.event_buffer;
        while let Ok(item) = rx.try_recv() {
            match item {
                Outgoing::Event(e) => push_bounded(&mut buffered.events, e, cap),
                Outgoing::Evidence(e) => push_bounded(&mut buffered.evidence, e, cap),
                Outgoing::Status(_) | Outgoing::Gate(_) => {}
            }
        }
        let cap = if electing {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        backoff = (backoff * 2).min(cap);
    }
}

/// The leader a follower named (`host:port`) as a URL with the scheme of the coordinator URL
/// that named it: with TLS every replica is `https://`, and a plain `http://` attempt only
/// fails its handshake. Named under a bare URL, it stays bare, so `session` gives it the
/// scheme it gives the configured URL.
fn leader_url(asked: &str, addr: &str) -> String {
    if addr.contains("://") {
        return addr.to_string();
    }
    match asked.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://{addr}"),
        None => addr.to_string(),
    }
}

fn push_bounded<T>(buf: &mut VecDeque<T>, e: T, cap: usize) {
    if buf.len() >= cap {
        buf.pop_front();
    }
    buf.push_back(e);
}

/// tonic's TLS configuration from the agent's files, read now (a rotated certificate is used
/// from the next connect on).
fn tls_config(t: &crate::config::CoordinatorTls) -> Result<tonic::transport::ClientTlsConfig, String> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut c = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &t.ca {
        c = c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
        c = c.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(c)
}

enum SessionEnd {
    Stopped,
    Leader(String),
    Failed(String),
}

async fn session(
    link: &Link,
    url: &str,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    buffered: &mut Buffered,
    stop: &CancellationToken,
) -> SessionEnd {
    // A bare `host:port` (configured, or a leader named under one) is `https://` when a CA is
    // configured and `http://` otherwise, as the CLI's URL check reads it.
    let url = match (url.contains("://"), link.shared.config.tls.ca.is_some()) {
        (true, _) => url.to_string(),
        (false, true) => format!("https://{url}"),
        (false, false) => format!("http://{url}"),
    };
    let url = url.as_str();
    let mut endpoint = match tonic::transport::Endpoint::from_shared(url.to_string()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true),
        Err(e) => return SessionEnd::Failed(format!("{url} is not a URL: {e}")),
    };
    if url.starts_with("https://") {
        let tls = match tls_config(&link.shared.config.tls) {
            Ok(t) => t,
            Err(e) => return SessionEnd::Failed(e),
        };
        endpoint = match endpoint.tls_config(tls) {
            Ok(e) => e,
            Err(e) => return SessionEnd::Failed(format!("TLS: {e}")),
        };
    }
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Failed(format!("cannot connect: {e}")),
    };
    let mut client = v1::agent_link_client::AgentLinkClient::new(channel);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<v1::AgentMessage>();

    // Hello first, with every canary; then what was buffered.
    let canaries = match link.target() {
        Some(t) => t.canaries().await,
        None => Vec::new(),
    };
    let c = &link.shared.config;
    let mut snapshots = Vec::with_capacity(canaries.len());
    for k in &canaries {
        snapshots.push(link.snapshot(k).await);
    }
    let hello = v1::Hello {
        cluster: c.cluster.clone(),
        region: c.region.clone(),
        labels: c.labels.clone(),
        agent_version: c.agent_version.clone(),
        canaries: snapshots,
    };
    let _ = out_tx.send(msg(agent_message::Msg::Hello(hello)));
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx);
    // A bounded wait for the coordinator's answer: a request or answer lost in a partition can
    // otherwise sit in TCP retransmission backoff for minutes (seen with flapping links), and
    // the heartbeat watchdog only starts once the stream is open.
    let answer = (link.shared.config.heartbeat * 3).max(Duration::from_secs(5));
    let connected = match tokio::time::timeout(answer, client.connect(stream)).await {
        Ok(r) => r,
        Err(_) => {
            return SessionEnd::Failed(format!("no answer from the coordinator within {answer:?}"));
        }
    };
    let mut inbound = match connected {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            if status.code() == tonic::Code::Unavailable
                && let Some(leader) = status
                    .metadata()
                    .get("aviary-leader")
                    .and_then(|v| v.to_str().ok())
                && !leader.is_empty()
            {
                return SessionEnd::Leader(leader.to_string());
            }
            return SessionEnd::Failed(format!("{}: {}", status.code(), status.message()));
        }
    };
    for e in buffered.events.drain(..) {
        let _ = out_tx.send(event_msg(&e));
    }
    for e in buffered.evidence.drain(..) {
        let _ = out_tx.send(msg(agent_message::Msg::Evidence(e)));
    }
    {
        let mut st = link.shared.state.lock();
        st.connected = true;
        st.asked.clear();
    }
    tracing::info!("connected to the coordinator at {url}");

    let mut heartbeat = link.shared.config.heartbeat;
    let mut ticker = tokio::time::interval(heartbeat);
    let mut last_inbound = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return SessionEnd::Stopped,
            _ = ticker.tick() => {
                if last_inbound.elapsed() > heartbeat * 3 {
                    return SessionEnd::Failed("no message from the coordinator for 3 heartbeat periods".into());
                }
                let hb = v1::Heartbeat { time: Some(aviary_proto::ts::from_jiff(jiff::Timestamp::now())) };
                if out_tx.send(msg(agent_message::Msg::Heartbeat(hb))).is_err() {
                    return SessionEnd::Failed("the stream closed".into());
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { return SessionEnd::Stopped };
                let m = match item {
                    Outgoing::Status(c) => {
                        msg(agent_message::Msg::Status(v1::CanaryUpdate { canary: Some(link.snapshot(&c).await), canaries: Vec::new() }))
                    }
                    Outgoing::Event(e) => event_msg(&e),
                    Outgoing::Gate(g) => msg(agent_message::Msg::GateRequest(g)),
                    Outgoing::Evidence(e) => msg(agent_message::Msg::Evidence(e)),
                };
                if out_tx.send(m).is_err() {
                    return SessionEnd::Failed("the stream closed".into());
                }
            }
            next = inbound.message() => {
                match next {
                    Ok(Some(m)) => {
                        last_inbound = Instant::now();
                        if let Some(coordinator_message::Msg::Welcome(w)) = &m.msg
                            && w.heartbeat_seconds > 0
                        {
                            heartbeat = Duration::from_secs(u64::from(w.heartbeat_seconds));
                            ticker = tokio::time::interval(heartbeat);
                        }
                        if let Some(reply) = handle(link, m).await {
                            let _ = out_tx.send(reply);
                        }
                    }
                    Ok(None) => return SessionEnd::Failed("the coordinator closed the stream".into()),
                    Err(status) => {
                        if status.code() == tonic::Code::Unavailable
                            && let Some(leader) = status.metadata().get("aviary-leader").and_then(|v| v.to_str().ok())
                            && !leader.is_empty()
                        {
                            return SessionEnd::Leader(leader.to_string());
                        }
                        return SessionEnd::Failed(format!("{}: {}", status.code(), status.message()));
                    }
                }
            }
        }
    }
}

/// Handles one command; returns the ack to send.
async fn handle(link: &Link, m: v1::CoordinatorMessage) -> Option<v1::AgentMessage> {
    let target = link.target()?.clone();
    match m.msg? {
        coordinator_message::Msg::Welcome(w) => {
            tracing::debug!("welcome from coordinator {}", w.coordinator);
            None
        }
        coordinator_message::Msg::Heartbeat(_) => None,
        coordinator_message::Msg::GateDecision(d) => {
            let key = format!("{}/{}", d.namespace, d.name);
            let mut st = link.shared.state.lock();
            st.decisions.insert(
                (key.clone(), d.fingerprint.clone()),
                if d.open { Ok(()) } else { Err(d.reason.clone()) },
            );
            if !d.rollout.is_empty() {
                st.rollouts.insert(key, d.rollout.clone());
            }
            None
        }
        coordinator_message::Msg::StartRevision(s) => {
            let key = format!("{}/{}", s.namespace, s.name);
            let revision = s.revision.as_ref().map(Revision::from).unwrap_or_default();
            let how = if s.rerun_failed {
                Apply::RerunFailed
            } else {
                Apply::Start
            };
            let ack = apply(link, &target, &key, &revision, &s.rollout, &s.command_id, how).await;
            Some(ack)
        }
        coordinator_message::Msg::Revert(r) => {
            let key = format!("{}/{}", r.namespace, r.name);
            tracing::info!(canary = %key, "the coordinator reverts to the previous revision: {}", r.reason);
            let revision = r.revision.as_ref().map(Revision::from).unwrap_or_default();
            Some(
                apply(
                    link,
                    &target,
                    &key,
                    &revision,
                    &r.rollout,
                    &r.command_id,
                    Apply::Revert,
                )
                .await,
            )
        }
        coordinator_message::Msg::Rollback(r) => {
            let key = format!("{}/{}", r.namespace, r.name);
            let canary = find(&target, &key).await;
            let reason = if r.reason.is_empty() {
                format!("rollout {} failed", r.rollout)
            } else {
                r.reason.clone()
            };
            let phase = canary
                .as_ref()
                .and_then(|c| c.status.as_ref())
                .map(|s| s.phase)
                .unwrap_or_default();
            let active = phase.is_active() && phase != CanaryPhase::Waiting;
            let fp = match &canary {
                Some(c) => target.fingerprint(c).await,
                None => None,
            };
            {
                let mut st = link.shared.state.lock();
                if active {
                    st.rollbacks.insert(key.clone(), reason.clone());
                }
                // A revision still waiting at the gate must never start now.
                if let Some(fp) = fp {
                    st.decisions
                        .insert((key.clone(), fp), Err(format!("rejected: {reason}")));
                }
            }
            Some(msg(agent_message::Msg::Ack(v1::Ack {
                command_id: r.command_id,
                ok: true,
                message: if active {
                    "rollback requested".into()
                } else {
                    "no analysis running".into()
                },
                fingerprint: String::new(),
                canary: match &canary {
                    Some(c) => Some(link.snapshot(c).await),
                    None => None,
                },
            })))
        }
    }
}

async fn find(target: &Arc<dyn FleetTarget>, key: &str) -> Option<Canary> {
    target.canaries().await.into_iter().find(|c| c.key() == key)
}

/// Which command [`apply`] carries out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Apply {
    Start,
    /// A StartRevision whose revision failed here when the attempt started: analysed again
    /// even for an id seen before.
    RerunFailed,
    Revert,
}

/// StartRevision or Revert: apply unless the target already describes the revision; ack with
/// the fingerprint it now describes.
async fn apply(
    link: &Link,
    target: &Arc<dyn FleetTarget>,
    key: &str,
    revision: &Revision,
    rollout: &str,
    command_id: &str,
    how: Apply,
) -> v1::AgentMessage {
    let revert = how == Apply::Revert;
    let ack = |ok: bool, message: String, fingerprint: String, canary: Option<v1::CanarySnapshot>| {
        msg(agent_message::Msg::Ack(v1::Ack {
            command_id: command_id.into(),
            ok,
            message,
            fingerprint,
            canary,
        }))
    };
    let Some(canary) = find(target, key).await else {
        return ack(
            false,
            format!("canary {key} is not known to this agent"),
            String::new(),
            None,
        );
    };
    let repeated = link.shared.state.lock().done.contains_key(command_id);
    let current = target.target_revision(&canary).await;
    let already = same_revision(&current, revision);
    if !already && let Err(e) = target.apply_revision(&canary, revision, rollout).await {
        return ack(
            false,
            format!("cannot apply the revision to {key}: {e}"),
            String::new(),
            Some(link.snapshot(&canary).await),
        );
    }
    // A new command for a revision whose analysis failed (the coordinator's retry): make it a
    // new revision so the analysis runs again. A repeated command id stays a no-op.
    let status = canary.status.clone().unwrap_or_default();
    let current_fp = target.fingerprint(&canary).await.unwrap_or_default();
    let failed_here = status.phase == CanaryPhase::Failed && status.last_applied_spec == current_fp;
    let retried = already && (!repeated || how == Apply::RerunFailed) && !revert && failed_here;
    if retried && let Err(e) = target.retry(&canary, rollout).await {
        return ack(
            false,
            format!("cannot retry the revision on {key}: {e}"),
            String::new(),
            Some(link.snapshot(&canary).await),
        );
    }
    let fingerprint = target.fingerprint(&canary).await.unwrap_or_default();
    {
        let mut st = link.shared.state.lock();
        st.done.insert(command_id.to_string(), fingerprint.clone());
        st.rollouts.insert(key.to_string(), rollout.to_string());
        if revert {
            st.reverts.insert(key.to_string(), Some(fingerprint.clone()));
            st.decisions
                .insert((key.to_string(), fingerprint.clone()), Ok(()));
        }
    }
    let message = if retried {
        "retried: a new revision of the same version".to_string()
    } else if already {
        "the target already describes this revision".to_string()
    } else {
        "applied".to_string()
    };
    ack(true, message, fingerprint, Some(link.snapshot(&canary).await))
}

/// Whether the target's revision already matches the requested one (every requested image, or
/// the version).
pub fn same_revision(current: &Revision, wanted: &Revision) -> bool {
    if !wanted.version.is_empty() && current.version != wanted.version {
        return false;
    }
    wanted
        .container_images
        .iter()
        .all(|(k, v)| current.container_images.get(k) == Some(v))
        && (!wanted.version.is_empty() || !wanted.container_images.is_empty())
}

/// The engine's gate backed by the coordinator link.
struct LinkGate {
    link: Link,
}

#[async_trait]
impl Gate for LinkGate {
    fn name(&self) -> Option<&str> {
        Some(GATE_NAME)
    }

    async fn confirm_rollout(&self, canary: &Canary, revision: &TargetRevision) -> GateDecision {
        let key = canary.key();
        let fp = revision.fingerprint.clone();
        // Decide under the lock; ask (which may await the platform) after releasing it.
        let (closed, due) = {
            let mut st = self.link.shared.state.lock();
            let closed = match st.decisions.get(&(key.clone(), fp.clone())) {
                Some(Ok(())) => return GateDecision::Open,
                Some(Err(reason)) if reason.starts_with("rejected:") => {
                    return GateDecision::Closed(reason.clone());
                }
                Some(Err(reason)) => Some(reason.clone()),
                None => None,
            };
            if !st.connected {
                return GateDecision::Closed("the coordinator is unreachable; new revisions wait".into());
            }
            // Ask on every tick while closed (the coordinator answers when the cluster's turn
            // comes), at most once a second.
            let due = st
                .asked
                .get(&(key.clone(), fp.clone()))
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                st.asked.insert((key.clone(), fp.clone()), Instant::now());
            }
            (closed, due)
        };
        if due {
            let revision_msg = match self.link.target() {
                Some(t) => Some(v1::Revision::from(&t.target_revision(canary).await)),
                None => None,
            };
            let _ = self.link.shared.tx.send(Outgoing::Gate(v1::GateRequest {
                namespace: canary.namespace().into(),
                name: canary.name().into(),
                fingerprint: fp,
                revision: revision_msg,
            }));
        }
        GateDecision::Closed(closed.unwrap_or_else(|| "waiting for the coordinator's decision".into()))
    }

    async fn rollback_requested(&self, canary: &Canary) -> Option<String> {
        self.link
            .shared
            .state
            .lock()
            .rollbacks
            .get(&canary.key())
            .cloned()
    }

    async fn skip_analysis(&self, canary: &Canary) -> bool {
        self.link.shared.state.lock().reverts.contains_key(&canary.key())
    }

    async fn report_evidence(&self, canary: &Canary, report: &EvidenceReport) {
        let rollout = self
            .link
            .shared
            .state
            .lock()
            .rollouts
            .get(&canary.key())
            .cloned()
            .unwrap_or_default();
        let e = v1::Evidence::from_report(canary.namespace(), canary.name(), &rollout, report);
        let _ = self.link.shared.tx.send(Outgoing::Evidence(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_leader_keeps_the_scheme_it_was_named_under() {
        for (asked, addr, want) in [
            ("https://10.0.0.1:443", "10.0.0.2:443", "https://10.0.0.2:443"),
            ("http://c0:50051", "c1:50051", "http://c1:50051"),
            ("https://c0:443", "http://c1:8080", "http://c1:8080"),
            ("c0:443", "c1:443", "c1:443"),
        ] {
            assert_eq!(leader_url(asked, addr), want, "{asked} named {addr}");
        }
    }

    #[test]
    fn revisions_match_on_what_was_asked() {
        let rev = |v: &str, imgs: &[(&str, &str)]| Revision {
            version: v.into(),
            container_images: imgs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        };
        assert!(same_revision(&rev("6.0.1", &[]), &rev("6.0.1", &[])));
        assert!(!same_revision(&rev("6.0.0", &[]), &rev("6.0.1", &[])));
        assert!(same_revision(
            &rev("", &[("app", "x:1"), ("side", "y:2")]),
            &rev("", &[("app", "x:1")])
        ));
        assert!(!same_revision(
            &rev("", &[("app", "x:1")]),
            &rev("", &[("app", "x:2")])
        ));
        assert!(
            !same_revision(&rev("", &[]), &rev("", &[])),
            "an empty revision is never 'already applied'"
        );
    }
}
