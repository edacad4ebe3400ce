//! MetricTemplate providers against local HTTP servers that check the exact request and answer
//! with each API's documented response shapes, including empty and error answers.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aviary_api::{Canary, MetricTemplate};
use aviary_core::ports::{MetricError, Metrics, TemplateQuery};
use aviary_providers::metrics::AwsCredentials;
use aviary_providers::metrics::cloudwatch::sigv4;
use aviary_providers::{PrometheusBuiltins, ProviderMetrics, ResourceStore, StaticSecrets};
use common::{Reply, Seen, Server, bounded, within};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn template(kind: &str, address: &str, secret: Option<&str>, extra: Value) -> MetricTemplate {
    let mut provider = json!({"type": kind, "address": address});
    if let Some(s) = secret {
        provider["secretRef"] = json!({"name": s});
    }
    if let Value::Object(m) = extra {
        for (k, v) in m {
            provider[k] = v;
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "my-metric", "namespace": "monitoring"},
        "spec": {"provider": provider, "query": "unused: the engine renders it"},
    }))
    .unwrap()
}

struct Fixture {
    metrics: ProviderMetrics,
    secrets: StaticSecrets,
    store: ResourceStore,
}

fn fixture() -> Fixture {
    let store = ResourceStore::new();
    let secrets = StaticSecrets::new();
    let metrics = provider_metrics(&store, &secrets).with_aws_env_credentials(None);
    Fixture {
        metrics,
        secrets,
        store,
    }
}

/// Metrics over `store` and `secrets`, whose built-in metrics' Prometheus is nowhere.
fn provider_metrics(store: &ResourceStore, secrets: &StaticSecrets) -> ProviderMetrics {
    let builtins = PrometheusBuiltins::new("http://127.0.0.1:9", "kubernetes").unwrap();
    ProviderMetrics::new(
        Arc::new(store.clone()),
        Arc::new(secrets.clone()),
        Arc::new(builtins),
    )
    .unwrap()
}

impl Fixture {
    /// Stores the Secret `monitoring/<secret>` with `data`; returns a `kind` template at
    /// `address` that refers to it.
    fn template_with_secret<K: Into<String>, V: Into<Vec<u8>>>(
        &self,
        kind: &str,
        address: &str,
        secret: &str,
        data: impl IntoIterator<Item = (K, V)>,
    ) -> MetricTemplate {
        self.secrets.insert("monitoring", secret, data);
        template(kind, address, Some(secret), json!({}))
    }
}

async fn run(f: &Fixture, t: &MetricTemplate, interval: &str, q: &str) -> Result<f64, MetricError> {
    f.metrics.query(query("my-metric", t, interval, q)).await
}

/// The query `q` of metric `metric` with the template `t`.
fn query<'a>(metric: &'a str, t: &'a MetricTemplate, interval: &'a str, q: &'a str) -> TemplateQuery<'a> {
    TemplateQuery {
        metric,
        template: t,
        interval,
        query: q,
    }
}

/// Each query in `queries` answers no value (`NoValues`, which the analysis counts as a failed
/// check rather than an error).
async fn assert_no_values(f: &Fixture, t: &MetricTemplate, queries: &[&str]) {
    for q in queries {
        let e = run(f, t, "1m", q).await.unwrap_err();
        assert!(matches!(e, MetricError::NoValues(_)), "{q}: {e:?}");
    }
}

/// The online check of a Canary whose one metric refers to the stored template `t` passes;
/// returns that Canary.
async fn check_online(f: &Fixture, t: MetricTemplate) -> Canary {
    f.store.insert_template(t);
    let canary =
        canary_with(json!([{"name": "m", "templateRef": {"name": "my-metric", "namespace": "monitoring"}}]));
    f.metrics.check_providers(&canary).await.unwrap();
    canary
}

/// `q` over 1m fails with a provider (configuration) error that contains `needle`.
async fn assert_provider_error(f: &Fixture, t: &MetricTemplate, q: &str, needle: &str) {
    let e = provider_error(run(f, t, "1m", q).await.unwrap_err());
    assert!(e.contains(needle), "{e}");
}

/// `q` over 1m fails with a query error that contains `needle`.
async fn assert_query_error(f: &Fixture, t: &MetricTemplate, q: &str, needle: &str) {
    let e = query_error(run(f, t, "1m", q).await.unwrap_err());
    assert!(e.contains(needle), "{e}");
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn num(s: &Seen, key: &str) -> u64 {
    s.query[key].parse().unwrap()
}

fn vector(values: &[&str]) -> Value {
    let result: Vec<Value> = values
        .iter()
        .map(|v| json!({"metric": {"pod": "x"}, "value": [1_700_000_000.5, v]}))
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

fn query_error(e: MetricError) -> String {
    match e {
        MetricError::Query(m) => m,
        other => panic!("expected a query error, got {other:?}"),
    }
}

fn provider_error(e: MetricError) -> String {
    match e {
        MetricError::Provider(m) => m,
        other => panic!("expected a provider error, got {other:?}"),
    }
}

// === prometheus ===

#[tokio::test]
async fn prometheus_request_auth_headers_and_last_series() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::json(200, vector(&["0.5", "99.5"]))).await;
        let f = fixture();
        f.secrets
            .insert("monitoring", "prom-auth", [("token", "prom-token-123")]);
        let t = template(
            "prometheus",
            &format!("{}/prometheus/", server.url()),
            Some("prom-auth"),
            json!({"headers": {"X-Scope-OrgID": ["tenant-a"], "X-Extra": ["1", "2"]}}),
        );
        let before = t.clone();
        let v = run(&f, &t, "1m", "sum(\n  rate(x[1m])\n)").await.unwrap();
        assert_eq!(v, 99.5, "the last series wins");
        let r = server.only_request();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/prometheus/api/v1/query");
        assert_eq!(r.query["query"], "sum( rate(x[1m]) )");
        assert_eq!(r.header("authorization"), Some("Bearer prom-token-123"));
        assert_eq!(r.header("x-scope-orgid"), Some("tenant-a"));
        let extra: Vec<_> = r
            .headers
            .get_all("x-extra")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(extra, ["1", "2"]);
        assert!(r.header("user-agent").unwrap().starts_with("aviary/"));
        // Calling twice sends the same headers: the template is read, never extended.
        run(&f, &t, "1m", "x").await.unwrap();
        assert_eq!(
            server.requests()[1]
                .headers
                .get_all("authorization")
                .iter()
                .count(),
            1
        );
        assert_eq!(t.spec, before.spec);
    })
    .await;
}

