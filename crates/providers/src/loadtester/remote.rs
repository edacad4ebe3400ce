//! Task types that drive another load-testing server over HTTP: `concord` (a Concord process,
//! Flagger's pkg/loadtester/concord.go) and `ngrinder` (an nGrinder performance test,
//! task_ngrinder.go).
//!
//! - `concord` blocks like `bash`: it starts a process (`POST {server}/api/v1/process`,
//!   multipart form with `org`, `project`, `repo`, `entryPoint`, `arguments.endpoint` and every
//!   `arguments.*` of the metadata; `Authorization` = the content of the file `apiKeyPath`),
//!   then reads `GET /api/v1/process/{id}` every `pollInterval` seconds (default 5): FINISHED is
//!   a pass, FAILED a failure. `pollTimeout` (seconds, default 30) bounds the polling.
//! - `ngrinder` runs in the background like `cmd` (answered 202): it clones and starts the test
//!   `clone` (`POST {server}/perftest/api/{clone}/clone_and_start`, basic auth with `username`
//!   and the base64-decoded `passwd`), then reads `GET perftest/api/{id}/status` every
//!   `pollInterval` until FINISHED, STOP_BY_ERROR, CANCELED or UNKNOWN; past the load tester's
//!   `--timeout` it asks the test to stop (`PUT perftest/api/{id}?action=stop`).
//!
//! Deliberate differences: Concord's `pollTimeout` bounds the whole polling (Flagger's timer is
//! re-armed on every poll, so it never fires while polls are due); nGrinder's `pollInterval` is
//! a Go duration (`5s`; Flagger multiplies the parsed duration by a second again, so any value
//! set means never polling, and uses 1s only when unset); an answer without a test id is a
//! failure (Flagger's load tester panics); with `--concord-key-dir`, `apiKeyPath` must lie in
//! that directory, and the key file is at most 4 KiB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::http::body_text;

/// Concord's process API.
const CONCORD_PROCESS: &str = "/api/v1/process";
const CONCORD_POLL_INTERVAL: u64 = 5;
const CONCORD_POLL_TIMEOUT: u64 = 30;
/// Flagger's Concord HTTP client timeout (concord.go:143).
const CONCORD_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest Concord API key file read.
pub(crate) const MAX_KEY_FILE: u64 = 4096;
/// One nGrinder request (Flagger's has none but the task's).
const NGRINDER_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A Concord task.
#[derive(Debug, Clone)]
pub(crate) struct Concord {
    server: Url,
    org: String,
    project: String,
    repo: String,
    entrypoint: String,
    api_key_path: PathBuf,
    endpoint: String,
    arguments: BTreeMap<String, String>,
    poll_interval: Duration,
    poll_timeout: Duration,
}

fn required<'a>(meta: &'a BTreeMap<String, String>, key: &str) -> Result<&'a String, String> {
    meta.get(key)
        .ok_or_else(|| format!("`{key}` is required with type concord"))
}

fn seconds(meta: &BTreeMap<String, String>, key: &str, default: u64) -> Result<Duration, String> {
    match meta.get(key) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("unable to convert `{key}` to int")),
    }
}

