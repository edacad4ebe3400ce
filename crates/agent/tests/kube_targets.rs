//! Targets other than a Deployment's pods, driven by the agent (in-process) against the real
//! kube-apiserver: a DaemonSet (the real DaemonSet controller runs its pods on the stand-in
//! Node; scale to zero is Flagger's node selector that matches no node), the `-primary` copies of
//! an autoscaling/v2 HorizontalPodAutoscaler and of a KEDA ScaledObject (KEDA v2.20.2's CRD from
//! its Go module; no KEDA controller runs, so the pause is asserted on the object), and a core
//! Service target split by the Gateway API router; and the metric providers that read the cluster
//! (keptn, with a hand-written Keptn CRD and a test-side operator stand-in; externalmetrics).
//! Flagger v1.44.0 source lines are cited at
//! each assertion. The agent runs as the `deploy/rbac/` ServiceAccount (no 403 allowed) except
//! in the HPA test.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use aviary_testkit::kube_env::{canary, canary_of};
use kube_common::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
const HTTP_SUCCESS: &str = "http_request_duration_seconds_count";
const SCALE_TO_ZERO: &str = "flagger.app/scale-to-zero";

fn daemonset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo", "team": "web"},
                     "annotations": {"owner": "web-team"}},
        "spec": {
            "minReadySeconds": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "podinfo", "image": image, "ports": [{"containerPort": 9898}],
                                    "envFrom": [{"configMapRef": {"name": "podinfo-env"}}]}],
                },
            },
        },
    })
}

