//! Validation with field paths, run by the agent before it acts and by `aviary validate`.
//!
//! The rules are those Flagger's CRD schema and its `verifyCanary` enforce, plus checks for
//! settings that Flagger accepts but that can never work (a stepWeight of 0). Settings Flagger
//! accepts and silently ignores (a metric with neither template, query nor built-in name) are
//! warnings, so every manifest Flagger runs passes. Each [`Diagnostic`] names the field path and
//! what is expected; [`Report`] adds the resource so a line reads
//! `test/podinfo: spec.analysis.stepWeight: must be between 1 and 100, got 150`.
//! Unknown fields are warnings: Flagger's API server would drop them silently.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use regex::Regex;

use crate::alert_provider::{ALERT_PROVIDER_TYPES, AlertProvider};
use crate::canary::{
    ALERT_SEVERITIES, BUILTIN_DURATION, BUILTIN_SUCCESS_RATE, Canary, CanaryAnalysis, CanaryMetric,
    FLAGGER_PROVIDERS, LOCAL_PROVIDER, WEBHOOK_TYPES,
};
use crate::document::{DocumentError, ObjectId, Parsed, Resource};
use crate::duration::parse_go_duration;
use crate::fleet::{CountOrPercent, FleetRollout};
use crate::local::{LOCAL_API_VERSION, LocalService};
use crate::metric_template::{METRIC_PROVIDER_TYPES, MetricTemplate};
use crate::service::{HttpMatchRequest, StringMatch};

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding: a field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }
    fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The findings for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: ObjectId,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    /// `namespace/name: path: message` for one finding.
    pub fn line(&self, d: &Diagnostic) -> String {
        if d.path.is_empty() {
            format!("{}: {}", self.key(), d.message)
        } else {
            format!("{}: {}: {}", self.key(), d.path, d.message)
        }
    }

    /// `namespace/name`, with `<no name>` for a document without one (so a line never starts
    /// with a bare `: ` or `test/: `).
    fn key(&self) -> String {
        if !self.id.name.is_empty() {
            return self.id.key();
        }
        match &self.id.namespace {
            Some(ns) => format!("{ns}/<no name>"),
            None => "<no name>".to_string(),
        }
    }

    /// Every error as one line each, joined with `; ` (for status conditions and events).
    pub fn error_summary(&self) -> String {
        self.errors().map(|d| self.line(d)).collect::<Vec<_>>().join("; ")
    }
}

/// Validates a parsed document: unknown fields become warnings, then the kind's rules run.
pub fn validate(parsed: &Parsed) -> Report {
    let mut diagnostics: Vec<Diagnostic> = parsed
        .unknown_fields
        .iter()
        .map(|p| unknown_field(&parsed.resource, p))
        .collect();
    diagnostics.extend(match &parsed.resource {
        Resource::Canary(c) => validate_canary(c),
        Resource::MetricTemplate(t) => validate_metric_template(t),
        Resource::AlertProvider(a) => validate_alert_provider(a),
        Resource::LocalService(l) => validate_local_service(l),
        Resource::FleetRollout(r) => validate_fleet_rollout(r),
        Resource::Other(_) => Vec::new(),
    });
    diagnostics.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.path.cmp(&b.path)));
    Report {
        id: parsed.id.clone(),
        diagnostics,
    }
}

/// An unknown field, with the closest field of its parent: a warning for Flagger's kinds (the
/// API server drops it), an error for a FleetRollout (the coordinator refuses it on apply).
fn unknown_field(resource: &Resource, path: &str) -> Diagnostic {
    let field = path.rsplit('.').next().unwrap_or(path);
    let hint = crate::suggest::did_you_mean(field, sibling_fields(resource, path).iter().map(String::as_str));
    match resource {
        Resource::FleetRollout(_) => Diagnostic::error(
            path,
            format!("unknown field{hint}; the coordinator refuses unknown fields"),
        ),
        _ => Diagnostic::warning(
            path,
            format!("unknown field{hint}; Flagger's API server would drop it"),
        ),
    }
}

/// The fields the schema allows beside `path` (`spec.analysis.maxWieght` → the analysis's).
fn sibling_fields(resource: &Resource, path: &str) -> Vec<String> {
    use kube_core::CustomResourceExt;
    let crd = match resource {
        Resource::Canary(_) => crate::Canary::crd(),
        Resource::MetricTemplate(_) => crate::MetricTemplate::crd(),
        Resource::AlertProvider(_) => crate::AlertProvider::crd(),
        Resource::LocalService(_) => crate::local::LocalService::crd(),
        Resource::FleetRollout(_) => crate::FleetRollout::crd(),
        Resource::Other(_) => return Vec::new(),
    };
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
    else {
        return Vec::new();
    };
    let mut node = &schema;
    let segments: Vec<&str> = path.split('.').collect();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        let (name, indexed) = match seg.split_once('[') {
            Some((n, _)) => (n, true),
            None => (*seg, false),
        };
        let Some(next) = node.get("properties").and_then(|p| p.get(name)) else {
            return Vec::new();
        };
        node = next;
        if indexed {
            match node.get("items") {
                Some(items) => node = items,
                None => return Vec::new(),
            }
        }
    }
    node.get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// A document that could not be read as a resource becomes a one-error report.
pub fn document_error_report(e: &DocumentError) -> Report {
    Report {
        id: (*e.id).clone(),
        diagnostics: vec![Diagnostic::error(e.path.clone(), e.message.clone())],
    }
}

/// Collects findings with a path prefix.
struct Findings(Vec<Diagnostic>);

impl Findings {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::error(path, message));
    }
    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::warning(path, message));
    }
    fn required_str(&mut self, value: &Option<String>, path: &str, what: &str) -> bool {
        match value.as_deref() {
            Some(s) if !s.trim().is_empty() => true,
            Some(_) => {
                self.error(path, format!("must not be empty: {what}"));
                false
            }
            None => {
                self.error(path, format!("required field is missing: {what}"));
                false
            }
        }
    }
    fn range(&mut self, value: Option<i32>, path: &str, min: i32, max: i32) {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            self.error(path, format!("must be between {min} and {max}, got {v}"));
        }
    }
    fn one_of(&mut self, value: Option<&str>, path: &str, allowed: &[&str]) -> bool {
        match value {
            Some(v) if !allowed.contains(&v) => {
                let shown: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                self.error(
                    path,
                    format!("{v:?} is not allowed; expected one of {}", shown.join(", ")),
                );
                false
            }
            _ => true,
        }
    }
}

fn duration_pattern() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(crate::canary::DURATION_PATTERN).expect("static pattern"))
}