impl Concord {
    /// Flagger's `NewConcordTask` (concord.go:68-145): every field is required but the poll
    /// settings; `arguments.endpoint` may not be set through the arguments.
    pub(crate) fn from_metadata(
        meta: &BTreeMap<String, String>,
        key_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let server = required(meta, "server")?;
        let server = Url::parse(server)
            .map_err(|_| "failed to create base URL from metadata `concord_url`".to_string())?;
        let org = required(meta, "org")?.clone();
        let project = required(meta, "project")?.clone();
        let repo = required(meta, "repo")?.clone();
        let entrypoint = required(meta, "entrypoint")?.clone();
        let api_key_path = PathBuf::from(required(meta, "apiKeyPath")?);
        if !api_key_path.exists() {
            return Err(format!(
                "`apiKeyPath` file doesn't exist {}",
                api_key_path.display()
            ));
        }
        if let Some(dir) = key_dir {
            let inside = std::fs::canonicalize(&api_key_path)
                .ok()
                .zip(std::fs::canonicalize(dir).ok())
                .is_some_and(|(file, dir)| file.starts_with(dir));
            if !inside {
                return Err(format!(
                    "`apiKeyPath` {} is outside --concord-key-dir {}",
                    api_key_path.display(),
                    dir.display()
                ));
            }
        }
        let endpoint = required(meta, "endpoint")?.clone();
        let poll_interval = seconds(meta, "pollInterval", CONCORD_POLL_INTERVAL)?;
        let poll_timeout = seconds(meta, "pollTimeout", CONCORD_POLL_TIMEOUT)?;
        if meta.contains_key("arguments.endpoint") {
            return Err(
                "You cannot override Endpoint through arguments. You must override Endpoint directly".into(),
            );
        }
        let arguments = meta
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("arguments.").map(|a| (a.to_string(), v.clone())))
            .collect();
        Ok(Self {
            server,
            org,
            project,
            repo,
            entrypoint,
            api_key_path,
            endpoint,
            arguments,
            poll_interval,
            poll_timeout,
        })
    }

    /// The API key, read for every request as Flagger does (a rotated Secret is picked up).
    fn api_key(&self) -> Result<String, String> {
        let path = &self.api_key_path;
        let len = std::fs::metadata(path)
            .map_err(|e| format!("reading `apiKeyPath` {}: {e}", path.display()))?
            .len();
        if len > MAX_KEY_FILE {
            return Err(format!(
                "`apiKeyPath` {} is {len} bytes; an API key file has at most {MAX_KEY_FILE}",
                path.display()
            ));
        }
        let key = std::fs::read_to_string(path)
            .map_err(|e| format!("reading `apiKeyPath` {}: {e}", path.display()))?;
        Ok(key.trim_end().to_string())
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = self.server.join(path).map_err(|e| format!("{path}: {e}"))?;
        tracing::info!(url = %crate::http::shown_url(&url), "calling endpoint");
        let mut req = client.request(method, url).timeout(CONCORD_HTTP_TIMEOUT);
        let key = self.api_key()?;
        if !key.is_empty() {
            let mut v = reqwest::header::HeaderValue::from_str(&key)
                .map_err(|_| "the `apiKeyPath` file is not a valid header value".to_string())?;
            v.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, v);
        }
        Ok(req)
    }

    /// Decodes a process answer; like Flagger, the HTTP status is not looked at.
    async fn process(req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = req.send().await.map_err(|e| crate::http::error_text(&e))?;
        let body = resp.bytes().await.map_err(|e| crate::http::error_text(&e))?;
        serde_json::from_slice(&body).map_err(|e| format!("{e}: {}", body_text(&body)))
    }

    /// Starts the process and waits for its end (concord.go:155-282); `Err` says why it did
    /// not pass, without the API key (an upstream may quote the request back), bounded.
    pub(crate) async fn run(
        &self,
        client: &reqwest::Client,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let mut redactor = crate::http::Redactor::new();
        if let Ok(key) = self.api_key() {
            redactor.header_value(&key);
        }
        self.start_and_wait(client, cancel)
            .await
            .map_err(|e| crate::http::bounded(&redactor.redact(&e), crate::http::MAX_ERROR))
    }

    async fn start_and_wait(
        &self,
        client: &reqwest::Client,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let mut form = reqwest::multipart::Form::new()
            .text("org", self.org.clone())
            .text("project", self.project.clone())
            .text("repo", self.repo.clone())
            .text("entryPoint", self.entrypoint.clone())
            .text("arguments.endpoint", self.endpoint.clone());
        for (k, v) in &self.arguments {
            form = form.text(format!("arguments.{k}"), v.clone());
        }
        let req = self
            .request(client, reqwest::Method::POST, CONCORD_PROCESS)?
            .multipart(form);
        let started = Self::process(req).await?;
        let id = started["instanceId"].as_str().unwrap_or_default().to_string();
        tracing::info!(
            id = ?id,
            ok = started["ok"].as_bool().unwrap_or(false),
            "created process"
        );
        let deadline = tokio::time::Instant::now() + self.poll_timeout;
        let mut ticks = poll_ticks(self.poll_interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "concord process timed out, after {} seconds",
                        self.poll_timeout.as_secs()
                    ));
                }
                () = cancel.cancelled() => return Err("context timedout".into()),
            }
            let req = self
                .request(client, reqwest::Method::GET, &format!("{CONCORD_PROCESS}/{id}"))
                .map_err(|e| format!("failed to generate request: {e}"))?;
            let process = Self::process(req)
                .await
                .map_err(|e| format!("failed checking status: {e}"))?;
            let status = process["status"].as_str().unwrap_or_default();
            tracing::info!(id = ?id, status = ?status, "process status");
            match status {
                "FINISHED" => return Ok(()),
                "FAILED" => return Err(format!("concord instanceID: {id} failed")),
                _ => {}
            }
        }
    }
}

