//! The real Prometheus (Debian package) scraping a real sample app: a MetricTemplate query and
//! the HTTP observer's built-in queries through `ProviderMetrics`, with real values.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aviary_api::{Canary, MetricTemplate};
use aviary_core::ports::{BuiltinMetric, MetricError, MetricModel, Metrics};
use aviary_local::sample_app::{SampleApp, SampleAppArgs};
use aviary_providers::{PrometheusBuiltins, ProviderMetrics, ResourceStore, StaticSecrets};
use common::bounded;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Stops Prometheus however the test ends.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port scraping `target` every second, with the labels
    /// a Kubernetes pod scrape config would add.
    async fn start(binary: &std::path::Path, target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: podinfo
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["{target}"]
    relabel_configs:
      # What `kubernetes_sd_configs` + the usual relabelling produce for a pod.
      - target_label: kubernetes_namespace
        replacement: test
      - target_label: kubernetes_pod_name
        replacement: podinfo-7d9c8b6f5-x2k4p
"#
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not become ready at {}", p.url);
    }
}

fn canary(metrics_server: &str) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": "kubernetes",
            "metricsServer": metrics_server,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "10s", "threshold": 5, "iterations": 10, "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
                {"name": "requests", "templateRef": {"name": "requests", "namespace": "test"}, "interval": "1m"},
            ]},
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_template_and_builtin_queries() {
    let Some(binary) = common::tool("prometheus") else {
        return;
    };
    bounded(Duration::from_secs(120), async {
        let app = SampleApp::start(SampleAppArgs {
            port: 0,
            version: "6.0.1".into(),
            latency_ms: 20,
            ..Default::default()
        })
        .await
        .unwrap();
        let app_addr = app.local_addr();
        let prom = Prometheus::start(&binary, app_addr).await;

        // Steady traffic: nine successes for every server error.
        let stop = CancellationToken::new();
        let sent_ok = Arc::new(AtomicU64::new(0));
        let traffic = {
            let stop = stop.clone();
            let sent_ok = Arc::clone(&sent_ok);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    let path = if i % 10 == 9 { "/status/500" } else { "/" };
                    if let Ok(r) = client.get(format!("http://{app_addr}{path}")).send().await
                        && r.status() == 200
                    {
                        sent_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };

        let store = ResourceStore::new();
        let builtins = PrometheusBuiltins::new("http://127.0.0.1:9", "kubernetes").unwrap();
        let metrics = ProviderMetrics::new(
            Arc::new(store.clone()),
            Arc::new(StaticSecrets::new()),
            Arc::new(builtins),
        )
        .unwrap();
        let template: MetricTemplate = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": "requests", "namespace": "test"},
            "spec": {
                "provider": {"type": "prometheus", "address": prom.url},
                "query": "sum(http_requests_total{kubernetes_namespace=\"{{ namespace }}\", path=\"/\", status=\"200\"})",
            },
        }))
        .unwrap();
        store.insert_template(template.clone());
        let c = canary(&prom.url);
        metrics.check_providers(&c).await.expect("prometheus and the template are online");

        let model = MetricModel {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: Default::default(),
        };
        // Wait until rate() has at least two scrapes with traffic.
        let mut first = None;
        for _ in 0..60 {
            match metrics.builtin(&c, BuiltinMetric::SuccessRate, &model).await {
                Ok(v) => {
                    first = Some(v);
                    break;
                }
                Err(MetricError::NoValues(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => panic!("built-in success rate failed: {e}"),
            }
        }
        assert!(first.is_some(), "prometheus never had samples of the sample app");
        // A few more scrapes so that the window holds a steady mix.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let success_rate = metrics.builtin(&c, BuiltinMetric::SuccessRate, &model).await.unwrap();
        assert!(
            (80.0..97.0).contains(&success_rate),
            "success rate {success_rate}% (first {first:?}), expected about 90%"
        );
        let p99_ms = metrics.builtin(&c, BuiltinMetric::Duration, &model).await.unwrap();
        assert!(
            (10.0..=250.0).contains(&p99_ms),
            "p99 {p99_ms} ms with 20 ms of added latency"
        );

        // The MetricTemplate query: the engine renders it; here it is rendered the same way.
        let rendered =
            aviary_core::template::render(template.spec.query.as_deref().unwrap(), &model).unwrap();
        let requests = metrics.query("requests", &template, "1m", &rendered).await.unwrap();
        let sent = sent_ok.load(Ordering::SeqCst) as f64;
        assert!(requests > 10.0 && requests <= sent, "counter {requests}, sent {sent}");

        eprintln!("measured: success rate {success_rate:.2}%, p99 {p99_ms:.2} ms, {requests} requests of {sent} sent");

        // Labels that match nothing: "no values found", as with a canary that gets no traffic.
        let mut idle = model.clone();
        idle.target = "other-app".into();
        assert!(matches!(
            metrics.builtin(&c, BuiltinMetric::SuccessRate, &idle).await,
            Err(MetricError::NoValues(_))
        ));

        stop.cancel();
        traffic.await.unwrap();
        drop(prom);
        app.stop().await;
    })
    .await;
}
