//! The rollouts of this coordinator: one reconcile loop per active rollout, woken by agent
//! reports about its canary and by a timer (deadlines, bakes); the verbs; gate decisions; acks.
//!
//! Every change is written to the store (with the leader's fence and a compare-and-swap on the
//! record's revision) *before* the commands that follow from it are sent. If a write fails,
//! nothing is sent and the loop tries again; the commands are derived again from the state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aviary_api::FleetRollout;
use aviary_core::fleet::{self, CanaryKey, Command, GateAnswer, GateAsk, Plan, RolloutState, resolve_plan};
use aviary_core::judge::EvidenceReport;
use jiff::Timestamp;
use parking_lot::RwLock;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::fleet::{ClusterSummary, Fleet, Keep};
use crate::leader::{Fence, Leadership};
use crate::store::{RolloutRecord, Store, Unreadable};

/// How long a woken loop waits for more reports before it reconciles.
const COALESCE: Duration = Duration::from_millis(100);

/// Where commands go: the connected agents (the AgentLink sessions). A command for an agent
/// that is not connected waits for its reconnect, when the pending commands are sent again.
pub(crate) trait CommandSink: Send + Sync {
    /// Queues `command` of `plan` for its cluster's agent; false if it is not connected.
    fn send(&self, plan: &Plan, command: &Command) -> bool;
}

/// Wall-clock time that follows tokio's clock, so tests on a paused clock see deadlines and
/// bakes pass exactly as the sleeps do.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    wall: Timestamp,
    base: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            wall: Timestamp::now(),
            base: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.wall
            .saturating_add(self.base.elapsed())
            .unwrap_or(Timestamp::MAX)
    }

    /// How long until `t` on tokio's clock.
    fn until(&self, t: Timestamp) -> Duration {
        Duration::try_from(t.duration_since(self.now())).unwrap_or(Duration::ZERO)
    }
}

struct Inner {
    record: RolloutRecord,
    revision: u64,
}

/// One rollout held by the leader.
pub(crate) struct Entry {
    name: String,
    canary: CanaryKey,
    /// The planned clusters (the plan never changes): a report's cluster is looked up here.
    clusters: HashSet<String>,
    inner: tokio::sync::Mutex<Inner>,
    /// The last written record: lock-free reads, watches and gate decisions.
    published: watch::Sender<Arc<RolloutRecord>>,
    /// Bumped when an agent reports about this rollout's canary (live values changed).
    live: watch::Sender<u64>,
    wake: Notify,
    active: AtomicBool,
}

impl Entry {
    fn new(record: RolloutRecord, revision: u64) -> Arc<Self> {
        Arc::new(Self {
            name: record.name.clone(),
            canary: record.plan.canary.clone(),
            clusters: record.plan.clusters().map(|c| c.name.clone()).collect(),
            active: AtomicBool::new(!record.state.phase.is_terminal()),
            published: watch::Sender::new(Arc::new(record.clone())),
            inner: tokio::sync::Mutex::new(Inner { record, revision }),
            live: watch::Sender::new(0),
            wake: Notify::new(),
        })
    }

    fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn current(&self) -> Arc<RolloutRecord> {
        self.published.borrow().clone()
    }

    /// (record changes, live changes) receivers for watching.
    pub(crate) fn subscribe(&self) -> (watch::Receiver<Arc<RolloutRecord>>, watch::Receiver<u64>) {
        (self.published.subscribe(), self.live.subscribe())
    }
}

/// The rollout manager.
pub(crate) struct Rollouts {
    store: Arc<dyn Store>,
    leader: Arc<dyn Leadership>,
    pub(crate) fleet: Arc<Fleet>,
    agents: Arc<dyn CommandSink>,
    pub(crate) clock: Clock,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Stored records that do not decode (quarantined at the last load).
    unreadable: RwLock<Quarantine>,
    /// Every rollout (active or ended) of each canary.
    by_canary: RwLock<HashMap<CanaryKey, Vec<Arc<Entry>>>>,
    create_lock: tokio::sync::Mutex<()>,
    /// The term whose state is loaded (`None` while following or loading): agent sessions and
    /// watches of a new leader wait for it, so none sees the empty state of a takeover.
    loaded: watch::Sender<Option<Fence>>,
    pub(crate) shutdown: CancellationToken,
}

