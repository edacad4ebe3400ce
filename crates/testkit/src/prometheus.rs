//! The real Prometheus (Debian's `prometheus` package) for tests: started on a free loopback
//! port with static scrape targets, scraping every second, stopped on drop; its HTTP API read
//! with the real `curl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::tool::find;

/// The prometheus binary (`PROMETHEUS`, else the PATH), or `None` after a skip notice; with
/// `CI=true` a missing Prometheus fails the test.
pub fn binary(needed_by: &str) -> Option<PathBuf> {
    find(
        "prometheus",
        "PROMETHEUS",
        needed_by,
        "Debian: apt-get install prometheus",
    )
}

/// One scrape job: its name and `host:port` targets (scraped on `/metrics`).
pub struct Job {
    pub name: String,
    pub targets: Vec<String>,
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
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
    /// Starts `binary` scraping `jobs` every second and waits until it is ready (30 s at most).
    pub fn start(binary: &Path, jobs: &[Job]) -> Result<Self> {
        Self::start_labelled(binary, jobs, &[])
    }

    /// [`Prometheus::start`], with `labels` added to every target (e.g. what a Kubernetes pod
    /// scrape config's relabelling adds).
    pub fn start_labelled(binary: &Path, jobs: &[Job], labels: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("a Prometheus directory", e))?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for j in jobs {
            let targets: Vec<String> = j.targets.iter().map(|t| format!("{t:?}")).collect();
            config.push_str(&format!(
                "  - job_name: {:?}\n    static_configs:\n      - targets: [{}]\n",
                j.name,
                targets.join(", ")
            ));
            if !labels.is_empty() {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
                config.push_str(&format!("        labels: {{{}}}\n", labels.join(", ")));
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(|e| Error::io("writing prometheus.yml", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("a free port for Prometheus", e))?
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;
        let p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if curl(&format!("{}/-/ready", p.url), &[]).is_some() {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Setup(format!(
            "prometheus did not become ready at {}",
            p.url
        )))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /api/v1/PATH` with URL-encoded `params`: the answer's `data` (an error when the API
    /// says `status: error`, naming the error and the parameters).
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}/api/v1/{path}", self.url);
        let body =
            curl(&url, params).ok_or_else(|| Error::Setup(format!("GET {url} {params:?}: no answer")))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| Error::Setup(format!("GET {url} {params:?}: not JSON ({e}): {body}")))?;
        if v["status"] != "success" {
            return Err(Error::Setup(format!(
                "GET {url} {params:?}: {} {}",
                v["errorType"], v["error"]
            )));
        }
        Ok(v["data"].clone())
    }

    /// Waits until every target of every job was scraped successfully.
    pub fn wait_for_targets(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < timeout {
            if let Ok(d) = self.api("targets", &[("state", "active")]) {
                let targets = d["activeTargets"].as_array().cloned().unwrap_or_default();
                if !targets.is_empty() && targets.iter().all(|t| t["health"] == "up") {
                    return Ok(());
                }
                last = d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Error::Timeout {
            what: "every Prometheus target up".into(),
            timeout,
            last: format!("; last seen: {last}"),
        })
    }
}

/// The body of a successful `GET url` (2xx) with `params` URL-encoded by curl, else `None`.
fn curl(url: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-f", "--max-time", "20", "-G", url]);
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
