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
    let mut judged = sim(Some("rollback"), 99.5);
    judged.fakes.metrics.counters(readings(1_200, 6, 10_800, 11));
    assert_eq!(run_to_end(&mut judged).await, CanaryPhase::Failed);
    let m = messages(&judged);
    let verdict = m
        .iter()
        .find(|e| e.starts_with("Statistical judge on podinfo.default: rollback: request-success-rate: error ratio canary/primary"))
        .unwrap_or_else(|| panic!("{m:#?}"));
    assert!(verdict.contains("evidence"), "{verdict}");
    assert!(
        m.contains(&"Rolling back podinfo.default failed checks threshold reached 5".to_string()),
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
    let mut flagger = sim(None, 99.5);
    flagger.fakes.metrics.counters(readings(1_200, 6, 10_800, 11));
    assert_eq!(run_to_end(&mut flagger).await, CanaryPhase::Succeeded);
    assert_eq!(flagger.fakes.metrics.counter_reads(), 0);
    assert!(flagger.fakes.gate.evidence().is_empty());
    assert!(!messages(&flagger).iter().any(|e| e.contains("judge")));
}

/// `observe` reports the same verdict and changes nothing.
#[tokio::test]
async fn observe_only_reports() {
    let mut s = sim(Some("observe"), 99.5);
    s.fakes.metrics.counters(readings(1_200, 6, 10_800, 11));
    assert_eq!(run_to_end(&mut s).await, CanaryPhase::Succeeded);
    let m = messages(&s);
    assert_eq!(
        m.iter()
            .filter(
                |e| e.starts_with("Statistical judge on podinfo.default: rollback:")
                    && e.ends_with("(observe only)")
            )
            .count(),
        1,
        "announced once: {m:#?}"
    );
}

/// A good release at high traffic under `enforce`: promoted before the last weight step.
#[tokio::test]
async fn enforce_promotes_early_through_flaggers_promotion() {
    let mut s = sim(Some("enforce"), 99.9);
    s.fakes.metrics.counters(readings(20_000, 10, 180_000, 180));
    assert_eq!(run_to_end(&mut s).await, CanaryPhase::Succeeded);
    let m = messages(&s);
    assert!(
        m.iter()
            .any(|e| e.starts_with("Statistical judge on podinfo.default: promote:")),
        "{m:#?}"
    );
    let steps = m
        .iter()
        .filter(|e| e.starts_with("Advance podinfo.default canary weight"))
        .count();
    assert!(steps < 10, "promoted after {steps} of 10 steps: {m:#?}");
}

/// A configuration error is a warning, and the analysis runs as Flagger's.
#[tokio::test]
async fn a_bad_configuration_leaves_flagger_in_charge() {
    let mut s = sim(Some("sometimes"), 99.5);
    s.fakes.metrics.counters(readings(1_200, 6, 10_800, 11));
    assert_eq!(run_to_end(&mut s).await, CanaryPhase::Succeeded);
    let m = messages(&s);
    let off: Vec<_> = m
        .iter()
        .filter(|e| e.starts_with("Statistical judge off"))
        .collect();
    assert_eq!(off.len(), 1, "{m:#?}");
    assert!(off[0].contains("judge.aviary.dev/mode"), "{}", off[0]);
}

/// Without counters (a platform that has none) the judge is off, with the reason.
#[tokio::test]
async fn no_counters_no_judge() {
    let mut s = sim(Some("rollback"), 99.5);
    assert_eq!(run_to_end(&mut s).await, CanaryPhase::Succeeded);
    assert!(
        messages(&s)
            .iter()
            .any(|e| e.contains("cannot read the request counters"))
    );
}
