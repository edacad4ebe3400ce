//! Phases, event texts and event-webhook payloads against Flagger 1.44's scheduler
//! (pkg/controller/scheduler.go, scheduler_hooks.go, controller.go). Flagger records most events
//! on the canary as the tick read it, so their payload carries the phase the tick started in;
//! a few are recorded on a copy already in the new phase. Each test names the lines it follows.

mod common;

use aviary_api::CanaryPhase;
use aviary_api::canary::HookType;
use aviary_core::fingerprint::checksum;
use aviary_core::ports::NotReady;
use aviary_core::simulate::Simulation;
use common::*;

use CanaryPhase::*;

const EVENTS_HOOK: &str = "    - {name: events, type: event, url: http://hooks/}\n";

/// `(message, payload phase)` of every event posted to the `event` webhook so far.
fn posted(sim: &Simulation) -> Vec<(String, CanaryPhase)> {
    sim.fakes
        .hooks
        .calls()
        .into_iter()
        .filter(|c| c.kind == HookType::Event)
        .map(|c| (c.payload.metadata["eventMessage"].clone(), c.payload.phase))
        .collect()
}

/// The posted events from index `from` on.
fn posted_since(sim: &Simulation, from: usize) -> Vec<(String, CanaryPhase)> {
    posted(sim)[from..].to_vec()
}

fn pairs(list: &[(&str, CanaryPhase)]) -> Vec<(String, CanaryPhase)> {
    list.iter().map(|(m, p)| (m.to_string(), *p)).collect()
}

/// controller.go:300-305 sets a never-seen canary Initializing in the sync handler, before the
/// scheduler returns on `suspend` (scheduler.go:168-174).
#[tokio::test]
async fn a_new_suspended_canary_is_initializing() {
    let mut c = stepped_with(5, 10, &format!("    webhooks:\n{EVENTS_HOOK}"));
    c.spec.suspend = Some(true);
    let mut sim = Simulation::new(c);
    sim.tick().await;
    let s = sim.status();
    assert_eq!(s.phase, Initializing);
    let cond = s.promoted_condition().expect("the Promoted condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str(), cond.message.as_str()),
        (
            "Unknown",
            "Initializing",
            "New Deployment detected, starting initialization."
        )
    );
    assert_eq!(
        posted(&sim),
        pairs(&[("skipping canary run as object is suspended", Initializing)])
    );
    // resumed, it initializes as usual
    sim.canary.spec.suspend = Some(false);
    sim.tick().await;
    assert_eq!(sim.status().phase, Initialized);
}

/// scheduler.go:1006-1007 formats the failed promotion with `cd.Spec.TargetRef.Name`, after the
/// readiness error itself (:298).
#[tokio::test]
async fn a_failed_promotion_names_the_target() {
    let mut c = stepped(5, 50);
    c.metadata.name = Some("podinfo-canary".into());
    let mut sim = started(c, &[]).await;
    ticks(&mut sim, 4).await; // scale up, 50, 100, promote
    assert_eq!(sim.status().phase, Promoting);
    sim.fakes.target.set_primary_ready(Err(NotReady::fatal(
        "podinfo-primary.default not ready: deployment \"podinfo-primary\" exceeded its progress deadline",
    )));
    // the readiness error first (scheduler.go:298), then the failed promotion
    assert_eq!(
        next_tick_messages(&mut sim).await,
        [
            "podinfo-primary.default not ready: deployment \"podinfo-primary\" exceeded its progress deadline",
            "Promotion of podinfo.default failed, primary not ready: podinfo-primary.default not ready: deployment \"podinfo-primary\" exceeded its progress deadline"
        ]
    );
    assert_eq!(sim.status().phase, Failed);
}

