//! The Kubernetes ports against the testkit fake API server over real HTTP: targets, routers and
//! the recorder write the objects Flagger writes, and read back what they wrote.

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
use common::*;
use serde_json::json;

const DEPLOYMENT_CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: gatewayapi:v1
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  autoscalerRef: {apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, name: podinfo, primaryScalerReplicas: {minReplicas: 3}}
  service:
    port: 80
    targetPort: 9898
    gatewayRefs: [{name: gw, namespace: gateways}]
    primary: {labels: {tier: primary}}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}
"#;

fn configs(server: &aviary_testkit::FakeApiServer) {
    let store = server.store();
    store
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config", "namespace": "test"}, "data": {"color": "blue"}}))
        .unwrap();
    store
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "podinfo-token", "namespace": "test"}, "type": "Opaque", "data": {"token": "c2VjcmV0"}}))
        .unwrap();
    store
        .create(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}, "minReplicas": 2, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}))
        .unwrap();
}

#[tokio::test]
async fn deployment_target_creates_the_primary_and_tracks_configs() {
    let (server, kube) = start().await;
    configs(&server);
    server
        .store()
        .create(deployment("test", "podinfo", "podinfo:6.0.0"))
        .unwrap();
    let c = canary(&server, DEPLOYMENT_CANARY);
    let target = DeploymentTarget::new(kube.clone(), DeploymentSettings::default());

    target.initialize(&c).await.unwrap();
    let p = server
        .store()
        .get("apps/v1", "Deployment", Some("test"), "podinfo-primary")
        .unwrap();
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        p["metadata"]["ownerReferences"][0]["uid"],
        c.metadata.uid.clone().unwrap().as_str()
    );
    assert_eq!(p["metadata"]["labels"], json!({"app": "podinfo-primary"}));
    assert_eq!(
        p["metadata"]["annotations"],
        json!({"owner": "me"}),
        "Flux's annotations are not copied"
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
    let cm = server
        .store()
        .get("v1", "ConfigMap", Some("test"), "podinfo-config-primary")
        .unwrap();
    assert_eq!(cm["data"], json!({"color": "blue"}));
    let secret = server
        .store()
        .get("v1", "Secret", Some("test"), "podinfo-token-primary")
        .unwrap();
    assert_eq!(secret["data"], json!({"token": "c2VjcmV0"}));
    let hpa = server
        .store()
        .get(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some("test"),
            "podinfo-primary",
        )
        .unwrap();
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
    server
        .store()
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("test"),
            "podinfo-config",
            &json!({"data": {"color": "green"}}),
        )
        .unwrap();
    let r2 = target.revision(&c).await.unwrap();
    assert_eq!(r1.fingerprint, r2.fingerprint);
    assert_ne!(r1.tracked_configs, r2.tracked_configs);

    // Readiness with Flagger's texts; the simulator makes the primary ready.
    wait_for(&server, "apps/v1", "Deployment", "test", "podinfo-primary", |d| {
        d["status"]["availableReplicas"] == 2
    })
    .await;
    target.primary_ready(&c).await.unwrap();

    // Scale to zero and back.
    target.scale_to_zero(&c).await.unwrap();
    assert_eq!(
        server
            .store()
            .get("apps/v1", "Deployment", Some("test"), "podinfo")
            .unwrap()["spec"]["replicas"],
        0
    );
    target.scale_from_zero(&c).await.unwrap();
    assert_eq!(
        server
            .store()
            .get("apps/v1", "Deployment", Some("test"), "podinfo")
            .unwrap()["spec"]["replicas"],
        2
    );

    // A never-ready canary: retriable, with Flagger's message.
    let mut d = server
        .store()
        .get("apps/v1", "Deployment", Some("test"), "podinfo")
        .unwrap();
    d["metadata"]["annotations"][aviary_testkit::NEVER_READY_ANNOTATION] = json!("true");
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1");
    server.store().upsert(d).unwrap();
    wait_for(&server, "apps/v1", "Deployment", "test", "podinfo", |d| {
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
    })
    .await;
    let e = target.canary_ready(&c).await.unwrap_err();
    assert!(e.retriable);
    assert_eq!(
        e.message,
        "canary deployment podinfo.test not ready: waiting for rollout to finish: 0 out of 2 new replicas have been updated"
    );

    // Promotion copies the template and the configs, and refreshes flagger-id.
    target.promote(&c).await.unwrap();
    let p = server
        .store()
        .get("apps/v1", "Deployment", Some("test"), "podinfo-primary")
        .unwrap();
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
    let cm = server
        .store()
        .get("v1", "ConfigMap", Some("test"), "podinfo-config-primary")
        .unwrap();
    assert_eq!(cm["data"], json!({"color": "green"}));
    server.shutdown().await;
}

