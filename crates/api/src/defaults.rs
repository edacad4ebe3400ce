//! Flagger's defaults, applied in one place.
//!
//! [`apply_defaults`] fills every defaulted field of a Canary with the value Flagger would use, so
//! the engine reads plain values instead of scattering `unwrap_or`s. It is applied to a copy the
//! engine works on; the stored object keeps what the user wrote. Two of Flagger's quirks are fixed
//! here on purpose (see docs/compatibility.md): an empty alert severity means `info`, and a
//! template metric's interval defaults to `1m` like the built-ins.

use std::time::Duration;

use crate::canary::{Canary, CanaryAnalysis, NamespacedRef};
use crate::duration::parse_go_duration;
use crate::service::CanaryService;

/// `analysis.interval` when unset or unparsable.
pub const DEFAULT_INTERVAL: &str = "60s";
/// Flagger raises shorter analysis intervals to this.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// `analysis.threshold` when unset or ≤ 0.
pub const DEFAULT_THRESHOLD: i32 = 1;
/// `analysis.maxWeight` when unset.
pub const DEFAULT_MAX_WEIGHT: i32 = 100;
/// `progressDeadlineSeconds` when unset.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
/// `primaryReadyThreshold` / `canaryReadyThreshold` when unset.
pub const DEFAULT_READY_THRESHOLD: i32 = 100;
/// `metrics[].interval` when unset.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// `webhooks[].timeout` when unset (or shorter than two characters, as in Flagger).
pub const DEFAULT_WEBHOOK_TIMEOUT: &str = "10s";
/// `service.portName` when unset.
pub const DEFAULT_PORT_NAME: &str = "http";
/// `sessionAffinity.maxAge` when unset.
pub const DEFAULT_COOKIE_MAX_AGE: i64 = 86400;
/// Alert severity when unset or empty.
pub const DEFAULT_ALERT_SEVERITY: &str = "info";

/// Fills every defaulted field of `canary` in place.
pub fn apply_defaults(canary: &mut Canary) {
    let namespace = canary.namespace().to_string();
    let target = canary.target_name().to_string();
    let spec = &mut canary.spec;

    spec.progress_deadline_seconds
        .get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    spec.skip_analysis.get_or_insert(false);
    spec.suspend.get_or_insert(false);
    spec.revert_on_deletion.get_or_insert(false);

    if let Some(service) = spec.service.as_mut() {
        default_service(service, &target);
    }
    if let Some(analysis) = spec.analysis.as_mut() {
        default_analysis(analysis, &namespace);
    }
}

/// A defaulted copy of `canary`.
pub fn defaulted(canary: &Canary) -> Canary {
    let mut c = canary.clone();
    apply_defaults(&mut c);
    c
}

fn default_service(service: &mut CanaryService, target: &str) {
    fill_empty(&mut service.name, target);
    fill_empty(&mut service.port_name, DEFAULT_PORT_NAME);
    if service.target_port.is_none()
        && let Some(port) = service.port
    {
        service.target_port = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
            port,
        ));
    }
}

fn default_analysis(a: &mut CanaryAnalysis, namespace: &str) {
    let interval_ok = a
        .interval
        .as_deref()
        .is_some_and(|i| parse_go_duration(i).is_ok());
    if !interval_ok {
        a.interval = Some(DEFAULT_INTERVAL.to_string());
    }
    if a.threshold.is_none_or(|t| t <= 0) {
        a.threshold = Some(DEFAULT_THRESHOLD);
    }
    a.max_weight = Some(effective_max_weight(a));
    a.step_weight_promotion.get_or_insert(0);
    a.mirror.get_or_insert(false);
    a.primary_ready_threshold.get_or_insert(DEFAULT_READY_THRESHOLD);
    a.canary_ready_threshold.get_or_insert(DEFAULT_READY_THRESHOLD);

    if let Some(sa) = a.session_affinity.as_mut() {
        sa.max_age.get_or_insert(DEFAULT_COOKIE_MAX_AGE);
    }
    for m in a.metrics.iter_mut().flatten() {
        fill_empty(&mut m.interval, DEFAULT_METRIC_INTERVAL);
        default_namespace(m.template_ref.as_mut(), namespace);
    }
    for w in a.webhooks.iter_mut().flatten() {
        if w.timeout.as_deref().is_none_or(|t| t.len() < 2) {
            w.timeout = Some(DEFAULT_WEBHOOK_TIMEOUT.to_string());
        }
        fill_empty(&mut w.type_, "rollout");
        w.retries.get_or_insert(0);
        w.mute_alert.get_or_insert(false);
        w.disable_tls.get_or_insert(false);
    }
    for al in a.alerts.iter_mut().flatten() {
        fill_empty(&mut al.severity, DEFAULT_ALERT_SEVERITY);
        default_namespace(al.provider_ref.as_mut(), namespace);
    }
}

