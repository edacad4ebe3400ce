//! Where the judge's settings live on a Flagger Canary, unchanged `flagger.app/v1beta1` schema:
//! canary-wide settings in annotations, per-metric settings in the metric's `templateVariables`
//! (a free string map Flagger's schema accepts on every metric and ignores on the built-ins).
//! Without the mode annotation (or with `off`) there is no judge and the canary behaves exactly
//! as under Flagger.
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     judge.aviary.dev/mode: enforce      # off | observe | rollback | enforce
//!     judge.aviary.dev/alpha: "0.05"      # false-rollback bound per run
//!     judge.aviary.dev/promote-alpha: "0.05"
//!     judge.aviary.dev/min-bake: 3m       # no early promotion before (default: 2 intervals)
//! spec:
//!   analysis:
//!     metrics:
//!     - name: request-success-rate
//!       thresholdRange: {min: 99}         # also the judge's absolute arm: ≤ 1% errors
//!       interval: 1m
//!       templateVariables:
//!         judge.margin: "2"               # early promotion: canary errors < 2 × primary's
//!     - name: request-duration
//!       thresholdRange: {max: 500}        # absolute arm: ≤ 1% of requests slower than 500ms
//!       interval: 1m
//!       templateVariables:
//!         judge.boundaries: "100,250"     # default: auto (bounds nearest the primary's p90, p99)
//! ```

use std::collections::BTreeMap;

use aviary_api::Canary;
use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE, CanaryMetric};
use aviary_api::defaults::MIN_INTERVAL;
use aviary_api::duration::parse_go_duration;
use serde::{Deserialize, Serialize};

use super::canary::JudgeSpec;
use super::metric::{Boundaries, MAX_BOUNDARIES, MetricKind, MetricSpec, Slo};
use crate::error::{Error, Result};

/// Canary annotation: the judge's mode.
pub const ANNOTATION_MODE: &str = "judge.aviary.dev/mode";
/// Canary annotation: α of ROLLBACK.
pub const ANNOTATION_ALPHA: &str = "judge.aviary.dev/alpha";
/// Canary annotation: α of early PROMOTE.
pub const ANNOTATION_PROMOTE_ALPHA: &str = "judge.aviary.dev/promote-alpha";
/// Canary annotation: minimum analysis time before an early promotion (Go duration).
pub const ANNOTATION_MIN_BAKE: &str = "judge.aviary.dev/min-bake";

/// What the judge may do to a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMode {
    /// No judge: Flagger's behaviour exactly.
    Off,
    /// Judge and report (events, status, `aviary`), change nothing.
    Observe,
    /// A ROLLBACK verdict fails the analysis; no early promotion.
    Rollback,
    /// ROLLBACK fails the analysis, PROMOTE skips the remaining steps.
    Enforce,
}

impl JudgeMode {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "off" => Some(Self::Off),
            "observe" => Some(Self::Observe),
            "rollback" => Some(Self::Rollback),
            "enforce" => Some(Self::Enforce),
            _ => None,
        }
    }
}

/// A canary's judge configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    pub mode: JudgeMode,
    pub spec: JudgeSpec,
}

/// Defaults.
pub const DEFAULT_ALPHA: f64 = 0.05;
pub const DEFAULT_ERROR_MARGIN: f64 = 2.0;
pub const DEFAULT_LATENCY_MARGIN: f64 = 1.5;
pub const DEFAULT_QUANTILES: [f64; 2] = [0.9, 0.99];
pub const DEFAULT_MIN_EVENTS: u64 = 20;