/// The CRD's duration rule (`^[0-9]+(m|s)`), then whether Go would parse it.
fn check_flagger_duration(f: &mut Findings, value: Option<&str>, path: &str, fallback: &str) {
    let Some(v) = value else { return };
    if !duration_pattern().is_match(v) {
        f.error(
            path,
            format!(
                "{v:?} does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s"
            ),
        );
    } else if parse_go_duration(v).is_err() {
        f.warning(
            path,
            format!("{v:?} is not a valid duration; Flagger would silently use {fallback}"),
        );
    }
}

fn check_url(f: &mut Findings, value: &Option<String>, path: &str, what: &str) {
    let Some(v) = value.as_deref() else { return };
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        // `host:port` parses as a URL whose scheme is the host; say what is missing instead.
        Ok(_) if !v.contains("://") => f.error(
            path,
            format!("{v:?} has no http:// or https:// scheme; expected the {what} such as http://host:port/"),
        ),
        Ok(u) => f.error(
            path,
            format!(
                "{v:?} must be an http or https URL with a host, got scheme {:?}",
                u.scheme()
            ),
        ),
        Err(e) => f.error(
            path,
            format!("{v:?} is not a URL ({e}); expected the {what} such as http://host:port/"),
        ),
    }
}

/// RFC 6265 cookie-name characters (an HTTP token).
fn is_cookie_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// === Canary ===

/// Validates a Canary.
pub fn validate_canary(c: &Canary) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    f.required_str(&c.metadata.name, "metadata.name", "the canary's name");

    let provider = c.spec.provider.as_deref();
    if let Some(p) = provider
        && p != LOCAL_PROVIDER
        && !FLAGGER_PROVIDERS.contains(&p)
    {
        let hint = if p.starts_with("gatewayapi") {
            " (did you mean gatewayapi:v1?)"
        } else {
            ""
        };
        f.error(
            "spec.provider",
            format!(
                "{p:?} is not a provider{hint}; expected one of {}, or {LOCAL_PROVIDER}",
                FLAGGER_PROVIDERS.join(", ")
            ),
        );
    }

    check_target(&mut f, c);
    check_autoscaler(&mut f, c);
    if let Some(s) = c.spec.progress_deadline_seconds
        && s < 0
    {
        f.error(
            "spec.progressDeadlineSeconds",
            format!("must not be negative, got {s}"),
        );
    }
    check_service(&mut f, c);
    match &c.spec.analysis {
        None => f.error(
            "spec.analysis",
            "required field is missing: the canary analysis (interval, threshold and steps)",
        ),
        Some(a) => check_analysis(&mut f, c, a),
    }
    f.0
}

fn check_target(f: &mut Findings, c: &Canary) {
    let Some(t) = &c.spec.target_ref else {
        f.error(
            "spec.targetRef",
            "required field is missing: the workload under analysis {apiVersion, kind, name}",
        );
        return;
    };
    f.required_str(&t.api_version, "spec.targetRef.apiVersion", "e.g. apps/v1");
    f.required_str(&t.name, "spec.targetRef.name", "the name of the target");
    if !f.required_str(&t.kind, "spec.targetRef.kind", "Deployment, DaemonSet or Service") {
        return;
    }
    let kind = t.kind.as_deref().unwrap_or("");
    let api = t.api_version.as_deref().unwrap_or("");
    let provider = c.provider();
    let local_target = kind == "LocalService";
    if local_target {
        if api != LOCAL_API_VERSION {
            f.error(
                "spec.targetRef.apiVersion",
                format!("a LocalService target has apiVersion {LOCAL_API_VERSION}, got {api:?}"),
            );
        }
        if provider != LOCAL_PROVIDER {
            f.error(
                "spec.provider",
                format!("a LocalService target needs provider: {LOCAL_PROVIDER}, got {provider:?}"),
            );
        }
        return;
    }
    if !["Deployment", "DaemonSet", "Service"].contains(&kind) {
        f.error(
            "spec.targetRef.kind",
            format!("{kind:?} is not allowed; expected one of \"DaemonSet\", \"Deployment\", \"Service\" (or LocalService with provider: local)"),
        );
    }
    if provider == LOCAL_PROVIDER {
        f.error(
            "spec.targetRef",
            format!("provider {LOCAL_PROVIDER} needs a target of kind LocalService ({LOCAL_API_VERSION}), got {api}/{kind}"),
        );
    }
    // Knative rule: provider knative ⇔ a serving.knative.dev/v1 Service target (Flagger's texts).
    let knative_target = c.is_knative_target();
    if knative_target && api != "serving.knative.dev/v1" {
        // Flagger compares the apiVersion exactly; any other version is not a Knative target to it.
        f.error(
            "spec.targetRef.apiVersion",
            format!("Knative Services are supported as serving.knative.dev/v1 only, got {api:?}"),
        );
    }
    if knative_target && provider != "knative" {
        let shown = if provider.is_empty() {
            "the default (istio)"
        } else {
            provider
        };
        f.error(
            "spec.provider",
            format!("can't use {shown} provider with Knative Service as target; set provider: knative"),
        );
    }
    if provider == "knative" && !knative_target {
        f.error(
            "spec.targetRef",
            format!("can't use {api}/{kind} as target if provider is set to knative; target a serving.knative.dev/v1 Service"),
        );
    }
}

fn check_autoscaler(f: &mut Findings, c: &Canary) {
    let Some(a) = &c.spec.autoscaler_ref else { return };
    if c.is_knative_target() {
        f.error(
            "spec.autoscalerRef",
            "can't use autoscaler with Knative Service; remove autoscalerRef (Knative scales its revisions)",
        );
    }
    f.required_str(
        &a.api_version,
        "spec.autoscalerRef.apiVersion",
        "e.g. autoscaling/v2",
    );
    f.required_str(&a.name, "spec.autoscalerRef.name", "the autoscaler's name");
    if f.required_str(
        &a.kind,
        "spec.autoscalerRef.kind",
        "HorizontalPodAutoscaler or ScaledObject",
    ) {
        f.one_of(
            a.kind.as_deref(),
            "spec.autoscalerRef.kind",
            &["HorizontalPodAutoscaler", "ScaledObject"],
        );
    }
    if let Some(r) = &a.primary_scaler_replicas {
        for (v, p) in [(r.min_replicas, "minReplicas"), (r.max_replicas, "maxReplicas")] {
            if let Some(v) = v
                && v < 1
            {
                f.error(
                    format!("spec.autoscalerRef.primaryScalerReplicas.{p}"),
                    format!("must be at least 1, got {v}"),
                );
            }
        }
        if let (Some(min), Some(max)) = (r.min_replicas, r.max_replicas)
            && min > max
        {
            f.error(
                "spec.autoscalerRef.primaryScalerReplicas",
                format!("minReplicas ({min}) is greater than maxReplicas ({max})"),
            );
        }
    }
}

