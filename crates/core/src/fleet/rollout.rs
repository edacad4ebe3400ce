//! The state of one rollout, the commands to agents, the gate rule, acks, and the commands to
//! re-send after a reconnect. The step that moves a rollout forward is
//! [`reconcile`](super::reconcile::reconcile); the caller persists the state before it sends the
//! commands that follow from it. Only durable facts live in the state (phases, attempts, acked fingerprints,
//! verdicts, the bake baseline, the history); live values (weights, connectivity) are read from
//! the fleet view when shown, so an agent's status update does not cause a write.

use super::evidence::PooledEvidence;
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::plan::{Mode, Plan};
use super::{CanaryKey, GateAsk, Revision};

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

impl Stamp {
    /// `actor` at `time`; an empty actor is recorded as `unknown`.
    pub fn by(actor: &str, time: Timestamp) -> Self {
        let actor = if actor.is_empty() { "unknown" } else { actor };
        Self {
            actor: actor.into(),
            time,
        }
    }
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
    /// The audit history, at most [`MAX_HISTORY`] records: the first (`created`) and the
    /// newest; the ones in between are dropped and counted in `history_dropped`.
    pub history: Vec<HistoryEntry>,
    /// The pooled judge evidence (`spec.evidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<PooledEvidence>,
    #[serde(default)]
    pub history_dropped: u64,
}

/// Most history records kept per rollout (the first and the newest).
pub const MAX_HISTORY: usize = 1000;
/// Longest history message kept (bytes; longer ones are cut at a character boundary).
pub const MAX_HISTORY_MESSAGE: usize = 2048;
/// Longest verdict kept (bytes).
pub const MAX_VERDICT: usize = 2048;

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated, {} bytes]", &s[..end], s.len())
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
    /// Why a started cluster's `StartRevision` is held back (its canary is still
    /// initializing: a revision pushed then would be recorded as promoted without an
    /// analysis); empty once it is sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
    /// The last reported canary values when the outcome was decided.
    pub canary_phase: String,
    pub canary_weight: i32,
    pub failed_checks: i32,
    /// Why it ended as it did.
    pub verdict: String,
    #[serde(with = "super::numbers::map")]
    pub metrics: BTreeMap<String, f64>,
}

impl ClusterState {
    /// The verdict to show: why it ended as it did, or why a started cluster waits.
    pub fn shown_verdict(&self) -> String {
        if self.verdict.is_empty() && !self.waiting.is_empty() {
            format!("waiting: {}", self.waiting)
        } else {
            self.verdict.clone()
        }
    }

    /// The cluster ends in `phase` at `now` with `verdict`; the verdict again, for the history.
    pub(crate) fn finish(&mut self, phase: ClusterPhase, now: Timestamp, verdict: String) -> String {
        self.phase = phase;
        self.finished = Some(now);
        self.verdict = verdict;
        self.verdict.clone()
    }

    /// The id of the command that undoes this cluster's current start.
    pub(crate) fn undo_id(&self, plan: &Plan, undo: Undo) -> String {
        let what = match undo {
            Undo::Revert => "revert",
            Undo::Rollback => "rollback",
        };
        format!("{}/{what}", plan.start_id(&self.name, self.attempts))
    }

    /// The cluster is Reverting from `now` by `undo`; the id of the command that does it.
    pub(crate) fn begin_undo(&mut self, plan: &Plan, undo: Undo, now: Timestamp) -> String {
        self.phase = ClusterPhase::Reverting;
        self.undo = Some(undo);
        self.undo_started = Some(now);
        self.undo_id(plan, undo)
    }
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
    #[serde(with = "super::numbers::map")]
    pub metrics: BTreeMap<String, f64>,
    /// What the caller said about itself (the free-text `actor` of a request) when `actor` is
    /// the authenticated identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// The new state cannot be stored (`why`: too large, or it would not decode): every cluster
/// whose state changed since `before` fails with a short verdict and without metrics, and the
/// history records of this step lose their metrics, so the state that is written instead is
/// small. False when no cluster changed (nothing to blame; the caller retries).
pub fn fail_unstorable(
    plan: &Plan,
    before: &RolloutState,
    next: &mut RolloutState,
    why: &str,
    now: Timestamp,
) -> bool {
    let old: BTreeMap<&str, &ClusterState> = before.clusters().map(|c| (c.name.as_str(), c)).collect();
    let changed: Vec<(usize, usize)> = next
        .waves
        .iter()
        .enumerate()
        .flat_map(|(wi, w)| w.clusters.iter().enumerate().map(move |(ci, c)| (wi, ci, c)))
        .filter(|(_, _, c)| old.get(c.name.as_str()).is_none_or(|o| *o != *c))
        .map(|(wi, ci, _)| (wi, ci))
        .collect();
    if changed.is_empty() {
        return false;
    }
    for h in next.history_since(before.history_mark()) {
        h.metrics.clear();
        h.message = truncate(&h.message, 256);
    }
    let short = truncate(why, 256);
    for (wi, ci) in changed {
        let wave = plan.waves[wi].name.clone();
        let c = &mut next.waves[wi].clusters[ci];
        c.metrics.clear();
        let verdict = format!("its report could not be stored ({short}); see the agent's events");
        let verdict = c.finish(ClusterPhase::Failed, now, verdict);
        let name = c.name.clone();
        next.note(now, "cluster-failed", COORDINATOR, &wave, &name, verdict);
    }
    true
}

/// What the coordinator must send (to the agent of `cluster`, about the plan's canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Push mode: apply the revision. The id is `<rollout>/<cluster>/<attempt>`.
    /// `rerun_failed`: the canary's analysis of this revision had already failed when the
    /// attempt started, so the agent analyses it again even if it saw the id before (a rollout
    /// deleted and created again under the same name reuses ids).
    StartRevision {
        id: String,
        cluster: String,
        revision: Revision,
        rerun_failed: bool,
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
                            waiting: String::new(),
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
            evidence: plan.evidence.and_then(|e| {
                PooledEvidence::new(
                    e,
                    plan.clusters().map(|c| c.name.clone()).collect(),
                    plan.waves.len(),
                )
                .ok()
            }),
            history_dropped: 0,
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
        s.note(now, "created", actor, "", "", message);
        s
    }

