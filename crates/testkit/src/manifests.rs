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

    /// [`LocalCanary::sample_app`] whose sample app answers half of the requests with 500 in
    /// version `faulty` (so one revision can fail in one cluster only), threshold 2, metrics
    /// over 3 s.
    pub fn faulty_sample_app(bin: &str, port: u16, faulty: &str) -> Self {
        let sample_app = format!(
            r#"if [ "$FAULTY_VERSION" = "{{{{version}}}}" ]; then e=0.5; else e=0; fi; exec {bin} sample-app --port {{{{port}}}} --version {{{{version}}}} --error-rate $e"#
        );
        Self {
            command: vec!["sh".into(), "-c".into(), sample_app],
            env: [("FAULTY_VERSION".to_string(), faulty.to_string())].into(),
            threshold: 2,
            metric_interval: "3s".into(),
            ..Self::sample_app(bin, port, "6.0.0")
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

/// One resource `test/NAME` of `kind` with `spec`, as YAML (no annotations).
pub fn resource(name: &str, api_version: &str, kind: &str, spec: Value) -> String {
    document(name, api_version, kind, spec, &BTreeMap::new())
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

/// A FleetRollout `podinfo-6-0-1` of the Canary `test/podinfo` to `image` (container
/// `podinfod`), one wave per region in `regions`, as the YAML an operator writes.
pub fn fleet_rollout(image: &str, regions: &[&str]) -> String {
    format!(
        "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {{name: podinfo-6-0-1}}
spec:
  canary: {{namespace: test, name: podinfo}}
  revision: {{containerImages: {{podinfod: '{image}'}}}}
  byRegion: [{}]
",
        regions.join(", ")
    )
}

/// A FleetRollout of the Canary `test/podinfo` to `version` (`podinfo-6-0-1` for `6.0.1`);
/// `spec` holds the rest of the spec as YAML lines indented by two spaces.
pub fn version_rollout(version: &str, spec: &str) -> String {
    let name = version.replace('.', "-");
    format!(
        "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {{name: podinfo-{name}}}
spec:
  canary: {{namespace: test, name: podinfo}}
  revision: {{version: {version}}}
{}",
        spec.trim_start_matches('\n')
    )
}
