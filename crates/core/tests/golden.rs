//! Golden tests: whole analyses on the fakes, event by event, against Flagger's texts.

mod common;

use aviary_api::CanaryPhase;
use aviary_api::canary::HookType;
use aviary_core::ports::NotReady;
use aviary_core::simulate::{Script, Simulation};
use common::*;

/// (b) The seed's podinfo canary with healthy metrics: 10 → 50, promotion, Succeeded.
#[tokio::test]
async fn seed_canary_promotes() {
    let mut sim = Simulation::new(canary(SEED_CANARY));
    let report = sim.run(&Script::default()).await;
    let want = [
        "T+0s Normal all the metrics providers are available!",
        "T+0s Normal Initialization done! podinfo.test",
        "T+15s Normal New revision detected! Scaling up podinfo.test",
        "T+30s Normal Starting canary analysis for podinfo.test",
        "T+30s Normal Advance podinfo.test canary weight 10",
        "T+45s Normal Advance podinfo.test canary weight 20",
        "T+60s Normal Advance podinfo.test canary weight 30",
        "T+75s Normal Advance podinfo.test canary weight 40",
        "T+90s Normal Advance podinfo.test canary weight 50",
        "T+105s Normal Copying podinfo.test template spec to podinfo-primary.test",
        "T+120s Normal Routing all traffic to primary",
        "T+135s Normal Promotion completed! Scaling down podinfo.test",
    ];
    assert_eq!(lines(&sim), want);
    assert_eq!(report.phase, CanaryPhase::Succeeded);
    assert_eq!(
        (report.weight, report.failed_checks, report.elapsed_seconds),
        (0, 0, 135)
    );
    assert!(
        report
            .to_text()
            .ends_with("phase: Succeeded weight: 0 failedChecks: 0 elapsed: 135s\n")
    );
    // the primary runs the new revision, the canary is scaled down, traffic is all primary
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-2"));
    assert!(!sim.fakes.target.scaled_up());
    assert_eq!(sim.fakes.router.routes().primary, 100);
    let s = sim.status();
    assert_eq!(s.last_promoted_spec, "rev-2");
    assert_eq!(s.promoted_condition().unwrap().status, "True");
    // the rollout webhook ran on each analysis tick after the first (5 weight steps + promotion)
    let load = sim
        .fakes
        .hooks
        .calls()
        .into_iter()
        .filter(|c| c.name == "load-test")
        .count();
    assert_eq!(load, 5);
    assert_eq!(sim.fakes.metrics.count("request-success-rate"), 5);
}

/// (c) A success rate that drops below 99% halts, counts, and rolls back at the threshold.
#[tokio::test]
async fn seed_canary_rolls_back_on_failed_checks() {
    let mut sim = Simulation::new(canary(SEED_CANARY));
    let script = Script::from_yaml(
        "metrics:\n  request-success-rate: [100, 100, 69.17, 61.39]\n  request-duration: [120]\n",
    )
    .unwrap();
    let report = sim.run(&script).await;
    let text = lines(&sim);
    assert!(
        text.contains(&"T+45s Normal Advance podinfo.test canary weight 20".to_string()),
        "{text:#?}"
    );
    assert!(text.contains(&"T+60s Normal Advance podinfo.test canary weight 30".to_string()));
    assert!(
        text.contains(&"T+75s Warning Halt podinfo.test advancement success rate 69.17% < 99%".to_string())
    );
    assert!(
        text.contains(&"T+90s Warning Halt podinfo.test advancement success rate 61.39% < 99%".to_string())
    );
    let halts = text
        .iter()
        .filter(|l| l.contains("Halt podinfo.test advancement success rate"))
        .count();
    assert_eq!(halts, 15);
    let tail: Vec<&String> = text.iter().rev().take(2).collect();
    assert_eq!(
        tail[1],
        "T+300s Warning Rolling back podinfo.test failed checks threshold reached 15"
    );
    assert_eq!(tail[0], "T+300s Warning Canary failed! Scaling down podinfo.test");
    assert_eq!(report.phase, CanaryPhase::Failed);
    assert_eq!((report.weight, report.failed_checks), (0, 15));
    assert_eq!(sim.fakes.router.routes().canary, 0);
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-1"));
    assert_eq!(sim.status().promoted_condition().unwrap().status, "False");
    // a failed canary stays idle: no traffic change until a new revision
    let before = sim.fakes.router.history().len();
    for _ in 0..5 {
        sim.tick().await;
    }
    assert_eq!(sim.fakes.router.history().len(), before);
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
}

