//! A rollout (plan, state, live values) as a FleetRollout's `.status`, and the conditions that
//! `kubectl wait`, kstatus (Flux) and Argo CD read. Pure: no client here.

use aviary_api::fleet::{ClusterStatus, FleetRolloutCondition, FleetRolloutStatus, WaveStatus};
use aviary_core::fleet::{ClusterPhase, Plan, RolloutPhase, RolloutState};

use crate::fleet::Live;

/// Why the coordinator has no rollout for an object (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The spec is invalid for this fleet: fix it (a new object or an edit).
    Rejected(String),
    /// Another rollout of the same canary is active: this one starts after it ends.
    Queued(String),
}

fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> FleetRolloutCondition {
    FleetRolloutCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// The status of an object the coordinator has no rollout for.
pub(crate) fn refused(refusal: &Refusal, generation: Option<i64>) -> FleetRolloutStatus {
    let (phase, message, stalled) = match refusal {
        Refusal::Rejected(m) => ("Rejected", m.as_str(), true),
        Refusal::Queued(m) => ("Queued", m.as_str(), false),
    };
    FleetRolloutStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        message: Some(message.into()),
        conditions: Some(vec![
            condition("Accepted", !stalled, phase, message, generation),
            condition("Ready", false, phase, message, generation),
            condition("Reconciling", !stalled, phase, message, generation),
            condition("Stalled", stalled, phase, message, generation),
        ]),
        ..Default::default()
    }
}

/// The status of a rollout: its phase, the conditions, every wave and cluster with the live
/// canary values of running clusters.
pub(crate) fn of_rollout(
    plan: &Plan,
    state: &RolloutState,
    live: &[Live],
    generation: Option<i64>,
) -> FleetRolloutStatus {
    let phase = state.phase.as_str();
    let message = state.message.as_str();
    let succeeded = state.phase == RolloutPhase::Succeeded;
    let ended_badly = matches!(state.phase, RolloutPhase::Failed | RolloutPhase::Aborted);
    let running = !state.phase.is_terminal();
    let mut live = live.iter();
    let mut planned = 0;
    let mut done = 0;
    let waves = plan
        .waves
        .iter()
        .zip(&state.waves)
        .map(|(wp, ws)| WaveStatus {
            name: wp.name.clone(),
            phase: ws.phase.as_str().into(),
            approved_by: ws.approved.as_ref().map(|a| a.actor.clone()),
            clusters: wp
                .clusters
                .iter()
                .zip(&ws.clusters)
                .map(|(cp, cs)| {
                    planned += 1;
                    if matches!(cs.phase, ClusterPhase::Succeeded | ClusterPhase::Skipped) {
                        done += 1;
                    }
                    let l = live.next();
                    let active = cs.phase.is_running() || cs.phase == ClusterPhase::Reverting;
                    let (canary_phase, weight, checks) = match (l.and_then(|l| l.canary.as_ref()), active) {
                        (Some(c), true) => (c.phase.clone(), c.weight, c.failed_checks),
                        _ => (cs.canary_phase.clone(), cs.canary_weight, cs.failed_checks),
                    };
                    ClusterStatus {
                        name: cp.name.clone(),
                        region: Some(cp.region.clone()),
                        phase: cs.phase.as_str().into(),
                        canary_phase: (!canary_phase.is_empty()).then_some(canary_phase),
                        canary_weight: Some(weight),
                        failed_checks: Some(checks),
                        attempts: Some(cs.attempts),
                        verdict: Some(crate::convert::shown_verdict(cs, l.is_some_and(|l| l.connected)))
                            .filter(|v| !v.is_empty()),
                    }
                })
                .collect(),
        })
        .collect();
    let reason = if succeeded { "Succeeded" } else { phase };
    FleetRolloutStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        message: Some(message.into()),
        canary: Some(plan.canary.to_string()),
        clusters: Some(format!("{done}/{planned}")),
        failed_clusters: Some(state.failed_clusters()),
        max_failed_clusters: Some(plan.max_failed_clusters),
        started_at: Some(time(state.created)),
        finished_at: state.finished.map(time),
        conditions: Some(vec![
            condition(
                "Accepted",
                true,
                "Created",
                "the coordinator pinned the plan",
                generation,
            ),
            condition("Ready", succeeded, reason, message, generation),
            condition("Succeeded", succeeded, reason, message, generation),
            condition("Reconciling", running, reason, message, generation),
            condition("Stalled", ended_badly, reason, message, generation),
        ]),
        waves: Some(waves),
        last_verb: None,
    }
}

/// `next` with each condition's `lastTransitionTime` carried over from `prev` when its status
/// did not change (and set to `now` when it did), so a status rewrite is not a transition.
pub(crate) fn carry_transitions(
    prev: Option<&FleetRolloutStatus>,
    mut next: FleetRolloutStatus,
    now: jiff::Timestamp,
) -> FleetRolloutStatus {
    let before = prev.and_then(|p| p.conditions.as_ref());
    for c in next.conditions.iter_mut().flatten() {
        let old = before.and_then(|b| b.iter().find(|o| o.type_ == c.type_));
        c.last_transition_time = match old {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => Some(time(now)),
        };
    }
    if next.last_verb.is_none() {
        next.last_verb = prev.and_then(|p| p.last_verb.clone());
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond<'a>(s: &'a FleetRolloutStatus, t: &str) -> &'a FleetRolloutCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn refusals_are_stalled_or_queued() {
        let r = refused(&Refusal::Rejected("spec.waves: required".into()), Some(2));
        assert_eq!(r.phase.as_deref(), Some("Rejected"));
        assert_eq!(cond(&r, "Stalled").status, "True");
        assert_eq!(cond(&r, "Ready").status, "False");
        assert_eq!(cond(&r, "Accepted").status, "False");
        let q = refused(&Refusal::Queued("rollout a is Running".into()), Some(1));
        assert_eq!(q.phase.as_deref(), Some("Queued"));
        assert_eq!(cond(&q, "Stalled").status, "False");
        assert_eq!(cond(&q, "Reconciling").status, "True");
    }

    #[test]
    fn transition_times_survive_rewrites() {
        let t0 = jiff::Timestamp::from_second(1_767_225_600).unwrap();
        let t1 = jiff::Timestamp::from_second(1_767_225_700).unwrap();
        let a = carry_transitions(None, refused(&Refusal::Queued("q".into()), None), t0);
        let b = carry_transitions(Some(&a), refused(&Refusal::Queued("q again".into()), None), t1);
        assert_eq!(
            cond(&b, "Ready").last_transition_time,
            cond(&a, "Ready").last_transition_time
        );
        let c = carry_transitions(Some(&b), refused(&Refusal::Rejected("bad".into()), None), t1);
        assert_eq!(
            cond(&c, "Stalled").last_transition_time.as_deref(),
            Some("2026-01-01T00:01:40Z")
        );
        assert_eq!(
            cond(&c, "Ready").last_transition_time,
            cond(&a, "Ready").last_transition_time
        );
    }
}
