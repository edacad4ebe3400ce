//! The test cluster itself: the real controllers with the stand-ins (pods become ready, Knative
//! revisions and traffic, gateway status), identities and RBAC, the fault proxy, and control
//! planes side by side (kill/restart, extra CRDs) as later test suites need them.

use std::time::Duration;

use aviary_testkit::{Cluster, FaultProxy, Matcher, NEVER_READY_ANNOTATION, Objects};
use futures::StreamExt as _;
use http::Method;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn deployment(ns: &str, name: &str, never_ready: bool) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}}},
    });
    if never_ready {
        d["spec"]["template"]["metadata"]["annotations"] = json!({NEVER_READY_ANNOTATION: "true"});
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_become_ready_unless_annotated_and_services_get_endpoints() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("kubelet").await.unwrap();
    let o = cluster.objects().await.unwrap();
    o.create(deployment(&ns, "ready", false)).await.unwrap();
    o.create(deployment(&ns, "never", true)).await.unwrap();
    o.create(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ready", "namespace": ns},
        "spec": {"selector": {"app": "ready"}, "ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    let d = o
        .wait_for("apps/v1", "Deployment", Some(&ns), "ready", WAIT, |d| {
            d["status"]["availableReplicas"] == 2
        })
        .await
        .unwrap();
    assert_eq!(d["status"]["readyReplicas"], 2);
    let pods = o.list("v1", "Pod", Some(&ns)).await.unwrap();
    let ready: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "ready")
        .collect();
    assert_eq!(ready.len(), 2);
    for p in &ready {
        assert_eq!(p["status"]["phase"], "Running");
        assert!(p["status"]["podIP"].as_str().unwrap().starts_with("10.244."));
    }
    // The real endpoint controller lists the ready pods' IPs.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let slices = o
            .list("discovery.k8s.io/v1", "EndpointSlice", Some(&ns))
            .await
            .unwrap();
        let ready = slices
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "ready")
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if ready == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{slices:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Never-ready pods stay Pending: the Deployment reports them unavailable.
    let never = o
        .get("apps/v1", "Deployment", Some(&ns), "never")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(never["status"]["availableReplicas"], 2, "{}", never["status"]);
    let pending = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "never")
        .all(|p| p["status"]["phase"] == "Pending");
    assert!(pending);
}

