//! The judge's decisions and explanations on fixed counts (table-driven), its configuration
//! from an unchanged Flagger Canary, and the fleet pool's refusals.

mod judge_common;

use aviary_api::Canary;
use aviary_api::document::parse_canary;
use aviary_core::judge::{
    ArmCounts, Boundaries, CanaryJudge, Decision, EvidenceReport, FleetJudge, Histogram, IntervalCounts,
    JudgeConfig, JudgeMode, JudgeSpec, MetricKind, MetricSpec, Slo,
};
use judge_common::{errors_metric, latency_metric};

fn latency() -> MetricSpec {
    latency_metric(Boundaries::Fixed(vec![100.0, 250.0]))
}

fn spec(metrics: Vec<MetricSpec>) -> JudgeSpec {
    JudgeSpec {
        alpha: 0.05,
        promote_alpha: 0.05,
        min_bake_seconds: 120.0,
        metrics,
    }
}

fn arm(requests: u64, errors: u64) -> ArmCounts {
    ArmCounts {
        requests,
        errors,
        latency: None,
    }
}

/// Requests in the buckets ≤100ms, 100–250ms, 250–500ms and above.
fn timed(requests: u64, errors: u64, slow: [u64; 3]) -> ArmCounts {
    let fast = requests - slow.iter().sum::<u64>();
    ArmCounts {
        requests,
        errors,
        latency: Some(Histogram {
            bounds_ms: vec![100.0, 250.0, 500.0],
            cumulative: vec![fast, fast + slow[0], fast + slow[0] + slow[1], requests],
        }),
    }
}

struct Case {
    name: &'static str,
    metrics: Vec<MetricSpec>,
    /// Each interval's counts, repeated `times`.
    canary: ArmCounts,
    primary: ArmCounts,
    times: usize,
    seconds: f64,
    decision: Decision,
    explanation: &'static str,
}

