//! Metric checks against Flagger 1.44's `runBuiltinMetricChecks` and `runMetricChecks`
//! (pkg/controller/scheduler_metrics.go): threshold rules, pass order, "no values" texts and the
//! analysis gauge. Each test names the lines it follows.

mod common;

use aviary_api::CanaryPhase;
use aviary_core::fakes::Answer;
use aviary_core::simulate::Simulation;
use common::*;

/// A Deployment canary (istio, stepWeight 50, threshold 5) with these `metrics` list items
/// (YAML, indented 4 spaces), and a Prometheus MetricTemplate for every `templateRef`.
fn with_metrics(metrics: &str) -> Simulation {
    let c = deployment_canary(&format!(
        "    interval: 1m\n    threshold: 5\n    stepWeight: 50\n    metrics:\n{metrics}"
    ));
    let sim = Simulation::new(c);
    for m in sim.canary.analysis().metrics.clone().unwrap_or_default() {
        let Some(r) = &m.template_ref else { continue };
        let name = r.name.clone().unwrap_or_default();
        let query = format!("{name}{{ns=\"{{{{ namespace }}}}\"}}");
        sim.fakes
            .metrics
            .add_template(template(&name, "prometheus", &query));
    }
    sim
}

/// Initializes, starts the analysis, runs the pre-rollout tick (weight 50, no checks), then
/// one tick with metric checks; returns that tick's events.
async fn checked_tick(sim: &mut Simulation) -> Vec<String> {
    initialized(sim).await;
    sim.tick().await; // Progressing
    sim.tick().await; // Starting canary analysis, weight 50
    next_tick(sim).await
}

/// One more tick; its events.
async fn next_tick(sim: &mut Simulation) -> Vec<String> {
    let before = sim.timeline().len();
    sim.tick().await;
    messages(sim)[before..].to_vec()
}

/// scheduler_metrics.go:212 (`val > time.Duration(metric.Threshold)*time.Millisecond`), :249
/// and :341 (`val > metric.Threshold`): with neither thresholdRange nor threshold the threshold
/// is 0, so any positive duration, inline or template value fails; the success rate
/// (`metric.Threshold > val`, :177) passes.
#[tokio::test]
async fn a_metric_without_any_threshold_fails_on_any_positive_value() {
    let mut sim = with_metrics("    - name: request-duration\n      interval: 1m\n");
    sim.fakes.metrics.values("request-duration", &[120.0]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt podinfo.default advancement request duration 120ms > 0s"]
    );
    assert_eq!(sim.status().failed_checks, 1);

    let mut sim = with_metrics(
        "    - name: error-rate\n      templateRef: {name: error-rate}\n    - name: p50\n      query: histogram_quantile(0.5, x)\n",
    );
    sim.fakes.metrics.values("error-rate", &[0.5]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt podinfo.default advancement error-rate 0.50 > 0"]
    );
    let mut sim = with_metrics("    - name: p50\n      query: histogram_quantile(0.5, x)\n");
    sim.fakes.metrics.values("p50", &[0.25]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt podinfo.default advancement p50 0.25 > 0"]
    );

    let mut sim = with_metrics("    - name: request-success-rate\n");
    sim.fakes.metrics.values("request-success-rate", &[50.0]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Advance podinfo.default canary weight 100"]
    );
}

/// scheduler_metrics.go:165 and :200 (`if metric.ThresholdRange != nil`): a thresholdRange with
/// neither min nor max decides alone (it passes) and the deprecated threshold is ignored.
#[tokio::test]
async fn an_empty_threshold_range_wins_over_the_deprecated_threshold() {
    let mut sim = with_metrics(
        "    - name: request-success-rate\n      thresholdRange: {}\n      threshold: 99\n    - name: request-duration\n      thresholdRange: {}\n      threshold: 100\n",
    );
    sim.fakes.metrics.values("request-success-rate", &[50.0]);
    sim.fakes.metrics.values("request-duration", &[500.0]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Advance podinfo.default canary weight 100"]
    );
    assert_eq!(sim.status().failed_checks, 0);
}

