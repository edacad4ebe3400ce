//! Pooled evidence in a fleet rollout (`spec.evidence`): the agents' judge reports pooled by
//! [`FleetJudge`], and the two decisions taken on them.
//!
//! - **Stop**: when the pooled ROLLBACK evidence reaches its threshold the rollout rolls back,
//!   even if no cluster failed. Anytime-valid: it may be checked after every report.
//! - **Planned look** (`plannedLook`, on by default in a rollout of two waves or more): once,
//!   when the last wave would open, the exact test of the canary's share of every error so far
//!   (each error is the canary's with its stratum's canary share under "no regression"), at
//!   [`LOOK_SHARE`]` × α`; the anytime evidence runs at the rest of α, so the two together keep
//!   the false-stop bound α (a union bound). The rollout's gate before its last wave is the one
//!   moment whose timing is known in advance, and a test aimed at one moment is what reaches a
//!   regression too small for continuous monitoring before the last wave (docs/benchmarks.md,
//!   S7: even an anytime test that knew the effect size would miss it in 3 of 10 rollouts).
//! - **Advance** (`advance`): a baking wave ends once `bake.duration` passed and the pooled
//!   non-inferiority (PROMOTE) evidence holds, without waiting for `bake.minRequests`.
//!
//! The pool judges errors and latency (requests slower than each cluster's own bounds near its
//! primary's p90 and p99, pooled slot by slot), with equal weights; a cluster that reports no
//! histograms adds to the errors only. The planned look tests errors.

use aviary_api::FleetRolloutSpec;
use serde::{Deserialize, Serialize};

use super::rollout::RolloutState;
use crate::error::Result;
use crate::judge::config::{
    DEFAULT_ALPHA, DEFAULT_ERROR_MARGIN, DEFAULT_LATENCY_MARGIN, DEFAULT_MIN_EVENTS, DEFAULT_QUANTILES,
};
use crate::judge::explain::fmt_sig2;
use crate::judge::{
    Added, Boundaries, Decision, EvidenceReport, FleetJudge, FleetVerdict, IntervalCounts, JudgeSpec,
    MetricKind, MetricSpec,
};

/// The planned look's share of α; the anytime evidence keeps the rest. The look is the more
/// powerful test at the gate (its exact, discrete test spends about 0.035 of a nominal 0.045), the
/// anytime evidence stops a clearly bad wave early; see docs/statistical-analysis.md.
pub const LOOK_SHARE: f64 = 0.9;

/// `spec.evidence`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidencePlan {
    pub alpha: f64,
    pub advance: bool,
    pub planned_look: bool,
}

