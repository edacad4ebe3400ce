//! The Kubernetes ports against the real kube-apiserver (testkit's control plane, with the real
//! Deployment controller, the upstream Knative/Gateway API/Istio CRDs and the test stand-ins):
//! targets, routers and the recorder write the objects Flagger writes, and read back what they
//! wrote.

mod common;

use aviary_api::{CanaryPhase, CanaryStatus};
use aviary_core::ports::SecretSource;
use aviary_core::ports::{EventType, Recorder, Router, Routes, Target};
use aviary_kube::deployment::{DeploymentSettings, DeploymentTarget, FLAGGER_ID};
use aviary_kube::gatewayapi::GatewayApiRouter;
use aviary_kube::istio::IstioRouter;
use aviary_kube::knative::{Knative, PRIMARY_REVISION_ANNOTATION};
use aviary_kube::services::ClusterIpServices;
use aviary_kube::{KubeRecorder, KubeSecrets};
use aviary_testkit::kube_env::{canary, canary_of};
use common::*;
use serde_json::json;

fn deployment_canary() -> String {
    canary(
        "gatewayapi:v1",
        r#"
  autoscalerRef: {apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, name: podinfo, primaryScalerReplicas: {minReplicas: 3}}
  service:
    port: 80
    targetPort: 9898
    gatewayRefs: [{name: gw, namespace: gateways}]
    primary: {labels: {tier: primary}}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}
"#,
    )
}

async fn configs(env: &Env) {
    env.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config", }, "data": {"color": "blue"}})).await;
    env.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "podinfo-token", }, "type": "Opaque", "data": {"token": "c2VjcmV0"}})).await;
    env.create(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "podinfo", },
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}, "minReplicas": 2, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}})).await;
}

#[tokio::test]
async fn deployment_target_creates_the_primary_and_tracks_configs() {
    let env = start("deployment-target-creates-the-primary-an").await;
    let kube = env.kube.clone();
    configs(&env).await;
    env.create(deployment(&env.ns, "podinfo", "podinfo:6.0.0")).await;
    let c = env.canary(&deployment_canary()).await;
    let target = DeploymentTarget::new(kube.clone(), DeploymentSettings::default());

    target.initialize(&c).await.unwrap();
    let p = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        p["metadata"]["ownerReferences"][0]["uid"],
        c.metadata.uid.clone().unwrap().as_str()
    );
    assert_eq!(p["metadata"]["labels"], json!({"app": "podinfo-primary"}));
    let annotations = &p["metadata"]["annotations"];
    assert_eq!(annotations["owner"], "me");
    assert!(
        annotations.get("kustomize.toolkit.fluxcd.io/checksum").is_none(),
        "Flux's annotations are not copied: {annotations}"
    );
    assert_eq!(p["spec"]["replicas"], 2);
    assert_eq!(
        p["spec"]["selector"]["matchLabels"],
        json!({"app": "podinfo-primary"})
    );
    let tpl = &p["spec"]["template"];
    assert_eq!(tpl["metadata"]["labels"]["app"], "podinfo-primary");
    let first_id = tpl["metadata"]["annotations"][FLAGGER_ID]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        tpl["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "podinfo-config-primary"
    );
    assert_eq!(
        tpl["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "podinfo-token-primary"
    );
    assert_eq!(
        tpl["spec"]["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}}),
        "other fields untouched"
    );
    let cm = env.obj("v1", "ConfigMap", "podinfo-config-primary").await;
    assert_eq!(cm["data"], json!({"color": "blue"}));
    let secret = env.obj("v1", "Secret", "podinfo-token-primary").await;
    assert_eq!(secret["data"], json!({"token": "c2VjcmV0"}));
    let hpa = env
        .obj("autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-primary")
        .await;
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "podinfo-primary");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 4);

    // The revision: the template's fingerprint and the configs' checksums.
    let r1 = target.revision(&c).await.unwrap();
    let configs = r1.tracked_configs.clone().unwrap();
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        ["configmap/podinfo-config", "secret/podinfo-token"]
    );
    assert!(configs.values().all(|v| v.len() == 16));
    env.merge_patch(
        "v1",
        "ConfigMap",
        "podinfo-config",
        &json!({"data": {"color": "green"}}),
    )
    .await;
    let r2 = target.revision(&c).await.unwrap();
    assert_eq!(r1.fingerprint, r2.fingerprint);
    assert_ne!(r1.tracked_configs, r2.tracked_configs);

    // Readiness with Flagger's texts; the simulator makes the primary ready.
    env.wait_for("apps/v1", "Deployment", "podinfo-primary", |d| {
        d["status"]["availableReplicas"] == 2
    })
    .await;
    target.primary_ready(&c).await.unwrap();

    // Scale to zero and back.
    target.scale_to_zero(&c).await.unwrap();
    assert_eq!(
        env.obj("apps/v1", "Deployment", "podinfo").await["spec"]["replicas"],
        0
    );
    target.scale_from_zero(&c).await.unwrap();
    assert_eq!(
        env.obj("apps/v1", "Deployment", "podinfo").await["spec"]["replicas"],
        2
    );

    // The old pods must be available first: with none available the controller may replace
    // them all at once (maxUnavailable only protects available pods).
    env.wait_for("apps/v1", "Deployment", "podinfo", |d| {
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["availableReplicas"] == 2
    })
    .await;

    // A never-ready canary: retriable, with Flagger's message.
    // The new pods never become ready: the real Deployment controller surges one new replica
    // (maxSurge 25% of 2, rounded up) and keeps the two old ones (maxUnavailable rounds down to 0).
    env.objects
        .update("apps/v1", "Deployment", Some(&env.ns), "podinfo", |d| {
            let tpl = &mut d["spec"]["template"];
            tpl["metadata"]["annotations"][aviary_testkit::NEVER_READY_ANNOTATION] = json!("true");
            tpl["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1");
        })
        .await
        .unwrap();
    env.wait_for("apps/v1", "Deployment", "podinfo", |d| {
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["updatedReplicas"] == 1
    })
    .await;
    let e = target.canary_ready(&c).await.unwrap_err();
    assert!(e.retriable);
    assert_eq!(
        e.message,
        env.msg("canary deployment podinfo.test not ready: waiting for rollout to finish: 1 out of 2 new replicas have been updated")
    );

    // Promotion copies the template and the configs, and refreshes flagger-id.
    target.promote(&c).await.unwrap();
    let p = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(
        p["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:6.0.1"
    );
    assert_ne!(
        p["spec"]["template"]["metadata"]["annotations"][FLAGGER_ID],
        first_id.as_str()
    );
    assert_eq!(
        p["spec"]["selector"]["matchLabels"],
        json!({"app": "podinfo-primary"})
    );
    let cm = env.obj("v1", "ConfigMap", "podinfo-config-primary").await;
    assert_eq!(cm["data"], json!({"color": "green"}));
}

