//! A Kayenta-like judge (the optional arm K): every analysis interval, a fixed-sample
//! Mann-Whitney test (98% confidence, one-sided "canary higher") per metric over all
//! 15-second points so far, re-run at every look without correction, as Kayenta's
//! NetflixACAJudge does per interval. Metrics: the error rate and the p99 of each point. A metric
//! is "High" when the test rejects and the canary's mean is higher; with two metrics one High
//! scores 50 < marginal 75, a failure.

use aviary_core::judge::IntervalCounts;

use crate::flagger::histogram_quantile;
use crate::model::normal_cdf;

/// One-sided level (98% two-sided confidence interval).
const LEVEL: f64 = 0.01;
/// Points per arm before the test runs.
const MIN_POINTS: usize = 3;

#[derive(Debug, Default, Clone)]
pub struct Kayenta {
    errors: [Vec<f64>; 2],
    p99: [Vec<f64>; 2],
}

impl Kayenta {
    /// Adds one 15-second point per arm (arms without requests give no point).
    pub fn observe(&mut self, c: &IntervalCounts) {
        for (i, arm) in [&c.canary, &c.primary].into_iter().enumerate() {
            if arm.requests > 0 {
                self.errors[i].push(arm.errors as f64 / arm.requests as f64);
            }
            if let Some(q) = arm.latency.as_ref().and_then(|h| histogram_quantile(0.99, h)) {
                self.p99[i].push(q);
            }
        }
    }

    /// Whether the canary fails at this look.
    pub fn fails(&self) -> bool {
        high(&self.errors[0], &self.errors[1]) || high(&self.p99[0], &self.p99[1])
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Mann-Whitney U, normal approximation with tie correction, one-sided (canary higher).
fn high(canary: &[f64], primary: &[f64]) -> bool {
    let (n1, n2) = (canary.len(), primary.len());
    if n1 < MIN_POINTS || n2 < MIN_POINTS || mean(canary) <= mean(primary) {
        return false;
    }
    let mut all: Vec<(f64, usize)> = canary
        .iter()
        .map(|x| (*x, 0))
        .chain(primary.iter().map(|x| (*x, 1)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        rank_sum += all[i..j].iter().filter(|(_, arm)| *arm == 0).count() as f64 * avg;
        i = j;
    }
    let (a, b) = (n1 as f64, n2 as f64);
    let u = rank_sum - a * (a + 1.0) / 2.0;
    let var = a * b / 12.0 * ((a + b + 1.0) - ties / ((a + b) * (a + b - 1.0)));
    if var <= 0.0 {
        return false;
    }
    let z = (u - a * b / 2.0 - 0.5) / var.sqrt();
    1.0 - normal_cdf(z) < LEVEL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_sees_a_clear_shift_and_not_noise() {
        let lo: Vec<f64> = (0..20).map(f64::from).collect();
        let hi: Vec<f64> = (10..30).map(f64::from).collect();
        assert!(high(&hi, &lo));
        assert!(!high(&lo, &hi));
        assert!(!high(&lo, &lo));
        assert!(!high(&[0.0; 10], &[0.0; 10]));
    }
}
