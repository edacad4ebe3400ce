//! Client helpers: connecting to a coordinator and following the leader.
//!
//! A follower replica answers writes with `UNAVAILABLE` and the leader's address in the
//! [`LEADER_METADATA`] metadata key; clients reconnect there and try once more. Only
//! `http://HOST:PORT` (or `HOST:PORT`) URLs are accepted; an address where nothing answers
//! fails within about [`CONNECT_TIMEOUT`] + [`UNREACHABLE_BUDGET`].

use std::time::Duration;

use aviary_proto::v1::agent_link_client::AgentLinkClient;
use aviary_proto::v1::fleet_client::FleetClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{Error, Result};
pub use crate::security::ClientTls;

/// Adds `authorization: Bearer TOKEN` to every call when a token is set.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A Fleet client with its credentials.
pub type FleetConn = FleetClient<InterceptedService<Channel, Bearer>>;

pub use crate::error::LEADER_METADATA;

/// `host:port` → `http://host:port`; URLs with a scheme are kept.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// How long one connection attempt may take. With [`UNREACHABLE_BUDGET`] it bounds how long a
/// client waits on an address where nothing answers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`call_leader_retrying`] keeps trying an address where no server answers (a
/// restarting replica comes back within it; a wrong address fails within ~2 s).
pub const UNREACHABLE_BUDGET: Duration = Duration::from_secs(2);

/// `host:port`, `http://host:port` or `https://host:port` (TLS), normalized; other schemes are
/// refused with what to use instead.
pub fn checked_url(url: &str) -> Result<String> {
    let url = normalize_url(url);
    let refuse = |reason: String| Error::Url {
        url: url.clone(),
        reason,
    };
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(url.clone()),
        Some(("http" | "https", _)) => Err(refuse("no host; expected http(s)://HOST:PORT".into())),
        Some((scheme, _)) => Err(refuse(format!(
            "the scheme {scheme}:// is not supported; the coordinator speaks gRPC at http://HOST:PORT, or https://HOST:PORT with TLS"
        ))),
        None => Err(refuse("expected http://HOST:PORT".into())),
    }
}

/// Like [`normalize_url`], but `https://` for a bare address when TLS is configured (the
/// leader's address in `aviary-leader` has no scheme).
pub fn normalize_url_tls(url: &str, tls: &ClientTls) -> String {
    let url = url.trim().trim_end_matches('/');
    if !url.contains("://") && (tls.ca.is_some() || tls.cert.is_some()) {
        return format!("https://{url}");
    }
    normalize_url(url)
}

/// A channel to a coordinator (connects lazily on first use, [`CONNECT_TIMEOUT`]).
pub fn channel(url: &str) -> Result<Channel> {
    channel_with(url, &ClientTls::default())
}

/// A channel with TLS when the URL is `https://` (the files of `tls` are read now).
pub fn channel_with(url: &str, tls: &ClientTls) -> Result<Channel> {
    let url = checked_url(&normalize_url_tls(url, tls))?;
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        ep = ep.tls_config(tls.tonic_config()?).map_err(|e| Error::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(ep.connect_lazy())
}

/// Whether a call failed in the transport (no answer from a server: refused, timed out,
/// reset, not HTTP/2) rather than with a status a coordinator sent. Statuses a server sends
/// carry no source error; the client's own transport failures do.
pub fn is_transport_failure(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// No server could be reached at all (connection refused or timed out).
pub fn is_unreachable(s: &Status) -> bool {
    s.code() == Code::Unavailable && is_transport_failure(s)
}

/// The interceptor that sends `tls.token`.
pub fn bearer(tls: &ClientTls) -> Result<Bearer> {
    match &tls.token {
        None => Ok(Bearer(None)),
        Some(t) => format!("Bearer {}", t.trim())
            .parse()
            .map(|v| Bearer(Some(v)))
            .map_err(|_| Error::InvalidArgument("--token: not a valid header value".into())),
    }
}

/// A Fleet client for `url`.
pub fn fleet_client(url: &str) -> Result<FleetConn> {
    fleet_client_with(url, &ClientTls::default())
}

/// A Fleet client for `url` with certificates and/or a token.
pub fn fleet_client_with(url: &str, tls: &ClientTls) -> Result<FleetConn> {
    Ok(
        FleetClient::with_interceptor(channel_with(url, tls)?, bearer(tls)?)
            .max_decoding_message_size(256 * 1024 * 1024),
    )
}

/// An AgentLink client for `url`.
pub fn agent_link_client(url: &str) -> Result<AgentLinkClient<Channel>> {
    agent_link_client_with(url, &ClientTls::default())
}

/// An AgentLink client for `url` with the agent's certificate.
pub fn agent_link_client_with(url: &str, tls: &ClientTls) -> Result<AgentLinkClient<Channel>> {
    Ok(AgentLinkClient::new(channel_with(url, tls)?))
}

/// The leader's address from an `UNAVAILABLE` status of a follower, if it carries one.
pub fn leader_from_status(s: &Status) -> Option<String> {
    if s.code() != Code::Unavailable {
        return None;
    }
    s.metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Calls `f` on a Fleet client for `url`; if the replica answers that another one leads,
/// calls `f` once more on the leader (one redirect hop).
pub async fn call_leader<T, F, Fut>(url: &str, f: F) -> std::result::Result<T, Status>
where
    F: FnMut(FleetConn) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    call_leader_with(url, &ClientTls::default(), f).await
}

/// [`call_leader`] with certificates and/or a token.
pub async fn call_leader_with<T, F, Fut>(
    url: &str,
    tls: &ClientTls,
    mut f: F,
) -> std::result::Result<T, Status>
where
    F: FnMut(FleetConn) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let client = fleet_client_with(url, tls).map_err(|e| Status::invalid_argument(e.to_string()))?;
    match f(client).await {
        Err(s) => match leader_from_status(&s) {
            Some(leader) => {
                tracing::debug!(%leader, "following the leader");
                let client =
                    fleet_client_with(&leader, tls).map_err(|e| Status::invalid_argument(e.to_string()))?;
                f(client).await
            }
            None => Err(s),
        },
        ok => ok,
    }
}

/// Like [`call_leader`], but rides out an election: while the answer is `UNAVAILABLE` (no
/// leader yet, a leader still loading its state, a watch ended because leadership moved), it
/// follows the leader's address when one is given and otherwise retries `url` every 250 ms,
/// for at most `budget`. For calls that are safe to repeat (reads, waits, watches, verbs).
pub async fn call_leader_retrying<T, F, Fut>(
    url: &str,
    budget: Duration,
    f: F,
) -> std::result::Result<T, Status>
where
    F: FnMut(FleetConn) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    call_leader_retrying_with(url, &ClientTls::default(), budget, f).await
}