#[tokio::test]
async fn missing_target_and_bad_selector_are_named() {
    let env = start("missing-target-and-bad-selector-are-name").await;
    let kube = env.kube.clone();
    let c = env.canary(&deployment_canary()).await;
    let target = DeploymentTarget::new(kube.clone(), DeploymentSettings::default());
    let e = target.initialize(&c).await.unwrap_err();
    assert!(e.retriable);
    assert_eq!(
        e.message,
        env.msg("deployment podinfo.test get query error: deployments.apps \"podinfo\" not found")
    );
    let mut d = deployment(&env.ns, "podinfo", "x");
    d["spec"]["selector"]["matchLabels"] = json!({"tier": "web"});
    d["spec"]["template"]["metadata"]["labels"] = json!({"tier": "web"});
    env.create(d).await;
    let e = target.initialize(&c).await.unwrap_err();
    assert_eq!(
        e.message,
        env.msg("deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]")
    );
}

#[tokio::test]
async fn cluster_ip_services_select_canary_primary_and_apex() {
    let env = start("cluster-ip-services-select-canary-primar").await;
    let kube = env.kube.clone();
    env.create(deployment(&env.ns, "podinfo", "podinfo:6.0.0")).await;
    let c = env.canary(&deployment_canary()).await;
    let services = ClusterIpServices::new(kube.clone(), DeploymentSettings::default().selector_labels);
    services.reconcile(&c).await.unwrap();
    let get = async |n: &str| env.obj("v1", "Service", n).await;
    assert_eq!(
        get("podinfo-canary").await["spec"]["selector"],
        json!({"app": "podinfo"})
    );
    assert_eq!(
        get("podinfo-primary").await["spec"]["selector"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        get("podinfo-primary").await["metadata"]["labels"],
        json!({"app": "podinfo-primary", "tier": "primary"})
    );
    let apex = get("podinfo").await;
    assert_eq!(apex["spec"]["selector"], json!({"app": "podinfo-primary"}));
    assert_eq!(apex["spec"]["type"], "ClusterIP");
    assert_eq!(
        apex["spec"]["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9898}])
    );
    assert_eq!(apex["metadata"]["ownerReferences"][0]["name"], "podinfo");
    // Idempotent: nothing changes on a second pass.
    let rv = apex["metadata"]["resourceVersion"].clone();
    services.reconcile(&c).await.unwrap();
    assert_eq!(get("podinfo").await["metadata"]["resourceVersion"], rv);
    // Revert on deletion: the apex selects the target's pods again.
    services.finalize(&c).await.unwrap();
    assert_eq!(
        get("podinfo").await["spec"]["selector"],
        json!({"app": "podinfo"})
    );
}

fn knative_canary() -> String {
    canary_of(
        "{apiVersion: serving.knative.dev/v1, kind: Service, name: podinfo}",
        "knative",
        r#"
  analysis: {interval: 15s, threshold: 15, maxWeight: 50, stepWeight: 10}
"#,
    )
}

fn ksvc(image: &str) -> serde_json::Value {
    json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "podinfo", },
           "spec": {"template": {"spec": {"containers": [{"image": image}]}}}})
}