/// A rollback: the threshold message on the canary as read (Progressing, scheduler.go:951),
/// "Canary failed!" on a Failed copy (:965-968), and the post-rollout hook's events again on the
/// canary as read (:997 passes `canary`, not the copy).
#[tokio::test]
async fn a_rollback_posts_canary_failed_with_phase_failed() {
    let mut sim = Simulation::new(stepped_with(
        1,
        50,
        &format!(
            "{SUCCESS_RATE_AT_LEAST_99}    webhooks:\n    - {{name: post, type: post-rollout, url: http://hooks/}}\n{EVENTS_HOOK}"
        ),
    ));
    sim.fakes.metrics.values("request-success-rate", &[50.0]);
    initialized(&mut sim).await;
    ticks(&mut sim, 3).await; // scale up, pre-rollout tick, failed check
    let from = posted(&sim).len();
    sim.tick().await; // rollback
    assert_eq!(
        posted_since(&sim, from),
        pairs(&[
            (
                "Rolling back podinfo.default failed checks threshold reached 1",
                Progressing
            ),
            ("Canary failed! Scaling down podinfo.default", Failed),
            ("Post-rollout check post passed", Progressing),
        ])
    );
    let post = first_hook(&sim, HookType::PostRollout);
    assert_eq!(post.payload.phase, Failed);
}

/// runConfirmRolloutHooks (scheduler_hooks.go:50-53) and runConfirmPromotionHooks (:73-76) write
/// the waiting phase through a copy and then record the halt on the canary as read; the
/// "New revision detected!" event is recorded on a Progressing copy made before the status sync
/// (scheduler.go:908-910), so it still carries the previous revision's checksum.
#[tokio::test]
async fn gates_post_their_halts_with_the_phase_the_tick_read() {
    let c = stepped_with(
        5,
        100,
        &format!(
            "    webhooks:\n    - {{name: gate, type: confirm-rollout, url: http://hooks/}}\n    - {{name: promote, type: confirm-promotion, url: http://hooks/}}\n{EVENTS_HOOK}"
        ),
    );
    let mut sim = started(c, &[("gate", &[false, true]), ("promote", &[false, true])]).await;
    let from = posted(&sim).len();
    ticks(&mut sim, 6).await;
    assert_eq!(
        posted_since(&sim, from),
        pairs(&[
            (
                "Halt podinfo.default advancement waiting for approval gate",
                Initialized
            ),
            ("Confirm-rollout check gate passed", Waiting),
            ("New revision detected! Scaling up podinfo.default", Progressing),
            ("Starting canary analysis for podinfo.default", Progressing),
            ("Advance podinfo.default canary weight 100", Progressing),
            (
                "Halt podinfo.default advancement waiting for promotion approval promote",
                Progressing
            ),
            ("Confirm-promotion check promote passed", WaitingPromotion),
            (
                "Copying podinfo.default template spec to podinfo-primary.default",
                WaitingPromotion
            ),
            ("Routing all traffic to primary", Promoting),
        ])
    );
    let scaling_up = sim
        .fakes
        .hooks
        .calls()
        .into_iter()
        .find(|c| {
            c.kind == HookType::Event
                && c.payload.metadata["eventMessage"].starts_with("New revision detected!")
        })
        .unwrap();
    assert_eq!(scaling_up.payload.checksum, checksum(None, "rev-1"));
}

/// checkCanaryStatus (scheduler.go:908-924) announces the new revision before it scales the
/// canary up; a failed scale-up leaves the status alone, so the next tick asks and announces
/// again.
#[tokio::test]
async fn a_failed_scale_up_announces_the_revision_again_next_tick() {
    let mut sim = started(stepped(5, 50), &[]).await;
    sim.fakes
        .target
        .fail_scaling(Some("deployment podinfo.default update error: conflict"));
    let from = messages(&sim).len();
    sim.tick().await;
    sim.fakes.target.fail_scaling(None);
    sim.tick().await;
    assert_eq!(
        messages(&sim)[from..],
        [
            "New revision detected! Scaling up podinfo.default",
            "deployment podinfo.default update error: conflict",
            "New revision detected! Scaling up podinfo.default",
        ]
    );
    assert_eq!(sim.status().phase, Progressing);
}

