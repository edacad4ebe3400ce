//! What the Kubernetes tests of several crates (kube, agent, cli) share: a test's namespace on
//! the shared cluster with its objects, Flagger Canaries as YAML in namespace `test` (pointed at
//! the test's namespace by [`TestNamespace::yaml`]), CRDs as JSON to install, and the analysis
//! doubles a canary calls.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{Cluster, FakePrometheus, FakeWebhook, Objects};

/// How long [`TestNamespace::wait_for`] waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// One test's namespace and the objects in it. A test's helper: every call panics with the
/// API server's answer when it fails.
pub struct TestNamespace {
    pub ns: String,
    pub objects: Objects,
}

impl TestNamespace {
    /// A fresh namespace `prefix-…` on `cluster`, with an admin client.
    pub async fn new(cluster: &Cluster, prefix: &str) -> Self {
        let ns = cluster.namespace(prefix).await.expect("a test namespace");
        let objects = cluster.objects().await.expect("an admin client");
        Self { ns, objects }
    }

    /// `text` (YAML) with `namespace: test` pointing at this namespace.
    pub fn yaml(&self, text: &str) -> Value {
        serde_yaml_ng::from_str(&in_namespace(text, &self.ns)).expect("the test's YAML parses")
    }

    /// `text` with `.test` (Flagger's `name.namespace`) naming this namespace.
    pub fn msg(&self, text: &str) -> String {
        message_in(text, &self.ns)
    }

    /// Creates an object in this namespace; returns it as the API server stored it.
    pub async fn create(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(self.ns);
        self.objects.create(obj).await.unwrap()
    }

    /// Creates an object from YAML with `namespace: test`.
    pub async fn create_yaml(&self, yaml: &str) -> Value {
        self.create(self.yaml(yaml)).await
    }

    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.objects
            .get(api_version, kind, Some(&self.ns), name)
            .await
            .unwrap()
    }

    /// The object, which must exist.
    pub async fn obj(&self, api_version: &str, kind: &str, name: &str) -> Value {
        self.get(api_version, kind, name)
            .await
            .unwrap_or_else(|| panic!("{kind} {name} exists in {}", self.ns))
    }

    /// Read-modify-write of the object (retried on conflicts); returns it as stored.
    pub async fn update(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        change: impl FnMut(&mut Value),
    ) -> Value {
        self.objects
            .update(api_version, kind, Some(&self.ns), name, change)
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

    /// Waits (up to [`WAIT`]) until `pred` holds for the object.
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

/// The target of most test canaries.
pub const PODINFO_DEPLOYMENT: &str = "{apiVersion: apps/v1, kind: Deployment, name: podinfo}";

/// A Canary `test/podinfo` routed by `provider` for Deployment `podinfo`; `spec` is the rest of
/// its spec (YAML lines indented by two spaces).
pub fn canary(provider: &str, spec: &str) -> String {
    canary_of(PODINFO_DEPLOYMENT, provider, spec)
}

/// A Canary `test/podinfo` routed by `provider` for `target` (a YAML flow mapping).
pub fn canary_of(target: &str, provider: &str, spec: &str) -> String {
    let spec = spec.trim_start_matches('\n');
    format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\n\
         spec:\n  provider: {provider}\n  targetRef: {target}\n{spec}"
    )
}

/// `text` (YAML) with `namespace: test` naming namespace `ns`.
pub fn in_namespace(text: &str, ns: &str) -> String {
    text.replace("namespace: test", &format!("namespace: {ns}"))
}

/// `text` with `.test` (Flagger's `name.namespace` in messages and hosts) naming namespace `ns`.
pub fn message_in(text: &str, ns: &str) -> String {
    text.replace(".test", &format!(".{ns}"))
}

/// A Deployment `name` (pods labelled `app: name`) of `replicas` pods, each one container
/// `container` running `image` on port 9898 (podinfo's): the workload the tests roll out.
pub fn deployment(name: &str, replicas: u32, container: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": container, "image": image, "ports": [{"containerPort": 9898}]}]},
            },
        },
    })
}

/// Typed objects (CRDs from `aviary_api::crd`) as the JSON that [`Cluster::install_crds`]
/// takes.
pub fn to_values<T: Serialize>(objects: impl IntoIterator<Item = T>) -> Vec<Value> {
    objects
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("a CRD serializes"))
        .collect()
}

/// What a canary's analysis calls: a scripted Prometheus answering 100 to every query (a
/// healthy success rate) and a webhook receiver.
pub async fn analysis_doubles() -> (FakePrometheus, FakeWebhook) {
    let prom = FakePrometheus::start()
        .await
        .expect("the scripted Prometheus starts");
    prom.set_default(Some(100.0));
    let hooks = FakeWebhook::start().await.expect("the webhook receiver starts");
    (prom, hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_is_the_shared_header_and_the_rest_of_its_spec() {
        let yaml = canary("nginx", "\n  service: {port: 80}\n");
        let v: Value = serde_yaml_ng::from_str(&in_namespace(&yaml, "ns-1")).unwrap();
        assert_eq!(v["apiVersion"], "flagger.app/v1beta1");
        assert_eq!(v["kind"], "Canary");
        assert_eq!(v["metadata"], json!({"name": "podinfo", "namespace": "ns-1"}));
        assert_eq!(
            v["spec"],
            json!({
                "provider": "nginx",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 80},
            })
        );
        let v: Value =
            serde_yaml_ng::from_str(&canary_of("{kind: Service, name: web}", "knative", "")).unwrap();
        assert_eq!(v["spec"]["targetRef"], json!({"kind": "Service", "name": "web"}));
        assert_eq!(
            message_in("podinfo.test promoted", "ns-1"),
            "podinfo.ns-1 promoted"
        );
    }
}
