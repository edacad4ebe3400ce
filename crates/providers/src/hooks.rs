//! The engine's `Hooks` port: Flagger's webhook calls.
//!
//! Each call POSTs the payload as JSON. `timeout` bounds each attempt (default 10 s; values
//! shorter than two characters mean the default, as in Flagger). `retries` adds attempts on
//! connection errors and timeouts, 429, and 5xx other than 501, waiting `base × 2^attempt`
//! (1 s, 2 s, 4 s, … capped at 30 s; a `Retry-After` in seconds on 429/503 is honoured up to the
//! cap). `disableTLS` skips certificate verification. A status ≤ 202 passes; anything else fails
//! with the response body as the error text, or `POST <url> giving up after N attempt(s)` when the
//! retries ran out. Errors show the URL without its user, password and query (`?[redacted]`:
//! a query often holds a token), and remove those from the quoted body too, which is cut to
//! 1 KiB with a `… [truncated, N bytes]` marker.

use std::time::Duration;

use async_trait::async_trait;
use aviary_api::canary::CanaryWebhook;
use aviary_api::defaults::DEFAULT_WEBHOOK_TIMEOUT;
use aviary_api::duration::parse_go_duration;
use aviary_core::ports::{HookPayload, Hooks};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::error::Result;
use crate::http::{self, Clients};

/// The first retry's wait.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Webhook calls over HTTP.
#[derive(Debug)]
pub struct HttpHooks {
    clients: Clients,
    base: Duration,
    cap: Duration,
}

impl HttpHooks {
    /// With Flagger's backoff (1 s doubling, capped at 30 s).
    pub fn new() -> Result<Self> {
        Ok(Self {
            clients: Clients::new()?,
            base: DEFAULT_BACKOFF_BASE,
            cap: DEFAULT_BACKOFF_CAP,
        })
    }

    /// Sets the backoff between retries (tests use milliseconds).
    pub fn with_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap;
        self
    }
}

/// The wait before attempt `retry + 1` (`retry` counts from 0): `base × 2^retry`, or the
/// server's `Retry-After`, capped at `cap`.
pub fn backoff(retry: u32, base: Duration, cap: Duration, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(cap);
    }
    let factor = 2u32.saturating_pow(retry.min(31));
    base.saturating_mul(factor).min(cap)
}

/// Whether a status is worth another attempt: 429, and 5xx except 501 (Not Implemented).
pub fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// The per-attempt timeout of a webhook.
pub fn hook_timeout(hook: &CanaryWebhook) -> Result<Duration, String> {
    let raw = hook
        .timeout
        .as_deref()
        .filter(|t| t.len() >= 2)
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    parse_go_duration(raw).map_err(|e| {
        format!(
            "webhook {} timeout: {e}; set timeout to a duration such as 10s",
            hook.name.as_deref().unwrap_or("")
        )
    })
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    if !matches!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let secs: u64 = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Connection errors are retried, except certificate failures (they will not heal).
fn retryable_error(e: &reqwest::Error) -> bool {
    let text = http::error_text(e).to_ascii_lowercase();
    !(e.is_builder() || e.is_redirect() || text.contains("certificate"))
}

#[async_trait]
impl Hooks for HttpHooks {
    async fn call(&self, hook: &CanaryWebhook, payload: &HookPayload) -> Result<(), String> {
        let url_text = hook.url.as_deref().unwrap_or_default();
        let url = url::Url::parse(url_text).map_err(|e| {
            format!(
                "webhook {} url {:?} is not a URL: {e}",
                hook.name.as_deref().unwrap_or(""),
                http::origin(url_text)
            )
        })?;
        let shown = http::shown_url(&url);
        let mut redactor = http::Redactor::new();
        redactor.url_credentials(url.as_str());
        let timeout = hook_timeout(hook)?;
        let client = self.clients.get(hook.disable_tls.unwrap_or(false), None)?;
        let body = serde_json::to_vec(payload).map_err(|e| format!("webhook payload: {e}"))?;
        let retries = u32::try_from(hook.retries.unwrap_or(0).max(0)).unwrap_or(0);
        let attempts = retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = client
                .post(url.clone())
                .timeout(timeout)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let wait_hint = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if !retryable_status(status) {
                        let passed = status.as_u16() <= 202;
                        let text = resp.bytes().await.unwrap_or_default();
                        if passed {
                            return Ok(());
                        }
                        let text = http::body_text(&text);
                        return Err(redactor.redact(&if text.is_empty() {
                            format!("POST {shown} returned {status}")
                        } else {
                            text
                        }));
                    }
                    if attempt >= attempts {
                        return Err(format!("POST {shown} giving up after {attempt} attempt(s)"));
                    }
                    retry_after(&resp)
                }
                Err(e) => {
                    if attempt >= attempts || !retryable_error(&e) {
                        return Err(redactor.redact(&format!(
                            "POST {shown} giving up after {attempt} attempt(s): {}",
                            http::error_text(&e)
                        )));
                    }
                    None
                }
            };
            let wait = backoff(attempt - 1, self.base, self.cap, wait_hint);
            tracing::debug!(
                hook = hook.name.as_deref().unwrap_or(""),
                attempt,
                ?wait,
                "webhook retry"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (b, c) = (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP);
        let waits: Vec<u64> = (0..7).map(|r| backoff(r, b, c, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(40, b, c, None), c);
        assert_eq!(backoff(0, b, c, Some(Duration::from_secs(5))).as_secs(), 5);
        assert_eq!(backoff(0, b, c, Some(Duration::from_secs(120))), c);
    }

    #[test]
    fn statuses_worth_retrying() {
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 202, 203, 400, 403, 404, 501] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn timeouts_default_like_flagger() {
        let mut h = CanaryWebhook::default();
        assert_eq!(hook_timeout(&h).unwrap(), Duration::from_secs(10));
        h.timeout = Some("5".into());
        assert_eq!(hook_timeout(&h).unwrap(), Duration::from_secs(10));
        h.timeout = Some("1m".into());
        assert_eq!(hook_timeout(&h).unwrap(), Duration::from_secs(60));
        h.timeout = Some("later".into());
        h.name = Some("gate".into());
        assert!(hook_timeout(&h).unwrap_err().starts_with("webhook gate timeout:"));
    }
}
