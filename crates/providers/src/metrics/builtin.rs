//! Built-in metrics as Flagger's PromQL ("observers").
//!
//! The observer follows the canary's provider (`spec.provider`, else the agent's default), as
//! Flagger's observer factory (pkg/metrics/observers/factory.go) picks it: `istio` → Istio
//! telemetry; `knative` → Envoy (Kourier) cluster stats by revision; `kubernetes` and every
//! `gatewayapi*` → the HTTP observer (the application's own `http_request_duration_seconds`
//! histogram, scraped with Kubernetes pod labels); `nginx`, `linkerd`, `contour`, `gloo*`,
//! `traefik`, `appmesh*`, `skipper`, `osm`, `kuma`, `apisix` → that data plane's own metrics;
//! anything else (the `smi:*` providers) → Istio's, Flagger's default.
//!
//! For Knative the `route` of the model must be the Knative Service's
//! `status.latestCreatedRevisionName`; the caller supplies it in the [`MetricModel`].

use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE};
use aviary_core::judge::CounterReading;
use aviary_core::ports::{BuiltinMetric, BuiltinSource, MetricError, MetricModel, MetricResult};
use reqwest::header::HeaderMap;
use url::Url;

use super::counters::{Arm, arm_queries, arm_reading};
use super::parse_base_url;
use super::prometheus::{self, collapse};
use crate::error::Result;
use crate::http::{self, Clients};

/// Which family of built-in queries a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    /// `istio_requests_total` / `istio_request_duration_milliseconds_bucket`.
    Istio,
    /// `envoy_cluster_upstream_rq` / `envoy_cluster_upstream_rq_time_bucket` by revision.
    Knative,
    /// `http_request_duration_seconds_{count,bucket}` by pod name (kubernetes, gatewayapi).
    Http,
    /// ingress-nginx's `nginx_ingress_controller_requests` of the canary Ingress.
    Nginx,
    /// Linkerd's proxy `response_total` / `response_latency_ms_bucket` by deployment.
    Linkerd,
    /// Envoy cluster stats of Contour's `<ns>_<service>-canary_<port>` cluster.
    Contour,
    /// Envoy cluster stats of Gloo's canary upstream.
    Gloo,
    /// `traefik_service_request_duration_seconds_bucket` of the canary service.
    Traefik,
    /// Envoy cluster stats of the App Mesh sidecars by pod name.
    AppMesh,
    /// Skipper's route metrics of the canary Ingress' routes.
    Skipper,
    /// OSM's `osm_request_total` / `osm_request_duration_ms_bucket`.
    Osm,
    /// Envoy cluster stats of Kuma's canary service.
    Kuma,
    /// APISIX's `apisix_http_status` / `apisix_http_latency_bucket` of the canary route.
    Apisix,
}

impl Observer {
    /// The observer for a provider name (`istio`, `knative`, `kubernetes`, `gatewayapi:v1`, …).
    pub fn for_provider(provider: &str) -> Result<Self, String> {
        // A core Service target makes Flagger ask for `<provider>:service` (scheduler_metrics.go:
        // 113-116); its observer factory matches most providers exactly, so those fall to its
        // default, Istio; the prefix-matched families keep theirs (observers/factory.go:45-103).
        let p = match provider.strip_suffix(":service") {
            Some(base)
                if ["gatewayapi", "appmesh", "gloo"]
                    .iter()
                    .any(|f| base.starts_with(f)) =>
            {
                base
            }
            Some(_) => "istio",
            None => provider,
        };
        // In the order of Flagger's factory (observers/factory.go:46-102).
        Ok(match p {
            p if p.starts_with("appmesh") => Self::AppMesh,
            "linkerd" => Self::Linkerd,
            "istio" => Self::Istio,
            "contour" => Self::Contour,
            p if p.starts_with("gloo") => Self::Gloo,
            "nginx" => Self::Nginx,
            "kubernetes" => Self::Http,
            p if p.starts_with("gatewayapi") => Self::Http,
            "skipper" => Self::Skipper,
            "traefik" => Self::Traefik,
            "osm" => Self::Osm,
            "kuma" => Self::Kuma,
            "apisix" => Self::Apisix,
            "knative" => Self::Knative,
            "local" => {
                return Err(format!(
                    "built-in metrics (request-success-rate, request-duration) are not available for provider {p:?} here; use a MetricTemplate"
                ));
            }
            _ => Self::Istio,
        })
    }