fn check_service(f: &mut Findings, c: &Canary) {
    let kind = c.target_kind();
    let provider = c.provider();
    let Some(s) = &c.spec.service else {
        if matches!(kind, "Deployment" | "DaemonSet") && !c.is_knative_target() {
            f.error(
                "spec.service",
                format!("required for a {kind} target: set service.port, the port of the generated Services"),
            );
        }
        return;
    };
    match s.port {
        None => f.error(
            "spec.service.port",
            "required field is missing: the container port the Services expose",
        ),
        Some(p) => f.range(Some(p), "spec.service.port", 1, 65535),
    }
    f.one_of(
        s.traffic_distribution.as_deref(),
        "spec.service.trafficDistribution",
        &["PreferClose", "PreferSameZone", "PreferSameNode"],
    );
    if provider.starts_with("gatewayapi:") && s.gateway_refs.as_ref().is_none_or(|g| g.is_empty()) {
        f.error(
            "spec.service.gatewayRefs",
            "GatewayRefs must be specified when using Gateway API as a provider.",
        );
    }
    for (i, g) in s.gateway_refs.iter().flatten().enumerate() {
        f.required_str(
            &g.name,
            &format!("spec.service.gatewayRefs[{i}].name"),
            "the Gateway's name",
        );
    }
    if s.gateway_refs.as_ref().is_some_and(|g| g.len() > 32) {
        f.error(
            "spec.service.gatewayRefs",
            "at most 32 gateway references are allowed",
        );
    }
    if s.delegation == Some(true)
        && (s.hosts.as_ref().is_some_and(|h| !h.is_empty())
            || s.gateways.as_ref().is_some_and(|g| !g.is_empty()))
    {
        f.error(
            "spec.service.delegation",
            "a delegate VirtualService cannot set hosts or gateways; remove them or delegation",
        );
    }
    for (i, m) in s.match_.iter().flatten().enumerate() {
        check_http_match(f, m, &format!("spec.service.match[{i}]"), false);
    }
    for (i, m) in s.mirror.iter().flatten().enumerate() {
        let p = format!("spec.service.mirror[{i}].backendRef");
        match &m.backend_ref {
            None => f.error(p, "required field is missing: the mirror's backend"),
            Some(b) => {
                f.required_str(&b.name, &format!("{p}.name"), "the backend's name");
                let core_service = b.group.as_deref().unwrap_or("").is_empty()
                    && b.kind.as_deref().unwrap_or("Service") == "Service";
                if core_service && b.port.is_none() {
                    f.error(format!("{p}.port"), "Must have port for Service reference");
                }
                f.range(b.port, &format!("{p}.port"), 1, 65535);
            }
        }
    }
    if let Some(origins) = s.cors_policy.as_ref().and_then(|c| c.allow_origins.as_ref()) {
        for (i, m) in origins.iter().enumerate() {
            check_string_match(f, m, &format!("spec.service.corsPolicy.allowOrigins[{i}]"), true);
        }
    }
}

fn check_string_match(f: &mut Findings, m: &StringMatch, path: &str, exactly_one: bool) {
    let set: Vec<&str> = [
        ("exact", &m.exact),
        ("prefix", &m.prefix),
        ("suffix", &m.suffix),
        ("regex", &m.regex),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .map(|(k, _)| k)
    .collect();
    if set.len() > 1 {
        f.error(
            path,
            format!(
                "set exactly one of exact, prefix, suffix or regex; found {}",
                set.join(" and ")
            ),
        );
    } else if set.is_empty() && exactly_one {
        f.error(path, "set one of exact, prefix, suffix or regex");
    }
    if let Some(r) = &m.regex
        && let Err(e) = Regex::new(r)
    {
        // regex's syntax errors span lines (pattern, caret, reason); one line per finding.
        let text = e.to_string();
        let reason = text
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .trim_start_matches("error: ");
        f.error(
            format!("{path}.regex"),
            format!("{r:?} is not a valid RE2-style regular expression: {reason}"),
        );
    }
}

fn check_http_match(f: &mut Findings, m: &HttpMatchRequest, path: &str, ab: bool) {
    for (name, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(f, sm, &format!("{path}.{name}"), false);
        }
    }
    for (name, map) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (k, sm) in map.iter().flatten() {
            // analysis.match headers: the CRD requires exactly one kind of match per header
            check_string_match(f, sm, &format!("{path}.{name}.{k}"), ab && name == "headers");
        }
    }
}

