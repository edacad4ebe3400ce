//! The fleet rollout sequencer: pure decisions, no I/O, no clock (time is an argument).
//!
//! - [`plan`]: a FleetRollout spec plus the registered clusters → a pinned [`Plan`] (ordered
//!   waves, clusters per wave, each cluster's previous revision), or errors with field paths.
//! - [`rollout`]: the state of one rollout, the [`Command`]s to agents, the gate rule
//!   ([`gate_decision`]), acks ([`on_ack`]) and the commands to re-send ([`pending_commands`]).
//! - [`reconcile`](mod@reconcile): [`reconcile`], which moves a rollout forward from what the
//!   agents report, step by named step, and returns the commands to send.
//! - [`verbs`]: pause, resume, abort, approve, skip, retry.
//! - [`evidence`]: the judge's evidence pooled across the rollout's clusters
//!   (`spec.evidence`): stop on pooled ROLLBACK, the planned look at the last wave, early
//!   bake end on pooled PROMOTE.
//! - [`numbers`]: how NaN and ±Inf metric values are stored (JSON has no spelling for them).
//!
//! The caller (the coordinator) owns the protocol: it persists the new state *before* it sends
//! the commands that `reconcile` or a verb returned, and re-sends [`pending_commands`] (same ids)
//! to an agent that reconnects. Semantics: docs/fleet-rollouts.md.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aviary_api::fleet::RevisionSpec;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub mod evidence;
pub mod numbers;
pub mod plan;
pub mod reconcile;
pub mod rollout;
pub mod verbs;

#[cfg(test)]
mod tests;

pub use evidence::{EvidencePlan, PooledEvidence, add_evidence};
pub use plan::{BakePlan, ClusterPlan, Mode, Plan, RollbackScope, WavePlan, resolve_plan};
pub use reconcile::{bake_requests, next_wake, reconcile};
pub use rollout::{
    BakeProgress, ClusterPhase, ClusterState, Command, GateAnswer, HistoryEntry, RollbackRun, RolloutPhase,
    RolloutState, Stamp, Undo, WavePhase, WaveState, fail_unstorable, gate_decision, on_ack,
    pending_commands,
};

/// `": detail"`, or nothing for an empty detail: how a message adds an optional reason.
pub(crate) fn note(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// `" (detail)"`, or nothing for an empty detail: how a verdict or a status line adds an aside.
pub fn aside(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// Flagger phases the sequencer reads.
pub mod phase {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const INITIALIZED: &str = "Initialized";
    /// Phases of a canary Flagger has not finished initializing (`""`: never ticked).
    pub const INITIALIZING: &[&str] = &["", "Initializing"];
    /// Phases of an analysis in progress.
    pub const RUNNING: &[&str] = &["Progressing", "WaitingPromotion", "Promoting", "Finalising"];
}

/// What a target runs: container images (Deployment, Knative Service) or a version
/// (LocalService). An empty map / empty version means "not set". (The engine's
/// [`TargetRevision`](crate::ports::TargetRevision) is a fingerprint of a target instead.)
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Revision {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_images: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

impl Revision {
    /// From the FleetRollout's `spec.revision`.
    pub fn from_spec(spec: &RevisionSpec) -> Self {
        Self {
            container_images: spec.container_images.clone().unwrap_or_default(),
            version: spec.version.clone().unwrap_or_default(),
        }
    }

    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.container_images.is_empty() && self.version.is_empty()
    }

    /// Whether a target describing `other` carries this revision: every container named here
    /// has this image (the target may have more containers, e.g. sidecars) and the version
    /// matches when one is set. An empty revision is carried by anything.
    pub fn satisfied_by(&self, other: &Revision) -> bool {
        self.container_images
            .iter()
            .all(|(c, img)| other.container_images.get(c) == Some(img))
            && (self.version.is_empty() || self.version == other.version)
    }
}

impl Revision {
    /// What the revision runs, one entry each: `container=image`, then `version V`.
    pub fn parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self
            .container_images
            .iter()
            .map(|(c, i)| format!("{c}={i}"))
            .collect();
        if !self.version.is_empty() {
            parts.push(format!("version {}", self.version));
        }
        parts
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("<unknown>");
        }
        f.write_str(&self.parts().join(", "))
    }
}

/// `namespace/name` of a Canary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct CanaryKey {
    pub namespace: String,
    pub name: String,
}

impl CanaryKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CanaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One canary as its cluster's agent last reported it (the part the sequencer reads).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CanaryObs {
    /// Flagger phase.
    pub phase: String,
    pub canary_weight: i32,
    pub failed_checks: i32,
    /// `status.lastAppliedSpec` / `status.lastPromotedSpec` fingerprints.
    pub last_applied_spec: String,
    pub last_promoted_spec: String,
    pub target_revision: Revision,
    pub primary_revision: Revision,
    /// Requests served by the primary's current revision since its promotion.
    pub served_requests: u64,
    pub primary_success_rate: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
    pub message: String,
}

/// A registered cluster as plan resolution sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterInfo {
    pub name: String,
    pub region: String,
    /// Labels from the agent; `region` and `cluster` are added implicitly.
    pub labels: BTreeMap<String, String>,
    /// The rollout's canary in this cluster, if the agent reports it.
    pub canary: Option<CanaryObs>,
}

/// A confirm-rollout question from an agent: may this revision of the canary start?
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateAsk {
    pub fingerprint: String,
    pub revision: Revision,
}

/// What [`reconcile`] sees of one planned cluster now.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The agent's stream is up.
    pub connected: bool,
    /// The rollout's canary as last reported (kept while disconnected).
    pub canary: Option<CanaryObs>,
    /// The agent's latest gate request for the rollout's canary, if any.
    pub gate_request: Option<GateAsk>,
}

/// Planned cluster name → what is observed of it. Clusters missing here are unknown (never
/// connected since the coordinator started): treated as disconnected with no snapshot.
pub type FleetView = BTreeMap<String, Observation>;

/// `t + d`, saturating.
pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// `now - t`, zero if `t` is in the future.
pub(crate) fn elapsed(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO)
}