/// A reference without a namespace points into the canary's.
fn default_namespace(r: Option<&mut NamespacedRef>, namespace: &str) {
    if let Some(r) = r {
        fill_empty(&mut r.namespace, namespace);
    }
}

/// Sets a string field that is unset or empty (Flagger treats both as unset).
fn fill_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

/// Flagger's `GetMaxWeight`: the last `stepWeights` element capped at 100 when steps are set,
/// else `maxWeight` when positive, else 100.
pub fn effective_max_weight(a: &CanaryAnalysis) -> i32 {
    if let Some(last) = a.step_weights.as_ref().and_then(|s| s.last()) {
        return (*last).min(100);
    }
    match a.max_weight {
        Some(w) if w > 0 => w,
        _ => DEFAULT_MAX_WEIGHT,
    }
}

impl Canary {
    /// The analysis interval: `analysis.interval` (60s when unset, unparsable or zero), raised
    /// to `floor` (Flagger's floor is [`MIN_INTERVAL`]; the demo lowers it). Never zero: a zero
    /// period would make the analysis timer spin (validation refuses `0s` before it gets here).
    pub fn analysis_interval(&self, floor: Duration) -> Duration {
        let d = self
            .analysis()
            .interval
            .as_deref()
            .and_then(|i| parse_go_duration(i).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(60));
        d.max(floor)
    }

    /// `progressDeadlineSeconds` (600 when unset).
    pub fn progress_deadline(&self) -> Duration {
        let s = self
            .spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        Duration::from_secs(s.max(0) as u64)
    }

    /// `analysis.threshold` (1 when unset or ≤ 0).
    pub fn threshold(&self) -> i32 {
        match self.analysis().threshold {
            Some(t) if t > 0 => t,
            _ => DEFAULT_THRESHOLD,
        }
    }

    /// `analysis.primaryReadyThreshold`: the percentage of the primary's replicas that must be
    /// ready (100 when unset).
    pub fn primary_ready_threshold(&self) -> i32 {
        self.analysis()
            .primary_ready_threshold
            .unwrap_or(DEFAULT_READY_THRESHOLD)
    }

    /// `analysis.canaryReadyThreshold`, as [`Canary::primary_ready_threshold`] for the canary.
    pub fn canary_ready_threshold(&self) -> i32 {
        self.analysis()
            .canary_ready_threshold
            .unwrap_or(DEFAULT_READY_THRESHOLD)
    }

    /// The effective maximum canary weight.
    pub fn max_weight(&self) -> i32 {
        effective_max_weight(self.analysis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{CanaryAlert, CanaryMetric, CanarySpec, CanaryWebhook, SessionAffinity, TargetRef};

    fn canary(analysis: CanaryAnalysis) -> Canary {
        let mut c = Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: Some(TargetRef {
                    api_version: Some("apps/v1".into()),
                    kind: Some("Deployment".into()),
                    name: Some("podinfo".into()),
                }),
                service: Some(Box::new(CanaryService {
                    port: Some(9898),
                    ..Default::default()
                })),
                analysis: Some(analysis),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("test".into());
        c
    }

    #[test]
    fn empty_analysis_gets_every_flagger_default() {
        let c = defaulted(&canary(CanaryAnalysis {
            metrics: Some(vec![CanaryMetric {
                name: Some("request-success-rate".into()),
                ..Default::default()
            }]),
            webhooks: Some(vec![CanaryWebhook {
                name: Some("load".into()),
                url: Some("http://x/".into()),
                ..Default::default()
            }]),
            alerts: Some(vec![CanaryAlert {
                name: Some("on-call".into()),
                provider_ref: Some(NamespacedRef {
                    name: Some("slack".into()),
                    namespace: None,
                }),
                ..Default::default()
            }]),
            session_affinity: Some(Box::new(SessionAffinity {
                cookie_name: Some("c".into()),
                ..Default::default()
            })),
            ..Default::default()
        }));
        let a = c.spec.analysis.as_ref().unwrap();
        assert_eq!(a.interval.as_deref(), Some("60s"));
        assert_eq!(a.threshold, Some(1));
        assert_eq!(a.max_weight, Some(100));
        assert_eq!(a.step_weight_promotion, Some(0));
        assert_eq!(a.primary_ready_threshold, Some(100));
        assert_eq!(a.canary_ready_threshold, Some(100));
        assert_eq!(a.session_affinity.as_ref().unwrap().max_age, Some(86400));
        let m = &a.metrics.as_ref().unwrap()[0];
        assert_eq!(m.interval.as_deref(), Some("1m"));
        let w = &a.webhooks.as_ref().unwrap()[0];
        assert_eq!(w.timeout.as_deref(), Some("10s"));
        assert_eq!(w.type_.as_deref(), Some("rollout"));
        assert_eq!(w.retries, Some(0));
        let al = &a.alerts.as_ref().unwrap()[0];
        assert_eq!(al.severity.as_deref(), Some("info"));
        assert_eq!(
            al.provider_ref.as_ref().unwrap().namespace.as_deref(),
            Some("test")
        );
        assert_eq!(c.spec.progress_deadline_seconds, Some(600));
        let s = c.spec.service.as_ref().unwrap();
        assert_eq!(s.name.as_deref(), Some("podinfo"));
        assert_eq!(s.port_name.as_deref(), Some("http"));
        assert_eq!(
            s.target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                9898
            ))
        );
    }

