//! One test per behaviour of the tick: strategies, gates, webhooks, suspend, skip, restart,
//! deadlines, alerts and metric checks.

mod common;

use aviary_api::CanaryPhase;
use aviary_core::fakes::{Answer, FakeGate};
use aviary_core::ports::{NotReady, Severity};
use aviary_core::simulate::Simulation;
use common::*;

async fn run_until_final(sim: &mut Simulation, max: usize) {
    for _ in 0..max {
        sim.tick().await;
        if sim.status().phase.is_final() {
            return;
        }
    }
    panic!("did not finish in {max} ticks: {:#?}", lines(sim));
}

/// A simulation of `canary` whose new revision ran to the end in at most `max` ticks.
async fn finished(canary: aviary_api::Canary, max: usize) -> Simulation {
    let mut sim = started(canary, &[]).await;
    run_until_final(&mut sim, max).await;
    sim
}

#[tokio::test]
async fn ab_testing_runs_iterations_with_matches_then_promotes() {
    let sim = finished(
        deployment_canary(
            "    interval: 1m\n    threshold: 5\n    iterations: 3\n    match:\n    - headers:\n        x-canary:\n          exact: insider\n",
        ),
        20,
    )
    .await;
    assert_eq!(
        said_containing(&sim, "canary iteration"),
        [
            "Advance podinfo.default canary iteration 1/3",
            "Advance podinfo.default canary iteration 2/3",
            "Advance podinfo.default canary iteration 3/3"
        ]
    );
    // A/B routes matched traffic to the canary: the split is 0/100 while testing
    assert!(
        sim.fakes
            .router
            .history()
            .iter()
            .any(|r| r.primary == 0 && r.canary == 100)
    );
    assert_said(
        &sim,
        "Copying podinfo.default template spec to podinfo-primary.default",
    );
    assert_eq!(sim.status().phase, CanaryPhase::Succeeded);
    assert_eq!(
        sim.fakes.recorder.successes(),
        [(aviary_api::Strategy::AbTesting, false)]
    );
}

#[tokio::test]
async fn blue_green_iterates_then_switches_then_promotes() {
    let sim = finished(
        deployment_canary("    interval: 1m\n    threshold: 5\n    iterations: 2\n"),
        20,
    )
    .await;
    let m = messages(&sim);
    let idx = |s: &str| {
        m.iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("missing {s:?} in {m:#?}"))
    };
    assert!(
        idx("Advance podinfo.default canary iteration 1/2")
            < idx("Advance podinfo.default canary iteration 2/2")
    );
    assert!(idx("Advance podinfo.default canary iteration 2/2") < idx("Routing all traffic to canary"));
    assert!(
        idx("Routing all traffic to canary")
            < idx("Copying podinfo.default template spec to podinfo-primary.default")
    );
    // traffic never moved during the iterations; then all at once
    let history = sim.fakes.router.history();
    assert!(
        history
            .iter()
            .all(|r| (r.primary, r.canary) == (100, 0) || (r.primary, r.canary) == (0, 100))
    );
}

#[tokio::test]
async fn blue_green_mirrors_for_all_iterations() {
    let sim = finished(
        deployment_canary("    interval: 1m\n    threshold: 5\n    iterations: 2\n    mirror: true\n"),
        20,
    )
    .await;
    let history = sim.fakes.router.history();
    assert!(history.iter().any(|r| r.mirror && r.primary == 100));
    assert_said(&sim, "Stop traffic mirroring and route all traffic to canary");
}

#[tokio::test]
async fn canary_mirrors_one_step_before_shifting() {
    let sim = finished(
        stepped_with(5, 50, "    mirror: true\n    mirrorWeight: 100\n"),
        20,
    )
    .await;
    let splits: Vec<(i32, i32, bool)> = sim
        .fakes
        .router
        .history()
        .iter()
        .map(|r| (r.primary, r.canary, r.mirror))
        .collect();
    // mirror at 100/0, then 50/50 without mirror, then max → promotion → back to primary
    assert_eq!(&splits[..3], &[(100, 0, true), (50, 50, false), (0, 100, false)]);
    assert_said(&sim, "Advance podinfo.default canary weight 0");
    assert_said(&sim, "Advance podinfo.default canary weight 50");
}