/// scheduler.go:259-260: a failed scale-down while initializing names the target.
#[tokio::test]
async fn a_failed_scale_down_at_initialization_names_the_target() {
    let mut sim = Simulation::new(stepped(5, 50));
    sim.fakes
        .target
        .fail_scaling(Some("deployment podinfo.default patch query error: forbidden"));
    sim.tick().await;
    assert_eq!(
        messages(&sim)[1..],
        [
            "scaling down canary Deployment podinfo.default failed: deployment podinfo.default patch query error: forbidden"
        ]
    );
    assert_eq!(sim.status().phase, Initializing);
}

/// Kubernetes' ProgressDeadlineExceeded makes IsCanaryReady non-retriable: Flagger reports the
/// error as a plain warning and rolls back (scheduler.go:354-360). Its "Rolling back … progress
/// deadline exceeded" format string (:433) is unreachable (IsCanaryReady returns retriable=true
/// with a nil error, pkg/canary/deployment_ready.go:69), so it is not emitted here.
#[tokio::test]
async fn kubernetes_progress_deadline_is_reported_as_is_then_rolls_back() {
    let mut sim = progressing(stepped(5, 10)).await;
    sim.fakes.target.set_canary_ready(Err(NotReady::fatal(
        "canary deployment podinfo.default not ready: deployment \"podinfo\" exceeded its progress deadline",
    )));
    assert_eq!(
        next_tick_messages(&mut sim).await,
        [
            "canary deployment podinfo.default not ready: deployment \"podinfo\" exceeded its progress deadline",
            "Canary failed! Scaling down podinfo.default",
        ]
    );
    assert_eq!(sim.status().phase, Failed);
    assert!(
        sim.fakes
            .notifier
            .alerts()
            .iter()
            .all(|(_, a)| !a.message.starts_with("Progress deadline exceeded"))
    );
}

/// shouldAdvance is true for Waiting whatever the revision (scheduler.go:853-858), so a canary
/// waiting for approval keeps asking even after its target went back to the promoted revision,
/// and starts once approved.
#[tokio::test]
async fn a_waiting_canary_keeps_asking_after_a_revert() {
    let c = stepped_with(5, 50, &webhook("gate", "confirm-rollout"));
    let mut sim = started(c, &[("gate", &[false, false, true])]).await;
    sim.tick().await;
    assert_eq!(sim.status().phase, Waiting);
    sim.fakes.target.set_revision("rev-1"); // back to what the primary runs
    sim.tick().await;
    sim.tick().await;
    assert_eq!(sim.status().phase, Progressing);
    assert_eq!(
        sim.fakes
            .hooks
            .calls()
            .iter()
            .filter(|c| c.name == "gate")
            .count(),
        3
    );
}

/// runBlueGreen (scheduler.go:689-703) reports a failure to start mirroring and still counts the
/// iteration.
#[tokio::test]
async fn blue_green_counts_the_iteration_when_mirroring_fails_to_start() {
    let mut sim = progressing(deployment_canary(
        "    interval: 1m\n    threshold: 5\n    iterations: 3\n    mirror: true\n",
    ))
    .await;
    sim.fakes
        .router
        .fail_set_routes(Some("virtualservice podinfo.default update error"));
    assert_eq!(
        next_tick_messages(&mut sim).await,
        [
            "Starting canary analysis for podinfo.default",
            "virtualservice podinfo.default update error",
            "Advance podinfo.default canary iteration 1/3",
        ]
    );
    assert_eq!(sim.status().iterations, 1);
}

/// Waiting for promotion approval rewrites `iterations` on every refusal (scheduler_hooks.go:82),
/// which moves `lastTransitionTime`, also when the value stays the same.
#[tokio::test]
async fn every_refused_promotion_rewrites_the_status() {
    let c = stepped_with(5, 100, &webhook("promote", "confirm-promotion"));
    let mut sim = started(c, &[("promote", &[false])]).await;
    ticks(&mut sim, 3).await; // scale up, weight 100, waiting for promotion
    assert_eq!(sim.status().phase, WaitingPromotion);
    let first = sim.status().last_transition_time;
    sim.tick().await;
    let s = sim.status();
    assert_eq!((s.phase, s.iterations), (WaitingPromotion, 0));
    assert_ne!(s.last_transition_time, first);
}

