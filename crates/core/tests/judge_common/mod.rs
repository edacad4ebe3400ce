//! Simulated traffic for the judge's tests: a small seeded generator and exact binomial draws,
//! so the tests need no sampling library and every failure replays from its seed.
#![allow(dead_code)]

use aviary_core::judge::{ArmCounts, Boundaries, Histogram, IntervalCounts, MetricKind, MetricSpec, Slo};

/// `request-success-rate` with the judge's defaults and Flagger's `min: 99`.
pub(crate) fn errors_metric() -> MetricSpec {
    metric(
        "request-success-rate",
        MetricKind::Errors,
        2.0,
        Slo::ErrorRate(0.01),
    )
}

/// `request-duration` with the judge's defaults and Flagger's `max: 500`.
pub(crate) fn latency_metric(boundaries: Boundaries) -> MetricSpec {
    metric(
        "request-duration",
        MetricKind::Latency(boundaries),
        1.5,
        Slo::P99Ms(500.0),
    )
}

/// A metric with the judge's defaults (tolerance 1, weight 1, 20 events at least).
fn metric(name: &str, kind: MetricKind, margin: f64, slo: Slo) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        kind,
        tolerance: 1.0,
        margin,
        weight: 1.0,
        slo: Some(slo),
        min_events: 20,
    }
}

/// SplitMix64: tiny, fast, good enough for Monte Carlo tests.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// An exact Bin(n, p) draw by geometric skips: O(n·min(p, 1−p)) steps.
    pub(crate) fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p <= 0.0 || n == 0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let ln_q = (1.0 - p).ln();
        let (mut successes, mut position) = (0u64, 0u64);
        loop {
            let skip = (self.uniform().ln() / ln_q).floor();
            if skip >= (n - position) as f64 {
                return successes;
            }
            position += skip as u64 + 1;
            successes += 1;
            if position >= n {
                return successes;
            }
        }
    }

    /// Poisson(λ) by counting exponential gaps (λ up to a few thousand in these tests).
    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda > 500.0 {
            // Normal approximation is fine for request counts; the events are drawn exactly.
            let z = (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos();
            return (lambda + z * lambda.sqrt()).round().max(0.0) as u64;
        }
        let (mut k, mut t) = (0u64, 0.0);
        loop {
            t -= self.uniform().ln();
            if t > lambda {
                return k;
            }
            k += 1;
        }
    }
}

/// One interval of errors only: requests split by `share`, errors at the arms' rates.
pub(crate) fn error_interval(
    rng: &mut Rng,
    requests: u64,
    share: f64,
    p_canary: f64,
    p_primary: f64,
) -> IntervalCounts {
    let nc = rng.binomial(requests, share);
    let np = requests - nc;
    IntervalCounts {
        seconds: 15.0,
        canary: ArmCounts {
            requests: nc,
            errors: rng.binomial(nc, p_canary),
            latency: None,
        },
        primary: ArmCounts {
            requests: np,
            errors: rng.binomial(np, p_primary),
            latency: None,
        },
    }
}

/// A histogram of `n` requests whose bucket probabilities are `probs` (one per bound plus
/// +Inf), drawn exactly as successive binomials.
pub(crate) fn histogram(rng: &mut Rng, bounds: &[f64], probs: &[f64], n: u64) -> Histogram {
    let mut left = n;
    let mut rest = 1.0;
    let mut cumulative = Vec::with_capacity(probs.len());
    let mut acc = 0;
    for (i, p) in probs.iter().enumerate() {
        let k = if i + 1 == probs.len() || rest <= 0.0 {
            left
        } else {
            rng.binomial(left, (p / rest).clamp(0.0, 1.0))
        };
        left -= k;
        rest -= p;
        acc += k;
        cumulative.push(acc);
    }
    Histogram {
        bounds_ms: bounds.to_vec(),
        cumulative,
    }
}
