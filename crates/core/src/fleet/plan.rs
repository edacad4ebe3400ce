//! Plan resolution: a FleetRollout and the registered clusters → the pinned plan.
//!
//! Rules: the candidates are the registered clusters selected by `spec.clusters` (all when unset)
//! that report the canary; every cluster carries the implicit labels `region` and `cluster`. A
//! cluster goes to the first wave that selects it (a wave's `clusters` selector AND its
//! `regions`); a wave with neither takes every remaining cluster; `byRegion` makes one wave per
//! region, named after it. Candidates no wave selects are not part of the rollout (they are
//! listed in [`Plan::excluded`]). Each cluster's previous revision is what its primary runs now.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aviary_api::duration::parse_go_duration;
use aviary_api::fleet::{CountOrPercent, WaveSettings, WaveSpec};
use aviary_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use aviary_api::validate::{Diagnostic, Severity, validate_fleet_rollout};
use aviary_api::{FleetRollout, FleetRolloutSpec};
use serde::{Deserialize, Serialize};

use super::{CanaryKey, ClusterInfo, Revision};

/// Default `clusterDeadline`.
pub const DEFAULT_CLUSTER_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How a cluster is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The coordinator sends `StartRevision`; the agent applies the revision.
    Push,
    /// GitOps applied the revision; the coordinator opens each cluster's confirm-rollout gate.
    Gate,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Gate => "gate",
        }
    }
}

/// What is reverted when the rollout fails or is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackScope {
    /// Only the failed clusters (Flagger already rolled them back) and running canaries.
    Cluster,
    /// Also the succeeded clusters of the current wave.
    Wave,
    /// Every promoted cluster, newest wave first.
    All,
}

impl RollbackScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackScope::Cluster => "cluster",
            RollbackScope::Wave => "wave",
            RollbackScope::All => "all",
        }
    }
}

/// The pinned plan: never changes after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub canary: CanaryKey,
    /// The new revision (may be empty in gate mode: any revision the gate is asked about).
    pub revision: Revision,
    pub mode: Mode,
    pub waves: Vec<WavePlan>,
    /// Failed clusters tolerated (resolved count).
    pub max_failed_clusters: u32,
    pub rollback: RollbackScope,
    pub cluster_deadline: Duration,
    /// Clusters selected by `spec.clusters` but not planned, with why.
    pub excluded: Vec<String>,
}

/// One wave of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WavePlan {
    pub name: String,
    pub clusters: Vec<ClusterPlan>,
    pub max_concurrent: u32,
    pub manual_approval: bool,
    pub bake: Option<BakePlan>,
    pub mandatory: bool,
}

/// Bake: time and evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BakePlan {
    pub duration: Duration,
    pub min_requests: u64,
    pub min_success_rate: Option<f64>,
}

/// One cluster of a wave, with what its primary ran when the plan was pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub name: String,
    pub region: String,
    pub previous_revision: Revision,
    /// `lastPromotedSpec` when the plan was pinned.
    pub previous_fingerprint: String,
}

impl Plan {
    /// Every planned cluster, in wave order.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterPlan> {
        self.waves.iter().flat_map(|w| w.clusters.iter())
    }

    /// Number of planned clusters.
    pub fn cluster_count(&self) -> usize {
        self.waves.iter().map(|w| w.clusters.len()).sum()
    }

    /// Index of the wave named `name`.
    pub fn wave_index(&self, name: &str) -> Option<usize> {
        self.waves.iter().position(|w| w.name == name)
    }

    /// (wave index, cluster index) of a planned cluster.
    pub fn locate(&self, cluster: &str) -> Option<(usize, usize)> {
        self.waves.iter().enumerate().find_map(|(wi, w)| {
            w.clusters
                .iter()
                .position(|c| c.name == cluster)
                .map(|ci| (wi, ci))
        })
    }

    /// The command id of a cluster's start, attempt `attempt` (1-based).
    pub fn start_id(&self, cluster: &str, attempt: u32) -> String {
        format!("{}/{}/{}", self.name, cluster, attempt)
    }
}

fn error(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        path: path.into(),
        message: message.into(),
    }
}

/// Whether `labels` satisfy a Kubernetes label selector.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expr
}

/// The labels a selector sees: the agent's plus `region` and `cluster` (which win).
fn effective_labels(c: &ClusterInfo) -> BTreeMap<String, String> {
    let mut l = c.labels.clone();
    l.insert("region".into(), c.region.clone());
    l.insert("cluster".into(), c.name.clone());
    l
}

