//! One judged metric: its specification, its state (one ratio e-process per slot, plus the
//! counts of the absolute arm), and the verdict with its explanation.
//!
//! A slot is what one ratio process tests: errors for `request-success-rate`; for
//! `request-duration`, the requests slower than one latency boundary. Boundaries are chosen per
//! canary run before any canary data is seen (from the primary's pre-canary histogram, or
//! configured), so they are predictable and the test stays valid.

use serde::{Deserialize, Serialize};

use super::counts::{Histogram, IntervalCounts};
use super::explain::{fmt_count, fmt_e, fmt_ms, fmt_pct, fmt_ratio_interval};
use super::lnsum::ln_weighted_sum_exp;
use super::rate::ln_rate_evidence;
use super::ratio::{Pair, RatioInterval, RatioProcess, RatioTest};
use crate::error::{Error, Result};

/// At most this many latency boundaries per metric (the state grows by 256 bytes each).
pub const MAX_BOUNDARIES: usize = 3;

/// Share of a metric's weight given to its relative (ratio) arm when it also has an absolute
/// arm; the rest goes to the absolute arm.
pub const RELATIVE_SHARE: f64 = 0.9;

/// What a metric counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetricKind {
    /// Failed requests (5xx) among requests: `request-success-rate`.
    Errors,
    /// Requests slower than each boundary among requests: `request-duration`.
    Latency(Boundaries),
}

/// Where the latency boundaries come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Boundaries {
    /// The histogram bounds nearest these quantiles of the primary's pre-canary latency.
    Quantiles(Vec<f64>),
    /// These histogram bounds (milliseconds).
    Fixed(Vec<f64>),
}

impl Boundaries {
    fn slots(&self) -> usize {
        match self {
            Self::Quantiles(q) => q.len(),
            Self::Fixed(b) => b.len(),
        }
    }
}

/// Flagger's own threshold, tested as an upper bound on the canary's event rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Slo {
    /// At most this fraction of requests fail (`thresholdRange.min: 99` → 0.01).
    ErrorRate(f64),
    /// p99 at most this many milliseconds: at most 1% of requests slower than the first
    /// histogram bound at or above it.
    P99Ms(f64),
}

/// One metric as the judge sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// The canary's metric name (`request-success-rate`, `request-duration`).
    pub name: String,
    pub kind: MetricKind,
    pub tolerance: f64,
    pub margin: f64,
    /// Relative weight in the ROLLBACK average (normalised over the metrics).
    pub weight: f64,
    pub slo: Option<Slo>,
    /// PROMOTE needs at least this many events (both arms together, every slot).
    pub min_events: u64,
}

impl MetricSpec {
    /// Number of ratio processes this metric keeps.
    pub fn slots(&self) -> usize {
        match &self.kind {
            MetricKind::Errors => 1,
            MetricKind::Latency(b) => b.slots(),
        }
    }

    pub(crate) fn test(&self) -> RatioTest {
        RatioTest {
            tolerance: self.tolerance,
            margin: self.margin,
        }
    }
}

/// The histogram bounds nearest (on a log scale of the exceedance fraction) to each quantile
/// of the primary's latency in `baseline`, its histogram before the canary got traffic. Any
/// bound chosen from pre-canary data keeps the test valid; a good choice only adds power, so a
/// thin baseline is used as it is (the wiring reads the hour before the analysis).
pub fn choose_boundaries(baseline: &Histogram, quantiles: &[f64]) -> Result<Vec<f64>> {
    let n = baseline.count();
    if baseline.bounds_ms.is_empty() || n == 0 {
        return Err(Error::Judge(
            "latency boundaries: the primary's pre-canary histogram is empty; set the metric's templateVariables[judge.boundaries] instead".into(),
        ));
    }
    Ok(quantiles
        .iter()
        .map(|q| {
            let want = (1.0 - q).ln();
            let i = (0..baseline.bounds_ms.len())
                .min_by(|a, b| {
                    let d = |i: usize| {
                        let frac = (baseline.above(i) as f64 + 0.5) / n as f64;
                        (frac.ln() - want).abs()
                    };
                    d(*a).total_cmp(&d(*b))
                })
                .unwrap_or(0);
            baseline.bounds_ms[i]
        })
        .collect())
}

/// The slot pairs and absolute-arm counts of one metric in one interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MetricPairs {
    pub(crate) slots: Vec<Pair>,
    /// Canary events and requests for the absolute arm (none without an SLO or a bound ≥ it).
    pub(crate) abs: Option<(u64, u64)>,
}

