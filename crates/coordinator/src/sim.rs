//! The simulated agent: speaks AgentLink over real gRPC and behaves like a cluster whose
//! canaries are run by Flagger. Used by this crate's tests, the fan-in benchmark, and anyone who
//! needs a fleet without clusters.
//!
//! Each simulated canary: on `StartRevision` acks with the revision's fingerprint and points its
//! target at the revision (a repeat is a no-op); when its target differs from what it last
//! analysed it asks the coordinator's gate (phase `Waiting`) every tick until it opens (held
//! closed while disconnected); then it progresses its weight over `steps` ticks and ends
//! `Succeeded` (the primary is promoted, `served_requests` restarts) or `Failed` as scripted.
//! `Revert` promotes the given revision without analysis; `RollbackCanary` fails a running or
//! waiting analysis. A canary may start `Initializing` for a number of ticks; like Flagger's
//! initialization, its end records the fingerprint the *target* describes then as applied and
//! promoted, while the primary keeps the revision it was created from (a revision pushed during
//! initialization is swallowed, never analysed). The primary serves `requests_per_tick` requests every tick. Status updates
//! are sent for every canary that changed; after a reconnect, a full Hello.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aviary_core::fingerprint::fingerprint as fingerprint_json;
use aviary_core::fleet::{CanaryKey, Revision};
use aviary_proto::v1;
use aviary_proto::v1::agent_message::Msg as Up;
use aviary_proto::v1::coordinator_message::Msg as Down;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::{agent_link_client_with, leader_from_status, normalize_url_tls};

/// How a simulated analysis ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    Fail,
}

/// One simulated canary.
#[derive(Debug, Clone)]
pub struct SimCanary {
    pub namespace: String,
    pub name: String,
    /// What the primary (and the target) run at start.
    pub revision: Revision,
    /// How the next analyses end.
    pub outcome: Outcome,
    /// The primary's success rate (%) reported, if any.
    pub success_rate: Option<f64>,
    /// The judge's evidence sent each analysis step: the (canary, primary) error rates, over
    /// the tick's requests split by the canary weight. `None`: no judge, no evidence.
    pub error_rates: Option<(f64, f64)>,
    /// Ticks spent `Initializing` before `Initialized` (0: the canary starts `Succeeded`).
    pub initializing: u32,
}

impl SimCanary {
    /// A canary that succeeds, with a 100% success rate.
    pub fn new(namespace: &str, name: &str, revision: Revision) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            revision,
            outcome: Outcome::Succeed,
            success_rate: Some(100.0),
            error_rates: None,
            initializing: 0,
        }
    }
}

/// A simulated agent.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Coordinator URL.
    pub coordinator: String,
    pub cluster: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub canaries: Vec<SimCanary>,
    /// The analysis interval: one step of every running analysis per tick.
    pub tick: Duration,
    /// Delay of the first tick (spreads many agents over the interval).
    pub tick_offset: Duration,
    /// Ticks from the start of an analysis to its outcome.
    pub steps: u32,
    /// Requests each primary serves per tick.
    pub requests_per_tick: u64,
    /// Delay before reconnecting after the stream broke.
    pub reconnect: Duration,
    /// Send the canaries that changed in one tick in one `CanaryUpdate` (`canaries`) instead
    /// of one message per canary.
    pub batch: bool,
    /// The agent's certificate (read at every connect, so a rotated one is picked up).
    pub tls: crate::security::ClientTls,
}

impl SimConfig {
    /// An agent for `cluster` in `region` with the given canaries; 1 s ticks, 3 steps.
    pub fn new(coordinator: &str, cluster: &str, region: &str, canaries: Vec<SimCanary>) -> Self {
        Self {
            coordinator: coordinator.into(),
            cluster: cluster.into(),
            region: region.into(),
            labels: BTreeMap::new(),
            agent_version: concat!("sim-", env!("CARGO_PKG_VERSION")).into(),
            canaries,
            tick: Duration::from_secs(1),
            tick_offset: Duration::ZERO,
            steps: 3,
            requests_per_tick: 100,
            reconnect: Duration::from_millis(200),
            batch: false,
            tls: Default::default(),
        }
    }
}

