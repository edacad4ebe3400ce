//! Providers that read the cluster: `keptn` (KeptnMetric and Analysis resources, Flagger's
//! pkg/metrics/providers/keptn.go) and `externalmetrics` (the Kubernetes external metrics API,
//! externalmetrics.go). Both reach the Kubernetes API through a [`ClusterApi`] the platform
//! plugs in (the agent's own client); `externalmetrics` with `spec.provider.address` talks to
//! that server over HTTP instead.

use std::time::Duration;

use async_trait::async_trait;
use aviary_core::ports::MetricError;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Map, Value, json};

use super::{Call, join_path, send};
use crate::http::body_text;

/// A request the Kubernetes API refused, or could not answer (`status` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    pub status: u16,
    /// The API's `Status.message`, or what went wrong on the way.
    pub message: String,
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The Kubernetes API with the platform's identity (Flagger uses its own rest config).
#[async_trait]
pub trait ClusterApi: Send + Sync {
    /// Sends `method` to `path` (an API path with its query string) with an optional JSON body
    /// and answers the JSON the API returned.
    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClusterError>;
}

fn cluster<'a>(call: &Call<'a>) -> Result<&'a dyn ClusterApi, MetricError> {
    call.cluster.ok_or_else(|| {
        MetricError::Provider(format!(
            "{} reads the Kubernetes API, which this platform does not have; run it with the Kubernetes agent",
            call.kind
        ))
    })
}

// === keptn ===

const KEPTN_GROUP: &str = "metrics.keptn.sh";
const KEPTN_VERSION: &str = "v1beta1";
/// How long an Analysis may take (keptn.go:64).
pub(crate) const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often its status is read (keptn.go:179).
const ANALYSIS_POLL: Duration = Duration::from_secs(1);

/// A parsed Keptn query: `<keptnmetric|analysis>/<namespace>/<name>[/<duration>[/<k=v;…>]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeptnQuery {
    Metric {
        namespace: String,
        name: String,
    },
    Analysis {
        namespace: String,
        name: String,
        recent: String,
        args: Map<String, Value>,
    },
}

/// Flagger's `parseQuery` (keptn.go:205-256): the query is lower-cased and trimmed first.
pub(crate) fn parse_keptn_query(query: &str) -> Result<KeptnQuery, MetricError> {
    let lower = query.to_lowercase();
    let q = lower.strip_suffix('\n').unwrap_or(&lower).trim();
    let parts: Vec<&str> = q.split('/').collect();
    if parts.len() < 3 {
        return Err(MetricError::Query(
            "unexpected query format. query must be in the format <keptnmetric|analysis>/<namespace>/<resourceName>/<duration>/<arguments>"
                .into(),
        ));
    }
    let (namespace, name) = (parts[1].to_string(), parts[2].to_string());
    match parts[0] {
        "keptnmetric" | "keptnmetrics" => Ok(KeptnQuery::Metric { namespace, name }),
        "analysis" | "analyses" => {
            let recent = parts.get(3).map_or("1m", |d| *d).to_string();
            let mut args = Map::new();
            if let Some(list) = parts.get(4) {
                for pair in list.split(';') {
                    let kv: Vec<&str> = pair.split('=').collect();
                    if let [k, v] = kv[..] {
                        args.insert(k.to_string(), Value::from(v));
                    }
                }
            }
            Ok(KeptnQuery::Analysis {
                namespace,
                name,
                recent,
                args,
            })
        }
        _ => Err(MetricError::Query(
            "unexpected resource kind provided in the query. must be one of: ['keptnmetric', 'analysis']"
                .into(),
        )),
    }
}

fn keptn_path(namespace: &str, plural: &str) -> String {
    format!("/apis/{KEPTN_GROUP}/{KEPTN_VERSION}/namespaces/{namespace}/{plural}")
}

