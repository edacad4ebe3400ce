//! The state of one rollout and the step that moves it forward.
//!
//! [`reconcile`] reads the plan, the state and what the agents report, mutates the state and
//! returns the commands that follow from the new state. The caller persists the state before it
//! sends them. Only durable facts live in the state (phases, attempts, acked fingerprints,
//! verdicts, the bake baseline, the history); live values (weights, connectivity) are read from
//! the fleet view when shown, so an agent's status update does not cause a write.

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::duration::format_go_duration;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::plan::{Mode, Plan, RollbackScope, WavePlan};
use super::{CanaryKey, CanaryObs, FleetView, GateAsk, Observation, Revision, elapsed, phase, plus};

/// Rollout phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutPhase {
    Pending,
    Running,
    Paused,
    RollingBack,
    Succeeded,
    Failed,
    Aborted,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Paused => "Paused",
            Self::RollingBack => "RollingBack",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Aborted => "Aborted",
        }
    }

    /// Succeeded, Failed or Aborted: nothing changes any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }
}

/// Wave phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WavePhase {
    Pending,
    WaitingApproval,
    Running,
    Baking,
    Succeeded,
    Failed,
    Cancelled,
}

impl WavePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::WaitingApproval => "WaitingApproval",
            Self::Running => "Running",
            Self::Baking => "Baking",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }

    fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Cluster phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterPhase {
    Pending,
    /// Started (command sent or gate opened), its analysis not seen yet.
    Starting,
    Progressing,
    Succeeded,
    Failed,
    Skipped,
    /// Being put back on its previous revision (see [`Undo`]).
    Reverting,
    Reverted,
}

impl ClusterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Starting => "Starting",
            Self::Progressing => "Progressing",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Skipped => "Skipped",
            Self::Reverting => "Reverting",
            Self::Reverted => "Reverted",
        }
    }

    /// Started and not finished: counts against `maxConcurrent`.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Starting | Self::Progressing)
    }
}

/// How a reverting cluster is being put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Undo {
    /// Its analysis was running: `RollbackCanary`.
    Rollback,
    /// It had been promoted: `Revert` to the pinned previous revision.
    Revert,
}

/// Who and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub actor: String,
    pub time: Timestamp,
}

/// A rollout's state (everything here is persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: RolloutPhase,
    pub message: String,
    pub created: Timestamp,
    pub finished: Option<Timestamp>,
    /// Set when the rollout started rolling back: why, and whether it was an abort.
    pub rollback: Option<RollbackRun>,
    pub waves: Vec<WaveState>,
    pub history: Vec<HistoryEntry>,
}

/// A rollback in progress (or done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRun {
    pub reason: String,
    pub aborted: bool,
    pub started: Timestamp,
}

/// One wave's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveState {
    pub phase: WavePhase,
    pub approved: Option<Stamp>,
    pub started: Option<Timestamp>,
    pub bake: Option<BakeProgress>,
    pub clusters: Vec<ClusterState>,
}

/// A bake in progress (or done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BakeProgress {
    pub started: Timestamp,
    /// `served_requests` of each succeeded cluster when the bake started (re-based to 0 when
    /// the agent's counter restarts: evidence is under-counted, never over-counted).
    pub baseline: BTreeMap<String, u64>,
    /// The total when the bake ended.
    pub requests: Option<u64>,
}

/// One cluster's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub phase: ClusterPhase,
    /// Starts so far (retry starts again).
    pub attempts: u32,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    /// The fingerprint of the new revision in this cluster: from the agent's Ack (push) or its
    /// gate request (gate).
    pub fingerprint: Option<String>,
    pub undo: Option<Undo>,
    pub undo_started: Option<Timestamp>,
    /// The fingerprint whose analysis had already failed when this attempt started (a retry):
    /// that stale Failed is not this attempt's outcome.
    #[serde(default)]
    pub stale_failure: Option<String>,
    /// The last reported canary values when the outcome was decided.
    pub canary_phase: String,
    pub canary_weight: i32,
    pub failed_checks: i32,
    /// Why it ended as it did.
    pub verdict: String,
    pub metrics: BTreeMap<String, f64>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: Timestamp,
    /// created, started, wave-started, wave-waiting-approval, cluster-started, gate-opened,
    /// cluster-succeeded, cluster-failed, wave-baking, bake-regression, wave-succeeded,
    /// rollback-started, cluster-rollback, cluster-revert, cluster-reverted, rollout-succeeded,
    /// rollout-failed, rollout-aborted, or a verb: paused, resumed, aborted, wave-approved,
    /// cluster-skipped, cluster-retried.
    pub kind: String,
    pub actor: String,
    pub wave: String,
    pub cluster: String,
    pub message: String,
    pub metrics: BTreeMap<String, f64>,
}

/// What the coordinator must send (to the agent of `cluster`, about the plan's canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Push mode: apply the revision. The id is `<rollout>/<cluster>/<attempt>`.
    StartRevision {
        id: String,
        cluster: String,
        revision: Revision,
    },
    /// Gate mode: open the confirm-rollout gate for this fingerprint.
    OpenGate { cluster: String, fingerprint: String },
    /// Roll the running analysis back now.
    RollbackCanary {
        id: String,
        cluster: String,
        reason: String,
    },
    /// Put the promoted cluster back on its previous revision, without analysis.
    Revert {
        id: String,
        cluster: String,
        revision: Revision,
        reason: String,
    },
}

