//! The engine's `Metrics` port over HTTP metric backends.
//!
//! [`ProviderMetrics`] looks MetricTemplates up through a [`TemplateSource`], reads the
//! provider's credentials through a [`SecretSource`] (from the **template's** namespace, as
//! Flagger does), and runs the rendered query on the provider named by `spec.provider.type`:
//!
//! | type | module | request |
//! |---|---|---|
//! | `prometheus` | [`prometheus`] | GET `/api/v1/query` |
//! | `datadog`, `newrelic`, `graphite`, `influxdb`, `dynatrace` | `vendors` | see each function |
//! | `cloudwatch` | [`cloudwatch`] | GetMetricData (AWS JSON 1.0, SigV4) |
//! | `stackdriver` | [`stackdriver`] | Cloud Monitoring `timeSeries:query` (REST, service-account JWT) |
//! | `splunk` | [`splunk`] | SignalFlow `execute` over a WebSocket |
//! | `keptn`, `externalmetrics` | [`cluster`] | the Kubernetes API (a [`ClusterApi`]), or an external metrics server |
//!
//! Built-in metrics (`request-success-rate`, `request-duration`) and deprecated inline queries
//! come from a [`BuiltinSource`] (a port of aviary-core): [`PrometheusBuiltins`] runs Flagger's PromQL against the
//! canary's `spec.metricsServer` or the agent's default; the local platform plugs in its router
//! statistics instead.
//!
//! The statistical judge's raw counters come from the same Prometheus ([`counters`]).
//!
//! Errors: "no values found" is [`MetricError::NoValues`]; an unreadable Secret is
//! [`MetricError::Secret`]; a template that cannot be used as written (missing address, missing
//! credential key, unparsable interval) is [`MetricError::Provider`]; everything that went wrong on
//! the wire is [`MetricError::Query`]. Secret values are removed from every error text.

mod builtin;
pub mod cloudwatch;
pub mod cluster;
pub mod counters;
pub mod prometheus;
pub mod splunk;
pub mod stackdriver;
mod vendors;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::MetricTemplate;
use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE};
use aviary_api::duration::parse_go_duration;
use aviary_api::metric_template::MetricProvider;
use aviary_core::judge::CounterReading;
use aviary_core::ports::{
    BuiltinMetric, BuiltinSource, MetricError, MetricModel, MetricResult, Metrics, SecretSource,
    TemplateQuery,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

pub use builtin::{Observer, PrometheusBuiltins};
pub use cloudwatch::AwsCredentials;
pub use cluster::{ClusterApi, ClusterError};
pub use stackdriver::GoogleEnv;

use crate::error::Result;
use crate::http::{self, Clients};
use crate::secrets::SecretData;
use crate::sources::TemplateSource;

/// The MetricTemplate provider types aviary runs.
pub const SUPPORTED_TYPES: &[&str] = &[
    "prometheus",
    "datadog",
    "newrelic",
    "graphite",
    "influxdb",
    "dynatrace",
    "cloudwatch",
    "stackdriver",
    "splunk",
    "keptn",
    "externalmetrics",
];

/// The `Metrics` port: MetricTemplates on their providers, built-ins from a [`BuiltinSource`].
pub struct ProviderMetrics {
    templates: Arc<dyn TemplateSource>,
    secrets: Arc<dyn SecretSource>,
    builtins: Arc<dyn BuiltinSource>,
    clients: Clients,
    aws_env: Option<AwsCredentials>,
    google_env: GoogleEnv,
    cluster: Option<Arc<dyn ClusterApi>>,
}

impl std::fmt::Debug for ProviderMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderMetrics").finish_non_exhaustive()
    }
}

impl ProviderMetrics {
    /// Builds the port. AWS credentials for `cloudwatch` templates without a `secretRef` are read
    /// from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` now; Google's
    /// application default credentials for `stackdriver` from `GOOGLE_APPLICATION_CREDENTIALS`
    /// and `GCE_METADATA_HOST` (see [`GoogleEnv::from_env`]).
    pub fn new(
        templates: Arc<dyn TemplateSource>,
        secrets: Arc<dyn SecretSource>,
        builtins: Arc<dyn BuiltinSource>,
    ) -> Result<Self> {
        Ok(Self {
            templates,
            secrets,
            builtins,
            clients: Clients::new()?,
            aws_env: AwsCredentials::from_env(),
            google_env: GoogleEnv::from_env(),
            cluster: None,
        })
    }

    /// Replaces Google's application default credentials taken from the environment.
    pub fn with_google_env(mut self, env: GoogleEnv) -> Self {
        self.google_env = env;
        self
    }

    /// The Kubernetes API `keptn` and `externalmetrics` (without an address) query.
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterApi>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Replaces the AWS credentials taken from the environment (tests, or explicit agent flags).
    pub fn with_aws_env_credentials(mut self, creds: Option<AwsCredentials>) -> Self {
        self.aws_env = creds;
        self
    }