/// The canary's weights follow `stepWeights`, and the primary's `stepWeightPromotion` (from
/// `maxWeight`) on the way back.
#[tokio::test]
async fn weights_follow_the_steps() {
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "    stepWeights: [1, 2, 10, 80]\n",
            "canary weight",
            &[
                "Advance podinfo.default canary weight 1",
                "Advance podinfo.default canary weight 2",
                "Advance podinfo.default canary weight 10",
                "Advance podinfo.default canary weight 80",
            ],
        ),
        (
            "    stepWeight: 40\n    maxWeight: 80\n    stepWeightPromotion: 30\n",
            "primary weight",
            &[
                "Advance podinfo.default primary weight 50",
                "Advance podinfo.default primary weight 80",
                "Advance podinfo.default primary weight 100",
            ],
        ),
    ];
    for (steps, needle, advances) in cases {
        let analysis = format!("    interval: 1m\n    threshold: 5\n{steps}");
        let sim = finished(deployment_canary(&analysis), 20).await;
        assert_eq!(said_containing(&sim, needle), advances, "{steps}");
    }
}

#[tokio::test]
async fn confirm_rollout_waits_then_starts() {
    let c = stepped_with(5, 50, &webhook("gate", "confirm-rollout"));
    let mut sim = started(c, &[("gate", &[false, false, true])]).await;
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Waiting);
    sim.tick().await; // still closed: silent
    assert_eq!(sim.status().phase, CanaryPhase::Waiting);
    sim.tick().await; // opens
    assert_eq!(sim.status().phase, CanaryPhase::Progressing);
    let m = messages(&sim);
    assert_eq!(
        m.iter()
            .filter(|l| *l == "Halt podinfo.default advancement waiting for approval gate")
            .count(),
        1
    );
    assert_said(&sim, "Confirm-rollout check gate passed");
    let alerts = sim.fakes.notifier.alerts();
    assert!(
        alerts
            .iter()
            .any(|(_, a)| a.message == "Canary is waiting for approval." && a.severity == Severity::Warn)
    );
}

#[tokio::test]
async fn confirm_promotion_holds_at_max_weight() {
    let c = stepped_with(
        5,
        50,
        "    webhooks:\n    - {name: promote, type: confirm-promotion, url: http://gate/, muteAlert: true}\n",
    );
    let mut sim = started(c, &[("promote", &[false, false, true])]).await;
    ticks(&mut sim, 4).await; // scale up, 50, 100, waiting
    assert_eq!(sim.status().phase, CanaryPhase::WaitingPromotion);
    // status weight is zeroed but the live split stays at max weight (Flagger's behaviour)
    assert_eq!(sim.status().canary_weight, 0);
    assert_eq!(sim.fakes.router.routes().canary, 100);
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::WaitingPromotion);
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Promoting);
    assert_said(
        &sim,
        "Halt podinfo.default advancement waiting for promotion approval promote",
    );
    assert!(
        sim.fakes
            .notifier
            .alerts()
            .iter()
            .all(|(_, a)| a.message != "Canary promotion is waiting for approval.")
    );
}

#[tokio::test]
async fn confirm_traffic_increase_halts_without_counting() {
    let c = stepped_with(1, 50, &webhook("more", "confirm-traffic-increase"));
    let mut sim = started(c, &[("more", &[true, false, false, true])]).await;
    run_until_final(&mut sim, 20).await;
    assert_eq!(sim.status().phase, CanaryPhase::Succeeded);
    assert_eq!(
        times_said(
            &sim,
            "Halt podinfo.default advancement waiting for traffic increase approval more"
        ),
        2
    );
}

#[tokio::test]
async fn rollback_webhook_rolls_back_now() {
    let c = stepped_with(5, 20, &webhook("panic-button", "rollback"));
    let mut sim = started(c, &[("panic-button", &[false, false, false, true])]).await;
    run_until_final(&mut sim, 20).await;
    assert_said(&sim, "Rollback hook panic-button not signaling a rollback");
    assert_said(&sim, "Rollback check panic-button passed");
    assert_said(&sim, "Rolling back podinfo.default manual webhook invoked");
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
    assert_eq!(sim.fakes.router.routes().canary, 0);
}

