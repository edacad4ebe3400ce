//! The engine's `Notifier` port: alerts to chat tools, with Flagger's payloads.
//!
//! An alert for an AlertProvider is POSTed as JSON to its address (`spec.address`, or the key
//! `address` of its Secret, which is then required), through `spec.proxy` (or the Secret's
//! `proxy`), with `Authorization: Bearer <token>` when the Secret has a `token`, within 5 s. A
//! status outside 2xx is an error; the engine logs it and goes on. Error texts show the
//! receiver's scheme and host only: a webhook URL is itself a credential.
//!
//! Payloads by type (`<canary>.<namespace>` is the canary's name and namespace):
//! - `slack`: `{channel, username, icon_url: "", icon_emoji: ":rocket:", attachments: [{color:
//!   "good" | "danger" (error), author_name: "<canary>.<namespace>", text, mrkdwn_in: ["text"],
//!   fields: [{title, value, short: false}]}]}`;
//! - `discord`: the Slack payload, to the address with `/slack` appended (Discord's
//!   Slack-compatible endpoint) unless it already ends with it;
//! - `rocket`: the Slack payload with colours `#0076D7` and `#FF0000` (error);
//! - `msteams`: a MessageCard with themeColor `0076D7` / `FF0000`, the message as activityTitle
//!   and the fields as facts;
//! - `gchat`: a card titled "Flagger" with the message and one section per field;
//! - `generic` (aviary): `{canary, namespace, message, severity, fields: [{name, value}],
//!   timestamp}` with an RFC 3339 timestamp, for any receiver that takes JSON.
//!
//! Without `analysis.alerts` the engine sends to the global notifier (`provider = None`) built
//! from the agent's flags ([`GlobalNotifier`]); without one, alerts go nowhere.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::canary::NamespacedRef;
use aviary_core::ports::{Alert, Notifier, SecretSource, Severity};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Clients};
use crate::sources::AlertProviderSource;

/// Timeout of one alert.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// `spec.channel` when unset.
pub const DEFAULT_CHANNEL: &str = "general";
/// `spec.username` when unset.
pub const DEFAULT_USERNAME: &str = "flagger";

/// The receiver types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    Slack,
    MsTeams,
    Discord,
    Rocket,
    GChat,
    /// aviary's extension: the alert as plain JSON.
    Generic,
}

impl AlertKind {
    /// Parses `spec.type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "slack" => Self::Slack,
            "msteams" => Self::MsTeams,
            "discord" => Self::Discord,
            "rocket" => Self::Rocket,
            "gchat" => Self::GChat,
            "generic" => Self::Generic,
            _ => return None,
        })
    }

    /// The `spec.type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::MsTeams => "msteams",
            Self::Discord => "discord",
            Self::Rocket => "rocket",
            Self::GChat => "gchat",
            Self::Generic => "generic",
        }
    }
}

/// A resolved receiver: where and how to post.
#[derive(Clone, PartialEq, Eq)]
pub struct Receiver {
    pub kind: AlertKind,
    pub address: String,
    pub channel: String,
    pub username: String,
    pub proxy: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("kind", &self.kind)
            .field("address", &http::origin(&self.address))
            .field("channel", &self.channel)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The global notifier: alerts of canaries without `analysis.alerts` go to it, as set by
/// Flagger's `-slack-*` and `-msteams-*` flags ([`Receiver::from_flags`] resolves it; MS Teams
/// wins when both URLs are set, as in Flagger). `Debug` hides the URLs and the token.
#[derive(Clone, Default)]
pub struct GlobalNotifier {
    pub slack_url: Option<String>,
    pub slack_token: Option<String>,
    pub slack_channel: Option<String>,
    pub slack_user: Option<String>,
    pub slack_proxy_url: Option<String>,
    pub msteams_url: Option<String>,
    pub msteams_proxy_url: Option<String>,
}

impl std::fmt::Debug for GlobalNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |o: &Option<String>| o.as_deref().map(http::origin);
        f.debug_struct("GlobalNotifier")
            .field("slack_url", &shown(&self.slack_url))
            .field("slack_token", &self.slack_token.as_ref().map(|_| "[redacted]"))
            .field("slack_channel", &self.slack_channel)
            .field("slack_user", &self.slack_user)
            .field("slack_proxy_url", &shown(&self.slack_proxy_url))
            .field("msteams_url", &shown(&self.msteams_url))
            .field("msteams_proxy_url", &shown(&self.msteams_proxy_url))
            .finish()
    }
}