impl JudgeConfig {
    /// The judge configuration of `canary`; `None` when the judge is off (no annotation, or
    /// `off`). Errors name the field and say what is expected.
    pub fn from_canary(canary: &Canary) -> Result<Option<Self>> {
        let empty = BTreeMap::new();
        let ann = canary.metadata.annotations.as_ref().unwrap_or(&empty);
        let Some(mode) = ann.get(ANNOTATION_MODE) else {
            return Ok(None);
        };
        let mode = JudgeMode::parse(mode).ok_or_else(|| {
            annotation_error(ANNOTATION_MODE, "one of off, observe, rollback, enforce", mode)
        })?;
        if mode == JudgeMode::Off {
            return Ok(None);
        }
        if mode != JudgeMode::Observe && canary.analysis().session_affinity.is_some() {
            return Err(Error::Judge(format!(
                "metadata.annotations[{ANNOTATION_MODE}]: {} needs requests routed one by one, but spec.analysis.sessionAffinity pins each client to one arm, so a heavy client with errors of its own looks like a regression (in the judge's benchmark 9–43% false rollbacks at α = 5%, more with more traffic); use observe with session affinity",
                match mode {
                    JudgeMode::Rollback => "rollback",
                    _ => "enforce",
                }
            )));
        }
        let alpha = alpha_annotation(ann, ANNOTATION_ALPHA)?;
        let promote_alpha = alpha_annotation(ann, ANNOTATION_PROMOTE_ALPHA)?;
        let min_bake_seconds = match ann.get(ANNOTATION_MIN_BAKE) {
            Some(v) => parse_go_duration(v)
                .map_err(|_| annotation_error(ANNOTATION_MIN_BAKE, "a Go duration such as 3m", v))?
                .as_secs_f64(),
            None => 2.0 * canary.analysis_interval(MIN_INTERVAL).as_secs_f64(),
        };
        let mut metrics = Vec::new();
        for (i, m) in canary.analysis().metrics.iter().flatten().enumerate() {
            if let Some(spec) = metric_spec(i, m)? {
                metrics.push(spec);
            }
        }
        if metrics.is_empty() {
            return Err(Error::Judge(format!(
                "metadata.annotations[{ANNOTATION_MODE}]: the judge is on but the analysis has no metric it can read; it judges the built-in metrics {BUILTIN_SUCCESS_RATE} and {BUILTIN_DURATION}"
            )));
        }
        Ok(Some(Self {
            mode,
            spec: JudgeSpec {
                alpha,
                promote_alpha,
                min_bake_seconds,
                metrics,
            },
        }))
    }
}

fn annotation_error(key: &str, expected: &str, got: &str) -> Error {
    Error::Judge(format!(
        "metadata.annotations[{key}]: expected {expected}, got {got:?}"
    ))
}

fn alpha_annotation(ann: &BTreeMap<String, String>, key: &str) -> Result<f64> {
    match ann.get(key) {
        None => Ok(DEFAULT_ALPHA),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(a) if a > 0.0 && a <= 0.5 => Ok(a),
            _ => Err(annotation_error(key, "a probability in (0, 0.5] such as 0.05", v)),
        },
    }
}

/// Per-metric settings keys.
const METRIC_KEYS: [&str; 7] = [
    "judge",
    "judge.tolerance",
    "judge.margin",
    "judge.weight",
    "judge.boundaries",
    "judge.quantiles",
    "judge.min-events",
];

/// A metric's `templateVariables`, with the field path for errors.
struct Vars<'a> {
    index: usize,
    vars: &'a BTreeMap<String, String>,
}

impl Vars<'_> {
    fn path(&self, key: &str) -> String {
        format!("spec.analysis.metrics[{}].templateVariables[{key}]", self.index)
    }

    fn judge_keys(&self) -> impl Iterator<Item = &String> {
        self.vars
            .keys()
            .filter(|k| *k == "judge" || k.starts_with("judge."))
    }

    fn number(&self, key: &str, default: f64, ok: &dyn Fn(f64) -> bool, expected: &str) -> Result<f64> {
        match self.vars.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && ok(x) => Ok(x),
                _ => Err(Error::Judge(format!(
                    "{}: expected {expected}, got {v:?}",
                    self.path(key)
                ))),
            },
        }
    }

    /// Whether the metric is judged: a built-in, not switched off, without unknown keys.
    fn judged(&self, m: &CanaryMetric, name: &str) -> Result<bool> {
        let builtin = m.template_ref.is_none() && (name == BUILTIN_SUCCESS_RATE || name == BUILTIN_DURATION);
        if !builtin {
            return match self.judge_keys().next() {
                Some(k) => Err(Error::Judge(format!(
                    "{}: the judge reads request, error and latency counters, which aviary knows for the built-in metrics {BUILTIN_SUCCESS_RATE} and {BUILTIN_DURATION} only; remove the key from metric {name:?}",
                    self.path(k)
                ))),
                None => Ok(false),
            };
        }
        if let Some(k) = self.judge_keys().find(|k| !METRIC_KEYS.contains(&k.as_str())) {
            return Err(Error::Judge(format!(
                "{}: unknown judge setting; known: {}",
                self.path(k),
                METRIC_KEYS.join(", ")
            )));
        }
        match self.vars.get("judge").map(|v| v.trim()) {
            None | Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(v) => Err(Error::Judge(format!(
                "{}: expected on or off, got {v:?}",
                self.path("judge")
            ))),
        }
    }
}