/// scheduler_metrics.go:157 appends the error to the success rate's "no values" warning; :192
/// does not for the duration.
#[tokio::test]
async fn no_values_texts_of_the_built_ins() {
    for (metric, threshold, warning) in [
        (
            "request-duration",
            "{max: 500}",
            "Halt advancement no values found for istio metric request-duration probably podinfo.default is not receiving traffic",
        ),
        (
            "request-success-rate",
            "{min: 99}",
            "Halt advancement no values found for istio metric request-success-rate probably podinfo.default is not receiving traffic: no values found",
        ),
    ] {
        let mut sim = with_metrics(&format!(
            "    - name: {metric}\n      thresholdRange: {threshold}\n"
        ));
        sim.fakes.metrics.script(metric, vec![Answer::NoValues]);
        assert_eq!(checked_tick(&mut sim).await, [warning], "{metric}");
    }
}

/// runAnalysis (scheduler.go:765-773) runs every built-in and inline query first, in list order
/// (scheduler_metrics.go:143), then the template pass (:271), where a metric with no template,
/// no query and no built-in name fails (:346) — on every tick, after every built-in.
#[tokio::test]
async fn built_ins_and_queries_run_before_templates_and_unusable_metrics_fail_last() {
    let metrics = "    - name: error-rate\n      templateRef: {name: error-rate}\n      thresholdRange: {max: 1}\n\
                   \x20   - name: mystery\n      thresholdRange: {max: 1}\n\
                   \x20   - name: request-success-rate\n      thresholdRange: {min: 99}\n\
                   \x20   - name: latency\n      query: 'latency{ns=\"{{ namespace }}\"}'\n      thresholdRange: {max: 1}\n";
    // a failing built-in is the tick's failure, although the unusable metric comes first
    let mut sim = with_metrics(metrics);
    sim.fakes.metrics.values("request-success-rate", &[50.0]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt podinfo.default advancement success rate 50.00% < 99%"]
    );
    assert_eq!(
        sim.fakes.metrics.queries(),
        [("request-success-rate".to_string(), String::new())]
    );

    // with every value healthy, the unusable metric fails in the template pass (after the
    // templates listed before it), every tick
    let mut sim = with_metrics(metrics);
    let unusable = "Metric query failed for no usable metrics template and query were configured";
    assert_eq!(checked_tick(&mut sim).await, [unusable]);
    assert_eq!(
        sim.fakes.metrics.queries(),
        [
            ("request-success-rate".to_string(), String::new()),
            ("latency".to_string(), "latency{ns=\"default\"}".to_string()),
            ("error-rate".to_string(), "error-rate{ns=\"default\"}".to_string()),
        ]
    );
    assert_eq!(next_tick(&mut sim).await, [unusable]);
    assert_eq!(sim.status().failed_checks, 2);
}

/// runBuiltinMetricChecks matches on the name alone (scheduler_metrics.go:148, :184, :220) and
/// runMetricChecks on templateRef alone (:272): a built-in name or a query next to a templateRef
/// runs both.
#[tokio::test]
async fn a_built_in_name_or_a_query_with_a_template_runs_both() {
    let mut sim = with_metrics(
        "    - name: request-success-rate\n      templateRef: {name: success}\n      thresholdRange: {min: 99}\n",
    );
    // the built-in answers 100, the template 50
    sim.fakes.metrics.values("request-success-rate", &[100.0, 50.0]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt podinfo.default advancement request-success-rate 50.00 < 99"]
    );
    assert_eq!(
        sim.fakes.metrics.queries(),
        [
            ("request-success-rate".to_string(), String::new()),
            (
                "request-success-rate".to_string(),
                "success{ns=\"default\"}".to_string()
            ),
        ]
    );

    let mut sim = with_metrics(
        "    - name: errors\n      templateRef: {name: errors}\n      query: inline_errors\n      thresholdRange: {max: 1}\n",
    );
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Advance podinfo.default canary weight 100"]
    );
    assert_eq!(
        sim.fakes.metrics.queries(),
        [
            ("errors".to_string(), "inline_errors".to_string()),
            ("errors".to_string(), "errors{ns=\"default\"}".to_string()),
        ]
    );
}

/// scheduler_metrics.go:164, :199, :236, :327: `SetAnalysis` runs before the threshold is
/// compared, so flagger_canary_metric_analysis shows failing values too (duration in seconds).
#[tokio::test]
async fn every_measured_value_sets_the_analysis_gauge() {
    let mut sim = with_metrics(
        "    - name: request-success-rate\n      thresholdRange: {min: 99}\n    - name: request-duration\n      thresholdRange: {max: 500}\n",
    );
    sim.fakes.metrics.values("request-success-rate", &[99.5, 50.0]);
    sim.fakes.metrics.values("request-duration", &[1200.7]);
    checked_tick(&mut sim).await;
    next_tick(&mut sim).await;
    let gauge = sim.fakes.recorder.analysis_values();
    assert_eq!(
        gauge,
        [
            ("request-success-rate".to_string(), 99.5),
            ("request-duration".to_string(), 1.2),
            ("request-success-rate".to_string(), 50.0),
        ]
    );
    // the recorder's observer sees the same values
    assert_eq!(sim.fakes.recorder.observed_values(), gauge);
    assert_eq!(sim.status().phase, CanaryPhase::Progressing);
}