    /// The query template (before rendering and whitespace collapsing).
    pub fn template(self, metric: BuiltinMetric) -> &'static str {
        match (self, metric) {
            (Self::Istio, BuiltinMetric::SuccessRate) => ISTIO_SUCCESS_RATE,
            (Self::Istio, BuiltinMetric::Duration) => ISTIO_DURATION,
            (Self::Knative, BuiltinMetric::SuccessRate) => KNATIVE_SUCCESS_RATE,
            (Self::Knative, BuiltinMetric::Duration) => KNATIVE_DURATION,
            (Self::Http, BuiltinMetric::SuccessRate) => HTTP_SUCCESS_RATE,
            (Self::Http, BuiltinMetric::Duration) => HTTP_DURATION,
            (Self::Nginx, BuiltinMetric::SuccessRate) => NGINX_SUCCESS_RATE,
            (Self::Nginx, BuiltinMetric::Duration) => NGINX_DURATION,
            (Self::Linkerd, BuiltinMetric::SuccessRate) => LINKERD_SUCCESS_RATE,
            (Self::Linkerd, BuiltinMetric::Duration) => LINKERD_DURATION,
            (Self::Contour, BuiltinMetric::SuccessRate) => CONTOUR_SUCCESS_RATE,
            (Self::Contour, BuiltinMetric::Duration) => CONTOUR_DURATION,
            (Self::Gloo, BuiltinMetric::SuccessRate) => GLOO_SUCCESS_RATE,
            (Self::Gloo, BuiltinMetric::Duration) => GLOO_DURATION,
            (Self::Traefik, BuiltinMetric::SuccessRate) => TRAEFIK_SUCCESS_RATE,
            (Self::Traefik, BuiltinMetric::Duration) => TRAEFIK_DURATION,
            (Self::AppMesh, BuiltinMetric::SuccessRate) => APPMESH_SUCCESS_RATE,
            (Self::AppMesh, BuiltinMetric::Duration) => APPMESH_DURATION,
            (Self::Skipper, BuiltinMetric::SuccessRate) => SKIPPER_SUCCESS_RATE,
            (Self::Skipper, BuiltinMetric::Duration) => SKIPPER_DURATION,
            (Self::Osm, BuiltinMetric::SuccessRate) => OSM_SUCCESS_RATE,
            (Self::Osm, BuiltinMetric::Duration) => OSM_DURATION,
            (Self::Kuma, BuiltinMetric::SuccessRate) => KUMA_SUCCESS_RATE,
            (Self::Kuma, BuiltinMetric::Duration) => KUMA_DURATION,
            (Self::Apisix, BuiltinMetric::SuccessRate) => APISIX_SUCCESS_RATE,
            (Self::Apisix, BuiltinMetric::Duration) => APISIX_DURATION,
        }
    }

    /// The query to send: rendered with the model and whitespace-collapsed.
    pub fn query(self, metric: BuiltinMetric, model: &MetricModel) -> Result<String, String> {
        let skipper;
        let model = if self == Self::Skipper {
            skipper = skipper_model(model);
            &skipper
        } else {
            model
        };
        aviary_core::template::render(self.template(metric), model)
            .map(|q| collapse(&q))
            .map_err(|e| e.to_string())
    }

    /// Whether Flagger's observer wraps a failed query as `running query failed: <error>`
    /// (every observer does, except the HTTP observer's success rate).
    fn wraps_errors(self, metric: BuiltinMetric) -> bool {
        !matches!((self, metric), (Self::Http, BuiltinMetric::SuccessRate))
    }

    /// Factor from the query's unit to the port's (percent, milliseconds).
    fn scale(self, metric: BuiltinMetric) -> f64 {
        match (self, metric) {
            // The HTTP observer's histogram is in seconds.
            (Self::Http, BuiltinMetric::Duration) => 1000.0,
            _ => 1.0,
        }
    }
}

/// Skipper's route names have every non-word character as `_` (observers/skipper.go:95-104).
fn skipper_model(m: &MetricModel) -> MetricModel {
    let word = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    MetricModel {
        name: word(&m.name),
        namespace: word(&m.namespace),
        target: word(&m.target),
        service: word(&m.service),
        ingress: word(&m.ingress),
        ..m.clone()
    }
}