#[tokio::test]
async fn prometheus_basic_auth_and_credential_errors() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::json(200, vector(&["1"]))).await;
        let f = fixture();
        f.secrets.insert(
            "monitoring",
            "basic",
            [("username", "admin"), ("password", "s3cr3t")],
        );
        f.secrets.insert("monitoring", "half", [("username", "admin")]);
        let t = template("prometheus", &server.url(), Some("basic"), json!({}));
        assert_eq!(run(&f, &t, "1m", "up").await.unwrap(), 1.0);
        assert_eq!(
            server.only_request().header("authorization"),
            Some("Basic YWRtaW46czNjcjN0")
        );

        let t = template("prometheus", &server.url(), Some("half"), json!({}));
        let e = provider_error(run(&f, &t, "1m", "up").await.unwrap_err());
        assert!(
            e.contains("secret monitoring/half") && e.contains("username` and `password"),
            "{e}"
        );

        let t = template("prometheus", &server.url(), Some("absent"), json!({}));
        match run(&f, &t, "1m", "up").await.unwrap_err() {
            MetricError::Secret { secret, message } => {
                assert_eq!(secret, "absent");
                assert!(message.contains("monitoring/absent"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        let t = template("prometheus", "", None, json!({}));
        let e = provider_error(run(&f, &t, "1m", "up").await.unwrap_err());
        assert!(
            e.contains("spec.provider.address is required for prometheus"),
            "{e}"
        );
    })
    .await;
}

#[tokio::test]
async fn prometheus_no_values_matrices_and_errors_never_show_the_token() {
    bounded(LIMIT, async {
        // The server echoes the Authorization header into its error body, as some proxies do.
        let server = Server::start(|r, _| match r.query["query"].as_str() {
            "empty" => Reply::json(200, vector(&[])),
            "nan" => Reply::json(200, vector(&["NaN"])),
            "matrix" => Reply::json(
                200,
                json!({"status": "success", "data": {"resultType": "matrix",
                    "result": [{"metric": {}, "values": [[1, "1"], [2, "2"]]}]}}),
            ),
            _ => Reply::new(
                401,
                format!("unauthorized: {}", r.header("authorization").unwrap_or_default()),
            ),
        })
        .await;
        let f = fixture();
        f.secrets
            .insert("monitoring", "prom-auth", [("token", "super-secret-token")]);
        let t = template("prometheus", &server.url(), Some("prom-auth"), json!({}));
        assert_eq!(
            run(&f, &t, "1m", "empty").await.unwrap_err(),
            MetricError::NoValues("no values found".into())
        );
        assert_no_values(&f, &t, &["nan"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "matrix").await.unwrap_err()),
            "query returned multiple values"
        );
        let e = query_error(run(&f, &t, "1m", "denied").await.unwrap_err());
        assert!(
            e.starts_with("error response: Status 401 Unauthorized: unauthorized: Bearer"),
            "{e}"
        );
        assert!(!e.contains("super-secret-token"), "the token leaked into: {e}");

        // The online check fails the same way, without the token.
        f.store.insert_template(t.clone());
        let canary = canary_with(
            json!([{"name": "m", "templateRef": {"name": "my-metric", "namespace": "monitoring"}}]),
        );
        let e = f.metrics.check_providers(&canary).await.unwrap_err();
        assert!(
            e.contains("prometheus in metric template my-metric.monitoring is not available"),
            "{e}"
        );
        assert!(!e.contains("super-secret-token"), "the token leaked into: {e}");
    })
    .await;
}

/// Issue 15: a metric backend that quotes the request back (credential headers, basic auth and
/// its base64, percent-encoded and JSON-escaped paths) gets none of the credentials into the
/// error, which is bounded; for templates, for `spec.provider.headers` and for the built-in
/// metrics' server.
#[tokio::test]
async fn echoing_metric_backends_get_no_credential_into_errors() {
    bounded(LIMIT, async {
        let server = Server::echoing(400).await;
        let f = fixture();
        f.secrets.insert(
            "monitoring",
            "basic",
            [("username", "prom-admin"), ("password", "pr0m/pass+word")],
        );
        f.secrets.insert(
            "monitoring",
            "dd",
            [
                ("datadog_api_key", "dd-api-key-123"),
                ("datadog_application_key", "dd-app-key-456"),
            ],
        );
        let secrets = [
            "prom-admin",
            "pr0m/pass",
            "pr0m%2Fpass",
            "cHJvbS1hZG1pbjpwcjBtL3Bhc3Mrd29yZA",
            "dd-api-key-123",
            "dd-app-key-456",
            "custom-key-789",
            "url-user",
            "url-pw-0123",
            "dXJsLXVzZXI6dXJsLXB3LTAxMjM",
        ];
        let check = |e: MetricError| {
            let e = e.to_string();
            common::assert_bounded_without(&e, &secrets, 4200);
            assert!(e.contains("[redacted]"), "{e}");
        };
        let basic = template("prometheus", &server.url(), Some("basic"), json!({}));
        check(run(&f, &basic, "1m", "up").await.unwrap_err());
        let dd = template(
            "datadog",
            &server.url(),
            Some("dd"),
            json!({"headers": {"X-Api-Key": ["custom-key-789"]}}),
        );
        check(run(&f, &dd, "1m", "avg:x").await.unwrap_err());
        let in_address = server.url().replace("http://", "http://url-user:url-pw-0123@");
        let userinfo = template("prometheus", &in_address, None, json!({}));
        check(run(&f, &userinfo, "1m", "up").await.unwrap_err());

        // The built-in metrics' Prometheus (spec.metricsServer) with credentials in its URL.
        let builtins = PrometheusBuiltins::new(in_address.clone(), "kubernetes").unwrap();
        let mut canary = canary_with(json!([{"name": "request-success-rate", "interval": "1m"}]));
        canary.spec.metrics_server = Some(in_address);
        let model = common::podinfo_model("podinfo");
        use aviary_core::ports::BuiltinSource as _;
        check(
            builtins
                .builtin(&canary, aviary_core::ports::BuiltinMetric::SuccessRate, &model)
                .await
                .unwrap_err(),
        );
    })
    .await;
}

#[tokio::test]
async fn prometheus_times_out_after_five_seconds() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::json(200, vector(&["1"])).delayed(Duration::from_secs(8))).await;
        let f = fixture();
        let t = template("prometheus", &server.url(), None, json!({}));
        let slow = assert_query_error(&f, &t, "slow", "timed out");
        within(Duration::from_secs(4)..Duration::from_secs(8), slow).await;
    })
    .await;
}

