//! The watchers: Canary, MetricTemplate and AlertProvider (all namespaces or one), feeding the
//! actor supervisor through a [`CanarySink`] and the caches the providers read ([`Watched`]).
//!
//! Objects are watched as JSON and read one by one, so a Canary with a field of the wrong type
//! is reported (its field path in a `Validated=False` condition and a Warning event) instead of
//! breaking the list. Invalid canaries are not run; the others keep running.
//!
//! With `revertOnDeletion` the Canary carries the `finalizer.flagger.app` finalizer; on deletion
//! its actor is stopped and [`revert_on_deletion`] puts the target and the routes back before the
//! finalizer is removed (reference §2.6).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aviary_api::defaults::defaulted;
use aviary_api::document::{Resource, parse_value};
use aviary_api::validate::{Severity, validate_canary};
use aviary_api::{
    AlertProvider, Canary, CanaryCondition, CanaryPhase, CanarySpec, CanaryStatus, MetricTemplate,
};
use aviary_core::ports::{EventType, Recorder};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::{ALERT_PROVIDER, CANARY, Kind, Kube, METRIC_TEMPLATE, meta};
use crate::platform::{KubePlatform, VALIDATED_CONDITION, without_validation};

/// Flagger's finalizer.
pub const FINALIZER: &str = "finalizer.flagger.app";

/// Where canaries go: the actor supervisor.
pub trait CanarySink: Send + Sync {
    /// Create or update the canary's actor.
    fn apply(&self, canary: Canary);
    /// Stop the canary's actor.
    fn remove(&self, namespace: &str, name: &str);
}

type Key = (String, String);

/// What the watchers have seen: every Canary (with the status the API server holds), and the
/// MetricTemplates and AlertProviders the providers look up.
#[derive(Debug, Default)]
pub struct Watched {
    canaries: RwLock<BTreeMap<Key, Canary>>,
    templates: RwLock<BTreeMap<Key, MetricTemplate>>,
    alert_providers: RwLock<BTreeMap<Key, AlertProvider>>,
}

impl Watched {
    /// Every watched canary (invalid ones included, with their `Validated` condition).
    pub fn canaries(&self) -> Vec<Canary> {
        self.canaries.read().values().cloned().collect()
    }

    /// One watched canary (a map lookup: every tick asks, so never a scan of all of them).
    pub fn canary(&self, namespace: &str, name: &str) -> Option<Canary> {
        lookup(&self.canaries, namespace, name)
    }

    /// A MetricTemplate, if watched.
    pub fn metric_template(&self, namespace: &str, name: &str) -> Option<MetricTemplate> {
        lookup(&self.templates, namespace, name)
    }

    /// An AlertProvider, if watched.
    pub fn alert_provider(&self, namespace: &str, name: &str) -> Option<AlertProvider> {
        lookup(&self.alert_providers, namespace, name)
    }

    /// Forgets everything (the watchers stopped, e.g. when leadership is lost).
    pub fn clear(&self) {
        self.canaries.write().clear();
        self.templates.write().clear();
        self.alert_providers.write().clear();
    }
}

fn lookup<T: Clone>(cache: &RwLock<BTreeMap<Key, T>>, namespace: &str, name: &str) -> Option<T> {
    cache
        .read()
        .get(&(namespace.to_string(), name.to_string()))
        .cloned()
}

fn key_of(obj: &Value) -> Key {
    (meta(obj, "namespace").to_string(), meta(obj, "name").to_string())
}

/// Runs the three watchers until `shutdown`.
pub async fn run(
    platform: Arc<KubePlatform>,
    namespace: Option<String>,
    sink: Arc<dyn CanarySink>,
    recorder: Arc<dyn Recorder>,
    state: Arc<Watched>,
    shutdown: CancellationToken,
) {
    let ns = namespace.unwrap_or_default();
    let canaries = CanaryWatch {
        platform: platform.clone(),
        sink,
        recorder,
        state: state.clone(),
        reported: Mutex::new(HashMap::new()),
        finalizing: Arc::new(Mutex::new(HashSet::new())),
        shutdown: shutdown.clone(),
    };
    let kube = platform.kube().clone();
    let templates = follow(&kube, &ns, METRIC_TEMPLATE, &state.templates, shutdown.clone());
    let providers = follow(
        &kube,
        &ns,
        ALERT_PROVIDER,
        &state.alert_providers,
        shutdown.clone(),
    );
    let canaries = {
        let watch_state = Arc::new(canaries);
        let seen = Arc::new(Mutex::new(BTreeSet::<Key>::new()));
        watch(kube.api(CANARY, &ns), shutdown.clone(), CANARY, move |ev| {
            let w = watch_state.clone();
            let seen = seen.clone();
            async move { w.on_event(ev, &seen).await }
        })
    };
    tokio::join!(templates, providers, canaries);
}

