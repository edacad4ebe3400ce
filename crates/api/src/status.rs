//! `.status` of a Canary: the phase, the counters and the single `Promoted` condition.
//!
//! The status is the source of truth across restarts (as in Flagger): a restarted agent resumes
//! from it. Field names and omitempty rules match Flagger's Go types so `kubectl get -o yaml`
//! looks the same.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The analysis phase of a canary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CanaryPhase {
    /// Not yet seen by a controller.
    #[default]
    #[serde(rename = "")]
    Empty,
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl CanaryPhase {
    /// The wire name (`""` for [`CanaryPhase::Empty`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "",
            Self::Initializing => "Initializing",
            Self::Initialized => "Initialized",
            Self::Waiting => "Waiting",
            Self::Progressing => "Progressing",
            Self::WaitingPromotion => "WaitingPromotion",
            Self::Promoting => "Promoting",
            Self::Finalising => "Finalising",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    /// Every phase, in Flagger's enum order.
    pub const ALL: [CanaryPhase; 12] = [
        Self::Empty,
        Self::Initializing,
        Self::Initialized,
        Self::Waiting,
        Self::Progressing,
        Self::WaitingPromotion,
        Self::Promoting,
        Self::Finalising,
        Self::Succeeded,
        Self::Failed,
        Self::Terminating,
        Self::Terminated,
    ];

    /// Phases in which an analysis is under way (Flagger's `shouldAdvance` set).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Progressing | Self::Waiting | Self::WaitingPromotion | Self::Promoting | Self::Finalising
        )
    }

    /// Succeeded or Failed: the analysis of the current revision has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for CanaryPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "CanaryStatus defines the observed state of a canary.")]
pub struct CanaryStatus {
    /// Analysis phase of this canary.
    #[serde(default)]
    pub phase: CanaryPhase,
    /// Failed check count of the current canary analysis.
    #[serde(default)]
    pub failed_checks: i32,
    /// Traffic weight routed to canary.
    #[serde(default)]
    pub canary_weight: i32,
    /// Iteration count of the current canary analysis.
    #[serde(default)]
    pub iterations: i32,
    /// Tracked ConfigMaps and Secrets (`configmap/<name>` → checksum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Fingerprint of the target revision under (or last under) analysis.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_applied_spec: String,
    /// Fingerprint of the last promoted revision.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_promoted_spec: String,
    /// Last phase transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Session affinity cookie of the current canary run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_affinity_cookie: String,
    /// Primary session affinity cookie of the current canary run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_session_affinity_cookie: String,
    /// Session affinity cookie of the previous canary run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_session_affinity_cookie: String,
    /// Status conditions of this canary (one, of type `Promoted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CanaryCondition>,
}

/// The condition type Flagger maintains.
pub const PROMOTED_CONDITION: &str = "Promoted";

/// The condition aviary adds to a canary whose spec is invalid (`status: "False"`, reason
/// [`INVALID_SPEC_REASON`], the field paths in the message); Flagger has none, it only logs.
/// Removed once the spec is valid again.
pub const VALIDATED_CONDITION: &str = "Validated";
/// The reason of a `Validated=False` condition.
pub const INVALID_SPEC_REASON: &str = "InvalidSpec";

/// One status condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    /// Type of this condition.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of this condition: True, False or Unknown.
    pub status: String,
    /// LastUpdateTime of this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// LastTransitionTime of this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Reason for the current status of this condition (the phase name).
    pub reason: String,
    /// Message associated with this condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl CanaryStatus {
    /// The `Promoted` condition, if any.
    pub fn promoted_condition(&self) -> Option<&CanaryCondition> {
        self.conditions.iter().find(|c| c.type_ == PROMOTED_CONDITION)
    }
}

/// Flagger's `Promoted` condition status and message for a phase; `kind` is the target kind.
/// Returns `None` for phases that do not touch the condition.
pub fn promoted_condition_for(phase: CanaryPhase, kind: &str) -> Option<(&'static str, String)> {
    Some(match phase {
        CanaryPhase::Empty | CanaryPhase::Initializing => (
            "Unknown",
            format!("New {kind} detected, starting initialization."),
        ),
        CanaryPhase::Initialized => ("True", format!("{kind} initialization completed.")),
        CanaryPhase::Waiting | CanaryPhase::WaitingPromotion => ("Unknown", "Waiting for approval.".into()),
        CanaryPhase::Progressing => (
            "Unknown",
            "New revision detected, progressing canary analysis.".into(),
        ),
        CanaryPhase::Promoting => (
            "Unknown",
            "Canary analysis completed, starting primary rolling update.".into(),
        ),
        CanaryPhase::Finalising => (
            "Unknown",
            "Canary analysis completed, routing all traffic to primary.".into(),
        ),
        CanaryPhase::Succeeded => (
            "True",
            "Canary analysis completed successfully, promotion finished.".into(),
        ),
        CanaryPhase::Failed => ("False", format!("Canary analysis failed, {kind} scaled to zero.")),
        CanaryPhase::Terminating | CanaryPhase::Terminated => return None,
    })
}