#[tokio::test]
async fn suspend_pauses_even_mid_analysis() {
    let mut sim = started(stepped(5, 10), &[]).await;
    sim.tick().await;
    sim.tick().await;
    let weight = sim.status().canary_weight;
    sim.canary.spec.suspend = Some(true);
    ticks(&mut sim, 3).await;
    assert_eq!(sim.status().canary_weight, weight);
    assert_eq!(times_said(&sim, "skipping canary run as object is suspended"), 3);
    sim.canary.spec.suspend = Some(false);
    sim.tick().await;
    assert_eq!(sim.status().canary_weight, weight + 10);
}

#[tokio::test]
async fn skip_analysis_promotes_at_once() {
    let mut c = stepped(5, 10);
    c.spec.skip_analysis = Some(true);
    let mut sim = started(c, &[]).await;
    run_until_final(&mut sim, 5).await;
    let m = messages(&sim);
    assert_said(
        &sim,
        "Promotion completed! Canary analysis was skipped for podinfo.default",
    );
    assert!(!m.iter().any(|l| l.contains("canary weight")));
    assert_eq!(
        sim.fakes.recorder.successes(),
        [(aviary_api::Strategy::Canary, true)]
    );
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-2"));
}

#[tokio::test]
async fn new_revision_mid_analysis_restarts() {
    let mut sim = Simulation::new(stepped(5, 10));
    sim.fakes
        .metrics
        .script("request-success-rate", vec![Answer::Value(100.0)]);
    initialized(&mut sim).await;
    ticks(&mut sim, 4).await;
    assert_eq!(sim.status().canary_weight, 30);
    sim.fakes.target.set_revision("rev-3");
    sim.tick().await;
    assert_said(
        &sim,
        "New revision detected! Restarting analysis for podinfo.default",
    );
    let s = sim.status();
    assert_eq!(
        (s.phase, s.canary_weight, s.failed_checks, s.iterations),
        (CanaryPhase::Progressing, 0, 0, 0)
    );
    assert_eq!(s.last_applied_spec, "rev-3");
    assert_eq!(sim.fakes.router.routes().canary, 0);
    run_until_final(&mut sim, 20).await;
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-3"));
}

#[tokio::test]
async fn canary_that_never_becomes_ready_fails_at_the_progress_deadline() {
    // Flagger #1247: pods crash-loop and Kubernetes never reports ProgressDeadlineExceeded.
    let mut c = stepped(5, 10);
    c.spec.progress_deadline_seconds = Some(150);
    let mut sim = started(c, &[]).await;
    sim.fakes.target.set_canary_ready(Err(NotReady::retriable("canary deployment podinfo.default not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available")));
    run_until_final(&mut sim, 10).await;
    let m = messages(&sim);
    assert!(m.iter().any(|l| l.starts_with(
        "Rolling back podinfo.default progress deadline exceeded canary deployment podinfo.default not ready"
    )));
    assert!(
        sim.fakes.notifier.alerts().iter().any(
            |(_, a)| a.message.starts_with("Progress deadline exceeded") && a.severity == Severity::Error
        )
    );
    // 150s deadline at a 60s interval: unready at +60, +120, +180 (180s > 150s since +60? no: since +60 → +240)
    assert!(sim.elapsed() <= 6 * 60);
}

#[tokio::test]
async fn fatal_canary_readiness_rolls_back_at_once() {
    let mut sim = progressing(stepped(5, 10)).await;
    sim.fakes.target.set_canary_ready(Err(NotReady::fatal(
        "deployment \"podinfo\" exceeded its progress deadline",
    )));
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
}

#[tokio::test]
async fn primary_that_fails_during_promotion_keeps_serving_from_canary() {
    let mut sim = started(stepped(5, 50), &[]).await;
    ticks(&mut sim, 4).await;
    assert_eq!(sim.status().phase, CanaryPhase::Promoting);
    sim.fakes.target.set_primary_ready(Err(NotReady::fatal(
        "deployment \"podinfo-primary\" exceeded its progress deadline",
    )));
    sim.tick().await;
    let s = sim.status();
    assert_eq!((s.phase, s.canary_weight), (CanaryPhase::Failed, 100));
    assert_eq!(sim.fakes.router.routes().canary, 100);
    assert!(
        messages(&sim)
            .iter()
            .any(|l| l.starts_with("Promotion of podinfo.default failed, primary not ready"))
    );
}