/// Router errors are warnings that end the tick (scheduler.go:250-253, :314-318).
#[tokio::test]
async fn router_errors_are_warnings_that_end_the_tick() {
    let mut sim = progressing(stepped(5, 50)).await;
    sim.fakes.router.fail(Some(
        "virtualservices.networking.istio.io \"podinfo\" is forbidden",
    ));
    assert_eq!(
        next_tick_messages(&mut sim).await,
        ["virtualservices.networking.istio.io \"podinfo\" is forbidden"]
    );
    let s = sim.status();
    assert_eq!((s.phase, s.failed_checks, s.canary_weight), (Progressing, 0, 0));
}

/// A primary that is not ready (retriable) holds everything with a warning and counts nothing
/// (scheduler.go:295-311); while initializing the primary is awaited the same way (the golden
/// event_webhook_sequence), and a fatal error there rolls back (:225-231).
#[tokio::test]
async fn primary_readiness_holds_or_fails() {
    let mut sim = progressing(stepped(5, 50)).await;
    sim.fakes.target.set_primary_ready(Err(NotReady::retriable(
        "podinfo-primary.default not ready: waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available",
    )));
    sim.tick().await;
    sim.tick().await;
    let s = sim.status();
    assert_eq!((s.phase, s.failed_checks, s.canary_weight), (Progressing, 0, 0));

    let mut sim = Simulation::new(stepped(5, 50));
    sim.fakes.target.set_primary_ready(Err(NotReady::fatal(
        "podinfo-primary.default not ready: deployment \"podinfo-primary\" exceeded its progress deadline",
    )));
    sim.tick().await;
    assert_eq!(
        messages(&sim)[1..],
        [
            "podinfo-primary.default not ready: deployment \"podinfo-primary\" exceeded its progress deadline",
            "Canary failed! Scaling down podinfo.default",
        ]
    );
    assert_eq!(sim.status().phase, Failed);
}

/// Pre-rollout and rollout hook failures count a failed check (scheduler.go:454-466,
/// scheduler_hooks.go:100, scheduler.go:758); a post-rollout failure is only reported
/// (scheduler_hooks.go:116) and the canary still succeeds.
#[tokio::test]
async fn hook_failures_count_or_are_only_reported() {
    let c = stepped_with(
        5,
        100,
        "    webhooks:\n    - {name: smoke, type: pre-rollout, url: http://hooks/}\n    - {name: load, url: http://hooks/}\n    - {name: notify, type: post-rollout, url: http://hooks/}\n",
    );
    let mut sim = started(
        c,
        &[
            ("smoke", &[false, true]),
            ("load", &[false, true]),
            ("notify", &[false]),
        ],
    )
    .await;
    for _ in 0..8 {
        sim.tick().await;
        if sim.status().phase == Succeeded {
            break;
        }
    }
    let m = messages(&sim);
    let have = |s: &str| m.iter().any(|l| l.starts_with(s));
    assert!(
        have("Halt podinfo.default advancement pre-rollout check smoke failed"),
        "{m:#?}"
    );
    assert!(
        have("Halt podinfo.default advancement external check load failed"),
        "{m:#?}"
    );
    assert!(have("Post-rollout hook notify failed"), "{m:#?}");
    let s = sim.status();
    // SetStatusPhase(Succeeded) keeps failedChecks (pkg/canary/status.go:146-186)
    assert_eq!((s.phase, s.failed_checks), (Succeeded, 2));
}