/// Extracts what `spec` needs from one interval, with the run's latency `boundaries`.
pub(crate) fn metric_pairs(spec: &MetricSpec, boundaries: &[f64], c: &IntervalCounts) -> Result<MetricPairs> {
    match &spec.kind {
        MetricKind::Errors => {
            let pair = Pair {
                canary_events: c.canary.errors,
                canary_trials: c.canary.requests,
                primary_events: c.primary.errors,
                primary_trials: c.primary.requests,
            };
            let abs = match spec.slo {
                Some(Slo::ErrorRate(_)) => Some((c.canary.errors, c.canary.requests)),
                _ => None,
            };
            Ok(MetricPairs {
                slots: vec![pair],
                abs,
            })
        }
        MetricKind::Latency(_) => {
            let (Some(ch), Some(ph)) = (&c.canary.latency, &c.primary.latency) else {
                return Err(Error::Judge(format!(
                    "{}: the latency judge needs histogram counts for both arms (canary.latency and primary.latency)",
                    spec.name
                )));
            };
            let slots = boundaries
                .iter()
                .map(|b| {
                    let i = ch.bound_index(*b).ok_or_else(|| {
                        Error::Judge(format!(
                            "{}: the histogram has no bucket bound at {}ms (bounds {:?}); the buckets changed during the analysis",
                            spec.name, b, ch.bounds_ms
                        ))
                    })?;
                    Ok(Pair {
                        canary_events: ch.above(i),
                        canary_trials: ch.count(),
                        primary_events: ph.above(i),
                        primary_trials: ph.count(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let abs = match spec.slo {
                Some(Slo::P99Ms(limit)) => ch
                    .bounds_ms
                    .iter()
                    .position(|b| *b >= limit)
                    .map(|i| (ch.above(i), ch.count())),
                _ => None,
            };
            Ok(MetricPairs { slots, abs })
        }
    }
}

/// The evolving state of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricState {
    slots: Vec<RatioProcess>,
    canary_trials: u64,
    primary_trials: u64,
    abs_events: u64,
    abs_trials: u64,
}

impl MetricState {
    /// A fresh state for `spec`.
    pub fn new(spec: &MetricSpec) -> Self {
        Self {
            slots: vec![RatioProcess::default(); spec.slots()],
            canary_trials: 0,
            primary_trials: 0,
            abs_events: 0,
            abs_trials: 0,
        }
    }

    /// Bytes this state occupies, heap included.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.slots.capacity() * std::mem::size_of::<RatioProcess>()
    }

    pub(crate) fn observe(&mut self, spec: &MetricSpec, p: &MetricPairs) {
        let test = spec.test();
        for (slot, pair) in self.slots.iter_mut().zip(&p.slots) {
            slot.observe(&test, *pair);
        }
        if let Some(first) = p.slots.first() {
            self.canary_trials += first.canary_trials;
            self.primary_trials += first.primary_trials;
        }
        if let Some((e, n)) = p.abs {
            self.abs_events += e;
            self.abs_trials += n;
        }
    }

    /// ln of the relative arm's FAIL e-value: the mean over slots.
    fn ln_relative(&self) -> f64 {
        let terms: Vec<(f64, f64)> = self
            .slots
            .iter()
            .map(|s| (1.0 / self.slots.len() as f64, s.ln_fail()))
            .collect();
        ln_weighted_sum_exp(&terms)
    }

    fn ln_absolute(&self, spec: &MetricSpec) -> Option<f64> {
        let slo = match spec.slo? {
            Slo::ErrorRate(s) => s,
            Slo::P99Ms(_) => 0.01,
        };
        Some(ln_rate_evidence(slo, self.abs_events, self.abs_trials))
    }

    /// ln of the metric's FAIL e-value: relative and absolute arms averaged.
    pub fn ln_fail(&self, spec: &MetricSpec) -> f64 {
        match self.ln_absolute(spec) {
            Some(abs) => {
                ln_weighted_sum_exp(&[(RELATIVE_SHARE, self.ln_relative()), (1.0 - RELATIVE_SHARE, abs)])
            }
            None => self.ln_relative(),
        }
    }

    /// ln of the metric's PROMOTE e-value: every slot must show non-inferiority, so the least.
    pub fn ln_promote(&self) -> f64 {
        self.slots
            .iter()
            .map(RatioProcess::ln_promote)
            .fold(f64::INFINITY, f64::min)
    }

    /// Whether non-inferiority holds (`ln E_P ≥ ln_threshold`) with enough events.
    pub(crate) fn promotes(&self, spec: &MetricSpec, ln_threshold: f64) -> bool {
        self.ln_promote() >= ln_threshold && self.min_events() >= spec.min_events
    }

    /// Fewest events (both arms) over the slots.
    fn min_events(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.events().0 + s.events().1)
            .min()
            .unwrap_or(0)
    }

    /// The slot with the most FAIL evidence (what the explanation shows).
    fn shown_slot(&self) -> usize {
        (0..self.slots.len())
            .max_by(|a, b| self.slots[*a].ln_fail().total_cmp(&self.slots[*b].ln_fail()))
            .unwrap_or(0)
    }

    /// The metric's verdict. `share` is its normalised weight in the ROLLBACK average.
    pub(crate) fn verdict(
        &self,
        spec: &MetricSpec,
        boundaries: &[f64],
        share: f64,
        alpha: f64,
        promote_alpha: f64,
    ) -> MetricVerdict {
        let ln_fail = self.ln_fail(spec);
        let fail_threshold = 1.0 / (share * alpha);
        let ln_promote = self.ln_promote();
        let promote_threshold = 1.0 / promote_alpha;
        let enough = self.min_events() >= spec.min_events;
        let decision = if ln_fail >= fail_threshold.ln() {
            Decision::Rollback
        } else if self.promotes(spec, promote_threshold.ln()) {
            Decision::Promote
        } else {
            Decision::Continue
        };
        let k = self.shown_slot();
        let slot = &self.slots[k];
        let (canary_events, primary_events) = slot.events();
        let mut v = MetricVerdict {
            name: spec.name.clone(),
            decision,
            ln_fail,
            fail_threshold,
            ln_promote,
            promote_threshold,
            margin: spec.margin,
            ratio: slot.interval(alpha),
            confidence: 1.0 - alpha,
            boundary: slot_label(spec, boundaries, k),
            canary_events,
            canary_trials: self.canary_trials,
            primary_events,
            primary_trials: self.primary_trials,
            absolute: self.ln_absolute(spec).map(|ln| Absolute {
                ln_evidence: ln,
                rate: ratio_of(self.abs_events, self.abs_trials),
                slo: match spec.slo {
                    Some(Slo::ErrorRate(s)) => s,
                    _ => 0.01,
                },
            }),
            enough_events: enough,
            min_events: spec.min_events,
            explanation: String::new(),
        };
        v.explanation = v.explain();
        v
    }
}

/// How slot `k` reads: its bound when the run's boundaries are known, else its quantile.
fn slot_label(spec: &MetricSpec, boundaries: &[f64], k: usize) -> Option<String> {
    match &spec.kind {
        MetricKind::Errors => None,
        MetricKind::Latency(_) if k < boundaries.len() => Some(fmt_ms(boundaries[k])),
        MetricKind::Latency(Boundaries::Fixed(b)) => b.get(k).map(|b| fmt_ms(*b)),
        MetricKind::Latency(Boundaries::Quantiles(q)) => q.get(k).map(|q| format!("p{}", fmt_quantile(*q))),
    }
}

fn fmt_quantile(q: f64) -> String {
    let p = q * 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

fn ratio_of(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What the judge decides, per metric and per canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Continue,
    Rollback,
    Promote,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Rollback => "rollback",
            Self::Promote => "promote",
        }
    }
}

/// The absolute arm's state, for display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Absolute {
    pub ln_evidence: f64,
    /// The canary's observed event rate.
    pub rate: f64,
    pub slo: f64,
}