fn pods_of(pods: &[Value], app: &str) -> usize {
    pods.iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app && p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

impl Env {
    /// Namespace `name` with the agent running as the `deploy/rbac/` ServiceAccount, so that the
    /// committed rules are what the test exercises; answers the audit log's user name.
    async fn as_service_account(name: &str) -> (Self, String) {
        let mut env = Env::without_agent(name, None).await;
        let user = env.run_agent_as_service_account().await;
        env.start_agent();
        (env, user)
    }

    /// Every request of `user` the API server refused as forbidden.
    fn forbidden(&self, user: &str) -> Vec<String> {
        self.audit(user)
            .iter()
            .filter(|e| e["responseStatus"]["code"] == 403)
            .map(audit_line)
            .collect()
    }

    async fn pod_count(&self, app: &str) -> usize {
        pods_of(
            &self.objects.list("v1", "Pod", Some(&self.ns)).await.unwrap(),
            app,
        )
    }

    /// Waits (bounded) until `app` has `n` pods.
    async fn wait_pods(&self, app: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while self.pod_count(app).await != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{app} never had {n} pods: {:#?}",
                self.objects.list("v1", "Pod", Some(&self.ns)).await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn set_daemonset_image(&self, image: &str) {
        self.objects
            .update("apps/v1", "DaemonSet", Some(&self.ns), "podinfo", |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_promotes_then_rolls_back() {
    let (mut env, user) = Env::as_service_account("daemonset-promotes-then-rolls-back").await;
    env.create(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-env"},
        "data": {"LEVEL": "info"}}),
    )
    .await;
    env.create(daemonset("podinfo:6.0.0")).await;
    let spec = r#"
  progressDeadlineSeconds: 120
  service: {port: 9898}
  analysis:
    interval: 1s
    threshold: 2
    iterations: 2
"#;
    env.create_yaml(&canary_of(
        "{apiVersion: apps/v1, kind: DaemonSet, name: podinfo}",
        "kubernetes",
        &[spec, SUCCESS_RATE_METRIC].concat(),
    ))
    .await;

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    // The primary DaemonSet (daemonset_controller.go:269-301): the selector and pod labels on
    // `<value>-primary`, the target's strategy, history limit and min ready seconds, a flagger-id
    // pod annotation, the tracked ConfigMap's `-primary` copy, owned by the Canary.
    let primary = env.obj("apps/v1", "DaemonSet", "podinfo-primary").await;
    assert_eq!(
        primary["spec"]["selector"],
        json!({"matchLabels": {"app": "podinfo-primary"}})
    );
    assert_eq!(primary["spec"]["minReadySeconds"], 1);
    assert_eq!(primary["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(primary["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(primary["metadata"]["labels"], json!({"app": "podinfo-primary"}));
    assert_eq!(primary["metadata"]["annotations"]["owner"], "web-team");
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    let template = &primary["spec"]["template"];
    assert_eq!(template["metadata"]["labels"], json!({"app": "podinfo-primary"}));
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert!(template["metadata"]["annotations"]["flagger-id"].is_string());
    assert_eq!(
        template["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux"})
    );
    assert_eq!(
        template["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "podinfo-env-primary"
    );
    assert_eq!(
        env.obj("v1", "ConfigMap", "podinfo-env-primary").await["data"],
        json!({"LEVEL": "info"})
    );
    // Ready as the DaemonSet controller counts it (daemonset_ready.go:63-94): one pod, on the
    // one Node.
    let primary = env
        .wait_for("apps/v1", "DaemonSet", "podinfo-primary", |d| {
            d["status"]["numberAvailable"] == 1
        })
        .await;
    assert_eq!(primary["status"]["desiredNumberScheduled"], 1);
    // The target "scaled to zero" (daemonset_controller.go:50-73): the node selector no node has,
    // next to the target's own; the real controller then schedules nothing.
    let target = env.obj("apps/v1", "DaemonSet", "podinfo").await;
    assert_eq!(
        target["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux", SCALE_TO_ZERO: "true"})
    );
    env.wait_for("apps/v1", "DaemonSet", "podinfo", |d| {
        d["status"]["desiredNumberScheduled"] == 0 && d["status"]["currentNumberScheduled"] == 0
    })
    .await;
    env.wait_pods("podinfo", 0).await;
    assert_eq!(env.pod_count("podinfo-primary").await, 1);
    // The generated Services select the DaemonSets' pods (the kubernetes router's default).
    env.assert_selects("podinfo", "podinfo-primary").await;
    env.assert_selects("podinfo-canary", "podinfo").await;
    let initialized = env.canary("podinfo").await["status"]["lastAppliedSpec"].clone();

    // A healthy revision: the selector is removed for the analysis (daemonset_controller.go:
    // 75-92), the pod comes back, two iterations, promotion, and the target is emptied again.
    env.set_daemonset_image("podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    env.wait_pods("podinfo", 1).await;
    let target = env.obj("apps/v1", "DaemonSet", "podinfo").await;
    assert_eq!(
        target["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux"})
    );
    let c = env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    assert_ne!(c["status"]["lastAppliedSpec"], initialized);
    env.wait_event(
        "podinfo",
        "Copying podinfo.test template spec to podinfo-primary.test",
    )
    .await;
    let primary = env.obj("apps/v1", "DaemonSet", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    // The promoted template never carries the scale-to-zero selector (:151-154).
    assert_eq!(
        primary["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux"})
    );
    env.wait_for("apps/v1", "DaemonSet", "podinfo", |d| {
        d["spec"]["template"]["spec"]["nodeSelector"][SCALE_TO_ZERO] == "true"
    })
    .await;
    env.wait_pods("podinfo", 0).await;
    // Adding and removing the selector is not a new revision (daemonset_status.go:35-43).
    let promoted = env.canary("podinfo").await["status"]["lastAppliedSpec"].clone();

    // A failing revision rolls back; the primary keeps 6.0.1.
    env.prom.set(&[HTTP_SUCCESS], 42.0);
    env.set_daemonset_image("podinfo:6.0.2").await;
    let c = env.wait_phase("podinfo", "Failed", LIMIT).await;
    assert_ne!(c["status"]["lastAppliedSpec"], promoted);
    env.wait_event("podinfo", "Warning: Canary failed! Scaling down podinfo.test")
        .await;
    let primary = env.obj("apps/v1", "DaemonSet", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.wait_for("apps/v1", "DaemonSet", "podinfo", |d| {
        d["spec"]["template"]["spec"]["nodeSelector"][SCALE_TO_ZERO] == "true"
    })
    .await;
    env.wait_pods("podinfo", 0).await;
    assert_eq!(env.pod_count("podinfo-primary").await, 1);
    assert_eq!(
        env.forbidden(&user),
        Vec::<String>::new(),
        "the committed RBAC rules suffice"
    );
    env.stop_agent().await;
}

fn hpa() -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo-hpa",
                     "labels": {"team": "web", "kustomize.toolkit.fluxcd.io/name": "apps"},
                     "annotations": {"note": "not copied"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
    })
}

fn autoscaled_canary(kind: &str, name: &str, extra: &str) -> String {
    let spec = format!(
        r#"
  autoscalerRef:
    apiVersion: {}
    kind: {kind}
    name: {name}
{extra}
  service: {{port: 9898}}
  analysis:
    interval: 1s
    threshold: 2
    iterations: 2
"#,
        if kind == "ScaledObject" {
            "keda.sh/v1alpha1"
        } else {
            "autoscaling/v2"
        }
    );
    canary("kubernetes", &spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_is_copied_to_the_primary() {
    let mut env = Env::start("hpa-is-copied-to-the-primary").await;
    let mut d = deployment("podinfo", "podinfo:6.0.0");
    d["spec"].as_object_mut().unwrap().remove("replicas");
    env.create(d).await;
    env.create(hpa()).await;
    env.create_yaml(&autoscaled_canary(
        "HorizontalPodAutoscaler",
        "podinfo-hpa",
        "    primaryScalerReplicas: {minReplicas: 3}",
    ))
    .await;

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    // hpa_reconciler.go:58-109: the target's bounds, metrics and behavior on `<target>-primary`,
    // primaryScalerReplicas over them, the labels without Flux's, no annotations, owned.
    let primary = env
        .obj("autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-hpa-primary")
        .await;
    let source = hpa();
    assert_eq!(
        primary["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"})
    );
    assert_eq!(primary["spec"]["minReplicas"], 3);
    assert_eq!(primary["spec"]["maxReplicas"], 4);
    assert_eq!(primary["spec"]["metrics"], source["spec"]["metrics"]);
    assert_eq!(
        primary["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        60
    );
    assert_eq!(primary["metadata"]["labels"], json!({"team": "web"}));
    assert!(primary["metadata"]["annotations"].is_null(), "{primary}");
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    // The primary Deployment starts at one replica (no replicas on the target).
    assert_eq!(env.replicas("podinfo-primary").await, 1);

    // The HPA changes before the next revision: the primary follows on promotion
    // (hpa_reconciler.go:115-157, scheduler.go:381-386), min still from primaryScalerReplicas.
    env.update("autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-hpa", |h| {
        h["spec"]["maxReplicas"] = json!(6);
    })
    .await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    // Scaled up to the HPA's minimum (deployment_controller.go:187-194).
    let d = env.obj("apps/v1", "Deployment", "podinfo").await;
    assert_eq!(d["spec"]["replicas"], 2, "{}", d["spec"]);
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let primary = env
        .obj("autoscaling/v2", "HorizontalPodAutoscaler", "podinfo-hpa-primary")
        .await;
    assert_eq!(primary["spec"]["maxReplicas"], 6);
    assert_eq!(primary["spec"]["minReplicas"], 3);
    // With an autoscaler the promotion leaves the primary's replicas to it (:100-103).
    assert_eq!(env.replicas("podinfo-primary").await, 1);
    env.stop_agent().await;
}

fn scaled_object() -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "podinfo-so", "labels": {"team": "web"},
                     "annotations": {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}},
        "spec": {
            "scaleTargetRef": {"name": "podinfo"},
            "pollingInterval": 10,
            "cooldownPeriod": 20,
            "minReplicaCount": 2,
            "maxReplicaCount": 5,
            "advanced": {"horizontalPodAutoscalerConfig": {"name": "keda-hpa-podinfo"}},
            "triggers": [{
                "type": "prometheus",
                "name": "requests",
                "metadata": {
                    "serverAddress": "http://prometheus.monitoring:9090",
                    "threshold": "100",
                    "query": "sum(rate(http_requests_total{app=\"podinfo-canary\"}[1m])) + sum(up{deployment=\"podinfo\"})",
                },
            }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_scaled_object_is_copied_and_paused() {
    let (mut env, user) = Env::as_service_account("keda-scaled-object-is-copied-and-paused").await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create(scaled_object()).await;
    env.create_yaml(&autoscaled_canary("ScaledObject", "podinfo-so", ""))
        .await;

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    // scaled_object_reconciler.go:47-110: the scale target on the primary, the query pointed at
    // the primary (:183-212), the HPA name `-primary` (:230-242), labels and annotations copied.
    let primary = env
        .obj("keda.sh/v1alpha1", "ScaledObject", "podinfo-so-primary")
        .await;
    assert_eq!(
        primary["spec"]["scaleTargetRef"],
        json!({"name": "podinfo-primary"})
    );
    assert_eq!(
        primary["spec"]["triggers"][0]["metadata"]["query"],
        "sum(rate(http_requests_total{app=\"podinfo-primary\"}[1m])) + sum(up{deployment=\"podinfo-primary\"})"
    );
    assert_eq!(
        primary["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"],
        "keda-hpa-podinfo-primary"
    );
    for f in [
        "pollingInterval",
        "cooldownPeriod",
        "minReplicaCount",
        "maxReplicaCount",
    ] {
        assert_eq!(primary["spec"][f], scaled_object()["spec"][f], "{f}");
    }
    assert_eq!(primary["metadata"]["labels"], json!({"team": "web"}));
    assert_eq!(
        primary["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"],
        "true"
    );
    // The target's ScaledObject is paused at 0 with the canary scaled down (:126-145,
    // scheduler.go:240-246).
    let so = env.obj("keda.sh/v1alpha1", "ScaledObject", "podinfo-so").await;
    assert_eq!(
        so["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"],
        "0"
    );
    assert_eq!(env.replicas("podinfo").await, 0);

    env.update("keda.sh/v1alpha1", "ScaledObject", "podinfo-so", |s| {
        s["spec"]["maxReplicaCount"] = json!(8);
    })
    .await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    // Resumed (:147-167, scheduler.go:914-920), scaled to its minReplicaCount
    // (deployment_controller.go:195-201).
    let so = env.obj("keda.sh/v1alpha1", "ScaledObject", "podinfo-so").await;
    assert!(
        so["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"].is_null(),
        "{}",
        so["metadata"]
    );
    assert_eq!(env.replicas("podinfo").await, 2);
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let primary = env
        .obj("keda.sh/v1alpha1", "ScaledObject", "podinfo-so-primary")
        .await;
    assert_eq!(primary["spec"]["maxReplicaCount"], 8);
    let so = env.obj("keda.sh/v1alpha1", "ScaledObject", "podinfo-so").await;
    assert_eq!(
        so["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"],
        "0"
    );
    assert_eq!(
        env.forbidden(&user),
        Vec::<String>::new(),
        "the committed RBAC rules suffice"
    );
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_target_splits_between_its_copies() {
    let (mut env, user) = Env::as_service_account("service-target-splits-between-its-copies").await;
    env.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "web"}},
        "spec": {"selector": {"app": "backend-v1"}, "ports": [{"name": "http", "port": 9898, "targetPort": 8080}]},
    }))
    .await;
    env.create_yaml(&canary_of(
        "{apiVersion: v1, kind: Service, name: podinfo}",
        "gatewayapi:v1",
        r#"
  service:
    port: 9898
    gatewayRefs: [{name: gw, namespace: gateways}]
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 20
    stepWeight: 10
"#,
    ))
    .await;

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    // service_controller.go:68-174: both copies of the target, owned, without kubectl's
    // annotation, each with its own cluster IP.
    let target = env.obj("v1", "Service", "podinfo").await;
    for name in ["podinfo-primary", "podinfo-canary"] {
        let s = env.obj("v1", "Service", name).await;
        assert_eq!(s["spec"]["selector"], json!({"app": "backend-v1"}), "{name}");
        assert_eq!(s["spec"]["ports"], target["spec"]["ports"], "{name}");
        assert_eq!(s["metadata"]["labels"], json!({"app": "podinfo"}), "{name}");
        assert_eq!(s["metadata"]["annotations"], json!({"team": "web"}), "{name}");
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Canary", "{name}");
        assert_ne!(s["spec"]["clusterIP"], target["spec"]["clusterIP"], "{name}");
    }
    // The target itself is untouched and no workload Services exist (KubernetesNoopRouter).
    assert_eq!(target["spec"]["selector"], json!({"app": "backend-v1"}));
    let route = env
        .obj("gateway.networking.k8s.io/v1", "HTTPRoute", "podinfo")
        .await;
    let backends = &route["spec"]["rules"][0]["backendRefs"];
    assert_eq!(backends[0]["name"], "podinfo-primary");
    assert_eq!(backends[0]["weight"], 100);
    assert_eq!(backends[1]["name"], "podinfo-canary");
    assert_eq!(backends[1]["weight"], 0);

    // A new spec of the target is a new revision: the canary copy follows on the next tick
    // (Initialize runs every tick), the analysis shifts weight, the primary gets the spec.
    env.objects
        .update("v1", "Service", Some(&env.ns), "podinfo", |s| {
            s["spec"]["selector"] = json!({"app": "backend-v2"});
        })
        .await
        .unwrap();
    env.wait_phase("podinfo", "Progressing", LIMIT).await;
    env.wait_for("v1", "Service", "podinfo-canary", |s| {
        s["spec"]["selector"] == json!({"app": "backend-v2"})
    })
    .await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    assert!(
        env.has_event("podinfo", "Advance podinfo.test canary weight 20")
            .await
    );
    let primary = env.obj("v1", "Service", "podinfo-primary").await;
    assert_eq!(primary["spec"]["selector"], json!({"app": "backend-v2"}));
    // Promotion copies the labels and annotations -include-label-prefix admits (none by default).
    assert!(primary["metadata"]["labels"].is_null(), "{}", primary["metadata"]);
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        env.forbidden(&user),
        Vec::<String>::new(),
        "the committed RBAC rules suffice"
    );
    env.stop_agent().await;
}

/// Keptn's metrics.keptn.sh/v1beta1 KeptnMetric and Analysis. Keptn's Go module is not served
/// by the module proxy here, so these schemas are hand-written from Keptn's API reference
/// (the fields Keptn documents for both kinds; status as a subresource).
fn keptn_crds() -> Vec<Value> {
    let crd = |kind: &str, plural: &str, spec: Value, status: Value| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.metrics.keptn.sh")},
            "spec": {
                "group": "metrics.keptn.sh", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1beta1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                        "spec": spec, "status": status}}}}],
            },
        })
    };
    let s = |t: &str| json!({"type": t});
    vec![
        crd(
            "KeptnMetric",
            "keptnmetrics",
            json!({"type": "object", "required": ["provider", "query"], "properties": {
                "provider": {"type": "object", "required": ["name"], "properties": {"name": s("string")}},
                "query": s("string"),
                "fetchIntervalSeconds": s("integer"),
                "range": {"type": "object", "properties": {"interval": s("string"), "step": s("string"),
                    "aggregation": s("string"), "storedResults": s("integer")}},
            }}),
            json!({"type": "object", "properties": {
                "value": s("string"), "rawValue": {"type": "string", "format": "byte"},
                "lastUpdated": {"type": "string", "format": "date-time"}, "errMsg": s("string"),
            }}),
        ),
        crd(
            "Analysis",
            "analyses",
            json!({"type": "object", "required": ["analysisDefinition", "timeframe"], "properties": {
                "analysisDefinition": {"type": "object", "required": ["name"], "properties": {"name": s("string"), "namespace": s("string")}},
                "timeframe": {"type": "object", "properties": {"from": {"type": "string", "format": "date-time"},
                    "to": {"type": "string", "format": "date-time"}, "recent": s("string")}},
                "args": {"type": "object", "additionalProperties": s("string")},
            }}),
            json!({"type": "object", "properties": {
                "state": s("string"), "pass": s("boolean"), "warning": s("boolean"), "raw": s("string"),
                "timeframe": {"type": "object", "properties": {"from": s("string"), "to": s("string")}},
            }}),
        ),
    ]
}