#[tokio::test]
async fn knative_annotation_traffic_and_readiness() {
    let env = start("knative-annotation-traffic-and-readiness").await;
    let kube = env.kube.clone();
    env.create(ksvc("podinfo:6.0.0")).await;
    env.wait_for("serving.knative.dev/v1", "Service", "podinfo", |s| {
        s["status"]["latestReadyRevisionName"] == "podinfo-00001"
    })
    .await;
    let mut c = env.canary(&knative_canary()).await;
    c.status = Some(CanaryStatus {
        phase: CanaryPhase::Initializing,
        ..Default::default()
    });
    let k = Knative::new(kube.clone());

    Target::initialize(&k, &c).await.unwrap();
    Target::primary_ready(&k, &c).await.unwrap();
    Router::reconcile(&k, &c).await.unwrap();
    let svc = env.obj("serving.knative.dev/v1", "Service", "podinfo").await;
    assert_eq!(
        svc["metadata"]["annotations"][PRIMARY_REVISION_ANNOTATION],
        "podinfo-00001"
    );
    assert_eq!(
        svc["spec"]["traffic"],
        json!([{"latestRevision": true, "percent": 0}, {"revisionName": "podinfo-00001", "percent": 100}])
    );
    assert_eq!(k.get_routes(&c).await.unwrap(), Routes::split(100, 0));
    assert_eq!(
        Target::revision(&k, &c).await.unwrap().fingerprint,
        "podinfo-00001"
    );

    // A new revision is the canary; weights go through spec.traffic and come back from status.
    env.merge_patch(
        "serving.knative.dev/v1",
        "Service",
        "podinfo",
        &json!({"spec": {"template": {"spec": {"containers": [{"image": "podinfo:6.0.1"}]}}}}),
    )
    .await;
    env.wait_for("serving.knative.dev/v1", "Service", "podinfo", |s| {
        s["status"]["latestReadyRevisionName"] == "podinfo-00002"
    })
    .await;
    c.status = Some(CanaryStatus {
        phase: CanaryPhase::Progressing,
        ..Default::default()
    });
    assert_eq!(
        Target::revision(&k, &c).await.unwrap().fingerprint,
        "podinfo-00002"
    );
    Target::canary_ready(&k, &c).await.unwrap();
    k.set_routes(&c, &Routes::split(90, 10)).await.unwrap();
    let svc = env
        .wait_for("serving.knative.dev/v1", "Service", "podinfo", |s| {
            s["status"]["observedGeneration"] == s["metadata"]["generation"]
        })
        .await;
    assert_eq!(svc["status"]["traffic"][0]["percent"], 10);
    assert_eq!(k.get_routes(&c).await.unwrap(), Routes::split(90, 10));
    // Reconcile leaves live weights alone once initialized.
    Router::reconcile(&k, &c).await.unwrap();
    assert_eq!(k.get_routes(&c).await.unwrap(), Routes::split(90, 10));

    // Promotion moves the annotation; finalize removes it.
    Target::promote(&k, &c).await.unwrap();
    let svc = env.obj("serving.knative.dev/v1", "Service", "podinfo").await;
    assert_eq!(
        svc["metadata"]["annotations"][PRIMARY_REVISION_ANNOTATION],
        "podinfo-00002"
    );
    Router::finalize(&k, &c).await.unwrap();
    let svc = env.obj("serving.knative.dev/v1", "Service", "podinfo").await;
    assert!(
        svc["metadata"]["annotations"]
            .get(PRIMARY_REVISION_ANNOTATION)
            .is_none()
    );
    assert_eq!(
        svc["spec"]["traffic"],
        json!([{"latestRevision": true, "percent": 100}])
    );

    // A revision that never becomes ready is retriable (Knative has no progress deadline).
    let mut never = ksvc("podinfo:6.0.2");
    never["metadata"]["annotations"] = json!({aviary_testkit::NEVER_READY_ANNOTATION: "true"});
    env.merge_patch("serving.knative.dev/v1", "Service", "podinfo", &never)
        .await;
    env.wait_for("serving.knative.dev/v1", "Service", "podinfo", |s| {
        s["status"]["latestCreatedRevisionName"] == "podinfo-00003"
    })
    .await;
    let e = Target::canary_ready(&k, &c).await.unwrap_err();
    assert!(e.retriable);
    assert!(
        e.message
            .starts_with(&env.msg("canary revision podinfo-00003.test not ready: Ready=Unknown")),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn knative_traffic_errors_are_explained() {
    let env = start("knative-traffic-errors-are-explained").await;
    let kube = env.kube.clone();
    env.create(ksvc("podinfo:6.0.0")).await;
    let c = env.canary(&knative_canary()).await;
    let k = Knative::new(kube);
    let e = k.get_routes(&c).await.unwrap_err();
    assert_eq!(
        e,
        env.msg("Knative Service podinfo.test has no flagger.app/primary-revision annotation")
    );
    // Traffic pinned to a named revision only: no latestRevision entry for the canary.
    env.merge_patch(
        "serving.knative.dev/v1",
        "Service",
        "podinfo",
        &json!({"metadata": {"annotations": {PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}},
                "spec": {"traffic": [{"revisionName": "podinfo-00001", "percent": 100}]}}),
    )
    .await;
    env.wait_for("serving.knative.dev/v1", "Service", "podinfo", |s| {
        s["status"]["observedGeneration"] == 2
    })
    .await;
    let e = k.get_routes(&c).await.unwrap_err();
    assert!(
        e.starts_with(&env.msg("Knative Service podinfo.test traffic spec invalid")),
        "{e}"
    );
}

#[tokio::test]
async fn gateway_api_route_waits_for_the_gateway() {
    let env = start("gateway-api-route-waits-for-the-gateway").await;
    let kube = env.kube.clone();
    env.cluster.standins().pause_gateway(&env.ns);
    let c = aviary_api::defaults::defaulted(&env.canary(&deployment_canary()).await);
    let r = GatewayApiRouter::new(kube, false);
    let api = "gateway.networking.k8s.io/v1";
    r.reconcile(&c).await.unwrap();
    let route = env.obj(api, "HTTPRoute", "podinfo").await;
    // The Gateway API CRD defaults group and kind server-side.
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "namespace": "gateways"}])
    );
    // A second reconcile sees only the server's defaults as a difference: no write.
    r.reconcile(&c).await.unwrap();
    let again = env.obj(api, "HTTPRoute", "podinfo").await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        route["metadata"]["resourceVersion"]
    );
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["port"], 80);
    let e = r.get_routes(&c).await.unwrap_err();
    assert_eq!(
        e,
        env.msg(
            "HTTPRoute podinfo.test parent gateways/gw is not ready (no status reported by the gateway yet)"
        )
    );
    env.cluster.standins().resume_gateway(&env.ns);
    r.set_routes(&c, &Routes::split(70, 30)).await.unwrap();
    env.wait_for(api, "HTTPRoute", "podinfo", |r| {
        r["status"]["parents"][0]["conditions"][0]["observedGeneration"] == r["metadata"]["generation"]
    })
    .await;
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(70, 30));
    // Reconcile keeps the live weights.
    r.reconcile(&c).await.unwrap();
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(70, 30));
}

