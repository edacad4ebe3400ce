//! What one side did in one scenario, normalised so that the two sides can be compared: the
//! channels a user (or another controller) can see.
//!
//! Normalised on both sides, always (these are not differences):
//! - timestamps, `uid`, `resourceVersion`, `generation`, `managedFields`, `creationTimestamp`,
//!   owner references' `uid`, Service cluster IPs, the API server's `deployment.kubernetes.io/
//!   revision` annotation, and everything under `status` of the objects (the stand-ins and
//!   kube-controller-manager write it);
//! - the base URLs of the test doubles and of the API server (their ports differ per run);
//! - values that are random or differ on purpose (docs/compatibility.md, "Revision
//!   fingerprint"): `status.lastAppliedSpec`/`lastPromotedSpec` and the webhook `checksum`
//!   become `#1`, `#2`, … in order of first appearance (so *when* they change still compares),
//!   and so does the primary's `flagger-id` pod annotation; random session-affinity cookie
//!   values become `cookie#1`, `cookie#2`, … wherever they appear (status, route regexes,
//!   `Set-Cookie` headers);
//! - the Event source component (`flagger` vs `aviary`, docs/compatibility.md "Event source")
//!   and the event webhook's `timestamp`.

use std::collections::{BTreeMap, HashMap};

use aviary_testkit::{Answer, WebhookCall};
use serde_json::{Map, Value, json};

use crate::record::Observed;

/// One comparable channel: lines of text or a sequence of JSON states.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    Lines(Vec<String>),
    States(Vec<Value>),
}

/// One side of one scenario, normalised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// By channel name: `status`, `events`, `kubernetes events`, `webhooks`, `prometheus`, and
    /// one `Kind/name` per recorded object.
    pub channels: BTreeMap<String, Channel>,
    /// What went wrong while running (a step that timed out, a controller that exited).
    pub problems: Vec<String>,
}

impl Trace {
    /// The whole trace as JSON (written beside the controller logs, for reading by hand).
    pub fn to_json(&self) -> Value {
        let channels: Map<String, Value> = self
            .channels
            .iter()
            .map(|(k, c)| {
                let v = match c {
                    Channel::Lines(l) => json!(l),
                    Channel::States(s) => json!(s),
                };
                (k.clone(), v)
            })
            .collect();
        json!({"problems": self.problems, "channels": channels})
    }
}

/// Everything recorded for one side, before normalisation.
#[derive(Debug, Default)]
pub struct Raw {
    pub observed: Vec<Observed>,
    pub kube_events: Vec<Value>,
    pub hook_calls: Vec<WebhookCall>,
    pub queries: Vec<(String, Answer)>,
    pub problems: Vec<String>,
    /// (base URL, placeholder) pairs to replace in every text.
    pub urls: Vec<(String, String)>,
}

/// Numbers values of one category in order of first appearance (`#1`, `#2`, …).
#[derive(Default)]
struct Ordinals(
    HashMap<(&'static str, String), usize>,
    HashMap<&'static str, usize>,
);

impl Ordinals {
    fn of(&mut self, category: &'static str, value: &str) -> String {
        if value.is_empty() {
            return String::new();
        }
        let next = self.1.entry(category).or_default();
        let n = *self.0.entry((category, value.to_string())).or_insert_with(|| {
            *next += 1;
            *next
        });
        format!("#{n}")
    }

    fn replace(&mut self, category: &'static str, v: &mut Value) {
        if let Some(s) = v.as_str() {
            *v = Value::String(self.of(category, s));
        }
    }
}

/// Object annotations written by others than the controllers.
const VOLATILE_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
];

impl Raw {
    /// Normalises into a [`Trace`].
    pub fn normalise(&self) -> Trace {
        let this = Raw {
            urls: self.substitutions(),
            ..Raw::default()
        };
        this.normalise_with(self)
    }