/// Keptn's metrics operator, as far as this test needs it (a test-side stand-in): every new
/// Analysis in `ns` is evaluated at once, passing when its `args.verdict` is `pass`; the specs
/// it saw are kept.
fn keptn_standin(
    objects: aviary_testkit::Objects,
    ns: String,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<parking_lot::Mutex<Vec<Value>>>,
) {
    let seen: std::sync::Arc<parking_lot::Mutex<Vec<Value>>> = Default::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            for a in objects
                .list("metrics.keptn.sh/v1beta1", "Analysis", Some(&ns))
                .await
                .unwrap_or_default()
            {
                if !a["status"]["state"].is_null() {
                    continue;
                }
                let name = a["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let pass = a["spec"]["args"]["verdict"] == "pass";
                s.lock().push(a.clone());
                let _ = objects
                    .patch_status(
                        "metrics.keptn.sh/v1beta1",
                        "Analysis",
                        Some(&ns),
                        &name,
                        &json!({"status": {"state": "Completed", "pass": pass, "raw": "{}"}}),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (task, seen)
}

/// Writes the status of KeptnMetric `podinfo-errors`, as Keptn's metrics operator does.
async fn set_keptn_errors(env: &Env, status: Value) {
    let status = json!({ "status": status });
    env.objects
        .patch_status(
            "metrics.keptn.sh/v1beta1",
            "KeptnMetric",
            Some(&env.ns),
            "podinfo-errors",
            &status,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keptn_and_external_metrics_read_the_cluster() {
    let (mut env, user) = Env::as_service_account("keptn-and-external-metrics-read-the-cluster").await;
    env.cluster.install_crds(&keptn_crds()).await.unwrap();
    let (standin, analyses) = keptn_standin(env.objects.clone(), env.ns.clone());
    let ns = env.ns.clone();
    env.create(json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "KeptnMetric",
        "metadata": {"name": "podinfo-errors"},
        "spec": {"provider": {"name": "prometheus"}, "query": "sum(rate(errors[1m]))", "fetchIntervalSeconds": 5}}))
        .await;
    set_keptn_errors(&env, json!({"value": "0.5", "rawValue": "MC41"})).await;
    for (name, query) in [
        ("keptn-errors", format!("keptnmetric/{ns}/podinfo-errors")),
        // Flagger lower-cases the whole query (keptn.go:207-216): the argument value too.
        (
            "keptn-slo",
            format!("Analysis/{ns}/podinfo-slo/2m/workload=podinfo;verdict=PASS"),
        ),
    ] {
        env.create(
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name}, "spec": {"provider": {"type": "keptn"}, "query": query}}),
        )
        .await;
    }
    env.create(json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "queue"}, "spec": {"provider": {"type": "externalmetrics"}, "query": "jobs/queue_depth"}}))
        .await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create_yaml(&canary(
        "kubernetes",
        r#"
  service: {port: 9898}
  analysis:
    interval: 1s
    threshold: 1
    iterations: 2
    metrics:
    - name: errors
      templateRef: {name: keptn-errors}
      thresholdRange: {max: 1}
    - name: slo
      templateRef: {name: keptn-slo}
      thresholdRange: {min: 1}
"#,
    ))
    .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.wait_event("podinfo", "all the metrics providers are available!")
        .await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    // The Analyses Flagger creates (keptn.go:121-140), deleted after each query (:156-169).
    let seen = analyses.lock().clone();
    assert!(!seen.is_empty());
    let a = &seen[0];
    assert!(
        a["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("podinfo-slo-"),
        "{a}"
    );
    assert_eq!(
        a["metadata"]["name"].as_str().unwrap().len(),
        "podinfo-slo-".len() + 6
    );
    assert_eq!(a["spec"]["analysisDefinition"], json!({"name": "podinfo-slo"}));
    assert_eq!(a["spec"]["timeframe"], json!({"recent": "2m"}));
    assert_eq!(
        a["spec"]["args"],
        json!({"workload": "podinfo", "verdict": "pass"})
    );
    let left = env
        .objects
        .list("metrics.keptn.sh/v1beta1", "Analysis", Some(&ns))
        .await
        .unwrap();
    assert!(
        left.iter()
            .all(|a| a["metadata"]["deletionTimestamp"].is_string())
            || left.is_empty(),
        "{left:#?}"
    );

    // The KeptnMetric's value goes above the threshold: the next revision rolls back.
    set_keptn_errors(&env, json!({"value": "3.25"})).await;
    env.set_image("podinfo", "podinfo:6.0.2").await;
    env.wait_phase("podinfo", "Failed", LIMIT).await;
    assert!(
        env.has_event("podinfo", "Halt podinfo.test advancement errors 3.25 > 1")
            .await,
        "{:#?}",
        env.event_messages("podinfo").await
    );

    // externalmetrics without an address asks the agent's API server, which serves no external
    // metrics API here (no APIService registered): its plain 404, in the initialization check.
    env.create(deployment("probe", "podinfo:6.0.0")).await;
    env.create_yaml(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: probe, namespace: test}
spec:
  provider: kubernetes
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: probe}
  service: {port: 9898}
  analysis:
    interval: 1s
    threshold: 1
    iterations: 1
    metrics:
    - name: queue
      templateRef: {name: queue}
      thresholdRange: {max: 10}
"#,
    )
    .await;
    env.wait_event(
        "probe",
        "Error checking metric providers: externalmetrics in metric template queue.test is not available: external metrics service unavailable: 404 page not found",
    )
    .await;
    standin.abort();
    assert_eq!(
        env.forbidden(&user),
        Vec::<String>::new(),
        "the committed RBAC rules suffice"
    );
    env.stop_agent().await;
}
