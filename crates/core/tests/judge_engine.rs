//! The statistical judge inside the engine's tick, on the fakes: opt-in per canary, ROLLBACK
//! through Flagger's rollback path, early PROMOTE through Flagger's promotion path, evidence to
//! the gate, and Flagger's behaviour unchanged without the annotation.

mod common;

use aviary_api::CanaryPhase;
use aviary_core::judge::{ArmReading, CounterReading};
use aviary_core::simulate::Simulation;
use common::*;
use jiff::Timestamp;

/// A canary (stepWeight 5, maxWeight 50, threshold 5, success rate ≥ 99%) with the judge's
/// `mode` annotation when given; Flagger's check reads `success` every tick.
fn sim(mode: Option<&str>, success: f64) -> Simulation {
    let mut c = deployment_canary(
        "    interval: 1m\n    threshold: 5\n    stepWeight: 5\n    maxWeight: 50\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n      interval: 1m\n",
    );
    if let Some(mode) = mode {
        c.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("judge.aviary.dev/mode".into(), mode.into());
    }
    let sim = Simulation::new(c);
    sim.fakes.metrics.values("request-success-rate", &[success; 40]);
    sim
}

fn arm(requests: u64, errors: u64) -> ArmReading {
    let mut a = ArmReading::default();
    a.requests.insert(1, requests as f64);
    a.errors.insert(2, errors as f64);
    a
}

/// Cumulative readings a minute apart: per minute the canary serves `c` requests with `ce`
/// errors and the primary `p` with `pe` (a pre-canary reading first).
fn readings(c: u64, ce: u64, p: u64, pe: u64) -> Vec<CounterReading> {
    (0..40u64)
        .map(|i| CounterReading {
            at: Timestamp::from_second(1_700_000_000 + 60 * i as i64).unwrap(),
            canary: arm(c * i, ce * i),
            primary: arm(p * i, pe * i),
        })
        .collect()
}

/// [`sim`] with the counter `readings` (none: a platform without counters), run to the end of
/// its analysis; its final phase.
async fn run_judged(
    mode: Option<&str>,
    success: f64,
    readings: Vec<CounterReading>,
) -> (Simulation, CanaryPhase) {
    let mut s = sim(mode, success);
    s.fakes.metrics.counters(readings);
    let phase = run_to_end(&mut s).await;
    (s, phase)
}

async fn run_to_end(sim: &mut Simulation) -> CanaryPhase {
    initialized(sim).await;
    for _ in 0..40 {
        sim.tick().await;
        let phase = sim.canary.status.as_ref().unwrap().phase;
        if matches!(phase, CanaryPhase::Succeeded | CanaryPhase::Failed) {
            return phase;
        }
    }
    panic!("the analysis did not end: {:#?}", messages(sim));
}

/// 0.5% canary errors against the primary's 0.1%: Flagger's check (99.5% ≥ 99%) passes every
/// tick; the judge rolls back through Flagger's path with its events.
#[tokio::test]
async fn the_judge_rolls_back_what_flaggers_threshold_passes() {
    let (judged, phase) = run_judged(Some("rollback"), 99.5, readings(1_200, 6, 10_800, 11)).await;
    assert_eq!(phase, CanaryPhase::Failed);
    let m = messages(&judged);
    let verdicts = said_starting(
        &judged,
        "Statistical judge on podinfo.default: rollback: request-success-rate: error ratio canary/primary",
    );
    let verdict = verdicts.first().unwrap_or_else(|| panic!("{m:#?}"));
    assert!(verdict.contains("evidence"), "{verdict}");
    assert!(
        said(
            &judged,
            "Rolling back podinfo.default failed checks threshold reached 5"
        ),
        "{m:#?}"
    );
    assert_eq!(judged.canary.status.as_ref().unwrap().failed_checks, 5);
    let evidence = judged.fakes.gate.evidence();
    assert!(!evidence.is_empty());
    assert_eq!(evidence[0].interval, 0);
    assert_eq!(
        (
            evidence[0].counts.canary.requests,
            evidence[0].counts.canary.errors
        ),
        (1_200, 6)
    );
    assert!(evidence.iter().all(|r| r.run == evidence[0].run));

    // The same canary without the annotation: Flagger's behaviour, the judge never asks.
    let (flagger, phase) = run_judged(None, 99.5, readings(1_200, 6, 10_800, 11)).await;
    assert_eq!(phase, CanaryPhase::Succeeded);
    assert_eq!(flagger.fakes.metrics.counter_reads(), 0);
    assert!(flagger.fakes.gate.evidence().is_empty());
    assert!(!messages(&flagger).iter().any(|e| e.contains("judge")));
}