impl Receiver {
    /// Where the global notifier posts, if a URL is set. A Slack notifier without a
    /// channel posts to `general` (Flagger silently drops every alert then).
    pub fn from_flags(flags: &GlobalNotifier) -> Option<Self> {
        let set = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
        if let Some(url) = set(&flags.msteams_url) {
            return Some(Self {
                kind: AlertKind::MsTeams,
                address: url,
                channel: DEFAULT_CHANNEL.into(),
                username: DEFAULT_USERNAME.into(),
                proxy: set(&flags.msteams_proxy_url),
                token: None,
            });
        }
        let url = set(&flags.slack_url)?;
        Some(Self {
            kind: AlertKind::Slack,
            address: url,
            channel: set(&flags.slack_channel).unwrap_or_else(|| DEFAULT_CHANNEL.into()),
            username: set(&flags.slack_user).unwrap_or_else(|| DEFAULT_USERNAME.into()),
            proxy: set(&flags.slack_proxy_url),
            token: set(&flags.slack_token),
        })
    }

    /// Everything secret about this receiver, for error texts: the webhook URL (as given and as
    /// posted to), the token, the proxy's credentials.
    pub(crate) fn redactor(&self) -> http::Redactor {
        let mut r = http::Redactor::new();
        r.secret_url(&self.address).secret_url(&self.post_url());
        if let Some(t) = &self.token {
            r.header_value(&format!("Bearer {t}"));
        }
        if let Some(p) = &self.proxy {
            r.url_credentials(p);
        }
        r
    }

    /// The URL the alert is POSTed to.
    pub fn post_url(&self) -> String {
        if self.kind == AlertKind::Discord
            && let Ok(mut u) = url::Url::parse(&self.address)
            && !u.path().trim_end_matches('/').ends_with("/slack")
        {
            let path = format!("{}/slack", u.path().trim_end_matches('/'));
            u.set_path(&path);
            return u.to_string();
        }
        self.address.clone()
    }
}

/// The JSON body for one alert. `now` stamps the `generic` payload.
pub fn payload(receiver: &Receiver, canary: &Canary, alert: &Alert, now: jiff::Timestamp) -> Value {
    let id = format!("{}.{}", canary.name(), canary.namespace());
    let error = alert.severity == Severity::Error;
    match receiver.kind {
        AlertKind::Slack | AlertKind::Discord | AlertKind::Rocket => {
            let color = match (receiver.kind, error) {
                (AlertKind::Rocket, true) => "#FF0000",
                (AlertKind::Rocket, false) => "#0076D7",
                (_, true) => "danger",
                (_, false) => "good",
            };
            let fields: Vec<Value> = alert
                .fields
                .iter()
                .map(|(t, v)| json!({"title": t, "value": v, "short": false}))
                .collect();
            json!({
                "channel": receiver.channel,
                "username": receiver.username,
                "icon_url": "",
                "icon_emoji": ":rocket:",
                "attachments": [{
                    "color": color,
                    "author_name": id,
                    "text": alert.message,
                    "mrkdwn_in": ["text"],
                    "fields": fields,
                }],
            })
        }
        AlertKind::MsTeams => {
            json!({
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "themeColor": if error { "FF0000" } else { "0076D7" },
                "summary": id,
                "sections": [{
                    "activityTitle": alert.message,
                    "activitySubtitle": id,
                    "facts": named_values(alert),
                }],
            })
        }
        AlertKind::GChat => {
            let paragraph = |text: String| json!({"widgets": [{"textParagraph": {"text": text}}]});
            let mut sections = vec![paragraph(format!(
                "<font color=#848484><strong>{}</strong></font>",
                alert.message
            ))];
            sections.extend(
                alert.fields.iter().map(|(n, v)| {
                    paragraph(format!("{n}<br><font color=#848484><strong>{v}</strong></font>"))
                }),
            );
            json!({
                "cards": [{
                    "header": {
                        "title": "Flagger",
                        "subtitle": id,
                        "imageUrl": "https://flagger.app/favicon.png",
                    },
                    "sections": sections,
                }],
            })
        }
        AlertKind::Generic => json!({
            "canary": canary.name(),
            "namespace": canary.namespace(),
            "message": alert.message,
            "severity": alert.severity.as_str(),
            "fields": named_values(alert),
            "timestamp": now.to_string(),
        }),
    }
}

