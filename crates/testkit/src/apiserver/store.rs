//! The in-memory object store: resource registry (built-ins + CRDs), objects, one global
//! resourceVersion counter, the watch history, and the write semantics of the real API server
//! (conflicts, status subresource, generation, finalizers, garbage collection of dependents).
//!
//! Everything happens under one mutex and every change is broadcast in resourceVersion order, so
//! watchers and simulators see a single linear history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::patch::{self, PatchKind};
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use crate::error::{Error, Result};

/// The type of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed (its last state is in [`Event::object`]).
    Deleted,
}

impl EventType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in the store, as broadcast to watchers and simulators.
#[derive(Clone, Debug)]
pub struct Event {
    /// What happened.
    pub type_: EventType,
    /// API group of the object.
    pub group: String,
    /// Resource (plural) of the object.
    pub plural: String,
    /// The object after the change (for `Deleted`: its final state).
    pub object: Value,
    /// The object before the change (`Modified`, `Deleted`).
    pub old: Option<Value>,
    /// The resourceVersion of this change.
    pub rv: u64,
}

impl Event {
    /// `metadata.namespace` of the object ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or_default()
    }

    /// `metadata.name` of the object.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main endpoint: `.status` is ignored for kinds with a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// Direct store access by tests: everything is taken from the body.
    All,
}

/// Options of DELETE.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) orphan: bool,
    pub(crate) dry_run: bool,
}

/// The beginning of a watch: events to send first, the live feed, and the resourceVersion
/// the feed starts after.
pub(crate) struct WatchStart {
    pub(crate) first: Vec<Arc<Event>>,
    pub(crate) live: broadcast::Receiver<Arc<Event>>,
    pub(crate) rv: u64,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    builtins: Vec<ResourceType>,
    crds: BTreeMap<String, ResourceType>,
    objects: BTreeMap<Key, BTreeMap<Key, Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Events with rv <= compacted were dropped from the history.
    compacted: u64,
}

/// The fake's object store. Cheap to share (`Arc<Store>`); all methods are synchronous and quick.
///
/// The public methods are for tests: they address objects by `apiVersion` + `kind` like manifests
/// do and bypass the HTTP layer, but keep its rules (resourceVersion, generation, finalizers,
/// events to watchers). Unlike the main HTTP endpoint they also write `.status`, so a test can
/// inject any state.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// Current time as Kubernetes writes it (RFC 3339, seconds).
pub(crate) fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn key(rt: &ResourceType) -> Key {
    (rt.group.clone(), rt.plural.clone())
}

fn obj_key(ns: Option<&str>, name: &str) -> Key {
    (ns.unwrap_or_default().to_string(), name.to_string())
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

fn rv_of(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion").parse().unwrap_or(0)
}

/// `name` is a DNS-1123 subdomain (or label when `label`).
fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The object without metadata (and without status when `status_separate`): what `generation`
/// tracks.
fn spec_part(obj: &Value, status_separate: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if status_separate {
            m.remove("status");
        }
    }
    o
}