impl Command {
    /// The cluster the command goes to.
    pub fn cluster(&self) -> &str {
        match self {
            Command::StartRevision { cluster, .. }
            | Command::OpenGate { cluster, .. }
            | Command::RollbackCanary { cluster, .. }
            | Command::Revert { cluster, .. } => cluster,
        }
    }
}

/// The system's own name in the history.
pub const COORDINATOR: &str = "coordinator";

impl RolloutState {
    /// A new rollout: Pending, with the `created` record.
    pub fn new(plan: &Plan, actor: &str, now: Timestamp) -> Self {
        let mut s = Self {
            phase: RolloutPhase::Pending,
            message: "created".into(),
            created: now,
            finished: None,
            rollback: None,
            waves: plan
                .waves
                .iter()
                .map(|w| WaveState {
                    phase: WavePhase::Pending,
                    approved: None,
                    started: None,
                    bake: None,
                    clusters: w
                        .clusters
                        .iter()
                        .map(|c| ClusterState {
                            name: c.name.clone(),
                            phase: ClusterPhase::Pending,
                            attempts: 0,
                            started: None,
                            finished: None,
                            fingerprint: None,
                            undo: None,
                            undo_started: None,
                            stale_failure: None,
                            canary_phase: String::new(),
                            canary_weight: 0,
                            failed_checks: 0,
                            verdict: String::new(),
                            metrics: BTreeMap::new(),
                        })
                        .collect(),
                })
                .collect(),
            history: Vec::new(),
        };
        let waves: Vec<String> = plan
            .waves
            .iter()
            .map(|w| {
                let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
                format!("{} [{}]", w.name, names.join(", "))
            })
            .collect();
        let mut message = format!(
            "plan: {} of {} to {} ({} mode), waves {}; max failed clusters {}, rollback scope {}",
            plan.cluster_count(),
            plan.canary,
            plan.revision,
            plan.mode.as_str(),
            waves.join(", "),
            plan.max_failed_clusters,
            plan.rollback.as_str()
        );
        if !plan.excluded.is_empty() {
            message.push_str(&format!("; not planned: {}", plan.excluded.join("; ")));
        }
        s.record(now, "created", actor, "", "", message, BTreeMap::new());
        s
    }

    /// Appends a history record (one parameter per field of [`HistoryEntry`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        time: Timestamp,
        kind: &str,
        actor: &str,
        wave: &str,
        cluster: &str,
        message: impl Into<String>,
        metrics: BTreeMap<String, f64>,
    ) {
        self.history.push(HistoryEntry {
            time,
            kind: kind.into(),
            actor: actor.into(),
            wave: wave.into(),
            cluster: cluster.into(),
            message: message.into(),
            metrics,
        });
    }

    /// Clusters in phase Failed (they count against the budget).
    pub fn failed_clusters(&self) -> u32 {
        self.clusters()
            .filter(|c| c.phase == ClusterPhase::Failed)
            .count() as u32
    }

    /// Every cluster's state, in plan order.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterState> {
        self.waves.iter().flat_map(|w| w.clusters.iter())
    }

    /// The first wave that has not completed (None when all have).
    pub fn current_wave(&self) -> Option<usize> {
        self.waves.iter().position(|w| !w.phase.is_done())
    }

    pub(crate) fn cluster_mut(&mut self, name: &str) -> Option<(usize, &mut ClusterState)> {
        self.waves
            .iter_mut()
            .enumerate()
            .find_map(|(wi, w)| w.clusters.iter_mut().find(|c| c.name == name).map(|c| (wi, c)))
    }
}

fn snapshot_metrics(obs: Option<&CanaryObs>) -> BTreeMap<String, f64> {
    let mut m = obs.map(|o| o.metrics.clone()).unwrap_or_default();
    if let Some(o) = obs {
        m.insert("canaryWeight".into(), f64::from(o.canary_weight));
        m.insert("failedChecks".into(), f64::from(o.failed_checks));
        if let Some(r) = o.primary_success_rate {
            m.insert("primarySuccessRate".into(), r);
        }
    }
    m
}

fn keep_snapshot(c: &mut ClusterState, obs: Option<&CanaryObs>) {
    if let Some(o) = obs {
        c.canary_phase = o.phase.clone();
        c.canary_weight = o.canary_weight;
        c.failed_checks = o.failed_checks;
        c.metrics = snapshot_metrics(Some(o));
    }
}

fn describe_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the snapshot shows the pinned previous revision on the primary.
fn primary_is_previous(plan: &Plan, wi: usize, cluster: &str, obs: &CanaryObs) -> bool {
    let Some(cp) = plan.waves[wi].clusters.iter().find(|c| c.name == cluster) else {
        return false;
    };
    (!cp.previous_revision.is_empty() && obs.primary_revision == cp.previous_revision)
        || (!cp.previous_fingerprint.is_empty() && obs.last_promoted_spec == cp.previous_fingerprint)
}

