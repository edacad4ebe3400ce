//! Controllers that a test cluster would run, reduced to what aviary observes:
//!
//! - **Deployments**: on a spec change the status first shows the rollout in progress
//!   (`observedGeneration` = generation, `Progressing=True ReplicaSetUpdated`), then after the
//!   delay all desired replicas updated/ready/available with `Available=True` and
//!   `Progressing=True NewReplicaSetAvailable`. `replicas: 0` is ready at once. With the
//!   annotation [`NEVER_READY_ANNOTATION`] the rollout never completes: `Available=False
//!   MinimumReplicasUnavailable`, no updated replicas, and never a `ProgressDeadlineExceeded`
//!   condition (Flagger issue #1247).
//! - **Knative Services**: every new `spec.template` makes a Revision `<name>-0000N` (or
//!   `spec.template.metadata.name`), Ready after the delay (never with the annotation on the
//!   Service or its template), and the Service status follows: latest created/ready revision,
//!   `observedGeneration`, `Ready`/`ConfigurationsReady`/`RoutesReady`, `url`, `address` and
//!   `traffic` resolved from `spec.traffic` (`RoutesReady=False RevisionMissing` when a named
//!   revision does not exist).
//! - **HTTPRoutes**: after the delay every parentRef gets `Accepted=True` and
//!   `ResolvedRefs=True` with the route's generation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::store::{Event, EventType, Store, now};
use crate::error::Error;

/// Annotation that keeps a Deployment, Knative Service or Revision from ever becoming ready.
pub const NEVER_READY_ANNOTATION: &str = "testkit.aviary.dev/never-ready";

/// `controllerName` the HTTPRoute simulator writes into `status.parents[]`.
pub const GATEWAY_CONTROLLER_NAME: &str = "testkit.aviary.dev/gateway-controller";

const KNATIVE: &str = "serving.knative.dev/v1";
const SERVICE_LABEL: &str = "serving.knative.dev/service";

/// Which simulators run and how long "becoming ready" takes.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Deployment status simulator.
    pub deployments: bool,
    /// Knative Service/Revision simulator.
    pub knative: bool,
    /// Gateway API HTTPRoute status simulator.
    pub httproutes: bool,
    /// Time from a change to readiness.
    pub delay: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            deployments: true,
            knative: true,
            httproutes: true,
            delay: Duration::from_millis(200),
        }
    }
}

impl SimulatorConfig {
    /// All simulators off.
    pub fn disabled() -> Self {
        Self {
            deployments: false,
            knative: false,
            httproutes: false,
            ..Self::default()
        }
    }
}

struct State {
    deployments: AtomicBool,
    knative: AtomicBool,
    httproutes: AtomicBool,
    delay_ms: AtomicU64,
    resync: Notify,
    pending: Mutex<HashSet<String>>,
}

/// Run-time toggles of the simulators (cheap to clone). Turning one on reconciles the objects
/// that already exist.
#[derive(Clone)]
pub struct Simulators {
    state: Arc<State>,
}

