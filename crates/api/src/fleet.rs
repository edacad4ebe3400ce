//! `aviary.dev/v1alpha1` FleetRollout: one canary taken to one revision across the fleet, wave by
//! wave. Semantics: docs/fleet-rollouts.md. The coordinator pins a plan from this spec; the spec
//! itself never changes after creation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A staged rollout of one canary across clusters.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "aviary.dev",
    version = "v1alpha1",
    kind = "FleetRollout",
    plural = "fleetrollouts",
    shortname = "fro",
    category = "aviary",
    namespaced,
    status = "FleetRolloutStatus",
    doc = "FleetRollout takes one canary to one revision across the fleet, wave by wave.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".status.canary"}"#,
    printcolumn = r#"{"name":"Clusters","type":"string","jsonPath":".status.clusters"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failedClusters"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    crates(kube_core = "::kube_core")
)]
#[serde(rename_all = "camelCase")]
pub struct FleetRolloutSpec {
    /// The Canary (same namespace/name in every selected cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRef>,
    /// What to roll out (push mode). In gate mode it names the revision GitOps applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionSpec>,
    /// `push` (default): the coordinator asks each agent to apply the revision.
    /// `gate`: the revision is already applied; agents hold it at confirm-rollout until told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Clusters taking part (all registered clusters when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<LabelSelector>,
    /// Ordered waves (or use `byRegion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveSpec>>,
    /// Shorthand: one wave per region, in this order, named after the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_region: Option<Vec<String>>,
    /// Settings for waves that do not set their own (and for every `byRegion` wave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_defaults: Option<WaveSettings>,
    /// What a failure costs and what to revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// A cluster that has not finished (or cannot be reached) this long after it started fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_deadline: Option<String>,
    /// The statistical judge's evidence pooled across the clusters (docs/statistical-analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceSpec>,
}

/// Pooled evidence: every cluster's judge reports its canary's exact counts per interval; the
/// coordinator pools them and stops the rollout when the pooled evidence says the canary is
/// worse than the primary, even if no single cluster failed. The canaries need the judge on
/// (`judge.aviary.dev/mode`, `observe` is enough).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSpec {
    /// Pool the clusters' evidence (default false: the section is inert without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled: Option<bool>,
    /// Bound on a false stop of a good rollout, over the whole rollout (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// End a wave's bake early when the pooled evidence shows the canary no worse than the
    /// primary (non-inferiority) and `bake.duration` has passed (`bake.minRequests` waived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<bool>,
    /// One planned look at the gate of the last wave: the exact test of the canary's share of
    /// all errors so far, at 0.9 α; the anytime evidence runs at 0.1 α. Default true (with two
    /// waves or more); false leaves all of α to the anytime evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_look: Option<bool>,
}

/// `{namespace, name}` of the Canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CanaryRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The new revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Container name → image, for Deployment and Knative Service targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_images: Option<BTreeMap<String, String>>,
    /// The version of a LocalService target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One wave.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveSpec {
    /// Unique name (used by `approve`, `mandatoryWaves`, the audit history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Clusters of this wave, by label (every cluster also carries `region` and `cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<LabelSelector>,
    /// Shorthand for a selector on `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    #[serde(flatten)]
    pub settings: WaveSettings,
}

/// Per-wave pacing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveSettings {
    /// Clusters running at once: a count or a percent of the wave (`25%`, rounded up, ≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<IntOrString>,
    /// Wait after every cluster of the wave succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<BakeSpec>,
    /// `manual`: the wave waits for `approve` before it starts. `auto` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// Bake: time and evidence.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BakeSpec {
    /// Go duration (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Requests the new revision must have served across the wave's clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// A cluster whose primary reports a success rate (%) below this during the bake fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
}

/// What a failure costs and what to revert.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Failed clusters tolerated over the rollout: a count or a percent of all planned clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_clusters: Option<IntOrString>,
    /// Waves where any failure fails the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandatory_waves: Option<Vec<String>>,
    /// `cluster` (default) | `wave` | `all`: what to revert when the rollout fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// A count or a percent, resolved against a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOrPercent {
    Count(u32),
    Percent(u32),
}

impl CountOrPercent {
    /// Parses `3` or `"25%"` (also `"3"`). Percent must be 0–100.
    pub fn parse(v: &IntOrString) -> Result<Self, String> {
        match v {
            IntOrString::Int(i) if *i >= 0 => Ok(Self::Count(*i as u32)),
            IntOrString::Int(i) => Err(format!("must not be negative, got {i}")),
            IntOrString::String(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<u32>() {
                        Ok(n) if n <= 100 => Ok(Self::Percent(n)),
                        Ok(n) => Err(format!("a percent must be between 0% and 100%, got {n}%")),
                        Err(_) => Err(format!("expected a count or a percent such as 25%, got {s:?}")),
                    }
                } else {
                    t.parse::<u32>()
                        .map(Self::Count)
                        .map_err(|_| format!("expected a count or a percent such as 25%, got {s:?}"))
                }
            }
        }
    }

    /// The count for `total` items; percents round up (25% of 3 is 1).
    pub fn resolve(self, total: u32) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

/// What the coordinator writes back to a FleetRollout object in a management cluster (the
/// gRPC API shows the same rollout). Conditions follow Kubernetes' conventions so `kubectl
/// wait --for=condition=Succeeded`, kstatus (Flux) and Argo CD health checks can read them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetRolloutStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Paused, RollingBack, Succeeded, Failed, Aborted; `Rejected` when the
    /// coordinator refused the spec, `Queued` while another rollout of the canary is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `namespace/name` of the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Clusters done out of planned (`2/5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_clusters: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_clusters: Option<u32>,
    /// RFC 3339 times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Ready, Succeeded, Reconciling, Stalled, Accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<FleetRolloutCondition>>,
    /// The pinned plan and where each wave and cluster stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveStatus>>,
    /// The outcome of the last verb given as an annotation (`aviary.dev/pause`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verb: Option<String>,
}

/// A condition (`type`, `status` True/False/Unknown, `reason`, `message`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetRolloutCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One wave of the pinned plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    pub name: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub clusters: Vec<ClusterStatus>,
}

/// One cluster of a wave.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub phase: String,
    /// The canary's phase in that cluster, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl FleetRollout {
    /// The rollout's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_or_percent() {
        let p = |s: &str| CountOrPercent::parse(&IntOrString::String(s.into()));
        assert_eq!(p("25%"), Ok(CountOrPercent::Percent(25)));
        assert_eq!(p("3"), Ok(CountOrPercent::Count(3)));
        assert!(p("125%").is_err());
        assert!(p("x%").is_err());
        assert_eq!(
            CountOrPercent::parse(&IntOrString::Int(2)),
            Ok(CountOrPercent::Count(2))
        );
        assert!(CountOrPercent::parse(&IntOrString::Int(-1)).is_err());
        assert_eq!(CountOrPercent::Percent(25).resolve(3), 1);
        assert_eq!(CountOrPercent::Percent(50).resolve(3), 2);
        assert_eq!(CountOrPercent::Percent(0).resolve(3), 0);
        assert_eq!(CountOrPercent::Count(5).resolve(3), 5);
    }
}