/// The alert's fields as `{"name": …, "value": …}` (MS Teams facts, the generic payload).
fn named_values(alert: &Alert) -> Vec<Value> {
    let named = |(n, v): &(String, String)| json!({"name": n, "value": v});
    alert.fields.iter().map(named).collect()
}

/// The `Notifier` port.
#[derive(derive_more::Debug)]
pub struct AlertNotifier {
    #[debug(skip)]
    providers: Arc<dyn AlertProviderSource>,
    #[debug(skip)]
    secrets: Arc<dyn SecretSource>,
    global: Option<Receiver>,
    #[debug(skip)]
    clients: Clients,
    #[debug(skip)]
    timeout: Duration,
}

impl AlertNotifier {
    /// AlertProviders from `providers`, their Secrets from `secrets`, and the agent's global
    /// notifier (or none).
    pub fn new(
        providers: Arc<dyn AlertProviderSource>,
        secrets: Arc<dyn SecretSource>,
        global: Option<Receiver>,
    ) -> Result<Self> {
        if let Some(g) = &global
            && url::Url::parse(&g.address).is_err()
        {
            return Err(Error::Config(format!(
                "the global {} notifier URL is not a URL: check the agent's --{}-url flag",
                g.kind.as_str(),
                g.kind.as_str()
            )));
        }
        Ok(Self {
            providers,
            secrets,
            global,
            clients: Clients::new()?,
            timeout: TIMEOUT,
        })
    }

