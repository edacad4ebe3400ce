//! The scenarios of the reference's §4.3, their runs (spread over worker threads, results in
//! run order whatever the number of workers), and their summaries.

use std::sync::atomic::{AtomicUsize, Ordering};

use aviary_core::judge::{JudgeConfig, JudgeSpec};
use rand::Rng;

use crate::flagger::{FlaggerConfig, parse_canary};
use crate::model::{BOUNDS_WITH_200, Clients, Latency, LatencyChange, PROMETHEUS_BOUNDS, Traffic, rng};
use crate::run::{
    ArmResult, FleetResult, FleetSpec, Judges, Outcome, RunResult, SingleSpec, run_fleet, run_single,
};
use crate::stats::{clopper_pearson, quantile};

/// The base error rate.
pub const P0: f64 = 0.001;
/// Every run's horizon when Flagger's schedule is held open (minutes).
const HOLD_MIN: f64 = 30.0;

/// The A/A stressors of S0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stressor {
    None,
    /// A 2-minute 5× error spike in both arms.
    Burst,
    /// A compressed day: the rate swings ±50% over an hour.
    Diurnal,
    /// 1% of 10⁴ Pareto clients fail 20% of their requests; requests routed one by one.
    Clustered,
    /// The same, with session affinity: a client stays on the arm it was first sent to.
    Affinity,
}

impl Stressor {
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "plain",
            Self::Burst => "burst",
            Self::Diurnal => "diurnal",
            Self::Clustered => "clustered",
            Self::Affinity => "affinity",
        }
    }
}

/// A single-cluster scenario.
#[derive(Debug, Clone)]
pub struct Single {
    /// `S1`, `S0`, … and a variant.
    pub id: &'static str,
    pub variant: String,
    pub rps: f64,
    pub p_canary: f64,
    pub latency: LatencyChange,
    pub bounds: &'static [f64],
    pub stressor: Stressor,
    /// Flagger's schedule held open for `HOLD_MIN` (detection-power and A/A scenarios), or
    /// Flagger's standard 10..50% in five minutes.
    pub held: bool,
    pub horizon_min: f64,
}

impl Single {
    fn new(id: &'static str, rps: f64, p_canary: f64) -> Self {
        Self {
            id,
            variant: String::new(),
            rps,
            p_canary,
            latency: LatencyChange::None,
            bounds: PROMETHEUS_BOUNDS,
            stressor: Stressor::None,
            held: false,
            horizon_min: HOLD_MIN,
        }
    }

    fn held(self, minutes: f64) -> Self {
        Self {
            held: true,
            horizon_min: minutes,
            ..self
        }
    }

    pub fn key(&self) -> String {
        let v = if self.variant.is_empty() {
            String::new()
        } else {
            format!(" {}", self.variant)
        };
        format!("{}{} @{} rps", self.id, v, self.rps)
    }

    fn spec(&self, seed: u64, run: u64) -> SingleSpec {
        let horizon = self.horizon_min * 60.0;
        let mut r = rng(seed, run, -2_000_000, 9);
        let traffic = Traffic {
            rps: self.rps,
            diurnal: (self.stressor == Stressor::Diurnal)
                .then(|| (3600.0, r.random::<f64>() * std::f64::consts::TAU)),
            p_primary: P0,
            p_canary: self.p_canary,
            burst: (self.stressor == Stressor::Burst)
                .then(|| (r.random::<f64>() * (horizon.min(900.0) - 120.0), 120.0, 5.0)),
            latency_primary: Latency::BASE,
            latency_canary: Latency::changed(self.latency),
            bounds: self.bounds,
            clients: matches!(self.stressor, Stressor::Clustered | Stressor::Affinity)
                .then(|| Clients::draw(seed, run, self.stressor == Stressor::Affinity)),
        };
        let (flagger, tight) = if self.held {
            (
                FlaggerConfig::standard().held(horizon),
                FlaggerConfig::tight().held(horizon),
            )
        } else {
            (FlaggerConfig::standard(), FlaggerConfig::tight())
        };
        SingleSpec {
            buckets: traffic.buckets(),
            traffic,
            flagger,
            tight,
            horizon_s: horizon,
            p0: P0,
            // A/A runs watch the whole horizon (mode rollback): the false-rollback rate over
            // 30 minutes of looks, not only until the judge would have promoted.
            judge_promotes: self.id != "S0",
        }
    }
}

/// The judge with the reference's §2 defaults, read from an annotated Canary like an operator
/// would write it.
pub fn judge_spec() -> JudgeSpec {
    let yaml = FlaggerConfig::standard().canary_yaml("    judge.aviary.dev/mode: enforce\n");
    JudgeConfig::from_canary(&parse_canary(&yaml))
        .expect("the bench's judge configuration is valid")
        .expect("the judge is on")
        .spec
}