/// The fingerprint the simulated agents give a revision (sha256 of its canonical JSON).
pub fn fingerprint(r: &Revision) -> String {
    fingerprint_json(&serde_json::to_value(r).unwrap_or_default())
}

struct CanaryState {
    snap: v1::CanarySnapshot,
    target: Revision,
    outcome: Outcome,
    success_rate: Option<f64>,
    step: u32,
    /// The fingerprint the gate opened for.
    gate_open: Option<String>,
    /// Fingerprints rolled back: never started again.
    rejected: BTreeSet<String>,
    /// A running analysis does not advance while held.
    held: bool,
    /// Metric values reported on top of the simulated ones (any f64, `+Inf` included).
    extra_metrics: BTreeMap<String, f64>,
    dirty: bool,
    error_rates: Option<(f64, f64)>,
    /// Ticks of initialization left.
    initializing: u32,
}

#[derive(Default)]
struct Shared {
    canaries: BTreeMap<CanaryKey, CanaryState>,
    commands: Vec<String>,
    analyses: BTreeMap<CanaryKey, u32>,
    /// Overrides `requests_per_tick` once set.
    requests_per_tick: Option<u64>,
    connected: bool,
    connects: u32,
}

enum Control {
    Partition,
    Heal,
    Restart,
}

/// A running simulated agent.
pub struct SimAgent {
    cluster: String,
    shared: Arc<Mutex<Shared>>,
    ctl: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

const STEP_WEIGHT: i32 = 20;

impl SimAgent {
    /// Starts the agent (it connects in the background and reconnects by itself).
    pub fn spawn(config: SimConfig) -> Self {
        let mut shared = Shared::default();
        for c in &config.canaries {
            let fp = fingerprint(&c.revision);
            let (phase, applied) = if c.initializing > 0 {
                ("Initializing", String::new())
            } else {
                ("Succeeded", fp.clone())
            };
            shared.canaries.insert(
                CanaryKey::new(c.namespace.clone(), c.name.clone()),
                CanaryState {
                    snap: v1::CanarySnapshot {
                        namespace: c.namespace.clone(),
                        name: c.name.clone(),
                        target_kind: "Deployment".into(),
                        target_name: c.name.clone(),
                        phase: phase.into(),
                        last_applied_spec: applied.clone(),
                        last_promoted_spec: applied,
                        target_revision: Some(v1::Revision::from(&c.revision)),
                        primary_revision: Some(v1::Revision::from(&c.revision)),
                        primary_success_rate: c.success_rate,
                        ..Default::default()
                    },
                    target: c.revision.clone(),
                    outcome: c.outcome,
                    success_rate: c.success_rate,
                    step: 0,
                    gate_open: None,
                    rejected: BTreeSet::new(),
                    held: false,
                    extra_metrics: BTreeMap::new(),
                    dirty: false,
                    error_rates: c.error_rates,
                    initializing: c.initializing,
                },
            );
        }
        let shared = Arc::new(Mutex::new(shared));
        let (ctl, rx) = mpsc::unbounded_channel();
        let cluster = config.cluster.clone();
        let task = tokio::spawn(run(config, shared.clone(), rx));
        Self {
            cluster,
            shared,
            ctl,
            task,
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn with<R>(&self, ns: &str, name: &str, f: impl FnOnce(&mut CanaryState) -> R) -> Option<R> {
        self.shared
            .lock()
            .canaries
            .get_mut(&CanaryKey::new(ns, name))
            .map(f)
    }

    /// How the canary's next analyses end.
    pub fn set_outcome(&self, ns: &str, name: &str, outcome: Outcome) {
        self.with(ns, name, |c| c.outcome = outcome);
    }

    /// The primary's success rate reported from now on.
    pub fn set_success_rate(&self, ns: &str, name: &str, rate: Option<f64>) {
        self.with(ns, name, |c| {
            c.success_rate = rate;
            c.snap.primary_success_rate = rate;
            c.dirty = true;
        });
    }

    /// Reports `value` for `metric` from now on (with every analysis' own values), e.g.
    /// `f64::INFINITY` as Prometheus answers for `histogram_quantile` of an empty bucket.
    pub fn set_metric(&self, ns: &str, name: &str, metric: &str, value: f64) {
        self.with(ns, name, |c| {
            c.extra_metrics.insert(metric.into(), value);
            c.snap.metrics.insert(metric.into(), value);
            c.dirty = true;
        });
    }

    /// Requests each primary serves per tick from now on.
    pub fn set_requests_per_tick(&self, n: u64) {
        self.shared.lock().requests_per_tick = Some(n);
    }

    /// Holds the canary's analysis where it is (`true`) or lets it go on (`false`): tests act
    /// while an analysis is known to be running.
    pub fn hold(&self, ns: &str, name: &str, held: bool) {
        self.with(ns, name, |c| c.held = held);
    }

    /// GitOps applies a revision to the canary's target (gate mode).
    pub fn apply(&self, ns: &str, name: &str, revision: Revision) {
        self.with(ns, name, |c| {
            c.target = revision.clone();
            c.snap.target_revision = Some(v1::Revision::from(&revision));
            c.dirty = true;
        });
    }

    /// Cuts the stream and stays away until [`heal`](Self::heal). The canaries keep running.
    pub fn partition(&self) {
        let _ = self.ctl.send(Control::Partition);
    }

    /// Ends a partition: the agent reconnects with a full Hello.
    pub fn heal(&self) {
        let _ = self.ctl.send(Control::Heal);
    }

    /// A restart: the stream is dropped and opened again at once with a new Hello; the canaries'
    /// state is kept (a real agent resumes from the Canary status).
    pub fn restart(&self) {
        let _ = self.ctl.send(Control::Restart);
    }

    /// The canary as the agent would report it now.
    pub fn snapshot(&self, ns: &str, name: &str) -> Option<v1::CanarySnapshot> {
        self.with(ns, name, |c| c.snap.clone())
    }

    /// Ids of every command received, repeats included.
    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().commands.clone()
    }

    /// How many analyses of the canary started.
    pub fn analyses(&self, ns: &str, name: &str) -> u32 {
        self.shared
            .lock()
            .analyses
            .get(&CanaryKey::new(ns, name))
            .copied()
            .unwrap_or(0)
    }

    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Streams opened so far.
    pub fn connects(&self) -> u32 {
        self.shared.lock().connects
    }

    /// Stops the agent (its stream closes).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct Link {
    tx: mpsc::Sender<v1::AgentMessage>,
    inbound: Streaming<v1::CoordinatorMessage>,
}

fn up(m: Up) -> v1::AgentMessage {
    v1::AgentMessage { msg: Some(m) }
}

async fn next_message(
    link: &mut Option<Link>,
) -> Option<Result<Option<v1::CoordinatorMessage>, tonic::Status>> {
    match link {
        Some(l) => Some(l.inbound.message().await),
        None => std::future::pending().await,
    }
}

async fn run(config: SimConfig, shared: Arc<Mutex<Shared>>, mut ctl: mpsc::UnboundedReceiver<Control>) {
    let mut url = config.coordinator.clone();
    let mut link: Option<Link> = None;
    let mut partitioned = false;
    let mut reconnect_at = Instant::now();
    let mut ticker = tokio::time::interval_at(Instant::now() + config.tick_offset, config.tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = ctl.recv() => match c {
                None => return,
                Some(Control::Partition) => {
                    partitioned = true;
                    link = None;
                    shared.lock().connected = false;
                }
                Some(Control::Heal) => {
                    partitioned = false;
                    reconnect_at = Instant::now();
                }
                Some(Control::Restart) => {
                    link = None;
                    shared.lock().connected = false;
                    reconnect_at = Instant::now();
                }
            },
            _ = ticker.tick() => {
                let out = tick(&config, &shared, link.is_some());
                if let Some(l) = &link {
                    for m in out {
                        if l.tx.try_send(m).is_err() {
                            break;
                        }
                    }
                }
            }
            _ = heartbeat.tick(), if link.is_some() => {
                if let Some(l) = &link {
                    let _ = l.tx.try_send(up(Up::Heartbeat(v1::Heartbeat { time: None })));
                }
            }
            m = next_message(&mut link) => match m {
                Some(Ok(Some(m))) => {
                    if let Some(Down::Welcome(w)) = &m.msg {
                        let period = Duration::from_secs(u64::from(w.heartbeat_seconds.max(1)));
                        heartbeat = tokio::time::interval(period);
                        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    }
                    let replies = handle(&mut shared.lock(), m).unwrap_or_else(|refused| refused);
                    if let Some(l) = &link {
                        for r in replies {
                            let _ = l.tx.try_send(r);
                        }
                    }
                }
                _ => {
                    link = None;
                    shared.lock().connected = false;
                    reconnect_at = Instant::now() + config.reconnect;
                }
            },
            _ = tokio::time::sleep_until(reconnect_at), if link.is_none() && !partitioned => {
                match connect(&config, &shared, &url).await {
                    Ok(l) => {
                        link = Some(l);
                        let mut s = shared.lock();
                        s.connected = true;
                        s.connects += 1;
                    }
                    Err(leader) => {
                        // A follower points at the leader; when that address fails (the
                        // leader died), start again from the configured one, as the real
                        // agent goes back to its --coordinator list.
                        url = leader.unwrap_or_else(|| config.coordinator.clone());
                        reconnect_at = Instant::now() + config.reconnect;
                    }
                }
            }
        }
    }
}

/// Opens the stream with a full Hello. `Err(Some(leader))` when a follower points elsewhere.
async fn connect(config: &SimConfig, shared: &Mutex<Shared>, url: &str) -> Result<Link, Option<String>> {
    let url = normalize_url_tls(url, &config.tls);
    let mut client = agent_link_client_with(&url, &config.tls).map_err(|_| None)?;
    let (tx, rx) = mpsc::channel(4096);
    let canaries = {
        let mut s = shared.lock();
        s.canaries
            .values_mut()
            .map(|c| {
                c.dirty = false;
                c.snap.clone()
            })
            .collect()
    };
    let hello = up(Up::Hello(v1::Hello {
        cluster: config.cluster.clone(),
        region: config.region.clone(),
        labels: config.labels.clone(),
        agent_version: config.agent_version.clone(),
        canaries,
    }));
    tx.try_send(hello).map_err(|_| None)?;
    match tokio::time::timeout(Duration::from_secs(10), client.connect(ReceiverStream::new(rx))).await {
        Ok(Ok(resp)) => Ok(Link {
            tx,
            inbound: resp.into_inner(),
        }),
        Ok(Err(status)) => Err(leader_from_status(&status)),
        Err(_) => Err(None),
    }
}

/// One analysis interval of every canary; returns the messages to send.
fn tick(config: &SimConfig, shared: &Mutex<Shared>, connected: bool) -> Vec<v1::AgentMessage> {
    let mut s = shared.lock();
    let Shared {
        canaries,
        analyses,
        requests_per_tick,
        ..
    } = &mut *s;
    let served = requests_per_tick.unwrap_or(config.requests_per_tick);
    let mut out = Vec::new();
    for (key, c) in canaries.iter_mut() {
        c.snap.served_requests += served;
        c.dirty = true;
        let fp = fingerprint(&c.target);
        if c.initializing > 0 {
            c.initializing -= 1;
            if c.initializing == 0 {
                // Flagger's setPhaseInitialized: whatever the target describes now counts as
                // applied and promoted (the primary runs what it was created from).
                c.snap.phase = "Initialized".into();
                c.snap.last_applied_spec = fp.clone();
                c.snap.last_promoted_spec = fp.clone();
                c.snap.message = "Initialization done!".into();
            }
        } else if c.snap.phase == "Progressing" && c.held {
            // Held: the analysis waits.
        } else if c.snap.phase == "Progressing" {
            if connected && let Some(e) = evidence(config, key, c, served) {
                out.push(up(Up::Evidence(e)));
            }
            c.step += 1;
            c.snap.iterations += 1;
            c.snap.canary_weight = (c.step as i32 * STEP_WEIGHT).min(60);
            if c.step >= config.steps {
                finish(c, &fp);
            }
        } else if fp != c.snap.last_applied_spec && !c.rejected.contains(&fp) {
            if c.gate_open.as_deref() == Some(fp.as_str()) {
                start(c, &fp);
                *analyses.entry(key.clone()).or_default() += 1;
            } else {
                c.snap.phase = "Waiting".into();
                // Held closed while disconnected: ask only when someone can answer.
                if connected {
                    out.push(up(Up::GateRequest(v1::GateRequest {
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        fingerprint: fp.clone(),
                        revision: Some(v1::Revision::from(&c.target)),
                    })));
                }
            }
        }
    }
    if connected {
        let changed = canaries.values_mut().filter(|c| c.dirty).map(|c| {
            c.dirty = false;
            c.snap.clone()
        });
        if config.batch {
            let canaries: Vec<v1::CanarySnapshot> = changed.collect();
            if !canaries.is_empty() {
                out.push(up(Up::Status(v1::CanaryUpdate {
                    canary: None,
                    canaries,
                })));
            }
        } else {
            out.extend(changed.map(|s| {
                up(Up::Status(v1::CanaryUpdate {
                    canary: Some(s),
                    canaries: Vec::new(),
                }))
            }));
        }
    }
    out
}

/// One interval of judge evidence at the current weight (the step about to end).
fn evidence(config: &SimConfig, key: &CanaryKey, c: &CanaryState, served: u64) -> Option<v1::Evidence> {
    let (ce, pe) = c.error_rates?;
    let canary = served * c.snap.canary_weight.max(0) as u64 / 100;
    let arm = |requests: u64, rate: f64| v1::ArmCounts {
        requests,
        errors: ((requests as f64 * rate).round() as u64).min(requests),
        ..Default::default()
    };
    Some(v1::Evidence {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        rollout: c.snap.rollout.clone(),
        run: c.snap.last_applied_spec.clone(),
        interval: u64::from(c.step),
        boundaries_ms: Vec::new(),
        seconds: config.tick.as_secs_f64(),
        canary: Some(arm(canary, ce)),
        primary: Some(arm(served - canary, pe)),
    })
}

fn start(c: &mut CanaryState, fp: &str) {
    c.snap.phase = "Progressing".into();
    c.snap.last_applied_spec = fp.to_string();
    c.snap.canary_weight = STEP_WEIGHT;
    c.snap.failed_checks = 0;
    c.snap.iterations = 0;
    c.snap.message = "New revision detected! Scaling up".into();
    c.snap.metrics = [
        ("request-success-rate".to_string(), 99.9),
        ("request-duration".to_string(), 120.0),
    ]
    .into();
    c.snap.metrics.extend(c.extra_metrics.clone());
    c.step = 0;
    c.dirty = true;
}

fn finish(c: &mut CanaryState, fp: &str) {
    c.snap.canary_weight = 0;
    match c.outcome {
        Outcome::Succeed => {
            c.snap.phase = "Succeeded".into();
            c.snap.last_promoted_spec = fp.to_string();
            c.snap.primary_revision = Some(v1::Revision::from(&c.target));
            c.snap.served_requests = 0;
            c.snap.primary_success_rate = c.success_rate;
            c.snap.message = "Canary analysis completed successfully, promotion finished.".into();
        }
        Outcome::Fail => {
            c.snap.phase = "Failed".into();
            c.snap.failed_checks = 5;
            c.snap.metrics.insert("request-success-rate".into(), 42.0);
            c.snap.message = "Canary failed! Rolling back".into();
            c.rejected.insert(fp.to_string());
        }
    }
    c.dirty = true;
}

/// The ack of a command for a canary this agent does not have.
/// Records command `id` and finds the canary it is for; the refusal to send back when there
/// is none.
fn command_target<'a>(
    canaries: &'a mut BTreeMap<CanaryKey, CanaryState>,
    commands: &mut Vec<String>,
    id: &str,
    namespace: &str,
    name: &str,
) -> Result<&'a mut CanaryState, Vec<v1::AgentMessage>> {
    commands.push(id.to_string());
    let key = CanaryKey::new(namespace.to_string(), name.to_string());
    canaries.get_mut(&key).ok_or_else(|| not_found(id, &key))
}

