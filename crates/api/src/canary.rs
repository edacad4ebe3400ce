//! The `flagger.app/v1beta1` Canary: spec and analysis.
//!
//! Every field of Flagger's CRD is here, as an `Option` so that a manifest round-trips unchanged
//! (what the user did not write is not invented). Flagger's defaults are applied in one place,
//! [`crate::defaults`], and the rules the API server or Flagger's code enforce are checked in
//! [`crate::validate`]. The Istio/Gateway API shaped service settings live in [`crate::service`].

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::service::{CanaryService, HttpMatchRequest};
use crate::status::CanaryStatus;

/// A Go-style duration pattern, as Flagger's CRD writes it (it only anchors the start).
pub const DURATION_PATTERN: &str = "^[0-9]+(m|s)";

/// Traffic providers Flagger's CRD accepts for `spec.provider`.
pub const FLAGGER_PROVIDERS: &[&str] = &[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
];

/// The provider of aviary's embedded local platform (not a Kubernetes provider).
pub const LOCAL_PROVIDER: &str = "local";

/// Webhook types (`""` means `rollout`).
pub const WEBHOOK_TYPES: &[&str] = &[
    "",
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-promotion",
    "post-rollout",
    "event",
    "rollback",
    "confirm-traffic-increase",
];

/// Alert severities (`""` means `info` in aviary; see docs/compatibility.md).
pub const ALERT_SEVERITIES: &[&str] = &["", "info", "warn", "error"];

/// The two metrics every provider knows without a MetricTemplate.
pub const BUILTIN_SUCCESS_RATE: &str = "request-success-rate";
/// Built-in p99 request duration, in milliseconds.
pub const BUILTIN_DURATION: &str = "request-duration";

/// Canary is the Schema for the Canary API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    status = "CanaryStatus",
    category = "all",
    doc = "Canary is the Schema for the Canary API.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"string","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend","priority":1}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"string","jsonPath":".status.failedChecks","priority":1}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.analysis.interval","priority":1}"#,
    printcolumn = r#"{"name":"Mirror","type":"boolean","jsonPath":".spec.analysis.mirror","priority":1}"#,
    printcolumn = r#"{"name":"StepWeight","type":"string","jsonPath":".spec.analysis.stepWeight","priority":1}"#,
    printcolumn = r#"{"name":"StepWeights","type":"string","jsonPath":".spec.analysis.stepWeights","priority":1}"#,
    printcolumn = r#"{"name":"MaxWeight","type":"string","jsonPath":".spec.analysis.maxWeight","priority":1}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "CanarySpec defines the desired state of a Canary.")]
pub struct CanarySpec {
    /// Traffic management provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = FLAGGER_PROVIDERS))]
    pub provider: Option<String>,

    /// Prometheus URL for the built-in metrics and inline queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,

    /// Deployment progress deadline (seconds, default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i64>,

    /// Target selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub target_ref: Option<TargetRef>,

    /// Scaler selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<Box<AutoscalerRef>>,

    /// Ingress selector (NGINX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<Box<TypedRef>>,

    /// APISIX route selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<Box<TypedRef>>,

    /// Gloo Upstream selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<Box<UpstreamRef>>,

    /// Kubernetes Service spec.
    // Boxed: large, and absent for Knative and local canaries (one copy per canary actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<CanaryService>>,

    /// Skip analysis and promote canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,

    /// Revert mutated resources to original spec on deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,

    /// Suspend Canary disabling/pausing all canary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Canary analysis for this canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub analysis: Option<CanaryAnalysis>,
}

/// The workload under analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("enum" = ["DaemonSet", "Deployment", "Service"]))]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
}

/// A reference to an HPA or KEDA ScaledObject.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("enum" = ["HorizontalPodAutoscaler", "ScaledObject"]))]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica overrides for the `-primary` autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

/// `{apiVersion, kind, name}` for ingressRef and routeRef.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
}

/// Gloo upstream reference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("enum" = ["Upstream"]))]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Canary analysis for this canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["interval", "threshold", "iterations"]},
    {"required": ["interval", "threshold", "stepWeight"]},
    {"required": ["interval", "threshold", "stepWeights"]}
]))]
pub struct CanaryAnalysis {
    /// Schedule interval for this canary (default 60s, at least 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Number of checks to run for A/B Testing and Blue/Green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Max number of failed checks before rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    /// Max traffic weight routed to canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    /// Incremental traffic step weight for the analysis phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Incremental traffic step weights for the analysis phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<i32>>,
    /// Incremental traffic step weight for the promotion phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i32>,
    /// Mirror traffic to canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    /// Weight of traffic to be mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i32>,
    /// Percentage of pods that need to be available to consider primary as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i32>,
    /// Percentage of pods that need to be available to consider canary as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i32>,
    /// A/B testing match conditions.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "match")]
    pub match_: Option<Vec<HttpMatchRequest>>,
    /// Metric check list for this canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<CanaryMetric>>,
    /// Alert list for this canary analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<CanaryAlert>>,
    /// Webhook list for this canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<CanaryWebhook>>,
    /// Session affinity settings for a canary run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<Box<SessionAffinity>>,
}

/// One metric check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Interval of the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+(m|s)"))]
    pub interval: Option<String>,
    /// Max value accepted for this metric (deprecated; a minimum for request-success-rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Range accepted for this metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Prometheus query (deprecated: use a MetricTemplate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Metric template reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<NamespacedRef>,
    /// Additional variables to be used in the metrics query (key-value pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
}

