//! Real headless Chromium for the dashboard's browser tests: Debian's `chromium` driven
//! through `chromedriver` (WebDriver, with [`fantoccini`]) on a loopback port. The driver runs
//! in a process group of its own; dropping the [`Browser`] kills the group (driver and every
//! Chromium process it started), also when the test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::net::free_port;
use crate::process::Process;
use crate::tool::find;

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Process,
    _profile: tempfile::TempDir,
}

/// `chromedriver` (or `$AVIARY_CHROMEDRIVER`) and `chromium` (or `$AVIARY_CHROMIUM`), or None
/// after a skip notice (a failure under CI=true).
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let install = "apt install chromium chromium-driver";
    let driver = find(
        "chromedriver",
        "AVIARY_CHROMEDRIVER",
        "the browser tests",
        install,
    )?;
    let chromium = find("chromium", "AVIARY_CHROMIUM", "the browser tests", install)?;
    Some((driver, chromium))
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session with a window
    /// of `width` × `height`; None when the binaries are missing (see [`binaries`]).
    pub async fn start(width: u32, height: u32) -> Option<Self> {
        let (driver_bin, chromium) = binaries()?;
        let port = free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = Process::new(cmd.spawn().expect("start chromedriver"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let caps = json!({
            // The dashboard's tests serve HTTPS with certificates of a test CA.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            }
        });
        let caps = caps.as_object().expect("an object").clone();
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(caps.clone());
            match builder.connect(&url).await {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    panic!("no chromedriver session within 30 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        // Screenshots show the viewport: size the window so the viewport is width × height.
        client
            .set_window_size(width, height)
            .await
            .expect("set the window size");
        let inner = client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("the viewport size");
        let inner: (u32, u32) = serde_json::from_value(inner).expect("two numbers");
        let outer = |want: u32, got: u32| (2 * want).saturating_sub(got).max(want);
        client
            .set_window_size(outer(width, inner.0), outer(height, inner.1))
            .await
            .expect("set the window size");
        Some(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Ends the session (Chromium exits) and the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its group; Chromium's processes are in it.
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
    }
}
