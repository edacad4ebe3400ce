//! Metric checks: the built-in `request-success-rate` (%) and `request-duration` (ms), the
//! deprecated inline query, and MetricTemplates, with Flagger's thresholds and messages.
//! "No values found" always fails the check.

use std::time::Duration;

use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE, CanaryMetric, ThresholdRange};
use aviary_api::duration::format_go_duration;

use super::Tick;
use crate::gofmt::{float_2f, float_v};
use crate::ports::{BuiltinMetric, EventType, MetricError, MetricModel};
use crate::template;

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

    async fn warn(&mut self, msg: String) -> bool {
        self.event(EventType::Warning, &msg).await;
        false
    }

    /// Built-in metrics and inline queries (metrics without a templateRef).
    pub(super) async fn run_builtin_checks(&mut self) -> bool {
        let metrics: Vec<CanaryMetric> = self
            .c
            .analysis()
            .metrics
            .iter()
            .flatten()
            .filter(|m| m.template_ref.is_none())
            .cloned()
            .collect();
        for m in metrics {
            let name = m.name.clone().unwrap_or_default();
            let model = self.model(&m);
            let range = m.threshold_range.unwrap_or_default();
            let builtin = match name.as_str() {
                BUILTIN_SUCCESS_RATE => Some(BuiltinMetric::SuccessRate),
                BUILTIN_DURATION => Some(BuiltinMetric::Duration),
                _ => None,
            };
            if let Some(kind) = builtin {
                let value = match self.ports.metrics.builtin(&self.c, kind, &model).await {
                    Ok(v) => v,
                    Err(MetricError::NoValues(e)) => {
                        let msg = format!(
                            "Halt advancement no values found for {} metric {name} probably {} is not receiving traffic: {e}",
                            self.provider,
                            self.target_id()
                        );
                        return self.warn(msg).await;
                    }
                    Err(e) => return self.warn(format!("Prometheus query failed: {e}")).await,
                };
                let ok = match kind {
                    BuiltinMetric::SuccessRate => {
                        self.check_success_rate(&name, value, &range, m.threshold).await
                    }
                    BuiltinMetric::Duration => self.check_duration(&name, value, &range, m.threshold).await,
                };
                if !ok {
                    return false;
                }
            }
            if let Some(query) = m.query.as_deref().filter(|q| !q.is_empty()) {
                let rendered = match template::render(query, &model) {
                    Ok(q) => q,
                    Err(e) => return self.warn(format!("Metric query failed for {name}: {e}")).await,
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
                if !self
                    .check_custom(&name, value, m.threshold_range.as_ref(), m.threshold)
                    .await
                {
                    return false;
                }
            } else if builtin.is_none() {
                return self
                    .warn(
                        "Metric query failed for no usable metrics template and query were configured".into(),
                    )
                    .await;
            }
        }
        true
    }

    /// MetricTemplate metrics.
    pub(super) async fn run_template_checks(&mut self) -> bool {
        let metrics: Vec<CanaryMetric> = self
            .c
            .analysis()
            .metrics
            .iter()
            .flatten()
            .filter(|m| m.template_ref.is_some())
            .cloned()
            .collect();
        for m in metrics {
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
            let model = self.model(&m);
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
                .query(&name, &template, &model.interval, &query)
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
            self.ports.recorder.set_analysis_metric(&self.c, &name, value);
            if !self
                .check_custom(&name, value, m.threshold_range.as_ref(), m.threshold)
                .await
            {
                return false;
            }
        }
        true
    }

    async fn check_success_rate(
        &mut self,
        name: &str,
        v: f64,
        r: &ThresholdRange,
        threshold: Option<f64>,
    ) -> bool {
        self.ports.recorder.observe_metric(&self.c, name, v);
        let id = self.id();
        let has_range = r.min.is_some() || r.max.is_some();
        if let Some(min) = r.min
            && v < min
        {
            return self
                .warn(format!(
                    "Halt {id} advancement success rate {}% < {}%",
                    float_2f(v),
                    float_v(min)
                ))
                .await;
        }
        if let Some(max) = r.max
            && v > max
        {
            return self
                .warn(format!(
                    "Halt {id} advancement success rate {}% > {}%",
                    float_2f(v),
                    float_v(max)
                ))
                .await;
        }
        if !has_range
            && let Some(t) = threshold
            && t > v
        {
            return self
                .warn(format!(
                    "Halt {id} advancement success rate {}% < {}%",
                    float_2f(v),
                    float_v(t)
                ))
                .await;
        }
        self.ports.recorder.set_analysis_metric(&self.c, name, v);
        true
    }

    /// `v` is the p99 in milliseconds; Flagger truncates it to whole milliseconds.
    async fn check_duration(
        &mut self,
        name: &str,
        v: f64,
        r: &ThresholdRange,
        threshold: Option<f64>,
    ) -> bool {
        let id = self.id();
        let d = Duration::from_millis(v.max(0.0) as u64);
        self.ports.recorder.observe_metric(&self.c, name, d.as_secs_f64());
        let ms = |x: f64| Duration::from_millis(x.max(0.0) as u64);
        let has_range = r.min.is_some() || r.max.is_some();
        if let Some(min) = r.min
            && d < ms(min)
        {
            let msg = format!(
                "Halt {id} advancement request duration {} < {}",
                format_go_duration(d),
                format_go_duration(ms(min))
            );
            return self.warn(msg).await;
        }
        if let Some(max) = r.max
            && d > ms(max)
        {
            let msg = format!(
                "Halt {id} advancement request duration {} > {}",
                format_go_duration(d),
                format_go_duration(ms(max))
            );
            return self.warn(msg).await;
        }
        if !has_range
            && let Some(t) = threshold.filter(|t| *t > 0.0)
            && d > ms(t)
        {
            let msg = format!(
                "Halt {id} advancement request duration {} > {}",
                format_go_duration(d),
                format_go_duration(ms(t))
            );
            return self.warn(msg).await;
        }
        self.ports
            .recorder
            .set_analysis_metric(&self.c, name, d.as_secs_f64());
        true
    }

    async fn check_custom(
        &mut self,
        name: &str,
        v: f64,
        r: Option<&ThresholdRange>,
        threshold: Option<f64>,
    ) -> bool {
        self.ports.recorder.observe_metric(&self.c, name, v);
        let id = self.id();
        if let Some(r) = r {
            if let Some(min) = r.min
                && v < min
            {
                return self
                    .warn(format!(
                        "Halt {id} advancement {name} {} < {}",
                        float_2f(v),
                        float_v(min)
                    ))
                    .await;
            }
            if let Some(max) = r.max
                && v > max
            {
                return self
                    .warn(format!(
                        "Halt {id} advancement {name} {} > {}",
                        float_2f(v),
                        float_v(max)
                    ))
                    .await;
            }
        } else if let Some(t) = threshold
            && v > t
        {
            return self
                .warn(format!(
                    "Halt {id} advancement {name} {} > {}",
                    float_2f(v),
                    float_v(t)
                ))
                .await;
        }
        self.ports.recorder.set_analysis_metric(&self.c, name, v);
        true
    }
}