    async fn credentials(
        &self,
        template: &MetricTemplate,
        provider: &MetricProvider,
    ) -> Result<Option<Credentials>, MetricError> {
        let Some(name) = provider
            .secret_ref
            .as_ref()
            .and_then(|s| s.name.clone())
            .filter(|n| !n.is_empty())
        else {
            return Ok(None);
        };
        let namespace = template
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        match self.secrets.secret(&namespace, &name).await {
            Ok(data) => Ok(Some(Credentials {
                secret: name,
                namespace,
                data,
            })),
            Err(message) => Err(MetricError::Secret {
                secret: name,
                message,
            }),
        }
    }

    /// Runs `query` (or the online check when `query` is `None`) on the template's provider.
    async fn run(&self, template: &MetricTemplate, interval: &str, query: Option<&str>) -> MetricResult {
        let provider = template.spec.provider.clone().unwrap_or_default();
        let creds = self.credentials(template, &provider).await?;
        let kind = template.provider_type().to_string();
        let call = Call {
            client: self
                .clients
                .get(provider.insecure_skip_verify.unwrap_or(false), None)
                .map_err(MetricError::Provider)?,
            provider: &provider,
            creds: creds.as_ref(),
            kind: &kind,
            aws_env: self.aws_env.as_ref(),
            google_env: &self.google_env,
            cluster: self.cluster.as_deref(),
        };
        tracing::debug!(
            template = %template.key(),
            provider = %kind,
            address = %http::origin(provider.address.as_deref().unwrap_or("")),
            "metric query"
        );
        let result = match (kind.as_str(), query) {
            ("prometheus", Some(q)) => prometheus::query(&call, q).await,
            ("prometheus", None) => prometheus::online(&call).await.map(|()| 1.0),
            ("datadog", Some(q)) => vendors::datadog(&call, interval, q).await,
            ("datadog", None) => vendors::datadog_online(&call).await.map(|()| 1.0),
            ("newrelic", Some(q)) => vendors::newrelic(&call, interval, q).await,
            ("newrelic", None) => vendors::newrelic_online(&call).await.map(|()| 1.0),
            ("graphite", Some(q)) => vendors::graphite(&call, q).await,
            ("graphite", None) => vendors::graphite_online(&call).await.map(|()| 1.0),
            ("influxdb", Some(q)) => vendors::influxdb(&call, q).await,
            ("influxdb", None) => vendors::influxdb_online(&call).await.map(|()| 1.0),
            ("dynatrace", Some(q)) => vendors::dynatrace(&call, interval, q).await,
            ("dynatrace", None) => vendors::dynatrace_online(&call).await.map(|()| 1.0),
            ("cloudwatch", Some(q)) => cloudwatch::query(&call, interval, q).await,
            ("cloudwatch", None) => cloudwatch::online(&call).await.map(|()| 1.0),
            ("stackdriver", Some(q)) => stackdriver::query(&call, q).await,
            ("stackdriver", None) => stackdriver::online(&call).await.map(|()| 1.0),
            ("splunk", Some(q)) => splunk::query(&call, interval, q).await,
            ("splunk", None) => splunk::online(&call, interval).await.map(|()| 1.0),
            ("keptn", Some(q)) => cluster::keptn(&call, q).await,
            ("keptn", None) => cluster::keptn_online(&call).map(|()| 1.0),
            ("externalmetrics", Some(q)) => cluster::external_metrics(&call, q).await,
            ("externalmetrics", None) => cluster::external_metrics_online(&call).await.map(|()| 1.0),
            (other, _) => Err(MetricError::Provider(format!(
                "provider type {other:?} (MetricTemplate {} spec.provider.type) is not supported by aviary; \
                 use one of {}",
                template.key(),
                SUPPORTED_TYPES.join(", ")
            ))),
        };
        result.map_err(|e| redact_error(e, &self.redactor(&provider, creds.as_ref(), &kind)))
    }

    /// Every credential a call to `provider` may have sent: the Secret's values (and its
    /// `username`/`password` as basic auth), `spec.provider.headers` values, the address' user,
    /// password and query, and for `cloudwatch` without a Secret the agent's AWS credentials.
    fn redactor(&self, provider: &MetricProvider, creds: Option<&Credentials>, kind: &str) -> http::Redactor {
        let mut r = http::Redactor::new();
        if let Some(c) = creds {
            for v in c.values() {
                r.header_value(&v);
            }
            if let Some(user) = c.get("username") {
                r.basic(&user, c.get("password").as_deref());
            }
        }
        for values in provider.headers.iter().flat_map(|h| h.values()) {
            for v in values {
                r.header_value(v);
            }
        }
        if let Some(address) = provider.address.as_deref() {
            r.url_credentials(address);
        }
        if kind == "cloudwatch"
            && creds.is_none()
            && let Some(aws) = &self.aws_env
        {
            r.secret(&aws.access_key_id).secret(&aws.secret_access_key);
            if let Some(t) = &aws.session_token {
                r.secret(t);
            }
        }
        r
    }
}

