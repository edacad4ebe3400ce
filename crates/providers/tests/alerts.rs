//! Alert payloads, field by field, against a local receiver, for every provider type; secrets,
//! proxies, the global notifier, failures and the timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aviary_api::canary::NamespacedRef;
use aviary_api::{AlertProvider, Canary};
use aviary_core::ports::{Alert, Notifier, Severity};
use aviary_providers::alerts::{GlobalNotifier, Receiver};
use aviary_providers::{AlertNotifier, ResourceStore, StaticSecrets};
use common::{Reply, Seen, Server, bounded, within};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn canary() -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10}},
    }))
    .unwrap()
}

fn alert(severity: Severity) -> Alert {
    Alert {
        message: "Failed checks threshold reached 5".into(),
        severity,
        fields: vec![
            ("Cluster".into(), "eu-west-1a".into()),
            ("Target".into(), "Deployment/podinfo.test".into()),
        ],
    }
}

fn provider(name: &str, spec: Value) -> AlertProvider {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": name, "namespace": "test"},
        "spec": spec,
    }))
    .unwrap()
}

struct Fixture {
    store: ResourceStore,
    secrets: StaticSecrets,
    notifier: AlertNotifier,
}

fn fixture(global: Option<Receiver>) -> Fixture {
    let store = ResourceStore::new();
    let secrets = StaticSecrets::new();
    let notifier = AlertNotifier::new(Arc::new(store.clone()), Arc::new(secrets.clone()), global).unwrap();
    Fixture {
        store,
        secrets,
        notifier,
    }
}

impl Fixture {
    /// Sends the `podinfo` canary's alert of `severity` through the AlertProvider `provider` (in
    /// the canary's namespace), or only to the global notifier.
    async fn notify(&self, provider: Option<&str>, severity: Severity) -> Result<(), String> {
        let to = provider.map(|name| NamespacedRef {
            name: Some(name.into()),
            namespace: None,
        });
        self.notifier
            .notify(&canary(), to.as_ref(), &alert(severity))
            .await
    }
}

async fn send_one(kind: &str, severity: Severity, extra: Value) -> Seen {
    let server = Server::always(Reply::new(200, "ok")).await;
    let f = fixture(None);
    let mut spec = json!({"type": kind, "address": format!("{}/hooks/abc", server.url())});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    f.store.insert_alert_provider(provider("on-call", spec));
    f.notify(Some("on-call"), severity).await.unwrap();
    let r = server.only_request();
    server.stop().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    r
}

#[tokio::test]
async fn slack_payload() {
    bounded(LIMIT, async {
        let r = send_one(
            "slack",
            Severity::Info,
            json!({"channel": "deploys", "username": "aviary-bot"}),
        )
        .await;
        assert_eq!(r.path, "/hooks/abc");
        assert_eq!(
            r.json(),
            json!({
                "channel": "deploys",
                "username": "aviary-bot",
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": "good",
                    "author_name": "podinfo.test",
                    "text": "Failed checks threshold reached 5",
                    "mrkdwn_in": ["text"],
                    "fields": [
                        {"title": "Cluster", "value": "eu-west-1a", "short": false},
                        {"title": "Target", "value": "Deployment/podinfo.test", "short": false}
                    ],
                }],
            })
        );
        let body = send_one("slack", Severity::Error, json!({})).await.json();
        assert_eq!(body["channel"], "general", "the default channel");
        assert_eq!(body["username"], "flagger", "the default username");
    })
    .await;
}

#[tokio::test]
async fn colours_follow_the_severity() {
    bounded(LIMIT, async {
        let attachment = "/attachments/0/color";
        for (kind, severity, field, colour) in [
            ("slack", Severity::Error, attachment, "danger"),
            ("slack", Severity::Warn, attachment, "good"),
            ("discord", Severity::Error, attachment, "danger"),
            ("rocket", Severity::Info, attachment, "#0076D7"),
            ("rocket", Severity::Error, attachment, "#FF0000"),
            ("msteams", Severity::Error, "/themeColor", "FF0000"),
        ] {
            let body = send_one(kind, severity, json!({})).await.json();
            assert_eq!(body.pointer(field), Some(&json!(colour)), "{kind} {severity:?}");
        }
    })
    .await;
}