#[test]
fn decisions_and_explanations() {
    let cases = [
        Case {
            name: "0.5% against 0.1% at 200 req/s, 10% canary, one minute",
            metrics: vec![errors_metric()],
            canary: arm(1200, 6),
            primary: arm(10800, 11),
            times: 1,
            seconds: 60.0,
            decision: Decision::Continue,
            explanation: "continue: request-success-rate: error ratio canary/primary ∈ [0.82, 22] (95%), evidence 14 < 20, non-inferiority 0.18 < 20 (margin 2), fewer than 20 errors: continue",
        },
        Case {
            name: "the same, two minutes",
            metrics: vec![errors_metric()],
            canary: arm(1200, 6),
            primary: arm(10800, 11),
            times: 2,
            seconds: 60.0,
            decision: Decision::Rollback,
            explanation: "rollback: request-success-rate: error ratio canary/primary ∈ [1.5, 14] (95%), evidence 480 ≥ 20: rollback",
        },
        Case {
            name: "too early to tell",
            metrics: vec![errors_metric()],
            canary: arm(300, 1),
            primary: arm(2700, 3),
            times: 2,
            seconds: 15.0,
            decision: Decision::Continue,
            explanation: "continue: request-success-rate: error ratio canary/primary ∈ [<0.25, 32] (95%), evidence 1.2 < 20, non-inferiority 0.56 < 20 (margin 2), fewer than 20 errors: continue",
        },
        Case {
            name: "no errors at all",
            metrics: vec![errors_metric()],
            canary: arm(300, 0),
            primary: arm(2700, 0),
            times: 4,
            seconds: 15.0,
            decision: Decision::Continue,
            explanation: "continue: request-success-rate: no errors yet (canary 0 of 1,200 requests, primary 0 of 10,800): continue",
        },
        Case {
            name: "equal rates, enough events, bake passed",
            metrics: vec![errors_metric()],
            canary: arm(3000, 6),
            primary: arm(27000, 54),
            times: 12,
            seconds: 15.0,
            decision: Decision::Promote,
            explanation: "promote: request-success-rate: error ratio canary/primary ∈ [0.66, 1.4] (95%), non-inferiority evidence 3.1e7 ≥ 20 (margin 2): promote",
        },
        Case {
            name: "equal rates, bake not yet passed",
            metrics: vec![errors_metric()],
            canary: arm(12000, 24),
            primary: arm(108000, 216),
            times: 3,
            seconds: 15.0,
            decision: Decision::Continue,
            explanation: "continue until the minimum bake (45s of 120s): request-success-rate: error ratio canary/primary ∈ [0.66, 1.4] (95%), non-inferiority evidence 3.1e7 ≥ 20 (margin 2): promote",
        },
        Case {
            name: "both arms over the SLO: the absolute arm rolls back",
            metrics: vec![errors_metric()],
            canary: arm(1000, 30),
            primary: arm(9000, 270),
            times: 4,
            seconds: 15.0,
            decision: Decision::Rollback,
            explanation: "rollback: request-success-rate: error ratio canary/primary ∈ [0.72, 1.3] (95%), evidence 1.2e21 ≥ 20 (canary error rate 3% above the SLO 1%): rollback",
        },
        Case {
            name: "a slow tail: two metrics, latency rolls back",
            metrics: vec![errors_metric(), latency()],
            canary: timed(1000, 1, [90, 20, 1]),
            primary: timed(9000, 9, [700, 90, 9]),
            times: 8,
            seconds: 15.0,
            decision: Decision::Rollback,
            explanation: "rollback: request-duration: slower-than-250ms ratio canary/primary ∈ [1.4, 2.5] (95%), evidence 4.0e9 ≥ 40: rollback",
        },
    ];
    let mut wrong = Vec::new();
    for case in cases {
        let spec = spec(case.metrics);
        let mut judge = CanaryJudge::new(&spec, vec![100.0, 250.0]);
        for _ in 0..case.times {
            let counts = IntervalCounts {
                seconds: case.seconds,
                canary: case.canary.clone(),
                primary: case.primary.clone(),
            };
            judge.observe(&spec, &counts).unwrap();
        }
        let v = judge.verdict(&spec);
        assert_eq!(
            judge.decision(&spec),
            v.decision,
            "{}: the cheap rule agrees",
            case.name
        );
        if (v.decision, v.explanation.as_str()) != (case.decision, case.explanation) {
            wrong.push(format!(
                "{}:\n  got  {:?} {}\n  want {:?} {}",
                case.name, v.decision, v.explanation, case.decision, case.explanation
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn unusable_counts_change_nothing() {
    let spec = spec(vec![errors_metric(), latency()]);
    let mut judge = CanaryJudge::new(&spec, vec![100.0, 250.0]);
    let before = judge.clone();
    let no_histogram = IntervalCounts {
        seconds: 15.0,
        canary: arm(100, 1),
        primary: arm(900, 1),
    };
    let e = judge.observe(&spec, &no_histogram).unwrap_err().to_string();
    assert!(e.contains("needs histogram counts"), "{e}");
    let bad = IntervalCounts {
        seconds: 15.0,
        canary: arm(10, 11),
        primary: arm(900, 1),
    };
    assert!(judge.observe(&spec, &bad).is_err());
    assert_eq!(judge, before);
}

#[test]
fn per_canary_state_is_small() {
    let spec = spec(vec![errors_metric(), latency()]);
    let judge = CanaryJudge::new(&spec, vec![100.0, 250.0]);
    // 312 bytes for the error metric, 568 for latency with two boundaries, 88 for the run.
    assert_eq!(judge.state_bytes(), 312 + 568 + 88);
}

fn canary(yaml: &str) -> Canary {
    parse_canary(yaml).unwrap()
}

fn canary_with(annotations: &str, metric_vars: &str) -> Canary {
    canary(&format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
  annotations:
{annotations}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: 1m
{metric_vars}
    - name: request-duration
      thresholdRange: {{max: 500}}
      interval: 1m
    - name: custom
      templateRef: {{name: t}}
      thresholdRange: {{max: 5}}
"#
    ))
}

#[test]
fn configuration_from_an_unchanged_flagger_canary() {
    // No annotation: no judge, Flagger's behaviour.
    assert_eq!(
        JudgeConfig::from_canary(&canary_with("    a: b", "")).unwrap(),
        None
    );
    assert_eq!(
        JudgeConfig::from_canary(&canary_with("    judge.aviary.dev/mode: \"off\"", "")).unwrap(),
        None
    );
    let c = JudgeConfig::from_canary(&canary_with(
        "    judge.aviary.dev/mode: enforce\n    judge.aviary.dev/alpha: \"0.01\"",
        "      templateVariables:\n        judge.margin: \"3\"\n        judge.weight: \"2\"",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(c.mode, JudgeMode::Enforce);
    assert_eq!(c.spec.alpha, 0.01);
    assert_eq!(c.spec.promote_alpha, 0.05);
    assert_eq!(c.spec.min_bake_seconds, 120.0, "two analysis intervals");
    assert_eq!(
        c.spec.metrics.len(),
        2,
        "the custom metric keeps Flagger's check only"
    );
    let e = &c.spec.metrics[0];
    assert_eq!(
        (e.margin, e.weight, e.slo),
        (3.0, 2.0, Some(Slo::ErrorRate(0.01)))
    );
    let l = &c.spec.metrics[1];
    assert_eq!(
        l.kind,
        MetricKind::Latency(Boundaries::Quantiles(vec![0.9, 0.99]))
    );
    assert_eq!((l.margin, l.slo), (1.5, Some(Slo::P99Ms(500.0))));
}

#[test]
fn configuration_errors_name_the_field() {
    let cases = [
        (
            "    judge.aviary.dev/mode: always",
            "",
            "metadata.annotations[judge.aviary.dev/mode]: expected one of off, observe, rollback, enforce, got \"always\"",
        ),
        (
            "    judge.aviary.dev/mode: observe\n    judge.aviary.dev/alpha: \"0.9\"",
            "",
            "metadata.annotations[judge.aviary.dev/alpha]: expected a probability in (0, 0.5] such as 0.05, got \"0.9\"",
        ),
        (
            "    judge.aviary.dev/mode: observe\n    judge.aviary.dev/min-bake: soon",
            "",
            "metadata.annotations[judge.aviary.dev/min-bake]: expected a Go duration such as 3m, got \"soon\"",
        ),
        (
            "    judge.aviary.dev/mode: observe",
            "      templateVariables:\n        judge.margin: \"1\"",
            "spec.analysis.metrics[0].templateVariables[judge.margin]: expected a ratio above 1, at most 10, got \"1\"",
        ),
        (
            "    judge.aviary.dev/mode: observe",
            "      templateVariables:\n        judge.tolerence: \"1.1\"",
            "spec.analysis.metrics[0].templateVariables[judge.tolerence]: unknown judge setting; known: judge, judge.tolerance, judge.margin, judge.weight, judge.boundaries, judge.quantiles, judge.min-events",
        ),
    ];
    for (ann, vars, want) in cases {
        let e = JudgeConfig::from_canary(&canary_with(ann, vars))
            .unwrap_err()
            .to_string();
        assert_eq!(e, want);
    }
    let mut pinned = canary_with("    judge.aviary.dev/mode: enforce", "");
    pinned.spec.analysis.as_mut().unwrap().session_affinity = Some(Default::default());
    let e = JudgeConfig::from_canary(&pinned).unwrap_err().to_string();
    assert!(
        e.contains("spec.analysis.sessionAffinity pins each client"),
        "{e}"
    );
    let observed = canary_with("    judge.aviary.dev/mode: observe", "");
    let mut observed_pinned = observed.clone();
    observed_pinned.spec.analysis.as_mut().unwrap().session_affinity = Some(Default::default());
    assert!(JudgeConfig::from_canary(&observed_pinned).unwrap().is_some());
    let mut c = canary_with("    judge.aviary.dev/mode: observe", "");
    let metrics = c.spec.analysis.as_mut().unwrap().metrics.as_mut().unwrap();
    metrics[2].template_variables = Some([("judge".to_string(), "on".to_string())].into());
    let e = JudgeConfig::from_canary(&c).unwrap_err().to_string();
    assert!(
        e.starts_with("spec.analysis.metrics[2].templateVariables[judge]: the judge reads"),
        "{e}"
    );
    metrics_off(&mut c);
    let e = JudgeConfig::from_canary(&c).unwrap_err().to_string();
    assert!(e.contains("no metric it can read"), "{e}");
}

fn metrics_off(c: &mut Canary) {
    let metrics = c.spec.analysis.as_mut().unwrap().metrics.as_mut().unwrap();
    metrics.truncate(2);
    for m in metrics {
        m.template_variables = Some([("judge".to_string(), "off".to_string())].into());
    }
}

#[test]
fn the_fleet_refuses_what_would_void_its_guarantee() {
    let spec = spec(vec![errors_metric()]);
    let mut fleet = FleetJudge::new(spec.clone(), vec!["eu-1".into(), "us-1".into()]).unwrap();
    let report = |cluster: &str, interval, errors| EvidenceReport {
        cluster: cluster.into(),
        run: "r1".into(),
        interval,
        boundaries_ms: vec![],
        counts: IntervalCounts {
            seconds: 30.0,
            canary: arm(100, errors),
            primary: arm(900, 1),
        },
    };
    assert_eq!(
        fleet.add(&report("eu-1", 0, 1)).unwrap(),
        aviary_core::judge::Added::New
    );
    assert_eq!(
        fleet.add(&report("eu-1", 0, 1)).unwrap(),
        aviary_core::judge::Added::Duplicate
    );
    let e = fleet.add(&report("eu-1", 0, 2)).unwrap_err().to_string();
    assert_eq!(
        e,
        "fleet evidence from cluster eu-1 run r1 interval 0: differs from the report already added under this key; evidence is never replaced (the first report stands)"
    );
    let e = fleet.add(&report("ap-1", 0, 0)).unwrap_err().to_string();
    assert!(e.contains("not in the rollout's plan"), "{e}");
    let mut moved = report("eu-1", 1, 0);
    moved.boundaries_ms = vec![100.0];
    assert!(
        fleet
            .add(&moved)
            .unwrap_err()
            .to_string()
            .contains("boundaries are fixed")
    );
    assert!(FleetJudge::new(spec, vec![]).is_err());
    let v = fleet.verdict();
    assert_eq!((v.clusters_reporting, v.clusters_planned), (1, 2));
    assert!(
        v.explanation.starts_with("continue: fleet evidence"),
        "{}",
        v.explanation
    );
}

/// The coordinator's pool judges latency too: each cluster's exceedances at its own boundaries
/// (different buckets here), pooled slot by slot; a cluster without histograms adds its errors
/// and nothing to latency, and is not refused.
#[test]
fn the_pool_judges_latency_slot_by_slot_and_takes_errors_without_histograms() {
    use aviary_core::fleet::{EvidencePlan, PooledEvidence};
    let plan = EvidencePlan {
        alpha: 0.05,
        advance: false,
        planned_look: false,
    };
    let planned = vec!["eu-1".to_string(), "us-1".into(), "ap-1".into()];
    let mut pool = PooledEvidence::new(plan, planned, 1).unwrap();
    // `n` requests, `above` of them slower than each of the two bounds.
    let timed = |n: u64, errors: u64, bounds: [f64; 2], above: [u64; 2]| ArmCounts {
        requests: n,
        errors,
        latency: Some(Histogram {
            bounds_ms: bounds.to_vec(),
            cumulative: vec![n - above[0], n - above[1], n],
        }),
    };
    let report = |cluster: &str, interval, boundaries: Vec<f64>, canary, primary| EvidenceReport {
        cluster: cluster.into(),
        run: "r1".into(),
        interval,
        boundaries_ms: boundaries,
        counts: IntervalCounts {
            seconds: 30.0,
            canary,
            primary,
        },
    };
    for i in 0..4 {
        // The canary twice as often slower than the primary's p90 and p99, equal errors.
        let eu = report(
            "eu-1",
            i,
            vec![100.0, 250.0],
            timed(1000, 1, [100.0, 250.0], [200, 20]),
            timed(9000, 9, [100.0, 250.0], [900, 90]),
        );
        let us = report(
            "us-1",
            i,
            vec![50.0, 500.0],
            timed(1000, 1, [50.0, 500.0], [200, 20]),
            timed(9000, 9, [50.0, 500.0], [900, 90]),
        );
        let ap = report("ap-1", i, vec![], arm(1000, 1), arm(9000, 9));
        for r in [eu, us, ap] {
            assert!(pool.add(&r).is_some(), "{}", pool.last_refusal);
        }
    }
    assert_eq!(pool.refused, 0);
    let v = pool.verdict();
    assert_eq!(v.decision, Decision::Rollback, "{}", v.explanation);
    let duration = v
        .shared
        .metrics
        .iter()
        .find(|m| m.name == "request-duration")
        .unwrap();
    assert_eq!(duration.decision, Decision::Rollback, "{}", duration.explanation);
    // eu-1 and us-1 only: 2 clusters × 4 intervals × 1,000 canary requests.
    assert_eq!(duration.canary_trials, 8_000);
    let errors = &v.shared.metrics[0];
    assert_eq!(errors.canary_trials, 12_000, "every cluster's errors");
    assert_ne!(errors.decision, Decision::Rollback);
    assert!(
        v.explanation.contains("request-duration: slower-than-"),
        "{}",
        v.explanation
    );
}
