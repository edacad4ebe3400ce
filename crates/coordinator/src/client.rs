//! Client helpers: connecting to a coordinator and following the leader.
//!
//! A follower replica answers writes with `UNAVAILABLE` and the leader's address in the
//! [`LEADER_METADATA`] metadata key; clients reconnect there and try once more.

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

/// A channel to a coordinator (connects lazily on first use, 5 s connect timeout).
pub fn channel(url: &str) -> Result<Channel> {
    let url = normalize_url(url);
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(ep.connect_lazy())
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
    let deadline = tokio::time::Instant::now() + budget;
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