/// An nGrinder task.
#[derive(Clone)]
pub(crate) struct NGrinder {
    server: Url,
    clone: i64,
    username: String,
    password: String,
    poll_interval: Duration,
}

impl std::fmt::Debug for NGrinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NGrinder")
            .field("server", &crate::http::shown_url(&self.server))
            .field("clone", &self.clone)
            .finish_non_exhaustive()
    }
}

impl NGrinder {
    /// Flagger's factory (task_ngrinder.go:36-69).
    pub(crate) fn from_metadata(meta: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
        let (server, clone, username, passwd) = (get("server"), get("clone"), get("username"), get("passwd"));
        if server.is_empty() || clone.is_empty() || username.is_empty() || passwd.is_empty() {
            return Err("server, clone, username and passwd are required metadata".into());
        }
        let server = Url::parse(server).map_err(|e| format!("invalid url: {server}: {e}"))?;
        let clone = clone
            .parse::<i64>()
            .map_err(|e| format!("metadata clone must be integer: strconv.Atoi: parsing {clone:?}: {e}"))?;
        let password = base64::engine::general_purpose::STANDARD
            .decode(passwd)
            .map_err(|e| format!("metadata password is invalid: {e}"))?;
        let poll_interval = aviary_api::duration::parse_go_duration(get("pollInterval"))
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(1));
        Ok(Self {
            server,
            clone,
            username: username.to_string(),
            password: String::from_utf8_lossy(&password).into_owned(),
            poll_interval,
        })
    }

    /// The running tasks' key: one per canary and template test (task_ngrinder.go:86-88).
    pub(crate) fn key(&self) -> String {
        format!("ngrinder {} {}", self.server, self.clone)
    }

    /// One API call; its errors (only logged) never show the credentials.
    async fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Value, String> {
        let answer = async {
            let url = self.server.join(path).map_err(|e| format!("{path}: {e}"))?;
            tracing::debug!(url = %crate::http::shown_url(&url), %method, "nGrinder request");
            let resp = client
                .request(method, url)
                .timeout(NGRINDER_HTTP_TIMEOUT)
                .basic_auth(&self.username, Some(&self.password))
                .send()
                .await
                .map_err(|e| format!("request failed: {}", crate::http::error_text(&e)))?;
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("reading response body failed: {}", crate::http::error_text(&e)))?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| format!("json unmarshalling failed: {e} for {}", body_text(&body)))?;
            if v["success"] == Value::Bool(false) {
                return Err(format!("request failed: {}", body_text(&body)));
            }
            Ok(v)
        };
        let mut redactor = crate::http::Redactor::new();
        redactor.basic(&self.username, Some(&self.password));
        answer
            .await
            .map_err(|e| crate::http::bounded(&redactor.redact(&e), crate::http::MAX_ERROR))
    }

    /// Clones and starts the test, then polls it until it ends or `timeout` passes (then it is
    /// stopped). `true` when it finished (task_ngrinder.go:104-149).
    pub(crate) async fn run(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> bool {
        let started = match self
            .request(
                client,
                reqwest::Method::POST,
                &format!("perftest/api/{}/clone_and_start", self.clone),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(clone = self.clone, "failed to clone and start ngrinder test: {e}");
                return false;
            }
        };
        let Some(id) = started["id"].as_f64().map(|f| f as i64) else {
            tracing::error!(clone = self.clone, "clone_and_start answered no test id");
            return false;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticks = poll_ticks(self.poll_interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = cancel.cancelled() => break,
            }
            // A failed status request is tried again at the next tick.
            if let Ok(v) = self
                .request(client, reqwest::Method::GET, &format!("perftest/api/{id}/status"))
                .await
            {
                let status = v["status"][0]["status_id"].as_str().unwrap_or_default();
                tracing::debug!(test = id, status, "nGrinder test status");
                match status {
                    "FINISHED" => return true,
                    "STOP_BY_ERROR" | "CANCELED" | "UNKNOWN" => return false,
                    _ => {}
                }
            }
        }
        tracing::warn!(test = id, "timed out: stopping the nGrinder test");
        if let Err(e) = self
            .request(
                client,
                reqwest::Method::PUT,
                &format!("perftest/api/{id}?action=stop"),
            )
            .await
        {
            tracing::warn!(test = id, "stopping the nGrinder test failed: {e}");
        }
        false
    }
}

