//! A test-side stand-in for the ingress-nginx controller around the **real nginx** (Debian's
//! package): it reads the Ingress objects of one namespace from the API server and configures
//! nginx the way ingress-nginx serves a canary Ingress — the main Ingress's backend, and for the
//! Ingress annotated `nginx.ingress.kubernetes.io/canary: "true"` the `canary-by-header`
//! (`-value`, `-pattern`), `canary-by-cookie` and `canary-weight` annotations, in that order of
//! precedence. nginx does the routing (`split_clients` on the request id for the weight, `map`s
//! for header and cookie). ingress-nginx's `nginx_ingress_controller_requests` and
//! `…_response_duration_seconds` series are computed from nginx's access log and served for
//! Prometheus to scrape. Each answer carries `X-Aviary-Backend: primary|canary`.
//!
//! Pods do not run on the test control plane, so the Services' endpoints are the test's: a
//! function from Service name to a loopback address. nginx runs with `master_process off` under
//! testkit's supervisor (it dies with the test) and is restarted on every configuration change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control_plane::process::Supervised;
use crate::error::{Error, Result};
use crate::objects::Objects;

const PREFIX: &str = "nginx.ingress.kubernetes.io";

/// Service name → the address its endpoints answer on, if any.
pub type Endpoints = Arc<dyn Fn(&str) -> Option<SocketAddr> + Send + Sync>;

/// The counters of the access log: (canary label, status) → (requests, seconds).
type Counters = Arc<Mutex<BTreeMap<(String, String), (u64, f64)>>>;

/// The running stand-in; stops nginx and its loop on drop.
pub struct IngressNginx {
    port: u16,
    metrics: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The canary routing ingress-nginx derives from a main and a canary Ingress.
#[derive(Debug, Clone, Default, PartialEq)]
struct Plan {
    ingress: String,
    primary: String,
    canary: Option<Canary>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Canary {
    service: String,
    port: String,
    weight: u32,
    header: Option<String>,
    header_value: Option<String>,
    header_pattern: Option<String>,
    cookie: Option<String>,
}

fn annotation(i: &Value, key: &str) -> Option<String> {
    i["metadata"]["annotations"][format!("{PREFIX}/{key}")]
        .as_str()
        .map(str::to_string)
}

fn first_backend(i: &Value) -> Option<(String, String)> {
    let svc = &i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    let port = svc["port"]["number"]
        .as_i64()
        .map(|p| p.to_string())
        .or_else(|| svc["port"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some((svc["name"].as_str()?.to_string(), port))
}

/// The plan of the Ingresses of a namespace: the first main Ingress and its canary, if any.
fn plan(ingresses: &[Value]) -> Option<Plan> {
    let is_canary = |i: &&Value| annotation(i, "canary").as_deref() == Some("true");
    let main = ingresses.iter().find(|i| !is_canary(i))?;
    let (primary, _) = first_backend(main)?;
    let canary = ingresses.iter().find(is_canary).and_then(|c| {
        let (service, port) = first_backend(c)?;
        Some(Canary {
            service,
            port,
            weight: annotation(c, "canary-weight")
                .and_then(|w| w.parse().ok())
                .unwrap_or(0),
            header: annotation(c, "canary-by-header"),
            header_value: annotation(c, "canary-by-header-value"),
            header_pattern: annotation(c, "canary-by-header-pattern"),
            cookie: annotation(c, "canary-by-cookie"),
        })
    });
    Some(Plan {
        ingress: main["metadata"]["name"].as_str()?.to_string(),
        primary,
        canary,
    })
}

/// nginx's variable for a header or cookie name.
fn var(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The nginx configuration of a plan.
fn config(dir: &Path, port: u16, plan: &Plan, endpoints: &Endpoints) -> String {
    let d = dir.display();
    // A backend without endpoints refuses connections (nginx answers 502), as a Service would.
    let server = |svc: &str| endpoints(svc).map_or_else(|| "127.0.0.1:1".to_string(), |a| a.to_string());
    let mut maps = String::new();
    let c = plan.canary.clone().unwrap_or_default();
    let weighted = match c.weight {
        0 => "map $request_id $aviary_weighted { default primary; }".to_string(),
        w if w >= 100 => "map $request_id $aviary_weighted { default canary; }".to_string(),
        w => format!("split_clients \"${{request_id}}\" $aviary_weighted {{ {w}% canary; * primary; }}"),
    };
    maps.push_str(&weighted);
    maps.push('\n');
    match &c.header {
        Some(h) => {
            let rules = if let Some(v) = &c.header_value {
                format!("{} canary;", quote(v))
            } else if let Some(p) = &c.header_pattern {
                format!("~{} canary;", quote(p))
            } else {
                "always canary; never primary;".to_string()
            };
            maps.push_str(&format!(
                "map $http_{} $aviary_by_header {{ {rules} default \"\"; }}\n",
                var(h)
            ));
        }
        None => maps.push_str("map $request_id $aviary_by_header { default \"\"; }\n"),
    }
    match &c.cookie {
        Some(k) => maps.push_str(&format!(
            "map $cookie_{} $aviary_by_cookie {{ always canary; never primary; default \"\"; }}\n",
            var(k)
        )),
        None => maps.push_str("map $request_id $aviary_by_cookie { default \"\"; }\n"),
    }
    let (canary_server, canary_label) = match &plan.canary {
        Some(c) => (server(&c.service), format!("{}-{}", c.service, c.port)),
        None => ("127.0.0.1:1".to_string(), String::new()),
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  {maps}
  # ingress-nginx's precedence: header, then cookie, then weight.
  map "$aviary_by_header|$aviary_by_cookie" $aviary_pinned {{
    ~^canary canary; ~^primary primary; ~^\|canary canary; ~^\|primary primary; default "";
  }}
  map $aviary_pinned $aviary_backend {{ canary canary; primary primary; default $aviary_weighted; }}
  map $aviary_backend $aviary_canary {{ canary "{canary_label}"; default ""; }}
  log_format aviary '$status $request_time $aviary_canary';
  access_log {d}/access.log aviary;
  upstream primary {{ server {primary}; }}
  upstream canary {{ server {canary_server}; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$aviary_backend;
      proxy_set_header Host $host;
      # Which backend answered, for tests that measure the split.
      add_header X-Aviary-Backend $aviary_backend always;
    }}
  }}
}}
"#,
        primary = server(&plan.primary),
    )
}

/// Adds the access log's new lines (`status seconds canary`) to the counters.
fn count(log: &str, counters: &Counters) {
    let mut c = counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for line in log.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(status), Some(secs)) = (parts.next(), parts.next()) else {
            continue;
        };
        let canary = parts.next().unwrap_or_default().trim().to_string();
        let e = c.entry((canary, status.to_string())).or_default();
        e.0 += 1;
        e.1 += secs.parse::<f64>().unwrap_or(0.0);
    }
}