/// One metric's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricVerdict {
    pub name: String,
    pub decision: Decision,
    /// ln of the FAIL e-value (relative and absolute arms).
    pub ln_fail: f64,
    /// `1 / (share × α)`: this metric alone rolls back at this evidence.
    pub fail_threshold: f64,
    /// ln of the non-inferiority e-value (least over latency boundaries).
    pub ln_promote: f64,
    pub promote_threshold: f64,
    pub margin: f64,
    /// Confidence sequence of the ratio (of the boundary with the most evidence).
    pub ratio: RatioInterval,
    pub confidence: f64,
    /// The latency boundary shown: "200ms", or "p99" for pooled evidence where every cluster
    /// has its own bound near its primary's p99 (None for errors).
    pub boundary: Option<String>,
    pub canary_events: u64,
    pub canary_trials: u64,
    pub primary_events: u64,
    pub primary_trials: u64,
    pub absolute: Option<Absolute>,
    pub enough_events: bool,
    pub min_events: u64,
    /// "error ratio canary/primary ∈ [1.8, 6.1] (95%), evidence 31 ≥ 20: rollback"
    pub explanation: String,
}

impl MetricVerdict {
    fn what(&self) -> String {
        match &self.boundary {
            Some(b) => format!("slower-than-{b} ratio canary/primary"),
            None => "error ratio canary/primary".into(),
        }
    }

