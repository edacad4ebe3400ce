//! The scenarios. Every analysis interval is 10 s, Flagger's floor (`GetAnalysisInterval` raises
//! anything shorter to 10 s), so one scenario takes one to three minutes; the runner runs them
//! side by side. Objects are written the way Flagger's docs and the seed's tutorial write them.

use std::time::Duration;

use aviary_testkit::Answer;
use serde_json::{Value, json};

use crate::scenario::{Action, Scenario, Step, Until};

/// The seed's Knative tutorial (examples/knative), with the analysis interval lowered from 15 s to
/// 10 s and the load tester pointed at the webhook receiver.
const KNATIVE_SERVICE: &str = include_str!("../../../examples/knative/podinfo-ksvc.yaml");
const KNATIVE_CANARY: &str = include_str!("../../../examples/knative/podinfo-canary.yaml");

const IMAGE_NEXT: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const IMAGE_THIRD: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";

/// Built-in metric queries by observer (the needles the scripted Prometheus matches).
const KNATIVE_SUCCESS: &str = "envoy_cluster_upstream_rq{";
const KNATIVE_DURATION: &str = "envoy_cluster_upstream_rq_time_bucket";
const HTTP_SUCCESS: &str = "http_request_duration_seconds_count";
const HTTP_DURATION: &str = "http_request_duration_seconds_bucket";
const ISTIO_SUCCESS: &str = "istio_requests_total";
const ISTIO_DURATION: &str = "istio_request_duration_milliseconds_bucket";

/// How long one side of one scenario may take.
const LIMIT: Duration = Duration::from_secs(420);

fn deployment(extra_container_yaml: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  labels: {{app: podinfo}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: podinfo}}
  template:
    metadata:
      labels: {{app: podinfo}}
    spec:
      containers:
      - name: podinfo
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        ports:
        - {{name: http, containerPort: 9898, protocol: TCP}}
{extra_container_yaml}
"#
    )
}

/// podinfo's Canary on `provider`: its `service` settings beside the port, and its analysis
/// (every 10 s) with `analysis`, as YAML.
fn canary(provider: &str, service: Value, analysis: Value) -> String {
    let mut spec = json!({
        "provider": provider,
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "progressDeadlineSeconds": 120,
        "service": {"port": 9898},
        "analysis": {"interval": "10s"},
    });
    merge(&mut spec["service"], service);
    merge(&mut spec["analysis"], analysis);
    let canary = json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": spec,
    });
    serde_yaml_ng::to_string(&canary).expect("JSON values are YAML")
}

/// Adds the fields of the object `extra` to the object `into`.
fn merge(into: &mut Value, extra: Value) {
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            into[k] = v;
        }
    }
}

/// The Gateway API service settings: the gateway the routes attach to.
fn gateway_refs() -> Value {
    json!({"gatewayRefs": [{"name": "gw", "namespace": "gateways"}]})
}

/// Flagger's built-in `request-success-rate` (≥ 99% over a minute).
fn success_rate() -> Value {
    json!({"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"})
}

/// Flagger's built-in `request-duration` (p99 ≤ 500 ms over `interval`).
fn duration(interval: &str) -> Value {
    json!({"name": "request-duration", "thresholdRange": {"max": 500}, "interval": interval})
}

/// A webhook `name` of `kind` (none: a rollout hook) at `path` of the webhook receiver, 5 s.
fn hook(name: &str, kind: &str, path: &str) -> Value {
    let mut hook = json!({"name": name, "url": format!("@HOOKS@{path}"), "timeout": "5s"});
    if !kind.is_empty() {
        hook["type"] = json!(kind);
    }
    hook
}

/// The load tester's rollout hook, as the tutorials write it.
fn load_test() -> Value {
    let mut hook = hook("load-test", "", "/load-test/");
    hook["metadata"] = json!({"type": "cmd", "cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary:9898/"});
    hook
}

fn values(v: f64) -> Vec<Answer> {
    vec![Answer::Value(v)]
}

