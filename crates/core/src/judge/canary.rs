//! The judge of one canary run: every judged metric, combined.
//!
//! - ROLLBACK when the weighted average of the metrics' FAIL e-values reaches `1/α`. An average
//!   of e-values is an e-value under any dependence between the metrics (they are measured on
//!   the same requests), so the false-rollback rate over the whole run stays `≤ α`.
//! - PROMOTE early when every metric shows non-inferiority at `α_P` (an intersection-union test:
//!   no correction), each has its minimum of events, and the minimum bake has passed.
//! - CONTINUE otherwise: Flagger's own schedule and thresholds carry on.

use serde::{Deserialize, Serialize};

use super::counts::{Histogram, IntervalCounts};
use super::explain::{fmt_e, fmt_sig2};
use super::lnsum::ln_weighted_sum_exp;
use super::metric::{Boundaries, Decision, MetricKind, MetricPairs, MetricSpec, MetricState, MetricVerdict};
use super::metric::{choose_boundaries, metric_pairs};
use crate::error::{Error, Result};

/// The judge's settings for one canary (see [`super::config`] for where they come from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeSpec {
    /// False-rollback rate bound over the whole run.
    pub alpha: f64,
    /// False early-promotion rate bound (a canary at the margin or worse).
    pub promote_alpha: f64,
    /// No early promotion before this much analysis time.
    pub min_bake_seconds: f64,
    pub metrics: Vec<MetricSpec>,
}

impl JudgeSpec {
    /// Each metric's share of the ROLLBACK average.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.metrics.iter().map(|m| m.weight).sum();
        self.metrics.iter().map(|m| m.weight / total).collect()
    }

    /// The latency metric's slots, resolved for one run from the primary's pre-canary histogram
    /// (or the configured bounds). Empty without a latency metric.
    pub fn resolve_boundaries(&self, baseline: Option<&Histogram>) -> Result<Vec<f64>> {
        let Some(kind) = self.metrics.iter().find_map(|m| match &m.kind {
            MetricKind::Latency(b) => Some(b),
            MetricKind::Errors => None,
        }) else {
            return Ok(Vec::new());
        };
        match (kind, baseline) {
            (Boundaries::Fixed(b), _) => Ok(b.clone()),
            (Boundaries::Quantiles(q), Some(h)) => choose_boundaries(h, q),
            (Boundaries::Quantiles(_), None) => Err(Error::Judge(
                "latency boundaries: no pre-canary histogram of the primary to choose them from".into(),
            )),
        }
    }
}

/// The judge's state for one canary run. With two metrics it is about 900 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryJudge {
    /// The latency boundaries of this run (fixed before any canary data).
    boundaries: Vec<f64>,
    metrics: Vec<MetricState>,
    elapsed_seconds: f64,
    intervals: u64,
    max_ln_rollback: f64,
}

impl CanaryJudge {
    /// A run with latency `boundaries` resolved by [`JudgeSpec::resolve_boundaries`].
    pub fn new(spec: &JudgeSpec, boundaries: Vec<f64>) -> Self {
        Self {
            boundaries,
            metrics: spec.metrics.iter().map(MetricState::new).collect(),
            elapsed_seconds: 0.0,
            intervals: 0,
            max_ln_rollback: 0.0,
        }
    }

