use aviary_testkit::Cluster;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let t = std::time::Instant::now();
    let cluster = Cluster::shared().await;
    eprintln!("started in {:?}", t.elapsed());
    let ns = cluster.namespace("smoke").await.unwrap();
    eprintln!("ns in {:?}", t.elapsed());
    let o = cluster.objects().await.unwrap();
    o.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "p", "namespace": ns},
      "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "p"}}, "template": {"metadata": {"labels": {"app": "p"}},
      "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})).await.unwrap();
    let d = o
        .wait_for(
            "apps/v1",
            "Deployment",
            Some(&ns),
            "p",
            Duration::from_secs(60),
            |d| d["status"]["availableReplicas"] == 2,
        )
        .await
        .unwrap();
    eprintln!("deployment ready in {:?}: {}", t.elapsed(), d["status"]);
    o.create(json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "k", "namespace": ns},
      "spec": {"template": {"spec": {"containers": [{"image": "x:1"}]}}}})).await.unwrap();
    let k = o
        .wait_for(
            "serving.knative.dev/v1",
            "Service",
            Some(&ns),
            "k",
            Duration::from_secs(60),
            |s| s["status"]["latestReadyRevisionName"] == "k-00001",
        )
        .await
        .unwrap();
    eprintln!("ksvc {}", k["status"]);
    o.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": ns},
      "spec": {"parentRefs": [{"name": "gw", "namespace": "gateways"}]}})).await.unwrap();
    let r = o
        .wait_for(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some(&ns),
            "r",
            Duration::from_secs(60),
            |s| !s["status"]["parents"].is_null(),
        )
        .await
        .unwrap();
    eprintln!("route {}", r);
}
