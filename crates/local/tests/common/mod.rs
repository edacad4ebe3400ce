//! Helpers shared by the integration tests: a small HTTP client and sample apps on ephemeral ports.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use aviary_local::sample_app::{SampleApp, SampleAppArgs};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn backend(&self) -> &str {
        self.headers
            .get("x-aviary-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// GET `http://addr{path}` with `headers`, bounded to 10 s.
pub async fn get(client: &HttpClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("response within 10s")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// An in-process sample app on an ephemeral port.
pub async fn sample_app(version: &str, error_rate: f64, latency_ms: u64) -> SampleApp {
    SampleApp::start(SampleAppArgs {
        port: 0,
        version: version.to_owned(),
        error_rate,
        latency_ms,
        ..SampleAppArgs::default()
    })
    .await
    .expect("sample app starts")
}

/// The value of `http_requests_total` for `path` and `status` in a sample app's `/metrics`.
pub async fn request_count(client: &HttpClient, app: SocketAddr, path: &str, status: u16) -> u64 {
    let metrics = get(client, app, "/metrics", &[]).await.body;
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter(|l| l.contains(&format!("path=\"{path}\"")) && l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls `check` every 20 ms for at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