    /// The run's latency boundaries (what an agent reports with its evidence).
    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// Bytes of state, heap included.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.boundaries.capacity() * std::mem::size_of::<f64>()
            + self.metrics.iter().map(MetricState::state_bytes).sum::<usize>()
    }

    /// Adds one interval. Nothing changes when the counts are unusable.
    pub fn observe(&mut self, spec: &JudgeSpec, counts: &IntervalCounts) -> Result<()> {
        let pairs = self.pairs(spec, counts)?;
        self.observe_pairs(spec, &pairs, counts.seconds);
        Ok(())
    }

    pub(crate) fn pairs(&self, spec: &JudgeSpec, counts: &IntervalCounts) -> Result<Vec<MetricPairs>> {
        pairs_for(spec, &self.boundaries, counts)
    }

    pub(crate) fn observe_pairs(&mut self, spec: &JudgeSpec, pairs: &[MetricPairs], seconds: f64) {
        for ((state, ms), p) in self.metrics.iter_mut().zip(&spec.metrics).zip(pairs) {
            state.observe(ms, p);
        }
        self.elapsed_seconds += seconds;
        self.intervals += 1;
        self.max_ln_rollback = self.max_ln_rollback.max(self.ln_rollback(spec));
    }

    /// ln of the ROLLBACK e-value: the weighted average of the metrics' FAIL e-values.
    pub fn ln_rollback(&self, spec: &JudgeSpec) -> f64 {
        let terms: Vec<(f64, f64)> = spec
            .shares()
            .into_iter()
            .zip(self.metrics.iter().zip(&spec.metrics))
            .map(|(share, (state, ms))| (share, state.ln_fail(ms)))
            .collect();
        ln_weighted_sum_exp(&terms)
    }

    /// Analysis time observed so far.
    pub fn elapsed_seconds(&self) -> f64 {
        self.elapsed_seconds
    }

    /// The decision now, without the explanation (cheap enough for every scrape).
    pub fn decision(&self, spec: &JudgeSpec) -> Decision {
        if self.ln_rollback(spec) >= (1.0 / spec.alpha).ln() {
            return Decision::Rollback;
        }
        let promote = spec.promote_alpha.recip().ln();
        let all_promote = !spec.metrics.is_empty()
            && self
                .metrics
                .iter()
                .zip(&spec.metrics)
                .all(|(state, ms)| state.promotes(ms, promote));
        if all_promote && self.elapsed_seconds >= spec.min_bake_seconds {
            Decision::Promote
        } else {
            Decision::Continue
        }
    }

    /// The verdict now.
    pub fn verdict(&self, spec: &JudgeSpec) -> Verdict {
        let metrics: Vec<MetricVerdict> = spec
            .shares()
            .into_iter()
            .zip(self.metrics.iter().zip(&spec.metrics))
            .map(|(share, (state, ms))| {
                state.verdict(ms, &self.boundaries, share, spec.alpha, spec.promote_alpha)
            })
            .collect();
        let ln_rollback = self.ln_rollback(spec);
        let threshold = 1.0 / spec.alpha;
        let all_promote = !metrics.is_empty() && metrics.iter().all(|m| m.decision == Decision::Promote);
        let baked = self.elapsed_seconds >= spec.min_bake_seconds;
        let decision = if ln_rollback >= threshold.ln() {
            Decision::Rollback
        } else if all_promote && baked {
            Decision::Promote
        } else {
            Decision::Continue
        };
        let mut v = Verdict {
            decision,
            ln_rollback,
            rollback_threshold: threshold,
            p_value: (-self.max_ln_rollback.max(ln_rollback)).exp().min(1.0),
            elapsed_seconds: self.elapsed_seconds,
            waiting_for_bake: all_promote && !baked && decision == Decision::Continue,
            min_bake_seconds: spec.min_bake_seconds,
            metrics,
            explanation: String::new(),
        };
        v.explanation = v.explain();
        v
    }
}

/// The pairs of every metric of `spec` in one interval.
pub(crate) fn pairs_for(
    spec: &JudgeSpec,
    boundaries: &[f64],
    counts: &IntervalCounts,
) -> Result<Vec<MetricPairs>> {
    counts.validate()?;
    spec.metrics
        .iter()
        .map(|m| metric_pairs(m, boundaries, counts))
        .collect()
}

/// The judge's verdict on a canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    /// ln of the combined ROLLBACK e-value.
    pub ln_rollback: f64,
    /// `1/α`.
    pub rollback_threshold: f64,
    /// Anytime-valid p-value of "the canary is no worse": `min(1, 1/max E)`.
    pub p_value: f64,
    pub elapsed_seconds: f64,
    /// Every metric shows non-inferiority but the minimum bake has not passed.
    pub waiting_for_bake: bool,
    pub min_bake_seconds: f64,
    pub metrics: Vec<MetricVerdict>,
    /// One line for events and `aviary` output.
    pub explanation: String,
}

impl Verdict {
    fn explain(&self) -> String {
        let body = |filter: &dyn Fn(&MetricVerdict) -> bool| {
            self.metrics
                .iter()
                .filter(|m| filter(m))
                .map(|m| format!("{}: {}", m.name, m.explanation))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self.decision {
            Decision::Rollback => {
                let alone = body(&|m| m.decision == Decision::Rollback);
                if alone.is_empty() {
                    format!(
                        "rollback: combined evidence {} ≥ {} over {}",
                        fmt_e(self.ln_rollback),
                        fmt_sig2(self.rollback_threshold),
                        body(&|_| true)
                    )
                } else {
                    format!("rollback: {alone}")
                }
            }
            Decision::Promote => format!("promote: {}", body(&|_| true)),
            Decision::Continue if self.waiting_for_bake => format!(
                "continue until the minimum bake ({}s of {}s): {}",
                self.elapsed_seconds.round(),
                self.min_bake_seconds.round(),
                body(&|_| true)
            ),
            Decision::Continue => format!("continue: {}", body(&|_| true)),
        }
    }
}