fn check_analysis(f: &mut Findings, c: &Canary, a: &CanaryAnalysis) {
    let p = "spec.analysis";
    // oneOf: interval + threshold + exactly one of iterations / stepWeight / stepWeights
    if a.interval.is_none() {
        f.error(
            format!("{p}.interval"),
            "required field is missing: how often the analysis runs, e.g. 1m or 30s",
        );
    }
    if a.threshold.is_none() {
        f.error(
            format!("{p}.threshold"),
            "required field is missing: failed checks before rollback, e.g. 5",
        );
    }
    let modes: Vec<&str> = [
        ("iterations", a.iterations.is_some()),
        ("stepWeight", a.step_weight.is_some()),
        ("stepWeights", a.step_weights.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| n)
    .collect();
    match modes.len() {
        1 => {}
        0 => f.error(p, "set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found none"),
        _ => f.error(
            p,
            format!("set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found {}", modes.join(" and ")),
        ),
    }

    check_flagger_duration(f, a.interval.as_deref(), &format!("{p}.interval"), "60s");
    let interval = a.interval.as_deref().and_then(|i| parse_go_duration(i).ok());
    if interval == Some(std::time::Duration::ZERO) {
        // A zero interval would tick in a busy loop; Flagger has no meaning for it either.
        f.error(
            format!("{p}.interval"),
            format!(
                "{:?} is zero: the analysis needs a positive interval such as 1m or 30s",
                a.interval.as_deref().unwrap_or("")
            ),
        );
    } else if let Some(d) = interval
        && d < crate::defaults::MIN_INTERVAL
    {
        f.warning(
            format!("{p}.interval"),
            format!(
                "{} is below Flagger's 10s minimum; agents raise it to their --min-analysis-interval (10s unless lowered)",
                a.interval.as_deref().unwrap_or("")
            ),
        );
    }
    if let Some(t) = a.threshold
        && t <= 0
    {
        f.warning(format!("{p}.threshold"), format!("{t} is treated as 1"));
    }
    if let Some(i) = a.iterations
        && i < 1
    {
        f.error(format!("{p}.iterations"), format!("must be at least 1, got {i}"));
    }
    f.range(a.step_weight, &format!("{p}.stepWeight"), 1, 100);
    f.range(a.max_weight, &format!("{p}.maxWeight"), 0, 100);
    f.range(
        a.step_weight_promotion,
        &format!("{p}.stepWeightPromotion"),
        0,
        100,
    );
    f.range(a.mirror_weight, &format!("{p}.mirrorWeight"), 0, 100);
    f.range(
        a.primary_ready_threshold,
        &format!("{p}.primaryReadyThreshold"),
        0,
        100,
    );
    f.range(
        a.canary_ready_threshold,
        &format!("{p}.canaryReadyThreshold"),
        0,
        100,
    );
    if let Some(steps) = &a.step_weights {
        if steps.is_empty() {
            f.error(format!("{p}.stepWeights"), "must list at least one weight");
        }
        let mut prev: Option<i32> = None;
        for (i, w) in steps.iter().enumerate() {
            let wp = format!("{p}.stepWeights[{i}]");
            if !(1..=100).contains(w) {
                f.error(&wp, format!("must be between 1 and 100, got {w}"));
            } else if let Some(pv) = prev
                && *w <= pv
            {
                f.error(
                    &wp,
                    format!("must be greater than the previous step ({pv}), got {w}"),
                );
            }
            prev = Some(*w);
        }
        if a.max_weight.is_some() {
            f.warning(
                format!("{p}.maxWeight"),
                "ignored when stepWeights is set; the last step is the maximum",
            );
        }
    }
    if let (Some(step), Some(max)) = (a.step_weight, a.max_weight)
        && max > 0
        && step > 0
        && max % step != 0
        && step <= 100
    {
        // i64: maxWeight near i32::MAX (out of range, reported above) must not overflow here.
        let over = (i64::from(max) / i64::from(step) + 1) * i64::from(step);
        f.warning(
            format!("{p}.stepWeight"),
            format!("maxWeight {max} is not a multiple of stepWeight {step}; the canary weight will overshoot to {}", over.min(100)),
        );
    }
    let has_match = a.match_.as_ref().is_some_and(|m| !m.is_empty());
    if has_match && a.iterations.is_none() {
        f.warning(
            format!("{p}.match"),
            "only used for A/B testing, which needs iterations; it is ignored with step weights",
        );
    }
    for (i, m) in a.match_.iter().flatten().enumerate() {
        check_http_match(f, m, &format!("{p}.match[{i}]"), true);
    }
    if c.provider() == "kubernetes" {
        if has_match {
            f.warning(
                format!("{p}.match"),
                "A/B testing is not supported when using the kubernetes provider",
            );
        }
        if a.iterations.is_none() {
            f.warning(
                p,
                "Progressive traffic is not supported when using the kubernetes provider; iterations: 10 will be used",
            );
        }
    }
    if let Some(sa) = &a.session_affinity {
        let sp = format!("{p}.sessionAffinity");
        if f.required_str(
            &sa.cookie_name,
            &format!("{sp}.cookieName"),
            "the session affinity cookie's name",
        ) {
            let name = sa.cookie_name.as_deref().unwrap_or("");
            if !is_cookie_token(name) {
                f.error(
                    format!("{sp}.cookieName"),
                    format!("{name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
                );
            }
            if let Some(primary) = sa.primary_cookie_name.as_deref() {
                if primary == name {
                    f.error(
                        format!("{sp}.primaryCookieName"),
                        format!("must differ from cookieName (both are {name:?})"),
                    );
                } else if !is_cookie_token(primary) {
                    f.error(
                        format!("{sp}.primaryCookieName"),
                        format!("{primary:?} is not a valid cookie name"),
                    );
                }
            }
        }
        f.one_of(
            sa.same_site.as_deref(),
            &format!("{sp}.sameSite"),
            &["Strict", "Lax", "None"],
        );
        if let Some(m) = sa.max_age
            && m < 0
        {
            f.error(format!("{sp}.maxAge"), format!("must not be negative, got {m}"));
        }
    }
    check_metrics(f, a);
    check_webhooks(f, a);
    for (i, al) in a.alerts.iter().flatten().enumerate() {
        let ap = format!("{p}.alerts[{i}]");
        f.required_str(&al.name, &format!("{ap}.name"), "the alert's name");
        f.one_of(
            al.severity.as_deref(),
            &format!("{ap}.severity"),
            ALERT_SEVERITIES,
        );
        match &al.provider_ref {
            None => f.error(
                format!("{ap}.providerRef"),
                "required field is missing: {name, namespace} of an AlertProvider",
            ),
            Some(r) => {
                f.required_str(
                    &r.name,
                    &format!("{ap}.providerRef.name"),
                    "the AlertProvider's name",
                );
            }
        }
    }
}

fn check_metrics(f: &mut Findings, a: &CanaryAnalysis) {
    for (i, m) in a.metrics.iter().flatten().enumerate() {
        let mp = format!("spec.analysis.metrics[{i}]");
        if !f.required_str(&m.name, &format!("{mp}.name"), "the metric's name") {
            continue;
        }
        let name = m.name.as_deref().unwrap_or("");
        check_flagger_duration(f, m.interval.as_deref(), &format!("{mp}.interval"), "1m");
        let builtin = name == BUILTIN_SUCCESS_RATE || name == BUILTIN_DURATION;
        match &m.template_ref {
            Some(t) => {
                f.required_str(&t.name, &format!("{mp}.templateRef.name"), "the MetricTemplate's name");
            }
            None if builtin => {}
            None if m.query.is_some() => {
                f.warning(format!("{mp}.query"), "inline queries are deprecated; use a MetricTemplate");
            }
            // Flagger accepts such a metric and fails it on every analysis tick (its template
            // pass, pkg/controller/scheduler_metrics.go:346), so a Flagger manifest with one is
            // valid but cannot promote: warn.
            None => f.warning(
                &mp,
                format!("{name:?} is not a built-in metric ({BUILTIN_SUCCESS_RATE}, {BUILTIN_DURATION}) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
            ),
        }
        if let Some(q) = m.query.as_deref().filter(|q| !q.is_empty()) {
            check_query_template(f, q, &format!("{mp}.query"));
        }
        check_metric_threshold(f, m, &mp);
    }
}

/// Flagger's threshold rules (scheduler_metrics.go:165-181, :200-216, :237-253, :329-345): a
/// thresholdRange, even an empty one, decides alone; without one the deprecated `threshold`
/// (0 when unset) is a minimum for the success rate and a maximum for everything else.
fn check_metric_threshold(f: &mut Findings, m: &CanaryMetric, mp: &str) {
    // Only the built-in success rate reads `threshold` as a minimum; a query or a template
    // next to it is compared as a maximum.
    let success_rate_only = m.name.as_deref() == Some(BUILTIN_SUCCESS_RATE)
        && m.query.as_deref().is_none_or(str::is_empty)
        && m.template_ref.is_none();
    match &m.threshold_range {
        Some(r) => {
            match (r.min, r.max) {
                (Some(min), Some(max)) if min > max => f.error(
                    format!("{mp}.thresholdRange"),
                    format!("min ({min}) is greater than max ({max})"),
                ),
                (None, None) => f.warning(
                    format!("{mp}.thresholdRange"),
                    "has neither min nor max: the check passes at any value",
                ),
                _ => {}
            }
            if m.threshold.is_some() {
                f.warning(
                    format!("{mp}.threshold"),
                    "deprecated and ignored when thresholdRange is set",
                );
            }
        }
        None if m.threshold.is_some() => {}
        None if success_rate_only => f.warning(
            mp,
            "no thresholdRange: the success rate passes at any value (Flagger's minimum is 0); set thresholdRange.min, e.g. 99",
        ),
        None => f.warning(
            mp,
            "no thresholdRange: Flagger fails the check on any positive value (it compares value > 0); set thresholdRange.max (or min)",
        ),
    }
}

fn check_webhooks(f: &mut Findings, a: &CanaryAnalysis) {
    for (i, w) in a.webhooks.iter().flatten().enumerate() {
        let wp = format!("spec.analysis.webhooks[{i}]");
        f.required_str(&w.name, &format!("{wp}.name"), "the webhook's name");
        if f.required_str(&w.url, &format!("{wp}.url"), "the webhook's URL") {
            check_url(f, &w.url, &format!("{wp}.url"), "webhook endpoint");
        }
        f.one_of(w.type_.as_deref(), &format!("{wp}.type"), WEBHOOK_TYPES);
        check_flagger_duration(f, w.timeout.as_deref(), &format!("{wp}.timeout"), "10s");
        if let Some(r) = w.retries
            && r < 0
        {
            f.error(format!("{wp}.retries"), format!("must not be negative, got {r}"));
        }
    }
}

// === MetricTemplate, AlertProvider ===

/// Validates a MetricTemplate.
pub fn validate_metric_template(t: &MetricTemplate) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    f.required_str(&t.metadata.name, "metadata.name", "the template's name");
    match &t.spec.provider {
        None => f.error(
            "spec.provider",
            "required field is missing: {type, address, …} of the metrics provider",
        ),
        Some(p) => {
            if f.required_str(&p.type_, "spec.provider.type", "prometheus, datadog, …") {
                let ty = p.type_.as_deref().unwrap_or("");
                if f.one_of(Some(ty), "spec.provider.type", METRIC_PROVIDER_TYPES) {
                    if matches!(ty, "prometheus" | "graphite" | "dynatrace" | "influxdb")
                        && p.address.is_none()
                    {
                        f.error(
                            "spec.provider.address",
                            format!("required for the {ty} provider: its API address"),
                        );
                    }
                    if ty == "cloudwatch" && p.region.as_deref().is_none_or(str::is_empty) {
                        f.error(
                            "spec.provider.region",
                            "required for the cloudwatch provider, e.g. us-east-1",
                        );
                    }
                }
            }
            check_url(
                &mut f,
                &p.address,
                "spec.provider.address",
                "provider's API address",
            );
            if let Some(s) = &p.secret_ref {
                f.required_str(&s.name, "spec.provider.secretRef.name", "the Secret's name");
            }
        }
    }
    if f.required_str(&t.spec.query, "spec.query", "the query template") {
        check_query_template(&mut f, t.spec.query.as_deref().unwrap_or(""), "spec.query");
    }
    f.0
}

/// A query is a Go text/template: report what Go's parser reports (Flagger would fail every
/// check with this text), and nothing it accepts (`}}` outside an action is plain text).
fn check_query_template(f: &mut Findings, query: &str, path: &str) {
    if let Err(e) = aviary_template::parse(query) {
        f.error(path, format!("template parsing failed: {e}"));
    }
}

/// Validates an AlertProvider.
pub fn validate_alert_provider(a: &AlertProvider) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    f.required_str(&a.metadata.name, "metadata.name", "the provider's name");
    if f.required_str(
        &a.spec.type_,
        "spec.type",
        "slack, msteams, discord, rocket, gchat or generic",
    ) {
        f.one_of(a.spec.type_.as_deref(), "spec.type", ALERT_PROVIDER_TYPES);
    }
    match (&a.spec.address, &a.spec.secret_ref) {
        (None, None) => f.error(
            "spec",
            "set address (the hook URL) or secretRef (a Secret with an address key)",
        ),
        (Some(_), Some(_)) => f.error(
            "spec",
            "set address or secretRef, not both (Flagger's schema accepts exactly one)",
        ),
        (_, Some(s)) => {
            f.required_str(&s.name, "spec.secretRef.name", "the Secret's name");
        }
        _ => {}
    }
    check_url(&mut f, &a.spec.address, "spec.address", "hook URL");
    check_url(&mut f, &a.spec.proxy, "spec.proxy", "proxy URL");
    f.0
}

// === aviary.dev ===

/// Validates a LocalService.
pub fn validate_local_service(l: &LocalService) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    f.required_str(&l.metadata.name, "metadata.name", "the service's name");
    match l.spec.port {
        None => f.error(
            "spec.port",
            "required field is missing: the port the router listens on",
        ),
        Some(0) => f.error("spec.port", "must be between 1 and 65535, got 0"),
        Some(_) => {}
    }
    if f.required_str(&l.spec.version, "spec.version", "the version to run, e.g. 6.0.0")
        && let Some(v) = l.spec.version.as_deref()
        && !is_version(v)
    {
        f.error(
            "spec.version",
            format!(
                "{:?}: use at most {MAX_VERSION_LEN} letters, digits, '.', '_', '+' and '-' (it is substituted for {{{{version}}}})",
                shorten(v)
            ),
        );
    }
    if let Some(0) = l.spec.replicas {
        f.error("spec.replicas", "must be at least 1, got 0");
    }
    match &l.spec.command {
        None => f.error(
            "spec.command",
            "required field is missing: the command line, e.g. [aviary, sample-app, --port, \"{{port}}\"]",
        ),
        Some(c) if c.is_empty() || c[0].trim().is_empty() => f.error("spec.command", "must name a program"),
        Some(c) => {
            if !c.iter().any(|a| a.contains("{{port}}"))
                && !l.spec.env.iter().flatten().any(|(_, v)| v.contains("{{port}}"))
            {
                f.warning(
                    "spec.command",
                    "no {{port}} in the command or env: every process must listen on its own port",
                );
            }
        }
    }
    if let Some(p) = &l.spec.readiness_path
        && !p.starts_with('/')
    {
        f.error("spec.readinessPath", format!("must start with '/', got {p:?}"));
    }
    f.0
}