#[tokio::test]
async fn failed_canary_analyses_the_next_revision_even_after_an_early_return() {
    // aviary fix: the fingerprint is stored only when the analysis starts.
    let mut sim = Simulation::new(stepped_with(1, 50, SUCCESS_RATE_AT_LEAST_99));
    sim.fakes
        .metrics
        .script("request-success-rate", vec![Answer::Value(100.0)]);
    sim.fakes.metrics.values("request-success-rate", &[10.0]);
    initialized(&mut sim).await;
    run_until_final(&mut sim, 10).await;
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
    // a new revision arrives while the primary is briefly not ready
    sim.fakes.metrics.values("request-success-rate", &[100.0]);
    sim.fakes.target.set_revision("rev-3");
    sim.fakes
        .target
        .set_primary_ready(Err(NotReady::retriable("podinfo-primary.default not ready")));
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
    sim.fakes.target.set_primary_ready(Ok(()));
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Progressing, "{:#?}", lines(&sim));
    run_until_final(&mut sim, 10).await;
    assert_eq!(sim.status().phase, CanaryPhase::Succeeded);
}

#[tokio::test]
async fn reverting_to_the_promoted_revision_starts_nothing() {
    let mut sim = started(stepped(1, 50), &[]).await;
    sim.tick().await; // Progressing on rev-2
    sim.fakes.target.set_revision("rev-1"); // back to what the primary runs
    sim.tick().await;
    // mid-analysis: rev-1 equals lastPromotedSpec, so no restart (Flagger's manual rollback rule)
    assert!(!messages(&sim).iter().any(|l| l.contains("Restarting analysis")));
}

#[tokio::test]
async fn threshold_one_rolls_back_on_the_tick_after_the_failure() {
    let mut sim = Simulation::new(canary(SEED_CANARY));
    sim.canary.spec.analysis.as_mut().unwrap().threshold = Some(1);
    sim.fakes.metrics.values("request-success-rate", &[50.0]);
    initialized(&mut sim).await;
    sim.tick().await; // scale up
    sim.tick().await; // first analysis tick: pre-rollout only, advance 10
    sim.tick().await; // metrics fail: failedChecks 1
    assert_eq!(
        (sim.status().phase, sim.status().failed_checks),
        (CanaryPhase::Progressing, 1)
    );
    sim.tick().await; // rollback
    assert_eq!(
        (sim.status().phase, sim.status().failed_checks),
        (CanaryPhase::Failed, 1)
    );
}

#[tokio::test]
async fn no_values_is_a_failed_check_with_flaggers_message() {
    let mut sim = Simulation::new(canary(SEED_CANARY));
    sim.fakes
        .metrics
        .script("request-success-rate", vec![Answer::NoValues]);
    initialized(&mut sim).await;
    ticks(&mut sim, 3).await;
    assert!(messages(&sim).contains(
        &"Halt advancement no values found for knative metric request-success-rate probably podinfo.test is not receiving traffic: no values found".to_string()
    ));
    assert_eq!(sim.status().failed_checks, 1);
}

#[tokio::test]
async fn request_duration_messages_use_go_durations() {
    let mut sim = Simulation::new(canary(SEED_CANARY));
    sim.fakes.metrics.values("request-duration", &[1200.7]);
    initialized(&mut sim).await;
    ticks(&mut sim, 3).await;
    assert_said(
        &sim,
        "Halt podinfo.test advancement request duration 1.2s > 500ms",
    );
}

