//! HTTP plumbing shared by the adapters: clients (kept and reused per TLS mode and proxy), error
//! texts without URLs, and redaction so that credentials never reach a log line or an event.
//!
//! Redaction ([`Redactor`]) knows the forms a credential comes back in: as sent, percent-encoded
//! (an upstream quoting the request URL), JSON-escaped (an upstream quoting it in a JSON error),
//! and for basic auth the base64 of `user:password` (an upstream or proxy echoing the
//! `Authorization` header). A webhook URL such as Slack's is a credential as a whole: its path,
//! its query, and the path segments that look like tokens. Echoed input is bounded
//! ([`bounded`]): at most [`MAX_QUOTED`] bytes, then a `… [truncated, N bytes]` marker.

use std::collections::HashMap;
use std::error::Error as _;

use parking_lot::Mutex;
use reqwest::Client;
use url::Url;

use crate::error::{Error, Result};

/// `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("aviary/", env!("CARGO_PKG_VERSION"));

/// Largest piece of echoed input (a response body, an upstream's message) quoted in an error.
pub(crate) const MAX_QUOTED: usize = 1024;
/// Largest whole error text of one provider call (several quotes and their context).
pub(crate) const MAX_ERROR: usize = 4 * MAX_QUOTED;

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

/// A response body as text for an error message: lossy UTF-8, trimmed, bounded by
/// [`MAX_QUOTED`].
pub(crate) fn body_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    bounded(text.trim(), MAX_QUOTED)
}

/// `text` cut to at most `max` bytes (on a character boundary), with a marker saying how long it
/// was: echoed input must not make an error, an event or a log line arbitrarily long. The same
/// cut as the fleet history's messages.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    aviary_core::fleet::rollout::truncate(text, max)
}

/// Shortest value worth redacting: shorter ones would match ordinary words, and carry little
/// secret.
const MIN_SECRET: usize = 4;

/// The secrets of one request, in every form they may be echoed in; [`Redactor::redact`] removes
/// them from a text.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    forms: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.forms.len())
            .finish()
    }
}

impl Redactor {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A secret value: as is, percent-encoded (form and path style) and JSON-escaped.
    pub(crate) fn secret(&mut self, value: &str) -> &mut Self {
        if value.len() < MIN_SECRET {
            return self;
        }
        let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        let candidates = [
            value.to_string(),
            form.replace('+', "%20"),
            form,
            path_encoded(value),
            json.replace('/', "\\/"),
            json,
        ];
        for c in candidates {
            if c.len() >= MIN_SECRET && !self.forms.contains(&c) {
                self.forms.push(c);
            }
        }
        self
    }

    /// Basic-auth credentials: each part, `user:password`, and that pair in base64 as the
    /// `Authorization: Basic` header carries it.
    pub(crate) fn basic(&mut self, user: &str, password: Option<&str>) -> &mut Self {
        use base64::Engine as _;
        let pair = format!("{user}:{}", password.unwrap_or_default());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
        self.secret(user);
        if let Some(p) = password {
            self.secret(p);
        }
        self.secret(&pair);
        self.secret(&encoded);
        // Without padding, as some servers quote it.
        self.secret(encoded.trim_end_matches('='))
    }

    /// A credential header value such as `Bearer <token>`: the whole and the part after the
    /// scheme.
    pub(crate) fn header_value(&mut self, value: &str) -> &mut Self {
        self.secret(value);
        if let Some((_, credential)) = value.trim().split_once(char::is_whitespace) {
            self.secret(credential.trim());
        }
        self
    }

    /// The credentials a URL carries: its user and password, and its query's values (a token
    /// parameter). The host and path stay readable.
    pub(crate) fn url_credentials(&mut self, url: &str) -> &mut Self {
        let Ok(u) = Url::parse(url) else {
            return self.secret(url);
        };
        if !u.username().is_empty() || u.password().is_some() {
            self.basic(
                &percent_decode(u.username()),
                u.password().map(percent_decode).as_deref(),
            );
        }
        if let Some(q) = u.query() {
            self.secret(q);
            for (_, v) in u.query_pairs() {
                self.secret(&v);
            }
        }
        self
    }

    /// A URL that is a credential as a whole (a Slack, Teams or Discord webhook): the URL, its
    /// path, its query, and every path segment that looks like a token or an ID (with a digit,
    /// or long); the scheme and host stay readable.
    pub(crate) fn secret_url(&mut self, url: &str) -> &mut Self {
        self.secret(url);
        self.url_credentials(url);
        let Ok(u) = Url::parse(url) else {
            return self;
        };
        let mut tail = u.path().to_string();
        if let Some(q) = u.query() {
            tail.push('?');
            tail.push_str(q);
        }
        self.secret(&tail);
        if u.path() != "/" {
            self.secret(u.path());
        }
        for segment in u.path_segments().into_iter().flatten() {
            let segment = percent_decode(segment);
            let token_like =
                (segment.len() >= 6 && segment.bytes().any(|b| b.is_ascii_digit())) || segment.len() >= 20;
            if token_like {
                self.secret(&segment);
            }
        }
        self
    }