// The queries of Flagger's observers (pkg/metrics/observers/<provider>.go); only the line
// breaks differ (queries are whitespace-collapsed before they are sent).

const NGINX_SUCCESS_RATE: &str = r#"
sum(rate(nginx_ingress_controller_requests{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!="",status!~"5.*"}[{{ interval }}]))
/
sum(rate(nginx_ingress_controller_requests{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}]))
* 100
"#;

const NGINX_DURATION: &str = r#"
sum(rate(nginx_ingress_controller_response_duration_seconds_sum{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}]))
/
sum(rate(nginx_ingress_controller_response_duration_seconds_count{namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""}[{{ interval }}]))
* 1000
"#;

const LINKERD_SUCCESS_RATE: &str = r#"
sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}]))
/
sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}]))
* 100
"#;

const LINKERD_DURATION: &str = r#"
histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))
"#;

/// Envoy's upstream-cluster stats of the canary's clusters: Contour, Gloo and Kuma differ only
/// in the selector (the trailing commas are Flagger's).
macro_rules! envoy_cluster_queries {
    ($success_rate:ident, $duration:ident, $selector:literal) => {
        const $success_rate: &str = concat!(
            "\nsum(rate(envoy_cluster_upstream_rq{",
            $selector,
            r#",envoy_response_code!~"5.*"}[{{ interval }}]))"#,
            "\n/\nsum(rate(envoy_cluster_upstream_rq{",
            $selector,
            ",}[{{ interval }}]))\n* 100\n"
        );
        const $duration: &str = concat!(
            "\nhistogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{",
            $selector,
            ",}[{{ interval }}])) by (le))\n"
        );
    };
}

envoy_cluster_queries!(
    CONTOUR_SUCCESS_RATE,
    CONTOUR_DURATION,
    r#"envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+""#
);

envoy_cluster_queries!(
    GLOO_SUCCESS_RATE,
    GLOO_DURATION,
    r#"envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+""#
);

envoy_cluster_queries!(
    KUMA_SUCCESS_RATE,
    KUMA_DURATION,
    r#"service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+""#
);

const TRAEFIK_SUCCESS_RATE: &str = r#"
sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",code!~"5..",le="+Inf"}[{{ interval }}]))
/
sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",le="+Inf"}[{{ interval }}])) * 100
"#;

const TRAEFIK_DURATION: &str = r#"
histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"}[{{ interval }}])) by (le)) * 1000
"#;

const APPMESH_SUCCESS_RATE: &str = r#"
sum(rate(envoy_cluster_upstream_rq{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",envoy_response_code!~"5.*"}[{{ interval }}]))
/
sum(rate(envoy_cluster_upstream_rq{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}]))
* 100
"#;

const APPMESH_DURATION: &str = r#"
histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le))
"#;

const SKIPPER_SUCCESS_RATE: &str = concat!(
    r#"{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}"#,
    r#"
sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",code!~"5..",le="+Inf"}[{{ interval }}])) /
sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",le="+Inf"}[{{ interval }}])) * 100"#
);

const SKIPPER_DURATION: &str = concat!(
    r#"{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}"#,
    r#"
sum(rate(skipper_serve_route_duration_seconds_sum{route=~"{{ $route }}"}[{{ interval }}])) /
sum(rate(skipper_serve_route_duration_seconds_count{route=~"{{ $route }}"}[{{ interval }}])) * 1000"#
);

