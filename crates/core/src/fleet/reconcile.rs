//! The step that moves one rollout forward: [`reconcile`] reads the plan, the state and what the
//! agents report, mutates the state and returns the commands that follow from the new state, in
//! named steps (running clusters, bake regressions, reverting clusters, the failure policy, the
//! rollback, the waves, the end). Also when it must run again ([`next_wake`]) and the bake's live
//! evidence ([`bake_requests`]).

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::duration::format_go_duration;
use jiff::Timestamp;

use crate::judge::Decision;

use super::plan::{BakePlan, Mode, Plan, RollbackScope, WavePlan};
use super::rollout::{
    BakeProgress, COORDINATOR, ClusterPhase, ClusterState, Command, RollbackRun, RolloutPhase, RolloutState,
    Undo, WavePhase,
};
use super::{CanaryObs, FleetView, Observation, aside, elapsed, note, phase, plus};

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
        .map(|(k, v)| format!("{k}={}", super::numbers::show(*v)))
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
    start_rollout(state, now);
    observe_running_clusters(plan, state, view, now, &mut out);
    detect_bake_regressions(plan, state, view, now);
    observe_reverting_clusters(plan, state, view, now);
    apply_failure_policy(plan, state, now, &mut out);
    stop_on_pooled_evidence(plan, state, now, &mut out);
    if state.phase == RolloutPhase::RollingBack {
        unwind_rollback(plan, state, now, &mut out);
        return out;
    }
    advance_waves(plan, state, view, now, &mut out);
    finish_if_settled(plan, state, now);
    out
}

/// What is known of a planned cluster: never connected since the coordinator started is
/// disconnected with no snapshot.
fn observation<'a>(view: &'a FleetView, cluster: &str) -> &'a Observation {
    static UNKNOWN: Observation = Observation {
        connected: false,
        canary: None,
        gate_request: None,
    };
    view.get(cluster).unwrap_or(&UNKNOWN)
}

/// A pending rollout starts running on its first reconcile.
fn start_rollout(state: &mut RolloutState, now: Timestamp) {
    if state.phase != RolloutPhase::Pending {
        return;
    }
    state.phase = RolloutPhase::Running;
    state.message = "running".into();
    state.note(now, "started", COORDINATOR, "", "", "rollout started");
}

/// Running clusters: fingerprints (gate mode), outcomes, deadlines.
fn observe_running_clusters(
    plan: &Plan,
    state: &mut RolloutState,
    view: &FleetView,
    now: Timestamp,
    out: &mut Vec<Command>,
) {
    for (wi, ci) in state.clusters_in(ClusterPhase::is_running) {
        let wave_name = plan.waves[wi].name.clone();
        let name = state.waves[wi].clusters[ci].name.clone();
        let obs = observation(view, &name);
        if let Some((kind, msg, metrics)) =
            observe_running(plan, &mut state.waves[wi].clusters[ci], obs, now, out)
        {
            state.record(now, kind, COORDINATOR, &wave_name, &name, msg, metrics);
        }
    }
}

/// Why a succeeded cluster of a baking wave regressed: its canary failed, or its primary's
/// success rate fell below `bake.minSuccessRate`.
fn bake_regression(o: &CanaryObs, min_rate: Option<f64>) -> Option<String> {
    if o.phase == phase::FAILED {
        return Some(format!("canary phase Failed during the bake: {}", o.message));
    }
    match (min_rate, o.primary_success_rate) {
        (Some(min), Some(rate)) if rate < min => Some(format!(
            "primary success rate {}% < bake.minSuccessRate {}% during the bake",
            super::numbers::show(rate),
            super::numbers::show(min)
        )),
        _ => None,
    }
}

/// Indices of the succeeded clusters of wave `wi`.
fn succeeded_in(state: &RolloutState, wi: usize) -> Vec<usize> {
    let found = state.clusters_in(|p| p == ClusterPhase::Succeeded);
    found
        .into_iter()
        .filter_map(|(w, ci)| (w == wi).then_some(ci))
        .collect()
}

