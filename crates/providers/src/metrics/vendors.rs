//! Vendor metric APIs: Datadog, New Relic, Graphite, InfluxDB and Dynatrace. Each function says
//! its request, authentication and value extraction; `spec.provider.headers` are added to every
//! request before the provider's own authentication headers. "No values" is what the API answers
//! when the query matched nothing; any other unusable answer is an error.

use std::time::Duration;

use aviary_core::ports::MetricError;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::{Call, join_path, multiple_values, no_values, now_unix, parse_interval, send, unmarshal_error};
use crate::http::body_text;

/// Timeout of one request to Datadog, New Relic, Graphite or Dynatrace.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one InfluxDB query (Flux queries are often slower).
pub(crate) const INFLUX_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) const DATADOG_ADDRESS: &str = "https://api.datadoghq.com";
pub(crate) const NEWRELIC_ADDRESS: &str = "https://insights-api.newrelic.com";

fn sensitive(value: &str, what: &str) -> Result<HeaderValue, MetricError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| MetricError::Provider(format!("{what} is not a valid header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

fn error_response(body: &[u8]) -> MetricError {
    MetricError::Query(format!("error response: {}", body_text(body)))
}

/// A GET of `url` as every vendor API here takes it: 5 s timeout, the custom headers, JSON.
fn get_json(call: &Call<'_>, url: &url::Url) -> Result<reqwest::RequestBuilder, MetricError> {
    Ok(call
        .client
        .get(url.clone())
        .timeout(TIMEOUT)
        .headers(call.custom_headers()?)
        .header(ACCEPT, "application/json"))
}

/// Sends `req`; an answer other than 200 is the API's error, its body quoted.
async fn send_ok(
    req: reqwest::RequestBuilder,
    what: &str,
    url: &url::Url,
) -> Result<bytes::Bytes, MetricError> {
    let (status, body) = send(req, what, url).await?;
    if status != 200 {
        return Err(error_response(&body));
    }
    Ok(body)
}

// === Datadog ===

fn datadog_keys(call: &Call<'_>) -> Result<(HeaderValue, HeaderValue), MetricError> {
    let creds = call.require_creds("datadog_api_key and datadog_application_key")?;
    let api = creds.require("datadog_api_key", "datadog")?;
    let app = creds.require("datadog_application_key", "datadog")?;
    Ok((
        sensitive(&api, "datadog_api_key")?,
        sensitive(&app, "datadog_application_key")?,
    ))
}

/// GET `{address or https://api.datadoghq.com}/api/v1/query?query=&from=&to=` over the last
/// 10 × interval (Unix seconds), with `DD-API-KEY` and `DD-APPLICATION-KEY`. The value is the
/// first point of the first series (the oldest, complete one); no series, no points or a null
/// point are no values.
pub(crate) async fn datadog(call: &Call<'_>, interval: &str, query: &str) -> Result<f64, MetricError> {
    let window = parse_interval(interval)? * 10;
    let (api, app) = datadog_keys(call)?;
    let to = now_unix().as_secs();
    let from = to.saturating_sub(window.as_secs());
    let mut url = join_path(&call.address(Some(DATADOG_ADDRESS))?, "/api/v1/query");
    url.query_pairs_mut()
        .append_pair("query", query)
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string());
    let req = get_json(call, &url)?
        .header("DD-API-KEY", api)
        .header("DD-APPLICATION-KEY", app);
    let body = send_ok(req, "datadog", &url).await?;
    #[derive(Deserialize)]
    struct Resp {
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        series: Vec<Series>,
    }
    #[derive(Deserialize)]
    struct Series {
        #[serde(default)]
        pointlist: Vec<Vec<Option<f64>>>,
    }
    let resp: Resp = serde_json::from_slice(&body).map_err(|e| unmarshal_error(e, &body))?;
    if resp.status.as_deref() == Some("error") {
        return Err(MetricError::Query(format!(
            "error response: {}",
            resp.error.unwrap_or_default()
        )));
    }
    resp.series
        .first()
        .and_then(|s| s.pointlist.first())
        .and_then(|p| p.get(1).copied().flatten())
        .ok_or_else(no_values)
}

/// GET `/api/v1/validate` with the keys: online when it answers 200.
pub(crate) async fn datadog_online(call: &Call<'_>) -> Result<(), MetricError> {
    let (api, app) = datadog_keys(call)?;
    let url = join_path(&call.address(Some(DATADOG_ADDRESS))?, "/api/v1/validate");
    let req = get_json(call, &url)?
        .header("DD-API-KEY", api)
        .header("DD-APPLICATION-KEY", app);
    send_ok(req, "datadog", &url).await?;
    Ok(())
}

// === New Relic ===

fn newrelic_request(call: &Call<'_>, nrql: &str) -> Result<(reqwest::RequestBuilder, url::Url), MetricError> {
    let creds = call.require_creds("newrelic_account_id and newrelic_query_key")?;
    let account = creds.require("newrelic_account_id", "newrelic")?;
    let key = creds.require("newrelic_query_key", "newrelic")?;
    let mut url = call.address(Some(NEWRELIC_ADDRESS))?;
    url.path_segments_mut()
        .map_err(|_| MetricError::Provider("spec.provider.address cannot have a path appended".into()))?
        .pop_if_empty()
        .extend(["v1", "accounts", &account, "query"]);
    url.set_query(None);
    url.query_pairs_mut().append_pair("nrql", nrql);
    let req = get_json(call, &url)?.header("X-Query-Key", sensitive(&key, "newrelic_query_key")?);
    Ok((req, url))
}

/// GET `{address or https://insights-api.newrelic.com}/v1/accounts/{newrelic_account_id}/query`
/// with `nrql=<query> SINCE <interval seconds> seconds ago` and `X-Query-Key`. The answer must
/// hold one result with one value (nested single-key objects such as a percentile's
/// `{"99": v}` are unwrapped); a null value or no result is no values, several are an error.
pub(crate) async fn newrelic(call: &Call<'_>, interval: &str, query: &str) -> Result<f64, MetricError> {
    let since = parse_interval(interval)?.as_secs();
    let (req, url) = newrelic_request(call, &format!("{query} SINCE {since} seconds ago"))?;
    let body = send_ok(req, "newrelic", &url).await?;
    #[derive(Deserialize)]
    struct Resp {
        #[serde(default)]
        results: Vec<Value>,
    }
    let resp: Resp = serde_json::from_slice(&body).map_err(|e| unmarshal_error(e, &body))?;
    match resp.results.len() {
        0 => return Err(no_values()),
        1 => {}
        _ => return Err(multiple_values()),
    }
    let mut v = &resp.results[0];
    loop {
        match v {
            Value::Object(map) if map.len() == 1 => v = map.values().next().unwrap_or(&Value::Null),
            Value::Object(map) if map.is_empty() => return Err(no_values()),
            Value::Object(_) => return Err(multiple_values()),
            Value::Null => return Err(no_values()),
            Value::Number(n) => return n.as_f64().ok_or_else(no_values),
            other => {
                return Err(MetricError::Query(format!("result {other} is not a number")));
            }
        }
    }
}

/// Runs `SELECT * FROM Metric`: online when it answers 200.
pub(crate) async fn newrelic_online(call: &Call<'_>) -> Result<(), MetricError> {
    let (req, url) = newrelic_request(call, "SELECT * FROM Metric")?;
    send_ok(req, "newrelic", &url).await?;
    Ok(())
}

// === Graphite ===

/// GET `{address}/render?<query>&format=json` (the query is the render API's parameters, e.g.
/// `target=sumSeries(app.http.5xx)&from=-5min`), optional basic auth from `username` and
/// `password`. The value is the last non-null datapoint over all series.
pub(crate) async fn graphite(call: &Call<'_>, query: &str) -> Result<f64, MetricError> {
    let mut url = join_path(&call.address(None)?, "/render");
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in url::form_urlencoded::parse(query.trim().trim_start_matches('?').as_bytes()) {
            if k != "format" {
                pairs.append_pair(&k, &v);
            }
        }
        pairs.append_pair("format", "json");
    }
    let mut req = get_json(call, &url)?;
    if let Some(creds) = call.creds
        && let Some(user) = creds.get("username")
    {
        req = req.basic_auth(user, creds.get("password"));
    }
    let body = send_ok(req, "graphite", &url).await?;
    #[derive(Deserialize)]
    struct Series {
        #[serde(default)]
        datapoints: Vec<(Option<f64>, Option<f64>)>,
    }
    let series: Vec<Series> = serde_json::from_slice(&body).map_err(|e| unmarshal_error(e, &body))?;
    series
        .iter()
        .flat_map(|s| s.datapoints.iter())
        .filter_map(|(v, _)| *v)
        .next_back()
        .ok_or_else(no_values)
}

