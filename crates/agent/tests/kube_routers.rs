//! The agent (in-process) drives a Deployment canary on every traffic provider against the real
//! kube-apiserver with the providers' CRDs (see crates/kube/tests/routers.rs for where each CRD
//! comes from): initialization at 100/0, a healthy revision stepped to promotion, a failing one
//! rolled back by the built-in success rate (Flagger's query for that provider, answered by the
//! scripted Prometheus), and `revertOnDeletion`. The split is read back from the routing objects
//! the agent wrote, through the same router. nginx also runs an A/B test (header match) and
//! skipper a blue/green one. The field-by-field comparisons with Flagger are in the router tests.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use aviary_api::Canary;
use aviary_core::ports::Routes;
use aviary_testkit::kube_env::canary;
use kube_common::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// What a provider needs besides the canary.
struct Provider {
    name: &'static str,
    /// Extra `spec` lines of the Canary (two-space indented).
    spec: &'static str,
    /// Objects the user owns (an Ingress, an ApisixRoute).
    objects: fn() -> Vec<Value>,
}

fn ingress() -> Vec<Value> {
    vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "podinfo"},
        "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}),
    ]
}

fn none() -> Vec<Value> {
    Vec::new()
}

impl Env {
    /// The split the canary's router reads from the objects in the API server.
    async fn routes(&self, name: &str) -> Routes {
        let c: Canary = serde_json::from_value(self.canary(name).await).unwrap();
        let kube = aviary_kube::Kube::new(self.cluster.client().await.unwrap());
        aviary_kube::KubePlatform::new(kube, Default::default())
            .router(&c)
            .get_routes(&c)
            .await
            .unwrap()
    }

    async fn wait_routes(&self, name: &str, want: Routes) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let got = self.routes(name).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "routes {got:?}, want {want:?}; events:\n{}",
                self.event_messages(name).await.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn canary_yaml(provider: &Provider, analysis: &str) -> String {
    let spec = format!(
        r#"
  progressDeadlineSeconds: 120
  revertOnDeletion: true
{}  service: {{port: 9898, meshName: global}}
  analysis:
{analysis}
{SUCCESS_RATE_METRIC}"#,
        provider.spec
    );
    canary(provider.name, &spec)
}

async fn start(provider: &Provider, analysis: &str) -> Env {
    let env = Env::start(&format!("agent-{}", provider.name.replace(':', "-"))).await;
    env.cluster
        .install_provider_crds()
        .await
        .expect("the providers' CRDs install");
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    for o in (provider.objects)() {
        env.create(o).await;
    }
    env.create_yaml(&canary_yaml(provider, analysis)).await;
    env
}

/// Promotion, rollback and revert on deletion with `provider`'s router.
async fn promote_roll_back_and_revert(provider: Provider) {
    let mut env = start(
        &provider,
        "    interval: 1s\n    threshold: 2\n    maxWeight: 20\n    stepWeight: 10",
    )
    .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    assert_eq!(env.routes("podinfo").await, Routes::split(100, 0));

    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    env.assert_advanced("podinfo", &[10, 20]).await;
    env.wait_routes("podinfo", Routes::split(100, 0)).await;
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    // The built-in success rate went to Prometheus as Flagger's query for this provider.
    assert!(!env.prom.queries().is_empty());

    // A failing revision: the built-in success rate rolls it back.
    env.prom.set_default(Some(42.0));
    env.set_image("podinfo", "podinfo:6.0.2").await;
    env.wait_phase("podinfo", "Failed", LIMIT).await;
    assert!(
        env.has_event(
            "podinfo",
            "Halt podinfo.test advancement success rate 42.00% < 99%"
        )
        .await
    );
    env.wait_routes("podinfo", Routes::split(100, 0)).await;
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");

    // Revert on deletion: the target serves again (the Services and routing objects aviary
    // created go with the canary, through their owner references).
    env.objects
        .delete(CANARY_API, "Canary", Some(&env.ns), "podinfo")
        .await
        .unwrap();
    if let Err(e) = env
        .objects
        .wait_gone(CANARY_API, "Canary", Some(&env.ns), "podinfo", LIMIT)
        .await
    {
        panic!("{e}\n{}", env.event_messages("podinfo").await.join("\n"));
    }
    assert_eq!(env.replicas("podinfo").await, 2);
    env.wait_event("podinfo", "Normal: Terminated canary podinfo.test")
        .await;
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx() {
    promote_roll_back_and_revert(Provider {
        name: "nginx",
        spec: "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}\n",
        objects: ingress,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipper() {
    promote_roll_back_and_revert(Provider {
        name: "skipper",
        spec: "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}\n",
        objects: ingress,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd() {
    promote_roll_back_and_revert(Provider {
        name: "linkerd",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osm() {
    promote_roll_back_and_revert(Provider {
        name: "osm",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_v1alpha3() {
    promote_roll_back_and_revert(Provider {
        name: "smi:v1alpha3",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contour() {
    promote_roll_back_and_revert(Provider {
        name: "contour",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gloo() {
    promote_roll_back_and_revert(Provider {
        name: "gloo",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik() {
    promote_roll_back_and_revert(Provider {
        name: "traefik",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appmesh() {
    promote_roll_back_and_revert(Provider {
        name: "appmesh",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appmesh_v1beta2() {
    promote_roll_back_and_revert(Provider {
        name: "appmesh:v1beta2",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuma() {
    promote_roll_back_and_revert(Provider {
        name: "kuma",
        spec: "",
        objects: none,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apisix() {
    promote_roll_back_and_revert(Provider {
        name: "apisix",
        spec: "  routeRef: {apiVersion: apisix.apache.org/v2, kind: ApisixRoute, name: podinfo}\n",
        objects: || {
            vec![json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "metadata": {"name": "podinfo"},
                "spec": {"http": [{"name": "main", "match": {"paths": ["/*"]}, "backends": [{"serviceName": "podinfo", "servicePort": 9898}]}]}})]
        },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ab_testing_routes_by_header_then_promotes() {
    let provider = Provider {
        name: "nginx",
        spec: "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}\n",
        objects: ingress,
    };
    let mut env = start(
        &provider,
        "    interval: 1s\n    threshold: 2\n    iterations: 3\n    match:\n    - headers:\n        x-canary: {exact: insider}",
    )
    .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    // During the analysis the canary Ingress routes requests with the header.
    let annotations = env
        .wait_canary_ingress(|a| a["nginx.ingress.kubernetes.io/canary-by-header"] == "x-canary")
        .await;
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "insider"
    );
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let iterations = (1..=3).map(|i| format!("Advance podinfo.test canary iteration {i}/3"));
    env.assert_events("podinfo", iterations).await;
    // Promoted: the header annotations are gone, weight 0.
    let annotations = env
        .wait_canary_ingress(|a| a.get("nginx.ingress.kubernetes.io/canary-by-header").is_none())
        .await;
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary-weight"], "0");
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipper_blue_green_switches_then_promotes() {
    let provider = Provider {
        name: "skipper",
        spec: "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}\n",
        objects: ingress,
    };
    let mut env = start(&provider, "    interval: 1s\n    threshold: 2\n    iterations: 2").await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    assert!(
        env.has_event("podinfo", "Routing all traffic to canary").await,
        "{:#?}",
        env.event_messages("podinfo").await
    );
    env.wait_routes("podinfo", Routes::split(100, 0)).await;
    env.stop_agent().await;
}