/// Wave settings: the wave's own fields over `waveDefaults`.
fn merged(own: Option<&WaveSettings>, defaults: Option<&WaveSettings>) -> WaveSettings {
    let own = own.cloned().unwrap_or_default();
    let d = defaults.cloned().unwrap_or_default();
    WaveSettings {
        max_concurrent: own.max_concurrent.or(d.max_concurrent),
        bake: own.bake.or(d.bake),
        approval: own.approval.or(d.approval),
    }
}

/// Where a wave's settings came from, for error paths.
fn settings_path(own: Option<&WaveSettings>, field: &str, wave_path: &str) -> String {
    let own_has = own.is_some_and(|s| match field {
        "bake" => s.bake.is_some(),
        _ => s.max_concurrent.is_some(),
    });
    if own_has {
        format!("{wave_path}.{field}")
    } else {
        format!("spec.waveDefaults.{field}")
    }
}

/// Names of up to 10 clusters, for messages.
fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        return "none".into();
    }
    let mut s = v.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if v.len() > 10 {
        s.push_str(&format!(" and {} more", v.len() - 10));
    }
    s
}

/// Checks the rollout (its static rules, then against the fleet) and pins the plan. `clusters`
/// are every registered cluster, each with the rollout's canary as it reports it. Errors carry
/// the field path (`spec.waves[1].clusters: …`) and what to do.
pub fn resolve_plan(rollout: &FleetRollout, clusters: &[ClusterInfo]) -> Result<Plan, Vec<Diagnostic>> {
    let errors = spec_errors(rollout);
    if !errors.is_empty() {
        return Err(errors);
    }
    let spec = &rollout.spec;
    let canary_ref = spec.canary.clone().unwrap_or_default();
    let canary = CanaryKey::new(
        canary_ref.namespace.unwrap_or_default(),
        canary_ref.name.unwrap_or_default(),
    );
    let (candidates, mut excluded) = candidates(spec, &canary, clusters)?;
    let mut errors = Vec::new();
    let drafts = match &spec.by_region {
        Some(regions) => waves_by_region(
            regions,
            &candidates,
            &canary,
            spec.wave_defaults.as_ref(),
            &mut errors,
        ),
        None => {
            let (drafts, unplaced) = waves_by_selector(spec, &candidates, &canary, &mut errors);
            excluded.extend(unplaced);
            drafts
        }
    };
    let mandatory = mandatory_waves(spec);
    let waves: Vec<WavePlan> = drafts
        .into_iter()
        .map(|d| pin_wave(d, &mandatory, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let planned = waves.iter().map(|w| w.clusters.len() as u32).sum::<u32>();
    let max_failed_clusters = failure_budget(spec, planned)?;
    let rollback = match spec.failure_policy.as_ref().and_then(|p| p.rollback.as_deref()) {
        Some("wave") => RollbackScope::Wave,
        Some("all") => RollbackScope::All,
        _ => RollbackScope::Cluster,
    };
    let cluster_deadline = cluster_deadline(spec)?;
    let mode = if spec.mode.as_deref() == Some("gate") {
        Mode::Gate
    } else {
        Mode::Push
    };
    Ok(Plan {
        name: rollout.name().to_string(),
        canary,
        revision: spec
            .revision
            .as_ref()
            .map(Revision::from_spec)
            .unwrap_or_default(),
        mode,
        waves,
        max_failed_clusters,
        rollback,
        cluster_deadline,
        excluded,
    })
}

/// The spec's own errors: exactly the static validation `aviary validate` runs (names, bake
/// success rates, durations, budgets), so a file that validates is refused only for the fleet.
fn spec_errors(rollout: &FleetRollout) -> Vec<Diagnostic> {
    validate_fleet_rollout(rollout)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

/// The clusters the rollout can use: registered, selected by `spec.clusters`, and reporting the
/// canary; the selected ones without it are excluded, with why.
fn candidates<'a>(
    spec: &FleetRolloutSpec,
    canary: &CanaryKey,
    clusters: &'a [ClusterInfo],
) -> Result<(Vec<&'a ClusterInfo>, Vec<String>), Vec<Diagnostic>> {
    if clusters.is_empty() {
        return Err(vec![error(
            "spec.clusters",
            "no cluster is registered with the coordinator; start the agents (aviary agent \
             --coordinator URL …) and check `aviary clusters`",
        )]);
    }
    let selected: Vec<&ClusterInfo> = clusters
        .iter()
        .filter(|c| {
            spec.clusters
                .as_ref()
                .is_none_or(|s| selector_matches(s, &effective_labels(c)))
        })
        .collect();
    if selected.is_empty() {
        return Err(vec![error(
            "spec.clusters",
            format!(
                "selects none of the {} registered clusters ({}); check the labels with `aviary clusters`",
                clusters.len(),
                names(clusters.iter().map(|c| c.name.as_str()))
            ),
        )]);
    }
    let (candidates, without): (Vec<&ClusterInfo>, Vec<&ClusterInfo>) =
        selected.into_iter().partition(|c| c.canary.is_some());
    if candidates.is_empty() {
        return Err(vec![error(
            "spec.canary",
            format!(
                "no selected cluster reports canary {canary} (selected: {}); check its namespace \
                 and name with `aviary canaries`",
                names(without.iter().map(|c| c.name.as_str()))
            ),
        )]);
    }
    let excluded = without
        .iter()
        .map(|c| format!("{}: does not report canary {canary}", c.name))
        .collect();
    Ok((candidates, excluded))
}

/// A wave before its settings are resolved.
struct Draft<'a> {
    name: String,
    members: Vec<&'a ClusterInfo>,
    settings: WaveSettings,
    /// The wave's own settings (for error paths), `None` for `byRegion` waves.
    own: Option<&'a WaveSettings>,
    path: String,
}

/// `spec.byRegion`: one wave per region, in order.
fn waves_by_region<'a>(
    regions: &[String],
    candidates: &[&'a ClusterInfo],
    canary: &CanaryKey,
    defaults: Option<&WaveSettings>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Draft<'a>> {
    let known: BTreeSet<&str> = candidates.iter().map(|c| c.region.as_str()).collect();
    let mut drafts = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let members: Vec<&ClusterInfo> = candidates
            .iter()
            .copied()
            .filter(|c| &c.region == region)
            .collect();
        if members.is_empty() {
            errors.push(error(
                format!("spec.byRegion[{i}]"),
                format!(
                    "no selected cluster reporting canary {canary} is in region {region:?}; \
                     regions with such clusters: {}",
                    names(known.iter().copied())
                ),
            ));
        }
        drafts.push(Draft {
            name: region.clone(),
            members,
            settings: merged(None, defaults),
            own: None,
            path: format!("spec.byRegion[{i}]"),
        });
    }
    drafts
}