/// Renders `target=test`: online when it answers, with or without values.
pub(crate) async fn graphite_online(call: &Call<'_>) -> Result<(), MetricError> {
    match graphite(call, "target=test").await {
        Ok(_) | Err(MetricError::NoValues(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

// === InfluxDB ===

fn influx_request(call: &Call<'_>, flux: &str) -> Result<(reqwest::RequestBuilder, url::Url), MetricError> {
    let creds = call.require_creds("token and org")?;
    let token = creds.require("token", "influxdb")?;
    let org = creds.require("org", "influxdb")?;
    let mut url = join_path(&call.address(None)?, "/api/v2/query");
    url.query_pairs_mut().append_pair("org", &org);
    let body = serde_json::json!({
        "query": flux,
        "type": "flux",
        "dialect": {
            "header": true,
            "delimiter": ",",
            "annotations": ["datatype", "group", "default"],
            "commentPrefix": "#",
            "dateTimeFormat": "RFC3339",
        },
    });
    let req = call
        .client
        .post(url.clone())
        .timeout(INFLUX_TIMEOUT)
        .headers(call.custom_headers()?)
        .header(ACCEPT, "application/csv")
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, sensitive(&format!("Token {token}"), "token")?)
        .body(body.to_string());
    Ok((req, url))
}

fn influx_error(body: &[u8]) -> MetricError {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) if !e.message.is_empty() => MetricError::Query(format!("error response: {}", e.message)),
        _ => error_response(body),
    }
}

/// POST `{address}/api/v2/query?org=<org>` with the Flux query as JSON and `Authorization:
/// Token <token>` (Secret keys `token` and `org`, both required), 15 s timeout; the answer is
/// annotated CSV. The value is the `_value` of the first record (double, long or unsignedLong);
/// an empty value is no values. **Zero rows are no values** (Flagger answers 0 there, which
/// passes "less than" thresholds on an empty bucket).
pub(crate) async fn influxdb(call: &Call<'_>, query: &str) -> Result<f64, MetricError> {
    let (req, url) = influx_request(call, query)?;
    let (status, body) = send(req, "influxdb", &url).await?;
    if !status.is_success() {
        return Err(influx_error(&body));
    }
    first_flux_value(&String::from_utf8_lossy(&body))
}

/// Runs `buckets() |> limit(n: 1)`, which needs no particular bucket: online when the token and
/// the org are accepted.
pub(crate) async fn influxdb_online(call: &Call<'_>) -> Result<(), MetricError> {
    let (req, url) = influx_request(call, "buckets() |> limit(n: 1)")?;
    let (status, body) = send(req, "influxdb", &url).await?;
    if !status.is_success() {
        return Err(influx_error(&body));
    }
    match first_flux_value(&String::from_utf8_lossy(&body)) {
        Err(MetricError::Query(e)) if e.starts_with("influxdb query error") => Err(MetricError::Query(e)),
        _ => Ok(()),
    }
}

/// The first record's `_value` in an annotated-CSV answer (tables separated by blank lines,
/// each with its `#datatype`/`#group`/`#default` annotations and a header row).
pub(crate) fn first_flux_value(csv: &str) -> Result<f64, MetricError> {
    let mut datatypes: Vec<String> = Vec::new();
    let mut defaults: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for record in parse_csv(csv) {
        if record.iter().all(String::is_empty) {
            // A blank line ends a table.
            header = None;
            datatypes.clear();
            defaults.clear();
            continue;
        }
        match record[0].as_str() {
            "#datatype" => {
                datatypes = record;
                header = None;
                continue;
            }
            "#default" => {
                defaults = record;
                continue;
            }
            s if s.starts_with('#') => continue,
            _ => {}
        }
        let Some(cols) = &header else {
            header = Some(record);
            continue;
        };
        let col = |name: &str| cols.iter().position(|c| c == name);
        if let (Some(e), Some(_)) = (col("error"), col("reference")) {
            let msg = record.get(e).cloned().unwrap_or_default();
            return Err(MetricError::Query(format!("influxdb query error: {msg}")));
        }
        let Some(i) = col("_value") else {
            return Err(MetricError::Query(
                "influxdb answer has no _value column; end the query with a single value (e.g. |> mean())"
                    .into(),
            ));
        };
        let mut raw = record.get(i).cloned().unwrap_or_default();
        if raw.is_empty() {
            raw = defaults.get(i).cloned().unwrap_or_default();
        }
        if raw.is_empty() {
            return Err(no_values());
        }
        let kind = datatypes.get(i).map(String::as_str).unwrap_or("double");
        return match kind {
            "double" | "long" | "unsignedLong" => raw
                .parse::<f64>()
                .map_err(|_| MetricError::Query(format!("_value {raw:?} is not a number"))),
            other => Err(MetricError::Query(format!(
                "_value is of type {other}, not a number"
            ))),
        };
    }
    Err(no_values())
}

/// RFC 4180 records: `,`-separated fields, `"`-quoted with `""` escapes, `\n` or `\r\n` ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            c => field.push(c),
        }
    }
    if any {
        record.push(field);
        records.push(record);
    }
    records
}