    /// Resolves an AlertProvider (namespace defaults to the canary's) to a receiver.
    pub async fn receiver(&self, canary: &Canary, r: &NamespacedRef) -> Result<Receiver, String> {
        let name = r.name.clone().unwrap_or_default();
        let ns = r.namespace_or(canary.namespace());
        let id = format!("AlertProvider {ns}/{name}");
        let provider = self
            .providers
            .alert_provider(&ns, &name)
            .await
            .map_err(|e| format!("{id}: {e}"))?;
        let spec = provider.spec;
        let type_ = spec.type_.clone().unwrap_or_default();
        let kind = AlertKind::parse(&type_).ok_or_else(|| {
            format!("{id}: spec.type {type_:?} is not one of slack, msteams, discord, rocket, gchat, generic")
        })?;
        let mut address = spec.address.clone().filter(|a| !a.is_empty());
        let mut proxy = spec.proxy.clone().filter(|p| !p.is_empty());
        let mut token = None;
        if let Some(secret) = spec.secret_ref.as_ref().and_then(|s| s.name.clone()) {
            let data = self
                .secrets
                .secret(&ns, &secret)
                .await
                .map_err(|e| format!("{id} spec.secretRef: {e}"))?;
            let text = |k: &str| {
                data.get(k)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .filter(|v| !v.is_empty())
            };
            address = Some(text("address").ok_or_else(|| {
                format!("{id}: secret {ns}/{secret} has no key `address`; add the webhook URL there")
            })?);
            if let Some(p) = text("proxy") {
                proxy = Some(p);
            }
            token = text("token");
        }
        let address = address.ok_or_else(|| {
            format!("{id} has no address: set spec.address or spec.secretRef (key `address`)")
        })?;
        Ok(Receiver {
            kind,
            address,
            channel: spec
                .channel
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| DEFAULT_CHANNEL.into()),
            username: spec
                .username
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_USERNAME.into()),
            proxy,
            token,
        })
    }

    /// POSTs one alert to a receiver.
    pub async fn send(&self, receiver: &Receiver, canary: &Canary, alert: &Alert) -> Result<(), String> {
        let url = receiver.post_url();
        let shown = http::origin(&url);
        let kind = receiver.kind.as_str();
        let redactor = receiver.redactor();
        let redact = |s: String| redactor.redact(&s);
        let client = self
            .clients
            .get(false, receiver.proxy.as_deref())
            .map_err(|e| format!("{kind} alert: {}", redact(e)))?;
        let body = payload(receiver, canary, alert, jiff::Timestamp::now());
        let mut req = client
            .post(&url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(t) = &receiver.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| format!("{kind} alert: the token is not a valid header value"))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let resp = req.send().await.map_err(|e| {
            redact(format!(
                "{kind} alert to {shown} failed: {}",
                http::error_text(&e)
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.bytes().await.unwrap_or_default();
        Err(redact(format!(
            "{kind} alert to {shown} failed: {status} {}",
            http::body_text(&text)
        )))
    }
}

#[async_trait]
impl Notifier for AlertNotifier {
    async fn notify(
        &self,
        canary: &Canary,
        provider: Option<&NamespacedRef>,
        alert: &Alert,
    ) -> Result<(), String> {
        // Without a provider the alert goes to the global notifier, if there is one.
        let receiver = match (provider, &self.global) {
            (Some(r), _) => self.receiver(canary, r).await?,
            (None, Some(global)) => global.clone(),
            (None, None) => return Ok(()),
        };
        self.send(&receiver, canary, alert).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_notifier_from_flags() {
        assert_eq!(Receiver::from_flags(&GlobalNotifier::default()), None);
        let slack = Receiver::from_flags(&GlobalNotifier {
            slack_url: Some("https://hooks.slack.com/services/x".into()),
            slack_token: Some("t0ken".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(slack.kind, AlertKind::Slack);
        assert_eq!(slack.channel, "general");
        assert_eq!(slack.username, "flagger");
        assert_eq!(slack.token.as_deref(), Some("t0ken"));
        let teams = Receiver::from_flags(&GlobalNotifier {
            slack_url: Some("https://hooks.slack.com/services/x".into()),
            msteams_url: Some("https://outlook.office.com/webhook/y".into()),
            msteams_proxy_url: Some("http://proxy:3128".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(teams.kind, AlertKind::MsTeams);
        assert_eq!(teams.proxy.as_deref(), Some("http://proxy:3128"));
        let dbg = format!("{slack:?}");
        assert!(!dbg.contains("services/x") && !dbg.contains("t0ken"), "{dbg}");
        let flags = GlobalNotifier {
            slack_url: Some("https://hooks.slack.com/services/x".into()),
            slack_token: Some("t0ken".into()),
            ..Default::default()
        };
        let dbg = format!("{flags:?}");
        assert!(!dbg.contains("services/x") && !dbg.contains("t0ken"), "{dbg}");
    }

    #[test]
    fn discord_posts_to_the_slack_compatible_endpoint() {
        let mut r = Receiver::from_flags(&GlobalNotifier {
            slack_url: Some("https://discord.com/api/webhooks/1/abc".into()),
            ..Default::default()
        })
        .unwrap();
        r.kind = AlertKind::Discord;
        assert_eq!(r.post_url(), "https://discord.com/api/webhooks/1/abc/slack");
        r.address = "https://discord.com/api/webhooks/1/abc/slack?wait=true".into();
        assert_eq!(
            r.post_url(),
            "https://discord.com/api/webhooks/1/abc/slack?wait=true"
        );
    }
}
