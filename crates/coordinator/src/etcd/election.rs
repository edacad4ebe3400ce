//! The leader, elected with etcd's election API (v3election) on a lease.
//!
//! One *term*: grant a lease (TTL) → `Campaign` with the advertised address as value (blocks
//! while another replica leads; the lease is kept alive meanwhile) → one keep-alive and a
//! `Proclaim` (which only succeeds while our election key exists: a check that we still lead) →
//! publish `Leader { fence }`, the fence being the election key's create revision → keep-alive
//! every TTL/3, each with a timeout of TTL/3, tried on the members in turn. When etcd says the
//! lease is gone, or no keep-alive succeeded by the time the lease could expire (see below), the
//! replica steps down at once (publishes `Follower`, revokes the lease in the background) and
//! campaigns again with a new lease.
//!
//! Never acting on a possibly expired lease: [`Leadership::check`] answers `Leader` only until
//! `sent + TTL − margin`, where `sent` is when the last successful keep-alive was *sent* (the
//! server renewed the lease after that, so it cannot expire earlier). A paused process (SIGSTOP,
//! a stalled VM) that wakes up past that instant refuses to write and steps down, even before its
//! keep-alive task runs; a write already in flight is refused by etcd (the store's fence).
//!
//! Followers observe the election (`Observe`) to learn the leader's address. On shutdown the
//! leader resigns and revokes its lease, so the next candidate wins within milliseconds.
//!
//! A crashed leader cannot resign, and its lease would hold the election for up to TTL (+ etcd's
//! 500 ms expiry scan). Followers therefore watch for a dead leader ([`watch_dead_leader`]): when
//! the leader's lease has missed a renewal *and* its advertised address refuses connections or
//! answers that it does not lead (a restarted process), they revoke its lease. Both signals are
//! needed: a live leader renews on time whatever its address does (a wrong `--advertise` must not
//! depose it), and a paused or partitioned one still accepts connections, so it is left to its
//! lease. Revoking is safe whatever the truth: every write is fenced on the election key, which
//! the revocation deletes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{LeaderKey, LeaseKeepAliveStream, LeaseKeeper, ProclaimOptions, ResignOptions};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Etcd, EtcdConfig, EtcdError, StateLog};
use crate::error::{Error, Result};
use crate::leader::{Fence, LeaderState, Leadership};

/// The term this replica leads.
#[derive(Debug, Clone)]
struct Term {
    fence: Fence,
    /// The election key (`<prefix>/election/<lease hex>`).
    key: Vec<u8>,
    lease: i64,
    /// Not leader any more from this instant on (the lease may have expired).
    valid_until: Instant,
}

/// State shared by the election task, [`EtcdLeadership`] and the store.
pub(crate) struct Shared {
    pub(crate) etcd: Etcd,
    name: String,
    ttl: Duration,
    state: watch::Sender<LeaderState>,
    term: Mutex<Option<Term>>,
    /// The leader's address as last observed.
    observed: Mutex<Option<String>>,
    /// The observed leader's lease (0: none observed).
    observed_lease: std::sync::atomic::AtomicI64,
    /// The lease of this replica's current campaign or term (0: none).
    own_lease: std::sync::atomic::AtomicI64,
    advertise: OnceLock<String>,
    /// Wakes the election task when a term was lost outside it (fenced write, deadline).
    lost: Notify,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// The address this replica advertises (empty before it started).
    pub(crate) fn advertise(&self) -> String {
        self.advertise.get().cloned().unwrap_or_default()
    }