/// Istio's API version.
const ISTIO: &str = "networking.istio.io/v1beta1";

#[tokio::test]
async fn istio_destination_rules_and_virtual_service() {
    let env = start("istio-destination-rules-and-virtual-serv").await;
    let kube = env.kube.clone();
    let yaml = &canary(
        "istio",
        r#"
  service:
    port: 9898
    gateways: [public-gateway.istio-system.svc.cluster.local]
    hosts: [app.example.com]
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#,
    );
    // A VirtualService created by someone else is taken over; its spec is kept for revert.
    env.create(json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "podinfo", },
                       "spec": {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}})).await;
    let c = env.canary(yaml).await;
    let r = IstioRouter::new(kube);
    r.reconcile(&c).await.unwrap();
    let dr = env.obj(ISTIO, "DestinationRule", "podinfo-canary").await;
    assert_eq!(
        dr["spec"],
        json!({"host": "podinfo-canary", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
    );
    let vs = env.obj(ISTIO, "VirtualService", "podinfo").await;
    assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
    assert_eq!(
        vs["spec"]["http"][0]["route"][0],
        json!({"destination": {"host": "podinfo-primary"}, "weight": 100})
    );
    assert!(vs["metadata"]["annotations"][aviary_kube::istio::ORIGINAL_CONFIGURATION].is_string());
    r.set_routes(&c, &Routes::split(60, 40)).await.unwrap();
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(60, 40));
    r.finalize(&c).await.unwrap();
    let vs = env.obj(ISTIO, "VirtualService", "podinfo").await;
    assert_eq!(
        vs["spec"],
        json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]})
    );
}