/// [`call_leader_retrying`] with certificates and/or a token.
pub async fn call_leader_retrying_with<T, F, Fut>(
    url: &str,
    tls: &ClientTls,
    budget: Duration,
    mut f: F,
) -> std::result::Result<T, Status>
where
    F: FnMut(FleetConn) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let mut target = url.to_string();
    loop {
        let client = fleet_client_with(&target, tls).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let err = match f(client).await {
            Ok(v) => return Ok(v),
            Err(s) => s,
        };
        if err.code() != Code::Unavailable || tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        // Nothing listens at the address the user gave: say so soon instead of riding out an
        // election that is not happening. (A leader we were sent to that went away sends us
        // back to `url` below.)
        if is_unreachable(&err) && target == url && started.elapsed() >= UNREACHABLE_BUDGET {
            return Err(err);
        }
        match leader_from_status(&err) {
            Some(leader) if normalize_url_tls(&leader, tls) != normalize_url_tls(&target, tls) => {
                tracing::debug!(%leader, "following the leader");
                target = leader;
            }
            _ => {
                tracing::debug!(error = %err.message(), "no leader to follow yet; retrying");
                target = url.to_string();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Every canary matching `req`, following the pages of ListCanaries.
pub async fn list_all_canaries(
    client: &mut FleetConn,
    mut req: aviary_proto::v1::ListCanariesRequest,
) -> std::result::Result<aviary_proto::v1::ListCanariesResponse, Status> {
    let mut all = aviary_proto::v1::ListCanariesResponse::default();
    loop {
        let page = client.list_canaries(req.clone()).await?.into_inner();
        all.canaries.extend(page.canaries);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        req.page_token = page.next_page_token;
    }
}

/// Every rollout, following the pages of ListRollouts.
pub async fn list_all_rollouts(
    client: &mut FleetConn,
) -> std::result::Result<aviary_proto::v1::ListRolloutsResponse, Status> {
    let mut req = aviary_proto::v1::ListRolloutsRequest::default();
    let mut all = aviary_proto::v1::ListRolloutsResponse::default();
    loop {
        let page = client.list_rollouts(req.clone()).await?.into_inner();
        all.rollouts.extend(page.rollouts);
        all.unreadable = page.unreadable;
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        req.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_client_can_honour() {
        assert_eq!(checked_url("127.0.0.1:7400").unwrap(), "http://127.0.0.1:7400");
        assert_eq!(checked_url(" http://c:7400/ ").unwrap(), "http://c:7400");
        assert_eq!(checked_url("https://c:7400").unwrap(), "https://c:7400");
        for (url, says) in [
            ("ftp://c:7400", "ftp:// is not supported"),
            ("gopher://c:7400", "gopher:// is not supported"),
        ] {
            let e = checked_url(url).unwrap_err().to_string();
            assert!(
                e.contains(url.trim_end_matches('/')) && e.contains(says),
                "{url}: {e}"
            );
        }
    }
}
