//! Watch-backed read caches: what every analysis tick reads (the Canary before its status is
//! written, the target and primary Deployments, the Services, the router's objects) comes from a watch per kind and namespace instead of a GET,
//! so an idle canary costs the API server nothing between changes (Flagger GETs them all on
//! every tick: about 15 requests per canary per interval). Opt-in (`aviary agent --watch-cache`):
//! at 500 canaries on a loaded test machine a cached Deployment stayed behind the API server for
//! minutes, unexplained so far (docs/benchmarks.md, "Kubernetes scale").
//!
//! A cache answers only when it is in step with the API server: its watch has listed and is
//! running, and no write of ours to that object is still on its way back through the watch (a
//! write records the resourceVersion it produced; until the watch shows it, that object is read
//! with a GET). Otherwise — and for kinds not cached, a namespace that cannot be watched (no
//! `list`/`watch` permission, the CRD is missing) or a broken watch — reads fall back to GETs.
//! Writes are never served from here: a read-modify-write whose cached copy was stale fails its
//! resourceVersion precondition and is retried with a fresh GET.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{
    CANARY, DEPLOYMENT, DESTINATION_RULE, HPA, HTTP_ROUTE, HTTP_ROUTE_V1BETA1, KNATIVE_SERVICE, Kind,
    SERVICE, VIRTUAL_SERVICE,
};

/// The kinds read on every tick (`--watch-cache` needs `list`/`watch` on them, which deploy/rbac
/// does not grant while the cache is experimental: it then falls back to GETs). ConfigMaps and
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
        if !s.synced || s.disabled {
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

/// Keeps a store in step with the API server until the cache is dropped.
async fn follow(
    api: Api<DynamicObject>,
    store: Weak<Store>,
    kind: Kind,
    ns: String,
    stop: CancellationToken,
) {
    let stream = watcher(api).default_backoff();
    futures::pin_mut!(stream);
    // Objects of a re-list in progress (they replace the store once complete).
    let mut relist: Option<HashMap<String, Value>> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = stream.next() => next,
        };
        let (Some(next), Some(store)) = (next, store.upgrade()) else {
            return;
        };
        let mut s = store.state.lock();
        match next {
            Err(e) => {
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
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(o)) => {
                let (name, value) = entry(o);
                relist.get_or_insert_default().insert(name, value);
            }
            Ok(Event::InitDone) => {
                let objects = relist.take().unwrap_or_default();
                // A list begun before a write of ours may not have it: such writes stay pending.
                s.pending.retain(|name, p| match p {
                    Pending::Version(v, _) => objects.get(name).is_none_or(|o| !reached(o, v)),
                    Pending::Deleted(_) => objects.contains_key(name),
                });
                s.objects = objects;
                s.synced = true;
            }
            Ok(Event::Apply(o)) => {
                let (name, value) = entry(o);
                if matches!(s.pending.get(&name), Some(Pending::Version(v, _)) if reached(&value, v)) {
                    s.pending.remove(&name);
                }
                s.objects.insert(name, value);
                s.synced = true;
            }
            Ok(Event::Delete(o)) => {
                let (name, _) = entry(o);
                if matches!(s.pending.get(&name), Some(Pending::Deleted(_))) {
                    s.pending.remove(&name);
                }
                s.objects.remove(&name);
                s.synced = true;
            }
        }
    }
}

fn watcher(api: Api<DynamicObject>) -> impl futures::Stream<Item = watcher::Result<Event<DynamicObject>>> {
    watcher::watcher(api, watcher::Config::default())
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
