//! The traffic model of the reference's §4.1: Poisson arrivals (optionally diurnal), per-request
//! weighted routing (or per-client with session affinity), Bernoulli errors, lognormal latency
//! exposed as classic Prometheus histograms, 15-second scrapes.
//!
//! Every 15-second step of every run draws from its own generator, seeded by (seed, run, step,
//! stream): two arms that route with the same weight see exactly the same requests, errors and
//! latencies ("identical random streams").

use aviary_core::judge::{ArmCounts, Histogram, IntervalCounts};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};

/// Seconds per scrape (and per judge observation).
pub const STEP_S: f64 = 15.0;

/// Prometheus's default buckets, in milliseconds (without +Inf).
pub const PROMETHEUS_BOUNDS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// The defaults plus a 200 ms bound (where the primary's p99 is).
pub const BOUNDS_WITH_200: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// A generator for one (run, step, stream).
pub fn rng(seed: u64, run: u64, step: i64, stream: u64) -> SmallRng {
    let mut h = seed ^ 0x243F_6A88_85A3_08D3;
    for v in [run, step as u64, stream] {
        h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    SmallRng::seed_from_u64(h)
}

/// Standard normal CDF (erfc by the Numerical Recipes Chebyshev fit, relative error < 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * aviary_core::fleet::evidence::erfc(-z / std::f64::consts::SQRT_2)
}

/// How the canary's latency differs from the primary's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyChange {
    None,
    /// Every request `×factor`.
    Scale(f64),
    /// `+add_ms` for requests slower than the primary's `quantile` (moves p99 by exactly
    /// `add_ms` when `quantile < 0.99`, leaves p50 and p90 alone).
    Tail {
        quantile: f64,
        add_ms: f64,
    },
}

/// Lognormal response times: median 50 ms, σ 0.596 (p99 = 200 ms), possibly changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub median_ms: f64,
    pub sigma: f64,
    pub change: LatencyChange,
}

impl Latency {
    pub const BASE: Self = Self {
        median_ms: 50.0,
        sigma: 0.596,
        change: LatencyChange::None,
    };

    pub fn changed(change: LatencyChange) -> Self {
        Self { change, ..Self::BASE }
    }

    fn base_cdf(&self, x: f64) -> f64 {
        if x <= 0.0 {
            0.0
        } else {
            normal_cdf((x / self.median_ms).ln() / self.sigma)
        }
    }

    /// The base distribution's quantile (bisection on the CDF).
    fn base_quantile(&self, q: f64) -> f64 {
        let (mut lo, mut hi) = (0.0, 1e6);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.base_cdf(mid) < q {
                lo = mid
            } else {
                hi = mid
            }
        }
        0.5 * (lo + hi)
    }

    /// P(latency ≤ x ms).
    pub fn cdf(&self, x: f64) -> f64 {
        match self.change {
            LatencyChange::None => self.base_cdf(x),
            LatencyChange::Scale(f) => self.base_cdf(x / f),
            LatencyChange::Tail { quantile, add_ms } => {
                let q = self.base_quantile(quantile);
                if x <= q {
                    self.base_cdf(x)
                } else {
                    self.base_cdf((x - add_ms).max(q))
                }
            }
        }
    }

    /// Probability of each bucket (`bounds` then +Inf).
    pub fn bucket_probs(&self, bounds: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut prev = 0.0;
        for b in bounds {
            let c = self.cdf(*b);
            out.push((c - prev).max(0.0));
            prev = c;
        }
        out.push((1.0 - prev).max(0.0));
        out
    }
}

/// The clustered-error stressor: 10⁴ clients with Pareto(1.2) activity, 1% of them failing
/// 20% of their requests; routed per request or pinned to one arm (session affinity).
#[derive(Debug, Clone)]
pub struct Clients {
    /// The bad clients: (share of all traffic, routing draw u: on the canary while u < weight).
    pub bad: Vec<(f64, f64)>,
    pub bad_share: f64,
    pub bad_error: f64,
    pub affinity: bool,
}

impl Clients {
    pub fn draw(seed: u64, run: u64, affinity: bool) -> Self {
        let mut r = rng(seed, run, -1_000_000, 7);
        let weights: Vec<f64> = (0..10_000)
            .map(|_| r.random::<f64>().max(1e-12).powf(-1.0 / 1.2))
            .collect();
        let total: f64 = weights.iter().sum();
        let bad: Vec<(f64, f64)> = weights[..100]
            .iter()
            .map(|w| (w / total, r.random::<f64>()))
            .collect();
        let bad_share = bad.iter().map(|(s, _)| s).sum();
        Self {
            bad,
            bad_share,
            bad_error: 0.2,
            affinity,
        }
    }
}

/// One scenario's traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Mean requests per second.
    pub rps: f64,
    /// `(period, phase)`: the rate is `rps × (1 + 0.5 sin(2π t / period + phase))`.
    pub diurnal: Option<(f64, f64)>,
    pub p_primary: f64,
    pub p_canary: f64,
    /// `(start, duration, factor)`: both arms' error rates multiplied (a shared dependency).
    pub burst: Option<(f64, f64, f64)>,
    pub latency_primary: Latency,
    pub latency_canary: Latency,
    pub bounds: &'static [f64],
    pub clients: Option<Clients>,
}

fn binomial(r: &mut SmallRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).expect("a valid binomial").sample(r)
}

fn poisson(r: &mut SmallRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean).expect("a valid Poisson mean").sample(r) as u64
}