impl Simulators {
    pub(crate) fn new(cfg: &SimulatorConfig) -> Self {
        Self {
            state: Arc::new(State {
                deployments: AtomicBool::new(cfg.deployments),
                knative: AtomicBool::new(cfg.knative),
                httproutes: AtomicBool::new(cfg.httproutes),
                delay_ms: AtomicU64::new(cfg.delay.as_millis() as u64),
                resync: Notify::new(),
                pending: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn set(&self, flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
        if on {
            self.state.resync.notify_one();
        }
    }

    /// Turns the Deployment simulator on or off.
    pub fn set_deployments(&self, on: bool) {
        self.set(&self.state.deployments, on);
    }

    /// Turns the Knative simulator on or off.
    pub fn set_knative(&self, on: bool) {
        self.set(&self.state.knative, on);
    }

    /// Turns the HTTPRoute simulator on or off.
    pub fn set_httproutes(&self, on: bool) {
        self.set(&self.state.httproutes, on);
    }

    /// Changes the readiness delay for changes seen from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The current settings.
    pub fn config(&self) -> SimulatorConfig {
        SimulatorConfig {
            deployments: self.state.deployments.load(Ordering::SeqCst),
            knative: self.state.knative.load(Ordering::SeqCst),
            httproutes: self.state.httproutes.load(Ordering::SeqCst),
            delay: self.delay(),
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.state.delay_ms.load(Ordering::SeqCst))
    }

    /// Runs the simulators until `cancel`.
    pub(crate) fn spawn(&self, store: Arc<Store>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let sim = Runner {
            sims: self.clone(),
            store,
            cancel,
        };
        tokio::spawn(async move { sim.run().await })
    }
}

#[derive(Clone)]
struct Runner {
    sims: Simulators,
    store: Arc<Store>,
    cancel: CancellationToken,
}

fn never_ready(obj: &Value) -> bool {
    obj["metadata"]["annotations"][NEVER_READY_ANNOTATION].as_str() == Some("true")
}

fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// A condition that keeps its timestamps while it does not change (so reconciling is idempotent).
fn condition(
    prev_status: &Value,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: bool,
) -> Value {
    let old = prev_status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let same_status = old.filter(|c| c["status"] == status);
    let transition = same_status
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map_or_else(now, str::to_string);
    let mut c = json!({"type": type_, "status": status, "lastTransitionTime": transition});
    if !reason.is_empty() {
        c["reason"] = Value::from(reason);
    }
    if !message.is_empty() {
        c["message"] = Value::from(message);
    }
    if update_time {
        let unchanged = same_status.filter(|o| o["reason"] == c["reason"] && o["message"] == c["message"]);
        c["lastUpdateTime"] = Value::from(
            unchanged
                .and_then(|o| o["lastUpdateTime"].as_str())
                .map_or_else(now, str::to_string),
        );
    }
    c
}

/// Sets an integer field, omitting zero like Go's `omitempty`.
fn set_int(m: &mut Map<String, Value>, k: &str, n: i64) {
    if n != 0 {
        m.insert(k.into(), Value::from(n));
    }
}

impl Runner {
    async fn run(self) {
        let mut rx = self.store.subscribe();
        self.resync();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.sims.state.resync.notified() => self.resync(),
                ev = rx.recv() => match ev {
                    Ok(ev) => self.handle(&ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    fn on(&self, flag: &AtomicBool) -> bool {
        flag.load(Ordering::SeqCst)
    }

    fn resync(&self) {
        for d in self.store.list("apps/v1", "Deployment", None) {
            self.deployment(&d, None);
        }
        for s in self.store.list(KNATIVE, "Service", None) {
            self.knative_service(&s);
        }
        for r in self.store.list(KNATIVE, "Revision", None) {
            self.revision(&r);
        }
        for r in self.store.list("gateway.networking.k8s.io/v1", "HTTPRoute", None) {
            self.httproute(&r);
        }
    }

    fn handle(&self, ev: &Event) {
        match (ev.group.as_str(), ev.plural.as_str(), ev.type_) {
            ("apps", "deployments", EventType::Added | EventType::Modified) => {
                self.deployment(&ev.object, ev.old.as_ref())
            }
            ("serving.knative.dev", "services", EventType::Added | EventType::Modified) => {
                self.knative_service(&ev.object)
            }
            ("serving.knative.dev", "revisions", t) => {
                if t != EventType::Deleted {
                    self.revision(&ev.object);
                }
                let svc = ev.object["metadata"]["labels"][SERVICE_LABEL]
                    .as_str()
                    .unwrap_or_default();
                if let Some(s) = self.store.get(KNATIVE, "Service", Some(ev.namespace()), svc) {
                    self.knative_service(&s);
                }
            }
            ("gateway.networking.k8s.io", "httproutes", EventType::Added | EventType::Modified) => {
                self.httproute(&ev.object)
            }
            _ => {}
        }
    }

    /// Runs `job` once after the delay, at most one pending job per `key`.
    fn later(&self, key: String, job: impl FnOnce(&Runner) + Send + 'static) {
        if !self
            .sims
            .state
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let me = self.clone();
        let delay = self.sims.delay();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    me.sims.state.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    job(&me);
                }
            }
        });
    }

    /// Writes `.status` computed from the current object, retrying on conflicts.
    fn write_status(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        f: impl Fn(&Value) -> Option<Value>,
    ) {
        for _ in 0..8 {
            let Some(obj) = self.store.get(api_version, kind, Some(ns), name) else {
                return;
            };
            if !obj["metadata"]["deletionTimestamp"].is_null() {
                return;
            }
            let Some(status) = f(&obj) else { return };
            if obj["status"] == status {
                return;
            }
            let mut next = obj;
            next["status"] = status;
            match self.store.update_status(next) {
                Err(Error::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!("simulator could not write the status of {kind} {ns}/{name}: {e}");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    // === Deployments ===

    /// `old` tells a scale (same pod template) from a rollout (new template).
    fn deployment(&self, d: &Value, old: Option<&Value>) {
        if !self.on(&self.sims.state.deployments) || !d["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        let (ns, name) = ns_name(d);
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        if replicas == 0 || d["status"] == deployment_final(d) {
            self.write_status("apps/v1", "Deployment", &ns, &name, |d| Some(deployment_final(d)));
            return;
        }
        if d["status"]["observedGeneration"].as_i64() != Some(generation) {
            let rollout = old.is_none_or(|o| o["spec"]["template"] != d["spec"]["template"]);
            self.write_status("apps/v1", "Deployment", &ns, &name, |d| {
                Some(deployment_progressing(d, rollout))
            });
        }
        self.later(format!("deploy/{ns}/{name}/{generation}"), move |me| {
            if !me.on(&me.sims.state.deployments) {
                return;
            }
            me.write_status("apps/v1", "Deployment", &ns, &name, |d| {
                (d["metadata"]["generation"].as_i64().unwrap_or(1) == generation).then(|| deployment_final(d))
            });
        });
    }

    // === Knative ===

    fn knative_service(&self, svc: &Value) {
        if !self.on(&self.sims.state.knative) || !svc["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        let (ns, name) = ns_name(svc);
        let uid = svc["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let revisions = self.revisions_of(&ns, &name, &uid);
        let template = svc["spec"]["template"].clone();
        let up_to_date = revisions.last().is_some_and(|r| revision_matches(r, &template));
        if !up_to_date {
            let n = revisions.iter().map(config_generation).max().unwrap_or(0) + 1;
            let rev_name = template["metadata"]["name"]
                .as_str()
                .map_or_else(|| format!("{name}-{n:05}"), str::to_string);
            if !revisions
                .iter()
                .any(|r| r["metadata"]["name"] == rev_name.as_str())
            {
                let rev = new_revision(svc, &rev_name, n);
                if let Err(e) = self.store.create(rev) {
                    tracing::warn!("knative simulator could not create revision {ns}/{rev_name}: {e}");
                }
                // The revision's ADDED event brings us back here with the new list.
                return;
            }
        }
        self.write_status(KNATIVE, "Service", &ns, &name, |s| {
            let revisions = self.revisions_of(&ns, &name, &uid);
            // A template changed since this event: its revision comes first, then the status.
            if !revisions
                .last()
                .is_some_and(|r| revision_matches(r, &s["spec"]["template"]))
            {
                return None;
            }
            Some(knative_status(
                s,
                &revisions,
                s["metadata"]["generation"].as_i64().unwrap_or(1),
            ))
        });
    }

    fn revisions_of(&self, ns: &str, service: &str, uid: &str) -> Vec<Value> {
        let mut revs: Vec<Value> = self
            .store
            .list(KNATIVE, "Revision", Some(ns))
            .into_iter()
            .filter(|r| {
                r["metadata"]["labels"][SERVICE_LABEL] == service
                    && r["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
            })
            .collect();
        revs.sort_by_key(config_generation);
        revs
    }

    fn revision(&self, rev: &Value) {
        if !self.on(&self.sims.state.knative) || !rev["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        if ready_status(rev) == "True" || never_ready(rev) {
            return;
        }
        let (ns, name) = ns_name(rev);
        self.later(format!("rev/{ns}/{name}"), move |me| {
            if !me.on(&me.sims.state.knative) {
                return;
            }
            me.write_status(KNATIVE, "Revision", &ns, &name, |r| {
                let mut st = r["status"].clone();
                let prev = st.clone();
                st["observedGeneration"] = r["metadata"]["generation"].clone();
                st["conditions"] = json!([
                    condition(&prev, "Active", "True", "", "", false),
                    condition(&prev, "ContainerHealthy", "True", "", "", false),
                    condition(&prev, "Ready", "True", "", "", false),
                    condition(&prev, "ResourcesAvailable", "True", "", "", false),
                ]);
                st["actualReplicas"] = Value::from(1);
                st["desiredReplicas"] = Value::from(1);
                Some(st)
            });
        });
    }

    // === HTTPRoutes ===

    fn httproute(&self, route: &Value) {
        if !self.on(&self.sims.state.httproutes) || !route["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        if route["status"] == httproute_status(route) {
            return;
        }
        let (ns, name) = ns_name(route);
        let generation = route["metadata"]["generation"].as_i64().unwrap_or(1);
        self.later(format!("route/{ns}/{name}/{generation}"), move |me| {
            if me.on(&me.sims.state.httproutes) {
                me.write_status("gateway.networking.k8s.io/v1", "HTTPRoute", &ns, &name, |r| {
                    Some(httproute_status(r))
                });
            }
        });
    }
}

fn deployment_final(d: &Value) -> Value {
    let prev = &d["status"];
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let mut st = Map::new();
    st.insert("observedGeneration".into(), Value::from(generation));
    set_int(&mut st, "replicas", replicas);
    if never_ready(d) && replicas > 0 {
        set_int(&mut st, "unavailableReplicas", replicas);
        st.insert(
            "conditions".into(),
            json!([
                condition(
                    prev,
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    true
                ),
                condition(
                    prev,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{name}\" is progressing."),
                    true
                ),
            ]),
        );
    } else {
        set_int(&mut st, "updatedReplicas", replicas);
        set_int(&mut st, "readyReplicas", replicas);
        set_int(&mut st, "availableReplicas", replicas);
        st.insert(
            "conditions".into(),
            json!([
                condition(
                    prev,
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    true
                ),
                condition(
                    prev,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{name}\" has successfully progressed."),
                    true
                ),
            ]),
        );
    }
    Value::Object(st)
}

/// The status right after a spec change: the old pods still serve; on a new pod template
/// (`rollout`) none is updated yet, on a scale the existing ones stay updated.
fn deployment_progressing(d: &Value, rollout: bool) -> Value {
    let prev = &d["status"];
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = prev["availableReplicas"].as_i64().unwrap_or(0).min(replicas);
    let updated = if rollout {
        0
    } else {
        prev["updatedReplicas"].as_i64().unwrap_or(0).min(replicas)
    };
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let mut st = Map::new();
    st.insert("observedGeneration".into(), d["metadata"]["generation"].clone());
    set_int(&mut st, "replicas", replicas);
    set_int(&mut st, "updatedReplicas", updated);
    set_int(&mut st, "readyReplicas", available);
    set_int(&mut st, "availableReplicas", available);
    set_int(&mut st, "unavailableReplicas", replicas - available);
    let avail = if available > 0 {
        condition(
            prev,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            true,
        )
    } else {
        condition(
            prev,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            true,
        )
    };
    let progressing = condition(
        prev,
        "Progressing",
        "True",
        "ReplicaSetUpdated",
        &format!("ReplicaSet \"{name}\" is progressing."),
        true,
    );
    st.insert("conditions".into(), json!([avail, progressing]));
    Value::Object(st)
}

fn config_generation(r: &Value) -> i64 {
    r["metadata"]["labels"]["serving.knative.dev/configurationGeneration"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn ready_status(obj: &Value) -> &str {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
}

/// The revision was made from `template` (spec, labels and annotations).
fn revision_matches(rev: &Value, template: &Value) -> bool {
    let spec = if template["spec"].is_null() {
        json!({})
    } else {
        template["spec"].clone()
    };
    let subset = |field: &str| {
        template["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| rev["metadata"][field][k] == *v)
    };
    rev["spec"] == spec && subset("labels") && subset("annotations")
}

fn new_revision(svc: &Value, rev_name: &str, n: i64) -> Value {
    let (ns, name) = ns_name(svc);
    let template = &svc["spec"]["template"];
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_LABEL.into(), Value::from(name.clone()));
    labels.insert(
        "serving.knative.dev/configuration".into(),
        Value::from(name.clone()),
    );
    labels.insert(
        "serving.knative.dev/configurationGeneration".into(),
        Value::from(n.to_string()),
    );
    labels.insert(
        "serving.knative.dev/serviceUID".into(),
        svc["metadata"]["uid"].clone(),
    );
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if never_ready(svc) {
        annotations.insert(NEVER_READY_ANNOTATION.into(), Value::from("true"));
    }
    let spec = if template["spec"].is_null() {
        json!({})
    } else {
        template["spec"].clone()
    };
    json!({
        "apiVersion": KNATIVE,
        "kind": "Revision",
        "metadata": {
            "name": rev_name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": KNATIVE, "kind": "Service", "name": name, "uid": svc["metadata"]["uid"],
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "Unknown", "reason": "Deploying", "lastTransitionTime": now()},
            ],
        },
    })
}

fn knative_status(svc: &Value, revisions: &[Value], generation: i64) -> Value {
    let (ns, name) = ns_name(svc);
    let prev = &svc["status"];
    let host = |prefix: &str| format!("http://{prefix}{name}.{ns}.example.com");
    let latest_created = revisions.last().and_then(|r| r["metadata"]["name"].as_str());
    let latest_ready = revisions
        .iter()
        .rev()
        .find(|r| ready_status(r) == "True")
        .and_then(|r| r["metadata"]["name"].as_str());
    let mut st = Map::new();
    st.insert("observedGeneration".into(), Value::from(generation));
    if let Some(c) = latest_created {
        st.insert("latestCreatedRevisionName".into(), Value::from(c));
    }
    if let Some(r) = latest_ready {
        st.insert("latestReadyRevisionName".into(), Value::from(r));
    }
    st.insert("url".into(), Value::from(host("")));
    st.insert(
        "address".into(),
        json!({"url": format!("http://{name}.{ns}.svc.cluster.local")}),
    );

    let config_ready = latest_created.is_some() && latest_created == latest_ready;
    let config_cond = if config_ready {
        condition(prev, "ConfigurationsReady", "True", "", "", false)
    } else {
        let rev = latest_created.unwrap_or_default();
        condition(
            prev,
            "ConfigurationsReady",
            "Unknown",
            "RevisionDeploying",
            &format!("Revision \"{rev}\" is not ready yet."),
            false,
        )
    };

    // spec.traffic → status.traffic; without spec.traffic all traffic goes to the latest revision.
    let spec_traffic = svc["spec"]["traffic"]
        .as_array()
        .cloned()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| vec![json!({"latestRevision": true, "percent": 100})]);
    let mut missing = None;
    let mut traffic = Vec::new();
    for t in &spec_traffic {
        let mut out = Map::new();
        if let Some(tag) = t["tag"].as_str() {
            out.insert("tag".into(), Value::from(tag));
            out.insert("url".into(), Value::from(host(&format!("{tag}-"))));
        }
        if t["latestRevision"].as_bool() == Some(true) || t["revisionName"].is_null() {
            match latest_ready {
                Some(r) => out.insert("revisionName".into(), Value::from(r)),
                None => {
                    missing.get_or_insert_with(|| {
                        format!("Configuration \"{name}\" does not have any ready Revision.")
                    });
                    None
                }
            };
            out.insert("latestRevision".into(), Value::from(true));
        } else {
            let r = t["revisionName"].as_str().unwrap_or_default();
            if !revisions.iter().any(|x| x["metadata"]["name"] == r) {
                missing.get_or_insert_with(|| format!("Revision \"{r}\" referenced in traffic not found."));
            }
            out.insert("revisionName".into(), Value::from(r));
            out.insert("latestRevision".into(), Value::from(false));
        }
        if !t["percent"].is_null() {
            out.insert("percent".into(), t["percent"].clone());
        }
        traffic.push(Value::Object(out));
    }
    let routes_cond = match &missing {
        None => {
            st.insert("traffic".into(), Value::Array(traffic));
            condition(prev, "RoutesReady", "True", "", "", false)
        }
        Some(msg) => {
            if let Some(t) = prev.get("traffic") {
                st.insert("traffic".into(), t.clone());
            }
            condition(prev, "RoutesReady", "False", "RevisionMissing", msg, false)
        }
    };
    let ready = if config_ready && missing.is_none() {
        condition(prev, "Ready", "True", "", "", false)
    } else if missing.is_some() && latest_ready.is_some() {
        condition(
            prev,
            "Ready",
            "False",
            "RevisionMissing",
            missing.as_deref().unwrap_or_default(),
            false,
        )
    } else {
        condition(
            prev,
            "Ready",
            "Unknown",
            "RevisionDeploying",
            "Revision is not ready yet.",
            false,
        )
    };
    st.insert("conditions".into(), json!([config_cond, ready, routes_cond]));
    Value::Object(st)
}

fn httproute_status(route: &Value) -> Value {
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(1);
    let prev_parents = route["status"]["parents"].as_array().cloned().unwrap_or_default();
    let parents: Vec<Value> = route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let prev = prev_parents.iter().find(|x| x["parentRef"] == *p).cloned().unwrap_or(Value::Null);
            let mut accepted = condition(&prev, "Accepted", "True", "Accepted", "Route was valid", false);
            accepted["observedGeneration"] = Value::from(generation);
            let mut resolved = condition(&prev, "ResolvedRefs", "True", "ResolvedRefs", "All references resolved", false);
            resolved["observedGeneration"] = Value::from(generation);
            json!({"parentRef": p, "controllerName": GATEWAY_CONTROLLER_NAME, "conditions": [accepted, resolved]})
        })
        .collect();
    json!({ "parents": parents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_resolves_latest_and_named_revisions() {
        let svc = json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"traffic": [
                {"revisionName": "podinfo-00001", "percent": 90},
                {"latestRevision": true, "percent": 10, "tag": "canary"},
            ]},
        });
        let rev = |n: &str, ready: &str| json!({"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": ready}]}});
        let st = knative_status(
            &svc,
            &[rev("podinfo-00001", "True"), rev("podinfo-00002", "True")],
            2,
        );
        assert_eq!(
            st["traffic"][0],
            json!({"revisionName": "podinfo-00001", "latestRevision": false, "percent": 90})
        );
        assert_eq!(st["traffic"][1]["revisionName"], "podinfo-00002");
        assert_eq!(st["traffic"][1]["latestRevision"], true);
        assert_eq!(st["traffic"][1]["url"], "http://canary-podinfo.test.example.com");
        assert_eq!(ready_status(&json!({"status": st})), "True");

        let st = knative_status(&svc, &[rev("podinfo-00002", "True")], 2);
        assert_eq!(st["conditions"][2]["reason"], "RevisionMissing");
        assert_eq!(ready_status(&json!({"status": st})), "False");
    }

    #[test]
    fn never_ready_deployment_has_no_deadline_condition() {
        let d = json!({"metadata": {"name": "d", "generation": 3, "annotations": {NEVER_READY_ANNOTATION: "true"}},
                       "spec": {"replicas": 2}});
        let st = deployment_final(&d);
        assert_eq!(st["observedGeneration"], 3);
        assert!(st.get("updatedReplicas").is_none());
        assert_eq!(st["conditions"][0]["reason"], "MinimumReplicasUnavailable");
        assert!(!st.to_string().contains("ProgressDeadlineExceeded"));
    }
}
