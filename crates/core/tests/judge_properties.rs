//! Validity of the judge on simulated traffic: under the null hypothesis its e-processes are
//! supermartingales (the Monte Carlo mean of E_T stays at or below 1) and the chance of ever
//! crossing 1/α is at most α, whatever the canary's weight does between intervals, with bursts
//! that hit both arms, at error-like and latency-like event rates; pooled across clusters with
//! staggered starts, skipped and silent clusters, shuffled and duplicated reports.

mod judge_common;

use aviary_core::judge::ratio::{Pair, RatioProcess, RatioTest};
use aviary_core::judge::{
    ArmCounts, Boundaries, CanaryJudge, Decision, EvidenceReport, FleetJudge, IntervalCounts, JudgeSpec,
};
use judge_common::{Rng, error_interval, errors_metric, histogram, latency_metric};
use proptest::prelude::*;

const ALPHA: f64 = 0.05;
const PATHS: usize = 600;

/// Mean and standard error of the mean.
fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The bound a Monte Carlo rate may reach when the true rate is α: three standard errors.
fn rate_bound(alpha: f64, n: usize) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / n as f64).sqrt()
}

/// Whether an e-value of `ln_e` (natural log) crosses 1/α.
fn crosses(ln_e: f64) -> bool {
    ln_e >= (1.0 / ALPHA).ln()
}

/// Asserts that `hits` (`what`) in `runs` runs is a rate within [`rate_bound`] of α.
fn assert_rare(hits: u32, runs: u64, what: &str) {
    let rate = f64::from(hits) / runs as f64;
    assert!(
        rate <= rate_bound(ALPHA, runs as usize),
        "{hits} {what} in {runs} runs"
    );
}

/// A weight schedule that changes every interval (Flagger's steps, jumps back, odd shares).
fn share(rng: &mut Rng, j: usize) -> f64 {
    match j % 4 {
        0 => 0.05 + 0.45 * rng.uniform(),
        1 => [0.1, 0.2, 0.3, 0.4, 0.5][j % 5],
        2 => 0.01 + 0.1 * rng.uniform(),
        _ => 0.9 * rng.uniform() + 0.05,
    }
}

/// What the simulated paths of one property case share.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    test: RatioTest,
    /// The primary's event rate.
    base: f64,
    /// The canary's rate over the primary's.
    ratio: f64,
    /// Mean requests per interval.
    requests: u64,
    intervals: usize,
    burst: bool,
    /// PROMOTE's e-process, else FAIL's.
    promote: bool,
}

impl Scenario {
    /// `PATHS` paths, each seeded from `seed` and the odd constant `salt`.
    fn paths(&self, seed: u64, salt: u64) -> Vec<(f64, f64)> {
        (0..PATHS as u64)
            .map(|i| ratio_path(seed ^ i.wrapping_mul(salt), self))
            .collect()
    }
}

/// One simulated path of a ratio process: final ln E, max ln E (FAIL or PROMOTE).
fn ratio_path(seed: u64, s: &Scenario) -> (f64, f64) {
    let Scenario {
        test,
        base,
        ratio,
        requests,
        intervals,
        burst,
        promote,
    } = *s;
    let mut rng = Rng::new(seed);
    let mut p = RatioProcess::default();
    let mut max = 0f64;
    for j in 0..intervals {
        // A burst multiplies both arms' rates for a few intervals (a shared dependency failing).
        let shock = if burst && (intervals / 3..intervals / 3 + 3).contains(&j) {
            5.0
        } else {
            1.0
        };
        let pp = (base * shock).min(0.9 / ratio.max(1.0));
        let n = rng.poisson(requests as f64);
        let w = share(&mut rng, j);
        let c = error_interval(&mut rng, n, w, pp * ratio, pp);
        p.observe(
            &test,
            Pair {
                canary_events: c.canary.errors,
                canary_trials: c.canary.requests,
                primary_events: c.primary.errors,
                primary_trials: c.primary.requests,
            },
        );
        let ln = if promote { p.ln_promote() } else { p.ln_fail() };
        max = max.max(ln);
    }
    let last = if promote { p.ln_promote() } else { p.ln_fail() };
    (last, max)
}