fn canary_with(metrics: Value) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "metrics": metrics},
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn provider_checks_probe_each_metric_in_order_until_one_fails() {
    bounded(LIMIT, async {
        let prom = Server::start(|r, _| match r.query["query"].as_str() {
            "vector(1)" => Reply::json(200, vector(&["1"])),
            q => Reply::new(400, format!("unexpected {q}")),
        })
        .await;
        let store = ResourceStore::new();
        let secrets = StaticSecrets::new();
        let builtins = PrometheusBuiltins::new(prom.url(), "kubernetes").unwrap();
        let metrics = ProviderMetrics::new(
            Arc::new(store.clone()),
            Arc::new(secrets.clone()),
            Arc::new(builtins),
        )
        .unwrap();
        store.insert_template(template("prometheus", &prom.url(), None, json!({})));
        let canary = canary_with(json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "errors", "templateRef": {"name": "my-metric", "namespace": "monitoring"}},
            {"name": "errors-again", "templateRef": {"name": "my-metric", "namespace": "monitoring"}},
        ]));
        metrics.check_providers(&canary).await.unwrap();
        // As Flagger: one probe per metric, the same template twice.
        assert_eq!(prom.requests().len(), 3);
        // An inline query is not probed.
        let inline = canary_with(json!([{"name": "q", "query": "sum(x)", "threshold": 1}]));
        metrics.check_providers(&inline).await.unwrap();
        assert_eq!(prom.requests().len(), 3);

        let canary = canary_with(json!([
            {"name": "gone", "templateRef": {"name": "missing"}},
            {"name": "dd", "templateRef": {"name": "dd", "namespace": "monitoring"}},
        ]));
        let mut dd = template("datadog", &prom.url(), Some("dd-keys"), json!({}));
        dd.metadata.name = Some("dd".into());
        store.insert_template(dd);
        let e = metrics.check_providers(&canary).await.unwrap_err();
        // The first failure is the answer.
        assert_eq!(
            e,
            "Metric template missing.test error: metrictemplate.flagger.app \"missing\" not found"
        );
        let canary = canary_with(json!([
            {"name": "dd", "templateRef": {"name": "dd", "namespace": "monitoring"}},
            {"name": "gone", "templateRef": {"name": "missing"}},
        ]));
        let e = metrics.check_providers(&canary).await.unwrap_err();
        assert!(
            e.starts_with("Metric template dd.monitoring secret dd-keys error"),
            "{e}"
        );

        // A stopped Prometheus is reported for the built-ins.
        let url = prom.url();
        prom.stop().await;
        let canary = canary_with(json!([{"name": "request-duration", "thresholdRange": {"max": 500}}]));
        let e = metrics.check_providers(&canary).await.unwrap_err();
        assert!(
            e.starts_with(&format!("prometheus at {url} is not available")),
            "{e}"
        );

        // A provider without built-in queries (the local platform's) is reported at
        // initialization.
        let mut local = canary;
        local.spec.provider = Some("local".into());
        let e = metrics.check_providers(&local).await.unwrap_err();
        assert!(e.contains("not available for provider \"local\""), "{e}");
    })
    .await;
}

#[tokio::test]
async fn unsupported_provider_types_say_what_is_supported() {
    let f = fixture();
    let t = template("victoriametrics", "", None, json!({}));
    let e = provider_error(run(&f, &t, "1m", "q").await.unwrap_err());
    assert!(
        e.contains("\"victoriametrics\"") && e.contains("prometheus, datadog") && e.contains("splunk"),
        "{e}"
    );
}

// === datadog ===

#[tokio::test]
async fn datadog_request_window_keys_and_oldest_point() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| match r.path.as_str() {
            "/api/v1/validate" => Reply::json(200, json!({"valid": true})),
            _ => match r.query["query"].as_str() {
                "empty" => Reply::json(200, json!({"status": "ok", "series": []})),
                "null" => Reply::json(200, json!({"status": "ok", "series": [{"pointlist": [[1.0, null]]}]})),
                "forbidden" => Reply::json(403, json!({"errors": ["Forbidden"]})),
                _ => Reply::json(
                    200,
                    json!({"status": "ok", "res_type": "time_series", "series": [
                        {"metric": "m", "pointlist": [[1_700_000_000_000.0, 0.25], [1_700_000_060_000.0, 0.75]]},
                        {"metric": "n", "pointlist": [[1_700_000_000_000.0, 9.0]]}
                    ]}),
                ),
            },
        })
        .await;
        let f = fixture();
        let t = f.template_with_secret(
            "datadog",
            &server.url(),
            "dd",
            [("datadog_api_key", "dd-api-key-1"), ("datadog_application_key", "dd-app-key-2")],
        );
        let q = "sum:requests.error.rate{service:podinfo}";
        let before = now_secs();
        assert_eq!(run(&f, &t, "1m", q).await.unwrap(), 0.25);
        let after = now_secs();
        let r = server.only_request();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/v1/query"));
        assert_eq!(r.query["query"], q);
        let (from, to) = (num(&r, "from"), num(&r, "to"));
        assert!(before <= to && to <= after, "to={to}");
        assert_eq!(to - from, 600, "10 × the 1m interval");
        assert_eq!(r.header("dd-api-key"), Some("dd-api-key-1"));
        assert_eq!(r.header("dd-application-key"), Some("dd-app-key-2"));

        assert_no_values(&f, &t, &["empty", "null"]).await;
        let e = query_error(run(&f, &t, "1m", "forbidden").await.unwrap_err());
        assert_eq!(e, r#"error response: {"errors":["Forbidden"]}"#);
        let e = provider_error(run(&f, &t, "", "q").await.unwrap_err());
        assert!(e.contains("error parsing metric interval"), "{e}");

        check_online(&f, t.clone()).await;
        let validate = server.requests().into_iter().last().unwrap();
        assert_eq!(validate.path, "/api/v1/validate");
        assert_eq!(validate.header("dd-api-key"), Some("dd-api-key-1"));

        f.secrets.insert("monitoring", "dd", [("datadog_api_key", "only-one")]);
        assert_provider_error(&f, &t, q, "no key `datadog_application_key`").await;
        let t = template("datadog", &server.url(), None, json!({}));
        assert_provider_error(&f, &t, q, "datadog needs credentials: set spec.provider.secretRef").await;
    })
    .await;
}

// === newrelic ===

#[tokio::test]
async fn newrelic_nrql_since_interval_and_single_result() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| {
            let nrql = r.query["nrql"].clone();
            let body = if nrql.starts_with("one") {
                json!({"results": [{"average": 1.5}]})
            } else if nrql.starts_with("percentile") {
                json!({"results": [{"percentile": {"99": 250.0}}]})
            } else if nrql.starts_with("none") {
                json!({"results": []})
            } else if nrql.starts_with("null") {
                json!({"results": [{"average": null}]})
            } else if nrql.starts_with("two") {
                json!({"results": [{"a": 1.0}, {"b": 2.0}]})
            } else if nrql == "SELECT * FROM Metric" {
                json!({"results": [{"events": []}]})
            } else {
                return Reply::json(400, json!({"error": "NRQL Syntax Error"}));
            };
            Reply::json(200, body)
        })
        .await;
        let f = fixture();
        let t = f.template_with_secret(
            "newrelic",
            &server.url(),
            "nr",
            [
                ("newrelic_account_id", "1234567"),
                ("newrelic_query_key", "nr-query-key"),
            ],
        );
        assert_eq!(run(&f, &t, "2m", "one").await.unwrap(), 1.5);
        let r = server.only_request();
        assert_eq!(r.path, "/v1/accounts/1234567/query");
        assert_eq!(r.query["nrql"], "one SINCE 120 seconds ago");
        assert_eq!(r.header("x-query-key"), Some("nr-query-key"));
        assert_eq!(r.header("accept"), Some("application/json"));

        assert_eq!(run(&f, &t, "1m", "percentile").await.unwrap(), 250.0);
        assert_no_values(&f, &t, &["none", "null"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "two").await.unwrap_err()),
            "query returned multiple values"
        );
        assert_query_error(&f, &t, "bad", "NRQL Syntax Error").await;

        check_online(&f, t).await;
    })
    .await;
}