/// A changed ConfigMap or Secret is a new revision (HaveDependenciesChanged,
/// scheduler.go:877-882) and so is a change during the analysis (:938-943).
#[tokio::test]
async fn a_changed_config_is_a_new_revision() {
    let mut sim = Simulation::new(stepped(5, 50));
    let configs = |v: &str| Some([("configmap/podinfo-config".to_string(), v.to_string())].into());
    sim.fakes.target.set_tracked_configs(configs("aaaa"));
    sim.tick().await;
    assert_eq!(sim.status().phase, Initialized);
    sim.tick().await;
    assert_eq!(sim.status().phase, Initialized); // nothing changed
    sim.fakes.target.set_tracked_configs(configs("bbbb"));
    sim.tick().await;
    assert_eq!(sim.status().phase, Progressing);
    sim.tick().await; // weight 50
    sim.fakes.target.set_tracked_configs(configs("cccc"));
    sim.tick().await;
    assert_said(
        &sim,
        "New revision detected! Restarting analysis for podinfo.default",
    );
    assert_eq!(sim.status().canary_weight, 0);
}

/// failedChecks counts every failed tick of the analysis, not consecutive ones: a later
/// success does not reset it (SetStatusFailedChecks only ever adds, scheduler.go:455, :462).
#[tokio::test]
async fn failed_checks_accumulate_across_the_analysis() {
    let mut sim = Simulation::new(stepped_with(3, 10, SUCCESS_RATE_AT_LEAST_99));
    sim.fakes
        .metrics
        .values("request-success-rate", &[50.0, 100.0, 50.0, 100.0, 50.0]);
    initialized(&mut sim).await;
    ticks(&mut sim, 7).await;
    assert_eq!(sim.status().failed_checks, 3);
    sim.tick().await;
    assert_eq!(sim.status().phase, Failed);
}

/// Rollback webhooks are asked only while Progressing, Waiting or WaitingPromotion
/// (scheduler.go:369-378), so a promotion in flight is not rolled back by them.
#[tokio::test]
async fn rollback_hooks_are_not_asked_while_promoting() {
    let hook = webhook("panic-button", "rollback");
    let c = stepped_with(5, 100, &format!("    stepWeightPromotion: 50\n{hook}"));
    let mut sim = started(c, &[("panic-button", &[false, false, true])]).await;
    ticks(&mut sim, 3).await; // scale up, weight 100, promote
    assert_eq!(sim.status().phase, Promoting);
    let asked = sim.fakes.hooks.calls().len();
    sim.tick().await;
    sim.tick().await;
    assert_eq!(sim.fakes.hooks.calls().len(), asked);
    assert_eq!(sim.status().phase, Finalising);
}

/// With the kubernetes provider an A/B match is dropped with a warning
/// (scheduler.go:470-474) and the canary runs as blue/green.
#[tokio::test]
async fn kubernetes_provider_drops_ab_matches() {
    let mut c = deployment_canary(
        "    interval: 1m\n    threshold: 5\n    iterations: 2\n    match:\n    - headers: {x-canary: {exact: insider}}\n",
    );
    c.spec.provider = Some("kubernetes".into());
    let mut sim = started(c, &[]).await;
    sim.tick().await;
    sim.tick().await;
    assert_said(
        &sim,
        "A/B testing is not supported when using the kubernetes provider",
    );
    assert!(sim.fakes.router.history().iter().all(|r| r.canary == 0));
}

/// Why the coordinator holds a push while a canary initializes (issue 19): a revision applied to
/// the target before initialization ends is recorded as applied and promoted, while the primary
/// keeps the revision it was created from, and no analysis of it ever starts (as in Flagger,
/// whose setPhaseInitialized records the target's hash of that moment).
#[tokio::test]
async fn a_revision_applied_while_initializing_is_recorded_without_an_analysis() {
    let mut sim = Simulation::new(stepped(5, 50));
    sim.fakes
        .target
        .set_primary_ready(Err(NotReady::retriable("primary not ready yet")));
    sim.tick().await;
    assert_eq!(sim.canary.status.as_ref().unwrap().phase, Initializing);
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-1"));
    sim.fakes.target.set_revision("rev-2");
    sim.fakes.target.set_primary_ready(Ok(()));
    ticks(&mut sim, 4).await;
    let s = sim.canary.status.clone().unwrap();
    assert_eq!(s.phase, Initialized, "no analysis of rev-2 started");
    assert_eq!(s.last_applied_spec, s.last_promoted_spec);
    assert_eq!(sim.fakes.target.primary_revision().as_deref(), Some("rev-1"));
}