/// Stored records that do not decode, found by the last load.
#[derive(Default)]
struct Quarantine {
    /// By rollout name.
    rollouts: BTreeMap<String, Unreadable>,
    clusters: Vec<Unreadable>,
}

enum Step {
    /// Run again at this time (or when woken).
    Wait(Option<Timestamp>),
    /// Retry soon: a write failed.
    Retry,
    /// Terminal, or leadership lost: the loop ends.
    Stop,
}

impl Rollouts {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        leader: Arc<dyn Leadership>,
        fleet: Arc<Fleet>,
        agents: Arc<dyn CommandSink>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            leader,
            fleet,
            agents,
            clock: Clock::new(),
            entries: RwLock::new(BTreeMap::new()),
            unreadable: RwLock::new(Quarantine::default()),
            by_canary: RwLock::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            loaded: watch::Sender::new(None),
            shutdown,
        })
    }

    /// Follows leadership: on becoming leader (of a new term), loads every rollout and cluster
    /// from the store and starts the loops of the active rollouts (a new leader resumes where
    /// the old one stood); on losing it the loops stop by themselves.
    pub(crate) async fn lead(self: Arc<Self>) {
        let mut rx = self.leader.watch();
        loop {
            rx.borrow_and_update();
            match self.leader.check() {
                // A term not loaded yet, including leader → follower → leader flips that the
                // watch coalesced: the previous term's loops have stopped, reload.
                Ok(fence) if *self.loaded.borrow() != Some(fence) => {
                    if let Err(e) = self.load().await {
                        tracing::warn!(error = %e, "cannot load state from the store; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = self.shutdown.cancelled() => return,
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    if self.loaded.send_replace(None).is_some() {
                        tracing::info!("no longer the leader: rollout loops stop");
                    }
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Loads every rollout and cluster registration from the store and starts the loops.
    /// Records that do not decode are quarantined (logged by the store, reported by
    /// ListRollouts) and the rest loads.
    pub(crate) async fn load(self: &Arc<Self>) -> Result<usize> {
        let fence = self.leader.check()?;
        self.loaded.send_replace(None);
        let clusters = self.store.list_clusters().await?;
        self.fleet.load(clusters.records, self.clock.now());
        let listing = self.store.list_rollouts().await?;
        let n = listing.records.len();
        let mut entries = BTreeMap::new();
        let mut by_canary: HashMap<CanaryKey, Vec<Arc<Entry>>> = HashMap::new();
        for v in listing.records {
            let e = Entry::new(v.value, v.revision);
            by_canary.entry(e.canary.clone()).or_default().push(e.clone());
            entries.insert(e.name.clone(), e);
        }
        let unreadable = Quarantine {
            rollouts: listing
                .unreadable
                .into_iter()
                .map(|u| (u.name.clone(), u))
                .collect(),
            clusters: clusters.unreadable,
        };
        let quarantined = unreadable.rollouts.len() + unreadable.clusters.len();
        *self.entries.write() = entries.clone();
        *self.by_canary.write() = by_canary;
        *self.unreadable.write() = unreadable;
        for e in entries.into_values().filter(|e| e.is_active()) {
            self.spawn_loop(e);
        }
        // Published only if the term did not end while loading.
        if self.leader.check().ok() == Some(fence) {
            self.loaded.send_replace(Some(fence));
            tracing::info!(
                rollouts = n,
                quarantined,
                term = fence.0,
                "leading: state loaded from the store"
            );
        }
        Ok(n)
    }

    /// The term whose state is loaded, and every change (`None` while following or loading).
    pub(crate) fn loaded(&self) -> watch::Receiver<Option<Fence>> {
        self.loaded.subscribe()
    }

    /// Stored records that could not be decoded at the last load (or, on a follower, now).
    pub(crate) async fn unreadable(&self) -> Result<Vec<Unreadable>> {
        if self.leader.check().is_ok() {
            self.ready().await?;
            let q = self.unreadable.read();
            return Ok(q.rollouts.values().chain(&q.clusters).cloned().collect());
        }
        let mut all = self.store.list_rollouts().await?.unreadable;
        all.extend(self.store.list_clusters().await?.unreadable);
        Ok(all)
    }

    /// Waits until this replica leads with its state loaded (a takeover takes milliseconds);
    /// the fence of the term, or NotLeader / UNAVAILABLE.
    pub(crate) async fn ready(&self) -> Result<Fence> {
        let fence = self.leader.check()?;
        let mut rx = self.loaded.subscribe();
        let wait = rx.wait_for(|l| *l == Some(fence));
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(_)) => Ok(fence),
            _ => {
                self.leader.check()?;
                Err(Error::Unavailable(
                    "this coordinator was just elected and is still loading the fleet state; retry".into(),
                ))
            }
        }
    }

    fn spawn_loop(self: &Arc<Self>, entry: Arc<Entry>) {
        let this = self.clone();
        tokio::spawn(async move { this.run(entry).await });
    }

    async fn run(self: Arc<Self>, entry: Arc<Entry>) {
        let mut leader = self.leader.watch();
        // A loop belongs to one term: a later term has loaded its own entries.
        let Ok(term) = self.leader.check() else { return };
        let mut backoff = Duration::from_millis(100);
        loop {
            let sleep = match self.reconcile_once(&entry).await {
                Step::Stop => return,
                Step::Wait(at) => {
                    backoff = Duration::from_millis(100);
                    at.map(|t| self.clock.until(t))
                }
                Step::Retry => {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    Some(backoff)
                }
            };
            let timer = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = entry.wake.notified() => {
                    // Reports come in bursts (an agent reports its canaries together, a wave's
                    // agents report at once): one reconcile per burst.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = timer => {}
                r = leader.changed() => if r.is_err() || self.leader.check().ok() != Some(term) { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// One reconcile: observe, decide, write, then send.
    async fn reconcile_once(&self, entry: &Entry) -> Step {
        let Ok(fence) = self.leader.check() else {
            return Step::Stop;
        };
        let mut inner = entry.inner.lock().await;
        let plan = inner.record.plan.clone();
        let view = self.fleet.view_for(&plan);
        let mut next = inner.record.state.clone();
        let cmds = fleet::reconcile(&plan, &mut next, &view, self.clock.now());
        if next != inner.record.state {
            match self.store_state(entry, &mut inner, fence, next).await {
                Ok(()) => {}
                Err(Error::Conflict { .. }) => {
                    // Someone else wrote it (a leadership change): take the stored state.
                    tracing::warn!(rollout = %entry.name, "stored rollout changed; reloading");
                    if let Ok(Some(v)) = self.store.get_rollout(&entry.name).await {
                        inner.record = v.value;
                        inner.revision = v.revision;
                        self.publish(entry, &inner.record);
                    }
                    return Step::Retry;
                }
                Err(Error::Fenced { .. }) => return Step::Stop,
                Err(Error::Unstorable(why)) => {
                    // Retrying the same write cannot help: the clusters whose reports made the
                    // record unstorable fail with a short verdict, and that is written instead.
                    tracing::error!(rollout = %entry.name, error = %why, "the new state cannot be stored; failing the clusters it came from");
                    let mut next = inner.record.state.clone();
                    fleet::reconcile(&plan, &mut next, &view, self.clock.now());
                    if !fleet::fail_unstorable(&plan, &inner.record.state, &mut next, &why, self.clock.now())
                    {
                        return Step::Retry;
                    }
                    if let Err(e) = self.store_state(entry, &mut inner, fence, next).await {
                        tracing::warn!(rollout = %entry.name, error = %e, "cannot write the rollout; nothing sent, retrying");
                        return Step::Retry;
                    }
                    // The commands of the refused state are not sent; the next round decides again.
                    drop(inner);
                    return Step::Wait(Some(self.clock.now()));
                }
                Err(e) => {
                    tracing::warn!(rollout = %entry.name, error = %e, "cannot write the rollout; nothing sent, retrying");
                    return Step::Retry;
                }
            }
        }
        let terminal = inner.record.state.phase.is_terminal();
        let wake = fleet::next_wake(&plan, &inner.record.state, self.clock.now());
        drop(inner);
        self.send(&plan, &cmds);
        if terminal { Step::Stop } else { Step::Wait(wake) }
    }

    /// Writes `state` as the rollout's new state (the leader's fence, a compare-and-swap on
    /// the record's revision), then publishes it.
    async fn store_state(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        fence: Fence,
        state: RolloutState,
    ) -> Result<()> {
        let mut record = inner.record.clone();
        record.state = state;
        inner.revision = self.store.update_rollout(fence, &record, inner.revision).await?;
        inner.record = record;
        self.publish(entry, &inner.record);
        Ok(())
    }

    fn publish(&self, entry: &Entry, record: &RolloutRecord) {
        entry
            .active
            .store(!record.state.phase.is_terminal(), Ordering::Relaxed);
        entry.published.send_replace(Arc::new(record.clone()));
    }

    /// Sends commands to the agents that are connected; the others get them on reconnect.
    fn send(&self, plan: &Plan, cmds: &[Command]) {
        for c in cmds {
            if !self.agents.send(plan, c) {
                tracing::debug!(cluster = c.cluster(), rollout = %plan.name, "agent not connected; the command waits for its reconnect");
            }
        }
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        if let Some(e) = self.entries.read().get(name) {
            return Ok(e.clone());
        }
        if let Some(u) = self.unreadable.read().rollouts.get(name) {
            return Err(Error::Unreadable(u.clone()));
        }
        Err(Error::NotFound(format!(
            "rollout {name} not found; list rollouts with `aviary rollout list`"
        )))
    }

    /// The stored record (leader: the cache; follower: the store).
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<RolloutRecord>> {
        if self.leader.check().is_ok() {
            self.ready().await?;
            return Ok(self.entry(name)?.current());
        }
        match self.store.get_rollout(name).await? {
            Some(v) => Ok(Arc::new(v.value)),
            None => Err(Error::NotFound(format!("rollout {name} not found"))),
        }
    }

    /// The entry and the term, for watching (leader only: watches follow the leader and end
    /// with the term, see [`Rollouts::term_ended`]).
    pub(crate) async fn watchable(&self, name: &str) -> Result<(Arc<Entry>, Fence)> {
        let term = self.ready().await?;
        Ok((self.entry(name)?, term))
    }

    /// Resolves when `term` is over (this replica stepped down or a new term began), with the
    /// error to end a watch with: UNAVAILABLE and the new leader's address when known.
    pub(crate) async fn term_ended(&self, term: Fence) -> Error {
        let mut rx = self.leader.watch();
        loop {
            match self.leader.check() {
                Ok(f) if f == term => {}
                Ok(_) => {
                    return Error::Unavailable("leadership changed during the watch; watch again".into());
                }
                Err(e) => return e,
            }
            if rx.changed().await.is_err() {
                return Error::Unavailable("the coordinator is shutting down; watch again".into());
            }
        }
    }

    /// The live view of clusters and canaries is the leader's (it holds the agent streams):
    /// followers answer NotLeader with the leader's address.
    pub(crate) async fn live_view(&self) -> Result<&Fleet> {
        self.ready().await?;
        Ok(&self.fleet)
    }

    /// Every rollout, newest first.
    pub(crate) async fn list(&self) -> Result<Vec<Arc<RolloutRecord>>> {
        let mut v: Vec<Arc<RolloutRecord>> = if self.leader.check().is_ok() {
            self.ready().await?;
            self.entries.read().values().map(|e| e.current()).collect()
        } else {
            self.store
                .list_rollouts()
                .await?
                .records
                .into_iter()
                .map(|v| Arc::new(v.value))
                .collect()
        };
        v.sort_by(|a, b| b.state.created.cmp(&a.state.created).then(a.name.cmp(&b.name)));
        Ok(v)
    }

    /// A dry run of CreateRollout: the record it would create (the plan pinned against the
    /// fleet as it is now), nothing written or started.
    pub(crate) async fn plan(&self, rollout: &FleetRollout, actor: &str) -> Result<Arc<RolloutRecord>> {
        self.ready().await?;
        let (plan, state) = self.pin(rollout, &canary_key(rollout), actor)?;
        Ok(Arc::new(RolloutRecord {
            name: rollout.name().to_string(),
            spec: rollout.spec.clone(),
            plan,
            state,
        }))
    }

    /// The plan of `rollout` pinned against the fleet as it is now and its first state, created
    /// by `actor` ("unknown" when empty); the plan's diagnostics as one InvalidArgument.
    fn pin(&self, rollout: &FleetRollout, key: &CanaryKey, actor: &str) -> Result<(Plan, RolloutState)> {
        let plan = resolve_plan(rollout, &self.fleet.cluster_infos(key)).map_err(|diags| {
            let lines: Vec<String> = diags
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
            Error::InvalidArgument(format!("FleetRollout {}: {}", rollout.name(), lines.join("; ")))
        })?;
        let actor = if actor.is_empty() { "unknown" } else { actor };
        let state = RolloutState::new(&plan, actor, self.clock.now());
        Ok((plan, state))
    }

    /// CreateRollout: checks, pins the plan, writes it, starts its loop; the record as created.
    pub(crate) async fn create(
        self: &Arc<Self>,
        rollout: FleetRollout,
        actor: &str,
        comment: &str,
    ) -> Result<Arc<RolloutRecord>> {
        let fence = self.ready().await?;
        let _one_at_a_time = self.create_lock.lock().await;
        let name = rollout.name().to_string();
        if self.unreadable.read().rollouts.contains_key(&name) {
            return Err(Error::AlreadyExists(format!(
                "rollout {name} exists but its stored record cannot be read; delete it \
                 (`aviary rollout delete {name}`) or pick another metadata.name"
            )));
        }
        let existing = self.entries.read().get(&name).cloned();
        if let Some(e) = existing {
            let current = e.current();
            // Applying the same spec again (a CI retry) is a no-op.
            if current.spec == rollout.spec {
                return Ok(current);
            }
            return Err(Error::AlreadyExists(format!(
                "rollout {name} already exists with another spec ({}); rollouts are immutable: \
                 pick another metadata.name",
                spec_differences(&current.spec, &rollout.spec)
            )));
        }
        let key = canary_key(&rollout);
        if let Some(other) = self
            .by_canary
            .read()
            .get(&key)
            .into_iter()
            .flatten()
            .find(|e| e.is_active())
        {
            return Err(Error::FailedPrecondition(format!(
                "rollout {} is still {} for canary {key}; one rollout per canary at a time: wait \
                 for it to end or abort it",
                other.name,
                other.current().state.phase.as_str()
            )));
        }
        let (plan, mut state) = self.pin(&rollout, &key, actor)?;
        state.comment_since(0, comment);
        let record = RolloutRecord {
            name: name.clone(),
            spec: rollout.spec.clone(),
            plan,
            state,
        };
        let revision = self.store.create_rollout(fence, &record).await?;
        let entry = Entry::new(record, revision);
        self.entries.write().insert(name, entry.clone());
        self.by_canary.write().entry(key).or_default().push(entry.clone());
        let created = entry.current();
        self.spawn_loop(entry);
        Ok(created)
    }

    /// Applies a verb under the rollout's lock, writes, sends what it returned, wakes the loop;
    /// the record after the verb.
    pub(crate) async fn verb<F>(&self, name: &str, f: F) -> Result<Arc<RolloutRecord>>
    where
        F: FnOnce(&Plan, &mut RolloutState, Timestamp) -> aviary_core::Result<Vec<Command>>,
    {
        let fence = self.ready().await?;
        let entry = self.entry(name)?;
        let mut inner = entry.inner.lock().await;
        let plan = inner.record.plan.clone();
        let mut next = inner.record.state.clone();
        let cmds = f(&plan, &mut next, self.clock.now())?;
        if next != inner.record.state {
            self.store_state(&entry, &mut inner, fence, next).await?;
        }
        drop(inner);
        self.send(&plan, &cmds);
        entry.wake.notify_one();
        Ok(entry.current())
    }

    /// DeleteRollout: removes an ended rollout's record, so its name can be used again (a new
    /// rollout of that name starts afresh). An active rollout is refused unless `force`, which
    /// aborts it first (rolling back per its failure policy) and waits up to `wait` for the
    /// rollback to end. A quarantined (unreadable) record is removed as it is. The rollout as
    /// it was deleted; `None` for an unreadable record.
    pub(crate) async fn delete(
        &self,
        name: &str,
        force: bool,
        actor: &str,
        reason: &str,
        wait: Duration,
    ) -> Result<Option<Arc<RolloutRecord>>> {
        let fence = self.ready().await?;
        if self.unreadable.read().rollouts.contains_key(name) {
            let _one_at_a_time = self.create_lock.lock().await;
            self.store.delete_rollout(fence, name, None).await?;
            self.unreadable.write().rollouts.remove(name);
            return Ok(None);
        }
        let entry = self.entry(name)?;
        let current = entry.current();
        if !current.state.phase.is_terminal() {
            if !force {
                return Err(Error::FailedPrecondition(format!(
                    "rollout {name} is still {} ({}); only an ended rollout is deleted: abort it \
                     first (`aviary rollout abort {name}`) or delete it with --force, which aborts \
                     it, waits for the rollback to end and then deletes it",
                    current.state.phase.as_str(),
                    current.state.message
                )));
            }
            if current.state.phase != fleet::RolloutPhase::RollingBack {
                let reason = if reason.is_empty() {
                    "deleted with --force"
                } else {
                    reason
                };
                self.verb(name, |p, s, now| {
                    fleet::verbs::abort(p, s, &fleet::Stamp::by(actor, now), reason)
                })
                .await?;
            }
            let (mut records, _) = entry.subscribe();
            let ended = async { records.wait_for(|r| r.state.phase.is_terminal()).await.is_ok() };
            match tokio::time::timeout(wait, ended).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::Unavailable(
                        "the coordinator is shutting down; delete again".into(),
                    ));
                }
                Err(_) => {
                    let cur = entry.current();
                    return Err(Error::DeadlineExceeded(format!(
                        "rollout {name} was aborted but is still {} after {}s ({}); it is not \
                         deleted: delete it again once it has ended",
                        cur.state.phase.as_str(),
                        wait.as_secs(),
                        cur.state.message
                    )));
                }
            }
        }
        let _one_at_a_time = self.create_lock.lock().await;
        let inner = entry.inner.lock().await;
        self.store
            .delete_rollout(fence, name, Some(inner.revision))
            .await?;
        let record = Arc::new(inner.record.clone());
        drop(inner);
        {
            let mut entries = self.entries.write();
            if entries.get(name).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                entries.remove(name);
            }
        }
        if let Some(list) = self.by_canary.write().get_mut(&entry.canary) {
            list.retain(|e| !Arc::ptr_eq(e, &entry));
        }
        Ok(Some(record))
    }

    /// DeregisterCluster: forgets a disconnected cluster in the fleet view and the store; the
    /// registration it had.
    pub(crate) async fn forget_cluster(&self, name: &str) -> Result<ClusterSummary> {
        let fence = self.ready().await?;
        let gone = self.fleet.forget(name).map_err(|why| match why {
            Keep::Unknown => Error::NotFound(format!("cluster {name} is not registered (aviary clusters lists them)")),
            Keep::Connected => Error::FailedPrecondition(format!(
                "cluster {name} is connected: stop its agent (and revoke its certificate) first, or it registers again at once"
            )),
        })?;
        self.store.delete_cluster(fence, name).await?;
        Ok(gone)
    }

    /// Forgets the clusters gone for longer than `ttl` (leader only); their names.
    pub(crate) async fn expire_clusters(&self, ttl: Duration) -> Vec<String> {
        if self.held().is_none() {
            return Vec::new();
        }
        let mut gone = Vec::new();
        for name in self.fleet.expired_clusters(self.clock.now(), ttl) {
            match self.forget_cluster(&name).await {
                Ok(_) => gone.push(name),
                Err(e) => {
                    tracing::warn!(cluster = %name, error = %e, "cannot expire the cluster registration")
                }
            }
        }
        gone
    }

    /// Every rollout held, when this replica leads with its state loaded (the metrics).
    pub(crate) fn held(&self) -> Option<Vec<Arc<RolloutRecord>>> {
        let fence = self.leader.check().ok()?;
        (*self.loaded.borrow() == Some(fence))
            .then(|| self.entries.read().values().map(|e| e.current()).collect())
    }

    /// An agent reported about a canary: wake the active rollouts of that canary covering it.
    pub(crate) fn on_report(&self, cluster: &str, key: &CanaryKey) {
        let map = self.by_canary.read();
        let Some(list) = map.get(key) else { return };
        for e in list.iter().filter(|e| e.is_active()) {
            if e.clusters.contains(cluster) {
                e.live.send_modify(|n| *n = n.wrapping_add(1));
                e.wake.notify_one();
            }
        }
    }

    /// An agent connected (or left): re-send what its cluster may have missed, wake the loops.
    pub(crate) fn on_agent(&self, cluster: &str, connected: bool) {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .read()
            .values()
            .filter(|e| e.is_active())
            .cloned()
            .collect();
        for e in entries {
            let rec = e.current();
            if rec.plan.locate(cluster).is_none() {
                continue;
            }
            if connected {
                let cmds: Vec<Command> = fleet::pending_commands(&rec.plan, &rec.state)
                    .into_iter()
                    .filter(|c| c.cluster() == cluster)
                    .collect();
                self.send(&rec.plan, &cmds);
            }
            e.live.send_modify(|n| *n = n.wrapping_add(1));
            e.wake.notify_one();
        }
    }

    /// An agent acknowledged (`ok`) or refused a command; `fingerprint` is the revision it put
    /// in place.
    pub(crate) async fn on_ack(&self, command_id: &str, ok: bool, fingerprint: &str, message: &str) {
        let Some(name) = command_id.split('/').next() else {
            return;
        };
        let Ok(entry) = self.entry(name) else { return };
        let Ok(fence) = self.leader.check() else { return };
        let mut inner = entry.inner.lock().await;
        let mut next = inner.record.state.clone();
        let changed = fleet::on_ack(
            &inner.record.plan,
            &mut next,
            command_id,
            ok,
            fingerprint,
            message,
            self.clock.now(),
        );
        // The agent re-acks when the command is re-sent; nothing is lost.
        if changed && let Err(e) = self.store_state(&entry, &mut inner, fence, next).await {
            tracing::warn!(rollout = %name, error = %e, "cannot record an ack");
        }
        drop(inner);
        entry.wake.notify_one();
    }

    /// An agent's judge evidence for one interval of a canary: pooled into every active rollout
    /// of the canary that plans the cluster and pools evidence, written, then the loop woken
    /// (it decides on the pooled verdict). A duplicate changes nothing.
    pub(crate) async fn on_evidence(&self, cluster: &str, key: &CanaryKey, report: &EvidenceReport) {
        let entries: Vec<Arc<Entry>> = self
            .by_canary
            .read()
            .get(key)
            .into_iter()
            .flatten()
            .filter(|e| e.is_active() && e.clusters.contains(cluster))
            .cloned()
            .collect();
        for entry in entries {
            let Ok(fence) = self.leader.check() else { return };
            let mut inner = entry.inner.lock().await;
            if inner.record.state.evidence.is_none() {
                continue;
            }
            let mut next = inner.record.state.clone();
            let added = fleet::add_evidence(&mut next, report);
            if next == inner.record.state {
                continue;
            }
            if added.is_none() {
                tracing::warn!(rollout = %entry.name, cluster, "evidence refused: {}", next.evidence.as_ref().map(|e| e.last_refusal.as_str()).unwrap_or_default());
            }
            // A report lost to a failed write is lost evidence, never wrong evidence.
            if let Err(e) = self.store_state(&entry, &mut inner, fence, next).await {
                tracing::warn!(rollout = %entry.name, error = %e, "cannot record evidence");
            }
            drop(inner);
            entry.wake.notify_one();
        }
    }

    /// A gate request: decide from every rollout of the canary.
    pub(crate) fn gate(&self, cluster: &str, key: &CanaryKey, ask: &GateAsk) -> GateAnswer {
        let records: Vec<Arc<RolloutRecord>> = self
            .by_canary
            .read()
            .get(key)
            .into_iter()
            .flatten()
            .map(|e| e.current())
            .collect();
        fleet::gate_decision(records.iter().map(|r| (&r.plan, &r.state)), cluster, key, ask)
    }
}

/// What differs between two specs, as `path: old → new` (at most 5, then `…`).
fn spec_differences(old: &aviary_api::FleetRolloutSpec, new: &aviary_api::FleetRolloutSpec) -> String {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = Value::Null;
                    walk(
                        &format!("{path}.{k}"),
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a == b => {}
            _ => {
                let show = |v: &Value| {
                    if v.is_null() {
                        "<unset>".to_string()
                    } else {
                        v.to_string()
                    }
                };
                out.push(format!("{path}: {} → {}", show(a), show(b)));
            }
        }
    }
    let mut out = Vec::new();
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    walk("spec", &a, &b, &mut out);
    if out.len() > 5 {
        out.truncate(5);
        out.push("…".into());
    }
    out.join("; ")
}

/// The canary a rollout releases (`spec.canary`; empty when the spec names none).
fn canary_key(rollout: &FleetRollout) -> CanaryKey {
    rollout
        .spec
        .canary
        .as_ref()
        .map(|c| {
            CanaryKey::new(
                c.namespace.clone().unwrap_or_default(),
                c.name.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}