    /// The doubles' URLs, then each random session-affinity cookie value (the part after `=`,
    /// which also appears in route regexes) as `cookie#N` in order of first appearance.
    fn substitutions(&self) -> Vec<(String, String)> {
        let mut out = self.urls.clone();
        let mut n = 0;
        for o in self.observed.iter().filter(|o| o.kind == "Canary") {
            let Some(obj) = &o.object else { continue };
            for k in [
                "sessionAffinityCookie",
                "primarySessionAffinityCookie",
                "previousSessionAffinityCookie",
            ] {
                let Some((_, random)) = obj["status"][k].as_str().and_then(|c| c.split_once('=')) else {
                    continue;
                };
                if !random.is_empty() && !out.iter().any(|(from, _)| from == random) {
                    n += 1;
                    out.push((random.to_string(), format!("cookie#{n}")));
                }
            }
        }
        out
    }

    /// `self` holds only the substitutions; `raw` the recording.
    fn normalise_with(&self, raw: &Raw) -> Trace {
        let mut ord = Ordinals::default();
        let mut channels = BTreeMap::new();
        channels.insert("status".into(), Channel::States(self.statuses(raw, &mut ord)));
        let (events, others) = self.hooks(raw, &mut ord);
        channels.insert("events".into(), Channel::Lines(events));
        channels.insert("webhooks".into(), Channel::Lines(others));
        channels.insert(
            "kubernetes events".into(),
            Channel::Lines(self.kubernetes_events(raw)),
        );
        channels.insert(
            "prometheus".into(),
            Channel::Lines(
                raw.queries
                    .iter()
                    .map(|(q, a)| format!("{} -> {}", self.text(q), answer(a)))
                    .collect(),
            ),
        );
        for (key, states) in self.objects(raw, &mut ord) {
            channels.insert(key, Channel::States(states));
        }
        Trace {
            channels,
            problems: raw.problems.iter().map(|p| self.text(p)).collect(),
        }
    }

    /// `s` with the doubles' URLs replaced by placeholders and whitespace collapsed.
    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (url, name) in &self.urls {
            s = s.replace(url.as_str(), name);
        }
        s
    }

    fn texts(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(a) => a.iter_mut().for_each(|v| self.texts(v)),
            Value::Object(o) => o.values_mut().for_each(|v| self.texts(v)),
            _ => {}
        }
    }

    fn statuses(&self, raw: &Raw, ord: &mut Ordinals) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for o in raw.observed.iter().filter(|o| o.kind == "Canary") {
            let Some(obj) = &o.object else {
                push_new(&mut out, json!("deleted"));
                continue;
            };
            let mut s = obj["status"].clone();
            if s.is_null() {
                continue;
            }
            let m = s.as_object_mut().expect("status is an object");
            m.remove("lastTransitionTime");
            for k in ["lastAppliedSpec", "lastPromotedSpec"] {
                if let Some(v) = m.get_mut(k) {
                    ord.replace("spec", v);
                }
            }
            if let Some(Value::Array(cs)) = m.get_mut("conditions") {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("lastUpdateTime");
                        c.remove("lastTransitionTime");
                    }
                }
            }
            self.texts(&mut s);
            push_new(&mut out, s);
        }
        out
    }

    /// (event webhook lines, other webhook lines).
    fn hooks(&self, raw: &Raw, ord: &mut Ordinals) -> (Vec<String>, Vec<String>) {
        let mut events = Vec::new();
        let mut others = Vec::new();
        for call in &raw.hook_calls {
            let mut body = call.body.clone();
            if let Some(v) = body.get_mut("checksum") {
                ord.replace("checksum", v);
            }
            self.texts(&mut body);
            let meta = &body["metadata"];
            if let Some(message) = meta["eventMessage"].as_str() {
                let mut rest = meta.as_object().cloned().unwrap_or_default();
                for k in ["eventMessage", "eventType", "timestamp"] {
                    rest.remove(k);
                }
                let extra = if rest.is_empty() {
                    String::new()
                } else {
                    format!(" {}", Value::Object(rest))
                };
                events.push(format!(
                    "{} {} [{} {}] {message}{extra}",
                    call.path,
                    meta["eventType"].as_str().unwrap_or("?"),
                    body["phase"].as_str().unwrap_or(""),
                    body["checksum"].as_str().unwrap_or(""),
                ));
            } else {
                others.push(format!("{} {}", call.path, body));
            }
        }
        (events, others)
    }

    fn kubernetes_events(&self, raw: &Raw) -> Vec<String> {
        raw.kube_events
            .iter()
            .filter(|e| e["involvedObject"]["kind"] == "Canary")
            .map(|e| {
                format!(
                    "{} {} x{}: {}",
                    e["type"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                    e["count"].as_i64().unwrap_or(1),
                    self.text(e["message"].as_str().unwrap_or(""))
                )
            })
            .collect()
    }

    fn objects(&self, raw: &Raw, ord: &mut Ordinals) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for o in raw.observed.iter().filter(|o| o.kind != "Canary") {
            if o.kind == "ConfigMap" && o.name == "kube-root-ca.crt" {
                continue;
            }
            let key = if o.api_version.starts_with("serving.knative.dev") {
                format!("Knative{}/{}", o.kind, o.name)
            } else {
                format!("{}/{}", o.kind, o.name)
            };
            let state = match &o.object {
                None => json!("deleted"),
                Some(obj) => {
                    let mut v = object(&o.kind, obj, ord);
                    self.texts(&mut v);
                    v
                }
            };
            push_new(out.entry(key).or_default(), state);
        }
        out
    }
}

