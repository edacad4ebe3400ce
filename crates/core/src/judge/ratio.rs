//! The conditional-binomial e-process on the canary/primary rate ratio `r = p_c / p_p`.
//!
//! In each stratum (one interval of one cluster) the canary served `n_c` requests and the
//! primary `n_p`, and `m = x + y` of them were events (errors, or requests slower than a latency
//! boundary), `x` on the canary. Given the requests and `m`, `x ~ Bin(m, θ(r))` with
//! `θ(r) = π r / (π r + 1 − π)` and `π = n_c / (n_c + n_p)` the realised canary share, so the
//! base rate, the traffic and Flagger's weights may change freely between strata (Lindon & Malek's
//! model, stratified). The log-likelihood ratio of `r` against `r0` in one stratum is
//! `x ln(r/r0) − m ln((1 + π(r−1)) / (1 + π(r0−1)))`.
//!
//! Three things are kept, all additive over strata:
//! - `fail`: a mixture over alternatives `r = tolerance × FAIL_ALTERNATIVES` against
//!   `r = tolerance`. Every component is a supermartingale for every `r ≤ tolerance` (its
//!   one-stratum mean is increasing in the true `θ` and equal to 1 at `θ(tolerance)`), so by
//!   Ville's inequality the mixture reaches `1/α` with probability at most `α`.
//! - `promote`: the mirror image for non-inferiority, alternatives `margin × PROMOTE_ALTERNATIVES`
//!   against `r = margin`, a supermartingale for every `r ≥ margin`.
//! - `grid`: the log-likelihood ratio of `r = 2^(k/4)` against `r = 1` on a fixed grid, only for
//!   the confidence sequence shown to people (stored as `f32`: it never decides anything).
//!
//! Exactness: with per-request routing, under `r = 1` the canary's share of the events given the
//! requests is hypergeometric, which is dominated in convex order by the binomial used here
//! (Hoeffding 1963, Thm 4), and for `r < 1` it is stochastically smaller still; so the FAIL
//! process is a supermartingale exactly, not only for rare events. Elsewhere (the PROMOTE
//! margin, a tolerance above 1) the binomial is the Poisson limit; the property tests check the
//! mean at event rates up to 50%.

use super::lnsum::{ln_mean_exp, log_interp};

/// Alternatives of the FAIL mixture, as multiples of the tolerance (equal weights).
pub const FAIL_ALTERNATIVES: [f64; 8] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0];
/// Alternatives of the PROMOTE mixture, as multiples of the margin (equal weights).
pub const PROMOTE_ALTERNATIVES: [f64; 6] = [0.25, 0.35, 0.5, 0.6, 0.7, 0.8];

/// The display grid: `r = 2^(k/4)` for `k = GRID_FIRST ..= GRID_FIRST + GRID_LEN − 1`
/// (0.25 to 32).
const GRID_FIRST: i32 = -8;
const GRID_LEN: usize = 29;
/// Offsets (in grid steps, both directions) of the two-sided mixture behind the interval.
const CS_OFFSETS: [usize; 7] = [1, 2, 3, 4, 6, 8, 12];

/// The events and trials of one stratum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pair {
    /// Canary events (`x`).
    pub canary_events: u64,
    /// Canary requests (`n_c`).
    pub canary_trials: u64,
    /// Primary events (`y`).
    pub primary_events: u64,
    /// Primary requests (`n_p`).
    pub primary_trials: u64,
}

/// What the ratio test compares against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioTest {
    /// ROLLBACK's null is `r ≤ tolerance` (1: the canary is no worse than the primary).
    pub tolerance: f64,
    /// PROMOTE's null is `r ≥ margin` (the canary is at least this much worse).
    pub margin: f64,
}

/// A confidence interval for the ratio; `None` is beyond the grid (below 0.25 or above 32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioInterval {
    /// Maximum-likelihood estimate on the grid (None without events).
    pub estimate: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

/// The e-process state of one ratio (one metric, or one latency boundary): 256 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioProcess {
    fail: [f64; FAIL_ALTERNATIVES.len()],
    promote: [f64; PROMOTE_ALTERNATIVES.len()],
    grid: [f32; GRID_LEN],
    canary_events: u64,
    primary_events: u64,
    /// Largest ln FAIL evidence seen (for the anytime p-value).
    max_ln_fail: f64,
}