impl Inner {
    fn resource_types(&self) -> Vec<ResourceType> {
        let mut out: Vec<ResourceType> = self
            .builtins
            .iter()
            .map(|b| {
                self.crds
                    .values()
                    .find(|c| c.group == b.group && c.plural == b.plural)
                    .cloned()
                    .unwrap_or_else(|| b.clone())
            })
            .collect();
        let mut extra: Vec<&ResourceType> = self
            .crds
            .values()
            .filter(|c| {
                !self
                    .builtins
                    .iter()
                    .any(|b| b.group == c.group && b.plural == c.plural)
            })
            .collect();
        extra.sort_by(|a, b| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
        out.extend(extra.into_iter().cloned());
        out
    }

    fn resource(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.crds
            .values()
            .find(|c| c.group == group && c.plural == plural)
            .or_else(|| {
                self.builtins
                    .iter()
                    .find(|b| b.group == group && b.plural == plural)
            })
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, tx: &broadcast::Sender<Arc<Event>>, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = tx.send(ev);
    }

    /// Writes the core/v1 mirror of an `events.k8s.io/v1` Event.
    fn mirror_event(&mut self, tx: &broadcast::Sender<Arc<Event>>, ev: &Value) {
        let Some(core) = self.resource("", "events") else {
            return;
        };
        let mut obj = core_event(ev);
        let ns = meta_str(ev, "namespace").to_string();
        let name = meta_str(ev, "name").to_string();
        let old = self.get(&core, Some(&ns), &name).cloned();
        let rv = self.next_rv();
        let m = meta_mut(&mut obj);
        m.insert("resourceVersion".into(), Value::from(rv.to_string()));
        match &old {
            Some(o) => {
                m.insert("uid".into(), meta(o)["uid"].clone());
                m.insert("creationTimestamp".into(), meta(o)["creationTimestamp"].clone());
            }
            None => {
                m.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), Value::from(now()));
            }
        }
        self.objects
            .entry(key(&core))
            .or_default()
            .insert(obj_key(Some(&ns), &name), obj.clone());
        let type_ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(
            tx,
            Event {
                type_,
                group: String::new(),
                plural: "events".into(),
                object: obj,
                old,
                rv,
            },
        );
    }

    fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.get(&key(rt)).and_then(|m| m.get(&obj_key(ns, name)))
    }

    /// Removes an object for good: DELETED event, then the follow-ups of the real control plane
    /// (namespace contents, CRD instances, dependents by ownerReferences).
    fn remove(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        orphan: bool,
    ) -> Option<Value> {
        let old = self
            .objects
            .get_mut(&key(rt))
            .and_then(|m| m.remove(&obj_key(ns, name)))?;
        let rv = self.next_rv();
        let mut last = old.clone();
        meta_mut(&mut last).insert("resourceVersion".into(), Value::from(rv.to_string()));
        self.emit(
            tx,
            Event {
                type_: EventType::Deleted,
                group: rt.group.clone(),
                plural: rt.plural.clone(),
                object: last.clone(),
                old: Some(old.clone()),
                rv,
            },
        );
        if is_events_v1(rt)
            && let Some(core) = self.resource("", "events")
        {
            self.remove(tx, &core, ns, name, true);
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let types = self.resource_types();
            for t in types.iter().filter(|t| t.namespaced) {
                let names: Vec<String> = self
                    .objects
                    .get(&key(t))
                    .map(|m| {
                        m.keys()
                            .filter(|(n, _)| n == name)
                            .map(|(_, n)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for n in names {
                    let _ = self.delete(tx, t, Some(name), &n, &DeleteOptions::default());
                }
            }
        }
        if is_crd(rt)
            && let Some(def) = self.crds.remove(name)
        {
            // Instances go with their CRD, unless a built-in type still serves them.
            if self.resource(&def.group, &def.plural).is_none() {
                let objs: Vec<Key> = self
                    .objects
                    .get(&key(&def))
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for (ons, oname) in objs {
                    let ns = (!ons.is_empty()).then_some(ons.as_str());
                    self.remove(tx, &def, ns, &oname, false);
                }
                self.objects.remove(&key(&def));
            }
        }
        if !orphan {
            self.collect_dependents(tx, meta_str(&old, "uid"));
        }
        Some(last)
    }

    /// Background garbage collection: deletes objects whose owners are all gone.
    fn collect_dependents(&mut self, tx: &broadcast::Sender<Arc<Event>>, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let live: std::collections::HashSet<String> = self
            .objects
            .values()
            .flat_map(|m| m.values())
            .map(|o| meta_str(o, "uid").to_string())
            .collect();
        let mut doomed = Vec::new();
        for t in self.resource_types() {
            for ((ns, name), o) in self.objects.get(&key(&t)).into_iter().flatten() {
                let owners: Vec<&str> = meta(o)["ownerReferences"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["uid"].as_str()).collect())
                    .unwrap_or_default();
                if owners.contains(&uid) && owners.iter().all(|u| !live.contains(*u)) {
                    doomed.push((t.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (t, ns, name) in doomed {
            let ns = (!ns.is_empty()).then_some(ns.as_str());
            let _ = self.delete(tx, &t, ns, &name, &DeleteOptions::default());
        }
    }

    fn delete(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        let existing = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| rt.not_found(name))?;
        let conflict = |what: &str, want: &str, got: &str| Error::Conflict {
            message: format!(
                "Precondition failed: {what} in precondition: {want}, {what} in object meta: {got}"
            ),
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.plural.clone(),
        };
        if let Some(uid) = opts.uid.as_deref().filter(|u| *u != meta_str(&existing, "uid")) {
            return Err(conflict("UID", uid, meta_str(&existing, "uid")));
        }
        if let Some(rv) = opts
            .resource_version
            .as_deref()
            .filter(|r| *r != meta_str(&existing, "resourceVersion"))
        {
            return Err(conflict(
                "ResourceVersion",
                rv,
                meta_str(&existing, "resourceVersion"),
            ));
        }
        if opts.dry_run {
            return Ok(existing);
        }
        let has_finalizers = meta(&existing)["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            return Ok(self.remove(tx, rt, ns, name, opts.orphan).unwrap_or(existing));
        }
        if !meta(&existing)["deletionTimestamp"].is_null() {
            return Ok(existing);
        }
        let mut next = existing.clone();
        let rv = self.next_rv();
        let m = meta_mut(&mut next);
        m.insert("deletionTimestamp".into(), Value::from(now()));
        m.insert("deletionGracePeriodSeconds".into(), Value::from(0));
        m.insert("resourceVersion".into(), Value::from(rv.to_string()));
        if rt.generation {
            let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
            m.insert("generation".into(), Value::from(g + 1));
        }
        self.objects
            .entry(key(rt))
            .or_default()
            .insert(obj_key(ns, name), next.clone());
        self.emit(
            tx,
            Event {
                type_: EventType::Modified,
                group: rt.group.clone(),
                plural: rt.plural.clone(),
                object: next.clone(),
                old: Some(existing),
                rv,
            },
        );
        Ok(next)
    }
}

/// Checks `apiVersion`/`kind` of a body against the endpoint and fills them in when absent.
fn check_type(rt: &ResourceType, version: &str, obj: &mut Value) -> Result<()> {
    let want_av = rt.api_version(version);
    let Some(m) = obj.as_object_mut() else {
        return Err(Error::BadRequest(format!(
            "the body for {} must be a JSON object",
            rt.qualified()
        )));
    };
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av && rt.version(av.rsplit('/').next().unwrap_or_default()).is_none() => {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                rt.kind,
                rt.qualified()
            )));
        }
        _ => {}
    }
    m.insert("apiVersion".into(), Value::from(want_av));
    m.insert("kind".into(), Value::from(rt.kind.clone()));
    Ok(())
}

/// Defaults and normalisation the API server applies on every write, for the fields tests and
/// aviary read: Deployment spec defaults (replicas, progress deadline, strategy, port protocol),
/// Service type/protocol/targetPort, Secret `type: Opaque` and `stringData` folded into `data`.
/// No clusterIP is allocated.
fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    if rt.group.is_empty() && rt.plural == "secrets" {
        if obj["type"].as_str().is_none_or(str::is_empty) {
            obj["type"] = json!("Opaque");
        }
        if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            if !obj["data"].is_object() {
                obj["data"] = json!({});
            }
            for (k, v) in string_data {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                obj["data"][k] = Value::from(encoded);
            }
        }
    }
    if rt.group == "apps" && rt.plural == "deployments" {
        let spec = &mut obj["spec"];
        if !spec.is_object() {
            *spec = json!({});
        }
        for (k, v) in [
            ("replicas", json!(1)),
            ("progressDeadlineSeconds", json!(600)),
            ("revisionHistoryLimit", json!(10)),
            (
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            ),
        ] {
            if spec[k].is_null() {
                spec[k] = v;
            }
        }
        let pod = &mut spec["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for c in pod[list].as_array_mut().into_iter().flatten() {
                for p in c["ports"].as_array_mut().into_iter().flatten() {
                    if p["protocol"].is_null() {
                        p["protocol"] = json!("TCP");
                    }
                }
            }
        }
    }
    if rt.group.is_empty() && rt.plural == "services" {
        let spec = &mut obj["spec"];
        if spec.is_object() && spec["type"].is_null() {
            spec["type"] = json!("ClusterIP");
        }
        for p in spec["ports"].as_array_mut().into_iter().flatten() {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
}

fn crd_status(crd: &Value, rt: &ResourceType, old: Option<&Value>) -> Value {
    let names = &crd["spec"]["names"];
    let mut accepted = names.clone();
    accepted["singular"] = Value::from(rt.singular.clone());
    accepted["listKind"] = Value::from(rt.list_kind.clone());
    let since = |t: &str| {
        old.and_then(|o| o["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(now)
    };
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
        if v["storage"].as_bool() == Some(true) && !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
        "storedVersions": stored,
    })
}

fn is_crd(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

fn is_events_v1(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

/// The core/v1 form of an `events.k8s.io/v1` Event (the API server keeps both in one storage;
/// the fake mirrors the new API into the old one so `kubectl describe` shows such events).
fn core_event(ev: &Value) -> Value {
    let m = &ev["metadata"];
    let mut meta = json!({"name": m["name"], "namespace": m["namespace"]});
    for k in ["labels", "annotations"] {
        if !m[k].is_null() {
            meta[k] = m[k].clone();
        }
    }
    // core/v1 timestamps have second precision; eventTime is a MicroTime.
    let seconds = |t: &str| {
        Value::from(format!(
            "{}Z",
            t.split('.').next().unwrap_or(t).trim_end_matches('Z')
        ))
    };
    let last = ev["series"]["lastObservedTime"]
        .as_str()
        .or(ev["deprecatedLastTimestamp"].as_str())
        .or(ev["eventTime"].as_str())
        .map(seconds);
    let first = ev["deprecatedFirstTimestamp"]
        .as_str()
        .map(seconds)
        .or_else(|| last.clone());
    let count = ev["series"]["count"]
        .as_i64()
        .or(ev["deprecatedCount"].as_i64())
        .unwrap_or(1);
    let mut source = ev["deprecatedSource"].clone();
    if source.is_null() {
        source = json!({"component": ev["reportingController"]});
    }
    let mut out = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta,
        "involvedObject": ev["regarding"],
        "related": ev["related"],
        "reason": ev["reason"],
        "message": ev["note"],
        "type": ev["type"],
        "action": ev["action"],
        "eventTime": ev["eventTime"],
        "reportingComponent": ev["reportingController"],
        "reportingInstance": ev["reportingInstance"],
        "source": source,
        "count": count,
        "firstTimestamp": first,
        "lastTimestamp": last,
    });
    if let Some(o) = out.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    out
}

fn is_namespace(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

impl Store {
    pub(crate) fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(16 * 1024);
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                builtins: resources::builtins(),
                crds: BTreeMap::new(),
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted: 0,
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every write is one insert).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // === registry ===

    /// All served resource types, in discovery order (core, built-in groups, then CRD groups).
    pub fn resource_types(&self) -> Vec<ResourceType> {
        self.lock().resource_types()
    }

    /// The type served at `group/plural` (any version).
    pub fn resource(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.lock().resource(group, plural)
    }

    /// The type for a manifest's `apiVersion` and `kind`, or NotFound naming both.
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Result<ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let inner = self.lock();
        // CRDs first: a CRD for a built-in custom kind replaces its definition.
        inner
            .crds
            .values()
            .chain(inner.builtins.iter())
            .find(|r| r.group == group && r.kind == kind && r.version(version).is_some())
            .cloned()
            .ok_or_else(|| Error::NotFound {
                message: format!(
                    "no resource for kind {kind:?} in {api_version:?} is served by the fake API server; \
                     apply its CustomResourceDefinition first"
                ),
                name: String::new(),
                group: group.to_string(),
                kind: kind.to_string(),
            })
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Subscribes to every future change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    // === HTTP-level operations ===

    pub(crate) fn get_at(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        self.lock()
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| rt.not_found(name))
    }

    /// Objects of `rt` (in `ns` when given) matching the selectors, sorted by namespace and name,
    /// with the resourceVersion of the snapshot.
    pub(crate) fn list_at(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&key(rt))
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((ons, _), o)| ns.is_none_or(|n| n == ons) && labels.matches(o) && fields.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, inner.rv)
    }

    pub(crate) fn create_at(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Value> {
        check_type(rt, version, &mut obj)?;
        let ns = if rt.namespaced {
            let body_ns = meta_str(&obj, "namespace").to_string();
            match ns {
                Some(n) if !body_ns.is_empty() && body_ns != n => {
                    return Err(Error::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request"
                            .into(),
                    ));
                }
                Some(n) => Some(n.to_string()),
                None if !body_ns.is_empty() => Some(body_ns),
                None => {
                    return Err(Error::BadRequest(format!(
                        "{} is namespaced: create it under /namespaces/NAMESPACE/ or set metadata.namespace",
                        rt.qualified()
                    )));
                }
            }
        } else {
            None
        };
        let mut name = meta_str(&obj, "name").to_string();
        let invalid = |name: &str, what: String| {
            Error::Invalid(format!("{} \"{name}\" is invalid: {what}", rt.qualified_kind()))
        };
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(invalid(
                    "",
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
            let suffix: String = (0..5)
                .map(|_| {
                    let chars = b"bcdfghjklmnpqrstvwxz2456789";
                    chars[rand::random_range(0..chars.len())] as char
                })
                .collect();
            name = format!("{prefix}{suffix}");
        }
        if !valid_name(&name, is_namespace(rt)) {
            return Err(invalid(
                &name,
                format!(
                    "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case \
                     alphanumeric characters, '-'{}, and must start and end with an alphanumeric character",
                    if is_namespace(rt) { "label" } else { "subdomain" },
                    if is_namespace(rt) { "" } else { " or '.'" }
                ),
            ));
        }
        if let Some(n) = ns.as_deref().filter(|n| !valid_name(n, true)) {
            return Err(invalid(
                &name,
                format!("metadata.namespace: Invalid value: {n:?}: not a valid namespace name"),
            ));
        }
        if part == Part::Main
            && rt.has_status(version)
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        apply_defaults(rt, &mut obj);
        let crd_def = if is_crd(rt) {
            meta_mut(&mut obj).insert("name".into(), Value::from(name.clone()));
            Some(resources::from_crd(&obj)?)
        } else {
            None
        };
        let mut inner = self.lock();
        if inner.get(rt, ns.as_deref(), &name).is_some() {
            return Err(Error::AlreadyExists {
                message: format!("{} \"{name}\" already exists", rt.qualified()),
                name,
                group: rt.group.clone(),
                kind: rt.plural.clone(),
            });
        }
        let rv = if dry_run { inner.rv } else { inner.next_rv() };
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), Value::from(name.clone()));
            match &ns {
                Some(n) => m.insert("namespace".into(), Value::from(n.clone())),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), Value::from(now()));
            m.insert("resourceVersion".into(), Value::from(rv.to_string()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("managedFields");
            if rt.generation {
                m.insert("generation".into(), Value::from(1));
            } else {
                m.remove("generation");
            }
        }
        if let Some(def) = &crd_def {
            obj["status"] = crd_status(&obj, def, None);
        }
        if is_namespace(rt) {
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj["status"]["phase"].is_null() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        if dry_run {
            return Ok(obj);
        }
        if let Some(def) = crd_def {
            inner.crds.insert(name.clone(), def);
        }
        inner
            .objects
            .entry(key(rt))
            .or_default()
            .insert(obj_key(ns.as_deref(), &name), obj.clone());
        inner.emit(
            &self.tx,
            Event {
                type_: EventType::Added,
                group: rt.group.clone(),
                plural: rt.plural.clone(),
                object: obj.clone(),
                old: None,
                rv,
            },
        );
        if is_events_v1(rt) {
            inner.mirror_event(&self.tx, &obj);
        }
        Ok(obj)
    }

    /// PUT semantics (and the second half of PATCH).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_at(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Value> {
        check_type(rt, version, &mut obj)?;
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(Error::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if rt.namespaced && !body_ns.is_empty() && Some(body_ns) != ns {
            return Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ));
        }
        let unconditional = meta_str(&obj, "resourceVersion").is_empty();
        for _ in 0..16 {
            let existing = self.lock().get(rt, ns, name).cloned();
            let Some(existing) = existing else {
                if rt.create_on_update && part != Part::Status {
                    meta_mut(&mut obj).insert("name".into(), Value::from(name));
                    meta_mut(&mut obj).remove("resourceVersion");
                    return self.create_at(rt, version, ns, obj, part, dry_run);
                }
                return Err(rt.not_found(name));
            };
            match self.replace_checked(rt, version, ns, name, &existing, obj.clone(), part, dry_run) {
                // Without a resourceVersion the write is unconditional: retry on a concurrent writer.
                Err(Error::Conflict { .. }) if unconditional => continue,
                other => return other,
            }
        }
        Err(Error::Internal(format!(
            "too many concurrent writers on {} \"{name}\"",
            rt.qualified()
        )))
    }

    /// Computes and stores the next state of `existing` (which the caller read earlier: the
    /// resourceVersion check under the lock catches concurrent writers).
    #[allow(clippy::too_many_arguments)]
    fn replace_checked(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        existing: &Value,
        body: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Value> {
        let conflict = || Error::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                 changes to the latest version and try again",
                rt.qualified()
            ),
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.plural.clone(),
        };
        let body_rv = meta_str(&body, "resourceVersion").to_string();
        let has_status = rt.has_status(version);
        let mut next = match part {
            Part::Status => {
                let mut n = existing.clone();
                match body.get("status") {
                    Some(s) if !s.is_null() => n["status"] = s.clone(),
                    _ => {
                        n.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                n
            }
            Part::Main | Part::All => {
                let mut n = body;
                if part == Part::Main && has_status {
                    match existing.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            n.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                n
            }
        };
        if part != Part::Status {
            apply_defaults(rt, &mut next);
        }
        // System-managed metadata always comes from the stored object.
        {
            let old = meta(existing).as_object().cloned().unwrap_or_default();
            let m = meta_mut(&mut next);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.insert(
                "resourceVersion".into(),
                old.get("resourceVersion").cloned().unwrap_or(Value::Null),
            );
        }
        let crd_def = if is_crd(rt) {
            let def = resources::from_crd(&next)?;
            next["status"] = crd_status(&next, &def, Some(existing));
            Some(def)
        } else {
            None
        };
        if rt.generation && spec_part(&next, has_status) != spec_part(existing, has_status) {
            let g = meta(existing)["generation"].as_i64().unwrap_or(0);
            meta_mut(&mut next).insert("generation".into(), Value::from(g + 1));
        }
        let mut inner = self.lock();
        let current = inner
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| rt.not_found(name))?;
        if rv_of(&current) != rv_of(existing)
            || (!body_rv.is_empty() && body_rv != meta_str(&current, "resourceVersion"))
        {
            return Err(conflict());
        }
        if next == current || dry_run {
            // A no-op write changes nothing, not even the resourceVersion (like the API server).
            return Ok(next);
        }
        let rv = inner.next_rv();
        meta_mut(&mut next).insert("resourceVersion".into(), Value::from(rv.to_string()));
        if let Some(def) = crd_def {
            inner.crds.insert(name.to_string(), def);
        }
        let finalized = !meta(&next)["deletionTimestamp"].is_null()
            && meta(&next)["finalizers"].as_array().is_none_or(|f| f.is_empty());
        inner
            .objects
            .entry(key(rt))
            .or_default()
            .insert(obj_key(ns, name), next.clone());
        inner.emit(
            &self.tx,
            Event {
                type_: EventType::Modified,
                group: rt.group.clone(),
                plural: rt.plural.clone(),
                object: next.clone(),
                old: Some(current),
                rv,
            },
        );
        if finalized {
            inner.remove(&self.tx, rt, ns, name, false);
        } else if is_events_v1(rt) {
            inner.mirror_event(&self.tx, &next);
        }
        Ok(next)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_at(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        part: Part,
        dry_run: bool,
    ) -> Result<Value> {
        if kind == PatchKind::Strategic && rt.custom {
            return Err(Error::UnsupportedMediaType(format!(
                "strategic merge patch is not supported for {} (a custom resource, as in a real cluster): use \
                 --type=merge or --type=json (application/merge-patch+json or application/json-patch+json)",
                rt.qualified()
            )));
        }
        // Retry on concurrent writers between read and write, like the API server's patch loop;
        // a resourceVersion inside the patch still conflicts.
        for _ in 0..16 {
            let existing = self.get_at(rt, ns, name)?;
            let mut doc = existing.clone();
            doc["apiVersion"] = Value::from(rt.api_version(version));
            patch::apply(&mut doc, kind, body)?;
            let patched_rv = meta_str(&doc, "resourceVersion").to_string();
            if !patched_rv.is_empty() && patched_rv != meta_str(&existing, "resourceVersion") {
                return Err(Error::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                         your changes to the latest version and try again",
                        rt.qualified()
                    ),
                    name: name.to_string(),
                    group: rt.group.clone(),
                    kind: rt.plural.clone(),
                });
            }
            if !doc.is_object() {
                return Err(Error::Invalid(format!(
                    "the patched {} \"{name}\" is not an object",
                    rt.qualified_kind()
                )));
            }
            match self.replace_checked(rt, version, ns, name, &existing, doc, part, dry_run) {
                Err(Error::Conflict { .. }) if patched_rv.is_empty() => continue,
                other => return other,
            }
        }
        Err(Error::Internal(format!(
            "too many concurrent writers on {} \"{name}\"",
            rt.qualified()
        )))
    }

    pub(crate) fn delete_at(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        self.lock().delete(&self.tx, rt, ns, name, opts)
    }

    /// Starts a watch on `rt`: with `since = None` the current objects come first as ADDED events,
    /// otherwise the retained history after `since` (410 Gone when it was compacted).
    pub(crate) fn watch_at(&self, rt: &ResourceType, since: Option<u64>) -> Result<WatchStart> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let first = match since {
            None => inner
                .objects
                .get(&key(rt))
                .into_iter()
                .flat_map(|m| m.values())
                .map(|o| {
                    Arc::new(Event {
                        type_: EventType::Added,
                        group: rt.group.clone(),
                        plural: rt.plural.clone(),
                        object: o.clone(),
                        old: None,
                        rv: rv_of(o),
                    })
                })
                .collect(),
            Some(rv) if rv < inner.compacted => {
                return Err(Error::Gone(format!(
                    "too old resource version: {rv} ({})",
                    inner.compacted + 1
                )));
            }
            Some(rv) => inner
                .history
                .iter()
                .filter(|e| e.rv > rv && e.group == rt.group && e.plural == rt.plural)
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            first,
            live: rx,
            rv: inner.rv,
        })
    }

    // === test API ===

    fn typed(&self, obj: &Value) -> Result<(ResourceType, String)> {
        let av = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        if av.is_empty() || kind.is_empty() {
            return Err(Error::BadRequest(
                "the object needs apiVersion and kind to be stored directly".into(),
            ));
        }
        let rt = self.resource_for_kind(av, kind)?;
        let version = av.rsplit('/').next().unwrap_or(av).to_string();
        Ok((rt, version))
    }

    fn ns_of(rt: &ResourceType, obj: &Value) -> Option<String> {
        rt.namespaced
            .then(|| meta_str(obj, "namespace").to_string())
            .filter(|n| !n.is_empty())
    }

    /// The object, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = self.resource_for_kind(api_version, kind).ok()?;
        let mut o = self.lock().get(&rt, namespace, name).cloned()?;
        o["apiVersion"] = Value::from(api_version);
        Some(o)
    }

    /// All objects of a kind (in `namespace` when given), sorted by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(rt) = self.resource_for_kind(api_version, kind) else {
            return Vec::new();
        };
        self.list_at(
            &rt,
            namespace,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .0
    }

    /// Creates an object as given, `.status` included (namespace from `metadata.namespace`).
    pub fn create(&self, obj: Value) -> Result<Value> {
        let (rt, version) = self.typed(&obj)?;
        let ns = Self::ns_of(&rt, &obj);
        self.create_at(&rt, &version, ns.as_deref(), obj, Part::All, false)
    }

    /// Replaces an object, `.status` included; a set `metadata.resourceVersion` must be current.
    pub fn update(&self, obj: Value) -> Result<Value> {
        let (rt, version) = self.typed(&obj)?;
        let ns = Self::ns_of(&rt, &obj);
        let name = meta_str(&obj, "name").to_string();
        self.update_at(&rt, &version, ns.as_deref(), &name, obj, Part::All, false)
    }

    /// Creates the object, or replaces it (ignoring its resourceVersion) when it exists.
    pub fn upsert(&self, mut obj: Value) -> Result<Value> {
        let (rt, _) = self.typed(&obj)?;
        let ns = Self::ns_of(&rt, &obj);
        let name = meta_str(&obj, "name").to_string();
        if self.lock().get(&rt, ns.as_deref(), &name).is_some() {
            meta_mut(&mut obj).remove("resourceVersion");
            self.update(obj)
        } else {
            self.create(obj)
        }
    }

    /// Applies a JSON merge patch to the whole object (`.status` included).
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let rt = self.resource_for_kind(api_version, kind)?;
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        let body = serde_json::to_vec(patch).map_err(|e| Error::BadRequest(e.to_string()))?;
        self.patch_at(
            &rt,
            version,
            namespace,
            name,
            PatchKind::Merge,
            &body,
            Part::All,
            false,
        )
    }

    /// Replaces `.status` of an object.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value> {
        let rt = self.resource_for_kind(api_version, kind)?;
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        let mut obj = self.get_at(&rt, namespace, name)?;
        obj["status"] = status;
        meta_mut(&mut obj).remove("resourceVersion");
        self.update_at(&rt, version, namespace, name, obj, Part::Status, false)
    }

    /// Replaces only `.status` (like PUT on `/status`); a set `metadata.resourceVersion` must be
    /// current.
    pub fn update_status(&self, obj: Value) -> Result<Value> {
        let (rt, version) = self.typed(&obj)?;
        let ns = Self::ns_of(&rt, &obj);
        let name = meta_str(&obj, "name").to_string();
        self.update_at(&rt, &version, ns.as_deref(), &name, obj, Part::Status, false)
    }

    /// Deletes an object like `kubectl delete` (finalizers keep it, with a deletionTimestamp).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        let rt = self.resource_for_kind(api_version, kind)?;
        self.delete_at(&rt, namespace, name, &DeleteOptions::default())
    }

    /// Waits until the object exists and satisfies `pred`, or fails after `timeout` with a message
    /// that shows the last state seen.
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut rx = self.subscribe();
        let check = || self.get(api_version, kind, namespace, name).filter(|o| pred(o));
        let wait = async {
            loop {
                if let Some(o) = check() {
                    return o;
                }
                // Any change (or a lag) is a reason to look again.
                if let Err(broadcast::error::RecvError::Closed) = rx.recv().await {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            let last = self.get(api_version, kind, namespace, name);
            Error::Internal(format!(
                "timed out after {timeout:?} waiting for {kind} {}{name} to reach the expected state; last seen: {}",
                namespace.map(|n| format!("{n}/")).unwrap_or_default(),
                last.map_or("<absent>".to_string(), |o| o.to_string())
            ))
        })
    }
}
