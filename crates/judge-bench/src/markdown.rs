//! The generated section of docs/benchmarks.md: the issue's bars, then one table per scenario
//! family.

use std::fmt::Write as _;

use serde_json::Value;

use crate::report::{Args, last_wave_start};
use crate::scenarios::{ArmSummary, FleetSummary, SingleSummary, WAVE_S};
use crate::stats::{clopper_pearson, quantile};

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn pct_ci(k: usize, n: usize) -> String {
    let (lo, hi) = clopper_pearson(k as u64, n as u64);
    format!(
        "{} [{:.1}, {:.1}]",
        pct(k as f64 / n.max(1) as f64),
        100.0 * lo,
        100.0 * hi
    )
}

pub(crate) fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |s| format!("{s:.0} s"))
}

fn med_p90(xs: &[f64]) -> String {
    match (quantile(xs, 0.5), quantile(xs, 0.9)) {
        (Some(m), Some(p)) => format!("{m:.0} s ({p:.0})"),
        _ => "–".into(),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn vpct(v: &Value) -> String {
    num(v).map_or_else(|| "–".into(), pct)
}

fn vsecs(v: &Value) -> String {
    secs(num(v))
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    }
}

/// The issue's bars, measured.
fn bars(j: &Value) -> String {
    let f = |k: &str| num(&j[k]);
    let all = |xs: &[Option<bool>]| {
        xs.iter()
            .copied()
            .collect::<Option<Vec<bool>>>()
            .map(|v| v.iter().all(|b| *b))
    };
    let rows = [
        (
            "A/A false rollbacks ≤ α = 5% (per-request routing: plain, burst, diurnal, clustered; 5–2,000 req/s; 30 min of looks)".to_string(),
            format!(
                "J {} (upper 95% bound {}) over {} runs; J-rel {}; F {}, T {}, K {} (all S0)",
                vpct(&j["aa_false_rollback_rate"]),
                vpct(&j["aa_false_rollback_ci_high"]),
                aviary_core::judge::explain::fmt_count(j["aa_runs"].as_u64().unwrap_or(0)),
                vpct(&j["relative_aa_false_rollback_rate"]),
                vpct(&j["flagger_aa_false_rollback_rate"]),
                vpct(&j["tight_aa_false_rollback_rate"]),
                vpct(&j["kayenta_aa_false_rollback_rate"])
            ),
            met(f("aa_false_rollback_ci_high").map(|x| x <= 0.05)),
        ),
        (
            "… with session affinity (a client pinned to one arm)".into(),
            format!("J {}", vpct(&j["aa_affinity_false_rollback_rate"])),
            "not met: the judge refuses rollback/enforce with `sessionAffinity` (observe only)",
        ),
        (
            "S1: 0.1% → 0.5% errors at 200 req/s detected in ≥ 95%, median ≤ 2 min".into(),
            format!(
                "{}, median {} (acted on at the next tick: {}); Flagger {}",
                vpct(&j["s1_detect_rate"]),
                vsecs(&j["s1_median_s"]),
                vsecs(&j["s1_next_tick_median_s"]),
                vpct(&j["flagger_s1_detect_rate"])
            ),
            met(all(&[f("s1_detect_rate").map(|x| x >= 0.95), f("s1_median_s").map(|x| x <= 120.0)])),
        ),
        (
            "S2: 0.1% → 0.2% at 200 req/s, ≥ 80% within 30 min".into(),
            vpct(&j["s2_detect_rate"]),
            met(f("s2_detect_rate").map(|x| x >= 0.8)),
        ),
        (
            "S3: p99 +20 ms (tail only), 200 ms bound, ≥ 90% within 10 min where Flagger never".into(),
            format!(
                "{} (default buckets: {}); Flagger {}",
                vpct(&j["s3_detect_rate"]),
                vpct(&j["s3_default_buckets_detect_rate"]),
                vpct(&j["flagger_s3_detect_rate"])
            ),
            met(all(&[f("s3_detect_rate").map(|x| x >= 0.9), f("flagger_s3_detect_rate").map(|x| x == 0.0)])),
        ),
        (
            "S4: latency ×1.1 at 200 req/s, median ≤ 2 min".into(),
            format!("{}, median {}", vpct(&j["s4_detect_rate"]), vsecs(&j["s4_median_s"])),
            met(f("s4_median_s").map(|x| x <= 120.0)),
        ),
        (
            "S5: a hard failure (0.1% → 5%) never later than Flagger (≥ 99% of runs)".into(),
            format!(
                "{} of runs; median {} against Flagger's {} at 200 req/s",
                vpct(&j["s5_not_later_rate"]),
                vsecs(&j["s5_median_s"]),
                vsecs(&j["flagger_s5_median_s"])
            ),
            met(f("s5_not_later_rate").map(|x| x >= 0.99)),
        ),
        (
            "S6: false early PROMOTE at the margin (r = m = 2) ≤ α_P".into(),
            vpct(&j["s6_false_promote_rate"]),
            met(f("s6_false_promote_rate").map(|x| x <= 0.05)),
        ),
        (
            "S6: time to promote a good release against Flagger's fixed schedule (200 req/s)".into(),
            format!(
                "median {} against {} (2,000 req/s: see the S6 table)",
                vsecs(&j["s6_promote_median_s"]),
                vsecs(&j["flagger_promote_median_s"])
            ),
            "reported",
        ),
        (
            "S7: 0.1% → 0.2% fleet-wide (20 × 20 req/s, waves) detected in ≥ 80% before the last wave".into(),
            format!(
                "{} (`evidence: {{pooled: true}}`: anytime evidence at 0.1 α and the planned look at 0.9 α; the anytime evidence alone at α {}; its shared half alone {}; an anytime test that knows the ratio {}; one planned look at α {}; one cluster alone {}; by the end {})",
                vpct(&j["s7_pooled_detect_rate"]),
                vpct(&j["s7_anytime_detect_rate"]),
                vpct(&j["s7_shared_only_detect_rate"]),
                vpct(&j["s7_oracle_detect_rate"]),
                vpct(&j["s7_single_look_detect_rate"]),
                vpct(&j["s7_single_cluster_detect_rate"]),
                vpct(&j["s7_pooled_detect_rate_by_end"])
            ),
            if f("s7_pooled_detect_rate").is_some_and(|x| x >= 0.8) {
                "met"
            } else {
                "**not met**; see docs/statistical-analysis.md"
            },
        ),
        (
            "S7: A/A fleet halts ≤ α".into(),
            format!(
                "{} (the anytime evidence alone at α: {}; one planned look at α: {}; any single cluster alone, each at α: {})",
                vpct(&j["s7_aa_halt_rate"]),
                vpct(&j["s7_aa_anytime_halt_rate"]),
                vpct(&j["s7_aa_single_look_rate"]),
                vpct(&j["s7_aa_any_cluster_rate"])
            ),
            met(f("s7_aa_halt_rate").map(|x| x <= 0.05)),
        ),
    ];
    let mut out = String::from("| Bar (issue 20) | Measured | |\n| --- | --- | --- |\n");
    for (bar, measured, verdict) in rows {
        let _ = writeln!(out, "| {bar} | {measured} | {verdict} |");
    }
    out.push('\n');
    out
}

fn arm_cells(a: &ArmSummary) -> String {
    format!("{} | {}", pct(a.rollback_rate()), med_p90(&a.rollback_times))
}

/// The generated Markdown section.
pub fn markdown(args: &Args, s: &[SingleSummary], f: &[FleetSummary], summary: &Value) -> String {
    let mut out = String::new();
    let fleet_runs = args.fleet_runs.unwrap_or(args.runs);
    let _ = writeln!(
        out,
        "Generated by `RUNS={} SEED={} scripts/bench-judge` ({} runs per fleet scenario) in {} s. J = the judge (α = 0.05, defaults), F = Flagger (≥ 99%, p99 ≤ 500 ms, threshold 5) as aviary's engine runs it, T = tightened Flagger (≥ 99.8%, ≤ 250 ms, threshold 2), K = Kayenta-like repeated Mann-Whitney. Intervals are exact (Clopper-Pearson) 95%.\n",
        args.runs, args.seed, fleet_runs, summary["elapsed_s"]
    );
    out.push_str(&bars(summary));
    aa_table(&mut out, s);
    detection_table(&mut out, s);
    promote_table(&mut out, s);
    fleet_table(&mut out, f);
    out.push_str("\n![A/A false rollback rates with 95% intervals](img/judge-aa.svg)\n\n");
    out.push_str("![Detection times](img/judge-detection.svg)\n\n");
    out.push_str("![Time to promote a good release](img/judge-promote.svg)\n\n");
    out.push_str("![The fleet: pooled detection](img/judge-fleet.svg)\n\n");
    let _ = writeln!(out, "JSON line:\n\n```json\n{summary}\n```");
    out
}

fn aa_table(out: &mut String, s: &[SingleSummary]) {
    out.push_str("#### S0: A/A false rollbacks (30 minutes per run, Flagger's schedule held at 50%)\n\n");
    out.push_str(
        "| Stressor | req/s | J | J-rel | F | T | K |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for x in s.iter().filter(|x| x.scenario.id == "S0") {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            x.scenario.variant,
            x.scenario.rps,
            pct_ci(x.judge.rollbacks, x.judge.runs),
            pct_ci(x.relative.rollbacks, x.relative.runs),
            pct_ci(x.flagger.rollbacks, x.flagger.runs),
            pct_ci(x.tight.rollbacks, x.tight.runs),
            pct_ci(x.kayenta.rollbacks, x.kayenta.runs)
        );
    }
}

