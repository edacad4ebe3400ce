//! No value of a Canary's analysis reaches a panic: whatever numbers and durations a spec
//! holds, validation reports them, the analysis interval stays positive, and the engine ticks
//! through a whole analysis. (`interval: 0s` once reached `Duration::mul_f64` with NaN in the
//! canary actor and panicked on every tick.)

use std::time::Duration;

use aviary_api::document::{Parsed, Resource, parse_documents};
use aviary_api::duration::parse_go_duration;
use aviary_api::validate::validate;
use aviary_core::simulate::Simulation;
use proptest::prelude::*;

/// Durations as people write them, and as they should not.
fn duration() -> impl Strategy<Value = String> {
    // Weighted so that each word is as likely as each generated form.
    prop_oneof![
        6 => prop::sample::select(&["0s", "0", "-1s", "1ns", "2562047h", ""][..]).prop_map(str::to_string),
        1 => (
            0u64..100_000,
            prop_oneof![Just("ns"), Just("ms"), Just("s"), Just("m"), Just("h")]
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        1 => "[0-9a-z.]{1,8}",
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1i64),
        Just(i64::from(i32::MAX)),
        Just(i64::from(i32::MIN)),
        -200i64..200
    ]
}

fn parse(yaml: &str) -> Option<Parsed> {
    parse_documents(yaml).ok()?.into_iter().next()?.ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_spec_value_reaches_a_panic(
        interval in duration(),
        metric_interval in duration(),
        threshold in int(),
        step in int(),
        max in int(),
        iterations in proptest::option::of(int()),
        steps in proptest::option::of(proptest::collection::vec(int(), 0..4)),
        promo in int(),
        deadline in int(),
        floor_ms in prop_oneof![Just(0u64), 0u64..20_000],
    ) {
        let mode = match (&iterations, &steps) {
            (Some(n), _) => format!("    iterations: {n}\n"),
            (None, Some(v)) => format!("    stepWeights: {v:?}\n"),
            (None, None) => format!("    stepWeight: {step}\n    maxWeight: {max}\n"),
        };
        let yaml = format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\n\
             spec:\n  provider: kubernetes\n  progressDeadlineSeconds: {deadline}\n\
             \x20 targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n  service: {{port: 9898}}\n\
             \x20 analysis:\n    interval: {interval:?}\n    threshold: {threshold}\n    stepWeightPromotion: {promo}\n{mode}\
             \x20   metrics:\n    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: {metric_interval:?}}}\n"
        );
        // Out-of-range numbers may not even parse (i32 fields): that is an error, not a panic.
        let Some(parsed) = parse(&yaml) else { return Ok(()) };
        let report = validate(&parsed);
        let Resource::Canary(canary) = parsed.resource else { unreachable!() };

        // The interval is never zero, whatever the spec and the agent's floor.
        prop_assert!(!canary.analysis_interval(Duration::from_millis(floor_ms)).is_zero());
        if parse_go_duration(&interval) == Ok(Duration::ZERO) {
            prop_assert!(
                report.errors().any(|d| d.path == "spec.analysis.interval"),
                "a zero interval must be refused: {interval:?}"
            );
        }

        // The engine runs a whole analysis on any spec without panicking.
        let mut sim = Simulation::new(*canary);
        futures::executor::block_on(async {
            sim.tick().await;
            sim.fakes.target.set_revision("rev-2");
            for _ in 0..40 {
                sim.tick().await;
                if sim.status().phase.is_final() {
                    break;
                }
            }
        });
    }
}