/// Succeeded clusters of the baking wave that regressed fail.
fn detect_bake_regressions(plan: &Plan, state: &mut RolloutState, view: &FleetView, now: Timestamp) {
    if state.rollback.is_some() {
        return;
    }
    let Some(wi) = state.current_wave() else { return };
    if state.waves[wi].phase != WavePhase::Baking {
        return;
    }
    let min_rate = plan.waves[wi].bake.as_ref().and_then(|b| b.min_success_rate);
    let wave_name = plan.waves[wi].name.clone();
    for ci in succeeded_in(state, wi) {
        let name = state.waves[wi].clusters[ci].name.clone();
        let Some(o) = observation(view, &name).canary.as_ref() else {
            continue;
        };
        let Some(why) = bake_regression(o, min_rate) else {
            continue;
        };
        let c = &mut state.waves[wi].clusters[ci];
        keep_snapshot(c, Some(o));
        let verdict = c.finish(ClusterPhase::Failed, now, format!("regressed: {why}"));
        let metrics = c.metrics.clone();
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

/// Reverting clusters: back on their previous revision (reverted), or failed at the deadline.
fn observe_reverting_clusters(plan: &Plan, state: &mut RolloutState, view: &FleetView, now: Timestamp) {
    for (wi, ci) in state.clusters_in(|p| p == ClusterPhase::Reverting) {
        let wave_name = plan.waves[wi].name.clone();
        let c = &state.waves[wi].clusters[ci];
        let name = c.name.clone();
        let obs = observation(view, &name).canary.as_ref();
        let undo = c.undo.unwrap_or(Undo::Rollback);
        let done = obs.is_some_and(|o| {
            primary_is_previous(plan, wi, &name, o)
                && match undo {
                    Undo::Revert => o.phase == phase::SUCCEEDED,
                    Undo::Rollback => !phase::RUNNING.contains(&o.phase.as_str()),
                }
        });
        let since = c.undo_started.unwrap_or(now);
        let (kind, phase, msg) = if done {
            let how = if undo == Undo::Revert {
                "reverted"
            } else {
                "rolled back"
            };
            let previous = &plan.waves[wi].clusters[ci].previous_revision;
            let msg = format!("back on its previous revision {previous} ({how})");
            ("cluster-reverted", ClusterPhase::Reverted, msg)
        } else if elapsed(now, since) >= plan.cluster_deadline {
            let msg = format!(
                "not back on its previous revision within clusterDeadline {}",
                format_go_duration(plan.cluster_deadline)
            );
            ("cluster-failed", ClusterPhase::Failed, msg)
        } else {
            continue;
        };
        let c = &mut state.waves[wi].clusters[ci];
        keep_snapshot(c, obs);
        let msg = c.finish(phase, now, msg);
        state.note(now, kind, COORDINATOR, &wave_name, &name, msg);
    }
}

/// Why the failure policy stops the rollout: a failed cluster in a mandatory wave, or more
/// failed clusters than `maxFailedClusters`.
fn failure_policy_breach(plan: &Plan, state: &RolloutState) -> Option<String> {
    let mandatory = plan
        .waves
        .iter()
        .zip(&state.waves)
        .find(|(p, s)| p.mandatory && s.clusters.iter().any(|c| c.phase == ClusterPhase::Failed));
    if let Some((p, s)) = mandatory {
        let c = s.clusters.iter().find(|c| c.phase == ClusterPhase::Failed);
        return Some(format!(
            "cluster {} failed in mandatory wave {}: {}",
            c.map(|c| c.name.as_str()).unwrap_or(""),
            p.name,
            c.map(|c| c.verdict.as_str()).unwrap_or("")
        ));
    }
    let failed = state.failed_clusters();
    (failed > plan.max_failed_clusters).then(|| {
        format!(
            "{failed} failed (budget {}, failurePolicy.maxFailedClusters)",
            plan.max_failed_clusters
        )
    })
}

/// The failure policy: a breach starts the rollback.
fn apply_failure_policy(plan: &Plan, state: &mut RolloutState, now: Timestamp, out: &mut Vec<Command>) {
    if state.rollback.is_some() {
        return;
    }
    if let Some(reason) = failure_policy_breach(plan, state) {
        begin_rollback(plan, state, reason, false, COORDINATOR, now, out);
    }
}

/// The pooled ROLLBACK evidence stops the rollout, even when no cluster failed.
fn stop_on_pooled_evidence(plan: &Plan, state: &mut RolloutState, now: Timestamp, out: &mut Vec<Command>) {
    if state.rollback.is_some() {
        return;
    }
    let Some(e) = &state.evidence else { return };
    let v = e.verdict();
    if v.decision == Decision::Rollback {
        let reason = format!("pooled evidence: {}", v.explanation);
        begin_rollback(plan, state, reason, false, COORDINATOR, now, out);
    }
}

/// The planned look before the last wave opens (once): a stop starts the rollback.
fn planned_look(
    plan: &Plan,
    state: &mut RolloutState,
    wi: usize,
    now: Timestamp,
    out: &mut Vec<Command>,
) -> bool {
    if wi == 0 || wi + 1 != plan.waves.len() {
        return false;
    }
    let Some(e) = state.evidence.as_mut() else {
        return false;
    };
    let stop = e.take_look();
    let p = e.look_p;
    if let Some(p) = p {
        let msg = format!(
            "planned look at wave {}: p = {}",
            plan.waves[wi].name,
            crate::judge::explain::fmt_sig2(p)
        );
        state.note(now, "evidence-look", COORDINATOR, &plan.waves[wi].name, "", msg);
    }
    match stop {
        Some(reason) => {
            begin_rollback(plan, state, reason, false, COORDINATOR, now, out);
            true
        }
        None => false,
    }
}

/// A rollback in progress: scope `all` unwinds wave by wave, newest first; once no cluster is
/// reverting the rollout ends.
fn unwind_rollback(plan: &Plan, state: &mut RolloutState, now: Timestamp, out: &mut Vec<Command>) {
    let reverting = state
        .clusters()
        .any(|c| c.phase == ClusterPhase::Reverting && c.undo == Some(Undo::Revert));
    if plan.rollback == RollbackScope::All
        && !reverting
        && let Some(wi) = (0..state.waves.len()).rev().find(|&wi| {
            state.waves[wi]
                .clusters
                .iter()
                .any(|c| c.phase == ClusterPhase::Succeeded)
        })
    {
        revert_wave(plan, state, wi, now, out);
    }
    if !state.clusters().any(|c| c.phase == ClusterPhase::Reverting) {
        finish_rollback(state, now);
    }
}

/// Whether the wave loop goes on to the next wave or waits for the next reconcile.
enum Flow {
    Next,
    Wait,
}

/// Wave transitions and new starts. Retried clusters of completed waves start first (their
/// wave's limit applies); then the current wave moves as far as it can, and the next after it.
fn advance_waves(
    plan: &Plan,
    state: &mut RolloutState,
    view: &FleetView,
    now: Timestamp,
    out: &mut Vec<Command>,
) {
    let paused = state.phase == RolloutPhase::Paused;
    if !paused {
        for wi in 0..state.waves.len() {
            if state.waves[wi].phase == WavePhase::Succeeded {
                start_clusters(plan, state, wi, view, now, out);
            }
        }
    }
    while let Some(wi) = state.current_wave() {
        let flow = match state.waves[wi].phase {
            WavePhase::Pending if paused => Flow::Wait,
            WavePhase::Pending => {
                if planned_look(plan, state, wi, now, out) {
                    Flow::Wait
                } else {
                    open_wave(plan, state, wi, now)
                }
            }
            WavePhase::WaitingApproval if paused || state.waves[wi].approved.is_none() => Flow::Wait,
            WavePhase::WaitingApproval => {
                start_wave(plan, state, wi, now);
                Flow::Next
            }
            WavePhase::Running => run_wave(plan, state, wi, view, paused, now, out),
            WavePhase::Baking => bake_wave(plan, state, wi, view, now),
            WavePhase::Succeeded | WavePhase::Failed | WavePhase::Cancelled => Flow::Wait,
        };
        if let Flow::Wait = flow {
            break;
        }
    }
}

/// A pending wave starts, or waits for its manual approval.
fn open_wave(plan: &Plan, state: &mut RolloutState, wi: usize, now: Timestamp) -> Flow {
    let wp = &plan.waves[wi];
    if wp.manual_approval && state.waves[wi].approved.is_none() {
        state.waves[wi].phase = WavePhase::WaitingApproval;
        state.message = format!("wave {} is waiting for approval", wp.name);
        state.note(
            now,
            "wave-waiting-approval",
            COORDINATOR,
            &wp.name,
            "",
            format!("approve with: aviary rollout approve {} {}", plan.name, wp.name),
        );
        return Flow::Wait;
    }
    start_wave(plan, state, wi, now);
    Flow::Next
}

/// A running wave starts clusters up to its limit; once every cluster settled it bakes (when it
/// has a bake and a cluster succeeded) or completes.
fn run_wave(
    plan: &Plan,
    state: &mut RolloutState,
    wi: usize,
    view: &FleetView,
    paused: bool,
    now: Timestamp,
    out: &mut Vec<Command>,
) -> Flow {
    if !paused {
        start_clusters(plan, state, wi, view, now, out);
    }
    let w = &state.waves[wi];
    let settled = w.clusters.iter().all(|c| {
        matches!(
            c.phase,
            ClusterPhase::Succeeded | ClusterPhase::Skipped | ClusterPhase::Failed
        )
    });
    if !settled {
        return Flow::Wait;
    }
    let succeeded: Vec<String> = w
        .clusters
        .iter()
        .filter(|c| c.phase == ClusterPhase::Succeeded)
        .map(|c| c.name.clone())
        .collect();
    match &plan.waves[wi].bake {
        Some(b) if !succeeded.is_empty() => {
            start_bake(plan, state, wi, b, &succeeded, view, now);
            Flow::Wait
        }
        _ => {
            complete_wave(plan, state, wi, now, String::new());
            Flow::Next
        }
    }
}

/// The wave's bake starts: the served-request counters of its succeeded clusters are the
/// baseline.
fn start_bake(
    plan: &Plan,
    state: &mut RolloutState,
    wi: usize,
    b: &BakePlan,
    succeeded: &[String],
    view: &FleetView,
    now: Timestamp,
) {
    let wave_name = &plan.waves[wi].name;
    let baseline = succeeded
        .iter()
        .map(|n| {
            let served = observation(view, n)
                .canary
                .as_ref()
                .map_or(0, |o| o.served_requests);
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
    state.note(
        now,
        "wave-baking",
        COORDINATOR,
        wave_name,
        "",
        format!(
            "bake: at least {} and {} requests{}",
            format_go_duration(b.duration),
            b.min_requests,
            b.min_success_rate
                .map(|r| format!(", primary success rate ≥ {r}%"))
                .unwrap_or_default()
        ),
    );
}

/// A baking wave completes once both its duration and its request count are reached.
fn bake_wave(plan: &Plan, state: &mut RolloutState, wi: usize, view: &FleetView, now: Timestamp) -> Flow {
    let Some(b) = &plan.waves[wi].bake else {
        complete_wave(plan, state, wi, now, String::new());
        return Flow::Next;
    };
    // Rebase counters that restarted (the agent restarted): never over-count.
    let bake = state.waves[wi].bake.as_mut().expect("a baking wave has a bake");
    for (n, base) in bake.baseline.iter_mut() {
        let cur = observation(view, n)
            .canary
            .as_ref()
            .map_or(*base, |o| o.served_requests);
        if cur < *base {
            *base = 0;
        }
    }
    let started = bake.started;
    let requests = bake_requests(state, wi, view);
    let baked = elapsed(now, started);
    let pooled_promote = state.evidence.as_ref().is_some_and(super::evidence::promotes);
    if baked < b.duration || (requests < b.min_requests && !pooled_promote) {
        return Flow::Wait;
    }
    let bake = state.waves[wi].bake.as_mut().expect("a baking wave has a bake");
    bake.requests = Some(requests);
    let requests_note = if requests >= b.min_requests {
        format!("{requests} requests (≥ {})", b.min_requests)
    } else {
        format!(
            "{requests} requests (< {}, waived: the pooled evidence shows the canary non-inferior)",
            b.min_requests
        )
    };
    let msg = format!(
        "bake done: {} elapsed (≥ {}), {requests_note}",
        format_go_duration(truncate_secs(baked)),
        format_go_duration(b.duration),
    );
    let mut m = BTreeMap::new();
    m.insert("bakeRequests".into(), requests as f64);
    m.insert("bakeSeconds".into(), baked.as_secs_f64().floor());
    complete_wave_with(plan, state, wi, now, msg, m);
    Flow::Next
}

/// The clusters a succeeded rollout leaves on their previous revision (skipped or failed), with
/// that revision: `eu-2 (version 6.0.0), us-3 (podinfod=…:6.0.0)`.
fn clusters_left_behind(plan: &Plan, state: &RolloutState) -> String {
    plan.waves
        .iter()
        .zip(&state.waves)
        .flat_map(|(wp, ws)| wp.clusters.iter().zip(&ws.clusters))
        .filter(|(_, c)| matches!(c.phase, ClusterPhase::Skipped | ClusterPhase::Failed))
        .map(|(cp, c)| format!("{} ({})", c.name, cp.previous_revision))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rollout succeeds once no wave is left and no cluster is pending or running.
fn finish_if_settled(plan: &Plan, state: &mut RolloutState, now: Timestamp) {
    let unsettled = state
        .clusters()
        .any(|c| c.phase == ClusterPhase::Pending || c.phase.is_running());
    if state.current_wave().is_some() || unsettled {
        return;
    }
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
    if failed > 0 {
        state
            .message
            .push_str(&format!(" (budget {})", plan.max_failed_clusters));
    }
    let behind = clusters_left_behind(plan, state);
    if !behind.is_empty() {
        state
            .message
            .push_str(&format!("; still on their previous revision: {behind}"));
    }
    let msg = state.message.clone();
    state.note(now, "rollout-succeeded", COORDINATOR, "", "", msg);
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
    if plan.mode == Mode::Push && !c.waiting.is_empty() && c.fingerprint.is_none() {
        match push_held(plan, Some(obs)) {
            Some(why) => c.waiting = why,
            None => {
                c.waiting.clear();
                let id = plan.start_id(&c.name, c.attempts);
                out.push(Command::StartRevision {
                    id: id.clone(),
                    cluster: c.name.clone(),
                    revision: plan.revision.clone(),
                    rerun_failed: c.stale_failure.is_some(),
                });
                let phase = obs.canary.as_ref().map_or("", |o| o.phase.as_str());
                event = Some((
                    "cluster-pushed",
                    format!(
                        "canary {} is {phase}: StartRevision {id} ({})",
                        plan.canary, plan.revision
                    ),
                    BTreeMap::new(),
                ));
            }
        }
    }
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
            format!("gate opened for {}", ask.revision),
            BTreeMap::new(),
        ));
    }
    let snap = obs.canary.as_ref();
    if let (Some(fp), Some(o)) = (c.fingerprint.clone(), snap)
        && o.last_applied_spec == fp
    {
        if o.phase == phase::SUCCEEDED && o.last_promoted_spec == fp {
            keep_snapshot(c, Some(o));
            let verdict = format!(
                "promoted {} after {} failed checks{}",
                plan.revision,
                o.failed_checks,
                metrics_suffix(&c.metrics)
            );
            let verdict = c.finish(ClusterPhase::Succeeded, now, verdict);
            return Some(("cluster-succeeded", verdict, c.metrics.clone()));
        }
        if o.phase == phase::FAILED && c.stale_failure.as_deref() == Some(fp.as_str()) {
            // The previous attempt's result: wait for the agent to restart the analysis.
        } else if o.phase == phase::FAILED {
            // Flagger routes everything back to the primary when it fails: the weight the
            // analysis reached is the last one seen while it ran.
            let weight = if o.canary_weight > 0 {
                o.canary_weight
            } else {
                c.canary_weight
            };
            keep_snapshot(c, Some(o));
            c.canary_weight = weight;
            c.metrics.insert("canaryWeight".into(), f64::from(weight));
            let verdict = format!(
                "canary analysis of {} failed at weight {weight} with {} failed checks{}{}",
                plan.revision,
                o.failed_checks,
                note(&o.message),
                metrics_suffix(&c.metrics)
            );
            let verdict = c.finish(ClusterPhase::Failed, now, verdict);
            return Some(("cluster-failed", verdict, c.metrics.clone()));
        }
        if o.phase != phase::FAILED {
            c.stale_failure = None;
        }
        if c.phase == ClusterPhase::Starting && phase::RUNNING.contains(&o.phase.as_str()) {
            c.phase = ClusterPhase::Progressing;
        }
        // The weight reached so far (for the verdict of a failure, which Flagger reports at 0).
        if phase::RUNNING.contains(&o.phase.as_str()) && o.canary_weight > c.canary_weight {
            c.canary_weight = o.canary_weight;
        }
    }
    let started = c.started.unwrap_or(now);
    if elapsed(now, started) >= plan.cluster_deadline {
        keep_snapshot(c, snap);
        let verdict = format!(
            "did not finish within clusterDeadline {}: last reported phase {}, weight {}{}",
            format_go_duration(plan.cluster_deadline),
            snap.map_or("<none>", |o| o.phase.as_str()),
            snap.map_or(0, |o| o.canary_weight),
            if !obs.connected {
                " (agent not connected)".to_string()
            } else if !c.waiting.is_empty() {
                format!(" (never pushed: {})", c.waiting)
            } else {
                String::new()
            }
        );
        let verdict = c.finish(ClusterPhase::Failed, now, verdict);
        c.waiting.clear();
        return Some(("cluster-failed", verdict, c.metrics.clone()));
    }
    event
}

/// Why a push-mode cluster's `StartRevision` waits: its canary is reported and Flagger has not
/// finished initializing it. A revision applied to the target then is recorded as applied and
/// promoted when the initialization ends (the primary keeps what it was created from), so no
/// analysis would ever start. A canary not reported at all is not held: the agent refuses the
/// command and says so.
fn push_held(plan: &Plan, obs: Option<&Observation>) -> Option<String> {
    let o = obs?.canary.as_ref()?;
    if !phase::INITIALIZING.contains(&o.phase.as_str()) {
        return None;
    }
    let shown = if o.phase.is_empty() {
        "not initialized yet"
    } else {
        "still Initializing"
    };
    Some(format!(
        "canary {} is {shown}; the revision is pushed once it is Initialized",
        plan.canary
    ))
}

fn metrics_suffix(m: &BTreeMap<String, f64>) -> String {
    aside(&describe_metrics(m))
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
    state.note(
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
                match push_held(plan, view.get(&name)) {
                    Some(why) => {
                        msg.push_str(&format!(": StartRevision {id} ({}) held", plan.revision));
                        c.waiting = why.clone();
                        state.note(now, "cluster-started", COORDINATOR, &wp.name, &name, msg);
                        state.note(now, "cluster-waiting", COORDINATOR, &wp.name, &name, why);
                        continue;
                    }
                    None => {
                        c.waiting.clear();
                        msg.push_str(&format!(": StartRevision {id} ({})", plan.revision));
                        out.push(Command::StartRevision {
                            id,
                            cluster: name.clone(),
                            revision: plan.revision.clone(),
                            rerun_failed: c.stale_failure.is_some(),
                        });
                    }
                }
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
                    let opened = format!("gate opened for {}", ask.revision);
                    state.note(now, "cluster-started", COORDINATOR, &wp.name, &name, msg);
                    state.note(now, "gate-opened", COORDINATOR, &wp.name, &name, opened);
                    continue;
                }
            }
        }
        state.note(now, "cluster-started", COORDINATOR, &wp.name, &name, msg);
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
    // The rollout's message follows the wave (never "is baking" under a Succeeded wave).
    state.message = format!("wave {name} succeeded: {summary}");
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
    state.note(
        now,
        "rollback-started",
        actor,
        "",
        "",
        format!("{reason}; rollback scope {}", plan.rollback.as_str()),
    );
    for (wi, ci) in state.clusters_in(ClusterPhase::is_running) {
        let wave_name = plan.waves[wi].name.clone();
        let c = &mut state.waves[wi].clusters[ci];
        let id = c.begin_undo(plan, Undo::Rollback, now);
        let name = c.name.clone();
        out.push(Command::RollbackCanary {
            id: id.clone(),
            cluster: name.clone(),
            reason: reason.clone(),
        });
        state.note(
            now,
            "cluster-rollback",
            actor,
            &wave_name,
            &name,
            format!("RollbackCanary {id}"),
        );
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
    for ci in succeeded_in(state, wi) {
        let c = &mut state.waves[wi].clusters[ci];
        let id = c.begin_undo(plan, Undo::Revert, now);
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
        state.note(
            now,
            "cluster-revert",
            COORDINATOR,
            &wave_name,
            &name,
            format!("Revert {id} to {revision}"),
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
    let count = |p: ClusterPhase| state.clusters().filter(|c| c.phase == p).count();
    let (reverted, failed) = (count(ClusterPhase::Reverted), count(ClusterPhase::Failed));
    let mut undone = Vec::new();
    if failed > 0 {
        undone.push(format!(
            "{failed} failed (their analysis routed traffic back to the primary)"
        ));
    }
    if reverted > 0 {
        undone.push(format!("{reverted} put back on the previous revision"));
    }
    if undone.is_empty() {
        undone.push("no cluster had started the new revision".into());
    }
    state.message = format!("{}; {}", run.reason, undone.join(", "));
    let kind = if run.aborted {
        "rollout-aborted"
    } else {
        "rollout-failed"
    };
    let msg = state.message.clone();
    state.note(now, kind, COORDINATOR, "", "", msg);
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