    #[test]
    fn explicit_values_are_kept() {
        let c = defaulted(&canary(CanaryAnalysis {
            interval: Some("15s".into()),
            threshold: Some(15),
            max_weight: Some(50),
            step_weight: Some(10),
            ..Default::default()
        }));
        let a = c.spec.analysis.as_ref().unwrap();
        assert_eq!(a.interval.as_deref(), Some("15s"));
        assert_eq!(a.threshold, Some(15));
        assert_eq!(a.max_weight, Some(50));
        assert_eq!(a.step_weight, Some(10));
    }

    #[test]
    fn ready_thresholds_default_to_all_replicas() {
        let unset = canary(CanaryAnalysis::default());
        assert_eq!(
            (unset.primary_ready_threshold(), unset.canary_ready_threshold()),
            (100, 100)
        );
        let set = canary(CanaryAnalysis {
            primary_ready_threshold: Some(50),
            canary_ready_threshold: Some(80),
            ..Default::default()
        });
        assert_eq!(
            (set.primary_ready_threshold(), set.canary_ready_threshold()),
            (50, 80)
        );
    }

    #[test]
    fn table_of_corner_cases() {
        // (interval, threshold, maxWeight, stepWeights) -> (interval, threshold, maxWeight)
        type Case = (
            Option<&'static str>,
            Option<i32>,
            Option<i32>,
            Option<Vec<i32>>,
            &'static str,
            i32,
            i32,
        );
        let cases: &[Case] = &[
            (None, None, None, None, "60s", 1, 100),
            (Some(""), Some(0), Some(0), None, "60s", 1, 100),
            (Some("1mx"), Some(-3), Some(30), None, "60s", 1, 30),
            (Some("5s"), Some(2), Some(80), Some(vec![5, 10, 40]), "5s", 2, 40),
            (Some("1m30s"), Some(2), None, Some(vec![50, 150]), "1m30s", 2, 100),
        ];
        for (interval, threshold, max_weight, steps, want_i, want_t, want_m) in cases.iter().cloned() {
            let c = defaulted(&canary(CanaryAnalysis {
                interval: interval.map(String::from),
                threshold,
                max_weight,
                step_weights: steps,
                ..Default::default()
            }));
            let a = c.spec.analysis.as_ref().unwrap();
            assert_eq!(a.interval.as_deref(), Some(want_i));
            assert_eq!(a.threshold, Some(want_t));
            assert_eq!(a.max_weight, Some(want_m));
        }
    }

    #[test]
    fn interval_floor_and_short_webhook_timeout() {
        let mut c = canary(CanaryAnalysis {
            interval: Some("5s".into()),
            ..Default::default()
        });
        assert_eq!(c.analysis_interval(MIN_INTERVAL), Duration::from_secs(10));
        assert_eq!(
            c.analysis_interval(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        c.spec.analysis.as_mut().unwrap().webhooks = Some(vec![CanaryWebhook {
            name: Some("w".into()),
            url: Some("http://x".into()),
            timeout: Some("5".into()),
            ..Default::default()
        }]);
        let d = defaulted(&c);
        assert_eq!(
            d.analysis().webhooks.as_ref().unwrap()[0].timeout.as_deref(),
            Some("10s")
        );
    }
}
