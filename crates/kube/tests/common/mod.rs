//! Shared helpers: the test binary's real control plane (with Flagger's CRDs), a namespace per
//! test, and objects to put in it.

#![allow(dead_code, unreachable_pub)]

use aviary_api::Canary;
use aviary_kube::Kube;
use aviary_testkit::Cluster;
use aviary_testkit::kube_env::{TestNamespace, to_values};
use serde_json::{Value, json};

/// One test's view of the shared cluster: its namespace and objects (through `Deref`), and a
/// [`Kube`] client.
pub struct Env {
    pub cluster: &'static Cluster,
    pub kube: Kube,
    namespace: TestNamespace,
}

impl std::ops::Deref for Env {
    type Target = TestNamespace;

    fn deref(&self) -> &TestNamespace {
        &self.namespace
    }
}

/// The shared control plane with the flagger.app CRDs, and namespace `name` for this test.
pub async fn start(name: &str) -> Env {
    let cluster = Cluster::shared().await;
    cluster
        .install_crds(&to_values(aviary_api::crd::flagger_crds()))
        .await
        .expect("Flagger's CRDs install");
    let namespace = TestNamespace::new(cluster, name).await;
    Env {
        cluster,
        kube: Kube::new(namespace.objects.client().clone()),
        namespace,
    }
}

impl Env {
    /// Creates a Canary (from YAML) and returns it as the API server stored it.
    pub async fn canary(&self, yaml: &str) -> Canary {
        serde_json::from_value(self.create_yaml(yaml).await).unwrap()
    }

    /// Re-reads a Canary.
    pub async fn reload(&self, c: &Canary) -> Canary {
        let v = self.get("flagger.app/v1beta1", "Canary", c.name()).await.unwrap();
        serde_json::from_value(v).unwrap()
    }
}

/// A podinfo Deployment.
pub fn deployment(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "team": "web"},
                     "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "x", "owner": "me"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "podinfo", "image": image,
                    "ports": [{"name": "http", "containerPort": 9898}],
                    "envFrom": [{"configMapRef": {"name": "podinfo-config"}}],
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "token"}}}],
                }],
                "volumes": [{"name": "scratch", "emptyDir": {}}]},
            },
        },
    })
}
