//! Prometheus' instant-query API, for `prometheus` MetricTemplates and the built-in metrics.
//!
//! GET `{address}/api/v1/query?query=<whitespace-collapsed query>` (the path is appended to the
//! address' path), 5 s timeout, `spec.provider.headers` added, then authentication from the
//! Secret: `token` as `Authorization: Bearer`, else `username` and `password` (both required) as
//! basic auth. The value is `data.result[*].value[1]` of a vector, the **last** series winning as
//! in Flagger; a scalar is its value; a matrix is "query returned multiple values"; no series or
//! NaN is "no values found"; a status ≥ 400 is `error response: <body>`. The online check runs
//! `vector(1)` and expects 1.

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_core::ports::MetricError;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{Call, join_path, multiple_values, no_values, send};

/// The series of an instant vector: labels (without `__name__`) and value.
pub type Series = Vec<(BTreeMap<String, String>, f64)>;

/// Timeout of one Prometheus query.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How to authenticate.
#[derive(Clone)]
pub(crate) enum Auth {
    Bearer(String),
    Basic(String, String),
}

/// Replaces every run of whitespace (Go's `\s`: space, tab, newline, form feed, carriage return)
/// by one space, as Flagger's `trimQuery` does before sending a query; like it, the ends are not
/// trimmed (a built-in query starts with a space, a YAML block query ends with one).
pub fn collapse(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut in_space = false;
    for c in query.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r') {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// A `prometheus` MetricTemplate query.
pub(crate) async fn query(call: &Call<'_>, q: &str) -> Result<f64, MetricError> {
    let base = call.address(None)?;
    let auth = auth(call)?;
    run(&call.client, &base, q, call.custom_headers()?, auth.as_ref()).await
}

/// The online check of a `prometheus` MetricTemplate.
pub(crate) async fn online(call: &Call<'_>) -> Result<(), MetricError> {
    let base = call.address(None)?;
    let auth = auth(call)?;
    is_online(&call.client, &base, call.custom_headers()?, auth.as_ref()).await
}

fn auth(call: &Call<'_>) -> Result<Option<Auth>, MetricError> {
    let Some(creds) = call.creds else {
        return Ok(None);
    };
    if let Some(token) = creds.get("token") {
        return Ok(Some(Auth::Bearer(token)));
    }
    match (creds.get("username"), creds.get("password")) {
        (Some(u), Some(p)) => Ok(Some(Auth::Basic(u, p))),
        _ => Err(MetricError::Provider(format!(
            "prometheus credentials: secret {}/{} contains neither `token` nor both `username` and `password`; \
             add them or remove spec.provider.secretRef",
            creds.namespace, creds.secret
        ))),
    }
}

/// Runs `vector(1)`: online when it answers 1.
pub(crate) async fn is_online(
    client: &reqwest::Client,
    base: &Url,
    headers: HeaderMap,
    auth: Option<&Auth>,
) -> Result<(), MetricError> {
    let v = run(client, base, "vector(1)", headers, auth).await?;
    if v == 1.0 {
        Ok(())
    } else {
        Err(MetricError::Query(format!("vector(1) returned {v}, expected 1")))
    }
}

/// Runs one instant query.
pub(crate) async fn run(
    client: &reqwest::Client,
    base: &Url,
    q: &str,
    headers: HeaderMap,
    auth: Option<&Auth>,
) -> Result<f64, MetricError> {
    let body = fetch(client, base, q, None, headers, auth).await?;
    parse(&body)
}

/// Runs one instant query at evaluation time `at` (Unix seconds) and returns every series:
/// its labels (without `__name__`) and value.
pub(crate) async fn run_vector(
    client: &reqwest::Client,
    base: &Url,
    q: &str,
    at: f64,
) -> Result<Series, MetricError> {
    let body = fetch(client, base, q, Some(at), HeaderMap::new(), None).await?;
    parse_vector(&body)
}

/// GET `/api/v1/query`: the answer's body, or the error.
async fn fetch(
    client: &reqwest::Client,
    base: &Url,
    q: &str,
    at: Option<f64>,
    headers: HeaderMap,
    auth: Option<&Auth>,
) -> Result<Vec<u8>, MetricError> {
    let mut url = join_path(base, "/api/v1/query");
    url.query_pairs_mut().append_pair("query", &collapse(q));
    if let Some(at) = at {
        url.query_pairs_mut().append_pair("time", &format!("{at:.3}"));
    }
    // Credentials in the address (http://user:pass@host) become basic auth, never part of a
    // message.
    let mut userinfo = None;
    if !url.username().is_empty() {
        userinfo = Some(Auth::Basic(
            url.username().to_string(),
            url.password().unwrap_or_default().to_string(),
        ));
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let mut redactor = crate::http::Redactor::new();
    if let Some(Auth::Basic(u, p)) = &userinfo {
        redactor.basic(u, Some(p));
    }
    let mut req = client.get(url.clone()).timeout(TIMEOUT).headers(headers);
    match auth.or(userinfo.as_ref()) {
        Some(Auth::Bearer(t)) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                MetricError::Provider("prometheus credentials: the token is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        Some(Auth::Basic(u, p)) => req = req.basic_auth(u, Some(p)),
        None => {}
    }
    let answer = async {
        let (status, body) = send(req, "prometheus", &url).await?;
        if status.as_u16() >= 400 {
            // Flagger: "error response: Status %d %s: %s" with Go's status text.
            return Err(MetricError::Query(format!(
                "error response: Status {} {}: {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default(),
                crate::http::body_text(&body)
            )));
        }
        Ok(body.to_vec())
    };
    answer.await.map_err(|e| super::redact_error(e, &redactor))
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType", default)]
    result_type: String,
    #[serde(default)]
    result: Value,
}

/// Flagger's value extraction from a `/api/v1/query` answer.
pub(crate) fn parse(body: &[u8]) -> Result<f64, MetricError> {
    let resp: Response = serde_json::from_slice(body).map_err(|e| super::unmarshal_error(e, body))?;
    if let Some(err) = resp.error {
        return Err(MetricError::Query(format!("error response: {err}")));
    }
    let data = resp.data.ok_or_else(no_values)?;
    let value = match data.result_type.as_str() {
        "matrix" => return Err(multiple_values()),
        "scalar" => Some(sample_value(&data.result)?),
        "string" => {
            return Err(MetricError::Query("query returned a string, not a number".into()));
        }
        _ => {
            let mut last = None;
            for series in data.result.as_array().into_iter().flatten() {
                if series.get("values").is_some() {
                    return Err(multiple_values());
                }
                if let Some(v) = series.get("value") {
                    last = Some(sample_value(v)?);
                }
            }
            last
        }
    };
    match value {
        Some(v) if !v.is_nan() => Ok(v),
        _ => Err(no_values()),
    }
}

/// Every series of an instant-vector answer: labels without `__name__`, and the value (`NaN`
/// samples dropped).
pub(crate) fn parse_vector(body: &[u8]) -> Result<Series, MetricError> {
    let resp: Response = serde_json::from_slice(body).map_err(|e| super::unmarshal_error(e, body))?;
    if let Some(err) = resp.error {
        return Err(MetricError::Query(format!("error response: {err}")));
    }
    let Some(data) = resp.data else {
        return Ok(Vec::new());
    };
    if data.result_type != "vector" {
        return Err(MetricError::Query(format!(
            "expected an instant vector of counters, got a {}",
            data.result_type
        )));
    }
    let mut out = Vec::new();
    for series in data.result.as_array().into_iter().flatten() {
        let labels: BTreeMap<String, String> = series
            .get("metric")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        if let Some(v) = series.get("value") {
            let v = sample_value(v)?;
            if !v.is_nan() {
                out.push((labels, v));
            }
        }
    }
    Ok(out)
}

/// `[<timestamp>, "<value>"]` → the value.
fn sample_value(sample: &Value) -> Result<f64, MetricError> {
    let text = sample
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| MetricError::Query(format!("unexpected sample {sample}")))?;
    text.parse::<f64>()
        .map_err(|_| MetricError::Query(format!("sample value {text:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> Vec<u8> {
        let result: Vec<Value> = values
            .iter()
            .map(|v| serde_json::json!({"metric": {}, "value": [1700000000.1, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn vectors_keep_every_series_and_its_labels() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x_total","pod":"a"},"value":[1,"12"]},
            {"metric":{"pod":"b"},"value":[1,"NaN"]}]}}"#;
        let v = parse_vector(body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0.get("pod").map(String::as_str), Some("a"));
        assert!(!v[0].0.contains_key("__name__"));
        assert_eq!(v[0].1, 12.0);
        let matrix = br#"{"data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_vector(matrix).is_err());
    }

    #[test]
    fn the_last_series_wins() {
        assert_eq!(parse(&vector(&["1.5", "99.25"])).unwrap(), 99.25);
        assert_eq!(parse(&vector(&["+Inf"])).unwrap(), f64::INFINITY);
    }

    #[test]
    fn empty_and_nan_are_no_values() {
        assert_eq!(parse(&vector(&[])).unwrap_err(), no_values());
        assert_eq!(parse(&vector(&["NaN"])).unwrap_err(), no_values());
        assert_eq!(no_values().to_string(), "no values found");
    }

    #[test]
    fn matrices_scalars_and_garbage() {
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        assert_eq!(
            parse(m).unwrap_err().to_string(),
            "query returned multiple values"
        );
        let s = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
        assert_eq!(parse(s).unwrap(), 2.5);
        let e = parse(b"<html>").unwrap_err();
        assert!(e.to_string().starts_with("error unmarshaling result:"), "{e}");
        let e = parse(&vector(&["abc"])).unwrap_err();
        assert!(matches!(e, MetricError::Query(_)), "{e:?}");
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(
            collapse("sum(\n    rate(x[1m])\n)\n/ 2"),
            "sum( rate(x[1m]) ) / 2"
        );
        // Like Go's regexp.ReplaceAllString(`\s+`, " "): the ends are kept, as one space.
        assert_eq!(collapse("\n\tsum(x)\n"), " sum(x) ");
        assert_eq!(collapse("a\u{a0}b"), "a\u{a0}b");
    }
}