/// `{min, max}` accepted for a metric.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// `{name, namespace}`: a MetricTemplate or AlertProvider reference (namespace defaults to the
/// canary's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl NamespacedRef {
    /// The namespace named, or `default` (the referring object's) when none or empty is.
    pub fn namespace_or(&self, default: &str) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default.to_string())
    }
}

/// One alert route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of this alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Severity level can be info, warn, error (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ALERT_SEVERITIES))]
    pub severity: Option<String>,
    /// Alert provider reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub provider_ref: Option<NamespacedRef>,
}

/// One webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Type of the webhook pre, post or during rollout.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    #[schemars(extend("enum" = WEBHOOK_TYPES))]
    pub type_: Option<String>,
    /// Mute all alerts for the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    /// URL address of this webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, extend("format" = "url"))]
    pub url: Option<String>,
    /// Request timeout for this webhook (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+(m|s)"))]
    pub timeout: Option<String>,
    /// Number of retries for this webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// Disable TLS verification for this webhook.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "disableTLS")]
    pub disable_tls: Option<bool>,
    /// Metadata (key-value pairs) for this webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Session affinity settings for a canary run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// The key used for the session affinity cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub cookie_name: Option<String>,
    /// The key used for the primary session affinity cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// The host to which the cookie will be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Forbids JavaScript from accessing the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Seconds until the session affinity cookie expires (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 86400))]
    pub max_age: Option<i64>,
    /// Store the cookie using partitioned storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// Path that must exist in the requested URL for the browser to send the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether the cookie is sent with cross-site requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Strict", "Lax", "None"]))]
    pub same_site: Option<String>,
    /// Send the cookie only over https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// The webhook kinds, with `""` already mapped to `Rollout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookType {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookType {
    /// Parses the `type` field; `None` for a value outside Flagger's enum.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "rollout" => Self::Rollout,
            "confirm-rollout" => Self::ConfirmRollout,
            "pre-rollout" => Self::PreRollout,
            "confirm-traffic-increase" => Self::ConfirmTrafficIncrease,
            "confirm-promotion" => Self::ConfirmPromotion,
            "post-rollout" => Self::PostRollout,
            "rollback" => Self::Rollback,
            "event" => Self::Event,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmRollout => "confirm-rollout",
            Self::PreRollout => "pre-rollout",
            Self::Rollout => "rollout",
            Self::ConfirmTrafficIncrease => "confirm-traffic-increase",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::PostRollout => "post-rollout",
            Self::Rollback => "rollback",
            Self::Event => "event",
        }
    }
}

impl CanaryWebhook {
    /// The webhook's kind (`""` and unknown values count as `rollout`, as in Flagger).
    pub fn hook_type(&self) -> HookType {
        HookType::parse(self.type_.as_deref().unwrap_or("")).unwrap_or(HookType::Rollout)
    }
}

/// Deployment strategy, as Flagger derives it (also a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Canary,
    BlueGreen,
    AbTesting,
}

impl Strategy {
    /// The label value Flagger uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::BlueGreen => "blue-green",
            Self::AbTesting => "ab-testing",
        }
    }
}

impl Canary {
    /// `namespace/name`, the key used everywhere (actor names, logs, validation messages).
    pub fn key(&self) -> String {
        crate::object_key(self)
    }

    /// The canary's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// The canary's namespace (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The analysis block (an empty one when absent).
    pub fn analysis(&self) -> &CanaryAnalysis {
        static EMPTY: LazyLock<CanaryAnalysis> = LazyLock::new(CanaryAnalysis::default);
        self.spec.analysis.as_ref().unwrap_or(&EMPTY)
    }

    /// The target's name (`targetRef.name`).
    pub fn target_name(&self) -> &str {
        self.spec
            .target_ref
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .unwrap_or("")
    }

    /// The target's kind (`targetRef.kind`).
    pub fn target_kind(&self) -> &str {
        self.spec
            .target_ref
            .as_ref()
            .and_then(|t| t.kind.as_deref())
            .unwrap_or("")
    }

    /// The apex service name: `service.name`, else the target name.
    pub fn apex_name(&self) -> &str {
        self.spec
            .service
            .as_ref()
            .and_then(|s| s.name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.target_name())
    }

    /// True when the target is a Knative Service.
    pub fn is_knative_target(&self) -> bool {
        self.spec.target_ref.as_ref().is_some_and(|t| {
            t.kind.as_deref() == Some("Service")
                && t.api_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("serving.knative.dev/"))
        })
    }

    /// The provider named in the spec (empty when unset).
    pub fn provider(&self) -> &str {
        self.spec.provider.as_deref().unwrap_or("")
    }

    /// Flagger's `DeploymentStrategy()`.
    pub fn strategy(&self) -> Strategy {
        let a = self.analysis();
        let iterations = a.iterations.unwrap_or(0);
        let has_match = a.match_.as_ref().is_some_and(|m| !m.is_empty());
        if has_match && iterations > 0 {
            Strategy::AbTesting
        } else if iterations > 0 {
            Strategy::BlueGreen
        } else {
            Strategy::Canary
        }
    }

    /// True when `skipAnalysis` is set.
    pub fn skip_analysis(&self) -> bool {
        self.spec.skip_analysis.unwrap_or(false) || self.spec.analysis.is_none()
    }

    /// True when `suspend` is set.
    pub fn suspended(&self) -> bool {
        self.spec.suspend.unwrap_or(false)
    }
}
