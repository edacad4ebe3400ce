//! Flagger's fixed thresholds as aviary's engine runs them: the real engine (`aviary-core`'s
//! tick over the fakes, virtual time) decides, fed every minute with what Flagger's built-in
//! Istio queries would return from the simulated counters: `rate(...[1m])` over the 4 scrapes in
//! the last minute covers the last 45 seconds, the success rate is the ratio of two such rates,
//! and the p99 is Prometheus's `histogram_quantile` (linear inside a bucket).

use std::collections::VecDeque;

use aviary_api::document;
use aviary_api::{Canary, CanaryPhase};
use aviary_core::fakes::Answer;
use aviary_core::judge::{Histogram, IntervalCounts};
use aviary_core::simulate::Simulation;
use futures::executor::block_on;

/// Flagger's analysis settings for one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggerConfig {
    /// `request-success-rate` `thresholdRange.min` (%).
    pub min_success: f64,
    /// `request-duration` `thresholdRange.max` (ms).
    pub max_p99_ms: f64,
    /// `threshold`: failed checks before rollback.
    pub threshold: i32,
    pub step_weight: i32,
    pub max_weight: i32,
    /// A confirm-promotion gate that opens only at this time (seconds): the analysis holds at
    /// max weight until then, checking metrics every interval.
    pub hold_until: Option<f64>,
}

impl FlaggerConfig {
    /// The reference's F: ≥ 99%, p99 ≤ 500 ms, threshold 5, weights 10..50 every minute.
    pub fn standard() -> Self {
        Self {
            min_success: 99.0,
            max_p99_ms: 500.0,
            threshold: 5,
            step_weight: 10,
            max_weight: 50,
            hold_until: None,
        }
    }

    /// The reference's F-tight: ≥ 99.8%, p99 ≤ 250 ms, threshold 2.
    pub fn tight() -> Self {
        Self {
            min_success: 99.8,
            max_p99_ms: 250.0,
            threshold: 2,
            ..Self::standard()
        }
    }

    pub fn held(self, until: f64) -> Self {
        Self {
            hold_until: Some(until),
            ..self
        }
    }

    /// The Canary this arm runs (judge annotations added by the caller when wanted).
    pub fn canary_yaml(&self, annotations: &str) -> String {
        let hold = if self.hold_until.is_some() {
            "    webhooks:\n    - name: hold\n      type: confirm-promotion\n      url: http://hold.test/\n"
        } else {
            ""
        };
        format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: default\n  annotations:\n    bench: \"1\"\n{annotations}spec:\n  provider: istio\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 1m\n    threshold: {}\n    maxWeight: {}\n    stepWeight: {}\n    metrics:\n    - name: request-success-rate\n      thresholdRange:\n        min: {}\n      interval: 1m\n    - name: request-duration\n      thresholdRange:\n        max: {}\n      interval: 1m\n{hold}",
            self.threshold, self.max_weight, self.step_weight, self.min_success, self.max_p99_ms
        )
    }
}

/// Parses one Canary.
pub fn parse_canary(yaml: &str) -> Canary {
    document::parse_canary(yaml).expect("the bench's canary")
}

/// What the engine ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Rollback,
    Promote,
}

/// The real engine on fakes, stepped by the simulation.
pub struct EngineArm {
    sim: Simulation,
    hold_until: Option<f64>,
    window: VecDeque<IntervalCounts>,
}

impl EngineArm {
    /// Initializes the canary, presents a new revision, and ticks until the canary gets its
    /// first traffic (time 0 of the run).
    pub fn start(cfg: &FlaggerConfig) -> Self {
        let mut sim = Simulation::new(parse_canary(&cfg.canary_yaml("")));
        if cfg.hold_until.is_some() {
            sim.fakes.hooks.script("hold", &[false]);
        }
        block_on(sim.tick());
        assert_eq!(
            sim.status().phase,
            CanaryPhase::Initialized,
            "the bench's canary initializes"
        );
        sim.fakes.target.set_revision("rev-2");
        for _ in 0..5 {
            block_on(sim.tick());
            if sim.fakes.router.routes().canary > 0 {
                break;
            }
        }
        assert!(
            sim.fakes.router.routes().canary > 0,
            "the analysis starts within 5 ticks"
        );
        Self {
            sim,
            hold_until: cfg.hold_until,
            window: VecDeque::with_capacity(4),
        }
    }

    /// The canary's share of traffic now (0–1).
    pub fn weight(&self) -> f64 {
        f64::from(self.sim.fakes.router.routes().canary) / 100.0
    }