    /// Appends a history record without metrics.
    pub(crate) fn note(
        &mut self,
        time: Timestamp,
        kind: &str,
        actor: &str,
        wave: &str,
        cluster: &str,
        message: impl Into<String>,
    ) {
        self.record(time, kind, actor, wave, cluster, message, BTreeMap::new());
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
        if self.history.len() >= MAX_HISTORY {
            // Keep `created` (the plan) and the newest records.
            self.history.remove(1);
            self.history_dropped += 1;
        }
        self.history.push(HistoryEntry {
            time,
            kind: kind.into(),
            actor: actor.into(),
            wave: wave.into(),
            cluster: cluster.into(),
            message: truncate(&message.into(), MAX_HISTORY_MESSAGE),
            metrics,
            comment: String::new(),
        });
    }

    /// Counts every record ever appended: a mark to find the records appended after it.
    pub fn history_mark(&self) -> u64 {
        self.history.len() as u64 + self.history_dropped
    }

    /// The records appended since `mark` (see [`history_mark`](Self::history_mark)).
    pub fn history_since(&mut self, mark: u64) -> &mut [HistoryEntry] {
        let new = (self.history_mark().saturating_sub(mark) as usize).min(self.history.len());
        let from = self.history.len() - new;
        &mut self.history[from..]
    }

    /// Sets `comment` (the caller's free-text `actor`) on the records appended since `mark`:
    /// the history shows who was authenticated, and what they said beside it.
    pub fn comment_since(&mut self, mark: u64, comment: &str) {
        if comment.is_empty() {
            return;
        }
        for h in self.history_since(mark) {
            h.comment = comment.to_string();
        }
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

    /// `(wave, cluster)` indices of the clusters whose phase is `wanted`, in plan order.
    pub(crate) fn clusters_in(&self, wanted: impl Fn(ClusterPhase) -> bool) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (wi, w) in self.waves.iter().enumerate() {
            for (ci, c) in w.clusters.iter().enumerate() {
                if wanted(c.phase) {
                    found.push((wi, ci));
                }
            }
        }
        found
    }

    pub(crate) fn cluster_mut(&mut self, name: &str) -> Option<(usize, &mut ClusterState)> {
        self.waves
            .iter_mut()
            .enumerate()
            .find_map(|(wi, w)| w.clusters.iter_mut().find(|c| c.name == name).map(|c| (wi, c)))
    }
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
                (ClusterPhase::Starting, _)
                    if plan.mode == Mode::Push && c.fingerprint.is_none() && c.waiting.is_empty() =>
                {
                    out.push(Command::StartRevision {
                        id: plan.start_id(&c.name, c.attempts),
                        cluster: c.name.clone(),
                        revision: plan.revision.clone(),
                        rerun_failed: c.stale_failure.is_some(),
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
                    id: c.undo_id(plan, Undo::Revert),
                    cluster: c.name.clone(),
                    revision: plan.waves[wi].clusters[ci].previous_revision.clone(),
                    reason: reason.clone(),
                }),
                (ClusterPhase::Reverting, _) => out.push(Command::RollbackCanary {
                    id: c.undo_id(plan, Undo::Rollback),
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
                let verdict = format!("the agent could not apply the revision: {message}");
                let v = c.finish(ClusterPhase::Failed, now, verdict);
                state.note(now, "cluster-failed", COORDINATOR, &wave, cluster, v);
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
            state.note(now, "agent-error", COORDINATOR, &wave, cluster, v);
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
                    plan.name, plan.revision, ask.revision
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
