//! `flagger.app/v1beta1` MetricTemplate: a provider plus a query template.

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Metric providers Flagger's CRD accepts.
pub const METRIC_PROVIDER_TYPES: &[&str] = &[
    "prometheus",
    "influxdb",
    "datadog",
    "externalmetrics",
    "stackdriver",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "keptn",
    "splunk",
];

/// MetricTemplate is the Schema for the MetricTemplates API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "MetricTemplate",
    plural = "metrictemplates",
    namespaced,
    status = "MetricTemplateStatus",
    category = "all",
    doc = "MetricTemplate is the Schema for the MetricTemplates API.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider.type"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "MetricTemplateSpec defines the desired state of a MetricTemplate.")]
pub struct MetricTemplateSpec {
    /// Provider of this metric template.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub provider: Option<MetricProvider>,
    /// Query of this metric template (a template with `{{ namespace }}`, `{{ target }}`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub query: Option<String>,
}

/// Where and how to run the query.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Type of this provider.
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    #[schemars(required, extend("enum" = METRIC_PROVIDER_TYPES))]
    pub type_: Option<String>,
    /// API address of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Headers to add to HTTP(S) requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// Secret reference containing the provider credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Region of the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Disable SSL certificate validation for the provider address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A Secret in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Kubernetes secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
}

/// Status of a MetricTemplate: Flagger declares the subresource but never writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MetricTemplateStatus {}

impl MetricTemplate {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        crate::object_key(self)
    }

    /// The provider type (`prometheus` when unset, as Flagger falls back).
    pub fn provider_type(&self) -> &str {
        self.spec
            .provider
            .as_ref()
            .and_then(|p| p.type_.as_deref())
            .unwrap_or("prometheus")
    }
}