// === graphite ===

#[tokio::test]
async fn graphite_render_params_basic_auth_and_last_non_null() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| match r.query.get("target").map(String::as_str) {
            Some("test") | Some("empty") => Reply::json(200, json!([])),
            Some("nulls") => Reply::json(
                200,
                json!([{"target": "x", "datapoints": [[null, 1], [null, 2]]}]),
            ),
            Some("broken") => Reply::new(500, "render failed"),
            _ => Reply::json(
                200,
                json!([
                    {"target": "a", "datapoints": [[1.0, 100], [2.0, 160], [null, 220]]},
                    {"target": "b", "datapoints": [[7.5, 100], [null, 160]]}
                ]),
            ),
        })
        .await;
        let f = fixture();
        let t = f.template_with_secret(
            "graphite",
            &server.url(),
            "gr",
            [("username", "graphite"), ("password", "pw-graphite")],
        );
        let q = "target=sumSeries(app.http.5xx)&from=-5min&format=raw";
        assert_eq!(run(&f, &t, "1m", q).await.unwrap(), 7.5);
        let r = server.only_request();
        assert_eq!(r.path, "/render");
        assert_eq!(
            r.raw_query,
            "target=sumSeries%28app.http.5xx%29&from=-5min&format=json"
        );
        assert_eq!(
            r.header("authorization"),
            Some("Basic Z3JhcGhpdGU6cHctZ3JhcGhpdGU=")
        );

        assert_no_values(&f, &t, &["target=empty", "target=nulls"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "target=broken").await.unwrap_err()),
            "error response: render failed"
        );
        // Online: `target=test` answering no values is fine.
        check_online(&f, t).await;
        assert_eq!(server.requests().last().unwrap().query["target"], "test");
    })
    .await;
}

// === influxdb ===

const FLUX_ANSWER: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double,string,string\r\n\
#group,false,false,true,true,false,true,true\r\n\
#default,_result,,,,,,\r\n\
,result,table,_start,_stop,_value,_field,_measurement\r\n\
,,0,2024-05-01T10:00:00Z,2024-05-01T10:05:00Z,1.75,duration,http\r\n\
\r\n";

#[tokio::test]
async fn influxdb_flux_over_http_with_org_and_token() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| {
            let body = r.json();
            match body["query"].as_str().unwrap_or_default() {
                "empty" => Reply::new(200, "\r\n").with_header("content-type", "text/csv"),
                "bad" => Reply::json(
                    400,
                    json!({"code": "invalid", "message": "compilation failed: bad"}),
                ),
                _ => Reply::new(200, FLUX_ANSWER).with_header("content-type", "text/csv; charset=utf-8"),
            }
        })
        .await;
        let f = fixture();
        let t = f.template_with_secret(
            "influxdb",
            &server.url(),
            "influx",
            [("token", "influx-token-9"), ("org", "my-org")],
        );
        let flux = r#"from(bucket: "app") |> range(start: -5m) |> mean()"#;
        assert_eq!(run(&f, &t, "1m", flux).await.unwrap(), 1.75);
        let r = server.only_request();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v2/query"));
        assert_eq!(r.query["org"], "my-org");
        assert_eq!(r.header("authorization"), Some("Token influx-token-9"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), Some("application/csv"));
        let body = r.json();
        assert_eq!(body["query"], flux);
        assert_eq!(body["type"], "flux");
        assert_eq!(
            body["dialect"]["annotations"],
            json!(["datatype", "group", "default"])
        );

        // aviary: zero rows are no values (Flagger returns 0).
        assert_eq!(
            run(&f, &t, "1m", "empty").await.unwrap_err(),
            MetricError::NoValues("no values found".into())
        );
        assert_eq!(
            query_error(run(&f, &t, "1m", "bad").await.unwrap_err()),
            "error response: compilation failed: bad"
        );
        f.secrets
            .insert("monitoring", "influx", [("token", "influx-token-9")]);
        assert_provider_error(&f, &t, flux, "no key `org`").await;

        f.secrets.insert(
            "monitoring",
            "influx",
            [("token", "influx-token-9"), ("org", "my-org")],
        );
        check_online(&f, t).await;
        assert_eq!(
            server.requests().last().unwrap().json()["query"],
            "buckets() |> limit(n: 1)"
        );
    })
    .await;
}

// === dynatrace ===

#[tokio::test]
async fn dynatrace_selector_window_token_and_last_data_entry() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| match r.path.as_str() {
            "/api/v2/metrics" => Reply::json(200, json!({"totalCount": 1, "metrics": [{"metricId": "x"}]})),
            _ => match r.query["metricSelector"].as_str() {
                "empty" => Reply::json(200, json!({"totalCount": 0, "resolution": "Inf", "result": []})),
                "nodata" => Reply::json(
                    200,
                    json!({"totalCount": 1, "result": [{"metricId": "x", "data": []}]}),
                ),
                "bad" => Reply::json(
                    400,
                    json!({"error": {"code": 400, "message": "Invalid selector"}}),
                ),
                _ => Reply::json(
                    200,
                    json!({"totalCount": 1, "nextPageKey": null, "resolution": "Inf", "result": [{
                        "metricId": "builtin:service.response.time",
                        "data": [
                            {"dimensions": ["SERVICE-1"], "timestamps": [1], "values": [100.0]},
                            {"dimensions": ["SERVICE-2"], "timestamps": [1], "values": [42.5]}
                        ]
                    }]}),
                ),
            },
        })
        .await;
        let f = fixture();
        f.secrets
            .insert("monitoring", "dt", [("dynatrace_token", "dt0c01.token")]);
        let t = template("dynatrace", &server.url(), Some("dt"), json!({}));
        let sel = "builtin:service.response.time:avg";
        let before = now_secs() * 1000;
        assert_eq!(run(&f, &t, "1m", sel).await.unwrap(), 42.5);
        let r = server.only_request();
        assert_eq!(r.path, "/api/v2/metrics/query");
        assert_eq!(r.query["metricSelector"], sel);
        assert_eq!(r.query["resolution"], "Inf");
        let (from, to) = (num(&r, "from"), num(&r, "to"));
        assert!(to >= before, "to is in milliseconds");
        assert_eq!(to - from, 600_000);
        assert_eq!(r.header("authorization"), Some("Api-Token dt0c01.token"));

        assert_no_values(&f, &t, &["empty", "nodata"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "bad").await.unwrap_err()),
            "error response: Invalid selector"
        );
        check_online(&f, t).await;
        let online = server.requests().into_iter().last().unwrap();
        assert_eq!(
            (online.path.as_str(), online.raw_query.as_str()),
            ("/api/v2/metrics", "pageSize=1")
        );
    })
    .await;
}