    /// Records one 15-second step (Prometheus sees the last three of each minute).
    pub fn observe(&mut self, c: &IntervalCounts) {
        if self.window.len() == 3 {
            self.window.pop_front();
        }
        self.window.push_back(c.clone());
    }

    /// The analysis tick at `t` seconds; `Some` when the analysis ended.
    pub fn tick(&mut self, t: f64) -> Option<Ended> {
        if self.hold_until.is_some_and(|h| t >= h) {
            self.sim.fakes.hooks.script("hold", &[true]);
        }
        let (success, p99) = flagger_values(self.window.iter());
        self.sim
            .fakes
            .metrics
            .script("request-success-rate", vec![success]);
        self.sim.fakes.metrics.script("request-duration", vec![p99]);
        block_on(self.sim.tick());
        match self.sim.status().phase {
            CanaryPhase::Failed => Some(Ended::Rollback),
            CanaryPhase::Promoting | CanaryPhase::Finalising | CanaryPhase::Succeeded => Some(Ended::Promote),
            _ => None,
        }
    }
}

/// What Flagger's two built-in queries return over `window` (the canary's side).
pub fn flagger_values<'a>(window: impl Iterator<Item = &'a IntervalCounts>) -> (Answer, Answer) {
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut hist: Option<Histogram> = None;
    for c in window {
        requests += c.canary.requests;
        errors += c.canary.errors;
        if let Some(h) = &c.canary.latency {
            match &mut hist {
                None => hist = Some(h.clone()),
                Some(acc) => {
                    for (a, b) in acc.cumulative.iter_mut().zip(&h.cumulative) {
                        *a += b;
                    }
                }
            }
        }
    }
    if requests == 0 {
        return (Answer::NoValues, Answer::NoValues);
    }
    let success = Answer::Value(100.0 * (requests - errors) as f64 / requests as f64);
    let p99 = hist
        .and_then(|h| histogram_quantile(0.99, &h))
        .map_or(Answer::NoValues, Answer::Value);
    (success, p99)
}

/// Prometheus's `histogram_quantile`: linear interpolation inside the bucket holding the rank;
/// the highest finite bound when the rank falls in `+Inf`; `None` without observations.
pub fn histogram_quantile(q: f64, h: &Histogram) -> Option<f64> {
    let count = h.count();
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let i = h
        .cumulative
        .iter()
        .position(|c| *c as f64 >= rank)
        .unwrap_or(h.bounds_ms.len());
    if i >= h.bounds_ms.len() {
        return h.bounds_ms.last().copied();
    }
    let start = if i == 0 { 0.0 } else { h.bounds_ms[i - 1] };
    let below = if i == 0 { 0 } else { h.cumulative[i - 1] };
    let in_bucket = (h.cumulative[i] - below) as f64;
    Some(start + (h.bounds_ms[i] - start) * (rank - below as f64) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let h = Histogram {
            bounds_ms: vec![100.0, 250.0, 500.0],
            cumulative: vec![90, 99, 100, 100],
        };
        // Rank 99 is the end of the 100–250 bucket.
        assert_eq!(histogram_quantile(0.99, &h), Some(250.0));
        assert_eq!(histogram_quantile(0.5, &h), Some(100.0 * 50.0 / 90.0));
        let inf = Histogram {
            bounds_ms: vec![100.0],
            cumulative: vec![0, 10],
        };
        assert_eq!(histogram_quantile(0.99, &inf), Some(100.0));
    }

    #[test]
    fn the_engine_promotes_a_healthy_canary_on_flaggers_schedule() {
        let mut arm = EngineArm::start(&FlaggerConfig::standard());
        let healthy = IntervalCounts {
            seconds: 15.0,
            canary: aviary_core::judge::ArmCounts {
                requests: 100,
                errors: 0,
                latency: Some(Histogram {
                    bounds_ms: vec![100.0],
                    cumulative: vec![100, 100],
                }),
            },
            primary: Default::default(),
        };
        let mut weights = vec![arm.weight()];
        let mut ended = None;
        for minute in 1..=10 {
            for _ in 0..4 {
                arm.observe(&healthy);
            }
            if let Some(e) = arm.tick(60.0 * f64::from(minute)) {
                ended = Some((e, minute));
                break;
            }
            weights.push(arm.weight());
        }
        assert_eq!(weights, vec![0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(ended, Some((Ended::Promote, 5)));
    }
}
