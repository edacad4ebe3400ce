//! One simulated run of one canary (all arms), and one run of a fleet rollout.
//!
//! The judge (J), Flagger (F, the real engine) and the Kayenta-like arm (K) watch one stream:
//! until the judge decides, aviary's engine routes exactly as Flagger does, so J's traffic is
//! F's. The judge decides at every scrape; F decides at its analysis ticks; when F ends first,
//! J and K end with it (Flagger's thresholds stay in force next to the judge). The tightened
//! Flagger (T) routes on its own schedule; its stream is drawn from the same generators, so it
//! is identical to F's whenever their weights agree.

use aviary_core::fleet::{EvidencePlan, PooledEvidence};
use aviary_core::judge::{CanaryJudge, Decision, EvidenceReport, IntervalCounts, JudgeSpec};

use crate::flagger::{Ended, EngineArm, FlaggerConfig};
use crate::kayenta::Kayenta;
use crate::model::{Buckets, STEP_S, Traffic};

/// How an arm's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Rollback,
    Promote,
    /// Still analysing at the horizon.
    Undecided,
}

impl From<Ended> for Outcome {
    fn from(e: Ended) -> Self {
        match e {
            Ended::Rollback => Self::Rollback,
            Ended::Promote => Self::Promote,
        }
    }
}

/// One arm's run: its outcome and time, the canary requests it let through and the errors
/// they caused beyond the primary's rate (the users harmed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmResult {
    pub outcome: Outcome,
    pub t: f64,
    pub canary_requests: u64,
    pub excess_errors: f64,
    /// The arm decided by itself (for J: not Flagger's schedule or thresholds ending the run).
    pub own: bool,
    decided: bool,
}

impl ArmResult {
    fn new() -> Self {
        Self {
            outcome: Outcome::Undecided,
            t: f64::NAN,
            canary_requests: 0,
            excess_errors: 0.0,
            own: false,
            decided: false,
        }
    }

    fn serve(&mut self, c: &IntervalCounts, p0: f64) {
        if !self.decided {
            self.canary_requests += c.canary.requests;
            self.excess_errors += c.canary.errors as f64 - c.canary.requests as f64 * p0;
        }
    }

    fn decide(&mut self, outcome: Outcome, t: f64) {
        self.end(outcome, t, true);
    }

    /// Ended by Flagger (the engine) rather than by the arm itself.
    fn follow(&mut self, outcome: Outcome, t: f64) {
        self.end(outcome, t, false);
    }

    fn end(&mut self, outcome: Outcome, t: f64, own: bool) {
        if !self.decided {
            self.outcome = outcome;
            self.t = t;
            self.own = own;
            self.decided = true;
        }
    }

    /// The time of a rollback, if the run ended in one.
    pub fn rollback_time(&self) -> Option<f64> {
        (self.outcome == Outcome::Rollback).then_some(self.t)
    }

    /// The time of a promotion, if the run ended in one.
    pub fn promote_time(&self) -> Option<f64> {
        (self.outcome == Outcome::Promote).then_some(self.t)
    }
}

/// Every arm's result in one run.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    pub judge: ArmResult,
    /// The judge without its absolute (SLO) arms, never promoting: the canary-versus-primary
    /// test alone.
    pub relative: ArmResult,
    /// When aviary acts on a judge ROLLBACK if it waits for the next analysis tick.
    pub judge_next_tick: f64,
    pub flagger: ArmResult,
    pub tight: ArmResult,
    pub kayenta: ArmResult,
}

/// A single-cluster scenario.
#[derive(Debug, Clone)]
pub struct SingleSpec {
    pub traffic: Traffic,
    pub buckets: Buckets,
    pub flagger: FlaggerConfig,
    pub tight: FlaggerConfig,
    pub horizon_s: f64,
    /// The primary's error rate (for excess errors).
    pub p0: f64,
    /// Whether the judge may promote early (`enforce`) or only roll back (`rollback`).
    pub judge_promotes: bool,
}

/// The judge's specifications for a run: as configured, and without the absolute arms.
#[derive(Debug, Clone)]
pub struct Judges {
    pub full: JudgeSpec,
    pub relative: JudgeSpec,
}

