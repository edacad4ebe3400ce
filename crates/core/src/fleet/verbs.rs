//! The control verbs. Each is idempotent (repeating it changes nothing and is not an error),
//! recorded in the history with who and when, and refused with a reason
//! ([`Error::Fleet`](crate::Error::Fleet), a FAILED_PRECONDITION for the API) when it does not
//! apply to the current state. Unknown waves and clusters are refused too; the coordinator checks
//! them first to answer NOT_FOUND.

use super::note;
use super::plan::Plan;
use super::reconcile::begin_rollback;
use super::rollout::{COORDINATOR, ClusterPhase, Command, RolloutPhase, RolloutState, Stamp, WavePhase};
use crate::{Error, Result};

fn refuse<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Fleet(msg.into()))
}

/// Refuses verbs on ended and rolling-back rollouts.
fn active(plan: &Plan, state: &RolloutState, verb: &str) -> Result<()> {
    if state.phase.is_terminal() {
        return refuse(format!(
            "rollout {} already ended {} ({}); {verb} applies only to an active rollout",
            plan.name,
            state.phase.as_str(),
            state.message
        ));
    }
    if state.phase == RolloutPhase::RollingBack {
        let why = state.rollback.as_ref().map(|r| r.reason.as_str()).unwrap_or("");
        return refuse(format!(
            "rollout {} is rolling back ({why}); {verb} does not apply any more",
            plan.name
        ));
    }
    Ok(())
}

/// Pause: no new cluster or wave starts; running canaries finish.
pub fn pause(plan: &Plan, state: &mut RolloutState, by: &Stamp, reason: &str) -> Result<()> {
    if state.phase == RolloutPhase::Paused {
        return Ok(());
    }
    switch(plan, state, RolloutPhase::Paused, "pause", by, reason)
}

/// Resume a paused rollout.
pub fn resume(plan: &Plan, state: &mut RolloutState, by: &Stamp, reason: &str) -> Result<()> {
    if matches!(state.phase, RolloutPhase::Running | RolloutPhase::Pending) {
        return Ok(());
    }
    switch(plan, state, RolloutPhase::Running, "resume", by, reason)
}

/// Pause or resume an active rollout: its new phase, and the history record `<verb>d`.
fn switch(
    plan: &Plan,
    state: &mut RolloutState,
    to: RolloutPhase,
    verb: &str,
    by: &Stamp,
    reason: &str,
) -> Result<()> {
    active(plan, state, verb)?;
    let done = format!("{verb}d");
    state.phase = to;
    state.message = format!("{done} by {}{}", by.actor, note(reason));
    state.note(by.time, &done, &by.actor, "", "", reason);
    Ok(())
}

/// Abort: roll back per the failure policy, then Aborted. Returns the rollback commands.
pub fn abort(plan: &Plan, state: &mut RolloutState, by: &Stamp, reason: &str) -> Result<Vec<Command>> {
    let aborting = state.rollback.as_ref().is_some_and(|r| r.aborted);
    if state.phase == RolloutPhase::Aborted || (state.phase == RolloutPhase::RollingBack && aborting) {
        return Ok(Vec::new());
    }
    active(plan, state, "abort")?;
    let who = by.actor.as_str();
    state.note(by.time, "aborted", who, "", "", reason);
    let mut out = Vec::new();
    begin_rollback(
        plan,
        state,
        format!("aborted by {who}{}", note(reason)),
        true,
        who,
        by.time,
        &mut out,
    );
    Ok(out)
}

/// Approve a manual wave (also in advance, while it is Pending).
pub fn approve_wave(plan: &Plan, state: &mut RolloutState, wave: &str, by: &Stamp) -> Result<()> {
    let Some(wi) = plan.wave_index(wave) else {
        let names: Vec<&str> = plan.waves.iter().map(|w| w.name.as_str()).collect();
        return refuse(format!(
            "rollout {} has no wave {wave:?}; waves are {names:?}",
            plan.name
        ));
    };
    if !plan.waves[wi].manual_approval {
        return refuse(format!(
            "wave {wave} of rollout {} does not need approval (approval: auto)",
            plan.name
        ));
    }
    if state.waves[wi].approved.is_some() {
        return Ok(());
    }
    active(plan, state, "approve")?;
    if !matches!(
        state.waves[wi].phase,
        WavePhase::Pending | WavePhase::WaitingApproval
    ) {
        return refuse(format!(
            "wave {wave} is {}; only a Pending or WaitingApproval wave can be approved",
            state.waves[wi].phase.as_str()
        ));
    }
    state.waves[wi].approved = Some(by.clone());
    let msg = if state.waves[wi].phase == WavePhase::Pending {
        "approved in advance"
    } else {
        "approved"
    };
    state.note(by.time, "wave-approved", &by.actor, wave, "", msg);
    Ok(())
}

