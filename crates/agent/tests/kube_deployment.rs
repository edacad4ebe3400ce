//! Deployment canaries driven by the agent (in-process) against the real kube-apiserver: the
//! gatewayapi router and the kubernetes (blue/green) router each promote a healthy revision and
//! roll back a failing one; the istio router runs an A/B test (header match, iterations) to
//! promotion; `revertOnDeletion` puts everything back when the Canary is deleted.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use aviary_testkit::kube_env::canary;
use kube_common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(40);
const HTTP_SUCCESS: &str = "http_request_duration_seconds_count";

/// The (primary, canary) weights of HTTPRoute `podinfo`.
async fn weights(env: &Env) -> (i64, i64) {
    let route = env
        .obj("gateway.networking.k8s.io/v1", "HTTPRoute", "podinfo")
        .await;
    let b = &route["spec"]["rules"][0]["backendRefs"];
    (b[0]["weight"].as_i64().unwrap(), b[1]["weight"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayapi_promotes_then_rolls_back() {
    let mut env = Env::start("gatewayapi-promotes-then-rolls-back").await;
    env.create_podinfo_canary(&weighted_analysis(30, 10, true)).await;

    let c = env.wait_phase("podinfo", "Initialized", LIMIT).await;
    assert_eq!(c["status"]["conditions"][0]["type"], "Promoted");
    assert_eq!(c["status"]["conditions"][0]["status"], "True");
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.0");
    assert_eq!(env.replicas("podinfo").await, 0);
    assert_eq!(weights(&env).await, (100, 0));
    env.assert_selects("podinfo", "podinfo-primary").await;
    env.wait_event("podinfo", "Normal: Initialization done! podinfo.test")
        .await;

    // A healthy revision: 10, 20, 30, then promotion.
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    let c = env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    assert_eq!(c["status"]["canaryWeight"], 0);
    assert_eq!(c["status"]["conditions"][0]["reason"], "Succeeded");
    env.assert_advanced("podinfo", &[10, 20, 30]).await;
    assert!(
        env.has_event(
            "podinfo",
            "Copying podinfo.test template spec to podinfo-primary.test"
        )
        .await
    );
    env.wait_event("podinfo", "Promotion completed! Scaling down podinfo.test")
        .await;
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    assert_eq!(weights(&env).await, (100, 0));
    assert_eq!(env.replicas("podinfo").await, 0);
    let calls = env.hooks.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.path == "/load" && c.body["phase"] == "Progressing" && c.body["name"] == "podinfo"),
        "{calls:?}"
    );

    // A failing revision: the success rate drops, the canary rolls back.
    env.prom.set(&[HTTP_SUCCESS], 42.0);
    env.set_image("podinfo", "podinfo:6.0.2").await;
    let c = env.wait_phase("podinfo", "Failed", LIMIT).await;
    assert_eq!(c["status"]["canaryWeight"], 0);
    assert_eq!(c["status"]["conditions"][0]["status"], "False");
    assert!(
        env.has_event(
            "podinfo",
            "Warning: Halt podinfo.test advancement success rate 42.00% < 99%"
        )
        .await,
        "{:#?}",
        env.event_messages("podinfo").await
    );
    assert!(
        env.has_event(
            "podinfo",
            "Warning: Rolling back podinfo.test failed checks threshold reached 2"
        )
        .await
    );
    env.wait_event("podinfo", "Warning: Canary failed! Scaling down podinfo.test")
        .await;
    assert_eq!(weights(&env).await, (100, 0));
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    assert_eq!(env.replicas("podinfo").await, 0);
    let queries = env.prom.queries();
    assert!(
        queries
            .iter()
            .any(|q| q.contains(r#"kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#)),
        "{queries:?}"
    );
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_blue_green_promotes_then_rolls_back() {
    let mut env = Env::start("kubernetes-blue-green-promotes-then-roll").await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    // A MetricTemplate with credentials and an AlertProvider, read from the watchers' caches.
    env.create(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom-auth", "namespace": "test"},
        "type": "Opaque", "data": {"token": "dDBrZW4="}}),
    )
    .await;
    env.create_yaml(&format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {{name: error-rate, namespace: test}}
spec:
  provider: {{type: prometheus, address: "{}", secretRef: {{name: prom-auth}}}}
  query: sum(rate(custom_errors{{namespace="{{{{ namespace }}}}",deployment="{{{{ target }}}}"}}[{{{{ interval }}}}]))
"#,
        env.prom.url()
    )).await;
    env.create_yaml(&format!(
        "{{apiVersion: flagger.app/v1beta1, kind: AlertProvider, metadata: {{name: on-call, namespace: test}}, spec: {{type: slack, channel: deploys, address: \"{}/slack\"}}}}",
        env.hooks.url()
    )).await;
    env.prom.set(&["custom_errors"], 0.5);
    env.create_yaml(&canary(
        "kubernetes",
        r#"
  service: {port: 9898, portDiscovery: true}
  analysis:
    interval: 1s
    threshold: 2
    iterations: 3
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 1m
    - name: error-rate
      templateRef: {name: error-rate}
      thresholdRange: {max: 1}
      interval: 1m
    alerts:
    - name: on-call
      severity: info
      providerRef: {name: on-call}
"#,
    ))
    .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.assert_selects("podinfo-canary", "podinfo").await;
    env.assert_selects("podinfo", "podinfo-primary").await;

    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    // Blue/green on kubernetes: the canary is scaled up and analysed behind podinfo-canary.
    env.wait_for("apps/v1", "Deployment", "podinfo", |d| d["spec"]["replicas"] == 2)
        .await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let queries = env.prom.queries();
    assert!(
        queries.iter().any(|q| *q
            == format!(
                r#"sum(rate(custom_errors{{namespace="{}",deployment="podinfo"}}[1m]))"#,
                env.ns
            )),
        "{queries:#?}"
    );
    let alerted = |text: &str| {
        env.hooks
            .calls()
            .iter()
            .any(|c| c.path == "/slack" && c.body["attachments"][0]["text"] == text)
    };
    assert!(
        alerted("New revision detected, progressing canary analysis."),
        "{:#?}",
        env.hooks.calls()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !alerted("Canary analysis completed successfully, promotion finished.") {
        assert!(tokio::time::Instant::now() < deadline, "{:#?}", env.hooks.calls());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let iterations = (1..=3).map(|i| format!("Advance podinfo.test canary iteration {i}/3"));
    env.assert_events("podinfo", iterations).await;
    assert!(
        !env.has_event("podinfo", "Routing all traffic to canary").await,
        "the kubernetes provider never switches traffic"
    );
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.assert_selects("podinfo", "podinfo-primary").await;

    env.prom.set(&[HTTP_SUCCESS], 10.0);
    env.set_image("podinfo", "podinfo:6.0.2").await;
    let c = env.wait_phase("podinfo", "Failed", LIMIT).await;
    assert_eq!(c["status"]["failedChecks"], 2);
    assert!(
        env.has_event(
            "podinfo",
            "Rolling back podinfo.test failed checks threshold reached 2"
        )
        .await
    );
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    assert_eq!(env.replicas("podinfo").await, 0);
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_on_deletion_restores_the_target_and_the_apex() {
    let mut env = Env::start("revert-on-deletion-restores-the-target-a").await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"type": "ClusterIP", "selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}})).await;
    let yaml = gatewayapi_canary(env.hooks.url(), &weighted_analysis(30, 10, true)).replace(
        "  progressDeadlineSeconds: 120\n",
        "  progressDeadlineSeconds: 120\n  revertOnDeletion: true\n",
    );
    env.create_yaml(&yaml).await;
    let c = env.wait_phase("podinfo", "Initialized", LIMIT).await;
    let c = if c["metadata"]["finalizers"] == json!(["finalizer.flagger.app"]) {
        c
    } else {
        env.wait_for(CANARY_API, "Canary", "podinfo", |c| {
            c["metadata"]["finalizers"] == json!(["finalizer.flagger.app"])
        })
        .await
    };
    assert_eq!(c["metadata"]["finalizers"], json!(["finalizer.flagger.app"]));
    assert_eq!(env.replicas("podinfo").await, 0);

    // The user's own apex Service was taken over: it now selects the primary.
    env.assert_selects("podinfo", "podinfo-primary").await;

    env.objects
        .delete(CANARY_API, "Canary", Some(&env.ns), "podinfo")
        .await
        .unwrap();
    // The canary goes away once the finalizer is removed.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while env.get(CANARY_API, "Canary", "podinfo").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the canary was not finalized: {:#?}",
            env.event_messages("podinfo").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.replicas("podinfo").await, 2, "the target serves again");
    // The apex selects the target again.
    env.assert_selects("podinfo", "podinfo").await;
    // Generated objects go with the canary: the garbage collector follows their owner
    // references (asynchronously, as in a cluster).
    for (api_version, kind, name) in [
        ("v1", "Service", "podinfo-primary"),
        ("apps/v1", "Deployment", "podinfo-primary"),
    ] {
        env.objects
            .wait_gone(api_version, kind, Some(&env.ns), name, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("generated objects go with the canary: {e}"));
    }
    assert!(
        env.has_event("podinfo", "Normal: Terminating canary podinfo.test")
            .await
    );
    env.wait_event("podinfo", "Normal: Terminated canary podinfo.test")
        .await;
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_ab_testing_routes_matching_requests_then_promotes() {
    let mut env = Env::start("istio-ab-testing").await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create_yaml(&canary(
        "istio",
        r#"
  service: {port: 9898, hosts: [app.example.com]}
  analysis:
    interval: 1s
    threshold: 2
    iterations: 3
    match:
    - headers:
        x-canary: {exact: insider}
"#,
    ))
    .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    let vs = env
        .obj("networking.istio.io/v1beta1", "VirtualService", "podinfo")
        .await;
    assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
    for dr in ["podinfo-primary", "podinfo-canary"] {
        assert!(
            env.get("networking.istio.io/v1beta1", "DestinationRule", dr)
                .await
                .is_some(),
            "{dr}"
        );
    }

    // During the analysis, requests with the header go to the canary, the rest to the primary.
    env.set_image("podinfo", "podinfo:6.0.1").await;
    let vs = env
        .wait_for("networking.istio.io/v1beta1", "VirtualService", "podinfo", |vs| {
            vs["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"] == "insider"
                && vs["spec"]["http"][0]["route"][1]["weight"] == 100
        })
        .await;
    assert_eq!(
        vs["spec"]["http"][0]["route"][1]["destination"]["host"],
        "podinfo-canary"
    );
    assert_eq!(
        vs["spec"]["http"][1]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );
    // As Flagger: the rest route carries the primary's weight (0 during the test); as its only
    // destination the primary still gets all that traffic.
    assert_eq!(vs["spec"]["http"][1]["route"][0]["weight"], 0);
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let iterations = (1..=3).map(|i| format!("Advance podinfo.test canary iteration {i}/3"));
    env.assert_events("podinfo", iterations).await;
    // Promoted: everything to the primary again, which runs the new image.
    let vs = env
        .wait_for("networking.istio.io/v1beta1", "VirtualService", "podinfo", |vs| {
            vs["spec"]["http"][0]["route"][0]["weight"] == 100
        })
        .await;
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.stop_agent().await;
}