fn detection_table(out: &mut String, s: &[SingleSummary]) {
    out.push_str("\n#### S1–S5: detection (rollback rate, median (p90) time to the decision)\n\n");
    out.push_str("| Scenario | req/s | J | J median | J at next tick | J canary requests | J excess errors | F | F median | T | T median | K | K median |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for x in s
        .iter()
        .filter(|x| ["S1", "S2", "S3", "S4", "S5"].contains(&x.scenario.id))
    {
        let label = if x.scenario.variant.is_empty() {
            x.scenario.id.to_string()
        } else {
            format!("{} ({})", x.scenario.id, x.scenario.variant)
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.scenario.rps,
            arm_cells(&x.judge),
            secs(quantile(&x.judge_next_tick, 0.5)),
            quantile(&x.judge.canary_requests, 0.5).map_or("–".into(), |v| format!("{v:.0}")),
            quantile(&x.judge.excess_errors, 0.5).map_or("–".into(), |v| format!("{v:.1}")),
            arm_cells(&x.flagger),
            arm_cells(&x.tight),
            arm_cells(&x.kayenta)
        );
    }
    let s5: Vec<String> = s
        .iter()
        .filter(|x| x.scenario.id == "S5")
        .map(|x| {
            format!(
                "{} req/s: {} of {}",
                x.scenario.rps, x.judge_not_later.0, x.judge_not_later.1
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nS5, runs where Flagger rolled back and the judge did no later: {}.\n",
        s5.join("; ")
    );
}

fn promote_table(out: &mut String, s: &[SingleSummary]) {
    out.push_str("#### S6: good releases (promotion) and false early promotion\n\n");
    out.push_str("| Release | req/s | J promotes | of which early, by the judge | J median (p90) | J rolls back | F promotes | F median |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for x in s.iter().filter(|x| x.scenario.id == "S6") {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            x.scenario.variant,
            x.scenario.rps,
            pct_ci(x.judge.promotes, x.judge.runs),
            pct_ci(x.judge.own_promotes, x.judge.runs),
            med_p90(&x.judge.promote_times),
            pct(x.judge.rollback_rate()),
            pct(x.flagger.promote_rate()),
            med_p90(&x.flagger.promote_times)
        );
    }
}

fn fleet_table(out: &mut String, f: &[FleetSummary]) {
    out.push_str(
        "\n#### S7: the fleet (20 clusters × 20 req/s, waves of 1/3/6/10 clusters × 10 min, 10% canary)\n\n",
    );
    out.push_str("| Fleet | pooled before wave 4 | pooled by the end | pooled median (p90) | anytime alone at α, before wave 4 | its shared half alone | oracle, before wave 4 | one look at wave 4's start, at α | first cluster alone, its wave | any cluster alone before wave 4 | Flagger, any cluster before wave 4 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let before = last_wave_start();
    for x in f {
        let (pk, _) = x.rate_before(|r| r.pooled, before);
        let (ek, _) = x.rate_before(|r| r.pooled, f64::INFINITY);
        let (ck, _) = x.rate_before(|r| r.first_cluster, WAVE_S);
        let (ak, _) = x.rate_before(|r| r.any_cluster, before);
        let (fk, _) = x.rate_before(|r| r.flagger, before);
        let (sk, _) = x.rate_before(|r| r.shared_only, before);
        let (nk, _) = x.rate_before(|r| r.anytime, before);
        let (ok, _) = x.rate_before(|r| r.oracle, before);
        let (lk, _) = x.rate_before(|r| r.single_look, before);
        let oracle = if x.scenario.variant == "A/A" {
            "–".to_string()
        } else {
            pct_ci(ok, x.runs)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.scenario.variant,
            pct_ci(pk, x.runs),
            pct_ci(ek, x.runs),
            med_p90(&x.times(|r| r.pooled)),
            pct_ci(nk, x.runs),
            pct_ci(sk, x.runs),
            oracle,
            pct_ci(lk, x.runs),
            pct_ci(ck, x.runs),
            pct_ci(ak, x.runs),
            pct_ci(fk, x.runs)
        );
    }
}
