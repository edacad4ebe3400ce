//! Differences between Flagger and aviary that are deliberate and listed in
//! docs/compatibility.md ("Deliberate differences"). Each rule names its row there and rewrites
//! the traces so that exactly this difference disappears; the report lists the rules that
//! changed something, and whatever still differs is undocumented. A test checks that every
//! rule's row exists in the document.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::scenario::Scenario;
use crate::trace::{Channel, Trace};

/// One documented difference.
#[derive(Debug)]
pub struct Documented {
    /// The first cell of its row in docs/compatibility.md's "Deliberate differences" table.
    pub row: &'static str,
    /// What differs, in one line, for the report.
    pub what: &'static str,
    /// Rewrites Flagger's and aviary's traces so that this difference disappears.
    pub apply: fn(&Scenario, &mut Trace, &mut Trace),
}

/// Every rule.
pub static RULES: &[Documented] = &[
    Documented {
        row: "`status.failedChecks` after a rollback",
        what: "after the rollback aviary's status keeps the failed checks that caused it; Flagger's says 0",
        apply: failed_checks_kept,
    },
    Documented {
        row: "`status.iterations` in WaitingPromotion for a progressive canary",
        what: "waiting for promotion approval (and promoting after it), Flagger's status says iterations -1; aviary's 0",
        apply: iterations_clamped,
    },
    Documented {
        row: "Session affinity without `primaryCookieName`",
        what: "Flagger's status carries a primary cookie without a name (`=<random>`); aviary's none",
        apply: nameless_primary_cookie,
    },
    Documented {
        row: "Writes to Kubernetes",
        what: "Flagger's full Update writes Go zero values (`name: \"\"`, `resources: {}`, `metadata: {}`) into the Knative Service's template; aviary's patches leave the template as written",
        apply: knative_zero_values,
    },
    Documented {
        row: "Events on the Canary",
        what: "Flagger's client-go recorder combines and drops Kubernetes Events (\"(combined from similar events): …\"); aviary stores every event, bumping the count of repeats; both agree with their event webhook calls",
        apply: kubernetes_events,
    },
];

fn states<'a>(t: &'a mut Trace, channel: &str) -> Option<&'a mut Vec<Value>> {
    match t.channels.get_mut(channel) {
        Some(Channel::States(s)) => Some(s),
        _ => None,
    }
}

fn lines<'a>(t: &'a Trace, channel: &str) -> &'a [String] {
    match t.channels.get(channel) {
        Some(Channel::Lines(l)) => l,
        _ => &[],
    }
}

/// Removes consecutive duplicates (a rewrite can make two states equal).
fn dedup(states: &mut Vec<Value>) {
    states.dedup();
}

fn failed_checks_kept(_: &Scenario, _: &mut Trace, aviary: &mut Trace) {
    if let Some(s) = states(aviary, "status") {
        for st in s.iter_mut().filter(|st| st["phase"] == "Failed") {
            st["failedChecks"] = json!(0);
        }
        dedup(s);
    }
}

fn iterations_clamped(_: &Scenario, flagger: &mut Trace, _: &mut Trace) {
    if let Some(s) = states(flagger, "status") {
        // Set in WaitingPromotion, kept by the Promoting that follows.
        for st in s.iter_mut() {
            if st["iterations"].as_i64().is_some_and(|i| i < 0) {
                st["iterations"] = json!(0);
            }
        }
        dedup(s);
    }
}

fn nameless_primary_cookie(_: &Scenario, flagger: &mut Trace, _: &mut Trace) {
    if let Some(s) = states(flagger, "status") {
        for st in s.iter_mut() {
            let nameless = st["primarySessionAffinityCookie"]
                .as_str()
                .is_some_and(|c| c.starts_with('='));
            if nameless && let Some(m) = st.as_object_mut() {
                m.remove("primarySessionAffinityCookie");
            }
        }
        dedup(s);
    }
}

/// `v` without empty strings and objects (Go zero values of omitted fields), recursively.
fn without_zero_values(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), without_zero_values(v)))
                .filter(|(_, v)| !(v == "" || v.as_object().is_some_and(|o| o.is_empty())))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_zero_values).collect()),
        v => v.clone(),
    }
}