/// The counters in Prometheus' text format, with ingress-nginx's metric names and labels.
fn exposition(ns: &str, ingress: &str, counters: &Counters) -> String {
    let mut out = String::from(
        "# TYPE nginx_ingress_controller_requests counter\n# TYPE nginx_ingress_controller_response_duration_seconds summary\n",
    );
    for ((canary, status), (n, secs)) in counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        let labels = format!(
            "namespace=\"{ns}\",ingress=\"{ingress}\",canary=\"{}\",status=\"{status}\"",
            if canary.is_empty() {
                String::new()
            } else {
                format!("{ns}-{canary}")
            }
        );
        out.push_str(&format!("nginx_ingress_controller_requests{{{labels}}} {n}\n"));
        out.push_str(&format!(
            "nginx_ingress_controller_response_duration_seconds_sum{{{labels}}} {secs}\n"
        ));
        out.push_str(&format!(
            "nginx_ingress_controller_response_duration_seconds_count{{{labels}}} {n}\n"
        ));
    }
    out
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("choosing a free port", e))
}

struct Loop {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    ns: String,
    objects: Objects,
    endpoints: Endpoints,
    counters: Counters,
    ingress: Arc<Mutex<String>>,
    nginx: Option<Supervised>,
    config: String,
    offset: usize,
}