/// A KeptnMetric's `status.value` (a string), or the result of a new Analysis: 1 when it
/// passed, 0 when it failed (keptn.go:72-203).
pub(crate) async fn keptn(call: &Call<'_>, query: &str) -> Result<f64, MetricError> {
    let api = cluster(call)?;
    match parse_keptn_query(query)? {
        KeptnQuery::Metric { namespace, name } => keptn_metric(api, &namespace, &name).await,
        KeptnQuery::Analysis {
            namespace,
            name,
            recent,
            args,
        } => keptn_analysis(api, &namespace, &name, &recent, args).await,
    }
}

async fn keptn_metric(api: &dyn ClusterApi, ns: &str, name: &str) -> Result<f64, MetricError> {
    let path = format!("{}/{name}", keptn_path(ns, "keptnmetrics"));
    let obj = api
        .request("GET", &path, None)
        .await
        .map_err(|e| MetricError::Query(format!("could not retrieve KeptnMetric {ns}/{name}: {e}")))?;
    let Some(value) = obj["status"]["value"].as_str() else {
        return Err(MetricError::Query(format!(
            "could not retrieve KeptnMetric - no value found in resource {ns}/{name}"
        )));
    };
    value.trim().parse::<f64>().map_err(|e| {
        MetricError::Query(format!(
            "could not parse value of KeptnMetric {ns}/{name} to float: strconv.ParseFloat: parsing {value:?}: {e}"
        ))
    })
}

async fn keptn_analysis(
    api: &dyn ClusterApi,
    ns: &str,
    name: &str,
    recent: &str,
    args: Map<String, Value>,
) -> Result<f64, MetricError> {
    let id = uuid::Uuid::new_v4().to_string();
    let analysis = format!("{name}-{}", &id[..6]);
    let body = json!({
        "apiVersion": format!("{KEPTN_GROUP}/{KEPTN_VERSION}"),
        "kind": "Analysis",
        "metadata": {"name": analysis, "namespace": ns},
        "spec": {
            "analysisDefinition": {"name": name},
            "timeframe": {"recent": recent},
            "args": args,
        },
    });
    let collection = keptn_path(ns, "analyses");
    let created = tokio::time::timeout(ANALYSIS_TIMEOUT, api.request("POST", &collection, Some(body))).await;
    match created {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(MetricError::Query(format!(
                "could not create Keptn Analysis {ns}/{name}: {e}"
            )));
        }
        Err(_) => {
            return Err(MetricError::Query(format!(
                "could not create Keptn Analysis {ns}/{name}: context deadline exceeded"
            )));
        }
    }
    let path = format!("{collection}/{analysis}");
    let outcome = tokio::time::timeout(ANALYSIS_TIMEOUT, await_analysis(api, ns, name, &path)).await;
    // The Analysis is deleted whatever happened (keptn.go:156-169).
    if let Err(e) = api.request("DELETE", &path, None).await {
        tracing::warn!("could not delete Keptn Analysis {analysis:?}: {e}");
    }
    outcome.unwrap_or_else(|_| {
        Err(MetricError::Query(format!(
            "encountered timeout while waiting for Keptn Analysis {ns}/{name} to be finished"
        )))
    })
}