    fn margin(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_millis(100))
    }

    /// The election key of the term `fence`, while it is valid; otherwise `Fenced`.
    pub(crate) fn fence_key(&self, fence: Fence) -> Result<Vec<u8>> {
        let term = self.term.lock();
        match &*term {
            Some(t) if t.fence == fence && Instant::now() < t.valid_until => Ok(t.key.clone()),
            Some(t) if t.fence == fence => {
                drop(term);
                self.lose(
                    fence,
                    "no keep-alive was confirmed within the lease TTL; the lease may have expired",
                );
                Err(Error::Fenced { token: fence.0 })
            }
            _ => Err(Error::Fenced { token: fence.0 }),
        }
    }

    /// Ends the term `fence` (if it is still the current one): publishes `Follower`.
    pub(crate) fn lose(&self, fence: Fence, reason: &str) {
        let mut term = self.term.lock();
        if term.as_ref().is_none_or(|t| t.fence != fence) {
            return;
        }
        *term = None;
        tracing::warn!(fence = fence.0, "stepping down: {reason}");
        self.state
            .send_replace(LeaderState::Follower { leader: self.hint() });
        drop(term);
        self.lost.notify_one();
    }

    /// The leader to point clients at: the observed one, unless it is this replica (an old term
    /// of ours whose lease has not expired yet).
    fn hint(&self) -> Option<String> {
        let observed = self.observed.lock().clone()?;
        (Some(&observed) != self.advertise.get()).then_some(observed)
    }

    fn set_observed(&self, leader: Option<String>) {
        *self.observed.lock() = leader;
        let term = self.term.lock();
        if term.is_none() {
            let hint = self.hint();
            self.state.send_if_modified(|s| {
                let next = LeaderState::Follower { leader: hint };
                if *s != next {
                    *s = next;
                    true
                } else {
                    false
                }
            });
        }
    }

    fn holds(&self, fence: Fence) -> bool {
        self.term.lock().as_ref().is_some_and(|t| t.fence == fence)
    }

    fn extend(&self, fence: Fence, valid_until: Instant) {
        if let Some(t) = self.term.lock().as_mut()
            && t.fence == fence
        {
            t.valid_until = valid_until;
        }
    }

    fn lead(&self, term: Term) {
        let fence = term.fence;
        // Under the lock: the published state never says Leader for a term already lost.
        let mut current = self.term.lock();
        *current = Some(term);
        self.state.send_replace(LeaderState::Leader { fence });
    }
}

/// A replica's place in the election (see the module docs). Campaigns once
/// [`Leadership::start`] gave it the address to advertise.
pub struct EtcdLeadership {
    shared: Arc<Shared>,
}

impl EtcdLeadership {
    /// A candidate in the election under `config.prefix` (not campaigning yet).
    pub fn new(etcd: Etcd, config: &EtcdConfig) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                etcd,
                name: format!("{}/election", config.prefix.trim_end_matches('/')),
                ttl: config.lease_ttl,
                state: watch::Sender::new(LeaderState::Follower { leader: None }),
                term: Mutex::new(None),
                observed: Mutex::new(None),
                observed_lease: std::sync::atomic::AtomicI64::new(0),
                own_lease: std::sync::atomic::AtomicI64::new(0),
                advertise: OnceLock::new(),
                lost: Notify::new(),
                stop: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The lease TTL asked for.
    pub fn lease_ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The etcd election name (the prefix of the candidates' keys).
    pub fn election_name(&self) -> &str {
        &self.shared.name
    }

    /// The current term's lease, while leading (tests revoke it to play an expired lease).
    pub fn lease(&self) -> Option<i64> {
        self.shared.term.lock().as_ref().map(|t| t.lease)
    }

    /// While leading: until when this replica acts as the leader without a further successful
    /// keep-alive (the last one's send time + TTL − margin).
    pub fn leading_until(&self) -> Option<std::time::Instant> {
        self.shared.term.lock().as_ref().map(|t| t.valid_until.into_std())
    }
}

#[async_trait]
impl Leadership for EtcdLeadership {
    fn watch(&self) -> watch::Receiver<LeaderState> {
        self.shared.state.subscribe()
    }