/// The judge's view of metric `i`, or `None` when it is not judged.
fn metric_spec(index: usize, m: &CanaryMetric) -> Result<Option<MetricSpec>> {
    let name = m.name.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let v = Vars {
        index,
        vars: m.template_variables.as_ref().unwrap_or(&empty),
    };
    if !v.judged(m, &name)? {
        return Ok(None);
    }
    let latency = name == BUILTIN_DURATION;
    let tolerance = v.number(
        "judge.tolerance",
        1.0,
        &|x| (1.0..=10.0).contains(&x),
        "a ratio between 1 and 10",
    )?;
    let default_margin = if latency {
        DEFAULT_LATENCY_MARGIN
    } else {
        DEFAULT_ERROR_MARGIN
    };
    let margin = v.number(
        "judge.margin",
        default_margin,
        &|x| x > 1.0 && x <= 10.0,
        "a ratio above 1, at most 10",
    )?;
    let weight = v.number("judge.weight", 1.0, &|x| x > 0.0, "a positive number")?;
    let whole = |x: f64| x >= 0.0 && x.fract() == 0.0;
    let min_events = v.number(
        "judge.min-events",
        DEFAULT_MIN_EVENTS as f64,
        &whole,
        "a whole number",
    )? as u64;
    let kind = if latency {
        MetricKind::Latency(boundaries(v.vars, &|k| v.path(k))?)
    } else {
        MetricKind::Errors
    };
    Ok(Some(MetricSpec {
        name,
        kind,
        tolerance,
        margin,
        weight,
        slo: slo(m, latency),
        min_events,
    }))
}

/// Flagger's threshold as the judge's absolute arm: the success rate's minimum (or the
/// deprecated `threshold`) as an error-rate bound, the duration's maximum as a p99 bound.
fn slo(m: &CanaryMetric, latency: bool) -> Option<Slo> {
    let range = m.threshold_range.unwrap_or_default();
    if latency {
        range.max.or(m.threshold).filter(|v| *v > 0.0).map(Slo::P99Ms)
    } else {
        range
            .min
            .or(m.threshold)
            .map(|min| (100.0 - min) / 100.0)
            .filter(|s| *s > 0.0 && *s < 1.0)
            .map(Slo::ErrorRate)
    }
}

fn boundaries(vars: &BTreeMap<String, String>, path: &dyn Fn(&str) -> String) -> Result<Boundaries> {
    let list = |key: &str, ok: &dyn Fn(f64) -> bool, expected: &str| -> Result<Option<Vec<f64>>> {
        let Some(v) = vars.get(key).map(|v| v.trim()).filter(|v| *v != "auto") else {
            return Ok(None);
        };
        let err = || Error::Judge(format!("{}: expected {expected}, got {v:?}", path(key)));
        let xs = v
            .split(',')
            .map(|x| x.trim().trim_end_matches("ms").parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| err())?;
        if xs.is_empty() || xs.len() > MAX_BOUNDARIES || !xs.iter().all(|x| ok(*x)) {
            return Err(err());
        }
        Ok(Some(xs))
    };
    let expected_ms =
        format!("auto, or 1 to {MAX_BOUNDARIES} histogram bounds in milliseconds such as \"100,250\"");
    if let Some(b) = list("judge.boundaries", &|x| x.is_finite() && x > 0.0, &expected_ms)? {
        return Ok(Boundaries::Fixed(b));
    }
    let expected_q = format!("1 to {MAX_BOUNDARIES} quantiles between 0.5 and 0.999 such as \"0.9,0.99\"");
    let q = list("judge.quantiles", &|x| (0.5..=0.999).contains(&x), &expected_q)?;
    Ok(Boundaries::Quantiles(
        q.unwrap_or_else(|| DEFAULT_QUANTILES.to_vec()),
    ))
}