/// Reads the Analysis every second until Keptn marks it `Completed` with a `pass` result.
async fn await_analysis(api: &dyn ClusterApi, ns: &str, name: &str, path: &str) -> Result<f64, MetricError> {
    let status_error = |e: String| {
        MetricError::Query(format!(
            "could not check status of created Keptn Analysis {ns}/{name}: {e}"
        ))
    };
    loop {
        tokio::time::sleep(ANALYSIS_POLL).await;
        let obj = api
            .request("GET", path, None)
            .await
            .map_err(|e| status_error(e.to_string()))?;
        let status = &obj["status"];
        let state = match &status["state"] {
            Value::Null => None,
            Value::String(s) => Some(s.as_str()),
            other => {
                return Err(status_error(format!(
                    ".status.state accessor error: {other} is of the type {}, expected string",
                    json_type(other)
                )));
            }
        };
        if state != Some("Completed") {
            continue;
        }
        match &status["pass"] {
            Value::Null => continue,
            Value::Bool(true) => return Ok(1.0),
            Value::Bool(false) => return Ok(0.0),
            other => {
                return Err(status_error(format!(
                    ".status.pass accessor error: {other} is of the type {}, expected bool",
                    json_type(other)
                )));
            }
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Flagger's Keptn provider is always online (keptn.go:89-92).
pub(crate) fn keptn_online(call: &Call<'_>) -> Result<(), MetricError> {
    cluster(call).map(|_| ())
}

// === externalmetrics ===

const EXTERNAL_METRICS: &str = "/apis/external.metrics.k8s.io/v1beta1";
/// Flagger's client timeout (externalmetrics.go:62).
const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// `[<namespace>/]<metric>[?labelSelector=<selector>]` (externalmetrics.go:110-156): the
/// namespace defaults to `default`; the selector is passed on as written.
pub(crate) fn parse_external_query(query: &str) -> Result<(String, String, Option<String>), MetricError> {
    let malformed = |why: &str| {
        MetricError::Query(format!(
            "error parsing metric query: malformed query string, {why}expected <namespace>/<metricName>?labelSelector=<urlencoded label selectors>, got {query}"
        ))
    };
    let url = url::Url::parse(&format!("dummy:///{query}")).map_err(|_| malformed(""))?;
    let path = url.path().trim_start_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 2 {
        return Err(malformed("too many slashes, "));
    }
    let (namespace, metric) = match parts.as_slice() {
        [ns, m] if !ns.is_empty() => (percent_decode(ns), percent_decode(m)),
        [_, m] | [m] => ("default".to_string(), percent_decode(m)),
        _ => return Err(malformed("")),
    };
    if metric.is_empty() {
        return Err(MetricError::Query(
            "error parsing metric query: metric name cannot be empty".into(),
        ));
    }
    let selector = url
        .query_pairs()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    Ok((namespace, metric, selector))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn external_path(namespace: &str, metric: &str, selector: Option<&str>) -> String {
    let mut path = format!("{EXTERNAL_METRICS}/namespaces/{namespace}/{metric}");
    if let Some(s) = selector {
        path.push_str("?labelSelector=");
        path.push_str(&url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>());
    }
    path
}

/// The first item's `value` (a Kubernetes quantity) of the ExternalMetricValueList; no items
/// are no values (externalmetrics.go:77-96).
pub(crate) async fn external_metrics(call: &Call<'_>, query: &str) -> Result<f64, MetricError> {
    let (ns, metric, selector) = parse_external_query(query)?;
    need_cluster_without_address(call)?;
    let list = external_get(call, &external_path(&ns, &metric, selector.as_deref()))
        .await
        .map_err(|e| MetricError::Query(format!("error querying external metrics API: {e}")))?;
    let Some(item) = list["items"].as_array().and_then(|i| i.first()) else {
        return Err(MetricError::NoValues(
            "no external metrics found: no values found".into(),
        ));
    };
    let value = item["value"].as_str().unwrap_or_default();
    parse_quantity(value).ok_or_else(|| {
        MetricError::Query(format!(
            "error querying external metrics API: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value:?}"
        ))
    })
}

/// Lists `dummy-metric` in kube-system: any error means unavailable (externalmetrics.go:98-108).
pub(crate) async fn external_metrics_online(call: &Call<'_>) -> Result<(), MetricError> {
    need_cluster_without_address(call)?;
    external_get(call, &external_path("kube-system", "dummy-metric", None))
        .await
        .map(|_| ())
        .map_err(|e| MetricError::Query(format!("external metrics service unavailable: {e}")))
}

fn no_address(call: &Call<'_>) -> bool {
    call.provider.address.as_deref().is_none_or(str::is_empty)
}

/// Without an address the platform's Kubernetes API answers: a platform without one cannot.
fn need_cluster_without_address(call: &Call<'_>) -> Result<(), MetricError> {
    if no_address(call) {
        cluster(call)?;
    }
    Ok(())
}

/// GET `path` from `spec.provider.address` (with the Secret's `token` as a bearer token) or,
/// without an address, from the Kubernetes API.
async fn external_get(call: &Call<'_>, path: &str) -> Result<Value, String> {
    if no_address(call) {
        let api = cluster(call).map_err(|e| e.to_string())?;
        return tokio::time::timeout(EXTERNAL_TIMEOUT, api.request("GET", path, None))
            .await
            .map_err(|_| "context deadline exceeded".to_string())?
            .map_err(|e| e.to_string());
    }
    let base = call.address(None).map_err(|e| e.to_string())?;
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let mut url = join_path(&base, p);
    if !q.is_empty() {
        url.set_query(Some(q));
    }
    let mut req = call
        .client
        .get(url.clone())
        .timeout(EXTERNAL_TIMEOUT)
        .headers(call.custom_headers().map_err(|e| e.to_string())?)
        .header(ACCEPT, "application/json");
    if let Some(token) = call.creds.and_then(|c| c.get("token")) {
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the Secret's token is not a valid header value".to_string())?;
        v.set_sensitive(true);
        req = req.header(AUTHORIZATION, v);
    }
    let (status, body) = send(req, "external metrics", &url)
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        // A Kubernetes Status says why; anything else is quoted.
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body_text(&body));
        return Err(message);
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("error decoding the answer: {e}, '{}'", body_text(&body)))
}

/// A Kubernetes quantity (`1500m`, `2Ki`, `1.5e3`, `12`) as a float, like `AsApproximateFloat64`.
pub(crate) fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keptn_queries_parse_like_flaggers() {
        assert_eq!(
            parse_keptn_query("KeptnMetric/Prod/Error-Rate\n").unwrap(),
            KeptnQuery::Metric {
                namespace: "prod".into(),
                name: "error-rate".into()
            }
        );
        let KeptnQuery::Analysis { recent, args, .. } =
            parse_keptn_query("analysis/prod/slo/5m/workload=podinfo;bad;x=1=2;ns=prod").unwrap()
        else {
            panic!("an analysis")
        };
        assert_eq!(recent, "5m");
        assert_eq!(Value::Object(args), json!({"workload": "podinfo", "ns": "prod"}));
        let KeptnQuery::Analysis { recent, .. } = parse_keptn_query("analyses/prod/slo").unwrap() else {
            panic!("an analysis")
        };
        assert_eq!(recent, "1m");
        assert!(
            matches!(parse_keptn_query("keptnmetric/prod"), Err(MetricError::Query(m)) if m.starts_with("unexpected query format"))
        );
        assert!(
            matches!(parse_keptn_query("pods/prod/x"), Err(MetricError::Query(m)) if m.starts_with("unexpected resource kind"))
        );
    }

    #[test]
    fn external_queries_parse_like_flaggers() {
        assert_eq!(
            parse_external_query("queue_depth").unwrap(),
            ("default".into(), "queue_depth".into(), None)
        );
        assert_eq!(
            parse_external_query("/queue_depth").unwrap(),
            ("default".into(), "queue_depth".into(), None)
        );
        assert_eq!(
            parse_external_query("jobs/queue_depth?labelSelector=app%3Dpodinfo%2Cenv%20in%20(prod)").unwrap(),
            (
                "jobs".into(),
                "queue_depth".into(),
                Some("app=podinfo,env in (prod)".into())
            )
        );
        assert!(
            parse_external_query("a/b/c")
                .unwrap_err()
                .to_string()
                .contains("too many slashes")
        );
        assert!(
            parse_external_query("jobs/")
                .unwrap_err()
                .to_string()
                .contains("metric name cannot be empty")
        );
        assert_eq!(
            external_path("jobs", "queue_depth", Some("app=podinfo,env in (prod)")),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/jobs/queue_depth?labelSelector=app%3Dpodinfo%2Cenv+in+%28prod%29"
        );
    }

    #[test]
    fn quantities_are_approximate_floats() {
        for (q, v) in [
            ("12", 12.0),
            ("1500m", 1.5),
            ("2Ki", 2048.0),
            ("1.5e3", 1500.0),
            ("3M", 3e6),
            ("-250m", -0.25),
        ] {
            assert_eq!(parse_quantity(q), Some(v), "{q}");
        }
        assert_eq!(parse_quantity("12x"), None);
        assert_eq!(parse_quantity(""), None);
    }
}