/// Validates the static parts of a FleetRollout (the coordinator checks it against the fleet).
pub fn validate_fleet_rollout(r: &FleetRollout) -> Vec<Diagnostic> {
    let mut f = Findings(Vec::new());
    if f.required_str(&r.metadata.name, "metadata.name", "the rollout's name") {
        check_dns_label(
            &mut f,
            r.metadata.name.as_deref().unwrap_or_default(),
            "metadata.name",
        );
    }
    let s = &r.spec;
    match &s.canary {
        None => f.error(
            "spec.canary",
            "required field is missing: {namespace, name} of the Canary",
        ),
        Some(c) => {
            if f.required_str(&c.name, "spec.canary.name", "the Canary's name") {
                check_dns_subdomain(&mut f, c.name.as_deref().unwrap_or_default(), "spec.canary.name");
            }
            if f.required_str(&c.namespace, "spec.canary.namespace", "the Canary's namespace") {
                check_dns_label(
                    &mut f,
                    c.namespace.as_deref().unwrap_or_default(),
                    "spec.canary.namespace",
                );
            }
        }
    }
    if let Some(rev) = &s.revision {
        check_revision(&mut f, rev);
    }
    let mode = s.mode.as_deref().unwrap_or("push");
    f.one_of(Some(mode), "spec.mode", &["push", "gate"]);
    match &s.revision {
        None if mode == "push" => f.error(
            "spec.revision",
            "required in push mode: containerImages or version",
        ),
        None => {}
        Some(rev) => {
            let images = rev.container_images.as_ref().is_some_and(|m| !m.is_empty());
            let version = rev.version.as_deref().is_some_and(|v| !v.trim().is_empty());
            if !images && !version {
                f.error(
                    "spec.revision",
                    "set containerImages (Deployment, Knative) or version (LocalService)",
                );
            }
            for (name, image) in rev.container_images.iter().flatten() {
                if image.trim().is_empty() {
                    f.error(
                        format!("spec.revision.containerImages.{name}"),
                        "must not be empty",
                    );
                }
            }
        }
    }
    if let Some(sel) = &s.clusters {
        check_selector(&mut f, sel, "spec.clusters");
    }
    let mut wave_names = BTreeSet::new();
    match (&s.waves, &s.by_region) {
        (Some(_), Some(_)) => f.error("spec", "set waves or byRegion, not both"),
        (None, None) => f.error(
            "spec.waves",
            "required field is missing: the waves (or byRegion: [region, …])",
        ),
        (None, Some(regions)) => {
            if regions.is_empty() {
                f.error("spec.byRegion", "must list at least one region");
            }
            for (i, region) in regions.iter().enumerate() {
                if region.trim().is_empty() {
                    f.error(format!("spec.byRegion[{i}]"), "must not be empty");
                } else if !is_dns_label(region) {
                    check_dns_label(&mut f, region, &format!("spec.byRegion[{i}]"));
                } else if !wave_names.insert(region.clone()) {
                    f.error(
                        format!("spec.byRegion[{i}]"),
                        format!("region {region:?} is listed twice"),
                    );
                }
            }
        }
        (Some(waves), None) => {
            if waves.is_empty() {
                f.error("spec.waves", "must list at least one wave");
            }
            for (i, w) in waves.iter().enumerate() {
                let wp = format!("spec.waves[{i}]");
                if f.required_str(&w.name, &format!("{wp}.name"), "a unique wave name") {
                    let name = w.name.clone().unwrap_or_default();
                    check_dns_label(&mut f, &name, &format!("{wp}.name"));
                    if !wave_names.insert(name.clone()) {
                        f.error(format!("{wp}.name"), format!("wave name {name:?} is used twice"));
                    }
                }
                if let Some(sel) = &w.clusters {
                    check_selector(&mut f, sel, &format!("{wp}.clusters"));
                }
                check_wave_settings(&mut f, &w.settings, &wp);
            }
        }
    }
    if let Some(d) = &s.wave_defaults {
        check_wave_settings(&mut f, d, "spec.waveDefaults");
    }
    if let Some(fp) = &s.failure_policy {
        if let Some(m) = &fp.max_failed_clusters
            && let Err(e) = CountOrPercent::parse(m)
        {
            f.error("spec.failurePolicy.maxFailedClusters", e);
        }
        for (i, w) in fp.mandatory_waves.iter().flatten().enumerate() {
            if !wave_names.contains(w) {
                let known: Vec<&String> = wave_names.iter().collect();
                f.error(
                    format!("spec.failurePolicy.mandatoryWaves[{i}]"),
                    format!("{w:?} is not a wave of this rollout; waves are {known:?}"),
                );
            }
        }
        f.one_of(
            fp.rollback.as_deref(),
            "spec.failurePolicy.rollback",
            &["cluster", "wave", "all"],
        );
    }
    if let Some(d) = &s.cluster_deadline {
        check_bounded_duration(&mut f, d, "spec.clusterDeadline", "30m");
        if parse_go_duration(d).is_ok_and(|d| d.is_zero()) {
            f.error(
                "spec.clusterDeadline",
                "must be longer than 0; use a duration such as 30m",
            );
        }
    }
    f.0
}