const OSM_SUCCESS_RATE: &str = r#"
sum(rate(osm_request_total{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}",response_code!~"5.*"}[{{ interval }}]))
/
sum(rate(osm_request_total{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}"}[{{ interval }}]))
* 100
"#;

const OSM_DURATION: &str = r#"
histogram_quantile(0.99, sum(rate(osm_request_duration_ms_bucket{destination_namespace="{{ namespace }}",destination_kind="Deployment",destination_name="{{ target }}"}[{{ interval }}])) by (le))
"#;

const APISIX_SUCCESS_RATE: &str = r#"
sum(rate(apisix_http_status{route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+",code!~"5.."}[{{ interval }}]))
/
sum(rate(apisix_http_status{route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"}[{{ interval }}])) * 100
"#;

const APISIX_DURATION: &str = r#"
histogram_quantile(0.99, sum(rate(apisix_http_latency_bucket{type=~"request",route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"}[{{ interval }}])) by (le))
"#;

const ISTIO_SUCCESS_RATE: &str = r#"
sum(
  rate(
    istio_requests_total{
      reporter="destination",
      destination_workload_namespace="{{ namespace }}",
      destination_workload=~"{{ target }}",
      response_code!~"5.*"
    }[{{ interval }}]
  )
)
/
sum(
  rate(
    istio_requests_total{
      reporter="destination",
      destination_workload_namespace="{{ namespace }}",
      destination_workload=~"{{ target }}"
    }[{{ interval }}]
  )
)
* 100"#;

const ISTIO_DURATION: &str = r#"
histogram_quantile(
  0.99,
  sum(
    rate(
      istio_request_duration_milliseconds_bucket{
        reporter="destination",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}"
      }[{{ interval }}]
    )
  ) by (le)
)"#;

const KNATIVE_SUCCESS_RATE: &str = r#"
sum(
  rate(
    envoy_cluster_upstream_rq{
      envoy_cluster_name=~"{{ namespace }}/{{ route }}",
      envoy_response_code!~"5.*"
    }[{{ interval }}]
  )
)
/
sum(
  rate(
    envoy_cluster_upstream_rq{
      envoy_cluster_name=~"{{ namespace }}/{{ route }}",
    }[{{ interval }}]
  )
)
* 100"#;

const KNATIVE_DURATION: &str = r#"
histogram_quantile(
  0.99,
  sum(
    rate(
      envoy_cluster_upstream_rq_time_bucket{
        envoy_cluster_name=~"{{ namespace }}/{{ route }}",
      }[{{ interval }}]
    )
  ) by (le)
)"#;

const HTTP_SUCCESS_RATE: &str = r#"
sum(
  rate(
    http_request_duration_seconds_count{
      kubernetes_namespace="{{ namespace }}",
      kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
      status!~"5.*"
    }[{{ interval }}]
  )
)
/
sum(
  rate(
    http_request_duration_seconds_count{
      kubernetes_namespace="{{ namespace }}",
      kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
    }[{{ interval }}]
  )
)
* 100"#;

const HTTP_DURATION: &str = r#"
histogram_quantile(
  0.99,
  sum(
    rate(
      http_request_duration_seconds_bucket{
        kubernetes_namespace="{{ namespace }}",
        kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
      }[{{ interval }}]
    )
  ) by (le)
)"#;

/// Built-in metrics and inline queries on Prometheus: the canary's `spec.metricsServer`, else the
/// agent's default (Flagger's `-metrics-server`).
#[derive(Clone)]
pub struct PrometheusBuiltins {
    default_server: String,
    default_provider: String,
    clients: Arc<Clients>,
}

impl std::fmt::Debug for PrometheusBuiltins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusBuiltins")
            .field("default_server", &http::origin(&self.default_server))
            .field("default_provider", &self.default_provider)
            .finish()
    }
}

impl PrometheusBuiltins {
    /// `default_server` is the agent's `--metrics-server` (Flagger: `http://prometheus:9090`);
    /// `default_provider` the provider of canaries without `spec.provider`.
    pub fn new(default_server: impl Into<String>, default_provider: impl Into<String>) -> Result<Self> {
        Ok(Self {
            default_server: default_server.into(),
            default_provider: default_provider.into(),
            clients: Arc::new(Clients::new()?),
        })
    }

    /// Probes the default metrics server (`vector(1)`) once, as Flagger does at startup (it
    /// only logs the answer): `Ok("connected to metrics server <origin>")` or the error, both
    /// to be logged.
    pub async fn probe_default(&self) -> Result<String, String> {
        let origin = http::origin(&self.default_server);
        let base = parse_base_url(&self.default_server)
            .map_err(|_| format!("metrics server {origin:?} is not an http(s) URL"))?;
        let client = self.client().map_err(|e| e.to_string())?;
        prometheus::is_online(&client, &base, HeaderMap::new(), None)
            .await
            .map(|()| format!("connected to metrics server {origin}"))
            .map_err(|e| format!("metrics server {origin} unreachable: {e}"))
    }

    /// The Prometheus a canary's built-in metrics go to.
    pub fn server_for<'a>(&'a self, canary: &'a Canary) -> &'a str {
        canary
            .spec
            .metrics_server
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.default_server)
    }

    /// The observer for a canary.
    pub fn observer_for(&self, canary: &Canary) -> Result<Observer, String> {
        let p = canary
            .spec
            .provider
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.default_provider);
        Observer::for_provider(p)
    }

    fn base(&self, canary: &Canary) -> Result<Url, MetricError> {
        let server = self.server_for(canary);
        parse_base_url(server).map_err(|_| {
            MetricError::Provider(format!(
                "metrics server {:?} (spec.metricsServer or the agent's --metrics-server) is not an http(s) URL",
                http::origin(server)
            ))
        })
    }

    fn client(&self) -> Result<reqwest::Client, MetricError> {
        self.clients.get(false, None).map_err(MetricError::Provider)
    }
}

#[async_trait]
impl BuiltinSource for PrometheusBuiltins {
    async fn check(&self, canary: &Canary) -> Result<(), String> {
        // A provider without built-in queries is worth a warning at initialization already.
        let uses_builtins = canary.analysis().metrics.iter().flatten().any(|m| {
            m.template_ref.is_none()
                && matches!(m.name.as_deref(), Some(BUILTIN_SUCCESS_RATE | BUILTIN_DURATION))
        });
        if uses_builtins {
            self.observer_for(canary)?;
        }
        let base = self.base(canary).map_err(|e| e.to_string())?;
        let client = self.client().map_err(|e| e.to_string())?;
        prometheus::is_online(&client, &base, HeaderMap::new(), None)
            .await
            .map_err(|e| {
                format!(
                    "prometheus at {} is not available: {e}",
                    http::origin(base.as_str())
                )
            })
    }

    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult {
        let observer = self.observer_for(canary).map_err(MetricError::Provider)?;
        let query = observer.query(metric, model).map_err(MetricError::Query)?;
        let base = self.base(canary)?;
        tracing::debug!(canary = %canary.key(), query = %query, "built-in metric query");
        let v = prometheus::run(&self.client()?, &base, &query, HeaderMap::new(), None)
            .await
            .map_err(|e| match e {
                MetricError::NoValues(m) if observer.wraps_errors(metric) => {
                    MetricError::NoValues(format!("running query failed: {m}"))
                }
                MetricError::Query(m) if observer.wraps_errors(metric) => {
                    MetricError::Query(format!("running query failed: {m}"))
                }
                e => e,
            })?;
        Ok(v * observer.scale(metric))
    }

    async fn counters(&self, canary: &Canary, model: &MetricModel) -> Result<CounterReading, MetricError> {
        let p = canary
            .spec
            .provider
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.default_provider);
        let base = self.base(canary)?;
        let client = self.client()?;
        let at = jiff::Timestamp::now();
        let secs = at.as_millisecond() as f64 / 1000.0;
        let mut arms = Vec::new();
        for arm in [Arm::Canary, Arm::Primary] {
            let q = arm_queries(p, model, arm).map_err(MetricError::Provider)?;
            let requests = prometheus::run_vector(&client, &base, &q.requests, secs).await?;
            let errors = prometheus::run_vector(&client, &base, &q.errors, secs).await?;
            let buckets = prometheus::run_vector(&client, &base, &q.buckets, secs).await?;
            arms.push(arm_reading(requests, errors, buckets, q.ms_per_unit)?);
        }
        let primary = arms.pop().expect("two arms");
        let canary = arms.pop().expect("two arms");
        Ok(CounterReading { at, canary, primary })
    }

    async fn inline(&self, canary: &Canary, query: &str) -> MetricResult {
        let base = self.base(canary)?;
        prometheus::run(&self.client()?, &base, query, HeaderMap::new(), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aviary_core::fakes::podinfo_model as model;

    #[test]
    fn observers_follow_the_provider() {
        assert_eq!(Observer::for_provider("istio"), Ok(Observer::Istio));
        assert_eq!(Observer::for_provider("knative"), Ok(Observer::Knative));
        assert_eq!(Observer::for_provider("kubernetes"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("gatewayapi:v1"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("gatewayapi:v1beta1"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("istio:service"), Ok(Observer::Istio));
        assert_eq!(Observer::for_provider("kubernetes:service"), Ok(Observer::Istio));
        assert_eq!(Observer::for_provider("linkerd:service"), Ok(Observer::Istio));
        assert_eq!(
            Observer::for_provider("gatewayapi:v1:service"),
            Ok(Observer::Http)
        );
        assert_eq!(
            Observer::for_provider("appmesh:v1beta2:service"),
            Ok(Observer::AppMesh)
        );
        assert_eq!(Observer::for_provider("linkerd"), Ok(Observer::Linkerd));
        assert_eq!(Observer::for_provider("appmesh:v1beta2"), Ok(Observer::AppMesh));
        assert_eq!(Observer::for_provider("smi:v1alpha3"), Ok(Observer::Istio));
        assert_eq!(Observer::for_provider("osm"), Ok(Observer::Osm));
        let e = Observer::for_provider("local").unwrap_err();
        assert!(e.contains("\"local\"") && e.contains("MetricTemplate"), "{e}");
    }

    #[test]
    fn flagger_queries_rendered_and_collapsed() {
        let m = model();
        assert_eq!(
            Observer::Istio.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo" }[1m] ) ) * 100"#
        );
        assert_eq!(
            Observer::Istio.query(BuiltinMetric::Duration, &m).unwrap(),
            r#" histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
        );
        assert_eq!(
            Observer::Knative.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"test/podinfo-00002", envoy_response_code!~"5.*" }[1m] ) ) / sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"test/podinfo-00002", }[1m] ) ) * 100"#
        );
        assert_eq!(
            Observer::Knative.query(BuiltinMetric::Duration, &m).unwrap(),
            r#" histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ envoy_cluster_name=~"test/podinfo-00002", }[1m] ) ) by (le) )"#
        );
        assert_eq!(
            Observer::Http.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="test", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[1m] ) ) / sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="test", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) * 100"#
        );
        assert_eq!(
            Observer::Http.query(BuiltinMetric::Duration, &m).unwrap(),
            r#" histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="test", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) by (le) )"#
        );
        // Flagger's observers, rendered (observers/*_test.go hold the same strings).
        assert_eq!(
            Observer::Nginx.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum(rate(nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary!="",status!~"5.*"}[1m])) / sum(rate(nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary!=""}[1m])) * 100 "#
        );
        assert_eq!(
            Observer::Traefik.query(BuiltinMetric::Duration, &m).unwrap(),
            r#" histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd"}[1m])) by (le)) * 1000 "#
        );
        assert_eq!(
            Observer::Contour.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m])) * 100 "#
        );
        assert_eq!(
            Observer::Kuma.query(BuiltinMetric::Duration, &m).unwrap(),
            r#" histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m])) by (le)) "#
        );
        let mut dashed = m.clone();
        dashed.namespace = "my-ns".into();
        assert_eq!(
            Observer::Skipper
                .query(BuiltinMetric::SuccessRate, &dashed)
                .unwrap(),
            r#" sum(rate(skipper_response_duration_seconds_bucket{route=~"kube(ew)?_my_ns__podinfo_canary__.*__podinfo_canary(_[0-9]+)?",code!~"5..",le="+Inf"}[1m])) / sum(rate(skipper_response_duration_seconds_bucket{route=~"kube(ew)?_my_ns__podinfo_canary__.*__podinfo_canary(_[0-9]+)?",le="+Inf"}[1m])) * 100"#
        );
        assert_eq!(
            Observer::Apisix.query(BuiltinMetric::SuccessRate, &m).unwrap(),
            r#" sum(rate(apisix_http_status{route=~"test_podinfo-00002-podinfo-canary_.+",code!~"5.."}[1m])) / sum(rate(apisix_http_status{route=~"test_podinfo-00002-podinfo-canary_.+"}[1m])) * 100 "#
        );
        assert_eq!(Observer::Http.scale(BuiltinMetric::Duration), 1000.0);
        assert_eq!(Observer::Nginx.scale(BuiltinMetric::Duration), 1.0);
        assert_eq!(Observer::Istio.scale(BuiltinMetric::Duration), 1.0);
    }
}
