//! Coordinator replicas on etcd: the fleet state in etcd ([`EtcdStore`]) and the leader
//! elected with etcd's election API on a lease ([`EtcdLeadership`]).
//!
//! - `election`: campaign → proclaim → keep-alive every TTL/3 → step down on any failed
//!   keep-alive round; followers observe the election to learn the leader's address.
//! - `store`: every write is one transaction fenced on the leader's election key
//!   (`create_revision(key) == fence`) and, for rollouts, a compare-and-swap on the record's
//!   `mod_revision`.
//!
//! One [`Etcd`] connection is shared by both: one client per member, used in turn. The member in
//! use keeps being used until it fails with an error another member may not have (unreachable,
//! no raft leader, timeout); then the next one is tried. (etcd-client's balanced channel spreads
//! requests over every member, including a dead one, so a third of the requests would fail while
//! one member of three is down.)
//!
//! Keys under the prefix (default `/aviary`): `election/<lease>` (the candidates; value: the
//! advertised address), `rollouts/<name>` and `clusters/<name>` (JSON, see `store`).

mod election;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use parking_lot::Mutex;
use tokio::time::Instant;

pub use election::EtcdLeadership;
pub use store::{EtcdStore, RolloutWrite};

use crate::error::{Error, Result};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/aviary";
/// The default TTL of the leader's lease: etcd's minimum with its default election timeout, so a
/// leader whose host becomes unreachable is replaced within 3 s (docs/operations.md, Timings).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// Budget of one store request (every member tried in turn).
const REQUEST_BUDGET: Duration = Duration::from_secs(2);

/// A replica's etcd settings.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://10.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet's state: several fleets can share one etcd.
    pub prefix: String,
    /// TTL of the leader's lease: a crashed leader is replaced after 2/3 to 1 TTL (plus up to
    /// 0.5 s of etcd's expiry check); keep-alives go every TTL/3.
    pub lease_ttl: Duration,
}

impl EtcdConfig {
    /// Settings from a comma-separated list of member URLs (`host:port` gets `http://`),
    /// with the default prefix and lease TTL.
    pub fn new(endpoints: &str) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.trim_end_matches('/').to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "--etcd: no endpoint given; pass the etcd client URLs, e.g. \
                 http://etcd-0:2379,http://etcd-1:2379,http://etcd-2:2379"
                    .into(),
            ));
        }
        let scheme = |e: &str| e.split_once("://").map_or("", |(s, _)| s).to_string();
        let first = scheme(&endpoints[0]);
        for e in &endpoints {
            let s = scheme(e);
            if s != "http" && s != "https" {
                return Err(Error::InvalidArgument(format!(
                    "--etcd: {e}: use http://host:port, or https://host:port for TLS (--etcd-ca, --etcd-cert, --etcd-key)"
                )));
            }
            if s != first {
                return Err(Error::InvalidArgument(format!(
                    "--etcd: {e}: every member is reached the same way; do not mix http:// and https://"
                )));
            }
            let host = &e[s.len() + "://".len()..];
            if host.is_empty() || tonic::transport::Endpoint::from_shared(e.clone()).is_err() {
                return Err(Error::InvalidArgument(format!(
                    "--etcd: {e} is not a URL of the form {s}://host:port"
                )));
            }
        }
        Ok(Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
        })
    }
}

/// Connections to the members of one etcd cluster (cheap to clone).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    clients: Vec<Client>,
    /// The member in use.
    current: AtomicUsize,
}

/// Why an etcd request failed.
#[derive(Debug, Clone)]
pub(crate) struct EtcdError {
    pub(crate) message: String,
    /// Another member may answer (unreachable, no raft leader, timeout).
    pub(crate) retryable: bool,
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl EtcdError {
    pub(crate) fn timeout(after: Duration) -> Self {
        Self {
            message: format!("no answer within {after:?}"),
            retryable: true,
        }
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        use tonic::Code;
        match e {
            E::GRpcStatus(s) => Self {
                retryable: matches!(
                    s.code(),
                    Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::Internal
                ),
                message: format!("{:?}: {}", s.code(), s.message()),
            },
            E::TransportError(_) | E::IoError(_) | E::WatchError(_) => Self {
                message: e.to_string(),
                retryable: true,
            },
            // "lease not found" is an answer; anything else is the stream breaking.
            E::LeaseKeepAliveError(m) => Self {
                retryable: !m.contains("not found"),
                message: format!("lease keep-alive: {m}"),
            },
            other => Self {
                message: other.to_string(),
                retryable: false,
            },
        }
    }
}

impl Etcd {
    /// Clients for every member. Connections are made on first use, so this succeeds while
    /// members are down; requests then try them in turn.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_tls(endpoints, None).await
    }