#[tokio::test]
async fn missing_target_and_bad_selector_are_named() {
    let (server, kube) = start().await;
    let c = canary(&server, DEPLOYMENT_CANARY);
    let target = DeploymentTarget::new(kube.clone(), DeploymentSettings::default());
    let e = target.initialize(&c).await.unwrap_err();
    assert!(e.retriable);
    assert_eq!(
        e.message,
        "deployment podinfo.test get query error: deployments.apps \"podinfo\" not found"
    );
    let mut d = deployment("test", "podinfo", "x");
    d["spec"]["selector"]["matchLabels"] = json!({"tier": "web"});
    server.store().create(d).unwrap();
    let e = target.initialize(&c).await.unwrap_err();
    assert_eq!(
        e.message,
        "deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn cluster_ip_services_select_canary_primary_and_apex() {
    let (server, kube) = start().await;
    server
        .store()
        .create(deployment("test", "podinfo", "podinfo:6.0.0"))
        .unwrap();
    let c = canary(&server, DEPLOYMENT_CANARY);
    let services = ClusterIpServices::new(kube.clone(), DeploymentSettings::default().selector_labels);
    services.reconcile(&c).await.unwrap();
    let get = |n: &str| server.store().get("v1", "Service", Some("test"), n).unwrap();
    assert_eq!(
        get("podinfo-canary")["spec"]["selector"],
        json!({"app": "podinfo"})
    );
    assert_eq!(
        get("podinfo-primary")["spec"]["selector"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        get("podinfo-primary")["metadata"]["labels"],
        json!({"app": "podinfo-primary", "tier": "primary"})
    );
    let apex = get("podinfo");
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
    assert_eq!(get("podinfo")["metadata"]["resourceVersion"], rv);
    // Revert on deletion: the apex selects the target's pods again.
    services.finalize(&c).await.unwrap();
    assert_eq!(get("podinfo")["spec"]["selector"], json!({"app": "podinfo"}));
    server.shutdown().await;
}

const KNATIVE_CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: knative
  targetRef: {apiVersion: serving.knative.dev/v1, kind: Service, name: podinfo}
  analysis: {interval: 15s, threshold: 15, maxWeight: 50, stepWeight: 10}
"#;

fn ksvc(image: &str) -> serde_json::Value {
    json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "podinfo", "namespace": "test"},
           "spec": {"template": {"spec": {"containers": [{"image": image}]}}}})
}

#[tokio::test]
async fn knative_annotation_traffic_and_readiness() {
    let (server, kube) = start().await;
    server.store().create(ksvc("podinfo:6.0.0")).unwrap();
    wait_for(
        &server,
        "serving.knative.dev/v1",
        "Service",
        "test",
        "podinfo",
        |s| s["status"]["latestReadyRevisionName"] == "podinfo-00001",
    )
    .await;
    let mut c = canary(&server, KNATIVE_CANARY);
    c.status = Some(CanaryStatus {
        phase: CanaryPhase::Initializing,
        ..Default::default()
    });
    let k = Knative::new(kube.clone());

    Target::initialize(&k, &c).await.unwrap();
    Target::primary_ready(&k, &c).await.unwrap();
    Router::reconcile(&k, &c).await.unwrap();
    let svc = server
        .store()
        .get("serving.knative.dev/v1", "Service", Some("test"), "podinfo")
        .unwrap();
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
    server
        .store()
        .merge_patch(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "podinfo:6.0.1"}]}}}}),
        )
        .unwrap();
    wait_for(
        &server,
        "serving.knative.dev/v1",
        "Service",
        "test",
        "podinfo",
        |s| s["status"]["latestReadyRevisionName"] == "podinfo-00002",
    )
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
    let svc = wait_for(
        &server,
        "serving.knative.dev/v1",
        "Service",
        "test",
        "podinfo",
        |s| s["status"]["observedGeneration"] == s["metadata"]["generation"],
    )
    .await;
    assert_eq!(svc["status"]["traffic"][0]["percent"], 10);
    assert_eq!(k.get_routes(&c).await.unwrap(), Routes::split(90, 10));
    // Reconcile leaves live weights alone once initialized.
    Router::reconcile(&k, &c).await.unwrap();
    assert_eq!(k.get_routes(&c).await.unwrap(), Routes::split(90, 10));

    // Promotion moves the annotation; finalize removes it.
    Target::promote(&k, &c).await.unwrap();
    let svc = server
        .store()
        .get("serving.knative.dev/v1", "Service", Some("test"), "podinfo")
        .unwrap();
    assert_eq!(
        svc["metadata"]["annotations"][PRIMARY_REVISION_ANNOTATION],
        "podinfo-00002"
    );
    Router::finalize(&k, &c).await.unwrap();
    let svc = server
        .store()
        .get("serving.knative.dev/v1", "Service", Some("test"), "podinfo")
        .unwrap();
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
    server
        .store()
        .merge_patch(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            &never,
        )
        .unwrap();
    wait_for(
        &server,
        "serving.knative.dev/v1",
        "Service",
        "test",
        "podinfo",
        |s| s["status"]["latestCreatedRevisionName"] == "podinfo-00003",
    )
    .await;
    let e = Target::canary_ready(&k, &c).await.unwrap_err();
    assert!(e.retriable);
    assert!(
        e.message
            .starts_with("canary revision podinfo-00003.test not ready: Ready=Unknown"),
        "{}",
        e.message
    );
    server.shutdown().await;
}