/// Moves the rollout forward: cluster outcomes from the agents' snapshots, deadlines, bakes, the
/// failure policy, rollbacks, wave transitions and new starts. Returns the commands to send
/// after the new state is persisted. Terminal rollouts never change.
pub fn reconcile(plan: &Plan, state: &mut RolloutState, view: &FleetView, now: Timestamp) -> Vec<Command> {
    let mut out = Vec::new();
    if state.phase.is_terminal() {
        return out;
    }
    if state.phase == RolloutPhase::Pending {
        state.phase = RolloutPhase::Running;
        state.message = "running".into();
        state.record(
            now,
            "started",
            COORDINATOR,
            "",
            "",
            "rollout started",
            BTreeMap::new(),
        );
    }
    let unknown = Observation::default();
    let obs_of = |name: &str| view.get(name).unwrap_or(&unknown);

    // 1. Running clusters: fingerprints (gate mode), outcomes, deadlines.
    for wi in 0..state.waves.len() {
        let wave_name = plan.waves[wi].name.clone();
        for ci in 0..state.waves[wi].clusters.len() {
            let c = &state.waves[wi].clusters[ci];
            if !c.phase.is_running() {
                continue;
            }
            let name = c.name.clone();
            let obs = obs_of(&name);
            if let Some((kind, msg, metrics)) =
                observe_running(plan, &mut state.waves[wi].clusters[ci], obs, now, &mut out)
            {
                state.record(now, kind, COORDINATOR, &wave_name, &name, msg, metrics);
            }
        }
    }

    // 2. Bake regressions in a baking wave.
    if state.rollback.is_none()
        && let Some(wi) = state.current_wave()
        && state.waves[wi].phase == WavePhase::Baking
    {
        let min_rate = plan.waves[wi].bake.as_ref().and_then(|b| b.min_success_rate);
        let wave_name = plan.waves[wi].name.clone();
        for ci in 0..state.waves[wi].clusters.len() {
            let c = &state.waves[wi].clusters[ci];
            if c.phase != ClusterPhase::Succeeded {
                continue;
            }
            let name = c.name.clone();
            let Some(o) = obs_of(&name).canary.as_ref() else {
                continue;
            };
            let why = if o.phase == phase::FAILED {
                Some(format!("canary phase Failed during the bake: {}", o.message))
            } else {
                match (min_rate, o.primary_success_rate) {
                    (Some(min), Some(rate)) if rate < min => Some(format!(
                        "primary success rate {rate}% < bake.minSuccessRate {min}% during the bake"
                    )),
                    _ => None,
                }
            };
            if let Some(why) = why {
                let c = &mut state.waves[wi].clusters[ci];
                keep_snapshot(c, Some(o));
                c.phase = ClusterPhase::Failed;
                c.finished = Some(now);
                c.verdict = format!("regressed: {why}");
                let metrics = c.metrics.clone();
                let verdict = c.verdict.clone();
                state.record(
                    now,
                    "bake-regression",
                    COORDINATOR,
                    &wave_name,
                    &name,
                    verdict,
                    metrics,
                );
            }
        }
    }

    // 3. Reverting clusters.
    for wi in 0..state.waves.len() {
        let wave_name = plan.waves[wi].name.clone();
        for ci in 0..state.waves[wi].clusters.len() {
            let c = &state.waves[wi].clusters[ci];
            if c.phase != ClusterPhase::Reverting {
                continue;
            }
            let name = c.name.clone();
            let obs = obs_of(&name).canary.as_ref();
            let undo = c.undo.unwrap_or(Undo::Rollback);
            let done = obs.is_some_and(|o| {
                primary_is_previous(plan, wi, &name, o)
                    && match undo {
                        Undo::Revert => o.phase == phase::SUCCEEDED,
                        Undo::Rollback => !phase::RUNNING.contains(&o.phase.as_str()),
                    }
            });
            let since = c.undo_started.unwrap_or(now);
            let c = &mut state.waves[wi].clusters[ci];
            if done {
                keep_snapshot(c, obs);
                c.phase = ClusterPhase::Reverted;
                c.finished = Some(now);
                let msg = format!(
                    "back on its previous revision {} ({})",
                    plan.waves[wi].clusters[ci].previous_revision,
                    if undo == Undo::Revert {
                        "reverted"
                    } else {
                        "rolled back"
                    }
                );
                c.verdict = msg.clone();
                state.record(
                    now,
                    "cluster-reverted",
                    COORDINATOR,
                    &wave_name,
                    &name,
                    msg,
                    BTreeMap::new(),
                );
            } else if elapsed(now, since) >= plan.cluster_deadline {
                keep_snapshot(c, obs);
                c.phase = ClusterPhase::Failed;
                c.finished = Some(now);
                let msg = format!(
                    "not back on its previous revision within clusterDeadline {}",
                    format_go_duration(plan.cluster_deadline)
                );
                c.verdict = msg.clone();
                state.record(
                    now,
                    "cluster-failed",
                    COORDINATOR,
                    &wave_name,
                    &name,
                    msg,
                    BTreeMap::new(),
                );
            }
        }
    }

    // 4. Failure policy.
    if state.rollback.is_none() {
        let failed = state.failed_clusters();
        let mandatory = plan
            .waves
            .iter()
            .zip(&state.waves)
            .find(|(p, s)| p.mandatory && s.clusters.iter().any(|c| c.phase == ClusterPhase::Failed));
        let reason = if let Some((p, s)) = mandatory {
            let c = s.clusters.iter().find(|c| c.phase == ClusterPhase::Failed);
            Some(format!(
                "cluster {} failed in mandatory wave {}: {}",
                c.map(|c| c.name.as_str()).unwrap_or(""),
                p.name,
                c.map(|c| c.verdict.as_str()).unwrap_or("")
            ))
        } else if failed > plan.max_failed_clusters {
            Some(format!(
                "{failed} failed clusters exceed maxFailedClusters {}",
                plan.max_failed_clusters
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            begin_rollback(plan, state, reason, false, COORDINATOR, now, &mut out);
        }
    }

    // 5. A rollback: scope `all` unwinds wave by wave; then the rollout ends.
    if state.phase == RolloutPhase::RollingBack {
        if plan.rollback == RollbackScope::All
            && !state
                .clusters()
                .any(|c| c.phase == ClusterPhase::Reverting && c.undo == Some(Undo::Revert))
            && let Some(wi) = (0..state.waves.len()).rev().find(|&wi| {
                state.waves[wi]
                    .clusters
                    .iter()
                    .any(|c| c.phase == ClusterPhase::Succeeded)
            })
        {
            revert_wave(plan, state, wi, now, &mut out);
        }
        if !state.clusters().any(|c| c.phase == ClusterPhase::Reverting) {
            finish_rollback(state, now);
        }
        return out;
    }

    // 6. Waves. Retried clusters of completed waves start first (their wave's limit applies).
    let paused = state.phase == RolloutPhase::Paused;
    if !paused {
        for wi in 0..state.waves.len() {
            if state.waves[wi].phase == WavePhase::Succeeded {
                start_clusters(plan, state, wi, view, now, &mut out);
            }
        }
    }
    while let Some(wi) = state.current_wave() {
        let wp = &plan.waves[wi];
        let wave_name = wp.name.clone();
        match state.waves[wi].phase {
            WavePhase::Pending => {
                if paused {
                    break;
                }
                if wp.manual_approval && state.waves[wi].approved.is_none() {
                    state.waves[wi].phase = WavePhase::WaitingApproval;
                    state.message = format!("wave {wave_name} is waiting for approval");
                    state.record(
                        now,
                        "wave-waiting-approval",
                        COORDINATOR,
                        &wave_name,
                        "",
                        format!("approve with: aviary rollout approve {} {wave_name}", plan.name),
                        BTreeMap::new(),
                    );
                    break;
                }
                start_wave(plan, state, wi, now);
            }
            WavePhase::WaitingApproval => {
                if paused || state.waves[wi].approved.is_none() {
                    break;
                }
                start_wave(plan, state, wi, now);
            }
            WavePhase::Running => {
                if !paused {
                    start_clusters(plan, state, wi, view, now, &mut out);
                }
                let w = &state.waves[wi];
                let settled = w.clusters.iter().all(|c| {
                    matches!(
                        c.phase,
                        ClusterPhase::Succeeded | ClusterPhase::Skipped | ClusterPhase::Failed
                    )
                });
                if !settled {
                    break;
                }
                let succeeded: Vec<String> = w
                    .clusters
                    .iter()
                    .filter(|c| c.phase == ClusterPhase::Succeeded)
                    .map(|c| c.name.clone())
                    .collect();
                match &wp.bake {
                    Some(b) if !succeeded.is_empty() => {
                        let baseline = succeeded
                            .iter()
                            .map(|n| {
                                let served = obs_of(n).canary.as_ref().map_or(0, |o| o.served_requests);
                                (n.clone(), served)
                            })
                            .collect();
                        state.waves[wi].phase = WavePhase::Baking;
                        state.waves[wi].bake = Some(BakeProgress {
                            started: now,
                            baseline,
                            requests: None,
                        });
                        state.message = format!("wave {wave_name} is baking");
                        state.record(
                            now,
                            "wave-baking",
                            COORDINATOR,
                            &wave_name,
                            "",
                            format!(
                                "bake: at least {} and {} requests{}",
                                format_go_duration(b.duration),
                                b.min_requests,
                                b.min_success_rate
                                    .map(|r| format!(", primary success rate ≥ {r}%"))
                                    .unwrap_or_default()
                            ),
                            BTreeMap::new(),
                        );
                        break;
                    }
                    _ => complete_wave(plan, state, wi, now, String::new()),
                }
            }
            WavePhase::Baking => {
                let Some(b) = &wp.bake else {
                    complete_wave(plan, state, wi, now, String::new());
                    continue;
                };
                // Rebase counters that restarted (the agent restarted): never over-count.
                let bake = state.waves[wi].bake.as_mut().expect("a baking wave has a bake");
                for (n, base) in bake.baseline.iter_mut() {
                    let cur = obs_of(n).canary.as_ref().map_or(*base, |o| o.served_requests);
                    if cur < *base {
                        *base = 0;
                    }
                }
                let started = bake.started;
                let requests = bake_requests(state, wi, view);
                let baked = elapsed(now, started);
                if baked >= b.duration && requests >= b.min_requests {
                    let bake = state.waves[wi].bake.as_mut().expect("a baking wave has a bake");
                    bake.requests = Some(requests);
                    let msg = format!(
                        "bake done: {} elapsed (≥ {}), {requests} requests (≥ {})",
                        format_go_duration(truncate_secs(baked)),
                        format_go_duration(b.duration),
                        b.min_requests
                    );
                    let mut m = BTreeMap::new();
                    m.insert("bakeRequests".into(), requests as f64);
                    m.insert("bakeSeconds".into(), baked.as_secs_f64().floor());
                    complete_wave_with(plan, state, wi, now, msg, m);
                } else {
                    break;
                }
            }
            WavePhase::Succeeded | WavePhase::Failed | WavePhase::Cancelled => break,
        }
    }
    let unsettled = state
        .clusters()
        .any(|c| c.phase == ClusterPhase::Pending || c.phase.is_running());
    if state.current_wave().is_none() && !unsettled {
        state.phase = RolloutPhase::Succeeded;
        state.finished = Some(now);
        let failed = state.failed_clusters();
        let skipped = state
            .clusters()
            .filter(|c| c.phase == ClusterPhase::Skipped)
            .count();
        let ok = state
            .clusters()
            .filter(|c| c.phase == ClusterPhase::Succeeded)
            .count();
        state.message = format!("{ok} clusters succeeded, {failed} failed, {skipped} skipped");
        let msg = state.message.clone();
        state.record(
            now,
            "rollout-succeeded",
            COORDINATOR,
            "",
            "",
            msg,
            BTreeMap::new(),
        );
    }
    out
}

fn truncate_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// The outcome of one running cluster; returns a history record when something happened.
fn observe_running(
    plan: &Plan,
    c: &mut ClusterState,
    obs: &Observation,
    now: Timestamp,
    out: &mut Vec<Command>,
) -> Option<(&'static str, String, BTreeMap<String, f64>)> {
    let mut event = None;
    if plan.mode == Mode::Gate
        && c.fingerprint.is_none()
        && let Some(ask) = &obs.gate_request
        && plan.revision.satisfied_by(&ask.revision)
    {
        c.fingerprint = Some(ask.fingerprint.clone());
        out.push(Command::OpenGate {
            cluster: c.name.clone(),
            fingerprint: ask.fingerprint.clone(),
        });
        event = Some((
            "gate-opened",
            format!("gate opened for {} ({})", ask.fingerprint, ask.revision),
            BTreeMap::new(),
        ));
    }
    let snap = obs.canary.as_ref();
    if let (Some(fp), Some(o)) = (c.fingerprint.clone(), snap)
        && o.last_applied_spec == fp
    {
        if o.phase == phase::SUCCEEDED && o.last_promoted_spec == fp {
            keep_snapshot(c, Some(o));
            c.phase = ClusterPhase::Succeeded;
            c.finished = Some(now);
            c.verdict = format!(
                "promoted {fp} after {} failed checks{}",
                o.failed_checks,
                metrics_suffix(&c.metrics)
            );
            return Some(("cluster-succeeded", c.verdict.clone(), c.metrics.clone()));
        }
        if o.phase == phase::FAILED && c.stale_failure.as_deref() == Some(fp.as_str()) {
            // The previous attempt's result: wait for the agent to restart the analysis.
        } else if o.phase == phase::FAILED {
            keep_snapshot(c, Some(o));
            c.phase = ClusterPhase::Failed;
            c.finished = Some(now);
            c.verdict = format!(
                "canary analysis failed at weight {} with {} failed checks{}{}",
                o.canary_weight,
                o.failed_checks,
                if o.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", o.message)
                },
                metrics_suffix(&c.metrics)
            );
            return Some(("cluster-failed", c.verdict.clone(), c.metrics.clone()));
        }
        if o.phase != phase::FAILED {
            c.stale_failure = None;
        }
        if c.phase == ClusterPhase::Starting && phase::RUNNING.contains(&o.phase.as_str()) {
            c.phase = ClusterPhase::Progressing;
        }
    }
    let started = c.started.unwrap_or(now);
    if elapsed(now, started) >= plan.cluster_deadline {
        keep_snapshot(c, snap);
        c.phase = ClusterPhase::Failed;
        c.finished = Some(now);
        c.verdict = format!(
            "did not finish within clusterDeadline {}: last reported phase {}, weight {}{}",
            format_go_duration(plan.cluster_deadline),
            snap.map_or("<none>", |o| o.phase.as_str()),
            snap.map_or(0, |o| o.canary_weight),
            if obs.connected {
                ""
            } else {
                " (agent not connected)"
            }
        );
        return Some(("cluster-failed", c.verdict.clone(), c.metrics.clone()));
    }
    event
}

fn metrics_suffix(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({})", describe_metrics(m))
    }
}

