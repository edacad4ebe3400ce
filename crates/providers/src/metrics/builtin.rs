//! Built-in metrics as Flagger's PromQL ("observers").
//!
//! The observer follows the canary's provider (`spec.provider`, else the agent's default):
//! `istio` → Istio telemetry; `knative` → Envoy (Kourier) cluster stats by revision;
//! `kubernetes` and every `gatewayapi*` → the HTTP observer (the application's own
//! `http_request_duration_seconds` histogram, scraped with Kubernetes pod labels). Other providers
//! have no built-in queries in aviary: their canaries use MetricTemplates.
//!
//! For Knative the `route` of the model must be the Knative Service's
//! `status.latestCreatedRevisionName`; the caller supplies it in the [`MetricModel`].

use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE};
use aviary_core::ports::{BuiltinMetric, BuiltinSource, MetricError, MetricModel, MetricResult};
use reqwest::header::HeaderMap;
use url::Url;

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
}

impl Observer {
    /// The observer for a provider name (`istio`, `knative`, `kubernetes`, `gatewayapi:v1`, …).
    pub fn for_provider(provider: &str) -> Result<Self, String> {
        let p = provider.strip_suffix(":service").unwrap_or(provider);
        match p {
            "istio" => Ok(Self::Istio),
            "knative" => Ok(Self::Knative),
            "kubernetes" => Ok(Self::Http),
            p if p.starts_with("gatewayapi") => Ok(Self::Http),
            p => Err(format!(
                "built-in metrics (request-success-rate, request-duration) are not available for provider {p:?}: \
                 aviary has Flagger's queries for istio, knative, gatewayapi and kubernetes; use a MetricTemplate"
            )),
        }
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
        }
    }

    /// The query to send: rendered with the model and whitespace-collapsed.
    pub fn query(self, metric: BuiltinMetric, model: &MetricModel) -> Result<String, String> {
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

    async fn inline(&self, canary: &Canary, query: &str) -> MetricResult {
        let base = self.base(canary)?;
        prometheus::run(&self.client()?, &base, query, HeaderMap::new(), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MetricModel {
        MetricModel {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo-00002".into(),
            interval: "1m".into(),
            variables: Default::default(),
        }
    }

    #[test]
    fn observers_follow_the_provider() {
        assert_eq!(Observer::for_provider("istio"), Ok(Observer::Istio));
        assert_eq!(Observer::for_provider("knative"), Ok(Observer::Knative));
        assert_eq!(Observer::for_provider("kubernetes"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("gatewayapi:v1"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("gatewayapi:v1beta1"), Ok(Observer::Http));
        assert_eq!(Observer::for_provider("istio:service"), Ok(Observer::Istio));
        let e = Observer::for_provider("linkerd").unwrap_err();
        assert!(e.contains("\"linkerd\"") && e.contains("MetricTemplate"), "{e}");
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
        assert_eq!(Observer::Http.scale(BuiltinMetric::Duration), 1000.0);
        assert_eq!(Observer::Istio.scale(BuiltinMetric::Duration), 1.0);
    }
}