// === cloudwatch ===

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Recomputes the SigV4 signature of a received request with the known secret key.
fn verify_signature(r: &Seen, region: &str) -> Result<(), String> {
    let auth = r.header("authorization").ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(", ") {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let amz_date = r.header("x-amz-date").ok_or("no X-Amz-Date")?;
    let expected_scope = format!("AKIDEXAMPLE/{}/{region}/monitoring/aws4_request", &amz_date[..8]);
    if credential != expected_scope {
        return Err(format!("credential scope {credential} != {expected_scope}"));
    }
    let headers: Vec<(String, String)> = signed
        .split(';')
        .map(|h| (h.to_string(), r.header(h).unwrap_or_default().to_string()))
        .collect();
    for needed in ["content-type", "host", "x-amz-date", "x-amz-target"] {
        if !signed.split(';').any(|h| h == needed) {
            return Err(format!("{needed} is not signed"));
        }
    }
    let req = sigv4::Request {
        method: &r.method,
        path: &r.path,
        query: &r.raw_query,
        headers: &headers,
        payload: &r.body,
    };
    let (expected, _) = sigv4::signature(AWS_SECRET, &req, amz_date, region, "monitoring");
    if expected != signature {
        return Err(format!("signature mismatch: {signature} != {expected}"));
    }
    Ok(())
}

#[tokio::test]
async fn cloudwatch_get_metric_data_is_signed_and_read() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| {
            if let Err(e) = verify_signature(r, "eu-west-1") {
                return Reply::json(
                    403,
                    json!({"__type": "com.amazon.coral.service#InvalidSignatureException", "message": e}),
                );
            }
            let body = r.json();
            let queries = &body["MetricDataQueries"];
            if queries.as_array().is_some_and(Vec::is_empty) {
                return Reply::json(
                    400,
                    json!({"__type": "com.amazon.coral.validate#ValidationException", "message": "MetricDataQueries is required"}),
                );
            }
            match queries[0]["Id"].as_str().unwrap_or_default() {
                "empty" => Reply::json(200, json!({"MetricDataResults": [{"Id": "empty", "Values": [], "StatusCode": "Complete"}]})),
                "bad" => Reply::json(400, json!({"__type": "com.amazon.coral.validate#ValidationException", "message": "Invalid metric"})),
                _ => Reply::json(
                    200,
                    json!({"MetricDataResults": [
                        {"Id": "e1", "Label": "errors", "Timestamps": [1_700_000_000, 1_699_999_940], "Values": [12.5, 3.0], "StatusCode": "Complete"}
                    ], "Messages": []}),
                ),
            }
        })
        .await;
        let f = fixture();
        f.secrets.insert(
            "monitoring",
            "aws",
            [
                ("aws_access_key_id", "AKIDEXAMPLE"),
                ("aws_secret_access_key", AWS_SECRET),
                ("aws_session_token", "session-token-xyz"),
            ],
        );
        let t = template("cloudwatch", &server.url(), Some("aws"), json!({"region": "eu-west-1"}));
        let q = json!([{"Id": "e1", "Expression": "100*errors/requests", "ReturnData": true},
            {"Id": "errors", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "5xx",
              "Dimensions": [{"Name": "Service", "Value": "podinfo"}]}, "Period": 60, "Stat": "Sum"}, "ReturnData": false}]);
        let before = now_secs();
        assert_eq!(run(&f, &t, "1m", &q.to_string()).await.unwrap(), 12.5);
        let r = server.only_request();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
        assert_eq!(r.header("x-amz-target"), Some("GraniteServiceVersion20100801.GetMetricData"));
        assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.0"));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token-xyz"));
        assert!(r.header("authorization").unwrap().contains("x-amz-security-token"));
        let body = r.json();
        assert_eq!(body["MetricDataQueries"], q);
        assert_eq!(body["MaxDatapoints"], 20);
        let (start, end) = (body["StartTime"].as_u64().unwrap(), body["EndTime"].as_u64().unwrap());
        assert!(end >= before && end - start == 600, "{start}..{end}");

        assert_no_values(&f, &t, &[r#"[{"Id":"empty"}]"#]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", r#"[{"Id":"bad"}]"#).await.unwrap_err()),
            "cloudwatch ValidationException: Invalid metric"
        );
        assert_query_error(&f, &t, "{not json", "JSON array of MetricDataQuery").await;

        // Online: an empty query answered with a validation error means authenticated and up.
        let canary = check_online(&f, t.clone()).await;

        // A wrong secret key fails the signature check, and the online check says so.
        f.secrets.insert(
            "monitoring",
            "aws",
            [("aws_access_key_id", "AKIDEXAMPLE"), ("aws_secret_access_key", "wrong-secret-key")],
        );
        let e = f.metrics.check_providers(&canary).await.unwrap_err();
        assert!(e.contains("InvalidSignatureException") && e.contains("signature mismatch"), "{e}");
        assert!(!e.contains("wrong-secret-key"), "{e}");

        let no_region = template("cloudwatch", &server.url(), Some("aws"), json!({}));
        assert_provider_error(&f, &no_region, "[]", "spec.provider.region is required").await;
    })
    .await;
}

#[tokio::test]
async fn cloudwatch_env_credentials_and_retries() {
    bounded(LIMIT, async {
        let server = Server::start(|r, i| {
            if let Err(e) = verify_signature(r, "us-east-1") {
                return Reply::json(403, json!({"__type": "InvalidSignatureException", "message": e}));
            }
            if i == 0 {
                return Reply::json(
                    500,
                    json!({"__type": "InternalServiceError", "message": "try again"}),
                );
            }
            Reply::json(200, json!({"MetricDataResults": [{"Id": "a", "Values": [0.5]}]}))
        })
        .await;
        let store = ResourceStore::new();
        let builtins = PrometheusBuiltins::new("http://127.0.0.1:9", "kubernetes").unwrap();
        let metrics = ProviderMetrics::new(
            Arc::new(store),
            Arc::new(StaticSecrets::new()),
            Arc::new(builtins),
        )
        .unwrap()
        .with_aws_env_credentials(Some(AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: AWS_SECRET.into(),
            session_token: None,
        }));
        let t = template("cloudwatch", &server.url(), None, json!({"region": "us-east-1"}));
        let v = metrics
            .query(query("m", &t, "30s", r#"[{"Id":"a"}]"#))
            .await
            .unwrap();
        assert_eq!(v, 0.5);
        let seen = server.requests();
        assert_eq!(seen.len(), 2, "one retry after the 500");
        assert!(seen[1].header("x-amz-security-token").is_none());
        let body = seen[1].json();
        assert_eq!(
            body["EndTime"].as_u64().unwrap() - body["StartTime"].as_u64().unwrap(),
            300
        );

        let metrics = metrics.with_aws_env_credentials(None);
        let e = provider_error(metrics.query(query("m", &t, "30s", "[]")).await.unwrap_err());
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    })
    .await;
}

/// Flagger's observers wrap a failed built-in query as `running query failed: …`, except the
/// HTTP observer's success rate; the answer's status is quoted with Go's status text.
#[tokio::test]
async fn built_in_query_errors_are_worded_like_flaggers_observers() {
    use aviary_core::ports::BuiltinMetric::{Duration as P99, SuccessRate};
    use aviary_core::ports::BuiltinSource as _;
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(503, "down")).await;
        let model = common::podinfo_model("podinfo");
        let canary = canary_with(json!([]));
        let error = |provider: &'static str, metric| {
            let builtins = PrometheusBuiltins::new(server.url(), provider).unwrap();
            let (canary, model) = (canary.clone(), model.clone());
            async move {
                builtins
                    .builtin(&canary, metric, &model)
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        let plain = "error response: Status 503 Service Unavailable: down";
        let wrapped = format!("running query failed: {plain}");
        assert_eq!(error("istio", SuccessRate).await, wrapped);
        assert_eq!(error("istio", P99).await, wrapped);
        assert_eq!(error("knative", SuccessRate).await, wrapped);
        assert_eq!(error("kubernetes", SuccessRate).await, plain);
        assert_eq!(error("gatewayapi:v1", P99).await, wrapped);
    })
    .await;
}