/// The real DaemonSet controller runs one pod on the Node; a node selector the Node does not
/// match (Flagger's scale-to-zero of a DaemonSet) empties it, and removing it brings the pod back;
/// a Deployment pod whose selector matches no node stays Pending, as with the real scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_run_a_pod_on_each_node_they_select() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("daemonset").await.unwrap();
    let o = cluster.objects().await.unwrap();
    o.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                       "containers": [{"name": "app", "image": "agent:1"}]}}},
    }))
    .await
    .unwrap();
    let ds = o
        .wait_for("apps/v1", "DaemonSet", Some(&ns), "agent", WAIT, |d| {
            d["status"]["numberAvailable"] == 1 && d["status"]["updatedNumberScheduled"] == 1
        })
        .await
        .unwrap();
    assert_eq!(ds["status"]["desiredNumberScheduled"], 1);
    let pods = o.list("v1", "Pod", Some(&ns)).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["spec"]["nodeName"], "aviary-test-node");
    assert_eq!(pods[0]["status"]["phase"], "Running");

    o.merge_patch(
        "apps/v1",
        "DaemonSet",
        Some(&ns),
        "agent",
        &json!({"spec": {"template": {"spec": {"nodeSelector": {"flagger.app/scale-to-zero": "true"}}}}}),
    )
    .await
    .unwrap();
    o.wait_for("apps/v1", "DaemonSet", Some(&ns), "agent", WAIT, |d| {
        d["status"]["desiredNumberScheduled"] == 0 && d["status"]["currentNumberScheduled"] == 0
    })
    .await
    .unwrap();
    o.merge_patch(
        "apps/v1",
        "DaemonSet",
        Some(&ns),
        "agent",
        &json!({"spec": {"template": {"spec": {"nodeSelector": {"flagger.app/scale-to-zero": null}}}}}),
    )
    .await
    .unwrap();
    o.wait_for("apps/v1", "DaemonSet", Some(&ns), "agent", WAIT, |d| {
        d["status"]["numberAvailable"] == 1 && d["status"]["desiredNumberScheduled"] == 1
    })
    .await
    .unwrap();

    let mut d = deployment(&ns, "nowhere", false);
    d["spec"]["replicas"] = json!(1);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    o.create(d).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pods = o.list("v1", "Pod", Some(&ns)).await.unwrap();
        let pod = pods.iter().find(|p| p["metadata"]["labels"]["app"] == "nowhere");
        if let Some(p) = pod
            && p["status"]["conditions"][0]["reason"] == "Unschedulable"
        {
            assert_eq!(p["status"]["phase"], "Pending");
            assert!(p["spec"]["nodeName"].is_null(), "{p}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pods:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knative_revisions_and_gateway_status_follow_their_specs() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("standins").await.unwrap();
    let o = cluster.objects().await.unwrap();
    o.create(json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"template": {"spec": {"containers": [{"image": "web:1"}]}}}}))
        .await
        .unwrap();
    o.wait_for("serving.knative.dev/v1", "Service", Some(&ns), "web", WAIT, |s| {
        s["status"]["latestReadyRevisionName"] == "web-00001"
    })
    .await
    .unwrap();
    o.update("serving.knative.dev/v1", "Service", Some(&ns), "web", |s| {
        s["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        s["spec"]["traffic"] =
            json!([{"revisionName": "web-00001", "percent": 70}, {"latestRevision": true, "percent": 30}]);
    })
    .await
    .unwrap();
    let s = o
        .wait_for("serving.knative.dev/v1", "Service", Some(&ns), "web", WAIT, |s| {
            s["status"]["observedGeneration"] == 2 && s["status"]["latestReadyRevisionName"] == "web-00002"
        })
        .await
        .unwrap();
    assert_eq!(
        s["status"]["traffic"],
        json!([{"revisionName": "web-00001", "latestRevision": false, "percent": 70},
               {"revisionName": "web-00002", "latestRevision": true, "percent": 30}])
    );
    let rev = o
        .get("serving.knative.dev/v1", "Revision", Some(&ns), "web-00002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rev["metadata"]["ownerReferences"][0]["name"], "web");
    assert_eq!(rev["spec"]["containers"][0]["image"], "web:2");

    // The gateway stand-in accepts routes, except in a paused namespace.
    cluster.standins().pause_gateway(&ns);
    o.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": ns},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "gateways"}]}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = o
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(&ns), "r")
        .await
        .unwrap()
        .unwrap();
    assert!(
        r["status"]["parents"].as_array().is_none_or(|p| p.is_empty()),
        "{r}"
    );
    cluster.standins().resume_gateway(&ns);
    let r = o
        .wait_for(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some(&ns),
            "r",
            WAIT,
            |r| r["status"]["parents"][0]["conditions"][0]["status"] == "True",
        )
        .await
        .unwrap();
    assert_eq!(
        r["status"]["parents"][0]["controllerName"],
        aviary_testkit::GATEWAY_CONTROLLER_NAME
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_are_subject_to_rbac_and_audited() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("identity").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.kubeconfig");
    cluster
        .service_account_kubeconfig(&ns, "reader", &path)
        .await
        .unwrap();
    let client = aviary_testkit::control_plane::kubeconfig::client(&path)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let denied = cms.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&denied, kube::Error::Api(s) if s.code == 403),
        "{denied}"
    );

    let admin = cluster.objects().await.unwrap();
    admin
        .create(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "read-configmaps", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
        )
        .await
        .unwrap();
    admin
        .create(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while cms.list(&ListParams::default()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binding never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = format!("system:serviceaccount:{ns}:reader");
    let audit = cluster.control_plane().audit_events(&user);
    assert!(
        audit
            .iter()
            .any(|e| e["verb"] == "list" && e["responseStatus"]["code"] == 403),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["verb"] == "list" && e["responseStatus"]["code"] == 200),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_proxy_fails_delays_and_cuts_watches() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("proxy").await.unwrap();
    let proxy = FaultProxy::start(cluster.client().await.unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.kubeconfig");
    proxy.write_kubeconfig(&path, &ns).unwrap();
    let client = aviary_testkit::control_plane::kubeconfig::client(&path)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).unwrap();

    proxy.fail(Matcher::method(Method::POST, "/configmaps"), 500, 1);
    let e = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 500), "{e}");
    cms.create(&PostParams::default(), &cm).await.unwrap();

    proxy.delay(Matcher::path("/configmaps/a"), Duration::from_millis(700), 1);
    let started = std::time::Instant::now();
    cms.get("a").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));

    let mut watch = std::pin::pin!(cms.watch(&kube::api::WatchParams::default(), "0").await.unwrap());
    let first = tokio::time::timeout(WAIT, watch.next()).await.unwrap();
    assert!(first.is_some());
    proxy.drop_watches();
    let end = tokio::time::timeout(WAIT, async {
        while let Some(ev) = watch.next().await {
            if ev.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the watch ended when the proxy cut it");
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.injected && s.status == 500));
    assert!(seen.iter().any(|s| !s.injected && s.status == 201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_planes_run_side_by_side_and_survive_an_apiserver_restart() {
    let (a, b) = tokio::join!(Cluster::start(), Cluster::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.control_plane().url(), b.control_plane().url());
    // An extra CRD on one cluster only (as a later suite installs its own kinds).
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]},
    });
    a.install_crds(&[crd]).await.unwrap();
    let ns = a.namespace("widgets").await.unwrap();
    let oa: Objects = a.objects().await.unwrap();
    oa.create(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": ns}, "spec": {"size": 3}}))
        .await
        .unwrap();
    let ob = b.objects().await.unwrap();
    assert!(ob.get("v1", "Namespace", None, &ns).await.unwrap().is_none());

    // Killed and restarted: same port, same storage.
    a.control_plane().kill_apiserver();
    assert!(oa.get("example.com/v1", "Widget", Some(&ns), "w").await.is_err());
    a.control_plane().start_apiserver().await.unwrap();
    let w = oa
        .wait_for("example.com/v1", "Widget", Some(&ns), "w", WAIT, |_| true)
        .await
        .unwrap();
    assert_eq!(w["spec"]["size"], 3);
    let version = a.client().await.unwrap().apiserver_version().await.unwrap();
    assert_eq!(
        version.git_version, "v1.37.2",
        "a semver version (Flagger checks it)"
    );
}
