//! Manifests the system tests write for local agents, built as data (the YAML is generated).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A LocalService `test/NAME` (`podinfo` by default) and its Canary: analysis every second on the built-in
/// request success rate (≥ 99%) and, when `duration_check`, request duration (≤ 500 ms).
#[derive(Debug, Clone)]
pub struct LocalCanary {
    /// The name of the LocalService and of the Canary (namespace `test`).
    pub name: String,
    pub port: u16,
    pub version: String,
    pub replicas: u32,
    /// The command; the agent fills in `{{port}}` and `{{version}}`.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub progress_deadline_seconds: Option<u32>,
    pub threshold: u32,
    pub max_weight: u32,
    pub step_weight: u32,
    /// The metrics' interval, e.g. `3s`.
    pub metric_interval: String,
    pub duration_check: bool,
    /// The analysis interval (`1s` by default).
    pub interval: String,
    /// Annotations of the Canary (the statistical judge's settings).
    pub annotations: BTreeMap<String, String>,
    /// More entries of `analysis.metrics` (e.g. a `templateRef` metric).
    pub extra_metrics: Vec<Value>,
    /// `analysis.webhooks`.
    pub webhooks: Vec<Value>,
}

impl LocalCanary {
    /// `aviary sample-app` (the binary at `bin`) on `port`: one replica, threshold 5, steps of
    /// 25% up to 50%, metrics over 5 s.
    pub fn sample_app(bin: &str, port: u16, version: &str) -> Self {
        Self {
            name: "podinfo".into(),
            port,
            version: version.into(),
            replicas: 1,
            command: [
                bin,
                "sample-app",
                "--port",
                "{{port}}",
                "--version",
                "{{version}}",
            ]
            .map(String::from)
            .to_vec(),
            env: BTreeMap::new(),
            progress_deadline_seconds: None,
            threshold: 5,
            max_weight: 50,
            step_weight: 25,
            metric_interval: "5s".into(),
            duration_check: true,
            interval: "1s".into(),
            annotations: BTreeMap::new(),
            extra_metrics: Vec::new(),
            webhooks: Vec::new(),
        }
    }

    /// The two documents as YAML.
    pub fn yaml(&self) -> String {
        let mut service = json!({
            "port": self.port,
            "version": self.version,
            "replicas": self.replicas,
            "command": self.command,
            "readinessPath": "/readyz",
        });
        if !self.env.is_empty() {
            service["env"] = json!(self.env);
        }
        let mut metrics = vec![json!({
            "name": "request-success-rate",
            "thresholdRange": {"min": 99},
            "interval": self.metric_interval,
        })];
        if self.duration_check {
            metrics.push(json!({
                "name": "request-duration",
                "thresholdRange": {"max": 500},
                "interval": self.metric_interval,
            }));
        }
        metrics.extend(self.extra_metrics.iter().cloned());
        let mut canary = json!({
            "provider": "local",
            "targetRef": {"apiVersion": "aviary.dev/v1alpha1", "kind": "LocalService", "name": self.name},
            "analysis": {
                "interval": self.interval,
                "threshold": self.threshold,
                "maxWeight": self.max_weight,
                "stepWeight": self.step_weight,
                "metrics": metrics,
            },
        });
        if !self.webhooks.is_empty() {
            canary["analysis"]["webhooks"] = json!(self.webhooks);
        }
        if let Some(d) = self.progress_deadline_seconds {
            canary["progressDeadlineSeconds"] = json!(d);
        }
        [
            document(
                &self.name,
                "aviary.dev/v1alpha1",
                "LocalService",
                service,
                &BTreeMap::new(),
            ),
            document(
                &self.name,
                "flagger.app/v1beta1",
                "Canary",
                canary,
                &self.annotations,
            ),
        ]
        .join("---\n")
    }
}

fn document(
    name: &str,
    api_version: &str,
    kind: &str,
    spec: Value,
    annotations: &BTreeMap<String, String>,
) -> String {
    let mut metadata = json!({"name": name, "namespace": "test"});
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    let doc = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    });
    serde_yaml_ng::to_string(&doc).expect("JSON values are YAML")
}