    /// Like [`connect`](Self::connect), over TLS with `tls`'s CA and client certificate
    /// (`--etcd-ca`, `--etcd-cert`, `--etcd-key`; etcd's `--client-cert-auth`). Use
    /// `https://` endpoints.
    pub async fn connect_tls(endpoints: &[String], tls: Option<&crate::security::ClientTls>) -> Result<Self> {
        // HTTP/2 pings notice a member that stopped answering under a long call (campaign,
        // observe). etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls.tonic_config()?);
        }
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let c = Client::connect([e.as_str()], Some(options.clone()))
                .await
                .map_err(|err| match tls {
                    Some(_) => tls_refused(&[format!("{e}: {err}")]),
                    None => Error::InvalidArgument(format!("--etcd: {e}: {err}")),
                })?;
            clients.push(c);
        }
        if clients.is_empty() {
            return Err(Error::InvalidArgument("--etcd: no endpoint given".into()));
        }
        if tls.is_some() {
            probe(&clients, endpoints).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints: endpoints.to_vec(),
                clients,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// The member URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// A raw client of one member (tests use it to look at or disturb the cluster).
    pub fn client(&self, member: usize) -> Client {
        self.inner.clients[member % self.inner.clients.len()].clone()
    }

    pub(crate) fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.clients.len()
    }

    /// The member in use and an election client of it (the member to [`advance`](Self::advance)
    /// from when a call fails).
    pub(crate) fn election_client(&self) -> (usize, etcd_client::ElectionClient) {
        let member = self.current();
        (member, self.client(member).election_client())
    }

    /// Moves on from `member` (unless someone already did).
    pub(crate) fn advance(&self, member: usize) {
        let n = self.inner.clients.len();
        let _ = self.inner.current.compare_exchange(
            member,
            (member + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs `op` on the member in use; when it fails with an error another member may not have,
    /// tries the next members, within `budget` in all.
    pub(crate) async fn call<T, F, Fut>(&self, budget: Duration, mut op: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + budget;
        let n = self.inner.clients.len();
        let mut last = EtcdError::timeout(budget);
        for attempt in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Leave time for the other members when this one hangs.
            let slice = (left / (n - attempt) as u32).max(left.min(Duration::from_millis(300)));
            let member = self.current();
            match tokio::time::timeout(slice, op(self.client(member))).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let e = EtcdError::from(e);
                    if !e.retryable {
                        return Err(e);
                    }
                    last = e;
                }
                Err(_) => last = EtcdError::timeout(slice),
            }
            self.advance(member);
        }
        Err(last)
    }

    pub(crate) fn store_error(&self, what: &str, e: EtcdError) -> Error {
        Error::Store(format!("etcd ({}): {what}: {e}", self.inner.endpoints.join(",")))
    }
}

/// Logs a loop's trouble once per change of state, not once per attempt: the first failure,
/// a reminder each minute while it lasts, and the recovery.
pub(crate) struct StateLog {
    what: &'static str,
    state: Mutex<Option<Failing>>,
}

struct Failing {
    since: Instant,
    reported: Instant,
    attempts: u32,
}

impl StateLog {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            state: Mutex::new(None),
        }
    }

    pub(crate) fn failed(&self, error: &str) {
        let mut state = self.state.lock();
        let now = Instant::now();
        match state.as_mut() {
            None => {
                tracing::warn!("etcd {}: {error}; retrying with backoff", self.what);
                *state = Some(Failing {
                    since: now,
                    reported: now,
                    attempts: 1,
                });
            }
            Some(f) => {
                f.attempts += 1;
                if now.duration_since(f.reported) >= Duration::from_secs(60) {
                    tracing::warn!(
                        "etcd {}: still failing after {} attempts in {:?}: {error}",
                        self.what,
                        f.attempts,
                        now.duration_since(f.since)
                    );
                    f.reported = now;
                }
            }
        }
    }

    pub(crate) fn ok(&self) {
        if let Some(f) = self.state.lock().take() {
            tracing::info!(
                "etcd {}: working again after {} failed attempts in {:?}",
                self.what,
                f.attempts,
                f.since.elapsed()
            );
        }
    }
}

/// Exponential backoff with jitter, from `min` to `max`.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(crate) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::random::<u64>() % (d.as_millis() as u64 / 4 + 1);
        d + Duration::from_millis(jitter)
    }
}

/// With TLS, one member must accept the connection now: a wrong CA or a missing or untrusted
/// client certificate fails at startup with what to check, not as endless election retries.
async fn probe(clients: &[Client], endpoints: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for (c, e) in clients.iter().zip(endpoints) {
        let mut c = c.clone();
        match tokio::time::timeout(Duration::from_secs(3), c.status()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => errors.push(format!("{e}: {err}")),
            Err(_) => errors.push(format!("{e}: no answer within 3 s")),
        }
    }
    Err(tls_refused(&errors))
}

fn tls_refused(errors: &[String]) -> Error {
    Error::InvalidArgument(format!(
        "--etcd over TLS: no etcd member accepted the connection; check --etcd-ca (the CA of etcd's serving certificate) and --etcd-cert/--etcd-key (a client certificate signed by etcd's --trusted-ca-file): {}",
        errors.join("; ")
    ))
}
