//! Watch-backed read caches: what every analysis tick reads (the Canary before its status is
//! written, the target and primary Deployments, the Services, the router's objects) comes from a watch per kind and namespace instead of a GET,
//! so an idle canary costs the API server nothing between changes (Flagger GETs them all on
//! every tick: about 15 requests per canary per interval). On by default; `aviary agent
//! --no-watch-cache` reads with GETs on every tick, as Flagger does.
//!
//! A cache answers only when it is in step with the API server: its watch has listed and is
//! running, and no write of ours to that object is still on its way back through the watch (a
//! write records the resourceVersion it produced; until the watch shows it, that object is read
//! with a GET). Otherwise — and for kinds not cached, a namespace that cannot be watched (no
//! `list`/`watch` permission, the CRD is missing) or a broken watch — reads fall back to GETs.
//! Writes are never served from here: a read-modify-write whose cached copy was stale fails its
//! resourceVersion precondition and is retried with a fresh GET.
//!
//! A watch can fall behind without an error (seen at 500 canaries on a loaded machine: a cached
//! Deployment stayed minutes behind the API server). So every [`CHECK_EVERY`] each store is
//! compared with a metadata-only list of its kind and namespace (fetched beside the watch). A
//! store answers only while its last check that found it in step is less than [`FRESH_LIMIT`]
//! old; an object the watch has still not brought up to the listed version [`CHECK_GRACE`]
//! later, in two checks in a row, starts the watch over from a fresh list (logged as a warning).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{
    CANARY, DEPLOYMENT, DESTINATION_RULE, HPA, HTTP_ROUTE, HTTP_ROUTE_V1BETA1, KNATIVE_SERVICE, Kind,
    SERVICE, VIRTUAL_SERVICE,
};

/// The kinds read on every tick (the cache needs `list`/`watch` on them, granted in deploy/rbac;
/// without them it falls back to GETs). ConfigMaps and
/// Secrets are not cached: there can be many, and Secrets should not sit in memory.
pub const CACHED_KINDS: [Kind; 9] = [
    CANARY,
    DEPLOYMENT,
    SERVICE,
    HPA,
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    HTTP_ROUTE,
    HTTP_ROUTE_V1BETA1,
    KNATIVE_SERVICE,
];

/// A write not seen back through the watch after this long no longer holds reads back (the
/// watch may have re-listed past it).
const PENDING_LIMIT: Duration = Duration::from_secs(30);

/// How often a store is compared with a list of the names and resourceVersions the API server
/// has (one request per kind and namespace, whatever the number of canaries).
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long after that list the watch may take to have delivered what it showed.
const CHECK_GRACE: Duration = Duration::from_secs(5);

/// A store answers only while its last check (or list) was asked for less than this long ago:
/// a watch that stopped delivering without an error (its re-watch queued behind other requests
/// on an overloaded API server) serves copies at most this old, then reads GET.
const FRESH_LIMIT: Duration = Duration::from_secs(30);