/// The plan's evidence settings, or the error (field path, what is expected).
pub fn evidence_plan(spec: &FleetRolloutSpec) -> std::result::Result<Option<EvidencePlan>, (String, String)> {
    let Some(e) = &spec.evidence else {
        return Ok(None);
    };
    let alpha = e.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha <= 0.5) {
        return Err((
            "spec.evidence.alpha".into(),
            format!("{alpha} is not a probability in (0, 0.5]; use e.g. 0.05"),
        ));
    }
    if !e.pooled.unwrap_or(false) {
        if e.advance.unwrap_or(false) || e.planned_look == Some(true) {
            return Err((
                "spec.evidence.pooled".into(),
                "advance and plannedLook act on pooled evidence; set pooled: true".into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(EvidencePlan {
        alpha,
        advance: e.advance.unwrap_or(false),
        planned_look: e.planned_look.unwrap_or(true),
    }))
}

/// The pooled evidence of one rollout (persisted with its state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PooledEvidence {
    pub plan: EvidencePlan,
    judge: FleetJudge,
    look: ShareLook,
    /// The planned look's p-value, once taken.
    pub look_p: Option<f64>,
    /// Reports refused (outside the plan, replaced, unusable), with the last reason.
    pub refused: u64,
    pub last_refusal: String,
}

impl PooledEvidence {
    /// A pool over the planned clusters. `waves`: the plan's number of waves (a planned look
    /// needs a last wave after a first).
    pub fn new(mut plan: EvidencePlan, planned: Vec<String>, waves: usize) -> Result<Self> {
        plan.planned_look &= waves >= 2;
        let alpha = if plan.planned_look {
            plan.alpha * (1.0 - LOOK_SHARE)
        } else {
            plan.alpha
        };
        let metric = |name: &str, kind: MetricKind, margin: f64| MetricSpec {
            name: name.into(),
            kind,
            tolerance: 1.0,
            margin,
            weight: 1.0,
            slo: None,
            min_events: DEFAULT_MIN_EVENTS,
        };
        let spec = JudgeSpec {
            alpha,
            promote_alpha: plan.alpha,
            min_bake_seconds: 0.0,
            metrics: vec![
                metric(
                    aviary_api::canary::BUILTIN_SUCCESS_RATE,
                    MetricKind::Errors,
                    DEFAULT_ERROR_MARGIN,
                ),
                metric(
                    aviary_api::canary::BUILTIN_DURATION,
                    MetricKind::Latency(Boundaries::Quantiles(DEFAULT_QUANTILES.to_vec())),
                    DEFAULT_LATENCY_MARGIN,
                ),
            ],
        };
        Ok(Self {
            plan,
            judge: FleetJudge::new(spec, planned)?,
            look: ShareLook::default(),
            look_p: None,
            refused: 0,
            last_refusal: String::new(),
        })
    }

    /// Adds one report (idempotent). A refused report is counted, never fatal.
    pub fn add(&mut self, r: &EvidenceReport) -> Option<Added> {
        match self.judge.add(r) {
            Ok(Added::New) => {
                self.look.add(&r.counts);
                Some(Added::New)
            }
            Ok(Added::Duplicate) => Some(Added::Duplicate),
            Err(e) => {
                self.refused += 1;
                self.last_refusal = e.to_string();
                None
            }
        }
    }

    /// The anytime verdict now.
    pub fn verdict(&self) -> FleetVerdict {
        self.judge.verdict()
    }

    /// The pool itself (its shared and per-cluster e-processes).
    pub fn judge(&self) -> &FleetJudge {
        &self.judge
    }

    /// Takes the planned look (once): `Some(reason)` when it says stop.
    pub fn take_look(&mut self) -> Option<String> {
        if !self.plan.planned_look || self.look_p.is_some() {
            return None;
        }
        let p = self.look.p_value();
        self.look_p = Some(p);
        let level = self.plan.alpha * LOOK_SHARE;
        (p <= level).then(|| {
            format!(
                "pooled evidence, planned look at the last wave: the canary has {} of {} errors, p = {} ≤ {}",
                self.look.canary_errors,
                self.look.errors(),
                fmt_sig2(p),
                fmt_sig2(level)
            )
        })
    }

    /// One line for status and history.
    pub fn summary(&self) -> String {
        let v = self.verdict();
        let look = match self.look_p {
            Some(p) => format!("; planned look p = {}", fmt_sig2(p)),
            None => String::new(),
        };
        format!("{}{look}", v.explanation)
    }
}

/// The planned look's data: strata as (canary share, errors), and the canary's errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShareLook {
    canary_errors: u64,
    strata: Vec<(f64, u64)>,
}

/// The exact law is a convolution over every error: beyond this many the look uses the normal
/// approximation with continuity correction (its error is far below the α at stake).
const EXACT_UP_TO: u64 = 5_000;

impl ShareLook {
    fn add(&mut self, c: &IntervalCounts) {
        let n = c.canary.requests + c.primary.requests;
        let m = c.canary.errors + c.primary.errors;
        if n == 0 || m == 0 {
            return;
        }
        self.canary_errors += c.canary.errors;
        self.strata.push((c.canary.requests as f64 / n as f64, m));
    }

    fn errors(&self) -> u64 {
        self.strata.iter().map(|s| s.1).sum()
    }

    /// P(at least this many canary errors) when each error is the canary's with its stratum's
    /// share.
    fn p_value(&self) -> f64 {
        let m = self.errors();
        if m == 0 {
            return 1.0;
        }
        if m > EXACT_UP_TO {
            self.normal_p()
        } else {
            self.exact_p()
        }
    }