/// The longest bake or cluster deadline a rollout may ask for.
pub const MAX_FLEET_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The longest `revision.version`.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest container image reference.
pub const MAX_IMAGE_LEN: usize = 512;

/// A DNS label (RFC 1123): 1–63 characters, lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. Cluster, region, wave and rollout names are DNS labels.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain (RFC 1123): DNS labels joined by dots, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A `revision.version`: 1–128 characters of letters, digits and `.`, `_`, `+`, `-` (semver
/// with build metadata fits). It is substituted for `{{version}}` in LocalService commands:
/// the charset keeps it inert there, but a command must still never pass it to a shell
/// unquoted (docs/local-platform.md).
pub fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VERSION_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// A container image reference: 1–512 characters of letters, digits and `.`, `_`, `-`, `/`,
/// `:`, `@`, `+` (registry, path, tag, digest).
pub fn is_image(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IMAGE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@+".contains(&b))
}

fn check_dns_label(f: &mut Findings, s: &str, path: &str) {
    let rule =
        "a DNS label: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit";
    check_name(f, s, path, is_dns_label, rule);
}

fn check_dns_subdomain(f: &mut Findings, s: &str, path: &str) {
    let rule = "a DNS subdomain: use at most 253 characters of lowercase letters, digits, '-' and '.'";
    check_name(f, s, path, is_dns_subdomain, rule);
}

/// `"<s>" is not <rule>` unless `ok(s)`.
fn check_name(f: &mut Findings, s: &str, path: &str, ok: fn(&str) -> bool, rule: &str) {
    if !ok(s) {
        f.error(path, format!("{:?} is not {rule}", shorten(s)));
    }
}

fn check_revision(f: &mut Findings, rev: &crate::fleet::RevisionSpec) {
    if let Some(v) = rev.version.as_deref()
        && !v.trim().is_empty()
        && !is_version(v)
    {
        f.error(
            "spec.revision.version",
            format!(
                "{:?}: use at most {MAX_VERSION_LEN} letters, digits, '.', '_', '+' and '-'",
                shorten(v)
            ),
        );
    }
    for (name, image) in rev.container_images.iter().flatten() {
        let path = format!("spec.revision.containerImages.{}", shorten(name));
        check_dns_label(f, name, &path);
        if !image.trim().is_empty() {
            let rule = format!(
                "an image reference: use at most {MAX_IMAGE_LEN} letters, digits and '.', '_', '-', '/', ':', '@', '+'"
            );
            check_name(f, image, &path, is_image, &rule);
        }
    }
}

