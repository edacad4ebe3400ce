//! Evidence pooled across the fleet: the coordinator's side of the judge.
//!
//! Agents report each canary interval's exact counts ([`EvidenceReport`]); the counts are the
//! sufficient statistic of a stratum, so the coordinator recomputes everything (any tolerance,
//! the intervals, the per-cluster e-values) with the same code as the agents. Two e-processes:
//! - the shared-ratio process: every stratum (cluster × interval, with its own canary share,
//!   base rate and latency boundaries) enters one ratio e-process per metric. Raw counts are
//!   never added across clusters (Simpson's paradox);
//! - each cluster's own e-process.
//!
//! The fleet rolls back when `½ E_shared + ½ mean_k E_k ≥ 1/α` (mean over the planned
//! clusters; one that has not started counts 1). Both halves are e-processes under the global
//! null "no cluster's canary is worse", in the order reports arrive, so this holds with waves,
//! staggered starts, skipped or unreachable clusters (their evidence freezes) and late reports
//! (added when they arrive; a report never changes after it was added). The shared half has
//! the power when a small regression is everywhere; the per-cluster half keeps one bad region
//! from being diluted by many good ones.
//!
//! Invalid, and refused here: evidence from clusters outside the plan (choosing clusters after
//! seeing their data), and replacing a report (retracting evidence).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::canary::{CanaryJudge, JudgeSpec, Verdict};
use super::counts::IntervalCounts;
use super::explain::{fmt_e, fmt_sig2};
use super::lnsum::{ln_mean_exp, ln_weighted_sum_exp};
use super::metric::{Decision, MetricKind, MetricPairs, MetricVerdict, metric_pairs};
use crate::error::{Error, Result};

/// One interval of one cluster's canary run, as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceReport {
    pub cluster: String,
    /// The canary run in that cluster (an agent names a run by its revision and start; a
    /// retried cluster starts a new run).
    pub run: String,
    /// Interval number within the run (0-based): with `cluster` and `run`, the idempotency key.
    pub interval: u64,
    /// The latency boundaries the cluster's judge uses in this run (fixed at its start).
    #[serde(default)]
    pub boundaries_ms: Vec<f64>,
    pub counts: IntervalCounts,
}

/// What adding a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// New evidence.
    New,
    /// The same report again (a retransmission): ignored.
    Duplicate,
}

/// The pooled state of one fleet rollout. Serializable: the coordinator persists it with the
/// rollout, so a new leader continues the same e-process (a fresh one would spend α again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetJudge {
    spec: JudgeSpec,
    planned: Vec<String>,
    /// The shared-ratio judge: every stratum of every cluster.
    shared: CanaryJudge,
    clusters: BTreeMap<String, CanaryJudge>,
    /// Boundaries per run (`cluster/run`), fixed by the run's first report.
    runs: BTreeMap<String, Vec<f64>>,
    /// Digest of every report added, by key (`cluster/run/interval`).
    seen: BTreeMap<String, String>,
    max_ln_global: f64,
}

impl FleetJudge {
    /// A pool over the `planned` clusters (fixed before any evidence).
    /// The wave's minimum bake is the coordinator's (`bake.duration`), so the spec's is unused.
    pub fn new(mut spec: JudgeSpec, planned: Vec<String>) -> Result<Self> {
        spec.min_bake_seconds = 0.0;
        if planned.is_empty() {
            return Err(Error::Judge("fleet evidence: the plan has no clusters".into()));
        }
        let shared = CanaryJudge::new(&spec, Vec::new());
        Ok(Self {
            spec,
            planned,
            shared,
            clusters: BTreeMap::new(),
            runs: BTreeMap::new(),
            seen: BTreeMap::new(),
            max_ln_global: 0.0,
        })
    }

    /// Adds one report. Idempotent by (cluster, run, interval); a different report under a key
    /// already seen is refused, as is a cluster outside the plan or a change of boundaries
    /// within a run.
    pub fn add(&mut self, r: &EvidenceReport) -> Result<Added> {
        let who = format!("cluster {} run {} interval {}", r.cluster, r.run, r.interval);
        if !self.planned.contains(&r.cluster) {
            return Err(Error::Judge(format!(
                "fleet evidence from {who}: the cluster is not in the rollout's plan; evidence counts only from clusters chosen before any was seen"
            )));
        }
        let key = format!("{}/{}/{}", r.cluster, r.run, r.interval);
        let digest = digest(r);
        if let Some(old) = self.seen.get(&key) {
            return if *old == digest {
                Ok(Added::Duplicate)
            } else {
                Err(Error::Judge(format!(
                    "fleet evidence from {who}: differs from the report already added under this key; evidence is never replaced (the first report stands)"
                )))
            };
        }
        let run = format!("{}/{}", r.cluster, r.run);
        if let Some(b) = self.runs.get(&run)
            && *b != r.boundaries_ms
        {
            return Err(Error::Judge(format!(
                "fleet evidence from {who}: boundariesMs {:?} differ from the run's {:?}; boundaries are fixed when a run starts",
                r.boundaries_ms, b
            )));
        }
        let pairs = pool_pairs(&self.spec, &r.boundaries_ms, &r.counts)
            .map_err(|e| Error::Judge(format!("fleet evidence from {who}: {e}")))?;
        self.runs.entry(run).or_insert_with(|| r.boundaries_ms.clone());
        self.seen.insert(key, digest);
        self.shared.observe_pairs(&self.spec, &pairs, r.counts.seconds);
        self.clusters
            .entry(r.cluster.clone())
            .or_insert_with(|| CanaryJudge::new(&self.spec, Vec::new()))
            .observe_pairs(&self.spec, &pairs, r.counts.seconds);
        self.max_ln_global = self.max_ln_global.max(self.ln_global());
        Ok(Added::New)
    }