    fn explain(&self) -> String {
        let events = if self.boundary.is_some() {
            "slow requests"
        } else {
            "errors"
        };
        if self.ratio.estimate.is_none() && self.decision == Decision::Continue {
            return format!(
                "no {events} yet (canary {} of {} requests, primary {} of {}): continue",
                fmt_count(self.canary_events),
                fmt_count(self.canary_trials),
                fmt_count(self.primary_events),
                fmt_count(self.primary_trials)
            );
        }
        // 95, or 99.5 for the pool's anytime evidence at 0.1 α.
        let level = (self.confidence * 1000.0).round() / 10.0;
        let head = format!("{} {} ({level}%)", self.what(), fmt_ratio_interval(&self.ratio));
        let fail = format!(
            "evidence {} {} {}",
            fmt_e(self.ln_fail),
            if self.decision == Decision::Rollback {
                "≥"
            } else {
                "<"
            },
            fmt_e(self.fail_threshold.ln())
        );
        let abs = match self.absolute {
            Some(a) if a.ln_evidence > self.ln_fail - 1.0 && a.rate > a.slo => format!(
                " (canary {} {} above the SLO {})",
                if self.boundary.is_some() {
                    "slow-request rate"
                } else {
                    "error rate"
                },
                fmt_pct(a.rate),
                fmt_pct(a.slo)
            ),
            _ => String::new(),
        };
        match self.decision {
            Decision::Rollback => format!("{head}, {fail}{abs}: rollback"),
            Decision::Promote => format!(
                "{head}, non-inferiority evidence {} ≥ {} (margin {}): promote",
                fmt_e(self.ln_promote),
                fmt_e(self.promote_threshold.ln()),
                self.margin
            ),
            Decision::Continue => {
                let mut s = format!(
                    "{head}, {fail}{abs}, non-inferiority {} {} {} (margin {})",
                    fmt_e(self.ln_promote),
                    if self.ln_promote >= self.promote_threshold.ln() {
                        "≥"
                    } else {
                        "<"
                    },
                    fmt_e(self.promote_threshold.ln()),
                    self.margin
                );
                if !self.enough_events {
                    s.push_str(&format!(", fewer than {} {events}", self.min_events));
                }
                s.push_str(": continue");
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency_spec() -> MetricSpec {
        MetricSpec {
            name: "request-duration".into(),
            kind: MetricKind::Latency(Boundaries::Quantiles(vec![0.9, 0.99])),
            tolerance: 1.0,
            margin: 1.5,
            weight: 1.0,
            slo: Some(Slo::P99Ms(500.0)),
            min_events: 20,
        }
    }

    #[test]
    fn boundaries_near_the_primarys_quantiles() {
        // 10,000 requests: 12% above 100ms, 1.1% above 200ms, 0.3% above 250ms.
        let h = Histogram {
            bounds_ms: vec![25.0, 50.0, 100.0, 200.0, 250.0, 500.0],
            cumulative: vec![1000, 5000, 8800, 9890, 9970, 9998, 10000],
        };
        assert_eq!(choose_boundaries(&h, &[0.9, 0.99]).unwrap(), vec![100.0, 200.0]);
        let empty = Histogram {
            bounds_ms: vec![100.0],
            cumulative: vec![0, 0],
        };
        let e = choose_boundaries(&empty, &[0.9, 0.99]).unwrap_err().to_string();
        assert!(e.contains("judge.boundaries"), "{e}");
    }

    #[test]
    fn latency_pairs_use_the_runs_boundaries_and_the_slo_bound() {
        let h = |cum: Vec<u64>| Histogram {
            bounds_ms: vec![100.0, 200.0, 500.0, 1000.0],
            cumulative: cum,
        };
        let c = IntervalCounts {
            seconds: 15.0,
            canary: super::super::counts::ArmCounts {
                requests: 100,
                errors: 0,
                latency: Some(h(vec![80, 95, 98, 100, 100])),
            },
            primary: super::super::counts::ArmCounts {
                requests: 900,
                errors: 0,
                latency: Some(h(vec![800, 890, 899, 900, 900])),
            },
        };
        let p = metric_pairs(&latency_spec(), &[100.0, 200.0], &c).unwrap();
        assert_eq!(
            p.slots[0],
            Pair {
                canary_events: 20,
                canary_trials: 100,
                primary_events: 100,
                primary_trials: 900
            }
        );
        assert_eq!(p.slots[1].canary_events, 5);
        assert_eq!(p.abs, Some((2, 100)));
        let e = metric_pairs(&latency_spec(), &[150.0], &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bucket bound at 150ms"), "{e}");
    }

    #[test]
    fn state_sizes() {
        let errors = MetricSpec {
            name: "request-success-rate".into(),
            kind: MetricKind::Errors,
            tolerance: 1.0,
            margin: 2.0,
            weight: 1.0,
            slo: Some(Slo::ErrorRate(0.01)),
            min_events: 20,
        };
        assert_eq!(std::mem::size_of::<MetricState>(), 56);
        assert_eq!(MetricState::new(&errors).state_bytes(), 312);
        assert_eq!(MetricState::new(&latency_spec()).state_bytes(), 568);
    }
}