#[tokio::test]
async fn template_metrics_render_and_check() {
    let c = stepped_with(
        5,
        50,
        "    metrics:\n    - name: error-rate\n      templateRef: {name: error-rate}\n      thresholdRange: {max: 1}\n      templateVariables: {cluster: eu}\n    - name: broken\n      templateRef: {name: broken}\n      thresholdRange: {max: 1}\n",
    );
    let mut sim = Simulation::new(c);
    let mk = |name: &str, query: &str| template(name, "prometheus", query);
    sim.fakes.metrics.add_template(mk(
        "error-rate",
        "rate{ns=\"{{ namespace }}\",c=\"{{ variables.cluster }}\"}[{{ interval }}]",
    ));
    sim.fakes
        .metrics
        .add_template(mk("broken", "{{ variables.region }}"));
    sim.fakes.metrics.values("error-rate", &[2.5]);
    sim.fakes.target.set_route(Some("podinfo-00002"));
    initialized(&mut sim).await;
    ticks(&mut sim, 3).await;
    let m = messages(&sim);
    assert!(
        m.contains(&"Halt podinfo.default advancement error-rate 2.50 > 1".to_string()),
        "{m:#?}"
    );
    sim.fakes.metrics.values("error-rate", &[0.5]);
    sim.tick().await;
    let m = messages(&sim);
    assert!(
        m.contains(&"Metric template broken.default query render error: template excution failed: template: tmpl:1:3: executing \"tmpl\" at <variables>: map has no entry for key \"region\"".to_string()),
        "{m:#?}"
    );
    assert_eq!(sim.status().failed_checks, 2);
}

#[tokio::test]
async fn alerts_follow_severity_and_carry_fields() {
    let c = stepped_with(
        1,
        50,
        &format!(
            "    alerts:\n    - {{name: all, providerRef: {{name: all}}}}\n    - {{name: warn, severity: warn, providerRef: {{name: warn}}}}\n    - {{name: errors, severity: error, providerRef: {{name: errors}}}}\n{SUCCESS_RATE_AT_LEAST_99}"
        ),
    );
    let mut sim = Simulation::new(c);
    sim.config.cluster = Some("eu-west-1a".into());
    sim.fakes.metrics.values("request-success-rate", &[0.0]);
    initialized(&mut sim).await;
    run_until_final(&mut sim, 10).await;
    let alerts = sim.fakes.notifier.alerts();
    let to = |who: &str| {
        alerts
            .iter()
            .filter(|(p, _)| p == who)
            .map(|(_, a)| a.message.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        to("all"),
        [
            "New Deployment detected, initialization completed.",
            "New revision detected, progressing canary analysis.",
            "Failed checks threshold reached 1"
        ]
    );
    assert_eq!(to("warn"), ["Failed checks threshold reached 1"]);
    assert_eq!(to("errors"), ["Failed checks threshold reached 1"]);
    let init = &alerts[0].1;
    assert_eq!(init.fields[0], ("Cluster".into(), "eu-west-1a".into()));
    assert!(
        init.fields
            .contains(&("Target".into(), "Deployment/podinfo.default".into()))
    );
    assert!(
        init.fields
            .contains(&("Traffic routing".into(), "Weight step: 50 max: 100".into()))
    );
    assert!(init.fields.contains(&("Progress deadline".into(), "600s".into())));
}

#[tokio::test]
async fn coordinator_gate_holds_and_releases() {
    let mut sim = Simulation::new(stepped(5, 50));
    sim.fakes.gate = FakeGate::named("aviary-coordinator");
    sim.fakes
        .gate
        .set_closed(Some("waiting for wave eu of rollout r1"));
    initialized(&mut sim).await;
    sim.tick().await;
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Waiting);
    assert_eq!(sim.fakes.gate.asked(), ["rev-2", "rev-2"]);
    // The coordinator's reason is the Promoted condition's message and one event (per change),
    // so `kubectl describe canary` explains the hold.
    let hold = "Waiting for approval from aviary-coordinator: waiting for wave eu of rollout r1";
    let promoted = sim.status().promoted_condition().cloned().unwrap();
    assert_eq!(promoted.message, hold);
    assert_eq!(messages(&sim).iter().filter(|m| m.as_str() == hold).count(), 1);
    sim.fakes
        .gate
        .set_closed(Some("waiting for wave eu of rollout r1 to be approved"));
    sim.tick().await;
    let promoted = sim.status().promoted_condition().cloned().unwrap();
    assert!(
        promoted.message.ends_with("to be approved"),
        "{}",
        promoted.message
    );
    sim.fakes.gate.set_closed(None);
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Progressing);
    assert_said(
        &sim,
        "Halt podinfo.default advancement waiting for approval aviary-coordinator",
    );
    assert_said(&sim, "Confirm-rollout check aviary-coordinator passed");
    // the coordinator can also pull the canary back
    sim.tick().await;
    sim.fakes.gate.request_rollback(Some("wave failed elsewhere"));
    sim.tick().await;
    assert_eq!(sim.status().phase, CanaryPhase::Failed);
    assert!(messages(&sim).contains(
        &"Rolling back podinfo.default requested by aviary-coordinator: wave failed elsewhere".to_string()
    ));
}