#[tokio::test]
async fn knative_traffic_errors_are_explained() {
    let (server, kube) = start().await;
    server.store().create(ksvc("podinfo:6.0.0")).unwrap();
    let c = canary(&server, KNATIVE_CANARY);
    let k = Knative::new(kube);
    let e = k.get_routes(&c).await.unwrap_err();
    assert_eq!(
        e,
        "Knative Service podinfo.test has no flagger.app/primary-revision annotation"
    );
    server
        .store()
        .merge_patch(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            &json!({"metadata": {"annotations": {PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}}}),
        )
        .unwrap();
    wait_for(
        &server,
        "serving.knative.dev/v1",
        "Service",
        "test",
        "podinfo",
        |s| s["status"]["observedGeneration"] == 1,
    )
    .await;
    let e = k.get_routes(&c).await.unwrap_err();
    assert!(
        e.starts_with("Knative Service podinfo.test traffic spec invalid"),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn gateway_api_route_waits_for_the_gateway() {
    let (server, kube) = start().await;
    server.simulators().set_httproutes(false);
    let c = aviary_api::defaults::defaulted(&canary(&server, DEPLOYMENT_CANARY));
    let r = GatewayApiRouter::new(kube, false);
    r.reconcile(&c).await.unwrap();
    let route = server
        .store()
        .get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("test"),
            "podinfo",
        )
        .unwrap();
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "gw", "namespace": "gateways"}])
    );
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["port"], 80);
    let e = r.get_routes(&c).await.unwrap_err();
    assert_eq!(
        e,
        "HTTPRoute podinfo.test parent gateways/gw is not ready (no status reported by the gateway yet)"
    );
    server.simulators().set_httproutes(true);
    r.set_routes(&c, &Routes::split(70, 30)).await.unwrap();
    wait_for(
        &server,
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "test",
        "podinfo",
        |r| r["status"]["parents"][0]["conditions"][0]["observedGeneration"] == r["metadata"]["generation"],
    )
    .await;
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(70, 30));
    // Reconcile keeps the live weights.
    r.reconcile(&c).await.unwrap();
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(70, 30));
    server.shutdown().await;
}

#[tokio::test]
async fn istio_destination_rules_and_virtual_service() {
    let (server, kube) = start().await;
    let yaml = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    gateways: [public-gateway.istio-system.svc.cluster.local]
    hosts: [app.example.com]
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#;
    // A VirtualService created by someone else is taken over; its spec is kept for revert.
    server
        .store()
        .create(json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "podinfo", "namespace": "test"},
                       "spec": {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}}))
        .unwrap();
    let c = canary(&server, yaml);
    let r = IstioRouter::new(kube);
    r.reconcile(&c).await.unwrap();
    let dr = server
        .store()
        .get(
            "networking.istio.io/v1beta1",
            "DestinationRule",
            Some("test"),
            "podinfo-canary",
        )
        .unwrap();
    assert_eq!(
        dr["spec"],
        json!({"host": "podinfo-canary", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
    );
    let vs = server
        .store()
        .get(
            "networking.istio.io/v1beta1",
            "VirtualService",
            Some("test"),
            "podinfo",
        )
        .unwrap();
    assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
    assert_eq!(
        vs["spec"]["http"][0]["route"][0],
        json!({"destination": {"host": "podinfo-primary"}, "weight": 100})
    );
    assert!(vs["metadata"]["annotations"][aviary_kube::istio::ORIGINAL_CONFIGURATION].is_string());
    r.set_routes(&c, &Routes::split(60, 40)).await.unwrap();
    assert_eq!(r.get_routes(&c).await.unwrap(), Routes::split(60, 40));
    r.finalize(&c).await.unwrap();
    let vs = server
        .store()
        .get(
            "networking.istio.io/v1beta1",
            "VirtualService",
            Some("test"),
            "podinfo",
        )
        .unwrap();
    assert_eq!(
        vs["spec"],
        json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn recorder_writes_status_and_aggregates_events() {
    let (server, kube) = start().await;
    let c = canary(&server, KNATIVE_CANARY);
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
    let stored = reload(&server, &c).status.unwrap();
    assert_eq!(stored, s);

    for _ in 0..3 {
        rec.event(&c, EventType::Normal, "Advance podinfo.test canary weight 10")
            .await;
    }
    rec.event(&c, EventType::Warning, "Halt advancement").await;
    let events = server.store().list("v1", "Event", Some("test"));
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
    server.shutdown().await;
}

#[tokio::test]
async fn secrets_are_read_for_providers() {
    let (server, kube) = start().await;
    configs(&server);
    let platform = aviary_kube::KubePlatform::new(kube, Default::default());
    let secrets: std::sync::Arc<KubeSecrets> = platform.secrets();
    let data = secrets.secret("test", "podinfo-token").await.unwrap();
    assert_eq!(data["token"], b"secret");
    let e = secrets.secret("test", "missing").await.unwrap_err();
    assert_eq!(e, "secrets \"missing\" not found in namespace test");
    server.shutdown().await;
}