fn start_wave(plan: &Plan, state: &mut RolloutState, wi: usize, now: Timestamp) {
    let wp = &plan.waves[wi];
    state.waves[wi].phase = WavePhase::Running;
    state.waves[wi].started = Some(now);
    state.message = format!("wave {} is running", wp.name);
    let approved = state.waves[wi]
        .approved
        .as_ref()
        .map(|a| format!(", approved by {}", a.actor))
        .unwrap_or_default();
    state.record(
        now,
        "wave-started",
        COORDINATOR,
        &wp.name,
        "",
        format!(
            "{} clusters, at most {} at once{approved}",
            wp.clusters.len(),
            wp.max_concurrent
        ),
        BTreeMap::new(),
    );
}

/// Starts pending clusters of a running wave up to `maxConcurrent`.
fn start_clusters(
    plan: &Plan,
    state: &mut RolloutState,
    wi: usize,
    view: &FleetView,
    now: Timestamp,
    out: &mut Vec<Command>,
) {
    let wp: &WavePlan = &plan.waves[wi];
    loop {
        let w = &state.waves[wi];
        let running = w.clusters.iter().filter(|c| c.phase.is_running()).count() as u32;
        if running >= wp.max_concurrent {
            return;
        }
        let Some(ci) = w.clusters.iter().position(|c| c.phase == ClusterPhase::Pending) else {
            return;
        };
        let c = &mut state.waves[wi].clusters[ci];
        c.phase = ClusterPhase::Starting;
        c.attempts += 1;
        c.started = Some(now);
        c.finished = None;
        c.fingerprint = None;
        c.verdict.clear();
        c.stale_failure = view
            .get(&c.name)
            .and_then(|o| o.canary.as_ref())
            .filter(|o| o.phase == phase::FAILED)
            .map(|o| o.last_applied_spec.clone());
        let name = c.name.clone();
        let attempt = c.attempts;
        let mut msg = format!("attempt {attempt}");
        match plan.mode {
            Mode::Push => {
                let id = plan.start_id(&name, attempt);
                msg.push_str(&format!(": StartRevision {id} ({})", plan.revision));
                out.push(Command::StartRevision {
                    id,
                    cluster: name.clone(),
                    revision: plan.revision.clone(),
                });
            }
            Mode::Gate => {
                msg.push_str(": the confirm-rollout gate opens for the new revision");
                if let Some(ask) = view.get(&name).and_then(|o| o.gate_request.as_ref())
                    && plan.revision.satisfied_by(&ask.revision)
                {
                    c.fingerprint = Some(ask.fingerprint.clone());
                    out.push(Command::OpenGate {
                        cluster: name.clone(),
                        fingerprint: ask.fingerprint.clone(),
                    });
                    let opened = format!("gate opened for {} ({})", ask.fingerprint, ask.revision);
                    state.record(
                        now,
                        "cluster-started",
                        COORDINATOR,
                        &wp.name,
                        &name,
                        msg,
                        BTreeMap::new(),
                    );
                    state.record(
                        now,
                        "gate-opened",
                        COORDINATOR,
                        &wp.name,
                        &name,
                        opened,
                        BTreeMap::new(),
                    );
                    continue;
                }
            }
        }
        state.record(
            now,
            "cluster-started",
            COORDINATOR,
            &wp.name,
            &name,
            msg,
            BTreeMap::new(),
        );
    }
}

