//! Client helpers: connecting to a coordinator and following the leader.
//!
//! A follower replica answers writes with `UNAVAILABLE` and the leader's address in the
//! [`LEADER_METADATA`] metadata key; clients reconnect there and try once more. Only
//! `http://HOST:PORT` (or `HOST:PORT`) URLs are accepted; an address where nothing answers
//! fails within about [`CONNECT_TIMEOUT`] + [`UNREACHABLE_BUDGET`].

use std::time::Duration;

use aviary_proto::v1::agent_link_client::AgentLinkClient;
use aviary_proto::v1::fleet_client::FleetClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{Error, Result};

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

/// `host:port` or `http://host:port`, normalized; other schemes are refused with what to use
/// instead (the coordinator serves plaintext gRPC: a TLS or other URL could never work).
pub fn checked_url(url: &str) -> Result<String> {
    let url = normalize_url(url);
    let refuse = |reason: String| Error::Url {
        url: url.clone(),
        reason,
    };
    match url.split_once("://") {
        Some(("http", rest)) if !rest.is_empty() => Ok(url.clone()),
        Some(("http", _)) => Err(refuse("no host; expected http://HOST:PORT".into())),
        Some(("https", _)) => Err(refuse(
            "https:// is not supported: the coordinator serves plaintext gRPC; use http://HOST:PORT".into(),
        )),
        Some((scheme, _)) => Err(refuse(format!(
            "the scheme {scheme}:// is not supported; the coordinator speaks gRPC at http://HOST:PORT"
        ))),
        None => Err(refuse("expected http://HOST:PORT".into())),
    }
}

/// A channel to a coordinator (connects lazily on first use, [`CONNECT_TIMEOUT`]).
pub fn channel(url: &str) -> Result<Channel> {
    let url = checked_url(url)?;
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
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

/// A Fleet client for `url`.
pub fn fleet_client(url: &str) -> Result<FleetClient<Channel>> {
    Ok(FleetClient::new(channel(url)?).max_decoding_message_size(256 * 1024 * 1024))
}

/// An AgentLink client for `url`.
pub fn agent_link_client(url: &str) -> Result<AgentLinkClient<Channel>> {
    Ok(AgentLinkClient::new(channel(url)?))
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
pub async fn call_leader<T, F, Fut>(url: &str, mut f: F) -> std::result::Result<T, Status>
where
    F: FnMut(FleetClient<Channel>) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let client = fleet_client(url).map_err(|e| Status::invalid_argument(e.to_string()))?;
    match f(client).await {
        Err(s) => match leader_from_status(&s) {
            Some(leader) => {
                tracing::debug!(%leader, "following the leader");
                let client = fleet_client(&leader).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
    mut f: F,
) -> std::result::Result<T, Status>
where
    F: FnMut(FleetClient<Channel>) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let mut target = url.to_string();
    loop {
        let client = fleet_client(&target).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
            Some(leader) if normalize_url(&leader) != normalize_url(&target) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_client_can_honour() {
        assert_eq!(checked_url("127.0.0.1:7400").unwrap(), "http://127.0.0.1:7400");
        assert_eq!(checked_url(" http://c:7400/ ").unwrap(), "http://c:7400");
        for (url, says) in [
            ("https://c:7400", "https:// is not supported"),
            ("ftp://c:7400", "ftp:// is not supported"),
        ] {
            let e = checked_url(url).unwrap_err().to_string();
            assert!(
                e.contains(url.trim_end_matches('/')) && e.contains(says),
                "{url}: {e}"
            );
        }
    }
}