/// `spec.waves`: a cluster belongs to the first wave that selects it. Also the candidates no
/// wave selects, with why.
fn waves_by_selector<'a>(
    spec: &'a FleetRolloutSpec,
    candidates: &[&'a ClusterInfo],
    canary: &CanaryKey,
    errors: &mut Vec<Diagnostic>,
) -> (Vec<Draft<'a>>, Vec<String>) {
    let mut drafts = Vec::new();
    let mut taken: BTreeMap<&str, String> = BTreeMap::new();
    for (i, w) in spec.waves.iter().flatten().enumerate() {
        let wp = format!("spec.waves[{i}]");
        let wname = w.name.clone().unwrap_or_default();
        let selects = |c: &ClusterInfo| {
            w.clusters
                .as_ref()
                .is_none_or(|s| selector_matches(s, &effective_labels(c)))
                && w.regions.as_ref().is_none_or(|r| r.contains(&c.region))
        };
        let matching: Vec<&ClusterInfo> = candidates.iter().copied().filter(|c| selects(c)).collect();
        let members: Vec<&ClusterInfo> = matching
            .iter()
            .copied()
            .filter(|c| !taken.contains_key(c.name.as_str()))
            .collect();
        for c in &members {
            taken.insert(c.name.as_str(), wname.clone());
        }
        if members.is_empty() {
            errors.push(empty_wave_error(w, &wp, &matching, candidates, &taken, canary));
        }
        drafts.push(Draft {
            name: wname,
            members,
            settings: merged(Some(&w.settings), spec.wave_defaults.as_ref()),
            own: Some(&w.settings),
            path: wp,
        });
    }
    let unplaced = candidates
        .iter()
        .filter(|c| !taken.contains_key(c.name.as_str()))
        .map(|c| format!("{}: selected by no wave", c.name))
        .collect();
    (drafts, unplaced)
}

