//! Shared helpers: the test binary's real control plane (with Flagger's CRDs), a namespace per
//! test, and objects to put in it.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aviary_api::Canary;
use aviary_kube::Kube;
use aviary_testkit::{Cluster, Objects};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(30);

/// One test's view of the shared cluster: its namespace, an admin client and the objects.
pub struct Env {
    pub cluster: &'static Cluster,
    pub ns: String,
    pub kube: Kube,
    pub objects: Objects,
}

/// The shared control plane with the flagger.app CRDs, and namespace `name` for this test.
pub async fn start(name: &str) -> Env {
    let cluster = Cluster::shared().await;
    cluster
        .install_crds(&flagger_crds())
        .await
        .expect("Flagger's CRDs install");
    let ns = cluster.namespace(name).await.expect("a test namespace");
    let client = cluster.client().await.expect("an admin client");
    Env {
        cluster,
        ns,
        kube: Kube::new(client.clone()),
        objects: Objects::new(client),
    }
}

pub fn flagger_crds() -> Vec<Value> {
    aviary_api::crd::flagger_crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

impl Env {
    /// `text` with `namespace: test` pointing at this test's namespace.
    pub fn yaml(&self, text: &str) -> Value {
        let text = text.replace("namespace: test", &format!("namespace: {}", self.ns));
        serde_yaml_ng::from_str(&text).unwrap()
    }

    /// `text` with `.test` (Flagger's `name.namespace`) naming this test's namespace.
    pub fn msg(&self, text: &str) -> String {
        text.replace(".test", &format!(".{}", self.ns))
    }

    /// Creates a Canary (from YAML) and returns it as the API server stored it.
    pub async fn canary(&self, yaml: &str) -> Canary {
        let stored = self.objects.create(self.yaml(yaml)).await.unwrap();
        serde_json::from_value(stored).unwrap()
    }

    /// Re-reads a Canary.
    pub async fn reload(&self, c: &Canary) -> Canary {
        let v = self.get("flagger.app/v1beta1", "Canary", c.name()).await.unwrap();
        serde_json::from_value(v).unwrap()
    }

    /// Creates an object; `metadata.namespace` is set to this test's namespace.
    pub async fn create(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(self.ns);
        self.objects.create(obj).await.unwrap()
    }

    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.objects
            .get(api_version, kind, Some(&self.ns), name)
            .await
            .unwrap()
    }

    pub async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.objects
            .list(api_version, kind, Some(&self.ns))
            .await
            .unwrap()
    }

    pub async fn merge_patch(&self, api_version: &str, kind: &str, name: &str, patch: &Value) -> Value {
        self.objects
            .merge_patch(api_version, kind, Some(&self.ns), name, patch)
            .await
            .unwrap()
    }

    /// Waits until `pred` holds for the object.
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.objects
            .wait_for(api_version, kind, Some(&self.ns), name, WAIT, pred)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
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