fn push_new(states: &mut Vec<Value>, v: Value) {
    if states.last() != Some(&v) {
        states.push(v);
    }
}

fn answer(a: &Answer) -> String {
    match a {
        Answer::Value(v) => v.to_string(),
        Answer::NoValues => "no values".into(),
        Answer::Error(code, text) => format!("error {code} {text}"),
    }
}

/// An object reduced to what its writers decide: metadata (name, labels, annotations, owners,
/// finalizers) and `spec` (or `data`), without server-assigned and random values.
fn object(kind: &str, obj: &Value, ord: &mut Ordinals) -> Value {
    let m = &obj["metadata"];
    let mut meta = Map::new();
    meta.insert("name".into(), m["name"].clone());
    if let Some(labels) = m["labels"].as_object().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), Value::Object(labels.clone()));
    }
    if let Some(a) = m["annotations"].as_object() {
        let a: Map<String, Value> = a
            .iter()
            .filter(|(k, _)| !VOLATILE_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !a.is_empty() {
            meta.insert("annotations".into(), Value::Object(a));
        }
    }
    if let Some(owners) = m["ownerReferences"].as_array() {
        let owners: Vec<Value> = owners
            .iter()
            .map(|o| {
                let mut o = o.clone();
                if let Some(o) = o.as_object_mut() {
                    o.remove("uid");
                }
                o
            })
            .collect();
        meta.insert("ownerReferences".into(), Value::Array(owners));
    }
    if let Some(f) = m["finalizers"].as_array().filter(|f| !f.is_empty()) {
        meta.insert("finalizers".into(), Value::Array(f.clone()));
    }
    let mut out = json!({"metadata": meta});
    if let Some(data) = obj.get("data") {
        out["data"] = data.clone();
    }
    let mut spec = obj["spec"].clone();
    match kind {
        "Deployment" => {
            if let Some(v) = spec
                .pointer_mut("/template/metadata/annotations")
                .and_then(|a| a.get_mut("flagger-id"))
            {
                ord.replace("flagger-id", v);
            }
            if let Some(t) = spec
                .pointer_mut("/template/metadata")
                .and_then(Value::as_object_mut)
            {
                t.remove("creationTimestamp");
            }
        }
        "Service" => {
            if let Some(s) = spec.as_object_mut() {
                s.remove("clusterIP");
                s.remove("clusterIPs");
            }
        }
        _ => {}
    }
    if !spec.is_null() {
        out["spec"] = spec;
    }
    out
}