/// (a) The event-webhook sequence of Flagger's events test: every event, with the phase the
/// canary was in, reaches the `event` webhook.
#[tokio::test]
async fn event_webhook_sequence() {
    let c = deployment_canary(
        "    interval: 1m\n    threshold: 10\n    stepWeight: 100\n    stepWeightPromotion: 50\n    webhooks:\n\
         \x20   - {name: confirm-rollout, type: confirm-rollout, url: http://hooks/}\n\
         \x20   - {name: pre-rollout, type: pre-rollout, url: http://hooks/}\n\
         \x20   - {name: confirm-traffic-increase, type: confirm-traffic-increase, url: http://hooks/}\n\
         \x20   - {name: confirm-promotion, type: confirm-promotion, url: http://hooks/}\n\
         \x20   - {name: post-rollout, type: post-rollout, url: http://hooks/}\n\
         \x20   - {name: events, type: event, url: http://hooks/}\n",
    );
    let mut sim = Simulation::new(c);
    sim.fakes.target.set_primary_ready(Err(NotReady::retriable(
        "podinfo-primary.default not ready: waiting for rollout to finish",
    )));
    sim.tick().await;
    sim.fakes.target.set_primary_ready(Ok(()));
    sim.tick().await;
    sim.fakes.target.set_revision("rev-2");
    for _ in 0..8 {
        sim.tick().await;
        if sim.status().phase == CanaryPhase::Succeeded {
            break;
        }
    }
    let events: Vec<(String, CanaryPhase)> = sim
        .fakes
        .hooks
        .calls()
        .into_iter()
        .filter(|c| c.kind == HookType::Event)
        .map(|c| (c.payload.metadata["eventMessage"].clone(), c.payload.phase))
        .collect();
    use CanaryPhase::*;
    let want: Vec<(&str, CanaryPhase)> = vec![
        ("all the metrics providers are available!", Initializing),
        (
            "podinfo-primary.default not ready: waiting for rollout to finish",
            Initializing,
        ),
        ("all the metrics providers are available!", Initializing),
        ("Initialization done! podinfo.default", Initialized),
        ("Confirm-rollout check confirm-rollout passed", Initialized),
        ("New revision detected! Scaling up podinfo.default", Progressing),
        ("Starting canary analysis for podinfo.default", Progressing),
        ("Pre-rollout check pre-rollout passed", Progressing),
        (
            "Confirm-traffic-increase check confirm-traffic-increase passed",
            Progressing,
        ),
        ("Advance podinfo.default canary weight 100", Progressing),
        (
            "Confirm-traffic-increase check confirm-traffic-increase passed",
            Progressing,
        ),
        ("Confirm-promotion check confirm-promotion passed", Progressing),
        (
            "Copying podinfo.default template spec to podinfo-primary.default",
            Progressing,
        ),
        ("Advance podinfo.default primary weight 50", Promoting),
        ("Advance podinfo.default primary weight 100", Promoting),
        ("Post-rollout check post-rollout passed", Succeeded),
        ("Promotion completed! Scaling down podinfo.default", Succeeded),
    ];
    let got: Vec<(&str, CanaryPhase)> = events.iter().map(|(m, p)| (m.as_str(), *p)).collect();
    assert_eq!(got, want);
    // event payloads carry Flagger's metadata keys
    let first = first_hook(&sim, HookType::Event);
    assert_eq!(first.payload.metadata["eventType"], "Normal");
    assert!(first.payload.metadata["timestamp"].parse::<i64>().is_ok());
    assert_eq!(first.payload.name, "podinfo");
}