/// The single-cluster catalogue.
pub fn singles() -> Vec<Single> {
    let mut out = Vec::new();
    for rps in [5.0, 20.0, 200.0, 2000.0] {
        for s in [
            Stressor::None,
            Stressor::Burst,
            Stressor::Diurnal,
            Stressor::Clustered,
            Stressor::Affinity,
        ] {
            out.push(Single {
                variant: s.label().into(),
                stressor: s,
                ..Single::new("S0", rps, P0).held(HOLD_MIN)
            });
        }
    }
    for rps in [5.0, 20.0, 200.0, 2000.0] {
        out.push(Single::new("S1", rps, 0.005));
    }
    out.push(Single::new("S2", 200.0, 0.002).held(30.0));
    let tail = LatencyChange::Tail {
        quantile: 0.97,
        add_ms: 20.0,
    };
    out.push(Single {
        variant: "200ms bound".into(),
        latency: tail,
        bounds: BOUNDS_WITH_200,
        ..Single::new("S3", 200.0, P0).held(10.0)
    });
    out.push(Single {
        variant: "default buckets".into(),
        latency: tail,
        ..Single::new("S3", 200.0, P0).held(10.0)
    });
    out.push(Single {
        latency: LatencyChange::Scale(1.1),
        ..Single::new("S4", 200.0, P0).held(10.0)
    });
    for rps in [5.0, 20.0, 200.0, 2000.0] {
        out.push(Single::new("S5", rps, 0.05));
    }
    for rps in [20.0, 200.0, 2000.0] {
        out.push(Single {
            variant: "good".into(),
            ..Single::new("S6", rps, P0)
        });
    }
    for rps in [200.0, 2000.0] {
        out.push(Single {
            variant: "improved 0.05%".into(),
            ..Single::new("S6", rps, 0.0005)
        });
        out.push(Single {
            variant: "at the margin 0.2%".into(),
            ..Single::new("S6", rps, 0.002).held(30.0)
        });
    }
    out
}

/// A fleet scenario: 20 clusters × 20 req/s in waves of 1/3/6/10 clusters × 10 minutes at a
/// 10% canary, the reference's §3 worked example.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub variant: &'static str,
    pub p_canary: f64,
}

pub fn fleets() -> Vec<Fleet> {
    vec![
        Fleet {
            variant: "A/A",
            p_canary: P0,
        },
        Fleet {
            variant: "0.1→0.2%",
            p_canary: 0.002,
        },
        Fleet {
            variant: "0.1→0.3%",
            p_canary: 0.003,
        },
    ]
}

pub const WAVES: [usize; 4] = [1, 3, 6, 10];
pub const WAVE_S: f64 = 600.0;

impl Fleet {
    fn spec(&self) -> FleetSpec {
        let traffic = Traffic {
            rps: 20.0,
            diurnal: None,
            p_primary: P0,
            p_canary: self.p_canary,
            burst: None,
            latency_primary: Latency::BASE,
            latency_canary: Latency::BASE,
            bounds: PROMETHEUS_BOUNDS,
            clients: None,
        };
        FleetSpec {
            buckets: traffic.buckets(),
            traffic,
            waves: WAVES.to_vec(),
            wave_s: WAVE_S,
            weight: 0.1,
            flagger: FlaggerConfig {
                step_weight: 10,
                max_weight: 10,
                ..FlaggerConfig::standard()
            }
            .held(WAVE_S),
        }
    }
}