/// Drives one watch stream (with kube-runtime's backoff on errors) until `shutdown`.
async fn watch<F, Fut>(
    api: kube::Api<kube::api::DynamicObject>,
    shutdown: CancellationToken,
    kind: Kind,
    mut handle: F,
) where
    F: FnMut(Event<Value>) -> Fut,
    Fut: Future<Output = ()>,
{
    let stream = watch_stream(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Err(e)) => tracing::warn!("watching {}: {e}; retrying", kind.qualified()),
            Some(Ok(ev)) => {
                let ev = match ev {
                    Event::Apply(o) => Event::Apply(to_json(o)),
                    Event::InitApply(o) => Event::InitApply(to_json(o)),
                    Event::Delete(o) => Event::Delete(to_json(o)),
                    Event::Init => Event::Init,
                    Event::InitDone => Event::InitDone,
                };
                handle(ev).await;
            }
        }
    }
}

fn to_json(o: kube::api::DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// Keeps `cache` equal to the objects of `kind` (`T`) in `ns` until `shutdown`.
async fn follow<T: serde::de::DeserializeOwned>(
    kube: &Kube,
    ns: &str,
    kind: Kind,
    cache: &RwLock<BTreeMap<Key, T>>,
    shutdown: CancellationToken,
) {
    let relisted = Mutex::new(BTreeSet::new());
    watch(kube.api(kind, ns), shutdown, kind, |ev| {
        on_resource(cache, &relisted, ev, kind.kind);
        async {}
    })
    .await
}

/// MetricTemplates and AlertProviders: the cache follows the API server. A re-list replaces the
/// contents only once complete (objects not listed again are dropped at `InitDone`).
fn on_resource<T: serde::de::DeserializeOwned>(
    cache: &RwLock<BTreeMap<Key, T>>,
    relisted: &Mutex<BTreeSet<Key>>,
    ev: Event<Value>,
    kind: &str,
) {
    match ev {
        Event::Init => relisted.lock().clear(),
        Event::InitDone => {
            let listed = std::mem::take(&mut *relisted.lock());
            cache.write().retain(|k, _| listed.contains(k));
        }
        Event::Apply(o) | Event::InitApply(o) => {
            let key = key_of(&o);
            relisted.lock().insert(key.clone());
            match serde_json::from_value::<T>(o) {
                Ok(t) => {
                    cache.write().insert(key, t);
                }
                Err(e) => {
                    tracing::warn!(
                        "{kind} {}/{} cannot be read: {e}; it is ignored until fixed",
                        key.0,
                        key.1
                    );
                    cache.write().remove(&key);
                }
            }
        }
        Event::Delete(o) => {
            cache.write().remove(&key_of(&o));
        }
    }
}

struct CanaryWatch {
    platform: Arc<KubePlatform>,
    sink: Arc<dyn CanarySink>,
    recorder: Arc<dyn Recorder>,
    state: Arc<Watched>,
    /// The invalid-spec message last reported per canary (reported once per change).
    reported: Mutex<HashMap<Key, String>>,
    finalizing: Arc<Mutex<HashSet<Key>>>,
    shutdown: CancellationToken,
}

/// A Canary that could not be read as one: its metadata and status, an empty spec.
fn lenient(obj: &Value) -> Canary {
    let mut c = Canary::new(meta(obj, "name"), CanarySpec::default());
    c.metadata = serde_json::from_value(obj["metadata"].clone()).unwrap_or_default();
    c.status = serde_json::from_value(obj["status"].clone()).ok();
    c
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl CanaryWatch {
    async fn on_event(&self, ev: Event<Value>, seen: &Mutex<BTreeSet<Key>>) {
        match ev {
            Event::Init => seen.lock().clear(),
            Event::InitApply(o) => {
                seen.lock().insert(key_of(&o));
                self.on_canary(o).await;
            }
            Event::InitDone => {
                // Canaries deleted while the watch was down.
                let seen = std::mem::take(&mut *seen.lock());
                let gone: Vec<Key> = self
                    .state
                    .canaries
                    .read()
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.forget(&k);
                }
            }
            Event::Apply(o) => self.on_canary(o).await,
            Event::Delete(o) => self.forget(&key_of(&o)),
        }
    }

    fn forget(&self, key: &Key) {
        self.state.canaries.write().remove(key);
        self.reported.lock().remove(key);
        self.sink.remove(&key.0, &key.1);
    }

    async fn on_canary(&self, mut obj: Value) {
        // managedFields are large and never read: every clone of a stored canary (each actor
        // update, each admin listing) would copy them.
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        let key = key_of(&obj);
        let (canary, errors) = match parse_value(obj.clone()) {
            Ok(parsed) => match parsed.resource {
                Resource::Canary(c) => {
                    let errors: Vec<String> = validate_canary(&c)
                        .into_iter()
                        .filter(|d| d.severity == Severity::Error)
                        .map(|d| {
                            if d.path.is_empty() {
                                d.message
                            } else {
                                format!("{}: {}", d.path, d.message)
                            }
                        })
                        .collect();
                    (*c, errors)
                }
                _ => return,
            },
            Err(e) => (
                lenient(&obj),
                vec![if e.path.is_empty() {
                    e.message
                } else {
                    format!("{}: {}", e.path, e.message)
                }],
            ),
        };
        self.state.canaries.write().insert(key.clone(), canary.clone());
        let has_finalizer = finalizers(&obj).iter().any(|f| f == FINALIZER);
        if !obj["metadata"]["deletionTimestamp"].is_null() {
            self.sink.remove(&key.0, &key.1);
            if has_finalizer {
                if errors.is_empty() && canary.spec.revert_on_deletion == Some(true) {
                    self.start_finalizing(canary, key);
                } else if let Err(e) = set_finalizer(&self.platform, &canary, false).await {
                    tracing::warn!(canary = %canary.key(), "{e}");
                }
            }
            return;
        }
        if !errors.is_empty() {
            self.sink.remove(&key.0, &key.1);
            self.report_invalid(&canary, &key, &errors).await;
            return;
        }
        self.reported.lock().remove(&key);
        let revert = canary.spec.revert_on_deletion == Some(true);
        if revert != has_finalizer
            && let Err(e) = set_finalizer(&self.platform, &canary, revert).await
        {
            tracing::warn!(canary = %canary.key(), "{e}");
        }
        if let Some(s) = &canary.status
            && s.conditions.iter().any(|c| c.type_ == VALIDATED_CONDITION)
        {
            let cleaned = without_validation(s.clone());
            if let Ok(v) = serde_json::to_value(&cleaned)
                && let Err(e) = self.platform.recorder().write_status(&canary, &v).await
            {
                tracing::warn!(canary = %canary.key(), "cannot clear the Validated condition: {e}");
            }
        }
        self.sink.apply(canary);
    }

    /// A Warning event and a `Validated=False` condition naming the field paths, once per change.
    async fn report_invalid(&self, canary: &Canary, key: &Key, errors: &[String]) {
        let message = format!("invalid canary spec: {}", errors.join("; "));
        if self.reported.lock().get(key) == Some(&message) {
            return;
        }
        tracing::warn!(canary = %canary.key(), "{message}");
        self.recorder.event(canary, EventType::Warning, &message).await;
        let now = Time(jiff::Timestamp::now());
        let mut status = canary.status.clone().unwrap_or_default();
        let transition = status
            .conditions
            .iter()
            .find(|c| c.type_ == VALIDATED_CONDITION && c.status == "False")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        status.conditions.retain(|c| c.type_ != VALIDATED_CONDITION);
        status.conditions.push(CanaryCondition {
            type_: VALIDATED_CONDITION.into(),
            status: "False".into(),
            last_update_time: Some(now),
            last_transition_time: Some(transition),
            reason: aviary_api::status::INVALID_SPEC_REASON.into(),
            message: message.clone(),
        });
        match serde_json::to_value(&status) {
            Ok(v) => {
                if let Err(e) = self.platform.recorder().write_status(canary, &v).await {
                    tracing::warn!(canary = %canary.key(), "cannot write the Validated condition: {e}");
                    return;
                }
            }
            Err(e) => tracing::warn!(canary = %canary.key(), "{e}"),
        }
        self.reported.lock().insert(key.clone(), message);
    }

    fn start_finalizing(&self, canary: Canary, key: Key) {
        if !self.finalizing.lock().insert(key.clone()) {
            return;
        }
        let platform = self.platform.clone();
        let recorder = self.recorder.clone();
        let finalizing = self.finalizing.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(2);
            loop {
                match revert_on_deletion(&platform, &*recorder, &canary).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(canary = %canary.key(), "reverting on deletion: {e}");
                        recorder.event(&canary, EventType::Warning, &e).await;
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(60));
                        // Stop when the canary is gone or no longer waits for us.
                        match platform
                            .kube()
                            .get(CANARY, canary.namespace(), canary.name())
                            .await
                        {
                            Ok(Some(o)) if finalizers(&o).iter().any(|f| f == FINALIZER) => {}
                            Ok(_) => break,
                            Err(_) => {}
                        }
                    }
                }
            }
            finalizing.lock().remove(&key);
        });
    }
}