impl Default for RatioProcess {
    fn default() -> Self {
        Self {
            fail: [0.0; FAIL_ALTERNATIVES.len()],
            promote: [0.0; PROMOTE_ALTERNATIVES.len()],
            grid: [0.0; GRID_LEN],
            canary_events: 0,
            primary_events: 0,
            max_ln_fail: 0.0,
        }
    }
}

/// `ln((1 + π(r−1)))`, the per-event normaliser of `θ(r)`.
fn ln_norm(pi: f64, r: f64) -> f64 {
    (pi * (r - 1.0)).ln_1p()
}

/// The log-likelihood ratio of `r` against `r0` in one stratum.
fn llr(x: f64, m: f64, pi: f64, r: f64, r0: f64) -> f64 {
    x * (r / r0).ln() - m * (ln_norm(pi, r) - ln_norm(pi, r0))
}

fn grid_ratio(k: usize) -> f64 {
    2f64.powf((k as i32 + GRID_FIRST) as f64 / 4.0)
}

impl RatioProcess {
    /// Adds one stratum. Strata without events or without one of the arms carry no
    /// information about the ratio and change nothing but the counts.
    pub fn observe(&mut self, test: &RatioTest, s: Pair) {
        self.canary_events += s.canary_events;
        self.primary_events += s.primary_events;
        let m = s.canary_events + s.primary_events;
        if m == 0 || s.canary_trials == 0 || s.primary_trials == 0 {
            return;
        }
        let pi = s.canary_trials as f64 / (s.canary_trials + s.primary_trials) as f64;
        let (x, m) = (s.canary_events as f64, m as f64);
        for (acc, c) in self.fail.iter_mut().zip(FAIL_ALTERNATIVES) {
            *acc += llr(x, m, pi, test.tolerance * c, test.tolerance);
        }
        for (acc, c) in self.promote.iter_mut().zip(PROMOTE_ALTERNATIVES) {
            *acc += llr(x, m, pi, test.margin * c, test.margin);
        }
        for (k, acc) in self.grid.iter_mut().enumerate() {
            *acc += llr(x, m, pi, grid_ratio(k), 1.0) as f32;
        }
        self.max_ln_fail = self.max_ln_fail.max(self.ln_fail());
    }

    /// ln of the FAIL e-value (evidence that `r > tolerance`).
    pub fn ln_fail(&self) -> f64 {
        ln_mean_exp(&self.fail)
    }

    /// ln of the PROMOTE e-value (evidence that `r < margin`).
    pub fn ln_promote(&self) -> f64 {
        ln_mean_exp(&self.promote)
    }

    /// The largest ln FAIL e-value so far.
    pub fn max_ln_fail(&self) -> f64 {
        self.max_ln_fail
    }

    /// Events seen on each arm: (canary, primary).
    pub fn events(&self) -> (u64, u64) {
        (self.canary_events, self.primary_events)
    }

    /// The `1 − alpha` confidence sequence for the ratio, read off the grid: the grid points
    /// whose two-sided mixture e-value stays below `1/alpha`, with the ends interpolated between
    /// grid points (display only).
    pub fn interval(&self, alpha: f64) -> RatioInterval {
        if self.grid.iter().all(|v| *v == 0.0) {
            return RatioInterval {
                estimate: None,
                lo: None,
                hi: None,
            };
        }
        let level = (1.0 / alpha).ln();
        let ln_e: Vec<f64> = (0..GRID_LEN).map(|k| self.two_sided(k)).collect();
        let inside: Vec<usize> = (0..GRID_LEN).filter(|&k| ln_e[k] < level).collect();
        let estimate = Some(self.estimate());
        let (Some(&first), Some(&last)) = (inside.first(), inside.last()) else {
            // Every grid ratio is rejected: the truth is beyond an end of the grid.
            let top = self.argmax() == GRID_LEN - 1;
            return if top {
                RatioInterval {
                    estimate,
                    lo: Some(grid_ratio(GRID_LEN - 1)),
                    hi: None,
                }
            } else {
                RatioInterval {
                    estimate,
                    lo: None,
                    hi: Some(grid_ratio(0)),
                }
            };
        };
        let crossing = |out: usize, inn: usize| {
            let t = ((ln_e[out] - level) / (ln_e[out] - ln_e[inn])).clamp(0.0, 1.0);
            log_interp(grid_ratio(out), grid_ratio(inn), t)
        };
        RatioInterval {
            estimate,
            lo: (first > 0).then(|| crossing(first - 1, first)),
            hi: (last < GRID_LEN - 1).then(|| crossing(last + 1, last)),
        }
    }