impl Judges {
    pub fn new(full: JudgeSpec) -> Self {
        let mut relative = full.clone();
        for m in &mut relative.metrics {
            m.slo = None;
        }
        Self { full, relative }
    }
}

/// The primary's latency over the hour before the analysis: where the judge's latency
/// boundaries come from.
const BASELINE_S: f64 = 3600.0;

/// One run of a single-cluster scenario.
pub fn run_single(sc: &SingleSpec, judges: &Judges, seed: u64, run: u64) -> RunResult {
    let spec = &judges.full;
    let boundaries = spec
        .resolve_boundaries(Some(&sc.traffic.baseline(&sc.buckets, seed, run, BASELINE_S)))
        .expect("the pre-canary hour has requests to choose latency boundaries from");
    let mut judge = CanaryJudge::new(spec, boundaries.clone());
    let mut relative = CanaryJudge::new(&judges.relative, boundaries);
    let mut rel = ArmResult::new();
    let mut engine = EngineArm::start(&sc.flagger);
    let mut tight = EngineArm::start(&sc.tight);
    let mut kayenta = Kayenta::default();
    let (mut j, mut f, mut tt, mut k) = (
        ArmResult::new(),
        ArmResult::new(),
        ArmResult::new(),
        ArmResult::new(),
    );
    let mut t = 0.0;
    while t < sc.horizon_s && !(j.decided && rel.decided && f.decided && tt.decided && k.decided) {
        let wt = tight.weight();
        let w = if f.decided { wt } else { engine.weight() };
        for _ in 0..4 {
            let c = sc.traffic.step(&sc.buckets, seed, run, t, w);
            let ct = if wt == w {
                c.clone()
            } else {
                sc.traffic.step(&sc.buckets, seed, run, t, wt)
            };
            t += STEP_S;
            if !j.decided {
                j.serve(&c, sc.p0);
                judge.observe(spec, &c).expect("simulated counts are valid");
                match judge.decision(spec) {
                    Decision::Rollback => j.decide(Outcome::Rollback, t),
                    Decision::Promote if sc.judge_promotes => j.decide(Outcome::Promote, t),
                    _ => {}
                }
            }
            if !rel.decided {
                rel.serve(&c, sc.p0);
                relative
                    .observe(&judges.relative, &c)
                    .expect("simulated counts are valid");
                if relative.ln_rollback(&judges.relative) >= (1.0 / spec.alpha).ln() {
                    rel.decide(Outcome::Rollback, t);
                }
            }
            if !f.decided {
                f.serve(&c, sc.p0);
                k.serve(&c, sc.p0);
                engine.observe(&c);
                kayenta.observe(&c);
            }
            tt.serve(&ct, sc.p0);
            tight.observe(&ct);
        }
        if !k.decided && !f.decided && kayenta.fails() {
            k.decide(Outcome::Rollback, t);
        }
        if !f.decided
            && let Some(e) = engine.tick(t)
        {
            f.decide(e.into(), t);
            j.follow(e.into(), t);
            k.follow(e.into(), t);
            if e == Ended::Promote {
                rel.follow(Outcome::Promote, t);
            }
        }
        if !tt.decided
            && let Some(e) = tight.tick(t)
        {
            tt.decide(e.into(), t);
        }
    }
    RunResult {
        judge: j,
        relative: rel,
        judge_next_tick: (j.t / 60.0).ceil() * 60.0,
        flagger: f,
        tight: tt,
        kayenta: k,
    }
}

/// A fleet rollout scenario: clusters in waves, each wave's clusters running a fixed canary
/// weight for the wave's length, evidence pooled by the coordinator's own [`PooledEvidence`].
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub traffic: Traffic,
    pub buckets: Buckets,
    pub waves: Vec<usize>,
    pub wave_s: f64,
    pub weight: f64,
    /// Flagger per cluster: fixed weight, held for the wave.
    pub flagger: FlaggerConfig,
}