// === stackdriver (Google Cloud Monitoring) ===

/// A fresh 2048-bit RSA key (PKCS#8 PEM) from openssl, or `None` when openssl is missing.
fn rsa_key() -> Option<String> {
    let openssl = common::tool("openssl")?;
    let out = std::process::Command::new(openssl)
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

fn service_account_key(pem: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": "key-id-0123456789",
        "private_key": pem,
        "client_email": "flagger@my-project.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string()
}

fn b64url(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// Checks a self-signed JWT as Google does: RS256 over `header.claims` with the key's public
/// half; answers the header and the claims.
fn verify_jwt(token: &str, pem: &str) -> Result<(Value, Value), String> {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("not a JWT: {token}"));
    }
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(der).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public().as_ref(),
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &b64url(parts[2]))
    .map_err(|_| "bad signature".to_string())?;
    let header = serde_json::from_slice(&b64url(parts[0])).unwrap();
    let claims = serde_json::from_slice(&b64url(parts[1])).unwrap();
    Ok((header, claims))
}

/// The REST `timeSeries:query` double: checks the path, the JSON body and the JWT, answers
/// Cloud Monitoring's documented shapes.
fn monitoring_api(pem: String) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |r, _| {
        if r.method != "POST" || r.path != "/v3/projects/my-project/timeSeries:query" {
            return Reply::json(
                404,
                json!({"error": {"code": 404, "message": format!("{} {}", r.method, r.path), "status": "NOT_FOUND"}}),
            );
        }
        let token = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if let Err(e) = verify_jwt(token, &pem) {
            return Reply::json(
                401,
                json!({"error": {"code": 401, "message": e, "status": "UNAUTHENTICATED"}}),
            );
        }
        match r.json()["query"].as_str().unwrap_or("") {
            "" => Reply::json(
                400,
                json!({"error": {"code": 400, "message": "Field query had an invalid value: query is empty", "status": "INVALID_ARGUMENT"}}),
            ),
            "denied" => Reply::json(
                403,
                json!({"error": {"code": 403, "message": "Permission monitoring.timeSeries.list denied (or the resource may not exist).", "status": "PERMISSION_DENIED"}}),
            ),
            "empty" => Reply::json(200, json!({"timeSeriesDescriptor": {"labelDescriptors": []}})),
            "ints" => Reply::json(
                200,
                json!({"timeSeriesData": [{"pointData": [{"values": [{"int64Value": "42"}]}]}]}),
            ),
            _ => Reply::json(
                200,
                json!({
                    "timeSeriesDescriptor": {"pointDescriptors": [{"key": "value.ratio", "valueType": "DOUBLE", "metricKind": "GAUGE"}]},
                    "timeSeriesData": [
                        {"labelValues": [{"stringValue": "podinfo"}], "pointData": [
                            {"values": [{"doubleValue": 0.995}], "timeInterval": {"startTime": "2026-12-06T00:00:00Z", "endTime": "2026-12-06T00:01:00Z"}},
                            {"values": [{"doubleValue": 0.5}], "timeInterval": {"startTime": "2026-12-05T23:59:00Z", "endTime": "2026-12-06T00:00:00Z"}}
                        ]},
                        {"labelValues": [{"stringValue": "other"}], "pointData": [{"values": [{"doubleValue": 9.0}]}]}
                    ]
                }),
            ),
        }
    }
}

#[tokio::test]
async fn stackdriver_mql_with_a_self_signed_service_account_jwt() {
    let Some(pem) = rsa_key() else { return };
    bounded(LIMIT, async {
        let server = Server::start(monitoring_api(pem.clone())).await;
        let f = fixture();
        let key = service_account_key(&pem);
        let t = f.template_with_secret(
            "stackdriver",
            &server.url(),
            "gcp",
            [("project", "my-project"), ("serviceAccountKey", key.as_str())],
        );
        let mql = "fetch k8s_container | metric 'istio.io/service/server/request_count' | within 1m";
        let v = run(&f, &t, "1m", mql).await.unwrap();
        assert_eq!(v, 0.995, "the first point of the first series");
        let r = server.only_request();
        assert_eq!(r.json(), json!({"query": mql}));
        assert_eq!(r.header("content-type"), Some("application/json"));
        // The JWT Google's auth library signs for this client (selfsignedjwt.go:55-79): the
        // key's id, the client e-mail as issuer and subject, the monitoring client's scopes.
        let token = r.header("authorization").unwrap().strip_prefix("Bearer ").unwrap();
        let (header, claims) = verify_jwt(token, &pem).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "key-id-0123456789"}));
        assert_eq!(claims["iss"], "flagger@my-project.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], claims["iss"]);
        assert_eq!(claims["aud"], "");
        assert_eq!(
            claims["scope"],
            "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/monitoring \
             https://www.googleapis.com/auth/monitoring.read https://www.googleapis.com/auth/monitoring.write"
        );
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat.abs_diff(now_secs()) < 60);
        assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);

        assert_eq!(run(&f, &t, "1m", "ints").await.unwrap(), 42.0);
        assert_no_values(&f, &t, &["empty"]).await;
        let e = query_error(run(&f, &t, "1m", "denied").await.unwrap_err());
        assert_eq!(
            e,
            "error requesting stackdriver: rpc error: code = PermissionDenied desc = Permission monitoring.timeSeries.list denied (or the resource may not exist)."
        );
        // Online: an empty query refused as InvalidArgument (stackdriver.go:117-145).
        assert_eq!(server.requests().len(), 4);
        let canary = check_online(&f, t.clone()).await;
        assert_eq!(server.requests()[4].json(), json!({"query": ""}));

        // A wrong key: the API refuses the signature; no secret reaches the error.
        let other = rsa_key().unwrap();
        let wrong = service_account_key(&other);
        f.secrets.insert(
            "monitoring",
            "gcp",
            [("project", "my-project"), ("serviceAccountKey", wrong.as_str())],
        );
        let e = f.metrics.check_providers(&canary).await.unwrap_err();
        assert!(e.ends_with("unexpected status code: Unauthenticated"), "{e}");
        f.secrets.insert("monitoring", "gcp", [("serviceAccountKey", key.as_str())]);
        assert_provider_error(&f, &t, "x", "does not contain a project id").await;
    })
    .await;
}