/// Why wave `w` (at `wp`) has no cluster: it selects none, or only clusters of earlier waves.
fn empty_wave_error(
    w: &WaveSpec,
    wp: &str,
    matching: &[&ClusterInfo],
    candidates: &[&ClusterInfo],
    taken: &BTreeMap<&str, String>,
    canary: &CanaryKey,
) -> Diagnostic {
    let path = match (&w.clusters, &w.regions) {
        (Some(_), _) => format!("{wp}.clusters"),
        (None, Some(_)) => format!("{wp}.regions"),
        (None, None) => wp.to_string(),
    };
    let message = if matching.is_empty() {
        format!(
            "selects no cluster reporting canary {canary} (candidates: {}); check the \
             selector against `aviary clusters`",
            names(candidates.iter().map(|c| c.name.as_str()))
        )
    } else {
        let earlier: Vec<String> = matching
            .iter()
            .map(|c| format!("{} (wave {})", c.name, taken[c.name.as_str()]))
            .collect();
        format!(
            "every cluster it selects is already in an earlier wave: {}; a cluster \
             belongs to the first wave that selects it",
            earlier.join(", ")
        )
    };
    error(path, message)
}

/// The waves named in `spec.failurePolicy.mandatoryWaves`.
fn mandatory_waves(spec: &FleetRolloutSpec) -> BTreeSet<&str> {
    spec.failure_policy
        .as_ref()
        .and_then(|f| f.mandatory_waves.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// A wave with its settings resolved: the concurrency limit (at least 1), the bake, the approval,
/// and each cluster's previous revision (what its primary runs now).
fn pin_wave(d: Draft<'_>, mandatory: &BTreeSet<&str>, errors: &mut Vec<Diagnostic>) -> WavePlan {
    let total = d.members.len() as u32;
    let max_concurrent = match &d.settings.max_concurrent {
        None => 1,
        Some(v) => match CountOrPercent::parse(v) {
            Ok(c) => c.resolve(total).max(1),
            Err(e) => {
                errors.push(error(settings_path(d.own, "maxConcurrent", &d.path), e));
                1
            }
        },
    };
    let bake = d.settings.bake.as_ref().map(|b| {
        let duration = match b.duration.as_deref().map(parse_go_duration) {
            None => Duration::ZERO,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                errors.push(error(
                    format!("{}.duration", settings_path(d.own, "bake", &d.path)),
                    e.to_string(),
                ));
                Duration::ZERO
            }
        };
        BakePlan {
            duration,
            min_requests: b.min_requests.unwrap_or(0),
            min_success_rate: b.min_success_rate,
        }
    });
    WavePlan {
        mandatory: mandatory.contains(d.name.as_str()),
        manual_approval: d.settings.approval.as_deref() == Some("manual"),
        clusters: d
            .members
            .iter()
            .map(|c| {
                let obs = c.canary.clone().unwrap_or_default();
                ClusterPlan {
                    name: c.name.clone(),
                    region: c.region.clone(),
                    previous_revision: obs.primary_revision,
                    previous_fingerprint: obs.last_promoted_spec,
                }
            })
            .collect(),
        name: d.name,
        max_concurrent,
        bake,
    }
}

/// `spec.failurePolicy.maxFailedClusters` over the planned clusters. A budget rounds down (10% of
/// 5 clusters tolerates 0 failures): the safe side.
fn failure_budget(spec: &FleetRolloutSpec, planned: u32) -> Result<u32, Vec<Diagnostic>> {
    let budget = spec
        .failure_policy
        .as_ref()
        .and_then(|p| p.max_failed_clusters.as_ref());
    match budget.map(CountOrPercent::parse) {
        None => Ok(0),
        Some(Ok(CountOrPercent::Count(n))) => Ok(n),
        Some(Ok(CountOrPercent::Percent(p))) => Ok((u64::from(planned) * u64::from(p) / 100) as u32),
        Some(Err(e)) => Err(vec![error("spec.failurePolicy.maxFailedClusters", e)]),
    }
}

/// `spec.clusterDeadline` ([`DEFAULT_CLUSTER_DEADLINE`] when unset), longer than 0.
fn cluster_deadline(spec: &FleetRolloutSpec) -> Result<Duration, Vec<Diagnostic>> {
    match spec.cluster_deadline.as_deref().map(parse_go_duration) {
        None => Ok(DEFAULT_CLUSTER_DEADLINE),
        Some(Ok(d)) if d.is_zero() => Err(vec![error(
            "spec.clusterDeadline",
            "must be longer than 0; use a duration such as 30m",
        )]),
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(vec![error("spec.clusterDeadline", e.to_string())]),
    }
}
