//! The scenarios. Every analysis interval is 10 s, Flagger's floor (`GetAnalysisInterval` raises
//! anything shorter to 10 s), so one scenario takes one to three minutes; the runner runs them
//! side by side. Objects are written the way Flagger's docs and the seed's tutorial write them.

use std::time::Duration;

use aviary_testkit::Answer;

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

fn canary(provider: &str, service_yaml: &str, analysis_yaml: &str) -> String {
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  provider: {provider}
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  progressDeadlineSeconds: 120
  service:
    port: 9898
{service_yaml}
  analysis:
    interval: 10s
{analysis_yaml}
"#
    )
}

const GATEWAY_REFS: &str = "    gatewayRefs: [{name: gw, namespace: gateways}]";

const LOAD_TEST: &str = r#"    - name: load-test
      url: @HOOKS@/load-test/
      timeout: 5s
      metadata: {type: cmd, cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary:9898/"}"#;

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
            "",
            "{cookieName: flagger-cookie, primaryCookieName: primary-cookie, maxAge: 21600}",
        ),
        session_affinity(
            "gatewayapi:v1",
            "session-affinity-gatewayapi",
            GATEWAY_REFS,
            "{cookieName: flagger-cookie}",
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
    Scenario {
        name: "step-weights",
        about: "Deployment, gatewayapi:v1, stepWeights 5/10/25/50, stepWeightPromotion 30, a tracked ConfigMap",
        provider: "gatewayapi:v1",
        objects: vec![
            config.into(),
            deployment("        envFrom: [{configMapRef: {name: podinfo-config}}]"),
            canary(
                "gatewayapi:v1",
                GATEWAY_REFS,
                &format!(
                    r#"    threshold: 2
    stepWeights: [5, 10, 25, 50]
    stepWeightPromotion: 30
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}
    - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 30s}}
    webhooks:
{LOAD_TEST}"#
                ),
            ),
        ],
        prometheus: vec![
            (vec![HTTP_SUCCESS], values(99.8)),
            (vec![HTTP_DURATION], values(0.12)),
        ],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn ab_headers() -> Scenario {
    Scenario {
        name: "ab-headers",
        about: "A/B testing on istio: header and cookie matches, 3 iterations, session affinity (as the Flagger guide's example)",
        provider: "istio",
        objects: vec![
            deployment(""),
            canary(
                "istio",
                "    gateways: [public-gateway.istio-system.svc.cluster.local]\n    hosts: [app.example.com]",
                &format!(
                    r#"    threshold: 2
    iterations: 3
    match:
    - headers:
        x-canary: {{exact: insider}}
    - headers:
        cookie: {{regex: "^(.*?;)?(canary=always)(;.*)?$"}}
    sessionAffinity: {{cookieName: flagger-cookie, maxAge: 86400}}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}
    webhooks:
{LOAD_TEST}"#
                ),
            ),
        ],
        prometheus: vec![(vec![ISTIO_SUCCESS], values(100.0))],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn blue_green() -> Scenario {
    Scenario {
        name: "blue-green",
        about: "blue/green with the kubernetes provider: 3 iterations, a pre-rollout check",
        provider: "kubernetes",
        objects: vec![
            deployment(""),
            canary(
                "kubernetes",
                "",
                &format!(
                    r#"    threshold: 2
    iterations: 3
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}
    - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 1m}}
    webhooks:
    - name: smoke-test
      type: pre-rollout
      url: @HOOKS@/smoke-test/
      timeout: 15s
      metadata: {{type: bash, cmd: "curl -s http://podinfo-canary:9898/healthz"}}
{LOAD_TEST}"#
                ),
            ),
        ],
        prometheus: vec![
            (vec![HTTP_SUCCESS], values(100.0)),
            (vec![HTTP_DURATION], values(0.2)),
        ],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn session_affinity(provider: &'static str, name: &'static str, service: &str, cookies: &str) -> Scenario {
    Scenario {
        name,
        about: if provider == "istio" {
            "istio canary with session affinity: canary and primary cookies while traffic is split"
        } else {
            "gatewayapi:v1 canary with session affinity: a canary cookie while traffic is split"
        },
        provider,
        objects: vec![
            deployment(""),
            canary(
                provider,
                service,
                &format!(
                    r#"    threshold: 2
    stepWeight: 25
    maxWeight: 50
    sessionAffinity: {cookies}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}"#
                ),
            ),
        ],
        prometheus: vec![(
            vec![if provider == "istio" {
                ISTIO_SUCCESS
            } else {
                HTTP_SUCCESS
            }],
            values(100.0),
        )],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn mirroring() -> Scenario {
    Scenario {
        name: "mirroring",
        about: "istio canary with traffic mirroring (mirrorWeight 50) one step before shifting",
        provider: "istio",
        objects: vec![
            deployment(""),
            canary(
                "istio",
                "",
                r#"    threshold: 2
    stepWeight: 20
    maxWeight: 40
    mirror: true
    mirrorWeight: 50
    metrics:
    - {name: request-duration, thresholdRange: {max: 500}, interval: 1m}"#,
            ),
        ],
        prometheus: vec![(vec![ISTIO_DURATION], values(80.0))],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn mirroring_blue_green() -> Scenario {
    Scenario {
        name: "mirroring-blue-green",
        about: "blue/green with traffic mirroring on gatewayapi:v1 (2 iterations)",
        provider: "gatewayapi:v1",
        objects: vec![
            deployment(""),
            canary(
                "gatewayapi:v1",
                GATEWAY_REFS,
                r#"    threshold: 2
    iterations: 2
    mirror: true
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}"#,
            ),
        ],
        prometheus: vec![(vec![HTTP_SUCCESS], values(100.0))],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn webhooks() -> Scenario {
    let hook = |name: &str, kind: &str, path: &str| {
        let kind = if kind.is_empty() {
            String::new()
        } else {
            format!("\n      type: {kind}")
        };
        format!("    - name: {name}{kind}\n      url: @HOOKS@{path}\n      timeout: 5s")
    };
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
    ]
    .join("\n");
    let closed = (403, "Forbidden");
    Scenario {
        name: "webhooks",
        about: "all eight webhook types on gatewayapi:v1: rollout, traffic and promotion gates that open late, a rollback gate that stays shut, event hooks",
        provider: "gatewayapi:v1",
        objects: vec![
            deployment(""),
            canary(
                "gatewayapi:v1",
                GATEWAY_REFS,
                &format!(
                    "    threshold: 2\n    stepWeight: 25\n    maxWeight: 50\n    webhooks:\n{}",
                    hooks
                ),
            ),
        ],
        prometheus: vec![],
        hooks: vec![
            ("/gate/rollout", vec![closed, closed, (200, "Approved")]),
            (
                "/gate/traffic",
                vec![(200, "Approved"), closed, (200, "Approved")],
            ),
            ("/gate/promotion", vec![closed, (200, "Approved")]),
            ("/rollback/check", vec![closed]),
        ],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn rollback_gate() -> Scenario {
    Scenario {
        name: "rollback-gate",
        about: "istio canary rolled back by a rollback webhook that opens on its third call",
        provider: "istio",
        objects: vec![
            deployment(""),
            canary(
                "istio",
                "",
                &format!(
                    r#"    threshold: 5
    stepWeight: 10
    maxWeight: 50
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}
    webhooks:
{LOAD_TEST}
    - name: rollback
      type: rollback
      url: @HOOKS@/rollback/check
      timeout: 5s"#
                ),
            ),
        ],
        prometheus: vec![(vec![ISTIO_SUCCESS], values(100.0))],
        hooks: vec![(
            "/rollback/check",
            vec![(403, "Forbidden"), (403, "Forbidden"), (200, "Approved")],
        )],
        steps: roll_back_new_image(),
        limit: LIMIT,
    }
}

fn no_data() -> Scenario {
    Scenario {
        name: "no-data",
        about: "gatewayapi:v1 canary whose metrics have no data: failed checks, then rollback",
        provider: "gatewayapi:v1",
        objects: vec![
            deployment(""),
            canary(
                "gatewayapi:v1",
                GATEWAY_REFS,
                r#"    threshold: 2
    stepWeight: 20
    maxWeight: 60
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
    - {name: request-duration, thresholdRange: {max: 500}, interval: 1m}"#,
            ),
        ],
        prometheus: vec![
            (vec![HTTP_SUCCESS], vec![Answer::NoValues]),
            (vec![HTTP_DURATION], vec![Answer::NoValues]),
        ],
        hooks: vec![],
        steps: roll_back_new_image(),
        limit: LIMIT,
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
    Scenario {
        name: "query-errors",
        about: "istio canary whose Prometheus answers errors (503, a bad query, a timeout) between good answers, built-in and MetricTemplate metrics",
        provider: "istio",
        objects: vec![
            template.into(),
            deployment(""),
            canary(
                "istio",
                "",
                r#"    threshold: 5
    stepWeight: 20
    maxWeight: 40
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
    - name: error-rate
      templateRef: {name: error-rate}
      thresholdRange: {max: 1}
      interval: 1m"#,
            ),
        ],
        prometheus: vec![
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
        ],
        hooks: vec![],
        steps: promote_new_image(),
        limit: LIMIT,
    }
}

fn new_revision() -> Scenario {
    Scenario {
        name: "new-revision",
        about: "gatewayapi:v1 canary that gets another new revision at weight 20: the analysis restarts",
        provider: "gatewayapi:v1",
        objects: vec![
            deployment(""),
            canary(
                "gatewayapi:v1",
                GATEWAY_REFS,
                &format!(
                    r#"    threshold: 2
    stepWeight: 10
    maxWeight: 30
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}
    webhooks:
{LOAD_TEST}"#
                ),
            ),
        ],
        prometheus: vec![(vec![HTTP_SUCCESS], values(99.9))],
        hooks: vec![],
        steps: vec![
            Step::then(Until::Phase("Initialized"), Action::SetImage(IMAGE_NEXT)),
            Step::then(Until::Weight(20), Action::SetImage(IMAGE_THIRD)),
            Step::wait(Until::Phase("Succeeded")),
        ],
        limit: LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_for_refactor_check() {
        let mut out = String::new();
        for s in all() {
            let objects = s.objects("http://hooks", "http://prometheus").unwrap();
            out.push_str(&format!(
                "{} | {} | {}\n{}\n{:?}\n{:?}\n{:?}\n{:?}\n\n",
                s.name,
                s.about,
                s.provider,
                serde_json::to_string_pretty(&objects).unwrap(),
                s.prometheus,
                s.hooks,
                s.steps,
                s.limit
            ));
            out.push_str(&format!("{:?} {} {}\n", s.target(), s.canary_name(), s.target_name()));
        }
        std::fs::write(std::env::var("CATALOGUE_DUMP").unwrap(), out).unwrap();
    }

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
