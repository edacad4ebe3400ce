//! Webhooks against a local server: payload, pass/fail by status, retries, timeouts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::CanaryPhase;
use aviary_api::canary::CanaryWebhook;
use aviary_core::ports::{HookPayload, Hooks};
use aviary_providers::HttpHooks;
use aviary_testkit::net::free_port;
use aviary_testkit::process::Process;
use common::{Reply, Server, bounded, within};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn hooks() -> HttpHooks {
    HttpHooks::new()
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
}

fn hook(url: &str, retries: i32, timeout: Option<&str>) -> CanaryWebhook {
    CanaryWebhook {
        name: Some("load-test".into()),
        type_: Some("rollout".into()),
        url: Some(url.into()),
        timeout: timeout.map(str::to_string),
        retries: Some(retries),
        ..Default::default()
    }
}

/// Calls the `load-test` hook at `url` with `retries` and no timeout.
async fn call(url: &str, retries: i32) -> Result<(), String> {
    hooks().call(&hook(url, retries, None), &payload()).await
}

fn payload() -> HookPayload {
    let mut metadata = BTreeMap::new();
    metadata.insert("type".to_string(), "cmd".to_string());
    metadata.insert("cmd".to_string(), "hey -z 1m http://podinfo.test".to_string());
    HookPayload {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: CanaryPhase::Progressing,
        checksum: "6f4b1c2d".into(),
        metadata,
    }
}

#[tokio::test]
async fn payload_is_flaggers_json_and_202_passes() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(202, "accepted")).await;
        call(&format!("{}/hook", server.url()), 0).await.unwrap();
        let r = server.only_request();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": "6f4b1c2d",
                "metadata": {"type": "cmd", "cmd": "hey -z 1m http://podinfo.test"},
            })
        );
        // Empty metadata is left out, as Flagger's `omitempty`.
        let mut p = payload();
        p.metadata.clear();
        hooks().call(&hook(&server.url(), 0, None), &p).await.unwrap();
        assert!(server.requests()[1].json().get("metadata").is_none());
    })
    .await;
}

#[tokio::test]
async fn statuses_above_202_fail_with_the_body() {
    bounded(LIMIT, async {
        for (status, body) in [
            (203, "non-authoritative"),
            (403, "Forbidden"),
            (404, "no such gate"),
        ] {
            let server = Server::always(Reply::new(status, body)).await;
            let e = call(&server.url(), 3).await.unwrap_err();
            assert_eq!(e, body, "status {status}");
            assert_eq!(server.requests().len(), 1, "{status} is not retried");
        }
        let server = Server::always(Reply::new(200, "")).await;
        call(&server.url(), 0).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn retries_on_503_and_429_until_success() {
    bounded(LIMIT, async {
        let server = Server::start(|_, i| match i {
            0 => Reply::new(503, "unavailable"),
            1 => Reply::new(429, "slow down"),
            _ => Reply::new(200, "ok"),
        })
        .await;
        call(&server.url(), 2).await.unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].body, seen[2].body, "every attempt carries the payload");
    })
    .await;
}

#[tokio::test]
async fn exhausted_retries_give_up_with_the_attempt_count() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(500, "boom")).await;
        let url = server.url();
        let e = call(&url, 2).await.unwrap_err();
        assert_eq!(e, format!("POST {url}/ giving up after 3 attempt(s)"));
        assert_eq!(server.requests().len(), 3);
        // No retries configured: one attempt, the same wording.
        let e = call(&url, 0).await.unwrap_err();
        assert_eq!(e, format!("POST {url}/ giving up after 1 attempt(s)"));
    })
    .await;
}

