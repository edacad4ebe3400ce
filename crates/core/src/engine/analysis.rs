//! Metric checks, as Flagger's `runBuiltinMetricChecks` and `runMetricChecks`
//! (pkg/controller/scheduler_metrics.go:94, :260) run them: two passes over `metrics[]` in list
//! order. The first runs every built-in (`request-success-rate` in %, `request-duration` in ms)
//! and every inline `query`; the second runs every `templateRef`, and fails a metric that has
//! no template, no query and no built-in name. A metric may take part in both passes (a
//! built-in name or a query next to a templateRef). The first failing check ends the analysis
//! tick; "no values found" always fails it.

use std::time::Duration;

use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE, CanaryMetric, ThresholdRange};
use aviary_api::duration::format_go_duration;

use super::Tick;
use crate::gofmt::{float_2f, float_v};
use crate::ports::{BuiltinMetric, EventType, MetricError, MetricModel, TemplateQuery};
use crate::template;

/// The bound a value broke.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breach {
    /// `value < bound`
    Below(f64),
    /// `value > bound`
    Above(f64),
}

/// Flagger's rule for every metric: a `thresholdRange`, even one with neither `min` nor `max`,
/// decides alone; without one the deprecated `threshold` (0 when unset) decides, as a minimum
/// for the success rate and a maximum for everything else. So a duration or custom metric with
/// neither fails on any positive value.
fn breach(
    v: f64,
    range: Option<&ThresholdRange>,
    threshold: Option<f64>,
    threshold_is_min: bool,
) -> Option<Breach> {
    match range {
        Some(r) => match (r.min, r.max) {
            (Some(min), _) if v < min => Some(Breach::Below(min)),
            (_, Some(max)) if v > max => Some(Breach::Above(max)),
            _ => None,
        },
        None => {
            let t = threshold.unwrap_or(0.0);
            if threshold_is_min {
                (t > v).then_some(Breach::Below(t))
            } else {
                (v > t).then_some(Breach::Above(t))
            }
        }
    }
}

/// Go's `time.Duration(x) * time.Millisecond`: the float truncated to whole milliseconds.
fn millis(x: f64) -> Duration {
    Duration::from_millis(x.max(0.0).trunc() as u64)
}

/// The sign of a breach in the event text.
fn op(b: Breach) -> (&'static str, f64) {
    match b {
        Breach::Below(t) => ("<", t),
        Breach::Above(t) => (">", t),
    }
}