#[tokio::test]
async fn stackdriver_default_credentials_and_careless_upstreams() {
    let Some(pem) = rsa_key() else { return };
    bounded(LIMIT, async {
        // The metadata server (GKE workload identity): its token is the bearer.
        let metadata = Server::start(|r, _| {
            if r.path == "/computeMetadata/v1/instance/service-accounts/default/token"
                && r.header("metadata-flavor") == Some("Google")
            {
                Reply::json(200, json!({"access_token": "ya29.metadata-token", "expires_in": 3599, "token_type": "Bearer"}))
            } else {
                Reply::new(403, "missing Metadata-Flavor")
            }
        })
        .await;
        let api = Server::start(|r, _| {
            if r.header("authorization") == Some("Bearer ya29.metadata-token") {
                Reply::json(200, json!({"timeSeriesData": [{"pointData": [{"values": [{"doubleValue": 12.5}]}]}]}))
            } else {
                Reply::new(400, common::echo_everything(r))
            }
        })
        .await;
        let f = fixture();
        let metrics = provider_metrics(&f.store, &f.secrets).with_google_env(aviary_providers::metrics::GoogleEnv {
            credentials_file: None,
            metadata_host: metadata.addr.to_string(),
        });
        let t = f.template_with_secret("stackdriver", &api.url(), "project-only", [("project", "my-project")]);
        assert_eq!(metrics.query(query("m", &t, "1m", "fetch x")).await.unwrap(), 12.5);
        assert_eq!(api.only_request().path, "/v3/projects/my-project/timeSeries:query");

        // A key file in GOOGLE_APPLICATION_CREDENTIALS, and an upstream that quotes the request
        // back: neither the JWT nor the key reaches the error.
        let dir = tempfile::tempdir().unwrap();
        let key = service_account_key(&pem);
        std::fs::write(dir.path().join("key.json"), &key).unwrap();
        let metrics = provider_metrics(&f.store, &f.secrets).with_google_env(aviary_providers::metrics::GoogleEnv {
            credentials_file: Some(dir.path().join("key.json")),
            metadata_host: "127.0.0.1:9".into(),
        });
        let e = metrics.query(query("m", &t, "1m", "fetch x")).await.unwrap_err().to_string();
        let jwt = api.requests()[1].header("authorization").unwrap().strip_prefix("Bearer ").unwrap().to_string();
        assert!(verify_jwt(&jwt, &pem).is_ok());
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!e.contains(signature), "{e}");
        assert!(!e.contains("key-id-0123456789"), "{e}");
        assert!(e.contains("error requesting stackdriver: rpc error: code = InvalidArgument"), "{e}");
        assert!(e.contains("[redacted]"), "{e}");
    })
    .await;
}

// === splunk (SignalFlow over a WebSocket) ===

/// A SignalFlow stream endpoint: `/v2/signalflow/connect` checks the `authenticate` then the
/// `execute` message and streams what the real service sends for the program (control
/// messages, metadata, binary data messages, END_OF_CHANNEL, or an error); `/v2/metric` checks
/// the token as the REST API does. Every text message received is kept.
struct SignalFlow {
    addr: std::net::SocketAddr,
    received: Arc<parking_lot::Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

const SF_TOKEN: &str = "sf-token-abcdef123";

/// A binary data message (messages/binary.go): a 20-byte header (version, type 5 = data,
/// flags, reserved, channel), then timestamp, count and 17-byte points; `gzip` compresses the
/// body and sets flag 1.
fn data_message(channel: &str, points: &[(u8, i64, [u8; 8])], gzip: bool) -> Vec<u8> {
    let mut body = 1_700_000_060_000u64.to_be_bytes().to_vec();
    body.extend_from_slice(&(points.len() as u32).to_be_bytes());
    for (t, tsid, v) in points {
        body.push(*t);
        body.extend_from_slice(&tsid.to_be_bytes());
        body.extend_from_slice(v);
    }
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        body = gz.finish().unwrap();
    }
    let mut m = vec![1, 5, u8::from(gzip), 0];
    let mut c = [0u8; 16];
    c[..channel.len()].copy_from_slice(channel.as_bytes());
    m.extend_from_slice(&c);
    m.extend_from_slice(&body);
    m
}