#[tokio::test]
async fn session_affinity_cookies_are_minted_and_retired() {
    let c = stepped_with(
        5,
        50,
        "    sessionAffinity:\n      cookieName: flagger-cookie\n      primaryCookieName: primary-cookie\n",
    );
    let mut sim = progressing(c).await;
    sim.tick().await; // 50
    let s = sim.status();
    assert!(s.session_affinity_cookie.starts_with("flagger-cookie="));
    assert!(s.primary_session_affinity_cookie.starts_with("primary-cookie="));
    let routes = sim.fakes.router.routes();
    assert_eq!(
        routes.session.unwrap().canary.as_deref(),
        Some(s.session_affinity_cookie.as_str())
    );
    // As Flagger: the cookies reach the status with the weight that needs them (one write).
    let first = sim
        .fakes
        .recorder
        .statuses()
        .into_iter()
        .find(|s| !s.session_affinity_cookie.is_empty())
        .unwrap();
    assert_eq!(first.canary_weight, 50);
    run_until_final(&mut sim, 10).await;
    let s = sim.status();
    assert!(s.session_affinity_cookie.is_empty());
    assert!(s.previous_session_affinity_cookie.starts_with("flagger-cookie="));
    // The primary's cookie stays (Flagger never clears it), for the next run to reuse.
    assert!(s.primary_session_affinity_cookie.starts_with("primary-cookie="));
    // Retired with the write that ends the split (Finalising), not a write of its own.
    let retired = sim
        .fakes
        .recorder
        .statuses()
        .into_iter()
        .find(|s| !s.previous_session_affinity_cookie.is_empty())
        .unwrap();
    assert_eq!(retired.phase, CanaryPhase::Finalising);
}

#[tokio::test]
async fn kubernetes_provider_forces_blue_green() {
    let mut c = stepped(5, 10);
    c.spec.provider = Some("kubernetes".into());
    let mut sim = started(c, &[]).await;
    run_until_final(&mut sim, 30).await;
    assert_said(
        &sim,
        "Progressive traffic is not supported when using the kubernetes provider",
    );
    assert_said(&sim, "Setting canaryAnalysis.iterations: 10");
    assert_said(&sim, "Advance podinfo.default canary iteration 10/10");
    // the apex never routes to the canary with the kubernetes provider
    assert!(sim.fakes.router.history().iter().all(|r| r.canary == 0));
}

#[tokio::test]
async fn metric_provider_check_and_status_write_failures_are_reported() {
    let mut sim = Simulation::new(stepped(5, 10));
    sim.fakes.metrics.set_unavailable(Some(
        "Get \"http://prometheus:9090/api/v1/query\": connection refused",
    ));
    sim.tick().await;
    assert!(messages(&sim)[0].starts_with("Error checking metric providers: Get"));
    assert_eq!(sim.status().phase, CanaryPhase::Initialized);
    sim.fakes.target.set_revision("rev-2");
    sim.fakes.recorder.fail_status(Some("conflict"));
    sim.tick().await;
    assert_said(&sim, "status update failed: conflict");
}

#[tokio::test]
async fn the_coordinator_can_promote_a_known_good_revision_without_analysis() {
    let mut sim = Simulation::new(stepped(5, 10));
    sim.fakes.gate = FakeGate::named("aviary-coordinator");
    initialized(&mut sim).await;
    sim.fakes.gate.set_skip_analysis(true);
    run_until_final(&mut sim, 5).await;
    let m = messages(&sim);
    assert!(
        m.contains(&"Promotion completed! Canary analysis was skipped for podinfo.default".to_string()),
        "{m:#?}"
    );
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-2"));
    assert!(!m.iter().any(|l| l.contains("canary weight")));
}