#[tokio::test]
async fn not_implemented_is_not_retried() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(501, "not implemented here")).await;
        let e = call(&server.url(), 5).await.unwrap_err();
        assert_eq!(e, "not implemented here");
        assert_eq!(server.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_retry_after_header_is_honoured_within_the_cap() {
    bounded(LIMIT, async {
        let server = Server::start(|_, i| match i {
            0 => Reply::new(429, "later").with_header("retry-after", "5"),
            _ => Reply::new(200, "ok"),
        })
        .await;
        let hooks = HttpHooks::new()
            .unwrap()
            .with_backoff(Duration::from_millis(1), Duration::from_millis(300));
        // Retry-After says 5 s; the cap of 300 ms wins.
        let limit = Duration::from_millis(300)..Duration::from_secs(3);
        within(limit, hooks.call(&hook(&server.url(), 1, None), &payload()))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    bounded(LIMIT, async {
        // A port that was just free: nothing listens there.
        let url = format!("http://127.0.0.1:{}/", free_port());
        let e = call(&url, 2).await.unwrap_err();
        assert!(
            e.starts_with(&format!("POST {url} giving up after 3 attempt(s): ")),
            "{e}"
        );
        assert!(e.to_lowercase().contains("connect"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn each_attempt_is_bounded_by_the_hook_timeout() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(200, "late").delayed(Duration::from_secs(5))).await;
        let limit = Duration::from_secs(2)..Duration::from_secs(4);
        let e = within(
            limit,
            hooks().call(&hook(&server.url(), 1, Some("1s")), &payload()),
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("giving up after 2 attempt(s)") && e.contains("timed out"),
            "{e}"
        );
        assert_eq!(server.requests().len(), 2, "a timeout is retried");
    })
    .await;
}

#[tokio::test]
async fn passwords_in_the_url_are_not_shown() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(502, "bad gateway")).await;
        let url = format!("http://user:hook-password@{}/x", server.addr);
        let e = call(&url, 0).await.unwrap_err();
        assert_eq!(
            e,
            format!("POST http://{}/x giving up after 1 attempt(s)", server.addr)
        );
    })
    .await;
}

/// Issue 15: a hook URL's password and query (a token) are neither shown nor echoed back through
/// the response body, which is quoted bounded.
#[tokio::test]
async fn an_echoing_hook_gets_no_credential_into_the_error() {
    bounded(LIMIT, async {
        let server = Server::echoing(400).await;
        let url = format!(
            "http://user:hook-password@{}/gate/check?token=s3cret%2Ftok&team=ops",
            server.addr
        );
        let e = call(&url, 0).await.unwrap_err();
        common::assert_bounded_without(&e, &["hook-password", "s3cret", "dXNlcjpob29rLXBhc3N3b3Jk"], 2048);
        assert!(e.contains("segment gate"), "the body is still quoted: {e}");
        // Nothing to quote: the URL is shown without its credentials and query.
        let server2 = Server::always(Reply::new(404, "")).await;
        let url = format!("http://u:pw-secret@{}/gate/check?token=s3cret", server2.addr);
        let e = call(&url, 0).await.unwrap_err();
        assert_eq!(
            e,
            format!(
                "POST http://{}/gate/check?[redacted] returned 404 Not Found",
                server2.addr
            )
        );
    })
    .await;
}

/// `openssl s_server` with a self-signed certificate on a free loopback port (killed on drop).
struct TlsServer {
    _process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start() -> Option<Self> {
        let openssl = common::tool("openssl")?;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let ok = std::process::Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl could not make a certificate");
        let port = free_port();
        let server = Self {
            _process: Process::new(
                std::process::Command::new(&openssl)
                    .args(["s_server", "-quiet", "-www", "-accept"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("-cert")
                    .arg(&cert)
                    .arg("-key")
                    .arg(&key)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            ),
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("openssl s_server did not listen on {port}");
    }
}

#[tokio::test]
async fn disable_tls_skips_certificate_verification() {
    bounded(LIMIT, async {
        let Some(tls) = TlsServer::start().await else {
            return;
        };
        let url = format!("https://127.0.0.1:{}/", tls.port);
        // Verified: the self-signed certificate is rejected, and that is not retried.
        let e = call(&url, 2).await.unwrap_err();
        assert!(
            e.contains("giving up after 1 attempt(s)") && e.contains("certificate"),
            "{e}"
        );
        // disableTLS: the handshake succeeds (s_server -www then closes on a POST, which is a
        // plain connection error, not a certificate one).
        let mut h = hook(&url, 0, Some("2s"));
        h.disable_tls = Some(true);
        let e = hooks().call(&h, &payload()).await.unwrap_err();
        assert!(!e.contains("certificate"), "{e}");
    })
    .await;
}
