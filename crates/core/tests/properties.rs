//! Invariants of the engine over random analyses: weights, idleness of finished canaries, and
//! the failed-checks bound.

mod common;

use aviary_api::canary::{CanaryMetric, CanaryWebhook, ThresholdRange};
use aviary_core::fakes::Answer;
use aviary_core::simulate::Simulation;
use common::deployment_canary;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mode {
    Step(i32, i32),
    Steps(Vec<i32>),
    BlueGreen(i32),
    Ab(i32),
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        (1i32..=100, 1i32..=100).prop_map(|(s, m)| Mode::Step(s, m)),
        proptest::collection::btree_set(1i32..=100, 1..6).prop_map(|s| Mode::Steps(s.into_iter().collect())),
        (1i32..=6).prop_map(Mode::BlueGreen),
        (1i32..=6).prop_map(Mode::Ab),
    ]
}

fn build(mode: &Mode, threshold: i32, mirror: bool, promo: i32, provider: &str) -> Simulation {
    let analysis = match mode {
        Mode::Step(s, m) => format!("    stepWeight: {s}\n    maxWeight: {m}\n"),
        Mode::Steps(v) => format!("    stepWeights: {v:?}\n"),
        Mode::BlueGreen(n) => format!("    iterations: {n}\n"),
        Mode::Ab(n) => {
            format!("    iterations: {n}\n    match:\n    - headers: {{x-user: {{exact: beta}}}}\n")
        }
    };
    let mut c = deployment_canary(&format!(
        "    interval: 1m\n    threshold: {threshold}\n    mirror: {mirror}\n    stepWeightPromotion: {promo}\n{analysis}"
    ));
    c.spec.provider = Some(provider.into());
    let a = c.spec.analysis.as_mut().unwrap();
    a.metrics = Some(vec![CanaryMetric {
        name: Some("request-success-rate".into()),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    }]);
    a.webhooks = Some(vec![
        CanaryWebhook {
            name: Some("gate".into()),
            type_: Some("confirm-promotion".into()),
            url: Some("http://x/".into()),
            ..Default::default()
        },
        CanaryWebhook {
            name: Some("load".into()),
            type_: Some("rollout".into()),
            url: Some("http://x/".into()),
            ..Default::default()
        },
    ]);
    Simulation::new(c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants(
        mode in mode(),
        threshold in 1i32..=5,
        mirror in any::<bool>(),
        promo in 0i32..=100,
        kubernetes in any::<bool>(),
        rates in proptest::collection::vec(prop_oneof![Just(100.0), Just(50.0), Just(-1.0)], 1..12),
        gates in proptest::collection::vec(any::<bool>(), 1..6),
        loads in proptest::collection::vec(any::<bool>(), 1..6),
    ) {
        let provider = if kubernetes { "kubernetes" } else { "istio" };
        let mut sim = build(&mode, threshold, mirror, promo, provider);
        let answers = rates.iter().map(|r| if *r < 0.0 { Answer::NoValues } else { Answer::Value(*r) }).collect();
        sim.fakes.metrics.script("request-success-rate", answers);
        sim.fakes.hooks.script("gate", &gates);
        sim.fakes.hooks.script("load", &loads);

        futures::executor::block_on(async {
            sim.tick().await;
            sim.fakes.target.set_revision("rev-2");
            let mut finished_at = None;
            for i in 0..200 {
                sim.tick().await;
                if sim.status().phase.is_final() {
                    finished_at = Some(i);
                    break;
                }
            }
            // Finished canaries stay idle: no traffic change until a new revision.
            if finished_at.is_some() {
                let before = sim.fakes.router.history().len();
                for _ in 0..5 {
                    sim.tick().await;
                }
                prop_assert_eq!(sim.fakes.router.history().len(), before);
            }
            Ok(())
        })?;

        // Weights stay within 0–100 and sum to 100.
        for r in sim.fakes.router.history() {
            prop_assert!((0..=100).contains(&r.primary) && (0..=100).contains(&r.canary), "{:?}", r);
            prop_assert_eq!(r.primary + r.canary, 100, "{:?}", r);
        }
        // failedChecks never exceeds the threshold (rollback happens at the threshold).
        for s in sim.fakes.recorder.statuses() {
            prop_assert!(s.failed_checks <= threshold, "failedChecks {} > threshold {}", s.failed_checks, threshold);
            prop_assert!((0..=100).contains(&s.canary_weight));
        }
    }
}