/// A Go duration of at most [`MAX_FLEET_DURATION`].
fn check_bounded_duration(f: &mut Findings, d: &str, path: &str, example: &str) {
    match parse_go_duration(d) {
        Err(e) => f.error(path, format!("{e}; use a duration such as {example}")),
        Ok(v) if v > MAX_FLEET_DURATION => {
            f.error(path, format!("{d} is longer than the limit of 168h (7 days)"))
        }
        Ok(_) => {}
    }
}

/// Echoed input, cut to 64 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn check_wave_settings(f: &mut Findings, w: &crate::fleet::WaveSettings, wp: &str) {
    if let Some(mc) = &w.max_concurrent {
        match CountOrPercent::parse(mc) {
            Err(e) => f.error(format!("{wp}.maxConcurrent"), e),
            Ok(CountOrPercent::Count(0) | CountOrPercent::Percent(0)) => f.error(
                format!("{wp}.maxConcurrent"),
                "must allow at least one cluster (≥ 1 or > 0%)",
            ),
            Ok(_) => {}
        }
    }
    if let Some(d) = w.bake.as_ref().and_then(|b| b.duration.as_ref()) {
        check_bounded_duration(f, d, &format!("{wp}.bake.duration"), "10m");
    }
    // NaN is outside too (not finite, not in the range).
    if let Some(r) = w.bake.as_ref().and_then(|b| b.min_success_rate)
        && !(r.is_finite() && (0.0..=100.0).contains(&r))
    {
        f.error(
            format!("{wp}.bake.minSuccessRate"),
            format!("must be a percentage between 0 and 100, got {r}"),
        );
    }
    f.one_of(
        w.approval.as_deref(),
        &format!("{wp}.approval"),
        &["auto", "manual"],
    );
}