/// Ticks every `interval`, the first one `interval` from now (a poll never comes at once).
fn poll_ticks(interval: std::time::Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::string_map as meta;

    #[test]
    fn concord_metadata_is_checked_like_flaggers() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "api-key\n").unwrap();
        let key = key.to_str().unwrap();
        let full = [
            ("server", "http://concord:8001"),
            ("org", "o"),
            ("project", "p"),
            ("repo", "r"),
            ("entrypoint", "main"),
            ("apiKeyPath", key),
            ("endpoint", "http://podinfo-canary:9898"),
            ("arguments.users", "10"),
        ];
        let c = Concord::from_metadata(&meta(&full), None).unwrap();
        assert_eq!(c.arguments, meta(&[("users", "10")]));
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.poll_timeout, Duration::from_secs(30));
        assert_eq!(c.api_key().unwrap(), "api-key");
        for missing in [
            "server",
            "org",
            "project",
            "repo",
            "entrypoint",
            "apiKeyPath",
            "endpoint",
        ] {
            let m: Vec<_> = full.iter().copied().filter(|(k, _)| *k != missing).collect();
            assert_eq!(
                Concord::from_metadata(&meta(&m), None).unwrap_err(),
                format!("`{missing}` is required with type concord")
            );
        }
        let mut m = meta(&full);
        m.insert("apiKeyPath".into(), "/nonexistent/key".into());
        assert_eq!(
            Concord::from_metadata(&m, None).unwrap_err(),
            "`apiKeyPath` file doesn't exist /nonexistent/key"
        );
        let mut m = meta(&full);
        m.insert("arguments.endpoint".into(), "x".into());
        assert!(
            Concord::from_metadata(&m, None)
                .unwrap_err()
                .starts_with("You cannot override Endpoint")
        );
        let mut m = meta(&full);
        m.insert("pollInterval".into(), "5s".into());
        assert_eq!(
            Concord::from_metadata(&m, None).unwrap_err(),
            "unable to convert `pollInterval` to int"
        );
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(
            Concord::from_metadata(&meta(&full), Some(elsewhere.path()))
                .unwrap_err()
                .contains("is outside --concord-key-dir")
        );
        assert!(Concord::from_metadata(&meta(&full), Some(dir.path())).is_ok());
    }

    #[test]
    fn ngrinder_metadata_is_checked_like_flaggers() {
        let ok = [
            ("server", "http://ngrinder:8080/"),
            ("clone", "42"),
            ("username", "admin"),
            ("passwd", "YWRtaW4="),
        ];
        let n = NGrinder::from_metadata(&meta(&ok)).unwrap();
        assert_eq!(n.password, "admin");
        assert_eq!(n.poll_interval, Duration::from_secs(1));
        let mut m = meta(&ok);
        m.insert("pollInterval".into(), "250ms".into());
        assert_eq!(
            NGrinder::from_metadata(&m).unwrap().poll_interval,
            Duration::from_millis(250)
        );
        m.remove("username");
        assert_eq!(
            NGrinder::from_metadata(&m).unwrap_err(),
            "server, clone, username and passwd are required metadata"
        );
        for (key, value, error) in [
            ("clone", "x", "metadata clone must be integer"),
            ("passwd", "%%%", "metadata password is invalid"),
        ] {
            let mut m = meta(&ok);
            m.insert(key.into(), value.into());
            let e = NGrinder::from_metadata(&m).unwrap_err();
            assert!(e.starts_with(error), "{key}={value}: {e}");
        }
    }
}