    /// ln of the shared-ratio ROLLBACK e-value alone.
    pub fn ln_shared(&self) -> f64 {
        self.shared.ln_rollback(&self.spec)
    }

    /// ln of `½ E_shared + ½ mean_k E_k` over the planned clusters.
    pub fn ln_global(&self) -> f64 {
        let per_cluster: Vec<f64> = self
            .planned
            .iter()
            .map(|c| self.clusters.get(c).map_or(0.0, |j| j.ln_rollback(&self.spec)))
            .collect();
        ln_weighted_sum_exp(&[
            (0.5, self.shared.ln_rollback(&self.spec)),
            (0.5, ln_mean_exp(&per_cluster)),
        ])
    }

    /// Whether the ROLLBACK evidence has reached its threshold (the verdict's decision, cheaply).
    pub fn rolls_back(&self) -> bool {
        self.ln_global() >= (1.0 / self.spec.alpha).ln()
    }

    /// The shared-ratio judge's verdict (its PROMOTE is the fleet's wave-advance evidence).
    pub fn shared_verdict(&self) -> Verdict {
        self.shared.verdict(&self.spec)
    }

    /// One cluster's own verdict, recomputed from its reports.
    pub fn cluster_verdict(&self, cluster: &str) -> Option<Verdict> {
        self.clusters.get(cluster).map(|j| j.verdict(&self.spec))
    }

    /// The fleet's verdict now.
    pub fn verdict(&self) -> FleetVerdict {
        let shared = self.shared_verdict();
        let ln_global = self.ln_global();
        let threshold = 1.0 / self.spec.alpha;
        // PROMOTE: every metric the clusters measure shows non-inferiority (a metric nobody
        // reports, e.g. latency without histograms, is not part of the claim).
        let judged: Vec<&MetricVerdict> = shared.metrics.iter().filter(|m| measured(m)).collect();
        let decision = if ln_global >= threshold.ln() {
            Decision::Rollback
        } else if !judged.is_empty() && judged.iter().all(|m| m.decision == Decision::Promote) {
            Decision::Promote
        } else {
            Decision::Continue
        };
        let reporting = self.clusters.len();
        let worst = self
            .clusters
            .iter()
            .map(|(c, j)| (c.clone(), j.ln_rollback(&self.spec)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let explanation = format!(
            "{}: fleet evidence {} {} {} ({} of {} clusters reporting{}); shared ratio: {}",
            decision.as_str(),
            fmt_e(ln_global),
            if decision == Decision::Rollback {
                "≥"
            } else {
                "<"
            },
            fmt_sig2(threshold),
            reporting,
            self.planned.len(),
            worst
                .as_ref()
                .map(|(c, ln)| format!(", most evidence in {c}: {}", fmt_e(*ln)))
                .unwrap_or_default(),
            shared
                .metrics
                .iter()
                .map(|m| if measured(m) {
                    format!("{}: {}", m.name, m.explanation)
                } else {
                    format!("{}: not reported", m.name)
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
        FleetVerdict {
            decision,
            ln_global,
            threshold,
            p_value: (-self.max_ln_global.max(ln_global)).exp().min(1.0),
            shared,
            clusters_reporting: reporting,
            clusters_planned: self.planned.len(),
            explanation,
        }
    }
}

/// Whether any cluster reported this metric.
fn measured(m: &MetricVerdict) -> bool {
    m.canary_trials + m.primary_trials > 0
}

/// The pairs of one report for the pool: as a cluster's own judge takes them, except that a
/// latency metric is skipped (not observed) when the report carries no histograms or no
/// boundaries, instead of refusing the report: its errors still count. Which metrics a report
/// carries follows from the cluster's configuration, never from the outcomes, so skipping keeps
/// the test valid. Slot `k` pools every run's `k`-th boundary (near its primary's p90, p99).
fn pool_pairs(spec: &JudgeSpec, boundaries: &[f64], counts: &IntervalCounts) -> Result<Vec<MetricPairs>> {
    counts.validate()?;
    let histograms = counts.canary.latency.is_some() && counts.primary.latency.is_some();
    spec.metrics
        .iter()
        .map(|m| match &m.kind {
            MetricKind::Latency(_) if boundaries.is_empty() || !histograms => Ok(MetricPairs::default()),
            MetricKind::Latency(_) => metric_pairs(m, &boundaries[..boundaries.len().min(m.slots())], counts),
            MetricKind::Errors => metric_pairs(m, boundaries, counts),
        })
        .collect()
}

fn digest(r: &EvidenceReport) -> String {
    let bytes = serde_json::to_vec(r).expect("reports serialize");
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// The fleet's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetVerdict {
    /// ROLLBACK stops the rollout; PROMOTE lets a wave advance early (after its minimum bake,
    /// which the coordinator keeps).
    pub decision: Decision,
    pub ln_global: f64,
    pub threshold: f64,
    pub p_value: f64,
    /// The shared-ratio verdict: intervals and non-inferiority per metric.
    pub shared: Verdict,
    pub clusters_reporting: usize,
    pub clusters_planned: usize,
    pub explanation: String,
}