/// What happened in one fleet run (times in seconds since the first wave started).
#[derive(Debug, Clone, Copy, Default)]
pub struct FleetResult {
    /// The coordinator's pooled stop with its defaults (`evidence: {pooled: true}`): the anytime
    /// evidence at 0.1 α, or the planned look at the last wave's gate at 0.9 α.
    pub pooled: Option<f64>,
    /// The pooled anytime evidence alone at α (`plannedLook: false`).
    pub anytime: Option<f64>,
    /// The first cluster's own judge, within its wave.
    pub first_cluster: Option<f64>,
    /// Any cluster's own judge (each at α).
    pub any_cluster: Option<f64>,
    /// Any cluster's Flagger analysis failing.
    pub flagger: Option<f64>,
    /// The shared-ratio half of the anytime evidence alone, at α (no per-cluster half).
    pub shared_only: Option<f64>,
    /// An oracle that knows the true ratio: one likelihood ratio, errors only, at α.
    pub oracle: Option<f64>,
    /// One planned look when the last wave would start: the exact conditional test of the
    /// canary's share of all errors so far (stratified), one-sided at α. Valid, but it can
    /// stop nothing earlier and the look must be fixed in advance.
    pub single_look: Option<f64>,
}

/// One fleet run.
pub fn run_fleet(sc: &FleetSpec, spec: &JudgeSpec, seed: u64, run: u64) -> FleetResult {
    let total: usize = sc.waves.iter().sum();
    let planned: Vec<String> = (0..total).map(|k| format!("cluster-{k:02}")).collect();
    let pool = |planned_look| {
        let plan = EvidencePlan {
            alpha: spec.alpha,
            advance: false,
            planned_look,
        };
        PooledEvidence::new(plan, planned.clone(), sc.waves.len()).expect("a plan with clusters")
    };
    let mut state = FleetRun {
        sc,
        spec,
        seed,
        run,
        pool: pool(true),
        anytime: pool(false),
        planned: planned.clone(),
        oracle: 0.0,
        look: Look::default(),
        result: FleetResult::default(),
    };
    let mut first = 0;
    for (wave, size) in sc.waves.iter().enumerate() {
        let start = wave as f64 * sc.wave_s;
        if wave + 1 == sc.waves.len() {
            if state.look.p_value() <= spec.alpha {
                state.result.single_look = Some(start);
            }
            // The coordinator's planned look, when the last wave would open.
            if state.pool.take_look().is_some() {
                state.result.pooled.get_or_insert(start);
            }
        }
        state.wave(start, first..first + size);
        first += size;
    }
    state.result
}

/// The single planned look's data: how many errors were the canary's, and each error's chance
/// of being the canary's under "no regression" (its stratum's canary share).
#[derive(Default)]
struct Look {
    canary_errors: usize,
    shares: Vec<f64>,
}

impl Look {
    fn add(&mut self, c: &IntervalCounts) {
        let n = c.canary.requests + c.primary.requests;
        if n == 0 {
            return;
        }
        let pi = c.canary.requests as f64 / n as f64;
        self.canary_errors += c.canary.errors as usize;
        self.shares.extend(std::iter::repeat_n(
            pi,
            (c.canary.errors + c.primary.errors) as usize,
        ));
    }

    /// P(at least this many canary errors) when each error is the canary's with its share's
    /// probability (the exact Poisson-binomial law, by convolution).
    fn p_value(&self) -> f64 {
        let mut dist = vec![1.0];
        for pi in &self.shares {
            let mut next = vec![0.0; dist.len() + 1];
            for (k, p) in dist.iter().enumerate() {
                next[k] += p * (1.0 - pi);
                next[k + 1] += p * pi;
            }
            dist = next;
        }
        dist.iter().skip(self.canary_errors).sum()
    }
}

/// The state of one fleet run across its waves.
struct FleetRun<'a> {
    sc: &'a FleetSpec,
    spec: &'a JudgeSpec,
    seed: u64,
    run: u64,
    /// The coordinator's pool with its defaults (planned look on).
    pool: PooledEvidence,
    /// The same pool without the planned look (anytime evidence at α).
    anytime: PooledEvidence,
    planned: Vec<String>,
    /// ln of the oracle's likelihood ratio (knows the true ratio; errors only).
    oracle: f64,
    look: Look,
    result: FleetResult,
}