/// Discord and Rocket.Chat take Slack's payload; Discord at its `/slack` endpoint.
#[tokio::test]
async fn discord_and_rocket_payloads() {
    bounded(LIMIT, async {
        for (kind, path) in [("discord", "/hooks/abc/slack"), ("rocket", "/hooks/abc")] {
            let r = send_one(kind, Severity::Info, json!({})).await;
            assert_eq!(r.path, path, "{kind}");
            let body = r.json();
            assert_eq!(body["icon_emoji"], ":rocket:", "{kind}");
            let attachment = &body["attachments"][0];
            assert_eq!(attachment["author_name"], "podinfo.test", "{kind}");
            assert_eq!(attachment["fields"][0]["title"], "Cluster", "{kind}");
            assert_eq!(attachment["text"], "Failed checks threshold reached 5", "{kind}");
            assert_eq!(attachment["mrkdwn_in"], json!(["text"]), "{kind}");
        }
    })
    .await;
}

/// MS Teams' MessageCard and Google Chat's card, whole.
#[tokio::test]
async fn card_payloads() {
    bounded(LIMIT, async {
        let msteams = json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "0076D7",
            "summary": "podinfo.test",
            "sections": [{
                "activityTitle": "Failed checks threshold reached 5",
                "activitySubtitle": "podinfo.test",
                "facts": [
                    {"name": "Cluster", "value": "eu-west-1a"},
                    {"name": "Target", "value": "Deployment/podinfo.test"}
                ],
            }],
        });
        let gchat = json!({
            "cards": [{
                "header": {
                    "title": "Flagger",
                    "subtitle": "podinfo.test",
                    "imageUrl": "https://flagger.app/favicon.png",
                },
                "sections": [
                    {"widgets": [{"textParagraph": {"text": "<font color=#848484><strong>Failed checks threshold reached 5</strong></font>"}}]},
                    {"widgets": [{"textParagraph": {"text": "Cluster<br><font color=#848484><strong>eu-west-1a</strong></font>"}}]},
                    {"widgets": [{"textParagraph": {"text": "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>"}}]}
                ],
            }],
        });
        for (kind, severity, card) in [("msteams", Severity::Info, msteams), ("gchat", Severity::Warn, gchat)] {
            assert_eq!(send_one(kind, severity, json!({})).await.json(), card, "{kind}");
        }
    })
    .await;
}

#[tokio::test]
async fn generic_payload() {
    bounded(LIMIT, async {
        let before = jiff::Timestamp::now();
        let r = send_one("generic", Severity::Warn, json!({})).await;
        let body = r.json();
        let obj = body.as_object().unwrap();
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            [
                "canary",
                "fields",
                "message",
                "namespace",
                "severity",
                "timestamp"
            ]
        );
        assert_eq!(body["canary"], "podinfo");
        assert_eq!(body["namespace"], "test");
        assert_eq!(body["message"], "Failed checks threshold reached 5");
        assert_eq!(body["severity"], "warn");
        assert_eq!(
            body["fields"],
            json!([
                {"name": "Cluster", "value": "eu-west-1a"},
                {"name": "Target", "value": "Deployment/podinfo.test"}
            ])
        );
        let ts: jiff::Timestamp = body["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(ts >= before && ts <= jiff::Timestamp::now(), "{ts}");
    })
    .await;
}

#[tokio::test]
async fn secret_address_token_and_proxy() {
    bounded(LIMIT, async {
        let receiver = Server::always(Reply::new(200, "ok")).await;
        // A forward proxy is just a server that receives absolute-form requests.
        let proxy = Server::always(Reply::new(200, "proxied")).await;
        let f = fixture(None);
        f.secrets.insert(
            "test",
            "slack-secret",
            [("address", format!("{}/services/T0/B0/secret-path", receiver.url())), ("token", "xoxb-bearer-token".into())],
        );
        f.store.insert_alert_provider(provider(
            "slack",
            json!({"type": "slack", "address": "http://ignored.invalid/", "secretRef": {"name": "slack-secret"}}),
        ));
        f.notify(Some("slack"), Severity::Info).await.unwrap();
        let r = receiver.only_request();
        assert_eq!(r.path, "/services/T0/B0/secret-path", "the Secret's address wins");
        assert_eq!(r.header("authorization"), Some("Bearer xoxb-bearer-token"));

        f.store.insert_alert_provider(provider(
            "teams",
            json!({"type": "msteams", "address": "http://alerts.example.invalid/webhook", "proxy": proxy.url()}),
        ));
        f.notify(Some("teams"), Severity::Info).await.unwrap();
        let p = proxy.only_request();
        assert_eq!(p.path, "/webhook");
        assert_eq!(p.header("host"), Some("alerts.example.invalid"));
        assert_eq!(p.json()["@type"], "MessageCard");

        // A Secret without `address` is an error naming the key.
        f.secrets.insert("test", "slack-secret", [("token", "xoxb-bearer-token")]);
        let e = f.notify(Some("slack"), Severity::Info).await
            .unwrap_err();
        assert!(e.contains("AlertProvider test/slack") && e.contains("no key `address`"), "{e}");
        let e = f.notify(Some("nobody"), Severity::Info).await
            .unwrap_err();
        assert_eq!(e, "AlertProvider test/nobody: alertprovider.flagger.app \"nobody\" not found");
    })
    .await;
}