fn find_cluster(plan: &Plan, cluster: &str) -> Result<(usize, usize)> {
    plan.locate(cluster).ok_or_else(|| {
        Error::Fleet(format!(
            "cluster {cluster:?} is not in the plan of rollout {}",
            plan.name
        ))
    })
}

/// Skip a cluster that has not started (Pending) or has failed: the rollout stops waiting for
/// it, and a skipped failure no longer counts against the budget.
pub fn skip_cluster(plan: &Plan, state: &mut RolloutState, cluster: &str, by: &Stamp) -> Result<()> {
    let (wi, ci) = find_cluster(plan, cluster)?;
    let phase = state.waves[wi].clusters[ci].phase;
    if phase == ClusterPhase::Skipped {
        return Ok(());
    }
    active(plan, state, "skip")?;
    match phase {
        ClusterPhase::Pending | ClusterPhase::Failed => {}
        ClusterPhase::Starting | ClusterPhase::Progressing => {
            return refuse(format!(
                "cluster {cluster} is {} (its canary is running); wait for it to finish, or for \
                 clusterDeadline to fail it, then skip it",
                phase.as_str()
            ));
        }
        other => {
            return refuse(format!(
                "cluster {cluster} is {}; only a Pending or Failed cluster can be skipped",
                other.as_str()
            ));
        }
    }
    let c = &mut state.waves[wi].clusters[ci];
    c.finish(ClusterPhase::Skipped, by.time, format!("skipped by {}", by.actor));
    let msg = format!("skipped (was {})", phase.as_str());
    state.note(
        by.time,
        "cluster-skipped",
        &by.actor,
        &plan.waves[wi].name,
        cluster,
        msg,
    );
    Ok(())
}

/// Retry a failed cluster: it starts again (a new attempt, a new command id) when its wave has
/// room, also when its wave has completed (the rollout does not end before it finishes). A
/// baking wave goes back to Running and bakes again afterwards.
pub fn retry_cluster(plan: &Plan, state: &mut RolloutState, cluster: &str, by: &Stamp) -> Result<()> {
    let (wi, ci) = find_cluster(plan, cluster)?;
    let c = &state.waves[wi].clusters[ci];
    // A retry already taken: the cluster waits for its new start or runs it.
    let retried =
        c.attempts > 1 && c.phase.is_running() || c.attempts >= 1 && c.phase == ClusterPhase::Pending;
    if retried && !state.phase.is_terminal() && state.phase != RolloutPhase::RollingBack {
        return Ok(());
    }
    active(plan, state, "retry")?;
    if c.phase != ClusterPhase::Failed {
        return refuse(format!(
            "cluster {cluster} is {}; only a Failed cluster can be retried",
            c.phase.as_str()
        ));
    }
    let previous = c.verdict.clone();
    let c = &mut state.waves[wi].clusters[ci];
    c.phase = ClusterPhase::Pending;
    c.fingerprint = None;
    c.finished = None;
    c.verdict.clear();
    let wave = plan.waves[wi].name.clone();
    if state.waves[wi].phase == WavePhase::Baking {
        state.waves[wi].phase = WavePhase::Running;
        state.waves[wi].bake = None;
        state.note(
            by.time,
            "bake-reset",
            COORDINATOR,
            &wave,
            "",
            format!("bake restarts after {cluster} finishes"),
        );
    }
    state.note(
        by.time,
        "cluster-retried",
        &by.actor,
        &wave,
        cluster,
        format!("after: {previous}"),
    );
    Ok(())
}