// === Dynatrace ===

fn dynatrace_token(call: &Call<'_>) -> Result<HeaderValue, MetricError> {
    let creds = call.require_creds("dynatrace_token")?;
    let token = creds.require("dynatrace_token", "dynatrace")?;
    sensitive(&format!("Api-Token {token}"), "dynatrace_token")
}

fn dynatrace_error(body: &[u8]) -> MetricError {
    let msg = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match msg {
        Some(m) => MetricError::Query(format!("error response: {m}")),
        None => error_response(body),
    }
}

/// GET `{address}/api/v2/metrics/query?metricSelector=<query>&resolution=Inf&from=<ms>&to=<ms>`
/// over the last 10 × interval, `Authorization: Api-Token <dynatrace_token>`. The value is the
/// first value of the last data entry of the first result.
pub(crate) async fn dynatrace(call: &Call<'_>, interval: &str, query: &str) -> Result<f64, MetricError> {
    let window = parse_interval(interval)? * 10;
    let token = dynatrace_token(call)?;
    let to = now_unix().as_millis();
    let from = to.saturating_sub(window.as_millis());
    let mut url = join_path(&call.address(None)?, "/api/v2/metrics/query");
    url.query_pairs_mut()
        .append_pair("metricSelector", query)
        .append_pair("resolution", "Inf")
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string());
    let req = get_json(call, &url)?.header(AUTHORIZATION, token);
    let (status, body) = send(req, "dynatrace", &url).await?;
    if status != 200 {
        return Err(dynatrace_error(&body));
    }
    #[derive(Deserialize)]
    struct Resp {
        #[serde(default)]
        result: Vec<MetricSeries>,
    }
    #[derive(Deserialize)]
    struct MetricSeries {
        #[serde(default)]
        data: Vec<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        values: Vec<Option<f64>>,
    }
    let resp: Resp = serde_json::from_slice(&body).map_err(|e| unmarshal_error(e, &body))?;
    resp.result
        .first()
        .and_then(|r| r.data.last())
        .and_then(|d| d.values.first().copied().flatten())
        .ok_or_else(no_values)
}

