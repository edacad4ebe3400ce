//! The real Prometheus (Debian's package) on a free loopback port, scraping static targets every
//! second; supervised, so it dies with the test.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::control_plane::process::Supervised;
use crate::error::{Error, Result};

/// A running Prometheus.
pub struct Prometheus {
    url: String,
    _process: Supervised,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `/metrics` of `targets` every second (job `aviary-test`).
    pub async fn start(binary: &Path, targets: &[SocketAddr]) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("creating Prometheus' directory", e))?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n- job_name: aviary-test\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  \
             static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(|e| Error::io("writing prometheus.yml", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("choosing a free port", e))?
            .port();
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ];
        let mut process = Supervised::spawn("prometheus", binary, &args, &dir.path().join("prometheus.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if ready(port).await {
                return Ok(Self {
                    url,
                    _process: process,
                    _dir: dir,
                });
            }
            process.check_running()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Setup(format!("Prometheus did not become ready at {url}")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// True when `GET /-/ready` answers 200 (over plain TCP: testkit has no HTTP client).
async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf).await, Ok(n) if n >= 12 && &buf[9..12] == b"200")
}