#[async_trait]
impl Metrics for ProviderMetrics {
    /// As Flagger's `checkMetricProviderAvailability`: in list order, each built-in metric
    /// probes its Prometheus (`vector(1)`) and each template metric its provider, once per
    /// metric; the first failure is the answer. Inline queries are not probed.
    async fn check_providers(&self, canary: &Canary) -> Result<(), String> {
        for m in canary.analysis().metrics.iter().flatten() {
            if matches!(m.name.as_deref(), Some(BUILTIN_SUCCESS_RATE | BUILTIN_DURATION)) {
                self.builtins.check(canary).await?;
                continue;
            }
            let Some(r) = &m.template_ref else { continue };
            let name = r.name.clone().unwrap_or_default();
            let ns = r.namespace_or(canary.namespace());
            let template = self
                .templates
                .metric_template(&ns, &name)
                .await
                .map_err(|e| format!("Metric template {name}.{ns} error: {e}"))?;
            if let Err(e) = self.run(&template, "", None).await {
                let kind = template.provider_type();
                return Err(match e {
                    MetricError::Secret { secret, message } => {
                        format!("Metric template {name}.{ns} secret {secret} error: {message}")
                    }
                    e => format!("{kind} in metric template {name}.{ns} is not available: {e}"),
                });
            }
        }
        Ok(())
    }

    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult {
        self.builtins.builtin(canary, metric, model).await
    }

    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.templates.metric_template(namespace, name).await
    }

    async fn query(&self, q: TemplateQuery<'_>) -> MetricResult {
        self.run(q.template, q.interval, Some(q.query)).await
    }

    async fn inline(&self, canary: &Canary, _metric: &str, query: &str) -> MetricResult {
        self.builtins.inline(canary, query).await
    }
    async fn counters(&self, canary: &Canary, model: &MetricModel) -> Result<CounterReading, MetricError> {
        self.builtins.counters(canary, model).await
    }
}

// === shared by the providers ===

/// A provider's credentials Secret, read from the template's namespace.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) secret: String,
    pub(crate) namespace: String,
    data: SecretData,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret", &self.secret)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// A key's value as text (absent or empty → `None`).
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.data
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !v.is_empty())
    }

    /// A key the provider cannot work without.
    pub(crate) fn require(&self, key: &str, provider: &str) -> Result<String, MetricError> {
        self.get(key).ok_or_else(|| {
            MetricError::Provider(format!(
                "{provider} credentials: secret {}/{} has no key `{key}`; add it to the Secret",
                self.namespace, self.secret
            ))
        })
    }

    fn values(&self) -> Vec<String> {
        self.data
            .values()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// What one provider call needs.
pub(crate) struct Call<'a> {
    pub(crate) client: reqwest::Client,
    pub(crate) provider: &'a MetricProvider,
    pub(crate) creds: Option<&'a Credentials>,
    /// The provider type, for messages.
    pub(crate) kind: &'a str,
    pub(crate) aws_env: Option<&'a AwsCredentials>,
    pub(crate) google_env: &'a GoogleEnv,
    pub(crate) cluster: Option<&'a dyn ClusterApi>,
}

impl Call<'_> {
    /// The credentials, or an error saying that the provider needs a `secretRef` with `keys`.
    pub(crate) fn require_creds(&self, keys: &str) -> Result<&Credentials, MetricError> {
        self.creds.ok_or_else(|| {
            MetricError::Provider(format!(
                "{} needs credentials: set spec.provider.secretRef to a Secret with {keys}",
                self.kind
            ))
        })
    }

    /// `spec.provider.address`, or `default` when unset.
    pub(crate) fn address(&self, default: Option<&str>) -> Result<Url, MetricError> {
        let addr = self
            .provider
            .address
            .as_deref()
            .filter(|a| !a.is_empty())
            .or(default)
            .ok_or_else(|| {
                MetricError::Provider(format!(
                    "spec.provider.address is required for {}: set it to the API's base URL",
                    self.kind
                ))
            })?;
        parse_base_url(addr)
    }

    /// `spec.provider.headers` as a header map (the template itself is never changed).
    pub(crate) fn custom_headers(&self) -> Result<HeaderMap, MetricError> {
        headers_of(self.provider)
    }
}

