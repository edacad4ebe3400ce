//! The JSON summary: the benchmark's figures as one object (the script's last line).

use serde_json::{Value, json};

use crate::report::{Args, last_wave_start};
use crate::scenarios::{ArmSummary, FleetSummary, SingleSummary, Stressor, WAVE_S};
use crate::stats::{clopper_pearson, quantile};

pub(crate) fn find<'a>(
    s: &'a [SingleSummary],
    id: &str,
    variant: &str,
    rps: f64,
) -> Option<&'a SingleSummary> {
    s.iter()
        .find(|x| x.scenario.id == id && x.scenario.variant == variant && x.scenario.rps == rps)
}

/// Rollbacks over the S0 runs matching `keep`, per arm.
fn aa_total(
    s: &[SingleSummary],
    keep: &dyn Fn(Stressor) -> bool,
    arm: &dyn Fn(&SingleSummary) -> &ArmSummary,
) -> (usize, usize) {
    s.iter()
        .filter(|x| x.scenario.id == "S0" && keep(x.scenario.stressor))
        .fold((0, 0), |(k, n), x| (k + arm(x).rollbacks, n + arm(x).runs))
}

fn per_request(st: Stressor) -> bool {
    st != Stressor::Affinity
}

fn rate(k: usize, n: usize) -> Value {
    if n == 0 {
        Value::Null
    } else {
        json!(k as f64 / n as f64)
    }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |v| json!((v * 1e4).round() / 1e4))
}

pub fn json_summary(args: &Args, s: &[SingleSummary], f: &[FleetSummary], elapsed: f64) -> Value {
    let (jk, jn) = aa_total(s, &per_request, &|x| &x.judge);
    let (ak, an) = aa_total(s, &|st| st == Stressor::Affinity, &|x| &x.judge);
    let (rk, rn) = aa_total(s, &per_request, &|x| &x.relative);
    let (fk, fn_) = aa_total(s, &|_| true, &|x| &x.flagger);
    let (tk, tn) = aa_total(s, &|_| true, &|x| &x.tight);
    let (kk, kn) = aa_total(s, &|_| true, &|x| &x.kayenta);
    let s1 = find(s, "S1", "", 200.0);
    let s3 = find(s, "S3", "200ms bound", 200.0);
    let s5: Vec<&SingleSummary> = s.iter().filter(|x| x.scenario.id == "S5").collect();
    let (s5k, s5n) = s5.iter().fold((0, 0), |(k, n), x| {
        (k + x.judge_not_later.0, n + x.judge_not_later.1)
    });
    let s6 = find(s, "S6", "good", 200.0);
    let margin: Vec<&SingleSummary> = s
        .iter()
        .filter(|x| x.scenario.variant == "at the margin 0.2%")
        .collect();
    let (mk, mn) = margin
        .iter()
        .fold((0, 0), |(k, n), x| (k + x.judge.own_promotes, n + x.judge.runs));
    let fleet = |v: &str| f.iter().find(|x| x.scenario.variant == v);
    let before = last_wave_start();
    let fleet_rate = |v: &str, pick: &dyn Fn(&crate::run::FleetResult) -> Option<f64>, limit: f64| {
        fleet(v).map_or(Value::Null, |x| json!(x.rate_before(pick, limit).1))
    };
    json!({
        "runs": args.runs,
        "seed": args.seed,
        "alpha": 0.05,
        "aa_false_rollback_rate": rate(jk, jn),
        "aa_false_rollback_ci_high": if jn > 0 { json!(clopper_pearson(jk as u64, jn as u64).1) } else { Value::Null },
        "aa_runs": jn,
        "aa_affinity_false_rollback_rate": rate(ak, an),
        "relative_aa_false_rollback_rate": rate(rk, rn),
        "flagger_aa_false_rollback_rate": rate(fk, fn_),
        "tight_aa_false_rollback_rate": rate(tk, tn),
        "kayenta_aa_false_rollback_rate": rate(kk, kn),
        "s1_detect_rate": s1.map_or(Value::Null, |x| json!(x.judge.rollback_rate())),
        "s1_median_s": opt(s1.and_then(|x| x.judge.median_rollback())),
        "s1_next_tick_median_s": opt(s1.and_then(|x| quantile(&x.judge_next_tick, 0.5))),
        "flagger_s1_detect_rate": s1.map_or(Value::Null, |x| json!(x.flagger.rollback_rate())),
        "tight_s1_detect_rate": s1.map_or(Value::Null, |x| json!(x.tight.rollback_rate())),
        "s2_detect_rate": find(s, "S2", "", 200.0).map_or(Value::Null, |x| json!(x.judge.rollback_rate())),
        "s3_detect_rate": s3.map_or(Value::Null, |x| json!(x.judge.rollback_rate())),
        "s3_default_buckets_detect_rate": find(s, "S3", "default buckets", 200.0).map_or(Value::Null, |x| json!(x.judge.rollback_rate())),
        "flagger_s3_detect_rate": s3.map_or(Value::Null, |x| json!(x.flagger.rollback_rate())),
        "s4_detect_rate": find(s, "S4", "", 200.0).map_or(Value::Null, |x| json!(x.judge.rollback_rate())),
        "s4_median_s": opt(find(s, "S4", "", 200.0).and_then(|x| x.judge.median_rollback())),
        "s5_not_later_rate": rate(s5k, s5n),
        "s5_median_s": opt(find(s, "S5", "", 200.0).and_then(|x| x.judge.median_rollback())),
        "flagger_s5_median_s": opt(find(s, "S5", "", 200.0).and_then(|x| x.flagger.median_rollback())),
        "s6_promote_median_s": opt(s6.and_then(|x| quantile(&x.judge.promote_times, 0.5))),
        "flagger_promote_median_s": opt(s6.and_then(|x| quantile(&x.flagger.promote_times, 0.5))),
        "s6_false_promote_rate": rate(mk, mn),
        "s7_pooled_detect_rate": fleet_rate("0.1→0.2%", &|r| r.pooled, before),
        "s7_pooled_detect_rate_by_end": fleet_rate("0.1→0.2%", &|r| r.pooled, f64::INFINITY),
        "s7_pooled_03_detect_rate": fleet_rate("0.1→0.3%", &|r| r.pooled, before),
        "s7_anytime_detect_rate": fleet_rate("0.1→0.2%", &|r| r.anytime, before),
        "s7_shared_only_detect_rate": fleet_rate("0.1→0.2%", &|r| r.shared_only, before),
        "s7_oracle_detect_rate": fleet_rate("0.1→0.2%", &|r| r.oracle, before),
        "s7_single_look_detect_rate": fleet_rate("0.1→0.2%", &|r| r.single_look, before),
        "s7_aa_single_look_rate": fleet_rate("A/A", &|r| r.single_look, before),
        "s7_single_cluster_detect_rate": fleet_rate("0.1→0.2%", &|r| r.first_cluster, WAVE_S),
        "s7_any_cluster_detect_rate": fleet_rate("0.1→0.2%", &|r| r.any_cluster, before),
        "s7_flagger_detect_rate": fleet_rate("0.1→0.2%", &|r| r.flagger, before),
        "s7_aa_halt_rate": fleet_rate("A/A", &|r| r.pooled, f64::INFINITY),
        "s7_aa_anytime_halt_rate": fleet_rate("A/A", &|r| r.anytime, f64::INFINITY),
        "s7_aa_any_cluster_rate": fleet_rate("A/A", &|r| r.any_cluster, f64::INFINITY),
        "elapsed_s": (elapsed * 10.0).round() / 10.0,
    })
}