/// One cluster during its wave: its own judge (in `observe`, as pooled rollouts run them: its
/// verdict is recorded, the canary keeps running and reporting), Flagger's counterfactual run,
/// and whether its own judge has reached ROLLBACK.
struct ClusterRun {
    index: usize,
    judge: CanaryJudge,
    engine: Option<EngineArm>,
    judged: bool,
}

impl FleetRun<'_> {
    fn stream(&self, k: usize) -> u64 {
        self.run * 1000 + k as u64
    }

    /// Runs the clusters `ks` for one wave starting at `start` seconds.
    fn wave(&mut self, start: f64, ks: std::ops::Range<usize>) {
        let (sc, spec) = (self.sc, self.spec);
        let mut clusters: Vec<ClusterRun> = ks
            .map(|k| {
                let baseline = sc
                    .traffic
                    .baseline(&sc.buckets, self.seed, self.stream(k), BASELINE_S);
                let boundaries = spec
                    .resolve_boundaries(Some(&baseline))
                    .expect("a baseline with requests");
                ClusterRun {
                    index: k,
                    judge: CanaryJudge::new(spec, boundaries),
                    engine: Some(EngineArm::start(&sc.flagger)),
                    judged: false,
                }
            })
            .collect();
        let level = (1.0 / spec.alpha).ln();
        let mut step = 0u64;
        let mut t = 0.0;
        while t < sc.wave_s {
            for c in &mut clusters {
                self.cluster_step(c, step, t, start + t + STEP_S);
            }
            t += STEP_S;
            step += 1;
            let r = &mut self.result;
            let now = start + t;
            if self.pool.judge().rolls_back() {
                r.pooled.get_or_insert(now);
            }
            if self.anytime.judge().ln_global() >= level {
                r.anytime.get_or_insert(now);
            }
            if self.anytime.judge().ln_shared() >= level {
                r.shared_only.get_or_insert(now);
            }
            if self.oracle >= level {
                r.oracle.get_or_insert(now);
            }
            if (t / 60.0).fract() == 0.0 {
                for c in &mut clusters {
                    if let Some(ended) = c.engine.as_mut().and_then(|e| e.tick(t)) {
                        if ended == Ended::Rollback {
                            r.flagger.get_or_insert(now);
                        }
                        c.engine = None;
                    }
                }
            }
        }
    }

    /// One 15-second step of one cluster: its counts go to Flagger's run, the pool, the oracle
    /// and its own judge.
    fn cluster_step(&mut self, c: &mut ClusterRun, step: u64, t: f64, now: f64) {
        let (sc, spec) = (self.sc, self.spec);
        let counts = sc
            .traffic
            .step(&sc.buckets, self.seed, self.stream(c.index), t, sc.weight);
        if let Some(e) = &mut c.engine {
            e.observe(&counts);
        }
        let report = EvidenceReport {
            cluster: self.planned[c.index].clone(),
            run: "r1".into(),
            interval: step,
            boundaries_ms: c.judge.boundaries().to_vec(),
            counts,
        };
        let added = (self.pool.add(&report), self.anytime.add(&report));
        assert!(
            added.0.is_some() && added.1.is_some(),
            "simulated reports are valid: {}",
            self.pool.last_refusal
        );
        self.oracle += oracle_llr(&report.counts, sc.traffic.p_canary / sc.traffic.p_primary);
        self.look.add(&report.counts);
        c.judge.observe(spec, &report.counts).expect("valid counts");
        if !c.judged && c.judge.decision(spec) == Decision::Rollback {
            c.judged = true;
            if c.index == 0 {
                self.result.first_cluster.get_or_insert(now);
            }
            self.result.any_cluster.get_or_insert(now);
        }
    }
}

/// The log-likelihood ratio of the true error ratio against 1 in one stratum (0 without a
/// regression): what a test that knew the effect would add.
fn oracle_llr(c: &IntervalCounts, ratio: f64) -> f64 {
    if ratio <= 1.0 {
        return 0.0;
    }
    let pi = c.canary.requests as f64 / (c.canary.requests + c.primary.requests).max(1) as f64;
    let m = (c.canary.errors + c.primary.errors) as f64;
    c.canary.errors as f64 * ratio.ln() - m * (pi * (ratio - 1.0)).ln_1p()
}