    /// `text` with every known form replaced by `[redacted]`, longest first so that a URL goes
    /// before its path.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut forms: Vec<&String> = self.forms.iter().collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        let mut out = text.to_string();
        for f in forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// A percent-encoded URL part decoded (`+` stays a plus, as in a path or userinfo).
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// `value` percent-encoded as a URL path segment.
fn path_encoded(value: &str) -> String {
    let Ok(mut u) = Url::parse("http://h/") else {
        return value.to_string();
    };
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.clear().push(value);
    }
    u.path().trim_start_matches('/').to_string()
}

/// A URL for an error text: scheme, host, port and path, without the user, the password or the
/// query (which often holds a token; `?[redacted]` says there was one).
pub(crate) fn shown_url(u: &Url) -> String {
    let mut shown = u.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    let mut s = shown.to_string();
    if had_query {
        s.push_str("?[redacted]");
    }
    s
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
        let mut r = Redactor::new();
        r.secret("abcd1234").secret("ab");
        assert_eq!(
            r.redact("bad token abcd1234 here ab"),
            "bad token [redacted] here ab"
        );
        assert_eq!(body_text(b"  oops \n"), "oops");
        let long = "é".repeat(1000);
        let quoted = body_text(long.as_bytes());
        assert!(quoted.len() <= MAX_QUOTED + 40, "{}", quoted.len());
        assert!(quoted.ends_with("… [truncated, 2000 bytes]"), "{quoted}");
        assert_eq!(bounded("short", 10), "short");
    }

    /// Issue 15: every form a credential is echoed in is redacted.
    #[test]
    fn secrets_are_redacted_in_every_form() {
        let mut r = Redactor::new();
        r.basic("admin", Some("s3cr3t/p+ss"))
            .header_value("Bearer tok-ABC/123=")
            .secret_url("https://hooks.slack.com/services/T0ABC123/B0DEF456/xoxbSecretTokenValue1?x=1");
        let cases = [
            // basic auth, its header and base64 (with and without padding)
            "user admin pass s3cr3t/p+ss",
            "echo: Authorization: Basic YWRtaW46czNjcjN0L3Arc3M=",
            "echo YWRtaW46czNjcjN0L3Arc3M",
            // percent-encoded and JSON-escaped
            "pass=s3cr3t%2Fp%2Bss",
            r#"{"password":"s3cr3t\/p+ss"}"#,
            // bearer token, with and without its scheme
            "Authorization: Bearer tok-ABC/123=",
            "token tok-ABC%2F123%3D rejected",
            // the webhook URL whole, its path, its token segment
            "POST https://hooks.slack.com/services/T0ABC123/B0DEF456/xoxbSecretTokenValue1?x=1 failed",
            "no route /services/T0ABC123/B0DEF456/xoxbSecretTokenValue1",
            "invalid_token xoxbSecretTokenValue1",
            "team T0ABC123 channel B0DEF456",
        ];
        for case in cases {
            let out = r.redact(case);
            for secret in [
                "s3cr3t",
                "YWRtaW46",
                "tok-ABC",
                "xoxbSecret",
                "T0ABC123",
                "B0DEF456",
            ] {
                assert!(!out.contains(secret), "{secret} in {out:?} (from {case:?})");
            }
            assert!(out.contains("[redacted]"), "{out}");
        }
        // The host stays readable.
        assert_eq!(
            r.redact("POST https://hooks.slack.com/services/T0ABC123/B0DEF456/xoxbSecretTokenValue1?x=1"),
            "POST [redacted]"
        );
        assert_eq!(
            r.redact("hooks.slack.com unreachable"),
            "hooks.slack.com unreachable"
        );
    }

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        let u = Url::parse("http://user:pw@hook.test:8080/gate/check?token=abc#frag").unwrap();
        assert_eq!(shown_url(&u), "http://hook.test:8080/gate/check?[redacted]");
        let u = Url::parse("http://hook.test/").unwrap();
        assert_eq!(shown_url(&u), "http://hook.test/");
        let mut r = Redactor::new();
        r.url_credentials("http://us%40er:p%2Fw0rd@prom:9090/?api_key=k3y-value");
        let out = r.redact("us@er p/w0rd k3y-value api_key=k3y-value");
        assert!(
            !out.contains("p/w0rd") && !out.contains("k3y-value") && !out.contains("us@er"),
            "{out}"
        );
    }
}