#[tokio::test]
async fn failures_are_errors_without_the_webhook_path_or_token() {
    bounded(LIMIT, async {
        let server = Server::start(|r, _| {
            Reply::new(
                400,
                format!("invalid_token {}", r.header("authorization").unwrap_or_default()),
            )
        })
        .await;
        let address = format!("{}/services/T0/B0/XYZSECRET", server.url());
        let e = slack_failure(address, "tok-abcdef").await;
        assert!(
            e.starts_with(&format!(
                "slack alert to {} failed: 400 Bad Request",
                server.url()
            )),
            "{e}"
        );
        assert!(
            !e.contains("XYZSECRET") && !e.contains("tok-abcdef"),
            "secret in: {e}"
        );
    })
    .await;
}

/// The error of an alert through a Slack AlertProvider `p` whose Secret `s` holds `address` and
/// `token`.
async fn slack_failure(address: String, token: &str) -> String {
    let f = fixture(None);
    f.secrets
        .insert("test", "s", [("address", address), ("token", token.into())]);
    f.store.insert_alert_provider(provider(
        "p",
        json!({"type": "slack", "secretRef": {"name": "s"}}),
    ));
    f.notify(Some("p"), Severity::Error).await.unwrap_err()
}

/// Issue 15: a receiver that quotes the request back (its path piece by piece, the token,
/// percent-encoded and JSON-escaped) gets none of it into the error, which is bounded.
#[tokio::test]
async fn an_echoing_receiver_gets_no_secret_into_the_error() {
    bounded(LIMIT, async {
        let server = Server::echoing(400).await;
        let address = format!(
            "{}/services/T0ABC123/B0DEF456/xoxbSecretTokenValue1?thread=key%2Fvalue9",
            server.url()
        );
        let e = slack_failure(address, "tok-abc/def+ghi").await;
        let secrets = [
            "T0ABC123",
            "B0DEF456",
            "xoxbSecretTokenValue1",
            "key/value9",
            "key%2Fvalue9",
            "tok-abc",
        ];
        common::assert_bounded_without(&e, &secrets, 2048);
        assert!(e.contains("[redacted]"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_slow_receiver_is_cut_off_after_five_seconds() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(200, "late").delayed(Duration::from_secs(8))).await;
        let f = fixture(None);
        f.store
            .insert_alert_provider(provider("p", json!({"type": "generic", "address": server.url()})));
        let slow = f.notify(Some("p"), Severity::Info);
        let e = within(Duration::from_secs(4)..Duration::from_secs(7), slow)
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn the_global_notifier_gets_alerts_without_a_provider() {
    bounded(LIMIT, async {
        let server = Server::always(Reply::new(200, "ok")).await;
        let global = Receiver::from_flags(&GlobalNotifier {
            slack_url: Some(format!("{}/global", server.url())),
            slack_channel: Some("ops".into()),
            slack_user: Some("aviary".into()),
            ..Default::default()
        });
        let f = fixture(global);
        f.notify(None, Severity::Info).await.unwrap();
        let r = server.only_request();
        assert_eq!(r.path, "/global");
        assert_eq!(r.json()["channel"], "ops");
        assert_eq!(r.json()["username"], "aviary");

        // No global notifier: nothing is sent, and that is not an error.
        let f = fixture(None);
        f.notify(None, Severity::Info).await.unwrap();
        assert_eq!(server.requests().len(), 1);
    })
    .await;
}