/// Adds or removes the finalizer (a merge patch guarded by the resourceVersion).
async fn set_finalizer(platform: &KubePlatform, canary: &Canary, present: bool) -> Result<(), String> {
    platform
        .kube()
        .modify(CANARY, canary.namespace(), canary.name(), |obj| {
            let mut list = finalizers(obj);
            let has = list.iter().any(|f| f == FINALIZER);
            if present && !has {
                list.push(FINALIZER.into());
            } else if !present && has {
                list.retain(|f| f != FINALIZER);
            } else {
                return Ok(());
            }
            if list.is_empty() {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("finalizers");
                }
            } else {
                obj["metadata"]["finalizers"] = serde_json::json!(list);
            }
            Ok(())
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "cannot {} the finalizer {FINALIZER}: {e}",
                if present { "add" } else { "remove" }
            )
        })
}

fn phase_status(canary: &Canary, phase: CanaryPhase) -> CanaryStatus {
    let mut s = without_validation(canary.status.clone().unwrap_or_default());
    s.phase = phase;
    s.last_transition_time = Some(Time(jiff::Timestamp::now()));
    s
}

/// Flagger's finalization: Terminating → the target serves alone again (scaled back up) → the
/// routing objects are reverted → the finalizer is removed → Terminated.
pub async fn revert_on_deletion(
    platform: &KubePlatform,
    recorder: &dyn Recorder,
    canary: &Canary,
) -> Result<(), String> {
    let id = format!("{}.{}", canary.name(), canary.namespace());
    let c = defaulted(canary);
    recorder
        .status(&c, &phase_status(canary, CanaryPhase::Terminating))
        .await?;
    tracing::info!(canary = %id, "Terminating canary {id}");
    recorder
        .event(&c, EventType::Normal, &format!("Terminating canary {id}"))
        .await;
    let target = platform.target(&c);
    target.finalize(&c).await?;
    // Wait (bounded) for the target to serve: 3s doubling, 4 steps, capped at the interval.
    let cap = c.analysis_interval(Duration::from_secs(1));
    let mut wait = Duration::from_secs(3);
    for _ in 0..4 {
        match target.canary_ready(&c).await {
            Ok(()) => break,
            Err(e) => {
                tracing::info!(canary = %id, "waiting for the target before reverting the routes: {e}");
                tokio::time::sleep(wait.min(cap)).await;
                wait *= 2;
            }
        }
    }
    platform.router(&c).finalize(&c).await?;
    recorder
        .status(&c, &phase_status(canary, CanaryPhase::Terminated))
        .await?;
    set_finalizer(platform, canary, false).await?;
    tracing::info!(canary = %id, "Terminated canary {id}");
    recorder
        .event(&c, EventType::Normal, &format!("Terminated canary {id}"))
        .await;
    Ok(())
}