#[tokio::test]
async fn recorder_writes_status_and_aggregates_events() {
    let env = start("recorder-writes-status-and-aggregates-ev").await;
    let kube = env.kube.clone();
    let c = env.canary(&knative_canary()).await;
    let rec = KubeRecorder::new(kube.clone(), "agent-0");
    let mut s = CanaryStatus {
        phase: CanaryPhase::Progressing,
        canary_weight: 10,
        session_affinity_cookie: "c=abc".into(),
        tracked_configs: Some(
            [
                ("configmap/a".to_string(), "1".to_string()),
                ("configmap/b".to_string(), "2".to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    rec.status(&c, &s).await.unwrap();
    // Fields the engine drops are removed from the stored status, not kept by the merge.
    s.session_affinity_cookie.clear();
    s.tracked_configs = Some([("configmap/a".to_string(), "1".to_string())].into());
    rec.status(&c, &s).await.unwrap();
    let stored = env.reload(&c).await.status.unwrap();
    assert_eq!(stored, s);

    for _ in 0..3 {
        rec.event(&c, EventType::Normal, "Advance podinfo canary weight 10")
            .await;
    }
    rec.event(&c, EventType::Warning, "Halt advancement").await;
    rec.flush().await; // events are written off the caller's path
    let events = env.list("v1", "Event").await;
    assert_eq!(events.len(), 2, "{events:?}");
    let advance = events.iter().find(|e| e["type"] == "Normal").unwrap();
    assert_eq!(advance["count"], 3);
    assert_eq!(advance["reason"], "Synced");
    assert_eq!(advance["source"]["component"], "aviary");
    assert_eq!(
        advance["involvedObject"]["uid"],
        c.metadata.uid.clone().unwrap().as_str()
    );
    assert_eq!(advance["involvedObject"]["kind"], "Canary");
}

/// Events are written off the caller's path by several writers; one canary's stay in the order
/// they were recorded, however many are queued at once.
#[tokio::test]
async fn one_canarys_events_keep_their_order() {
    let env = start("one-canarys-events-keep-their-order").await;
    let c = env.canary(&knative_canary()).await;
    let rec = KubeRecorder::new(env.kube.clone(), "agent-0");
    for i in 0..40 {
        rec.event(
            &c,
            EventType::Normal,
            &format!("Advance podinfo canary weight {i}"),
        )
        .await;
    }
    rec.flush().await;
    let mut events = env.list("v1", "Event").await;
    events.sort_by_key(|e| {
        e["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    let want: Vec<String> = (0..40)
        .map(|i| format!("Advance podinfo canary weight {i}"))
        .collect();
    assert_eq!(messages, want);
    assert_eq!(rec.dropped_events(), 0);
}

#[tokio::test]
async fn secrets_are_read_for_providers() {
    let env = start("secrets-are-read-for-providers").await;
    let kube = env.kube.clone();
    configs(&env).await;
    let platform = aviary_kube::KubePlatform::new(kube, Default::default());
    let secrets: std::sync::Arc<KubeSecrets> = platform.secrets();
    let data = secrets.secret(&env.ns, "podinfo-token").await.unwrap();
    assert_eq!(data["token"], b"secret");
    let e = secrets.secret(&env.ns, "missing").await.unwrap_err();
    assert_eq!(
        e,
        format!("secrets \"missing\" not found in namespace {}", env.ns)
    );
}