    fn exact_p(&self) -> f64 {
        let mut dist = vec![1.0];
        for (pi, m) in &self.strata {
            for _ in 0..*m {
                let mut next = vec![0.0; dist.len() + 1];
                for (k, p) in dist.iter().enumerate() {
                    next[k] += p * (1.0 - pi);
                    next[k + 1] += p * pi;
                }
                dist = next;
            }
        }
        dist.iter()
            .skip(self.canary_errors as usize)
            .sum::<f64>()
            .min(1.0)
    }

    fn normal_p(&self) -> f64 {
        let mean: f64 = self.strata.iter().map(|(p, m)| p * *m as f64).sum();
        let var: f64 = self.strata.iter().map(|(p, m)| p * (1.0 - p) * *m as f64).sum();
        let z = (self.canary_errors as f64 - 0.5 - mean) / var.sqrt().max(1e-12);
        0.5 * erfc(z / std::f64::consts::SQRT_2)
    }
}

/// The complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Adds an agent's report to the rollout's pool: `None` when the rollout pools nothing, has
/// ended or is rolling back (evidence no longer decides anything), or the report was refused.
pub fn add_evidence(state: &mut RolloutState, r: &EvidenceReport) -> Option<Added> {
    if state.phase.is_terminal() || state.rollback.is_some() {
        return None;
    }
    state.evidence.as_mut()?.add(r)
}

/// Whether the pool's verdict lets a baking wave end early.
pub fn promotes(e: &PooledEvidence) -> bool {
    e.plan.advance && e.verdict().decision == Decision::Promote
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::ArmCounts;

    fn counts(c: (u64, u64), p: (u64, u64)) -> IntervalCounts {
        IntervalCounts {
            seconds: 30.0,
            canary: ArmCounts {
                requests: c.0,
                errors: c.1,
                latency: None,
            },
            primary: ArmCounts {
                requests: p.0,
                errors: p.1,
                latency: None,
            },
        }
    }

    #[test]
    fn the_look_is_the_exact_share_test() {
        let mut l = ShareLook::default();
        // one stratum, share 1/2, 2 errors both the canary's: P = 1/4
        l.add(&counts((10, 2), (10, 0)));
        assert!((l.p_value() - 0.25).abs() < 1e-12);
        // a stratum without errors changes nothing
        l.add(&counts((10, 0), (10, 0)));
        assert!((l.p_value() - 0.25).abs() < 1e-12);
        // the normal approximation agrees with the exact law where it takes over
        let mut big = ShareLook::default();
        big.add(&counts((1000, 120), (9000, 880)));
        let (exact, approx) = (big.exact_p(), big.normal_p());
        assert!(
            exact < 0.05 && (approx / exact - 1.0).abs() < 0.25,
            "{exact} {approx}"
        );
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(1.0) - 0.157_299_207).abs() < 1e-6);
    }

    #[test]
    fn evidence_settings_are_validated() {
        let mut spec = FleetRolloutSpec::default();
        assert_eq!(evidence_plan(&spec), Ok(None));
        spec.evidence = Some(aviary_api::fleet::EvidenceSpec {
            pooled: Some(true),
            alpha: Some(0.7),
            ..Default::default()
        });
        assert_eq!(evidence_plan(&spec).unwrap_err().0, "spec.evidence.alpha");
        spec.evidence = Some(aviary_api::fleet::EvidenceSpec {
            advance: Some(true),
            ..Default::default()
        });
        assert_eq!(evidence_plan(&spec).unwrap_err().0, "spec.evidence.pooled");
        spec.evidence = Some(aviary_api::fleet::EvidenceSpec {
            pooled: Some(true),
            planned_look: Some(true),
            ..Default::default()
        });
        let p = evidence_plan(&spec).unwrap().unwrap();
        assert_eq!((p.alpha, p.advance, p.planned_look), (0.05, false, true));
        // The look is on unless turned off.
        spec.evidence = Some(aviary_api::fleet::EvidenceSpec {
            pooled: Some(true),
            ..Default::default()
        });
        assert!(evidence_plan(&spec).unwrap().unwrap().planned_look);
        spec.evidence = Some(aviary_api::fleet::EvidenceSpec {
            pooled: Some(true),
            planned_look: Some(false),
            ..Default::default()
        });
        assert!(!evidence_plan(&spec).unwrap().unwrap().planned_look);
    }
}