/// GET `/api/v2/metrics?pageSize=1`: online when it answers 200.
pub(crate) async fn dynatrace_online(call: &Call<'_>) -> Result<(), MetricError> {
    let token = dynatrace_token(call)?;
    let mut url = join_path(&call.address(None)?, "/api/v2/metrics");
    url.query_pairs_mut().append_pair("pageSize", "1");
    let req = get_json(call, &url)?.header(AUTHORIZATION, token);
    let (status, body) = send(req, "dynatrace", &url).await?;
    if status != 200 {
        return Err(dynatrace_error(&body));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUX: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double,string\r\n\
#group,false,false,true,true,false,true\r\n\
#default,_result,,,,,\r\n\
,result,table,_start,_stop,_value,_field\r\n\
,,0,2024-01-01T00:00:00Z,2024-01-01T00:05:00Z,0.25,\"err,rate\"\r\n\
,,0,2024-01-01T00:00:00Z,2024-01-01T00:05:00Z,0.5,x\r\n\
\r\n";

    #[test]
    fn flux_csv_first_record() {
        assert_eq!(first_flux_value(FLUX).unwrap(), 0.25);
    }

    #[test]
    fn flux_csv_empty_and_errors() {
        assert_eq!(first_flux_value("").unwrap_err(), no_values());
        assert_eq!(first_flux_value("\r\n").unwrap_err(), no_values());
        let header_only = "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n\n";
        assert_eq!(first_flux_value(header_only).unwrap_err(), no_values());
        let empty_value = "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,\n";
        assert_eq!(first_flux_value(empty_value).unwrap_err(), no_values());
        let err = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"bucket \"\"x\"\" not found\",897\n";
        assert_eq!(
            first_flux_value(err).unwrap_err(),
            MetricError::Query("influxdb query error: bucket \"x\" not found".into())
        );
        let text = "#datatype,string,long,string\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,hello\n";
        assert!(
            matches!(first_flux_value(text).unwrap_err(), MetricError::Query(m) if m.contains("type string"))
        );
        let long = "#datatype,string,long,long\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,42\n";
        assert_eq!(first_flux_value(long).unwrap(), 42.0);
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            parse_csv("a,\"b,c\",\"d\"\"e\"\r\nx,,\n"),
            vec![vec!["a", "b,c", "d\"e"], vec!["x", "", ""]]
        );
    }
}