/// The caches of one client, one watch per (kind, namespace) started on first read.
pub struct ReadCache {
    client: Client,
    kinds: Vec<Kind>,
    stores: Mutex<HashMap<(Kind, String), Arc<Store>>>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

/// A write of ours the watch has not shown yet.
#[derive(Debug, Clone)]
enum Pending {
    /// The object now has this resourceVersion.
    Version(String, Instant),
    /// We deleted it.
    Deleted(Instant),
}

impl Pending {
    fn fresh(&self) -> bool {
        let at = match self {
            Pending::Version(_, at) | Pending::Deleted(at) => at,
        };
        at.elapsed() < PENDING_LIMIT
    }
}

#[derive(Default)]
struct Store {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The watch has listed and is running.
    synced: bool,
    /// The watch cannot run here (forbidden, or the kind does not exist): always GET.
    disabled: bool,
    objects: HashMap<String, Value>,
    pending: HashMap<String, Pending>,
    /// Names the watch showed deleted since the last check began.
    deleted: HashSet<String>,
    /// The store was last shown in step with a list asked for at this time (a check, or the
    /// watch's own list).
    checked: Option<Instant>,
}

impl ReadCache {
    pub fn new(client: Client, kinds: &[Kind]) -> Self {
        let stop = CancellationToken::new();
        Self {
            client,
            kinds: kinds.to_vec(),
            stores: Mutex::new(HashMap::new()),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// The object as the watch has it (`Some(None)`: it does not exist), or `None` when the cache
    /// cannot answer and the caller must GET.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Option<Value>> {
        if namespace.is_empty() || !self.kinds.contains(&kind) {
            return None;
        }
        let store = self.store(kind, namespace)?;
        let s = store.state.lock();
        if !s.synced || s.disabled || s.checked.is_none_or(|t| t.elapsed() >= FRESH_LIMIT) {
            tracing::debug!(
                "GET {} {namespace}/{name}: the watch is not in step",
                kind.qualified()
            );
            return None;
        }
        if let Some(p) = s.pending.get(name).filter(|p| p.fresh()) {
            tracing::debug!(
                "GET {} {namespace}/{name}: our write {p:?} not seen yet",
                kind.qualified()
            );
            return None;
        }
        Some(s.objects.get(name).cloned())
    }

    /// Records a write of ours: `Some(resourceVersion)` after a create or update, `None` after a
    /// delete. Reads of that object GET until the watch shows it.
    pub fn wrote(&self, kind: Kind, namespace: &str, name: &str, version: Option<&str>) {
        if namespace.is_empty() || !self.kinds.contains(&kind) {
            return;
        }
        let Some(store) = self.stores.lock().get(&(kind, namespace.to_string())).cloned() else {
            return;
        };
        let mut s = store.state.lock();
        // The watch may have shown the write before its response came back.
        let seen = match version {
            Some(v) => s.objects.get(name).is_some_and(|o| reached(o, v)),
            None => !s.objects.contains_key(name),
        };
        if seen {
            s.pending.remove(name);
            return;
        }
        let pending = match version {
            Some(v) => Pending::Version(v.to_string(), Instant::now()),
            None => Pending::Deleted(Instant::now()),
        };
        s.pending.insert(name.to_string(), pending);
    }

    /// The store of (kind, namespace), its watch started on first use (`None` outside a tokio
    /// runtime).
    fn store(&self, kind: Kind, namespace: &str) -> Option<Arc<Store>> {
        let mut stores = self.stores.lock();
        if let Some(s) = stores.get(&(kind, namespace.to_string())) {
            return Some(s.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let store = Arc::new(Store::default());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &kind.resource());
        runtime.spawn(follow(
            api,
            Arc::downgrade(&store),
            kind,
            namespace.to_string(),
            self.stop.clone(),
        ));
        stores.insert((kind, namespace.to_string()), store.clone());
        Some(store)
    }
}

/// Keeps a store in step with the API server until the cache is dropped: applies the watch's
/// events, and every [`CHECK_EVERY`] compares the store with a metadata-only list (fetched
/// beside the watch, never holding its events up): in step, the store may answer for
/// [`FRESH_LIMIT`] more; behind twice in a row, the watch starts over from a fresh list.
async fn follow(
    api: Api<DynamicObject>,
    store: Weak<Store>,
    kind: Kind,
    ns: String,
    stop: CancellationToken,
) {
    let mut stream = watch(api.clone());
    // A re-list in progress: when it began, and its objects (they replace the store once
    // complete).
    let mut relist: Option<(Instant, HashMap<String, Value>)> = None;
    let mut tick = tokio::time::interval(CHECK_GRACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_check = Instant::now();
    let mut listing: Option<BoxFuture<'static, Option<Check>>> = None;
    let mut check: Option<Check> = None;
    let mut behind_before = false;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            listed = async { listing.as_mut().expect("guarded").await }, if listing.is_some() => {
                listing = None;
                check = listed;
                continue;
            }
            _ = tick.tick() => {
                let Some(store) = store.upgrade() else { return };
                let mut s = store.state.lock();
                if let Some(c) = check.take_if(|c| c.returned.elapsed() >= CHECK_GRACE) {
                    // After a re-list of the watch's own the next check decides.
                    let behind = if s.synced && relist.is_none() { c.behind(&s) } else { 0 };
                    if behind == 0 {
                        s.checked = s.checked.max(Some(c.issued));
                        behind_before = false;
                    } else if !behind_before {
                        // Not in step (reads GET once the last good check is too old); a
                        // slow API server may only be late: the next check decides.
                        behind_before = true;
                    } else {
                        tracing::warn!(
                            "the watch of {} in {ns} was behind the API server on {behind} objects \
                             {}s after a list showed them, twice in a row: watching again from a \
                             fresh list",
                            kind.qualified(),
                            CHECK_GRACE.as_secs()
                        );
                        behind_before = false;
                        s.synced = false;
                        stream = watch(api.clone());
                        relist = None;
                    }
                }
                if listing.is_none() && check.is_none() && last_check.elapsed() >= CHECK_EVERY {
                    last_check = Instant::now();
                    s.deleted.clear();
                    listing = Some(Check::list(api.clone(), kind, ns.clone()).boxed());
                }
                continue;
            }
            next = stream.next() => next,
        };
        let (Some(next), Some(store)) = (next, store.upgrade()) else {
            return;
        };
        let mut s = store.state.lock();
        if let Err(e) = next.map(|event| apply(&mut s, &mut relist, event)) {
            if let Some(code) = unusable(&e) {
                tracing::warn!(
                    "cannot watch {} in {ns} ({code}): reading them with a GET each time; \
                     grant list and watch on them in the agent's ClusterRole (deploy/rbac/cluster-role.yaml)",
                    kind.qualified()
                );
                s.disabled = true;
                return;
            }
            tracing::debug!(
                "watching {} in {ns}: {e}; reading with GETs until it is back",
                kind.qualified()
            );
            s.synced = false;
        }
    }
}

/// Applies one watch event to the store.
fn apply(s: &mut State, relist: &mut Option<(Instant, HashMap<String, Value>)>, event: Event<DynamicObject>) {
    match event {
        Event::Init => *relist = Some((Instant::now(), HashMap::new())),
        Event::InitApply(o) => {
            let (name, value) = entry(o);
            relist
                .get_or_insert_with(|| (Instant::now(), HashMap::new()))
                .1
                .insert(name, value);
        }
        Event::InitDone => {
            let (began, objects) = relist.take().unwrap_or_else(|| (Instant::now(), HashMap::new()));
            // A complete list is as good as a check.
            s.checked = s.checked.max(Some(began));
            // A list begun before a write of ours may not have it: such writes stay pending.
            s.pending.retain(|name, p| match p {
                Pending::Version(v, _) => objects.get(name).is_none_or(|o| !reached(o, v)),
                Pending::Deleted(_) => objects.contains_key(name),
            });
            s.objects = objects;
            s.synced = true;
        }
        Event::Apply(o) => {
            let (name, value) = entry(o);
            if matches!(s.pending.get(&name), Some(Pending::Version(v, _)) if reached(&value, v)) {
                s.pending.remove(&name);
            }
            s.objects.insert(name, value);
            s.synced = true;
        }
        Event::Delete(o) => {
            let (name, _) = entry(o);
            if matches!(s.pending.get(&name), Some(Pending::Deleted(_))) {
                s.pending.remove(&name);
            }
            s.objects.remove(&name);
            s.deleted.insert(name);
            s.synced = true;
        }
    }
}

/// What a metadata-only list showed: the watch must have delivered it [`CHECK_GRACE`] later.
struct Check {
    /// When the list was asked for, and when it came back.
    issued: Instant,
    returned: Instant,
    /// Name → resourceVersion of every listed object.
    listed: HashMap<String, String>,
    /// The list's own resourceVersion.
    version: String,
}

impl Check {
    /// Lists the namespace's objects of `kind` (names and versions only); `None` when the list
    /// fails (the watch's own errors decide what happens then).
    async fn list(api: Api<DynamicObject>, kind: Kind, ns: String) -> Option<Self> {
        let issued = Instant::now();
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => Some(Self {
                issued,
                returned: Instant::now(),
                listed: list
                    .items
                    .into_iter()
                    .map(|o| {
                        (
                            o.metadata.name.unwrap_or_default(),
                            o.metadata.resource_version.unwrap_or_default(),
                        )
                    })
                    .collect(),
                version: list.metadata.resource_version.unwrap_or_default(),
            }),
            Err(e) => {
                tracing::debug!("checking the watch of {} in {ns}: {e}", kind.qualified());
                None
            }
        }
    }

