//! Shared fixtures for the engine tests.
#![allow(dead_code)]

use aviary_api::Canary;
use aviary_api::document::parse_canary;
use aviary_core::simulate::Simulation;

/// The seed tutorial's canary (Knative podinfo: interval 15s, threshold 15, maxWeight 50,
/// stepWeight 10, success rate ≥ 99%, duration ≤ 500ms, a load-test rollout webhook).
pub(crate) const SEED_CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: knative
  targetRef:
    apiVersion: serving.knative.dev/v1
    kind: Service
    name: podinfo
  progressDeadlineSeconds: 60
  analysis:
    interval: 15s
    threshold: 15
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
         max: 500
      interval: 1m
    webhooks:
      - name: load-test
        url: http://flagger-loadtester.test/
        timeout: 5s
        metadata:
          type: cmd
          cmd: "hey -z 1m -q 5 -c 2 http://podinfo.test"
          logCmdOutput: "true"
"#;

/// An analysis `metrics` list: the built-in success rate, at least 99%.
pub(crate) const SUCCESS_RATE_AT_LEAST_99: &str =
    "    metrics:\n    - {name: request-success-rate, thresholdRange: {min: 99}}\n";

/// Parses one Canary from YAML.
pub(crate) fn canary(yaml: &str) -> Canary {
    parse_canary(yaml).expect("a canary")
}

/// A Deployment canary with the given analysis block (YAML, indented 4 spaces).
pub(crate) fn deployment_canary(analysis: &str) -> Canary {
    canary(&format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: default\nspec:\n  provider: istio\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n{analysis}"
    ))
}

/// A Deployment canary analysed every minute with `threshold` and `stepWeight`, then the
/// analysis lines in `more` (YAML, indented 4 spaces).
pub(crate) fn stepped_with(threshold: i32, step_weight: i32, more: &str) -> Canary {
    deployment_canary(&format!(
        "    interval: 1m\n    threshold: {threshold}\n    stepWeight: {step_weight}\n{more}"
    ))
}

/// An analysis `webhooks` list of one webhook `name` of type `kind` (the fakes answer it from
/// their scripts).
pub(crate) fn webhook(name: &str, kind: &str) -> String {
    format!("    webhooks:\n    - {{name: {name}, type: {kind}, url: http://hooks/}}\n")
}

/// [`stepped_with`] and nothing more.
pub(crate) fn stepped(threshold: i32, step_weight: i32) -> Canary {
    stepped_with(threshold, step_weight, "")
}

/// A simulation of `canary` whose webhooks answer from the `hooks` scripts (name, outcomes),
/// initialized and with a new revision presented.
pub(crate) async fn started(canary: Canary, hooks: &[(&str, &[bool])]) -> Simulation {
    let mut sim = Simulation::new(canary);
    for (name, outcomes) in hooks {
        sim.fakes.hooks.script(name, outcomes);
    }
    initialized(&mut sim).await;
    sim
}

/// A simulation of `canary` one tick into the analysis of a new revision (Progressing).
pub(crate) async fn progressing(canary: Canary) -> Simulation {
    let mut sim = started(canary, &[]).await;
    sim.tick().await;
    sim
}

/// `n` ticks.
pub(crate) async fn ticks(sim: &mut Simulation, n: usize) {
    for _ in 0..n {
        sim.tick().await;
    }
}

/// The event messages of the next tick.
pub(crate) async fn next_tick_messages(sim: &mut Simulation) -> Vec<String> {
    let from = sim.timeline().len();
    sim.tick().await;
    messages(sim).split_off(from)
}

/// How many events said exactly `message`.
pub(crate) fn times_said(sim: &Simulation, message: &str) -> usize {
    sim.timeline().iter().filter(|e| e.message == message).count()
}

/// Whether an event said exactly `message`.
pub(crate) fn said(sim: &Simulation, message: &str) -> bool {
    times_said(sim, message) > 0
}

/// Asserts that an event said exactly `message`; the failure lists what was said.
#[track_caller]
pub(crate) fn assert_said(sim: &Simulation, message: &str) {
    assert!(
        said(sim, message),
        "no event said {message:?}; the events: {:#?}",
        messages(sim)
    );
}

/// The event messages that contain `needle`, in order.
pub(crate) fn said_containing(sim: &Simulation, needle: &str) -> Vec<String> {
    messages(sim).into_iter().filter(|m| m.contains(needle)).collect()
}

/// The event messages that start with `prefix`, in order.
pub(crate) fn said_starting(sim: &Simulation, prefix: &str) -> Vec<String> {
    messages(sim)
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect()
}

/// Initializes the simulation and presents a new revision (the canary is still Initialized).
pub(crate) async fn initialized(sim: &mut Simulation) {
    sim.tick().await;
    assert_eq!(
        sim.canary.status.as_ref().unwrap().phase,
        aviary_api::CanaryPhase::Initialized
    );
    sim.fakes.target.set_revision("rev-2");
}

/// Every event message so far.
pub(crate) fn messages(sim: &Simulation) -> Vec<String> {
    sim.timeline().iter().map(|e| e.message.clone()).collect()
}

/// `T+<s>s <type> <message>` lines so far.
pub(crate) fn lines(sim: &Simulation) -> Vec<String> {
    sim.timeline()
        .iter()
        .map(|e| format!("T+{}s {} {}", e.t, e.kind, e.message))
        .collect()
}

/// A MetricTemplate `default/NAME` of `provider` running `query`.
pub(crate) fn template(name: &str, provider: &str, query: &str) -> aviary_api::MetricTemplate {
    let mut t = aviary_api::MetricTemplate::new(
        name,
        aviary_api::MetricTemplateSpec {
            provider: Some(aviary_api::metric_template::MetricProvider {
                type_: Some(provider.into()),
                ..Default::default()
            }),
            query: Some(query.into()),
        },
    );
    t.metadata.namespace = Some("default".into());
    t
}

/// The first webhook call of `kind` the simulation made (panics when there is none).
pub(crate) fn first_hook(
    sim: &Simulation,
    kind: aviary_api::canary::HookType,
) -> aviary_core::fakes::HookCall {
    sim.fakes
        .hooks
        .calls()
        .into_iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} webhook call"))
}