/// Runs `n` runs of `f` over `jobs` threads; results in run order.
fn parallel<T: Send>(n: usize, jobs: usize, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, f(i as u64)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// One arm over the runs of one scenario.
#[derive(Debug, Clone)]
pub struct ArmSummary {
    pub runs: usize,
    pub rollbacks: usize,
    pub promotes: usize,
    /// Promotions the arm decided itself (the judge's early PROMOTE).
    pub own_promotes: usize,
    pub rollback_times: Vec<f64>,
    pub promote_times: Vec<f64>,
    pub canary_requests: Vec<f64>,
    pub excess_errors: Vec<f64>,
}

impl ArmSummary {
    fn of(results: &[ArmResult]) -> Self {
        Self {
            runs: results.len(),
            rollbacks: results.iter().filter(|r| r.outcome == Outcome::Rollback).count(),
            promotes: results.iter().filter(|r| r.outcome == Outcome::Promote).count(),
            own_promotes: results
                .iter()
                .filter(|r| r.outcome == Outcome::Promote && r.own)
                .count(),
            rollback_times: results.iter().filter_map(ArmResult::rollback_time).collect(),
            promote_times: results.iter().filter_map(ArmResult::promote_time).collect(),
            canary_requests: results.iter().map(|r| r.canary_requests as f64).collect(),
            excess_errors: results.iter().map(|r| r.excess_errors).collect(),
        }
    }

    pub fn rollback_rate(&self) -> f64 {
        self.rollbacks as f64 / self.runs as f64
    }

    pub fn promote_rate(&self) -> f64 {
        self.promotes as f64 / self.runs as f64
    }

    pub fn rollback_ci(&self) -> (f64, f64) {
        clopper_pearson(self.rollbacks as u64, self.runs as u64)
    }

    pub fn promote_ci(&self) -> (f64, f64) {
        clopper_pearson(self.promotes as u64, self.runs as u64)
    }

    pub fn median_rollback(&self) -> Option<f64> {
        quantile(&self.rollback_times, 0.5)
    }
}

/// A single-cluster scenario's results.
#[derive(Debug, Clone)]
pub struct SingleSummary {
    pub scenario: Single,
    pub judge: ArmSummary,
    pub relative: ArmSummary,
    pub flagger: ArmSummary,
    pub tight: ArmSummary,
    pub kayenta: ArmSummary,
    /// Median time at which aviary acts on the judge's ROLLBACK if it waits for the next tick.
    pub judge_next_tick: Vec<f64>,
    /// Runs where the judge rolled back no later than Flagger (when Flagger rolled back), and
    /// the runs where Flagger rolled back.
    pub judge_not_later: (usize, usize),
}

pub fn run_single_scenario(
    sc: &Single,
    judges: &Judges,
    seed: u64,
    runs: usize,
    jobs: usize,
) -> SingleSummary {
    let results: Vec<RunResult> = parallel(runs, jobs, |run| {
        run_single(&sc.spec(seed, run), judges, seed, run)
    });
    let arm =
        |f: &dyn Fn(&RunResult) -> ArmResult| ArmSummary::of(&results.iter().map(f).collect::<Vec<_>>());
    let both: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.flagger.outcome == Outcome::Rollback)
        .collect();
    let not_later = both
        .iter()
        .filter(|r| r.judge.outcome == Outcome::Rollback && r.judge.t <= r.flagger.t)
        .count();
    SingleSummary {
        scenario: sc.clone(),
        judge: arm(&|r| r.judge),
        relative: arm(&|r| r.relative),
        flagger: arm(&|r| r.flagger),
        tight: arm(&|r| r.tight),
        kayenta: arm(&|r| r.kayenta),
        judge_next_tick: results
            .iter()
            .filter(|r| r.judge.outcome == Outcome::Rollback)
            .map(|r| r.judge_next_tick)
            .collect(),
        judge_not_later: (not_later, both.len()),
    }
}

/// A fleet scenario's results.
#[derive(Debug, Clone)]
pub struct FleetSummary {
    pub scenario: Fleet,
    pub runs: usize,
    pub results: Vec<FleetResult>,
}

impl FleetSummary {
    /// Fraction of runs where `pick` fired by `limit` seconds (a stop at the last wave's start
    /// is before it: the coordinator decides before opening the wave).
    pub fn rate_before(&self, pick: impl Fn(&FleetResult) -> Option<f64>, limit: f64) -> (usize, f64) {
        let k = self
            .results
            .iter()
            .filter(|r| pick(r).is_some_and(|t| t <= limit))
            .count();
        (k, k as f64 / self.runs as f64)
    }

    pub fn times(&self, pick: impl Fn(&FleetResult) -> Option<f64>) -> Vec<f64> {
        self.results.iter().filter_map(pick).collect()
    }
}

pub fn run_fleet_scenario(sc: &Fleet, spec: &JudgeSpec, seed: u64, runs: usize, jobs: usize) -> FleetSummary {
    let fs = sc.spec();
    FleetSummary {
        scenario: sc.clone(),
        runs,
        results: parallel(runs, jobs, |run| run_fleet(&fs, spec, seed, run)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario runs (two runs each), and what cannot be otherwise is so.
    #[test]
    fn every_scenario_runs_and_the_obvious_holds() {
        let judges = Judges::new(judge_spec());
        for sc in singles() {
            let s = run_single_scenario(&sc, &judges, 1, 2, 2);
            assert_eq!(s.judge.runs, 2, "{}", sc.key());
            match sc.id {
                "S0" => assert_eq!(
                    s.judge.own_promotes,
                    0,
                    "{}: A/A runs watch the whole horizon",
                    sc.key()
                ),
                "S5" => {
                    assert_eq!((s.judge.rollbacks, s.flagger.rollbacks), (2, 2), "{}", sc.key());
                    assert_eq!(s.judge_not_later, (2, 2), "{}", sc.key());
                }
                "S1" if sc.rps == 200.0 => {
                    assert_eq!(s.flagger.rollbacks, 0, "99.5% passes Flagger's min: 99");
                    assert_eq!(
                        s.flagger.promote_times,
                        vec![300.0, 300.0],
                        "Flagger's 5-minute schedule"
                    );
                }
                _ => {}
            }
        }
        let spec = judge_spec();
        for f in fleets() {
            let s = run_fleet_scenario(&f, &spec, 1, 1, 1);
            assert_eq!(s.results.len(), 1);
        }
    }
}