    fn check(&self) -> Result<Fence> {
        let term = self
            .shared
            .term
            .lock()
            .as_ref()
            .map(|t| (t.fence, Instant::now() < t.valid_until));
        match term {
            Some((fence, true)) => Ok(fence),
            Some((fence, false)) => {
                self.shared.lose(
                    fence,
                    "no keep-alive was confirmed within the lease TTL; the lease may have expired",
                );
                Err(Error::NotLeader { leader: None })
            }
            None => Err(Error::NotLeader {
                leader: self.shared.hint(),
            }),
        }
    }

    fn start(&self, advertise: &str) {
        if self.shared.advertise.set(advertise.to_string()).is_err() {
            return;
        }
        tracing::info!(
            etcd = %self.shared.etcd.endpoints().join(","),
            election = %self.shared.name,
            lease_ttl = ?self.shared.ttl,
            advertise,
            "one replica of several: state in etcd, campaigning for leadership"
        );
        let mut tasks = self.shared.tasks.lock();
        tasks.push(tokio::spawn(campaign_forever(self.shared.clone())));
        tasks.push(tokio::spawn(observe(self.shared.clone())));
        tasks.push(tokio::spawn(watch_dead_leader(self.shared.clone())));
    }

    async fn resign(&self) {
        self.shared.stop.cancel();
        let tasks: Vec<_> = self.shared.tasks.lock().drain(..).collect();
        for t in tasks {
            // Resigning is two etcd requests; do not hold a shutdown up when etcd is away.
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}

impl Drop for EtcdLeadership {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

enum TermEnd {
    Stopped,
    /// Lost leadership; campaign again at once.
    SteppedDown,
    /// Could not get to lead (etcd trouble): retry with backoff.
    Failed(String),
}

async fn campaign_forever(shared: Arc<Shared>) {
    let log = StateLog::new("election");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        match term(&shared, &log).await {
            TermEnd::Stopped => return,
            TermEnd::SteppedDown => backoff.reset(),
            TermEnd::Failed(e) => {
                log.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next()) => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
        }
    }
}

/// One term: lease, campaign, lead until the lease is lost or the replica stops.
async fn term(shared: &Arc<Shared>, log: &StateLog) -> TermEnd {
    let etcd = &shared.etcd;
    let ttl = shared.ttl;
    let round = ttl / 3;
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let asked = Instant::now();
    let granted = match etcd
        .call(round, |mut c| async move { c.lease_grant(ttl_secs, None).await })
        .await
    {
        Ok(g) => g,
        Err(e) => return TermEnd::Failed(format!("cannot grant a lease: {e}")),
    };
    log.ok();
    let lease = granted.id();
    shared.own_lease.store(lease, Ordering::SeqCst);
    if granted.ttl() != ttl_secs {
        tracing::info!(
            asked = ttl_secs,
            granted = granted.ttl(),
            "etcd changed the lease TTL"
        );
    }
    let mut keeper = Keeper {
        etcd: etcd.clone(),
        lease,
        ttl,
        margin: shared.margin(),
        attempt: round,
        valid_until: asked + ttl.saturating_sub(shared.margin()),
        stream: None,
    };
    let mut next = asked + round;
    let advertise = shared.advertise.get().cloned().unwrap_or_default();

    // Campaign, keeping the lease alive while another replica leads.
    let won = {
        let campaign = campaign(shared, lease, &advertise);
        tokio::pin!(campaign);
        loop {
            tokio::select! {
                r = &mut campaign => break r,
                _ = tokio::time::sleep_until(next) => match keeper.renew().await {
                    Ok(sent) => next = sent + round,
                    Err(e) => {
                        revoke_later(shared, lease);
                        return TermEnd::Failed(format!("lease keep-alive while campaigning: {e}"));
                    }
                },
                _ = shared.stop.cancelled() => {
                    revoke(etcd, lease).await;
                    return TermEnd::Stopped;
                }
            }
        }
    };
    let key = match won {
        Ok(k) => k,
        Err(e) => {
            revoke_later(shared, lease);
            return TermEnd::Failed(format!("campaign: {e}"));
        }
    };

    // Confirm: a fresh keep-alive (the validity starts from it), then Proclaim, which etcd
    // only accepts while our election key exists.
    let sent = match keeper.renew().await {
        Ok(sent) => sent,
        Err(e) => {
            revoke_later(shared, lease);
            return TermEnd::Failed(format!("keep-alive after winning the election: {e}"));
        }
    };
    let proclaimed = etcd
        .call(round, |mut c| {
            let key = key.clone();
            let value = advertise.clone();
            async move {
                c.proclaim(value, Some(ProclaimOptions::new().with_leader(key)))
                    .await
            }
        })
        .await;
    if let Err(e) = proclaimed {
        revoke_later(shared, lease);
        return TermEnd::Failed(format!("proclaim after winning the election: {e}"));
    }
    let fence = Fence(key.rev() as u64);
    shared.lead(Term {
        fence,
        key: key.key().to_vec(),
        lease,
        valid_until: keeper.valid_until,
    });
    tracing::info!(
        fence = fence.0,
        lease = format!("{lease:x}"),
        advertise,
        "elected leader"
    );
    next = sent + round;

    // Lead.
    let reason = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => match keeper.renew().await {
                Ok(sent) => {
                    shared.extend(fence, keeper.valid_until);
                    next = sent + round;
                }
                Err(e) => break format!("lease keep-alive failed ({e})"),
            },
            _ = shared.lost.notified() => if !shared.holds(fence) {
                break String::new();
            },
            _ = shared.stop.cancelled() => {
                resign_term(shared, &key, lease).await;
                return TermEnd::Stopped;
            }
        }
    };
    if !reason.is_empty() {
        shared.lose(fence, &reason);
    }
    revoke_later(shared, lease);
    TermEnd::SteppedDown
}

/// Campaigns until elected, moving to another member when the one in use fails.
async fn campaign(shared: &Shared, lease: i64, advertise: &str) -> Result<LeaderKey, String> {
    let etcd = &shared.etcd;
    let log = StateLog::new("campaign");
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let (member, mut client) = etcd.election_client();
        match client
            .campaign(shared.name.as_bytes(), advertise.as_bytes(), lease)
            .await
        {
            Ok(resp) => {
                log.ok();
                return resp
                    .leader()
                    .cloned()
                    .ok_or_else(|| "etcd answered the campaign without a leader key".to_string());
            }
            Err(e) => {
                let e = EtcdError::from(e);
                if !e.retryable {
                    return Err(e.message);
                }
                log.failed(&e.message);
                etcd.advance(member);
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// Shutdown while leading: stop acting, then resign and revoke so a successor wins at once.
async fn resign_term(shared: &Shared, key: &LeaderKey, lease: i64) {
    let fence = Fence(key.rev() as u64);
    {
        let mut term = shared.term.lock();
        if term.as_ref().is_some_and(|t| t.fence == fence) {
            *term = None;
            shared.state.send_replace(LeaderState::Follower { leader: None });
        }
    }
    let started = Instant::now();
    let resigned = shared
        .etcd
        .call(Duration::from_secs(1), |mut c| {
            let key = key.clone();
            async move { c.resign(Some(ResignOptions::new().with_leader(key))).await }
        })
        .await;
    if let Err(e) = &resigned {
        tracing::warn!("etcd: cannot resign the election ({e}); revoking the lease");
    }
    revoke(&shared.etcd, lease).await;
    tracing::info!(
        fence = fence.0,
        "resigned the leadership in {:?}",
        started.elapsed()
    );
}

async fn revoke(etcd: &Etcd, lease: i64) {
    let _ = etcd
        .call(Duration::from_secs(1), |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await;
}

/// Revokes a lease we gave up, retrying while etcd is away: after a loss of quorum etcd extends
/// every lease, and our old election key would keep the election blocked for another TTL.
fn revoke_later(shared: &Arc<Shared>, lease: i64) {
    let etcd = shared.etcd.clone();
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let give_up = Instant::now() + Duration::from_secs(300);
        while Instant::now() < give_up {
            match etcd
                .call(Duration::from_secs(1), |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await
            {
                Ok(_) => return,
                Err(e) if !e.retryable => return, // not found: it expired already
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next()) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Follows the election's leader value (the leader's advertised address).
async fn observe(shared: Arc<Shared>) {
    let etcd = &shared.etcd;
    let log = StateLog::new("observe");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let (member, mut client) = etcd.election_client();
        let opened = tokio::select! {
            r = client.observe(shared.name.as_bytes()) => r,
            _ = shared.stop.cancelled() => return,
        };
        let error = match opened {
            Ok(mut stream) => loop {
                let m = tokio::select! {
                    m = stream.message() => m,
                    _ = shared.stop.cancelled() => return,
                };
                match m {
                    Ok(Some(resp)) => {
                        log.ok();
                        backoff.reset();
                        let leader = resp
                            .kv()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                            .filter(|v| !v.is_empty());
                        let lease = resp.kv().map_or(0, |kv| kv.lease());
                        shared.observed_lease.store(lease, Ordering::SeqCst);
                        shared.set_observed(leader);
                    }
                    Ok(None) => break "the observe stream ended".to_string(),
                    Err(e) => break EtcdError::from(e).message,
                }
            },
            Err(e) => EtcdError::from(e).message,
        };
        log.failed(&error);
        etcd.advance(member);
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = shared.stop.cancelled() => return,
        }
    }
}

/// How often followers check on the leader.
const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// What the leader's advertised address says.
#[derive(Debug, PartialEq)]
enum Probe {
    /// Serves Fleet: a live leader.
    Leads,
    /// Refuses connections, or is a replica that does not lead (restarted on the address).
    Gone,
    /// No answer in time (paused, partitioned, unroutable): left to the lease.
    Unknown,
}

async fn probe(addr: &str) -> Probe {
    use tonic_health::pb::health_check_response::ServingStatus;
    let limit = Duration::from_millis(300);
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Gone,
        _ => return Probe::Unknown,
    }
    let Ok(channel) = crate::client::channel(addr) else {
        return Probe::Unknown;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: crate::server::FLEET_SERVICE.into(),
    };
    match tokio::time::timeout(limit, client.check(request)).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Probe::Leads,
        Ok(Ok(_)) => Probe::Gone,
        _ => Probe::Unknown,
    }
}

/// Revokes the lease of a leader that is gone (see the module docs): its lease missed a renewal
/// (more than TTL/3 since the last one) and its address refuses connections or does not lead,
/// on two checks in a row.
async fn watch_dead_leader(shared: Arc<Shared>) {
    let missed_below = (shared.ttl.as_secs_f64() * 2.0 / 3.0 - 1.0).floor() as i64;
    let mut suspect: Option<(i64, u32)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_PERIOD) => {}
            _ = shared.stop.cancelled() => return,
        }
        let lease = shared.observed_lease.load(Ordering::SeqCst);
        let leader = shared.observed.lock().clone();
        let leading = shared.term.lock().is_some();
        let (Some(addr), false) = (leader, leading || lease == 0) else {
            suspect = None;
            continue;
        };
        if lease == shared.own_lease.load(Ordering::SeqCst) {
            suspect = None;
            continue;
        }
        let left = shared
            .etcd
            .call(shared.ttl / 3, |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await
            .map(|r| r.ttl());
        // etcd reports whole seconds left, rounded down (−1: already gone). Renewals come every
        // TTL/3, so `left + 1 <= TTL − TTL/3` means the last one is more than a period old.
        let missed = matches!(left, Ok(t) if t <= missed_below);
        if !missed || probe(&addr).await != Probe::Gone {
            suspect = None;
            continue;
        }
        let seen = match suspect {
            Some((l, n)) if l == lease => n + 1,
            _ => 1,
        };
        suspect = Some((lease, seen));
        if seen < 2 {
            continue;
        }
        suspect = None;
        let revoked = shared
            .etcd
            .call(shared.ttl / 3, |mut c| async move { c.lease_revoke(lease).await })
            .await;
        match revoked {
            Ok(_) => tracing::warn!(
                leader = %addr,
                lease = format!("{lease:x}"),
                "the leader missed its lease renewal and its address does not lead: revoked its lease"
            ),
            Err(e) if e.message.contains("not found") => {}
            Err(e) => tracing::debug!("cannot revoke the dead leader's lease: {e}"),
        }
    }
}

/// Keeps one lease alive over a keep-alive stream to one member, moving to the next member
/// when that one fails.
struct Keeper {
    etcd: Etcd,
    lease: i64,
    ttl: Duration,
    margin: Duration,
    /// Timeout of one keep-alive (TTL/3).
    attempt: Duration,
    /// Until when the lease is surely alive: the last successful keep-alive's send time plus
    /// the TTL, minus a margin.
    valid_until: Instant,
    stream: Option<(usize, LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Keeper {
    /// Renews the lease: keep-alives of TTL/3 each on the members in turn, until one succeeds
    /// or the lease may have expired (`valid_until`). Returns when the successful keep-alive
    /// was sent. A definite answer (the lease is gone) ends it at once.
    ///
    /// Retrying until `valid_until` rather than giving up after one failed keep-alive lets the
    /// leader ride out an etcd leader election (1 to 2 s without a raft leader, e.g. when the
    /// member that led etcd dies), during which etcd revokes no lease and after which it extends
    /// every lease by its TTL.
    async fn renew(&mut self) -> Result<Instant, EtcdError> {
        let n = self.etcd.endpoints().len();
        let mut last = EtcdError {
            message: "no keep-alive succeeded before the lease could expire".into(),
            retryable: true,
        };
        let mut tried = 0usize;
        loop {
            let left = self.valid_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last);
            }
            if tried > 0 && tried.is_multiple_of(n) {
                // Every member failed: pause before the next pass.
                tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                if Instant::now() >= self.valid_until {
                    return Err(last);
                }
            }
            tried += 1;
            let member = self.stream.as_ref().map_or_else(|| self.etcd.current(), |s| s.0);
            let sent = Instant::now();
            let slice = self.attempt.min(left);
            match tokio::time::timeout(slice, self.once(member)).await {
                Ok(Ok(ttl)) if ttl > 0 => {
                    let granted = Duration::from_secs(ttl as u64).min(self.ttl);
                    self.valid_until = sent + granted.saturating_sub(self.margin);
                    return Ok(sent);
                }
                Ok(Ok(_)) => {
                    return Err(EtcdError {
                        message: "etcd says the lease expired".into(),
                        retryable: false,
                    });
                }
                Ok(Err(e)) => {
                    self.stream = None;
                    if !e.retryable {
                        return Err(e);
                    }
                    last = e;
                }
                Err(_) => {
                    // A response may still come on this stream: never read it as a later one's.
                    self.stream = None;
                    last = EtcdError::timeout(slice);
                }
            }
            self.etcd.advance(member);
        }
    }

    /// One keep-alive on `member`'s stream (opened if needed); the TTL etcd answers.
    async fn once(&mut self, member: usize) -> Result<i64, EtcdError> {
        if self.stream.is_none() {
            let (keeper, stream) = self.etcd.client(member).lease_keep_alive(self.lease).await?;
            self.stream = Some((member, keeper, stream));
        }
        let Some((_, keeper, stream)) = self.stream.as_mut() else {
            return Err(EtcdError::timeout(Duration::ZERO));
        };
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) => Ok(r.ttl()),
            None => Err(EtcdError {
                message: "the keep-alive stream closed".into(),
                retryable: true,
            }),
        }
    }
}