/// A base URL: http or https.
pub(crate) fn parse_base_url(addr: &str) -> Result<Url, MetricError> {
    let url = Url::parse(addr).map_err(|e| {
        MetricError::Provider(format!(
            "spec.provider.address {:?} is not a URL: {e}",
            http::origin(addr)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(MetricError::Provider(format!(
            "spec.provider.address must be an http or https URL, not {}",
            url.scheme()
        )));
    }
    Ok(url)
}

/// `base` with `path` appended to its path (Go's `path.Join(u.Path, path)`).
pub(crate) fn join_path(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    u.set_path(&joined);
    u.set_query(None);
    u
}

pub(crate) fn headers_of(provider: &MetricProvider) -> Result<HeaderMap, MetricError> {
    let mut map = HeaderMap::new();
    for (name, values) in provider.headers.iter().flatten() {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            MetricError::Provider(format!(
                "spec.provider.headers: {name:?} is not a valid header name"
            ))
        })?;
        for v in values {
            let v = HeaderValue::from_str(v).map_err(|_| {
                MetricError::Provider(format!(
                    "spec.provider.headers.{name}: the value is not a valid header value"
                ))
            })?;
            map.append(n.clone(), v);
        }
    }
    Ok(map)
}

/// Flagger's error for an answer that is not the JSON expected, with the body quoted.
pub(crate) fn unmarshal_error(e: serde_json::Error, body: &[u8]) -> MetricError {
    MetricError::Query(format!(
        "error unmarshaling result: {e}, '{}'",
        http::body_text(body)
    ))
}

/// Sends a request; transport failures become [`MetricError::Query`] naming the endpoint.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
    url: &Url,
) -> Result<(reqwest::StatusCode, bytes::Bytes), MetricError> {
    let resp = req.send().await.map_err(|e| {
        MetricError::Query(format!(
            "{what} request to {}{} failed: {}",
            http::origin(url.as_str()),
            url.path(),
            http::error_text(&e)
        ))
    })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| {
        MetricError::Query(format!(
            "{what} response from {} could not be read: {}",
            http::origin(url.as_str()),
            http::error_text(&e)
        ))
    })?;
    Ok((status, body))
}

/// The metric interval (`metrics[].interval`) as a duration.
pub(crate) fn parse_interval(interval: &str) -> Result<Duration, MetricError> {
    parse_go_duration(interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            MetricError::Provider(format!(
                "error parsing metric interval {interval:?}: set metrics[].interval to a duration such as 1m"
            ))
        })
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Flagger's text for "the query found nothing".
pub(crate) fn no_values() -> MetricError {
    MetricError::NoValues("no values found".into())
}

/// Flagger's text for an answer with several series where one was expected.
pub(crate) fn multiple_values() -> MetricError {
    MetricError::Query("query returned multiple values".into())
}

/// The error without the call's credentials, bounded to [`http::MAX_ERROR`] bytes.
pub(crate) fn redact_error(e: MetricError, redactor: &http::Redactor) -> MetricError {
    let r = |s: String| http::bounded(&redactor.redact(&s), http::MAX_ERROR);
    match e {
        MetricError::NoValues(m) => MetricError::NoValues(r(m)),
        MetricError::Provider(m) => MetricError::Provider(r(m)),
        MetricError::Query(m) => MetricError::Query(r(m)),
        MetricError::Secret { secret, message } => MetricError::Secret {
            secret,
            message: r(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_go() {
        let base = Url::parse("http://prom:9090").unwrap();
        assert_eq!(
            join_path(&base, "/api/v1/query").as_str(),
            "http://prom:9090/api/v1/query"
        );
        let base = Url::parse("https://gw.example/prometheus/?x=1").unwrap();
        assert_eq!(
            join_path(&base, "/api/v1/query").as_str(),
            "https://gw.example/prometheus/api/v1/query"
        );
    }

    #[test]
    fn intervals_must_be_durations() {
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_interval("1m30s").unwrap(), Duration::from_secs(90));
        for bad in ["", "0", "soon"] {
            let e = parse_interval(bad).unwrap_err();
            assert!(matches!(e, MetricError::Provider(ref m) if m.contains("error parsing metric interval")));
        }
    }

    #[test]
    fn redaction_covers_every_error_kind() {
        let mut secrets = http::Redactor::new();
        secrets.secret("tok-123456");
        let e = redact_error(
            MetricError::Query("error response: bad tok-123456".into()),
            &secrets,
        );
        assert_eq!(e, MetricError::Query("error response: bad [redacted]".into()));
        let e = redact_error(
            MetricError::Secret {
                secret: "s".into(),
                message: "tok-123456".into(),
            },
            &secrets,
        );
        assert_eq!(e.to_string(), "[redacted]");
        let e = redact_error(MetricError::NoValues("y".repeat(10_000)), &secrets);
        assert!(e.to_string().ends_with("… [truncated, 10000 bytes]"), "{e}");
    }
}