/// Checks the two properties over `PATHS` paths.
fn check_null(paths: Vec<(f64, f64)>, what: &str) -> Result<(), TestCaseError> {
    let finals: Vec<f64> = paths.iter().map(|(last, _)| last.exp()).collect();
    let (mean, se) = mean_se(&finals);
    prop_assert!(
        mean <= 1.0 + 3.0 * se + 0.02,
        "{what}: mean E_T = {mean:.3} ± {se:.3}"
    );
    let crossed = paths.iter().filter(|(_, max)| crosses(*max)).count();
    let rate = crossed as f64 / paths.len() as f64;
    prop_assert!(
        rate <= rate_bound(ALPHA, paths.len()),
        "{what}: crossed 1/α in {crossed} of {}",
        paths.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// FAIL under r ≤ 1 (exact at every event rate): errors near 0.1% up to latency's 50%.
    #[test]
    fn fail_is_a_supermartingale_when_the_canary_is_no_worse(
        seed in any::<u64>(),
        ln_base in (0.0005f64).ln()..(0.5f64).ln(),
        ratio in prop_oneof![Just(1.0), 0.5f64..1.0],
        requests in 50u64..3000,
        intervals in 5usize..40,
        burst in any::<bool>(),
    ) {
        let test = RatioTest { tolerance: 1.0, margin: 2.0 };
        let base = ln_base.exp();
        let s = Scenario { test, base, ratio, requests, intervals, burst, promote: false };
        check_null(s.paths(seed, 0x2545F4914F6CDD1D), &format!("base {base:.4} ratio {ratio:.2}"))?;
    }

    /// FAIL with a tolerance above 1, at the tolerance (rare events, where the binomial is the
    /// Poisson limit).
    #[test]
    fn fail_holds_at_a_tolerance_above_one(
        seed in any::<u64>(),
        base in 0.0005f64..0.02,
        tolerance in 1.05f64..1.5,
        requests in 200u64..5000,
        intervals in 5usize..40,
    ) {
        let test = RatioTest { tolerance, margin: 2.0 * tolerance };
        let s = Scenario { test, base, ratio: tolerance, requests, intervals, burst: false, promote: false };
        check_null(s.paths(seed, 0x9E3779B97F4A7C15), &format!("tolerance {tolerance:.2}"))?;
    }

    /// PROMOTE under r = margin: errors (margin 2) and latency-like rates (margin 1.5, up to a
    /// third of the primary's requests slow, so half of the canary's).
    #[test]
    fn promote_is_a_supermartingale_when_the_canary_is_at_the_margin(
        seed in any::<u64>(),
        latency in any::<bool>(),
        ln_base in (0.001f64).ln()..(0.33f64).ln(),
        requests in 50u64..3000,
        intervals in 5usize..40,
        burst in any::<bool>(),
    ) {
        let margin = if latency { 1.5 } else { 2.0 };
        let test = RatioTest { tolerance: 1.0, margin };
        let base = ln_base.exp();
        let s = Scenario { test, base, ratio: margin, requests, intervals, burst, promote: true };
        check_null(s.paths(seed, 0xD1B54A32D192ED03), &format!("PROMOTE base {base:.4} margin {margin}"))?;
    }
}

fn two_metric_spec() -> JudgeSpec {
    JudgeSpec {
        alpha: ALPHA,
        promote_alpha: ALPHA,
        min_bake_seconds: 60.0,
        metrics: vec![
            errors_metric(),
            latency_metric(Boundaries::Quantiles(vec![0.9, 0.99])),
        ],
    }
}

const BOUNDS: [f64; 8] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// Bucket probabilities of a lognormal(median 50ms, σ 0.6), roughly: p90 ≈ 100ms, p99 ≈ 200ms.
const PROBS: [f64; 9] = [0.0, 0.0005, 0.0105, 0.489, 0.3775, 0.114, 0.0075, 0.0009, 0.0001];
/// A slow period for both arms: a tenth of the requests move to the 250–500ms bucket.
const SLOW: [f64; 9] = [0.0, 0.0005, 0.0105, 0.44, 0.33, 0.1015, 0.1065, 0.0009, 0.0001];

/// One interval with both metrics, identical arms (A/A), optionally during a shared slowdown
/// and error burst.
fn aa_interval(rng: &mut Rng, requests: u64, share: f64, base: f64, shock: bool) -> IntervalCounts {
    let p = if shock { base * 5.0 } else { base };
    let mut c = error_interval(rng, requests, share, p, p);
    let probs = if shock { &SLOW } else { &PROBS };
    c.canary.latency = Some(histogram(rng, &BOUNDS, probs, c.canary.requests));
    c.primary.latency = Some(histogram(rng, &BOUNDS, probs, c.primary.requests));
    c
}

#[test]
fn a_canary_identical_to_its_primary_is_rarely_rolled_back() {
    let spec = two_metric_spec();
    let mut rollbacks = 0;
    let runs = 600;
    for run in 0..runs {
        let mut rng = Rng::new(run);
        let baseline = histogram(&mut rng, &BOUNDS, &PROBS, 12_000);
        let boundaries = spec.resolve_boundaries(Some(&baseline)).unwrap();
        assert_eq!(
            boundaries,
            vec![100.0, 250.0],
            "bounds nearest p90 and p99 of the baseline"
        );
        let mut judge = CanaryJudge::new(&spec, boundaries);
        // 30 minutes of 15 s intervals at 50 req/s, Flagger's weights 10..50%, a burst.
        for j in 0..120 {
            let share = [0.1, 0.2, 0.3, 0.4, 0.5][(j / 4) % 5];
            let n = rng.poisson(750.0);
            let counts = aa_interval(&mut rng, n, share, 0.002, (40..48).contains(&j));
            judge.observe(&spec, &counts).unwrap();
            // The verdict's rule, without building its explanation every interval.
            if crosses(judge.ln_rollback(&spec)) {
                rollbacks += 1;
                break;
            }
        }
    }
    assert_rare(rollbacks, runs, "false rollbacks");
}

/// A fleet of clusters that differ in base rate (10×), canary share and start time, some never
/// start, some go silent, with reports delivered late, shuffled and duplicated.
fn fleet_run(seed: u64, ratio: f64) -> Vec<EvidenceReport> {
    let mut rng = Rng::new(seed);
    let mut reports = Vec::new();
    for k in 0..12u64 {
        let cluster = format!("c{k}");
        if k % 6 == 5 {
            continue; // skipped: never starts
        }
        let base = 0.0005 * (1.0 + 9.0 * rng.uniform());
        let share = [0.05, 0.1, 0.5][k as usize % 3];
        let start = (k / 3) as usize * 20;
        let silent_after = if k % 4 == 3 { 10 } else { usize::MAX };
        for j in 0..40usize {
            if j < start || j - start >= silent_after {
                continue;
            }
            let n = rng.poisson(300.0);
            let counts = error_interval(&mut rng, n, share, base * ratio, base);
            reports.push(EvidenceReport {
                cluster: cluster.clone(),
                run: "r1".into(),
                interval: (j - start) as u64,
                boundaries_ms: vec![],
                counts,
            });
        }
    }
    // Delivery: shuffled within a window (late reports), one in ten sent twice.
    for i in (1..reports.len()).rev() {
        let j = i.saturating_sub((rng.next_u64() % 8) as usize);
        reports.swap(i, j);
    }
    let dups: Vec<EvidenceReport> = reports.iter().step_by(10).cloned().collect();
    for (i, d) in dups.into_iter().enumerate() {
        let at = (i * 10 + 5).min(reports.len());
        reports.insert(at, d);
    }
    reports
}

fn errors_only() -> JudgeSpec {
    let mut spec = two_metric_spec();
    spec.metrics.truncate(1);
    spec
}

#[test]
fn a_fleet_with_no_regression_is_rarely_halted() {
    let spec = errors_only();
    let planned: Vec<String> = (0..12).map(|k| format!("c{k}")).collect();
    let runs = 600;
    let mut halts = 0;
    for run in 0..runs {
        let mut fleet = FleetJudge::new(spec.clone(), planned.clone()).unwrap();
        for r in fleet_run(run, 1.0) {
            fleet.add(&r).unwrap();
            if crosses(fleet.ln_global()) {
                halts += 1;
                break;
            }
        }
    }
    assert_rare(halts, runs, "false fleet halts");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The pool depends on which reports arrived, not on their order or on retransmissions.
    #[test]
    fn pooled_evidence_is_idempotent_and_order_free(seed in any::<u64>(), ratio in 1.0f64..3.0) {
        let spec = errors_only();
        let planned: Vec<String> = (0..12).map(|k| format!("c{k}")).collect();
        let reports = fleet_run(seed, ratio);
        let mut shuffled = FleetJudge::new(spec.clone(), planned.clone()).unwrap();
        let mut duplicates = 0;
        for r in &reports {
            if shuffled.add(r).unwrap() == aviary_core::judge::Added::Duplicate {
                duplicates += 1;
            }
        }
        prop_assert!(duplicates > 0);
        let mut ordered_reports = reports.clone();
        ordered_reports.sort_by(|a, b| (&a.cluster, a.interval).cmp(&(&b.cluster, b.interval)));
        ordered_reports.dedup_by(|a, b| a.cluster == b.cluster && a.interval == b.interval);
        let mut ordered = FleetJudge::new(spec, planned).unwrap();
        for r in &ordered_reports {
            prop_assert_eq!(ordered.add(r).unwrap(), aviary_core::judge::Added::New);
        }
        prop_assert!((shuffled.ln_global() - ordered.ln_global()).abs() < 1e-6);
        let a = shuffled.verdict();
        let b = ordered.verdict();
        // The displayed interval sums f32s, so the order may move it in the last digits.
        let (lo_a, lo_b) = (a.shared.metrics[0].ratio.lo, b.shared.metrics[0].ratio.lo);
        prop_assert_eq!(lo_a.is_some(), lo_b.is_some());
        prop_assert!((lo_a.unwrap_or(1.0) / lo_b.unwrap_or(1.0) - 1.0).abs() < 1e-3, "{:?} {:?}", lo_a, lo_b);
        prop_assert_eq!(a.clusters_reporting, b.clusters_reporting);
    }
}

#[test]
fn pooling_is_stratified_not_simpsons_paradox() {
    // Cluster A: half its traffic on the canary, 1% errors in both arms. Cluster B: 10% on the
    // canary, 0.1% in both. Equal traffic. Added together the canary errs 0.85% and the primary
    // 0.42%: a "2× regression" that does not exist.
    let spec = errors_only();
    let mut fleet = FleetJudge::new(spec, vec!["a".into(), "b".into()]).unwrap();
    let arm = |requests, errors| ArmCounts {
        requests,
        errors,
        latency: None,
    };
    for j in 0..20 {
        for (cluster, canary, primary) in [
            ("a", arm(5000, 50), arm(5000, 50)),
            ("b", arm(1000, 1), arm(9000, 9)),
        ] {
            fleet
                .add(&EvidenceReport {
                    cluster: cluster.into(),
                    run: "r1".into(),
                    interval: j,
                    boundaries_ms: vec![],
                    counts: IntervalCounts {
                        seconds: 60.0,
                        canary,
                        primary,
                    },
                })
                .unwrap();
        }
    }
    let v = fleet.verdict();
    assert_ne!(v.decision, Decision::Rollback, "{}", v.explanation);
    let ci = v.shared.metrics[0].ratio;
    assert!(ci.lo.unwrap() < 1.0 && ci.hi.unwrap() > 1.0, "{ci:?}");
    // The naive pooled ratio would be 0.85% / 0.42% ≈ 2.
    let naive = (51.0 / 6000.0) / (59.0 / 14000.0);
    assert!(naive > 2.0 && ci.hi.unwrap() < naive);
}