fn not_found(command_id: &str, key: &CanaryKey) -> Vec<v1::AgentMessage> {
    vec![ack(
        command_id,
        false,
        &format!("canary {key} not found"),
        "",
        None,
    )]
}

fn ack(id: &str, ok: bool, message: &str, fp: &str, snap: Option<v1::CanarySnapshot>) -> v1::AgentMessage {
    up(Up::Ack(v1::Ack {
        command_id: id.into(),
        ok,
        message: message.into(),
        fingerprint: fp.into(),
        canary: snap,
    }))
}

/// A command from the coordinator; returns the replies (`Err`: the refusal of a command for
/// an unknown canary).
fn handle(s: &mut Shared, m: v1::CoordinatorMessage) -> Result<Vec<v1::AgentMessage>, Vec<v1::AgentMessage>> {
    let Shared {
        canaries,
        commands,
        analyses,
        ..
    } = s;
    match m.msg {
        Some(Down::StartRevision(cmd)) => {
            let c = command_target(canaries, commands, &cmd.command_id, &cmd.namespace, &cmd.name)?;
            let rev = cmd.revision.as_ref().map(Revision::from).unwrap_or_default();
            let fp = fingerprint(&rev);
            let repeat = commands.iter().filter(|id| **id == cmd.command_id).count() > 1;
            if fingerprint(&c.target) != fp {
                c.target = rev.clone();
                c.snap.target_revision = Some(v1::Revision::from(&rev));
                c.gate_open = None;
            } else if (!repeat || cmd.rerun_failed)
                && c.snap.phase == "Failed"
                && c.snap.last_applied_spec == fp
            {
                // A retry (a new command id) of a revision whose analysis failed: analyse it
                // again, as Flagger does when the revision is re-applied.
                c.rejected.remove(&fp);
                c.gate_open = None;
                c.snap.last_applied_spec = c.snap.last_promoted_spec.clone();
                c.snap.phase = "Waiting".into();
                c.snap.failed_checks = 0;
            }
            c.snap.rollout = cmd.rollout.clone();
            c.dirty = true;
            Ok(vec![ack(&cmd.command_id, true, "", &fp, Some(c.snap.clone()))])
        }
        Some(Down::GateDecision(g)) => {
            let key = CanaryKey::new(g.namespace.clone(), g.name.clone());
            if let Some(c) = canaries.get_mut(&key)
                && g.open
                && fingerprint(&c.target) == g.fingerprint
                && c.snap.last_applied_spec != g.fingerprint
                && !c.rejected.contains(&g.fingerprint)
            {
                c.gate_open = Some(g.fingerprint.clone());
                if !g.rollout.is_empty() {
                    c.snap.rollout = g.rollout.clone();
                }
                if c.snap.phase != "Progressing" {
                    start(c, &g.fingerprint);
                    *analyses.entry(key).or_default() += 1;
                    return Ok(vec![up(Up::Status(v1::CanaryUpdate {
                        canary: Some(c.snap.clone()),
                        canaries: Vec::new(),
                    }))]);
                }
            }
            Ok(Vec::new())
        }
        Some(Down::Revert(cmd)) => {
            let c = command_target(canaries, commands, &cmd.command_id, &cmd.namespace, &cmd.name)?;
            let rev = cmd.revision.as_ref().map(Revision::from).unwrap_or_default();
            let fp = fingerprint(&rev);
            c.target = rev.clone();
            c.snap.target_revision = Some(v1::Revision::from(&rev));
            c.snap.primary_revision = Some(v1::Revision::from(&rev));
            c.snap.last_applied_spec = fp.clone();
            c.snap.last_promoted_spec = fp.clone();
            c.snap.phase = "Succeeded".into();
            c.snap.canary_weight = 0;
            c.snap.message = format!("reverted: {}", cmd.reason);
            c.gate_open = None;
            c.dirty = true;
            Ok(vec![ack(&cmd.command_id, true, "", &fp, Some(c.snap.clone()))])
        }
        Some(Down::Rollback(cmd)) => {
            let c = command_target(canaries, commands, &cmd.command_id, &cmd.namespace, &cmd.name)?;
            let fp = fingerprint(&c.target);
            if c.snap.phase == "Progressing" || c.snap.phase == "Waiting" {
                c.snap.phase = "Failed".into();
                c.snap.canary_weight = 0;
                c.snap.last_applied_spec = fp.clone();
                c.snap.message = format!("rolled back by the coordinator: {}", cmd.reason);
                c.dirty = true;
            }
            c.rejected.insert(fp.clone());
            Ok(vec![ack(&cmd.command_id, true, "", &fp, Some(c.snap.clone()))])
        }
        Some(Down::Welcome(_)) | Some(Down::Heartbeat(_)) | None => Ok(Vec::new()),
    }
}