fn check_selector(f: &mut Findings, sel: &LabelSelector, path: &str) {
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let ep = format!("{path}.matchExpressions[{i}]");
        if f.one_of(
            Some(e.operator.as_str()),
            &format!("{ep}.operator"),
            &["In", "NotIn", "Exists", "DoesNotExist"],
        ) {
            let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
            match e.operator.as_str() {
                "In" | "NotIn" if !has_values => f.error(
                    format!("{ep}.values"),
                    format!("{} needs at least one value", e.operator),
                ),
                "Exists" | "DoesNotExist" if has_values => {
                    f.error(format!("{ep}.values"), format!("{} takes no values", e.operator))
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse_documents;

    fn lines(yaml: &str) -> Vec<String> {
        let parsed = parse_documents(yaml).unwrap().remove(0).unwrap();
        let report = validate(&parsed);
        report
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.severity, report.line(d)))
            .collect()
    }

    const CANARY: &str = "apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    threshold: 5
    stepWeight: 10
";

    #[test]
    fn a_complete_canary_is_ok() {
        assert_eq!(lines(CANARY), Vec::<String>::new());
    }

    #[test]
    fn metric_without_template_or_query_is_only_a_warning() {
        // Flagger accepts it and never evaluates it (the guide's traffic-mirroring example).
        let yaml = format!(
            "{CANARY}    metrics:\n    - {{name: error-rate, thresholdRange: {{max: 1}}, interval: 1m}}\n"
        );
        assert_eq!(
            lines(&yaml),
            vec![
                "warning test/podinfo: spec.analysis.metrics[0]: \"error-rate\" is not a built-in metric \
                 (request-success-rate, request-duration) and has no templateRef or query; it fails every \
                 analysis tick (\"no usable metrics template and query were configured\"), so set \
                 templateRef to a MetricTemplate"
            ]
        );
    }

    /// Flagger's documented CloudWatch template (docs/gitbook/usage/metrics.md) is a JSON array
    /// ending in `}}]`: plain text to Go's parser.
    #[test]
    fn query_templates_are_parsed_as_go_does() {
        let template = |query: &str| {
            let q = query.replace('\n', "\n    ");
            lines(&format!(
                "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {{name: t, namespace: test}}\nspec:\n  provider: {{type: cloudwatch, region: us-east-1}}\n  query: |\n    {q}\n"
            ))
        };
        let cloudwatch = r#"[
    {
        "Id": "e1",
        "Expression": "m1 / m2",
        "Label": "ErrorRate"
    },
    {
        "Id": "m1",
        "MetricStat": {
            "Metric": {
                "Namespace": "MyKubernetesCluster",
                "MetricName": "ErrorCount",
                "Dimensions": [{"Name": "appName", "Value": "{{ name }}.{{ namespace }}"}]
            },
            "Period": 60,
            "Stat": "Sum",
            "Unit": "Count"
        },
        "ReturnData": false
    }
]"#;
        assert_eq!(template(cloudwatch), Vec::<String>::new());
        assert_eq!(
            template("sum(x{ns=\"{{ namespace }\"})"),
            vec![
                "error test/t: spec.query: template parsing failed: template: tmpl:1: unexpected \"}\" in operand"
            ]
        );
        assert_eq!(
            template("{{ if variables.x }}a"),
            vec!["error test/t: spec.query: template parsing failed: template: tmpl:2: unexpected EOF"]
        );
        assert_eq!(
            lines(&format!(
                "{CANARY}    metrics:\n    - {{name: p99, query: '{{{{ nope }}}}', thresholdRange: {{max: 1}}}}\n"
            ))[0],
            "error test/podinfo: spec.analysis.metrics[0].query: template parsing failed: template: tmpl:1: function \"nope\" not defined"
        );
    }

    #[test]
    fn threshold_warnings_follow_flaggers_rules() {
        let metric = |m: &str| lines(&format!("{CANARY}    metrics:\n    - {m}\n"));
        let p = "warning test/podinfo: spec.analysis.metrics[0]";
        // neither thresholdRange nor threshold: `value > 0` fails any positive value …
        assert_eq!(
            metric("{name: request-duration}"),
            vec![format!(
                "{p}: no thresholdRange: Flagger fails the check on any positive value (it compares \
                 value > 0); set thresholdRange.max (or min)"
            )]
        );
        assert_eq!(
            metric("{name: request-success-rate, query: 'sum(up)'}")[0],
            format!(
                "{p}: no thresholdRange: Flagger fails the check on any positive value (it compares \
                 value > 0); set thresholdRange.max (or min)"
            )
        );
        // … except the built-in success rate, whose minimum is 0
        assert_eq!(
            metric("{name: request-success-rate}"),
            vec![format!(
                "{p}: no thresholdRange: the success rate passes at any value (Flagger's minimum is \
                 0); set thresholdRange.min, e.g. 99"
            )]
        );
        // an empty thresholdRange decides alone
        assert_eq!(
            metric("{name: request-duration, thresholdRange: {}, threshold: 500}"),
            vec![
                format!("{p}.threshold: deprecated and ignored when thresholdRange is set"),
                format!("{p}.thresholdRange: has neither min nor max: the check passes at any value"),
            ]
        );
        assert_eq!(
            metric("{name: request-duration, threshold: 500}"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn knative_targets_are_v1_only() {
        let yaml = "apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: knative
  targetRef: {apiVersion: serving.knative.dev/v1beta1, kind: Service, name: podinfo}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
";
        assert_eq!(
            lines(yaml),
            vec![
                "error test/podinfo: spec.targetRef.apiVersion: Knative Services are supported as \
                 serving.knative.dev/v1 only, got \"serving.knative.dev/v1beta1\""
            ]
        );
        let v1 = yaml.replace("v1beta1, kind: Service", "v1, kind: Service");
        assert_eq!(lines(&v1), Vec::<String>::new());
    }

    #[test]
    fn one_line_per_finding_even_for_regex_syntax_errors() {
        let yaml = CANARY.replace(
            "  service: {port: 9898}",
            "  service:\n    port: 9898\n    match: [{uri: {regex: \"(unclosed\"}}]",
        );
        assert_eq!(
            lines(&yaml),
            vec![
                "error test/podinfo: spec.service.match[0].uri.regex: \"(unclosed\" is not a valid \
                 RE2-style regular expression: unclosed group"
            ]
        );
    }

    #[test]
    fn host_port_without_scheme_is_named_as_such() {
        let yaml = "apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: error-rate, namespace: test}
spec:
  provider: {type: prometheus, address: \"prometheus:9090\"}
  query: up
";
        assert_eq!(
            lines(yaml),
            vec![
                "error test/error-rate: spec.provider.address: \"prometheus:9090\" has no http:// or \
                 https:// scheme; expected the provider's API address such as http://host:port/"
            ]
        );
    }

    #[test]
    fn a_document_without_a_name_is_shown_as_no_name() {
        let yaml = CANARY.replace("{name: podinfo, namespace: test}", "{namespace: test}");
        assert_eq!(
            lines(&yaml),
            vec!["error test/<no name>: metadata.name: required field is missing: the canary's name"]
        );
        let err = parse_documents("[1, 2]").unwrap().remove(0).unwrap_err();
        let report = document_error_report(&err);
        assert_eq!(
            report.line(&report.diagnostics[0]),
            "<no name>: expected a YAML mapping (an object)"
        );
    }

    const FLEET: &str = "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: podinfo-6-0-1}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {containerImages: {podinfod: 'ghcr.io/stefanprodan/podinfo:6.0.1@sha256:abc'}, version: 6.0.1+build.7}
  byRegion: [us-east-1, eu-west-1]
  clusterDeadline: 30m
";

    /// Names are DNS labels, versions and images have a charset and a length, durations an
    /// upper bound, rates are percentages (hostile input, issue 15).
    #[test]
    fn fleet_rollout_names_revisions_and_durations_are_checked() {
        assert_eq!(lines(FLEET), Vec::<String>::new());
        let cases: &[(&str, &str, &str)] = &[
            (
                "name: podinfo-6-0-1",
                "name: Podinfo_6",
                "metadata.name: \"Podinfo_6\" is not a DNS label",
            ),
            (
                "name: podinfo-6-0-1",
                "name: a.b",
                "metadata.name: \"a.b\" is not a DNS label",
            ),
            (
                "namespace: test",
                "namespace: 'te st'",
                "spec.canary.namespace: \"te st\" is not a DNS label",
            ),
            (
                "[us-east-1, eu-west-1]",
                "[us-east-1, 'eu;rm -rf']",
                "spec.byRegion[1]: \"eu;rm -rf\" is not a DNS label",
            ),
            (
                "version: 6.0.1+build.7",
                "version: '6.0.1; curl x|sh'",
                "spec.revision.version: \"6.0.1; curl x|sh\": use at most 128",
            ),
            (
                "version: 6.0.1+build.7",
                "version: '$(id)'",
                "spec.revision.version: \"$(id)\": use at most 128",
            ),
            (
                "podinfo:6.0.1@sha256:abc'",
                "podinfo:6.0.1 --privileged'",
                "is not an image reference",
            ),
            (
                "{podinfod:",
                "{Podinfod:",
                "spec.revision.containerImages.Podinfod: \"Podinfod\" is not a DNS label",
            ),
            (
                "clusterDeadline: 30m",
                "clusterDeadline: 10000h",
                "spec.clusterDeadline: 10000h is longer than the limit of 168h",
            ),
        ];
        for (from, to, want) in cases {
            assert!(FLEET.contains(from), "{from}");
            let yaml = FLEET.replace(from, to);
            let got = lines(&yaml);
            assert!(
                got.iter().any(|l| l.starts_with("error") && l.contains(want)),
                "{to}: want {want:?} in {got:#?}"
            );
        }
        let long = "v".repeat(129);
        let got = lines(&FLEET.replace("6.0.1+build.7", &long));
        assert!(got.iter().any(|l| l.contains("spec.revision.version")), "{got:?}");
        let waves = FLEET.replace(
            "  byRegion: [us-east-1, eu-west-1]\n",
            "  waves:\n  - {name: Canary Wave, bake: {duration: 9000h, minSuccessRate: 250}}\n",
        );
        let got = lines(&waves);
        for want in [
            "spec.waves[0].name: \"Canary Wave\" is not a DNS label",
            "spec.waves[0].bake.duration: 9000h is longer than the limit",
            "spec.waves[0].bake.minSuccessRate: must be a percentage between 0 and 100, got 250",
        ] {
            assert!(got.iter().any(|l| l.contains(want)), "want {want:?} in {got:#?}");
        }
    }

    #[test]
    fn dns_names_versions_and_images() {
        for ok in ["a", "us-east-1", "0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a b", &"a".repeat(64), "é"] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("podinfo.test-1"));
        assert!(!is_dns_subdomain("podinfo..test"));
        for ok in ["1.2.3", "v1.2.3-rc.1+build.5", "2024_01_01"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in [
            "", "1 2", "$(id)", "`id`", "a;b", "a|b", "a\nb", "'a'", "\"a\"", "a/b",
        ] {
            assert!(!is_version(bad), "{bad:?}");
        }
        for ok in ["nginx", "ghcr.io/a/b:1.0", "r:5000/a@sha256:0f"] {
            assert!(is_image(ok), "{ok}");
        }
        for bad in ["", "a b", "a;b", "$(x)", "a\tb"] {
            assert!(!is_image(bad), "{bad:?}");
        }
    }
}