fn knative_zero_values(_: &Scenario, flagger: &mut Trace, _: &mut Trace) {
    let keys: Vec<String> = flagger
        .channels
        .keys()
        .filter(|k| k.starts_with("KnativeService/"))
        .cloned()
        .collect();
    for k in keys {
        if let Some(s) = states(flagger, &k) {
            for st in s.iter_mut() {
                if let Some(t) = st.pointer_mut("/spec/template") {
                    *t = without_zero_values(t);
                }
            }
            dedup(s);
        }
    }
}

/// `(type, message) → count` of the event webhook calls (the complete sequence of events).
fn emitted(t: &Trace) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for l in lines(t, "events") {
        // "<path> <Type> [<phase> <checksum>] <message>"
        let mut parts = l.splitn(3, ' ');
        let (_, kind, rest) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let message = rest.split_once("] ").map_or(rest, |(_, m)| m);
        *out.entry((kind.to_string(), message.to_string())).or_default() += 1;
    }
    out
}

/// `(type, reason, count, message)` of the stored Events (`Type Reason xN: message`).
fn stored(t: &Trace) -> Vec<(String, String, i64, String)> {
    lines(t, "kubernetes events")
        .iter()
        .filter_map(|l| {
            let (head, message) = l.split_once(": ")?;
            let mut h = head.split(' ');
            let kind = h.next()?.to_string();
            let reason = h.next()?.to_string();
            let count = h.next()?.strip_prefix('x')?.parse().ok()?;
            Some((kind, reason, count, message.to_string()))
        })
        .collect()
}

const COMBINED: &str = "(combined from similar events): ";

/// aviary: exactly one Event per distinct (type, message), its count the number emitted.
fn aviary_events_agree(t: &Trace) -> bool {
    let mut by_message: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (kind, reason, count, message) in stored(t) {
        if reason != "Synced" {
            return false;
        }
        *by_message.entry((kind, message)).or_default() += count;
    }
    by_message == emitted(t)
}

/// Flagger (client-go's EventCorrelator): each stored message was emitted at least that often,
/// combined Events name an emitted message, and nothing was stored that was not emitted.
fn flagger_events_agree(t: &Trace) -> bool {
    let emitted = emitted(t);
    let total: i64 = emitted.values().sum();
    let mut seen = 0;
    for (kind, reason, count, message) in stored(t) {
        if reason != "Synced" {
            return false;
        }
        seen += count;
        let plain = message.strip_prefix(COMBINED).unwrap_or(&message).to_string();
        let available = emitted.get(&(kind, plain)).copied().unwrap_or(0);
        if available == 0 || (!message.starts_with(COMBINED) && count > available) {
            return false;
        }
    }
    seen <= total
}

fn kubernetes_events(_: &Scenario, flagger: &mut Trace, aviary: &mut Trace) {
    let channel = "kubernetes events";
    if flagger.channels.get(channel) == aviary.channels.get(channel) {
        return;
    }
    if flagger_events_agree(flagger) && aviary_events_agree(aviary) {
        let same = Channel::Lines(vec![
            "(each side's Events agree with its event webhook calls)".into(),
        ]);
        flagger.channels.insert(channel.into(), same.clone());
        aviary.channels.insert(channel.into(), same);
    }
}

/// Applies every rule; returns those that changed something.
pub fn apply(scenario: &Scenario, flagger: &mut Trace, aviary: &mut Trace) -> Vec<&'static Documented> {
    let mut fired = Vec::new();
    for rule in RULES {
        let before = (flagger.clone(), aviary.clone());
        (rule.apply)(scenario, flagger, aviary);
        if before != (flagger.clone(), aviary.clone()) {
            fired.push(rule);
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_row_of_the_compatibility_page() {
        let doc = std::fs::read_to_string(crate::sides::repo().join("docs/compatibility.md")).unwrap();
        for rule in RULES {
            assert!(
                doc.lines().any(|l| l.starts_with(&format!("| {} |", rule.row))),
                "docs/compatibility.md has no row {:?}",
                rule.row
            );
        }
    }
}