impl SignalFlow {
    async fn start() -> Self {
        use axum::extract::ws::{Message, WebSocketUpgrade};
        let received: Arc<parking_lot::Mutex<Vec<Value>>> = Arc::default();
        let seen = Arc::clone(&received);
        let app = axum::Router::new()
            .route(
                "/v2/signalflow/connect",
                axum::routing::get(move |ws: WebSocketUpgrade| {
                    let seen = Arc::clone(&seen);
                    async move {
                        ws.on_upgrade(move |mut socket| async move {
                            let mut next = async || -> Option<Value> {
                                match socket.recv().await? {
                                    Ok(Message::Text(t)) => {
                                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                                        seen.lock().push(v.clone());
                                        Some(v)
                                    }
                                    _ => None,
                                }
                            };
                            let Some(auth) = next().await else { return };
                            if auth != json!({"type": "authenticate", "token": SF_TOKEN}) {
                                return;
                            }
                            let Some(exec) = next().await else { return };
                            let _ = socket
                                .send(Message::Text(json!({"type": "authenticated", "orgId": "org", "userId": "user"}).to_string().into()))
                                .await;
                            let ch = exec["channel"].as_str().unwrap_or("").to_string();
                            let control = |event: &str| Message::Text(json!({"type": "control-message", "channel": ch, "event": event, "timestampMs": 1}).to_string().into());
                            let mut out = vec![control("STREAM_START"), control("JOB_START")];
                            let double = |v: f64| v.to_be_bytes();
                            match exec["program"].as_str().unwrap_or("") {
                                "error" => out.push(Message::Text(json!({"type": "error", "channel": ch, "error": 400,
                                    "errorType": "ANALYTICS_PROGRAM_NAME_ERROR", "message": "name 'dat' is not defined"}).to_string().into())),
                                "empty" => out.push(control("END_OF_CHANNEL")),
                                "multi" => {
                                    out.push(Message::Binary(data_message(&ch, &[(2, 11, double(1.0)), (2, 12, double(2.0))], false).into()));
                                    out.push(control("END_OF_CHANNEL"));
                                }
                                program => {
                                    out.push(Message::Text(json!({"type": "metadata", "channel": ch, "tsId": "AAAAAAAAAAs", "properties": {"sf_metric": "errors"}}).to_string().into()));
                                    out.push(Message::Text(json!({"type": "message", "channel": ch, "logicalTimestampMs": 1, "message": {"messageCode": "JOB_RUNNING_RESOLUTION", "contents": {"resolutionMs": 60000}}}).to_string().into()));
                                    // Another channel's data is not this computation's.
                                    out.push(Message::Binary(data_message("ch-99", &[(2, 99, double(99.0))], false).into()));
                                    out.push(Message::Binary(data_message(&ch, &[(2, 11, double(0.25))], false).into()));
                                    let last = if program.contains("long") {
                                        (1, 11, 7i64.to_be_bytes())
                                    } else {
                                        (2, 11, double(0.75))
                                    };
                                    out.push(Message::Binary(data_message(&ch, &[last], program.contains("gzip")).into()));
                                    out.push(control("END_OF_CHANNEL"));
                                }
                            }
                            for m in out {
                                if socket.send(m).await.is_err() {
                                    return;
                                }
                            }
                            // The client closes; wait for it.
                            while let Some(Ok(_)) = socket.recv().await {}
                        })
                    }
                }),
            )
            .route(
                "/v2/metric",
                axum::routing::get(|headers: axum::http::HeaderMap, q: axum::extract::Query<std::collections::BTreeMap<String, String>>| async move {
                    let ok = headers.get("x-sf-token").and_then(|v| v.to_str().ok()) == Some(SF_TOKEN)
                        && q.get("limit").map(String::as_str) == Some("1");
                    if ok {
                        (axum::http::StatusCode::OK, r#"{"count": 1, "results": [{"name": "cpu.utilization"}]}"#)
                    } else {
                        (axum::http::StatusCode::UNAUTHORIZED, r#"{"code": 401, "message": "Unauthorized"}"#)
                    }
                }),
            );
        let (listener, addr) = aviary_testkit::net::bind_loopback("SignalFlow").await.unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, received, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().clone()
    }
}

impl Drop for SignalFlow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn splunk_signalflow_computation_over_a_websocket() {
    bounded(LIMIT, async {
        let sf = SignalFlow::start().await;
        let f = fixture();
        let t = f.template_with_secret("splunk", &sf.url(), "sfx", [(TOKEN_KEY_NAME, SF_TOKEN)]);
        let program = "data('errors', filter=filter('service', 'podinfo')).sum().publish()";
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let v = run(&f, &t, "1m", program).await.unwrap();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(v, 0.75, "the last point of this channel");
        // authenticate, then execute over 10 × the interval, immediate (splunk.go:99-117).
        let received = sf.received();
        assert_eq!(received[0], json!({"type": "authenticate", "token": SF_TOKEN}));
        let exec = &received[1];
        assert_eq!(exec["type"], "execute");
        assert_eq!(exec["program"], program);
        assert_eq!(exec["channel"], "ch-1");
        assert_eq!(exec["immediate"], true);
        let (start, stop) = (exec["start"].as_i64().unwrap(), exec["stop"].as_i64().unwrap());
        assert_eq!(stop - start, 600_000);
        assert!(before <= stop && stop <= after, "{before} {stop} {after}");
        assert_eq!(exec["resolution"], 0);

        assert_eq!(run(&f, &t, "1m", "gzip").await.unwrap(), 0.75);
        assert_eq!(run(&f, &t, "1m", "long").await.unwrap(), 7.0);
        assert_no_values(&f, &t, &["empty"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "multi").await.unwrap_err()),
            "invalid response: query returned multiple values"
        );
        assert_eq!(
            query_error(run(&f, &t, "1m", "error").await.unwrap_err()),
            "error executing query: 400 (ANALYTICS_PROGRAM_NAME_ERROR): name 'dat' is not defined"
        );

        // Online: GET /v2/metric?limit=1 with X-SF-Token (splunk.go:166-194).
        let canary = check_online(&f, t.clone()).await;
        f.secrets
            .insert("monitoring", "sfx", [(TOKEN_KEY_NAME, "wrong-token-0000")]);
        let e = f.metrics.check_providers(&canary).await.unwrap_err();
        assert!(
            e.ends_with("error response: {\"code\": 401, \"message\": \"Unauthorized\"}"),
            "{e}"
        );
        assert!(!e.contains("wrong-token-0000"));
        f.secrets.insert("monitoring", "sfx", [("token", SF_TOKEN)]);
        assert_provider_error(&f, &t, program, "does not contain sf_token_key").await;
        let no_address = template("splunk", "", Some("sfx"), json!({}));
        let e = provider_error(run(&f, &no_address, "1m", program).await.unwrap_err());
        assert!(e.starts_with("splunk endpoint is not set"), "{e}");
    })
    .await;
}

const TOKEN_KEY_NAME: &str = "sf_token_key";

// === externalmetrics (an external metrics API server) ===

#[tokio::test]
async fn external_metrics_server_with_a_bearer_token() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| {
            if r.header("authorization") != Some("Bearer em-token-777") {
                return Reply::json(401, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}));
            }
            match r.path.as_str() {
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/jobs/queue_depth" => Reply::json(200, json!({
                    "kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
                    "items": [
                        {"metricName": "queue_depth", "metricLabels": {"queue": "orders"}, "timestamp": "2026-12-06T00:00:00Z", "value": "1500m"},
                        {"metricName": "queue_depth", "metricLabels": {"queue": "other"}, "timestamp": "2026-12-06T00:00:00Z", "value": "9"}
                    ]})),
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/idle" | "/apis/external.metrics.k8s.io/v1beta1/namespaces/kube-system/dummy-metric" => {
                    Reply::json(200, json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {}, "items": []}))
                }
                _ => Reply::json(404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})),
            }
        })
        .await;
        let f = fixture();
        let t = f.template_with_secret("externalmetrics", &server.url(), "em", [("token", "em-token-777")]);
        let v = run(&f, &t, "1m", "jobs/queue_depth?labelSelector=queue%3Dorders").await.unwrap();
        assert_eq!(v, 1.5, "the first item's quantity");
        let r = server.only_request();
        assert_eq!(r.method, "GET");
        assert_eq!(r.query["labelSelector"], "queue=orders");
        assert_no_values(&f, &t, &["idle"]).await;
        assert_eq!(
            query_error(run(&f, &t, "1m", "jobs/missing").await.unwrap_err()),
            "error querying external metrics API: the server could not find the requested resource"
        );
        let canary = check_online(&f, t.clone()).await;
        f.secrets.insert("monitoring", "em", [("token", "stale-token-888")]);
        let e = f.metrics.check_providers(&canary).await.unwrap_err();
        assert!(e.ends_with("external metrics service unavailable: Unauthorized"), "{e}");
        // Without an address the provider needs the platform's Kubernetes API.
        let local = template("externalmetrics", "", None, json!({}));
        assert_provider_error(&f, &local, "x", "reads the Kubernetes API").await;
    })
    .await;
}