/// Query templates are Go text/template (pkg/metrics/observers/render.go:29): only `{{` opens an
/// action, so Flagger's documented CloudWatch query, a JSON array ending in `}}]`, renders; Go's
/// own errors come with RenderQuery's prefixes (render.go:31, :37).
#[tokio::test]
async fn query_templates_are_go_templates() {
    let c = deployment_canary(
        "    interval: 1m\n    threshold: 5\n    stepWeight: 50\n    metrics:\n    - name: errors\n      templateRef: {name: cloudwatch}\n      thresholdRange: {max: 1}\n    - name: typo\n      templateRef: {name: typo}\n      thresholdRange: {max: 1}\n",
    );
    let sim = Simulation::new(c);
    let mk = |name: &str, query: &str| template(name, "cloudwatch", query);
    let cloudwatch = r#"[{"Id": "e1", "MetricStat": {"Metric": {"Dimensions": [{"Name": "app", "Value": "{{ name }}.{{ namespace }}"}]}}}]"#;
    sim.fakes.metrics.add_template(mk("cloudwatch", cloudwatch));
    sim.fakes
        .metrics
        .add_template(mk("typo", "sum(x{ns=\"{{ namespace }\"})"));
    let mut sim = sim;
    assert_eq!(
        checked_tick(&mut sim).await,
        [
            "Metric template typo.default query render error: template parsing failed: template: tmpl:1: unexpected \"}\" in operand"
        ]
    );
    assert_eq!(
        sim.fakes.metrics.queries(),
        [(
            "errors".to_string(),
            r#"[{"Id": "e1", "MetricStat": {"Metric": {"Dimensions": [{"Name": "app", "Value": "podinfo.default"}]}}}]"#.to_string()
        )]
    );
}

/// The error texts of each source (scheduler_metrics.go): a built-in query error (:160), an inline
/// query's "no values" and error (:229, :232), a template that does not exist (:280) and a
/// template query error (:322).
#[tokio::test]
async fn query_error_texts_follow_flagger() {
    let mut sim = with_metrics("    - {name: request-success-rate, thresholdRange: {min: 99}}\n");
    sim.fakes.metrics.script(
        "request-success-rate",
        vec![Answer::Error(
            "Post \"http://prometheus:9090/api/v1/query\": EOF".into(),
        )],
    );
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Prometheus query failed: Post \"http://prometheus:9090/api/v1/query\": EOF"]
    );

    let mut sim =
        with_metrics("    - {name: p99, query: 'p99{ns=\"{{ namespace }}\"}', thresholdRange: {max: 1}}\n");
    sim.fakes.metrics.script(
        "p99",
        vec![Answer::NoValues, Answer::Error("bad_data: parse error".into())],
    );
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Halt advancement no values found for metric: p99"]
    );
    assert_eq!(
        next_tick(&mut sim).await,
        ["Prometheus query failed for p99: bad_data: parse error"]
    );

    let c = deployment_canary(
        "    interval: 1m\n    threshold: 5\n    stepWeight: 50\n    metrics:\n    - {name: errors, templateRef: {name: missing}, thresholdRange: {max: 1}}\n",
    );
    let mut sim = Simulation::new(c);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Metric template missing.default error: metrictemplate.flagger.app \"missing\" not found"]
    );

    let mut sim =
        with_metrics("    - {name: errors, templateRef: {name: errors}, thresholdRange: {max: 1}}\n");
    sim.fakes
        .metrics
        .script("errors", vec![Answer::Error("status 503".into())]);
    assert_eq!(
        checked_tick(&mut sim).await,
        ["Metric query failed for errors: status 503"]
    );
    sim.fakes.metrics.script("errors", vec![Answer::NoValues]);
    assert_eq!(
        next_tick(&mut sim).await,
        ["Halt advancement no values found for custom metric: errors: no values found"]
    );
}