    /// ln of the two-sided mixture e-value against `r = grid_ratio(k)`; components beyond the
    /// grid count as zero (conservative).
    fn two_sided(&self, k: usize) -> f64 {
        let here = f64::from(self.grid[k]);
        let mut terms = Vec::with_capacity(2 * CS_OFFSETS.len());
        for o in CS_OFFSETS {
            for j in [k.checked_sub(o), Some(k + o).filter(|j| *j < GRID_LEN)]
                .into_iter()
                .flatten()
            {
                terms.push(f64::from(self.grid[j]) - here);
            }
        }
        let n = (2 * CS_OFFSETS.len()) as f64;
        super::lnsum::ln_sum_exp(&terms) - n.ln()
    }

    fn argmax(&self) -> usize {
        (0..GRID_LEN)
            .max_by(|a, b| self.grid[*a].total_cmp(&self.grid[*b]))
            .unwrap_or(0)
    }

    /// Maximum-likelihood ratio, refined by a parabola through the best grid point and its
    /// neighbours.
    fn estimate(&self) -> f64 {
        let k = self.argmax();
        if k == 0 || k == GRID_LEN - 1 {
            return grid_ratio(k);
        }
        let (a, b, c) = (
            f64::from(self.grid[k - 1]),
            f64::from(self.grid[k]),
            f64::from(self.grid[k + 1]),
        );
        let denom = a - 2.0 * b + c;
        let shift = if denom < 0.0 {
            (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        2f64.powf((k as f64 + shift + f64::from(GRID_FIRST)) / 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: RatioTest = RatioTest {
        tolerance: 1.0,
        margin: 2.0,
    };

    fn pair(x: u64, nc: u64, y: u64, np: u64) -> Pair {
        Pair {
            canary_events: x,
            canary_trials: nc,
            primary_events: y,
            primary_trials: np,
        }
    }

    #[test]
    fn state_is_256_bytes() {
        assert_eq!(std::mem::size_of::<RatioProcess>(), 256);
    }

    #[test]
    fn no_events_no_evidence() {
        let mut p = RatioProcess::default();
        p.observe(&T, pair(0, 1000, 0, 9000));
        p.observe(&T, pair(0, 0, 3, 9000));
        assert_eq!(p.ln_fail(), 0.0);
        assert_eq!(p.ln_promote(), 0.0);
        let ci = p.interval(0.05);
        assert_eq!((ci.estimate, ci.lo, ci.hi), (None, None, None));
    }

    #[test]
    fn a_fivefold_canary_is_rejected_and_the_interval_covers_five() {
        let mut p = RatioProcess::default();
        // 10% canary, canary 0.5%, primary 0.1%, ten strata of 12,000 requests.
        for _ in 0..10 {
            p.observe(&T, pair(6, 1200, 11, 10800));
        }
        assert!(p.ln_fail() > (20f64).ln(), "{}", p.ln_fail());
        assert!(p.ln_promote() < 0.0);
        let ci = p.interval(0.05);
        let (lo, hi) = (ci.lo.unwrap(), ci.hi.unwrap());
        assert!(lo < 5.0 && 5.0 < hi && lo > 1.0, "{lo} {hi}");
        let est = ci.estimate.unwrap();
        assert!((est - 5.05).abs() < 0.5, "{est}");
    }

    #[test]
    fn equal_rates_build_promote_evidence_not_fail_evidence() {
        let mut p = RatioProcess::default();
        for _ in 0..40 {
            p.observe(&T, pair(5, 5000, 45, 45000));
        }
        assert!(p.ln_fail() < 0.0);
        assert!(p.ln_promote() > (20f64).ln());
        let ci = p.interval(0.05);
        assert!(ci.lo.unwrap() < 1.0 && ci.hi.unwrap() > 1.0);
    }

    #[test]
    fn the_share_is_what_counts_not_the_raw_counts() {
        // Same events, different shares: 3 of 10 events on a 30% canary is no evidence at all.
        let mut fair = RatioProcess::default();
        fair.observe(&T, pair(30, 3000, 70, 7000));
        let mut unfair = RatioProcess::default();
        unfair.observe(&T, pair(30, 1000, 70, 9000));
        assert!(fair.ln_fail() < 0.0);
        assert!(unfair.ln_fail() > 5.0);
    }

    #[test]
    fn beyond_the_grid_the_interval_is_open() {
        let mut p = RatioProcess::default();
        p.observe(&T, pair(500, 1000, 10, 9000));
        let ci = p.interval(0.05);
        assert_eq!(ci.hi, None);
        assert!(ci.lo.unwrap() > 20.0);
    }
}