fn knative(name: &'static str, threshold: u32, success: Vec<Answer>, end: &'static str) -> Scenario {
    let canary = KNATIVE_CANARY
        .replace("interval: 15s", "interval: 10s")
        .replace("threshold: 15", &format!("threshold: {threshold}"))
        .replace("http://flagger-loadtester.test/", "@HOOKS@/load-test/");
    let image = if end == "Succeeded" {
        IMAGE_NEXT
    } else {
        IMAGE_THIRD
    };
    Scenario {
        name,
        about: if end == "Succeeded" {
            "the seed's Knative tutorial: a new revision is promoted (steps of 10 up to 50)"
        } else {
            "the seed's Knative tutorial: a new revision with a 61% success rate is rolled back"
        },
        provider: "knative",
        objects: vec![KNATIVE_SERVICE.to_string(), canary],
        prometheus: vec![
            (vec![KNATIVE_SUCCESS], success),
            (vec![KNATIVE_DURATION], values(120.0)),
        ],
        hooks: vec![],
        steps: vec![
            Step::then(Until::Phase("Initialized"), Action::SetImage(image)),
            Step::wait(Until::Phase(end)),
        ],
        limit: LIMIT,
    }
}

fn promote_new_image() -> Vec<Step> {
    vec![
        Step::then(Until::Phase("Initialized"), Action::SetImage(IMAGE_NEXT)),
        Step::wait(Until::Phase("Succeeded")),
    ]
}

fn roll_back_new_image() -> Vec<Step> {
    vec![
        Step::then(Until::Phase("Initialized"), Action::SetImage(IMAGE_NEXT)),
        Step::wait(Until::Phase("Failed")),
    ]
}