fn complete_wave(plan: &Plan, state: &mut RolloutState, wi: usize, now: Timestamp, msg: String) {
    complete_wave_with(plan, state, wi, now, msg, BTreeMap::new());
}

fn complete_wave_with(
    plan: &Plan,
    state: &mut RolloutState,
    wi: usize,
    now: Timestamp,
    msg: String,
    metrics: BTreeMap<String, f64>,
) {
    let w = &state.waves[wi];
    let count = |p: ClusterPhase| w.clusters.iter().filter(|c| c.phase == p).count();
    let mut summary = format!(
        "{} succeeded, {} failed, {} skipped",
        count(ClusterPhase::Succeeded),
        count(ClusterPhase::Failed),
        count(ClusterPhase::Skipped)
    );
    if !msg.is_empty() {
        summary = format!("{summary}; {msg}");
    }
    state.waves[wi].phase = WavePhase::Succeeded;
    let name = plan.waves[wi].name.clone();
    state.record(now, "wave-succeeded", COORDINATOR, &name, "", summary, metrics);
}

/// Starts rolling back: no new starts, running canaries get `RollbackCanary`, the scope is
/// applied. Used by the failure policy and by abort.
pub(crate) fn begin_rollback(
    plan: &Plan,
    state: &mut RolloutState,
    reason: String,
    aborted: bool,
    actor: &str,
    now: Timestamp,
    out: &mut Vec<Command>,
) {
    let current = state.current_wave();
    state.phase = RolloutPhase::RollingBack;
    state.message = format!("rolling back: {reason}");
    state.rollback = Some(RollbackRun {
        reason: reason.clone(),
        aborted,
        started: now,
    });
    state.record(
        now,
        "rollback-started",
        actor,
        "",
        "",
        format!("{reason}; rollback scope {}", plan.rollback.as_str()),
        BTreeMap::new(),
    );
    for wi in 0..state.waves.len() {
        let wave_name = plan.waves[wi].name.clone();
        for ci in 0..state.waves[wi].clusters.len() {
            let c = &mut state.waves[wi].clusters[ci];
            if !c.phase.is_running() {
                continue;
            }
            c.phase = ClusterPhase::Reverting;
            c.undo = Some(Undo::Rollback);
            c.undo_started = Some(now);
            let id = format!("{}/rollback", plan.start_id(&c.name, c.attempts));
            let name = c.name.clone();
            out.push(Command::RollbackCanary {
                id: id.clone(),
                cluster: name.clone(),
                reason: reason.clone(),
            });
            state.record(
                now,
                "cluster-rollback",
                actor,
                &wave_name,
                &name,
                format!("RollbackCanary {id}"),
                BTreeMap::new(),
            );
        }
    }
    if let Some(wi) = current {
        state.waves[wi].phase = if aborted {
            WavePhase::Cancelled
        } else {
            WavePhase::Failed
        };
        for w in state.waves.iter_mut().skip(wi + 1) {
            w.phase = WavePhase::Cancelled;
        }
        if plan.rollback != RollbackScope::Cluster {
            // `wave` reverts the current wave; `all` starts with it (the newest) too.
            revert_wave(plan, state, wi, now, out);
        }
    }
}

