//! Shared helpers: a fake API server with Flagger's CRDs, and objects to put in it.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aviary_api::Canary;
use aviary_kube::Kube;
use aviary_testkit::{FakeApiServer, Options, SimulatorConfig};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(10);

/// A fake API server (fast simulators) with the flagger.app CRDs, and a client.
pub async fn start() -> (FakeApiServer, Kube) {
    let options = Options {
        simulators: SimulatorConfig {
            delay: Duration::from_millis(30),
            ..SimulatorConfig::default()
        },
        ..Options::default()
    };
    let server = FakeApiServer::start_with(options)
        .await
        .expect("fake API server starts");
    for crd in aviary_api::crd::flagger_crds() {
        server.store().create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    let kube = Kube::new(server.client().unwrap());
    (server, kube)
}

/// Stores a Canary (from YAML) and returns it as the watcher would see it (uid included).
pub fn canary(server: &FakeApiServer, yaml: &str) -> Canary {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let stored = server.store().create(v).unwrap();
    serde_json::from_value(stored).unwrap()
}

/// Re-reads a Canary from the store.
pub fn reload(server: &FakeApiServer, c: &Canary) -> Canary {
    let v = server
        .store()
        .get("flagger.app/v1beta1", "Canary", Some(c.namespace()), c.name())
        .unwrap();
    serde_json::from_value(v).unwrap()
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

/// Waits until `pred` holds for the object.
pub async fn wait_for(
    server: &FakeApiServer,
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    server
        .store()
        .wait_for(api_version, kind, Some(ns), name, WAIT, pred)
        .await
        .unwrap()
}