/// `observe` reports the same verdict and changes nothing.
#[tokio::test]
async fn observe_only_reports() {
    let (s, phase) = run_judged(Some("observe"), 99.5, readings(1_200, 6, 10_800, 11)).await;
    assert_eq!(phase, CanaryPhase::Succeeded);
    let verdicts = said_starting(&s, "Statistical judge on podinfo.default: rollback:");
    assert_eq!(
        verdicts.iter().filter(|e| e.ends_with("(observe only)")).count(),
        1,
        "announced once: {:#?}",
        messages(&s)
    );
}

/// A good release at high traffic under `enforce`: promoted before the last weight step.
#[tokio::test]
async fn enforce_promotes_early_through_flaggers_promotion() {
    let (s, phase) = run_judged(Some("enforce"), 99.9, readings(20_000, 10, 180_000, 180)).await;
    assert_eq!(phase, CanaryPhase::Succeeded);
    let m = messages(&s);
    assert!(
        !said_starting(&s, "Statistical judge on podinfo.default: promote:").is_empty(),
        "{m:#?}"
    );
    let steps = said_starting(&s, "Advance podinfo.default canary weight").len();
    assert!(steps < 10, "promoted after {steps} of 10 steps: {m:#?}");
}

/// A configuration error is a warning, and the analysis runs as Flagger's.
#[tokio::test]
async fn a_bad_configuration_leaves_flagger_in_charge() {
    let (s, phase) = run_judged(Some("sometimes"), 99.5, readings(1_200, 6, 10_800, 11)).await;
    assert_eq!(phase, CanaryPhase::Succeeded);
    let off = said_starting(&s, "Statistical judge off");
    assert_eq!(off.len(), 1, "{:#?}", messages(&s));
    assert!(off[0].contains("judge.aviary.dev/mode"), "{}", off[0]);
}

/// Without counters (a platform that has none) the judge is off, with the reason.
#[tokio::test]
async fn no_counters_no_judge() {
    let (s, phase) = run_judged(Some("rollback"), 99.5, Vec::new()).await;
    assert_eq!(phase, CanaryPhase::Succeeded);
    assert!(!said_containing(&s, "cannot read the request counters").is_empty());
}

/// An agent restart mid-analysis. The judge's e-process lived in the old process; starting a
/// fresh one at the same α would be a second test of the same analysis (up to twice the
/// false-rollback bound), so the judge sits the rest of this analysis out, says so once, reports
/// no more evidence, and Flagger's checks decide alone. The next analysis is judged again.
#[tokio::test]
async fn after_an_agent_restart_the_judge_sits_the_analysis_out() {
    let mut s = sim(Some("rollback"), 99.5);
    // Equal error rates: the judge keeps watching (no verdict) until the restart.
    s.fakes.metrics.counters(readings(1_200, 1, 10_800, 9));
    initialized(&mut s).await;
    ticks(&mut s, 4).await;
    let reported = s.fakes.gate.evidence().len();
    assert!(reported >= 2, "the judge watched before the restart: {reported}");
    s.restart_agent();
    for _ in 0..40 {
        s.tick().await;
        if s.canary.status.as_ref().unwrap().phase == CanaryPhase::Succeeded {
            break;
        }
    }
    assert_eq!(s.canary.status.as_ref().unwrap().phase, CanaryPhase::Succeeded);
    let off = said_starting(&s, "Statistical judge off for this analysis of podinfo.default");
    assert_eq!(off.len(), 1, "said once: {:#?}", messages(&s));
    assert!(off[0].contains("the agent restarted"), "{}", off[0]);
    assert_eq!(
        s.fakes.gate.evidence().len(),
        reported,
        "no evidence after the restart"
    );

    // A new revision: a new analysis, watched from its start again.
    s.fakes.target.set_revision("rev-3");
    ticks(&mut s, 5).await;
    assert!(s.fakes.gate.evidence().len() > reported, "{:#?}", messages(&s));
}