/// Sends `Revert` to every succeeded cluster of a wave.
fn revert_wave(plan: &Plan, state: &mut RolloutState, wi: usize, now: Timestamp, out: &mut Vec<Command>) {
    let reason = state
        .rollback
        .as_ref()
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    let wave_name = plan.waves[wi].name.clone();
    for ci in 0..state.waves[wi].clusters.len() {
        let c = &mut state.waves[wi].clusters[ci];
        if c.phase != ClusterPhase::Succeeded {
            continue;
        }
        c.phase = ClusterPhase::Reverting;
        c.undo = Some(Undo::Revert);
        c.undo_started = Some(now);
        let id = format!("{}/revert", plan.start_id(&c.name, c.attempts));
        let revision = plan.waves[wi].clusters[ci].previous_revision.clone();
        let name = c.name.clone();
        out.push(Command::Revert {
            id: id.clone(),
            cluster: name.clone(),
            revision: revision.clone(),
            reason: format!(
                "rollout {} rolls back (scope {}): {reason}",
                plan.name,
                plan.rollback.as_str()
            ),
        });
        state.record(
            now,
            "cluster-revert",
            COORDINATOR,
            &wave_name,
            &name,
            format!("Revert {id} to {revision}"),
            BTreeMap::new(),
        );
    }
}