    /// How many objects the store still has older than the list: listed ones at an earlier
    /// version or missing (not deleted since), and ones the list no longer had that the store
    /// kept from before it.
    fn behind(&self, s: &State) -> usize {
        let stale = self
            .listed
            .iter()
            .filter(|(name, v)| match s.objects.get(*name) {
                Some(o) => !reached(o, v),
                None => !s.deleted.contains(*name),
            })
            .count();
        let deleted = s
            .objects
            .iter()
            .filter(|(name, o)| !self.listed.contains_key(*name) && !reached(o, &self.version))
            .count();
        stale + deleted
    }
}

fn watch(api: Api<DynamicObject>) -> BoxStream<'static, watcher::Result<Event<DynamicObject>>> {
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Whether `obj` is at resourceVersion `version` or later. Versions are opaque to clients, but
/// every API server on etcd hands out etcd revisions: numbers that only grow. Other forms are
/// only compared for equality.
fn reached(obj: &Value, version: &str) -> bool {
    let have = obj["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    match (have.parse::<u64>(), version.parse::<u64>()) {
        (Ok(h), Ok(v)) => h >= v,
        _ => have == version,
    }
}

/// The object's name and JSON without `managedFields` (large, and never read).
fn entry(o: DynamicObject) -> (String, Value) {
    let name = o.metadata.name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = value["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    (name, value)
}

/// The HTTP status when the watch can never work here: 403 (no `list`/`watch`), 404 (no such
/// kind).
fn unusable(e: &watcher::Error) -> Option<u16> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return None,
    };
    matches!(status, 403 | 404).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(version: &str) -> Value {
        json!({"metadata": {"resourceVersion": version}})
    }

    #[test]
    fn a_check_counts_what_the_watch_has_not_brought_up_to_the_list() {
        let check = Check {
            issued: Instant::now(),
            returned: Instant::now(),
            listed: [("a", "10"), ("b", "12"), ("c", "7"), ("gone", "5")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .into(),
            version: "20".into(),
        };
        let mut s = State::default();
        s.objects.insert("a".into(), obj("10")); // as listed
        s.objects.insert("b".into(), obj("11")); // behind
        s.objects.insert("c".into(), obj("25")); // changed after the list
        s.objects.insert("old".into(), obj("3")); // deleted before the list, still here
        s.objects.insert("new".into(), obj("21")); // created after the list
        s.deleted.insert("gone".into()); // deleted after the list
        assert_eq!(check.behind(&s), 2);
        s.objects.insert("b".into(), obj("12"));
        s.objects.remove("old");
        assert_eq!(check.behind(&s), 0);
    }
}
