//! Shared fixtures for the engine tests.
#![allow(dead_code)]

use aviary_api::Canary;
use aviary_api::document::{Resource, parse_documents};
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

/// Parses one Canary from YAML.
pub(crate) fn canary(yaml: &str) -> Canary {
    let doc = parse_documents(yaml)
        .expect("yaml")
        .remove(0)
        .expect("a resource");
    match doc.resource {
        Resource::Canary(c) => *c,
        other => panic!("not a canary: {other:?}"),
    }
}

/// A Deployment canary with the given analysis block (YAML, indented 4 spaces).
pub(crate) fn deployment_canary(analysis: &str) -> Canary {
    canary(&format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: default\nspec:\n  provider: istio\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n{analysis}"
    ))
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