impl Tick<'_, '_> {
    /// Flagger's metric model for one metric.
    pub(crate) fn model(&self, metric: &CanaryMetric) -> MetricModel {
        let c = &self.c;
        let target = c.target_name().to_string();
        MetricModel {
            name: c.name().into(),
            namespace: c.namespace().into(),
            target: target.clone(),
            service: c.apex_name().into(),
            ingress: c
                .spec
                .ingress_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| target.clone()),
            route: c
                .spec
                .route_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or(target),
            interval: metric.interval.clone().unwrap_or_default(),
            variables: metric.template_variables.clone().unwrap_or_default(),
        }
    }

    /// The provider named in "no values found" (Flagger's `metricsProvider`): the canary's
    /// provider; `linkerd` when the agent-wide provider is Linkerd; `crossover` for a
    /// Crossover mesh; `:service` appended for a core Service target.
    fn metrics_provider(&self) -> String {
        let global = &self.config.default_provider;
        let mut p = if global.contains("crossover") {
            "crossover".to_string()
        } else {
            global.clone()
        };
        if let Some(own) = self.c.spec.provider.as_deref().filter(|p| !p.is_empty()) {
            p = if global.contains("linkerd") {
                "linkerd".into()
            } else {
                own.into()
            };
        }
        if self.c.target_kind() == "Service" && !self.c.is_knative_target() {
            p.push_str(":service");
        }
        p
    }

    async fn warn(&mut self, msg: String) -> bool {
        self.event(EventType::Warning, &msg).await;
        false
    }

    /// Every measured value reaches Flagger's `flagger_canary_metric_analysis` gauge (before
    /// the threshold is compared) and the recorder's observer.
    fn record_value(&self, name: &str, v: f64) {
        self.ports.recorder.set_analysis_metric(&self.c, name, v);
        self.ports.recorder.observe_metric(&self.c, name, v);
    }

    fn metrics(&self) -> Vec<CanaryMetric> {
        self.c.analysis().metrics.clone().unwrap_or_default()
    }

    /// The first pass: built-ins and inline queries, in list order.
    pub(super) async fn run_builtin_checks(&mut self) -> bool {
        for m in self.metrics() {
            let name = m.name.clone().unwrap_or_default();
            let passed = match name.as_str() {
                BUILTIN_SUCCESS_RATE => self.check_success_rate(&m).await,
                BUILTIN_DURATION => self.check_duration(&m).await,
                _ => true,
            };
            if !passed {
                return false;
            }
            if m.query.as_deref().is_some_and(|q| !q.is_empty()) && !self.check_inline(&m).await {
                return false;
            }
        }
        true
    }

    /// The second pass: MetricTemplates, and the metrics nothing can evaluate.
    pub(super) async fn run_template_checks(&mut self) -> bool {
        for m in self.metrics() {
            let name = m.name.as_deref().unwrap_or_default();
            if m.template_ref.is_some() {
                if !self.check_template(&m).await {
                    return false;
                }
            } else if name != BUILTIN_SUCCESS_RATE
                && name != BUILTIN_DURATION
                && m.query.as_deref().is_none_or(str::is_empty)
            {
                return self
                    .warn(
                        "Metric query failed for no usable metrics template and query were configured".into(),
                    )
                    .await;
            }
        }
        true
    }

    /// A built-in query; "no values found" and errors fail the check with Flagger's texts.
    async fn builtin_value(&mut self, m: &CanaryMetric, kind: BuiltinMetric) -> Option<f64> {
        let name = m.name.clone().unwrap_or_default();
        let model = self.model(m);
        match self.ports.metrics.builtin(&self.c, kind, &model).await {
            Ok(v) => Some(v),
            Err(MetricError::NoValues(e)) => {
                let provider = self.metrics_provider();
                let target = self.target_id();
                // Flagger appends the error for the success rate only.
                let msg = match kind {
                    BuiltinMetric::SuccessRate => format!(
                        "Halt advancement no values found for {provider} metric {name} probably {target} is not receiving traffic: {e}"
                    ),
                    BuiltinMetric::Duration => format!(
                        "Halt advancement no values found for {provider} metric {name} probably {target} is not receiving traffic"
                    ),
                };
                self.warn(msg).await;
                None
            }
            Err(e) => {
                self.warn(format!("Prometheus query failed: {e}")).await;
                None
            }
        }
    }

    async fn check_success_rate(&mut self, m: &CanaryMetric) -> bool {
        let Some(v) = self.builtin_value(m, BuiltinMetric::SuccessRate).await else {
            return false;
        };
        let name = m.name.as_deref().unwrap_or_default();
        self.check_threshold(name, v, m, true, |op, t| {
            format!("success rate {}% {op} {}%", float_2f(v), float_v(t))
        })
        .await
    }

    /// The port answers the p99 in milliseconds; Flagger truncates it to whole milliseconds
    /// and compares Go durations.
    async fn check_duration(&mut self, m: &CanaryMetric) -> bool {
        let Some(v) = self.builtin_value(m, BuiltinMetric::Duration).await else {
            return false;
        };
        let name = m.name.as_deref().unwrap_or_default();
        let d = millis(v);
        self.record_value(name, d.as_secs_f64());
        let whole_ms = d.as_millis() as f64;
        let range = m.threshold_range.map(|r| ThresholdRange {
            min: r.min.map(f64::trunc),
            max: r.max.map(f64::trunc),
        });
        let Some(b) = breach(whole_ms, range.as_ref(), m.threshold.map(f64::trunc), false) else {
            return true;
        };
        let (op, t) = op(b);
        let id = self.id();
        self.warn(format!(
            "Halt {id} advancement request duration {} {op} {}",
            format_go_duration(d),
            format_go_duration(millis(t))
        ))
        .await
    }

    /// The deprecated inline PromQL `query`, rendered with the metric model.
    async fn check_inline(&mut self, m: &CanaryMetric) -> bool {
        let name = m.name.clone().unwrap_or_default();
        let model = self.model(m);
        let query = m.query.as_deref().unwrap_or_default();
        // aviary: Flagger ignores a render error here and sends an empty query; the check fails
        // either way, and aviary says why.
        let rendered = match template::render(query, &model) {
            Ok(q) => q,
            Err(e) => {
                return self
                    .warn(format!("Prometheus query failed for {name}: {e}"))
                    .await;
            }
        };
        let value = match self.ports.metrics.inline(&self.c, &name, &rendered).await {
            Ok(v) => v,
            Err(MetricError::NoValues(_)) => {
                return self
                    .warn(format!("Halt advancement no values found for metric: {name}"))
                    .await;
            }
            Err(e) => {
                return self
                    .warn(format!("Prometheus query failed for {name}: {e}"))
                    .await;
            }
        };
        self.check_custom(&name, value, m).await
    }

    /// A MetricTemplate: resolve it, render its query, run it on its provider.
    async fn check_template(&mut self, m: &CanaryMetric) -> bool {
        let name = m.name.clone().unwrap_or_default();
        let tref = m.template_ref.clone().unwrap_or_default();
        let tname = tref.name.unwrap_or_default();
        let tns = tref.namespace.unwrap_or_else(|| self.c.namespace().to_string());
        let template = match self.ports.metrics.template(&tns, &tname).await {
            Ok(t) => t,
            Err(e) => {
                return self
                    .warn(format!("Metric template {tname}.{tns} error: {e}"))
                    .await;
            }
        };
        // aviary: the interval defaults to 1m like the built-ins (Flagger renders it empty).
        let model = self.model(m);
        let query = match template::render(template.spec.query.as_deref().unwrap_or(""), &model) {
            Ok(q) => q,
            Err(e) => {
                return self
                    .warn(format!("Metric template {tname}.{tns} query render error: {e}"))
                    .await;
            }
        };
        tracing::debug!(canary = %self.id(), "Metric template {tname}.{tns} query: {query}");
        let value = match self
            .ports
            .metrics
            .query(TemplateQuery {
                metric: &name,
                template: &template,
                interval: &model.interval,
                query: &query,
            })
            .await
        {
            Ok(v) => v,
            Err(MetricError::NoValues(e)) => {
                return self
                    .warn(format!(
                        "Halt advancement no values found for custom metric: {name}: {e}"
                    ))
                    .await;
            }
            Err(MetricError::Secret { secret, message }) => {
                return self
                    .warn(format!(
                        "Metric template {tname}.{tns} secret {secret} error: {message}"
                    ))
                    .await;
            }
            Err(MetricError::Provider(e)) => {
                let ty = template.provider_type().to_string();
                return self
                    .warn(format!("Metric template {tname}.{tns} provider {ty} error: {e}"))
                    .await;
            }
            Err(MetricError::Query(e)) => {
                return self.warn(format!("Metric query failed for {name}: {e}")).await;
            }
        };
        self.check_custom(&name, value, m).await
    }

    /// Inline and template values: `thresholdRange`, else `value > threshold`.
    async fn check_custom(&mut self, name: &str, v: f64, m: &CanaryMetric) -> bool {
        self.check_threshold(name, v, m, false, |op, t| {
            format!("{name} {} {op} {}", float_2f(v), float_v(t))
        })
        .await
    }

    /// Records `v`; a value beyond the metric's threshold fails the check with "Halt ID
    /// advancement" and `breached(operator, bound)`.
    async fn check_threshold(
        &mut self,
        name: &str,
        v: f64,
        m: &CanaryMetric,
        threshold_is_min: bool,
        breached: impl FnOnce(&str, f64) -> String,
    ) -> bool {
        self.record_value(name, v);
        let Some(b) = breach(v, m.threshold_range.as_ref(), m.threshold, threshold_is_min) else {
            return true;
        };
        let (op, t) = op(b);
        let msg = format!("Halt {} advancement {}", self.id(), breached(op, t));
        self.warn(msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: Option<f64>, max: Option<f64>) -> ThresholdRange {
        ThresholdRange { min, max }
    }

    #[test]
    fn breach_follows_flaggers_threshold_rules() {
        use Breach::*;
        // (value, range, threshold, threshold is a minimum) → breach
        let cases = [
            (50.0, Some(range(Some(99.0), None)), None, true, Some(Below(99.0))),
            (
                100.0,
                Some(range(None, Some(99.0))),
                None,
                true,
                Some(Above(99.0)),
            ),
            // an empty range passes and the deprecated threshold is ignored
            (50.0, Some(range(None, None)), Some(99.0), true, None),
            (5.0, Some(range(None, None)), Some(1.0), false, None),
            // neither: the threshold is 0
            (0.1, None, None, false, Some(Above(0.0))),
            (0.0, None, None, false, None),
            (50.0, None, None, true, None),
            (50.0, None, Some(99.0), true, Some(Below(99.0))),
            (2.0, None, Some(1.0), false, Some(Above(1.0))),
        ];
        for (v, r, t, is_min, want) in cases {
            assert_eq!(breach(v, r.as_ref(), t, is_min), want, "{v} {r:?} {t:?} {is_min}");
        }
    }

    #[test]
    fn durations_truncate_to_milliseconds() {
        assert_eq!(millis(1200.7), Duration::from_millis(1200));
        assert_eq!(millis(-3.0), Duration::ZERO);
    }
}