fn finish_rollback(state: &mut RolloutState, now: Timestamp) {
    let run = state.rollback.clone().unwrap_or(RollbackRun {
        reason: String::new(),
        aborted: false,
        started: now,
    });
    state.phase = if run.aborted {
        RolloutPhase::Aborted
    } else {
        RolloutPhase::Failed
    };
    state.finished = Some(now);
    let reverted = state
        .clusters()
        .filter(|c| c.phase == ClusterPhase::Reverted)
        .count();
    state.message = format!("{} ({reverted} clusters rolled back or reverted)", run.reason);
    let kind = if run.aborted {
        "rollout-aborted"
    } else {
        "rollout-failed"
    };
    let msg = state.message.clone();
    state.record(now, kind, COORDINATOR, "", "", msg, BTreeMap::new());
}

/// Requests the wave's succeeded clusters served since its bake started (live, from the view).
pub fn bake_requests(state: &RolloutState, wi: usize, view: &FleetView) -> u64 {
    let Some(bake) = state.waves.get(wi).and_then(|w| w.bake.as_ref()) else {
        return 0;
    };
    if let Some(done) = bake.requests {
        return done;
    }
    bake.baseline
        .iter()
        .map(|(n, base)| {
            let cur = view
                .get(n)
                .and_then(|o| o.canary.as_ref())
                .map_or(*base, |o| o.served_requests);
            cur.saturating_sub(*base)
        })
        .sum()
}

/// When [`reconcile`] must run again even if nothing is reported: the earliest cluster deadline
/// or bake end after `now`. `None` for a terminal rollout or when nothing is timed (a bake whose
/// time has passed waits for evidence, which arrives with agent reports).
pub fn next_wake(plan: &Plan, state: &RolloutState, now: Timestamp) -> Option<Timestamp> {
    if state.phase.is_terminal() {
        return None;
    }
    let mut times = Vec::new();
    for (wi, w) in state.waves.iter().enumerate() {
        for c in &w.clusters {
            if c.phase.is_running()
                && let Some(s) = c.started
            {
                times.push(plus(s, plan.cluster_deadline));
            }
            if c.phase == ClusterPhase::Reverting
                && let Some(s) = c.undo_started
            {
                times.push(plus(s, plan.cluster_deadline));
            }
        }
        if w.phase == WavePhase::Baking
            && let (Some(b), Some(p)) = (&w.bake, &plan.waves[wi].bake)
        {
            times.push(plus(b.started, p.duration));
        }
    }
    times.into_iter().filter(|t| *t > now).min()
}

/// The commands the current state implies that may not have reached their agent: re-send them
/// (same ids) when an agent reconnects or a new leader takes over. Agents treat repeats as
/// no-ops.
pub fn pending_commands(plan: &Plan, state: &RolloutState) -> Vec<Command> {
    let mut out = Vec::new();
    if state.phase.is_terminal() {
        return out;
    }
    let reason = state
        .rollback
        .as_ref()
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    for (wi, w) in state.waves.iter().enumerate() {
        for (ci, c) in w.clusters.iter().enumerate() {
            match (c.phase, c.undo) {
                (ClusterPhase::Starting, _) if plan.mode == Mode::Push && c.fingerprint.is_none() => {
                    out.push(Command::StartRevision {
                        id: plan.start_id(&c.name, c.attempts),
                        cluster: c.name.clone(),
                        revision: plan.revision.clone(),
                    });
                }
                (ClusterPhase::Starting | ClusterPhase::Progressing, _) if plan.mode == Mode::Gate => {
                    if let Some(fp) = &c.fingerprint {
                        out.push(Command::OpenGate {
                            cluster: c.name.clone(),
                            fingerprint: fp.clone(),
                        });
                    }
                }
                (ClusterPhase::Reverting, Some(Undo::Revert)) => out.push(Command::Revert {
                    id: format!("{}/revert", plan.start_id(&c.name, c.attempts)),
                    cluster: c.name.clone(),
                    revision: plan.waves[wi].clusters[ci].previous_revision.clone(),
                    reason: reason.clone(),
                }),
                (ClusterPhase::Reverting, _) => out.push(Command::RollbackCanary {
                    id: format!("{}/rollback", plan.start_id(&c.name, c.attempts)),
                    cluster: c.name.clone(),
                    reason: reason.clone(),
                }),
                _ => {}
            }
        }
    }
    out
}

