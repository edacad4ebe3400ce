//! HTTP plumbing shared by the adapters: clients (kept and reused per TLS mode and proxy), error
//! texts without URLs, and redaction so that credentials never reach a log line or an event.

use std::collections::HashMap;
use std::error::Error as _;

use parking_lot::Mutex;
use reqwest::Client;
use url::Url;

use crate::error::{Error, Result};

/// `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("aviary/", env!("CARGO_PKG_VERSION"));

/// Largest response body quoted in an error text.
const MAX_QUOTED_BODY: usize = 1024;

/// Clients by (skip TLS verification, proxy URL). Building a client loads the TLS roots, so
/// they are built once and shared (a reqwest client is a cheap handle to a connection pool).
#[derive(Debug)]
pub(crate) struct Clients {
    default: Client,
    others: Mutex<HashMap<(bool, String), Client>>,
}

impl Clients {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            default: build(false, None).map_err(Error::Http)?,
            others: Mutex::new(HashMap::new()),
        })
    }

    /// A client that verifies TLS unless `insecure`, through `proxy` when given.
    pub(crate) fn get(&self, insecure: bool, proxy: Option<&str>) -> Result<Client, String> {
        let proxy = proxy.filter(|p| !p.is_empty());
        if !insecure && proxy.is_none() {
            return Ok(self.default.clone());
        }
        let key = (insecure, proxy.unwrap_or_default().to_string());
        if let Some(c) = self.others.lock().get(&key) {
            return Ok(c.clone());
        }
        let client = build(insecure, proxy)?;
        self.others.lock().insert(key, client.clone());
        Ok(client)
    }
}

fn build(insecure: bool, proxy: Option<&str>) -> Result<Client, String> {
    let mut b = Client::builder()
        .user_agent(USER_AGENT)
        .danger_accept_invalid_certs(insecure);
    if let Some(p) = proxy {
        let proxy = reqwest::Proxy::all(p)
            .map_err(|_| format!("proxy {:?} is not a valid URL", without_userinfo_str(p)))?;
        b = b.proxy(proxy);
    }
    b.build().map_err(|e| error_text(&e))
}

/// A transport error as text: the error and its causes, without the request URL (it may carry
/// credentials); callers say which endpoint failed.
pub(crate) fn error_text(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    if e.is_timeout() {
        parts.push("timed out".into());
    }
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        let mut owned = e.to_string();
        if let Some(url) = e.url() {
            owned = owned.replace(url.as_str(), "");
        }
        parts.push(owned.trim().to_string());
    }
    parts.join(": ")
}

/// `scheme://host[:port]`: enough to say where a request went without its path or query (a
/// Slack webhook URL is itself a credential).
pub(crate) fn origin(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
            if let Some(p) = u.port() {
                s.push_str(&format!(":{p}"));
            }
            s
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// The URL without its user and password.
pub(crate) fn without_userinfo(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn without_userinfo_str(s: &str) -> String {
    Url::parse(s).map_or_else(|_| "<invalid URL>".into(), |u| without_userinfo(&u))
}

/// A response body as text for an error message: lossy UTF-8, trimmed, at most 1 KiB.
pub(crate) fn body_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= MAX_QUOTED_BODY {
        return text.to_string();
    }
    let mut end = MAX_QUOTED_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Replaces every occurrence of a secret value in `text` with `[redacted]`. Short values (under
/// four bytes) are left alone: they would match ordinary words, and carry little secret.
pub(crate) fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 && out.contains(s) {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_userinfo_hide_credentials() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com"
        );
        assert_eq!(origin("http://127.0.0.1:8080/x?token=1"), "http://127.0.0.1:8080");
        assert_eq!(origin("not a url"), "<invalid URL>");
        let u = Url::parse("http://user:pass@prom:9090/api").unwrap();
        assert_eq!(without_userinfo(&u), "http://prom:9090/api");
    }

    #[test]
    fn redaction_and_body_quoting() {
        assert_eq!(
            redact("bad token abcd1234 here", ["abcd1234", "ab"]),
            "bad token [redacted] here"
        );
        assert_eq!(body_text(b"  oops \n"), "oops");
        let long = "é".repeat(1000);
        let quoted = body_text(long.as_bytes());
        assert!(quoted.ends_with('…') && quoted.len() <= MAX_QUOTED_BODY + 3);
    }
}