impl Loop {
    async fn tick(&mut self) {
        let ingresses = self
            .objects
            .list("networking.k8s.io/v1", "Ingress", Some(&self.ns))
            .await
            .unwrap_or_default();
        if let Some(plan) = plan(&ingresses) {
            *self
                .ingress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = plan.ingress.clone();
            let config = config(&self.dir, self.port, &plan, &self.endpoints);
            if config != self.config {
                self.restart(&config);
                self.config = config;
            }
        }
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        if log.len() > self.offset {
            // Only whole lines: the last one may still be written.
            let end = log[self.offset..]
                .rfind('\n')
                .map_or(self.offset, |i| self.offset + i + 1);
            count(&log[self.offset..end], &self.counters);
            self.offset = end;
        }
    }

    fn restart(&mut self, config: &str) {
        if let Some(old) = self.nginx.take() {
            old.kill();
        }
        let path = self.dir.join("nginx.conf");
        if std::fs::write(&path, config).is_err() {
            return;
        }
        let args = vec![
            "-p".to_string(),
            self.dir.display().to_string(),
            "-c".to_string(),
            path.display().to_string(),
        ];
        match Supervised::spawn("nginx", &self.binary, &args, &self.dir.join("nginx.log")) {
            Ok(p) => self.nginx = Some(p),
            Err(e) => tracing::warn!("nginx did not start: {e}"),
        }
    }
}

impl IngressNginx {
    /// Serves the Ingresses of `ns` with the nginx at `binary` on a free loopback port.
    pub async fn start(binary: &Path, objects: Objects, ns: &str, endpoints: Endpoints) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("creating nginx's directory", e))?;
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(sub))
                .map_err(|e| Error::io("creating nginx's directory", e))?;
        }
        let port = free_port()?;
        let counters: Counters = Arc::default();
        let ingress: Arc<Mutex<String>> = Arc::default();
        let stop = CancellationToken::new();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the metrics endpoint", e))?;
        let metrics = listener
            .local_addr()
            .map_err(|e| Error::io("binding the metrics endpoint", e))?;
        let (c, i, n) = (counters.clone(), ingress.clone(), ns.to_string());
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = exposition(
                    &n,
                    &i.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                    &c,
                );
                async move { text }
            }),
        );
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { serve_stop.cancelled().await })
                .await;
        });

        let mut lp = Loop {
            binary: binary.to_path_buf(),
            dir: dir.path().to_path_buf(),
            port,
            ns: ns.to_string(),
            objects,
            endpoints,
            counters,
            ingress,
            nginx: None,
            config: String::new(),
            offset: 0,
        };
        let loop_stop = stop.clone();
        let task = tokio::spawn(async move {
            while !loop_stop.is_cancelled() {
                lp.tick().await;
                tokio::select! {
                    () = loop_stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            if let Some(p) = lp.nginx.take() {
                tokio::task::spawn_blocking(move || p.kill());
            }
        });
        Ok(Self {
            port,
            metrics,
            stop,
            task: Some(task),
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`, where nginx listens.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where ingress-nginx's metrics are served (`/metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }
}

impl Drop for IngressNginx {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_follows_ingress_nginx_annotations() {
        let main = json!({"metadata": {"name": "podinfo"}, "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}]}}]}});
        let mut canary = main.clone();
        canary["metadata"] = json!({"name": "podinfo-canary", "annotations": {
            "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "30",
            "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary", "nginx.ingress.kubernetes.io/canary-by-header-value": "insider"}});
        canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] =
            json!("podinfo-canary");
        let p = plan(&[canary, main]).unwrap();
        assert_eq!(p.ingress, "podinfo");
        assert_eq!(p.primary, "podinfo");
        let c = p.canary.clone().unwrap();
        assert_eq!((c.service.as_str(), c.weight), ("podinfo-canary", 30));
        let endpoints: Endpoints = Arc::new(|_| None);
        let conf = config(Path::new("/d"), 8080, &p, &endpoints);
        assert!(conf.contains("30% canary; * primary;"), "{conf}");
        assert!(
            conf.contains("map $http_x_canary $aviary_by_header { \"insider\" canary;"),
            "{conf}"
        );
        let counters: Counters = Arc::default();
        count(
            "200 0.002 podinfo-canary-80\n500 0.001 podinfo-canary-80\n200 0.003 \n",
            &counters,
        );
        let text = exposition("test", "podinfo", &counters);
        assert!(text.contains(
            r#"nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary="test-podinfo-canary-80",status="500"} 1"#
        ), "{text}");
        assert!(text.contains(r#"canary="",status="200"} 1"#), "{text}");
    }
}