/// An agent's Ack. Records the fingerprint of a `StartRevision` of the current attempt (or
/// fails the cluster if the agent could not apply it). Returns whether the state changed; acks
/// of older attempts and repeats change nothing.
pub fn on_ack(
    plan: &Plan,
    state: &mut RolloutState,
    command_id: &str,
    ok: bool,
    fingerprint: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if state.phase.is_terminal() {
        return false;
    }
    let Some(rest) = command_id
        .strip_prefix(plan.name.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(cluster), Some(attempt)) = (parts.next(), parts.next().and_then(|a| a.parse::<u32>().ok()))
    else {
        return false;
    };
    let suffix = parts.next();
    let Some((wi, c)) = state.cluster_mut(cluster) else {
        return false;
    };
    if c.attempts != attempt {
        return false;
    }
    let wave = plan.waves[wi].name.clone();
    match suffix {
        None if c.phase.is_running() && plan.mode == Mode::Push => {
            if ok && !fingerprint.is_empty() {
                if c.fingerprint.is_some() {
                    return false;
                }
                c.fingerprint = Some(fingerprint.to_string());
                true
            } else if !ok {
                c.phase = ClusterPhase::Failed;
                c.finished = Some(now);
                c.verdict = format!("the agent could not apply the revision: {message}");
                let v = c.verdict.clone();
                state.record(
                    now,
                    "cluster-failed",
                    COORDINATOR,
                    &wave,
                    cluster,
                    v,
                    BTreeMap::new(),
                );
                true
            } else {
                false
            }
        }
        Some("revert" | "rollback") if !ok && c.phase == ClusterPhase::Reverting => {
            let v = format!("the agent could not {}: {message}", suffix.unwrap_or_default());
            if c.verdict == v {
                return false;
            }
            c.verdict = v.clone();
            state.record(
                now,
                "agent-error",
                COORDINATOR,
                &wave,
                cluster,
                v,
                BTreeMap::new(),
            );
            true
        }
        _ => false,
    }
}

/// The answer to a gate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateAnswer {
    pub open: bool,
    /// The rollout that decided, if any.
    pub rollout: Option<String>,
    pub reason: String,
}

/// Decides a confirm-rollout gate request of `cluster` for `canary`, given every rollout
/// (active and ended). Open iff the cluster is started in the active rollout of that canary and
/// the request is for its revision (push: the acked fingerprint; gate: the rollout's revision);
/// closed while that rollout has not started the cluster (or skipped, failed or reverted it);
/// closed for the revision of an ended Failed/Aborted rollout that did not promote it here (so
/// GitOps-applied revisions do not proceed after a failed rollout); open otherwise
/// (unmanaged canaries behave like plain Flagger).
pub fn gate_decision<'a>(
    rollouts: impl IntoIterator<Item = (&'a Plan, &'a RolloutState)>,
    cluster: &str,
    canary: &CanaryKey,
    ask: &GateAsk,
) -> GateAnswer {
    let mut latest_ended: Option<(&Plan, &RolloutState)> = None;
    for (plan, state) in rollouts {
        if &plan.canary != canary {
            continue;
        }
        let Some((wi, ci)) = plan.locate(cluster) else {
            continue;
        };
        if state.phase.is_terminal() {
            if latest_ended.is_none_or(|(_, s)| s.created < state.created) {
                latest_ended = Some((plan, state));
            }
            continue;
        }
        let c = &state.waves[wi].clusters[ci];
        let wave = &plan.waves[wi].name;
        let answer = |open: bool, reason: String| GateAnswer {
            open,
            rollout: Some(plan.name.clone()),
            reason,
        };
        let matches = match plan.mode {
            Mode::Push => match &c.fingerprint {
                Some(fp) => fp == &ask.fingerprint,
                None => plan.revision.satisfied_by(&ask.revision),
            },
            Mode::Gate => match &c.fingerprint {
                Some(fp) => fp == &ask.fingerprint,
                None => plan.revision.satisfied_by(&ask.revision),
            },
        };
        return match c.phase {
            ClusterPhase::Starting | ClusterPhase::Progressing | ClusterPhase::Succeeded if matches => {
                answer(true, format!("started by rollout {} (wave {wave})", plan.name))
            }
            ClusterPhase::Starting | ClusterPhase::Progressing | ClusterPhase::Succeeded => answer(
                false,
                format!(
                    "rollout {} started {} here, not {}",
                    plan.name,
                    c.fingerprint.clone().unwrap_or_else(|| plan.revision.to_string()),
                    ask.fingerprint
                ),
            ),
            ClusterPhase::Pending => {
                let why = match (state.phase, state.waves[wi].phase) {
                    (RolloutPhase::Paused, _) => format!("rollout {} is paused", plan.name),
                    (_, WavePhase::WaitingApproval) => {
                        format!("waiting for wave {wave} of rollout {} to be approved", plan.name)
                    }
                    _ => format!("waiting for wave {wave} of rollout {}", plan.name),
                };
                answer(false, why)
            }
            other => answer(
                false,
                format!("cluster is {} in rollout {}", other.as_str(), plan.name),
            ),
        };
    }
    if let Some((plan, state)) = latest_ended
        && matches!(state.phase, RolloutPhase::Failed | RolloutPhase::Aborted)
        && !plan.revision.is_empty()
        && plan.revision.satisfied_by(&ask.revision)
    {
        let (wi, ci) = plan.locate(cluster).expect("located above");
        if state.waves[wi].clusters[ci].phase != ClusterPhase::Succeeded {
            return GateAnswer {
                open: false,
                rollout: Some(plan.name.clone()),
                reason: format!(
                    "rollout {} ended {}: this revision is held; revert it or create a new rollout",
                    plan.name,
                    state.phase.as_str()
                ),
            };
        }
    }
    GateAnswer {
        open: true,
        rollout: None,
        reason: "no active rollout covers this canary".into(),
    }
}