/// podinfo's Deployment and its Canary on `provider` (see [`canary`]), whose new image is
/// promoted; no Prometheus rules, no scripted webhooks.
fn podinfo(
    name: &'static str,
    about: &'static str,
    provider: &'static str,
    service: Value,
    analysis: Value,
) -> Scenario {
    Scenario {
        name,
        about,
        provider,
        objects: vec![deployment(""), canary(provider, service, analysis)],
        prometheus: vec![],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

/// Every scenario, in report order.
pub fn all() -> Vec<Scenario> {
    vec![
        knative("knative-promote", 15, values(99.5), "Succeeded"),
        knative("knative-rollback", 3, values(61.39), "Failed"),
        step_weights(),
        ab_headers(),
        blue_green(),
        mirroring(),
        mirroring_blue_green(),
        session_affinity(
            "istio",
            "session-affinity",
            json!({}),
            json!({"cookieName": "flagger-cookie", "primaryCookieName": "primary-cookie", "maxAge": 21600}),
        ),
        session_affinity(
            "gatewayapi:v1",
            "session-affinity-gatewayapi",
            gateway_refs(),
            json!({"cookieName": "flagger-cookie"}),
        ),
        webhooks(),
        rollback_gate(),
        no_data(),
        query_errors(),
        new_revision(),
    ]
}

fn step_weights() -> Scenario {
    let config = r##"
apiVersion: v1
kind: ConfigMap
metadata: {name: podinfo-config}
data: {PODINFO_UI_COLOR: "#34577c"}
"##;
    let mut s = podinfo(
        "step-weights",
        "Deployment, gatewayapi:v1, stepWeights 5/10/25/50, stepWeightPromotion 30, a tracked ConfigMap",
        "gatewayapi:v1",
        gateway_refs(),
        json!({
            "threshold": 2,
            "stepWeights": [5, 10, 25, 50],
            "stepWeightPromotion": 30,
            "metrics": [success_rate(), duration("30s")],
            "webhooks": [load_test()],
        }),
    );
    s.objects[0] = deployment("        envFrom: [{configMapRef: {name: podinfo-config}}]");
    s.objects.insert(0, config.into());
    s.prometheus = vec![
        (vec![HTTP_SUCCESS], values(99.8)),
        (vec![HTTP_DURATION], values(0.12)),
    ];
    s
}

fn ab_headers() -> Scenario {
    Scenario {
        prometheus: vec![(vec![ISTIO_SUCCESS], values(100.0))],
        ..podinfo(
            "ab-headers",
            "A/B testing on istio: header and cookie matches, 3 iterations, session affinity (as the Flagger guide's example)",
            "istio",
            json!({
                "gateways": ["public-gateway.istio-system.svc.cluster.local"],
                "hosts": ["app.example.com"],
            }),
            json!({
                "threshold": 2,
                "iterations": 3,
                "match": [
                    {"headers": {"x-canary": {"exact": "insider"}}},
                    {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
                ],
                "sessionAffinity": {"cookieName": "flagger-cookie", "maxAge": 86400},
                "metrics": [success_rate()],
                "webhooks": [load_test()],
            }),
        )
    }
}

fn blue_green() -> Scenario {
    let mut smoke_test = hook("smoke-test", "pre-rollout", "/smoke-test/");
    smoke_test["timeout"] = json!("15s");
    smoke_test["metadata"] = json!({"type": "bash", "cmd": "curl -s http://podinfo-canary:9898/healthz"});
    Scenario {
        prometheus: vec![
            (vec![HTTP_SUCCESS], values(100.0)),
            (vec![HTTP_DURATION], values(0.2)),
        ],
        ..podinfo(
            "blue-green",
            "blue/green with the kubernetes provider: 3 iterations, a pre-rollout check",
            "kubernetes",
            json!({}),
            json!({
                "threshold": 2,
                "iterations": 3,
                "metrics": [success_rate(), duration("1m")],
                "webhooks": [smoke_test, load_test()],
            }),
        )
    }
}

fn session_affinity(provider: &'static str, name: &'static str, service: Value, cookies: Value) -> Scenario {
    let about = if provider == "istio" {
        "istio canary with session affinity: canary and primary cookies while traffic is split"
    } else {
        "gatewayapi:v1 canary with session affinity: a canary cookie while traffic is split"
    };
    let success = if provider == "istio" {
        ISTIO_SUCCESS
    } else {
        HTTP_SUCCESS
    };
    Scenario {
        prometheus: vec![(vec![success], values(100.0))],
        ..podinfo(
            name,
            about,
            provider,
            service,
            json!({
                "threshold": 2,
                "stepWeight": 25,
                "maxWeight": 50,
                "sessionAffinity": cookies,
                "metrics": [success_rate()],
            }),
        )
    }
}

fn mirroring() -> Scenario {
    Scenario {
        prometheus: vec![(vec![ISTIO_DURATION], values(80.0))],
        ..podinfo(
            "mirroring",
            "istio canary with traffic mirroring (mirrorWeight 50) one step before shifting",
            "istio",
            json!({}),
            json!({
                "threshold": 2,
                "stepWeight": 20,
                "maxWeight": 40,
                "mirror": true,
                "mirrorWeight": 50,
                "metrics": [duration("1m")],
            }),
        )
    }
}

fn mirroring_blue_green() -> Scenario {
    Scenario {
        prometheus: vec![(vec![HTTP_SUCCESS], values(100.0))],
        ..podinfo(
            "mirroring-blue-green",
            "blue/green with traffic mirroring on gatewayapi:v1 (2 iterations)",
            "gatewayapi:v1",
            gateway_refs(),
            json!({"threshold": 2, "iterations": 2, "mirror": true, "metrics": [success_rate()]}),
        )
    }
}

fn webhooks() -> Scenario {
    let hooks = [
        hook("approve-rollout", "confirm-rollout", "/gate/rollout"),
        hook("db-migration", "pre-rollout", "/pre-rollout"),
        hook("load-test", "", "/load-test/"),
        hook("acceptance", "rollout", "/acceptance"),
        hook("approve-traffic", "confirm-traffic-increase", "/gate/traffic"),
        hook("approve-promotion", "confirm-promotion", "/gate/promotion"),
        hook("notify", "post-rollout", "/post-rollout"),
        hook("manual-rollback", "rollback", "/rollback/check"),
        hook("audit", "event", "/audit"),
    ];
    let closed = (403, "Forbidden");
    Scenario {
        hooks: vec![
            ("/gate/rollout", vec![closed, closed, (200, "Approved")]),
            (
                "/gate/traffic",
                vec![(200, "Approved"), closed, (200, "Approved")],
            ),
            ("/gate/promotion", vec![closed, (200, "Approved")]),
            ("/rollback/check", vec![closed]),
        ],
        ..podinfo(
            "webhooks",
            "all eight webhook types on gatewayapi:v1: rollout, traffic and promotion gates that open late, a rollback gate that stays shut, event hooks",
            "gatewayapi:v1",
            gateway_refs(),
            json!({"threshold": 2, "stepWeight": 25, "maxWeight": 50, "webhooks": hooks}),
        )
    }
}

fn rollback_gate() -> Scenario {
    Scenario {
        prometheus: vec![(vec![ISTIO_SUCCESS], values(100.0))],
        hooks: vec![(
            "/rollback/check",
            vec![(403, "Forbidden"), (403, "Forbidden"), (200, "Approved")],
        )],
        steps: roll_back_new_image(),
        ..podinfo(
            "rollback-gate",
            "istio canary rolled back by a rollback webhook that opens on its third call",
            "istio",
            json!({}),
            json!({
                "threshold": 5,
                "stepWeight": 10,
                "maxWeight": 50,
                "metrics": [success_rate()],
                "webhooks": [load_test(), hook("rollback", "rollback", "/rollback/check")],
            }),
        )
    }
}

fn no_data() -> Scenario {
    Scenario {
        prometheus: vec![
            (vec![HTTP_SUCCESS], vec![Answer::NoValues]),
            (vec![HTTP_DURATION], vec![Answer::NoValues]),
        ],
        steps: roll_back_new_image(),
        ..podinfo(
            "no-data",
            "gatewayapi:v1 canary whose metrics have no data: failed checks, then rollback",
            "gatewayapi:v1",
            gateway_refs(),
            json!({
                "threshold": 2,
                "stepWeight": 20,
                "maxWeight": 60,
                "metrics": [success_rate(), duration("1m")],
            }),
        )
    }
}

fn query_errors() -> Scenario {
    let template = r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: error-rate}
spec:
  provider: {type: prometheus, address: "@PROMETHEUS@"}
  query: |
    sum(rate(http_errors_total{namespace="{{ namespace }}", app="{{ target }}"}[{{ interval }}]))
"#;
    let error_rate = json!({
        "name": "error-rate",
        "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1},
        "interval": "1m",
    });
    let mut s = podinfo(
        "query-errors",
        "istio canary whose Prometheus answers errors (503, a bad query, a timeout) between good answers, built-in and MetricTemplate metrics",
        "istio",
        json!({}),
        json!({
            "threshold": 5,
            "stepWeight": 20,
            "maxWeight": 40,
            "metrics": [success_rate(), error_rate],
        }),
    );
    s.objects.insert(0, template.into());
    s.prometheus = vec![
        (
            vec![ISTIO_SUCCESS],
            vec![
                Answer::Error(503, "service unavailable".into()),
                Answer::Error(400, "1:5: parse error: unexpected identifier".into()),
                Answer::Value(99.9),
            ],
        ),
        (
            vec!["http_errors_total"],
            vec![
                Answer::Value(0.5),
                Answer::Error(
                    422,
                    "query processing would load too many samples into memory".into(),
                ),
                Answer::Value(0.2),
            ],
        ),
    ];
    s
}

fn new_revision() -> Scenario {
    Scenario {
        prometheus: vec![(vec![HTTP_SUCCESS], values(99.9))],
        steps: vec![
            Step::then(Until::Phase("Initialized"), Action::SetImage(IMAGE_NEXT)),
            Step::then(Until::Weight(20), Action::SetImage(IMAGE_THIRD)),
            Step::wait(Until::Phase("Succeeded")),
        ],
        ..podinfo(
            "new-revision",
            "gatewayapi:v1 canary that gets another new revision at weight 20: the analysis restarts",
            "gatewayapi:v1",
            gateway_refs(),
            json!({
                "threshold": 2,
                "stepWeight": 10,
                "maxWeight": 30,
                "metrics": [success_rate()],
                "webhooks": [load_test()],
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_parses_and_has_a_canary() {
        let all = all();
        let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "scenario names are namespaces: unique");
        for s in &all {
            let objects = s.objects("http://hooks", "http://prometheus").unwrap();
            let canary = objects.iter().find(|o| o["kind"] == "Canary").unwrap();
            assert_eq!(canary["metadata"]["namespace"], s.name);
            assert_eq!(canary["spec"]["analysis"]["interval"], "10s", "{}", s.name);
            assert!(!s.steps.is_empty());
            for o in &objects {
                assert!(
                    !o.to_string().contains('@'),
                    "{}: a placeholder is left in {o}",
                    s.name
                );
            }
        }
    }
}
