//! The absolute arm: Flagger's own threshold made anytime-valid. H0: the canary's event rate
//! (errors, or requests slower than the latency limit) is at most the SLO `s`; the e-value is a
//! mixture over `p = s × RATE_ALTERNATIVES` of the likelihood ratio against `p = s`.
//!
//! Every component is a supermartingale for every rate `≤ s`, even one that changes over time
//! (its one-request mean `p p'/s + (1−p)(1−p')/(1−s)` is at most 1 when `p ≤ s < p'`), so the
//! mixture is an e-process for the composite null. The state is the canary's event and request
//! counts, which the metric keeps anyway.

use super::lnsum::ln_sum_exp;

/// Alternatives as multiples of the SLO (equal weights; those at or above rate 1 drop out).
pub const RATE_ALTERNATIVES: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// ln of the e-value against "the rate is at most `slo`" after `events` of `trials`.
pub fn ln_rate_evidence(slo: f64, events: u64, trials: u64) -> f64 {
    if trials == 0 || !(slo > 0.0 && slo < 1.0) {
        return 0.0;
    }
    let (x, rest) = (events as f64, (trials - events.min(trials)) as f64);
    let terms: Vec<f64> = RATE_ALTERNATIVES
        .iter()
        .map(|c| slo * c)
        .filter(|p| *p < 1.0)
        .map(|p| x * (p / slo).ln() + rest * ((1.0 - p) / (1.0 - slo)).ln())
        .collect();
    ln_sum_exp(&terms) - (RATE_ALTERNATIVES.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_grows_only_above_the_slo() {
        // 1% SLO: 0.1% errors gives no evidence, 5% gives overwhelming evidence.
        assert!(ln_rate_evidence(0.01, 10, 10_000) < -10.0);
        assert!(ln_rate_evidence(0.01, 50, 1_000) > 20.0);
        assert_eq!(ln_rate_evidence(0.01, 0, 0), 0.0);
        // At the SLO itself the evidence stays small.
        assert!(ln_rate_evidence(0.01, 100, 10_000) < 3.0);
    }
}