fn histogram(r: &mut SmallRng, bounds: &[f64], probs: &[f64], n: u64) -> Histogram {
    let mut left = n;
    let mut rest = 1.0;
    let mut acc = 0;
    let mut cumulative = Vec::with_capacity(probs.len());
    for (i, p) in probs.iter().enumerate() {
        let k = if i + 1 == probs.len() {
            left
        } else {
            binomial(r, left, (p / rest).clamp(0.0, 1.0))
        };
        left -= k;
        rest = (rest - p).max(1e-300);
        acc += k;
        cumulative.push(acc);
    }
    Histogram {
        bounds_ms: bounds.to_vec(),
        cumulative,
    }
}

/// Bucket probabilities of both arms, computed once per scenario.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub primary: Vec<f64>,
    pub canary: Vec<f64>,
}

impl Traffic {
    pub fn buckets(&self) -> Buckets {
        Buckets {
            primary: self.latency_primary.bucket_probs(self.bounds),
            canary: self.latency_canary.bucket_probs(self.bounds),
        }
    }

    /// The primary's histogram over the `seconds` before the canary got traffic (all traffic on
    /// the primary), from its own generator.
    pub fn baseline(&self, buckets: &Buckets, seed: u64, run: u64, seconds: f64) -> Histogram {
        let mut r = rng(seed, run, -3_000_000, 11);
        let n = poisson(&mut r, self.rps * seconds);
        histogram(&mut r, self.bounds, &buckets.primary, n)
    }

    fn rate_at(&self, t: f64) -> f64 {
        match self.diurnal {
            Some((period, phase)) => {
                self.rps * (1.0 + 0.5 * (2.0 * std::f64::consts::PI * t / period + phase).sin())
            }
            None => self.rps,
        }
    }

    fn error_factor(&self, t: f64) -> f64 {
        match self.burst {
            Some((start, len, factor)) if t >= start && t < start + len => factor,
            _ => 1.0,
        }
    }

    /// The counts of the step starting at `t` (seconds since the canary's first traffic) with
    /// canary weight `weight` (0–1). Draws from the generator of (seed, run, step).
    pub fn step(&self, buckets: &Buckets, seed: u64, run: u64, t: f64, weight: f64) -> IntervalCounts {
        let step = (t / STEP_S).round() as i64;
        let mut r = rng(seed, run, step, 0);
        let mean = self.rate_at(t) * STEP_S;
        let f = self.error_factor(t);
        let (pc, pp) = ((self.p_canary * f).min(1.0), (self.p_primary * f).min(1.0));
        let (mut nc, mut np, mut ec, mut ep);
        match &self.clients {
            None => {
                let n = poisson(&mut r, mean);
                nc = binomial(&mut r, n, weight);
                np = n - nc;
                ec = binomial(&mut r, nc, pc);
                ep = binomial(&mut r, np, pp);
            }
            Some(cl) => {
                let n = poisson(&mut r, mean * (1.0 - cl.bad_share));
                nc = binomial(&mut r, n, weight);
                np = n - nc;
                ec = binomial(&mut r, nc, pc);
                ep = binomial(&mut r, np, pp);
                for (share, u) in &cl.bad {
                    let k = poisson(&mut r, mean * share);
                    let kc = if cl.affinity {
                        if *u < weight { k } else { 0 }
                    } else {
                        binomial(&mut r, k, weight)
                    };
                    nc += kc;
                    np += k - kc;
                    // The canary's own defect (if any) adds to the client's.
                    ec += binomial(&mut r, kc, (cl.bad_error + pc - pp).clamp(0.0, 1.0));
                    ep += binomial(&mut r, k - kc, cl.bad_error);
                }
            }
        }
        let canary_latency = histogram(&mut r, self.bounds, &buckets.canary, nc);
        let primary_latency = histogram(&mut r, self.bounds, &buckets.primary, np);
        IntervalCounts {
            seconds: STEP_S,
            canary: ArmCounts {
                requests: nc,
                errors: ec,
                latency: Some(canary_latency),
            },
            primary: ArmCounts {
                requests: np,
                errors: ep,
                latency: Some(primary_latency),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_model_has_the_references_quantiles() {
        let l = Latency::BASE;
        assert!((l.cdf(50.0) - 0.5).abs() < 1e-6);
        assert!((l.cdf(200.0) - 0.99).abs() < 2e-4, "{}", l.cdf(200.0));
        // Tail-only +20ms: p99 moves to 220ms, p90 stays.
        let t = Latency::changed(LatencyChange::Tail {
            quantile: 0.97,
            add_ms: 20.0,
        });
        assert!((t.cdf(220.0) - l.cdf(200.0)).abs() < 1e-9);
        assert!((t.cdf(100.0) - l.cdf(100.0)).abs() < 1e-12);
        let p = l.bucket_probs(PROMETHEUS_BOUNDS);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
    }

    #[test]
    fn equal_weights_give_identical_streams() {
        let traffic = Traffic {
            rps: 200.0,
            diurnal: None,
            p_primary: 0.001,
            p_canary: 0.001,
            burst: None,
            latency_primary: Latency::BASE,
            latency_canary: Latency::BASE,
            bounds: PROMETHEUS_BOUNDS,
            clients: None,
        };
        let b = traffic.buckets();
        assert_eq!(
            traffic.step(&b, 1, 2, 45.0, 0.1),
            traffic.step(&b, 1, 2, 45.0, 0.1)
        );
        assert_ne!(
            traffic.step(&b, 1, 2, 45.0, 0.1),
            traffic.step(&b, 1, 3, 45.0, 0.1)
        );
    }
}
