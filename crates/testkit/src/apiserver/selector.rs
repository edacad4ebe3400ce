//! Label and field selectors with the grammar of the real API server.

use serde_json::Value;

use super::resources::ResourceType;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed `labelSelector` (`a=b,c!=d,e in (f,g),!h,i`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LabelSelector(Vec<(String, Op)>);

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> &str {
        self.ws();
        let start = self.pos;
        while let Some(c) = self.s[self.pos..].chars().next() {
            if c.is_whitespace() || ",=!()<>".contains(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }
    fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.s.len()
    }
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (v.is_empty()
            || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

impl LabelSelector {
    /// Parses a selector; errors are `BadRequest` like the API server's.
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::BadRequest(format!(
                "unable to parse requirement: {why} (in labelSelector {s:?})"
            ))
        };
        let mut c = Cursor { s, pos: 0 };
        let mut reqs = Vec::new();
        if c.at_end() {
            return Ok(Self(reqs));
        }
        loop {
            if c.eat("!") {
                let key = c.word().to_string();
                if key.is_empty() {
                    return Err(bad("missing key after '!'"));
                }
                reqs.push((key, Op::NotExists));
            } else {
                let key = c.word().to_string();
                if key.is_empty() {
                    return Err(bad("missing key"));
                }
                let op = if c.eat("==") || c.eat("=") {
                    Op::Eq(c.word().to_string())
                } else if c.eat("!=") {
                    Op::NotEq(c.word().to_string())
                } else if c.eat(">") {
                    Op::Gt(c.word().parse().map_err(|_| bad("'>' needs an integer"))?)
                } else if c.eat("<") {
                    Op::Lt(c.word().parse().map_err(|_| bad("'<' needs an integer"))?)
                } else {
                    let save = c.pos;
                    let w = c.word().to_string();
                    if w == "in" || w == "notin" {
                        if !c.eat("(") {
                            return Err(bad("expected '(' after 'in'/'notin'"));
                        }
                        let mut vals = Vec::new();
                        loop {
                            vals.push(c.word().to_string());
                            if c.eat(")") {
                                break;
                            }
                            if !c.eat(",") {
                                return Err(bad("expected ',' or ')' in value set"));
                            }
                        }
                        if w == "in" { Op::In(vals) } else { Op::NotIn(vals) }
                    } else {
                        c.pos = save;
                        Op::Exists
                    }
                };
                match &op {
                    Op::Eq(v) | Op::NotEq(v) if !valid_label_value(v) => {
                        return Err(bad(&format!("invalid label value: {v:?}")));
                    }
                    Op::In(vs) | Op::NotIn(vs) if vs.iter().any(|v| !valid_label_value(v)) => {
                        return Err(bad("invalid label value in set"));
                    }
                    _ => {}
                }
                reqs.push((key, op));
            }
            if c.at_end() {
                break;
            }
            if !c.eat(",") {
                return Err(bad(&format!("unexpected text at position {}", c.pos)));
            }
        }
        Ok(Self(reqs))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|(key, op)| {
            let v = labels.get(key).and_then(Value::as_str);
            match op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| xs.iter().all(|x| x != v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed `fieldSelector` (`metadata.name=x,involvedObject.kind!=Pod`), validated against the
/// fields the resource type supports.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.last_mut().expect("non-empty").extend(['\\', c]);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds the first unescaped occurrence of `op` in `term`.
fn find_op(term: &str, op: &str) -> Option<usize> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if term[i..].starts_with(op) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl FieldSelector {
    /// Parses a selector; unknown field labels are refused like the API server does.
    pub(crate) fn parse(s: &str, rt: &ResourceType) -> Result<Self> {
        let mut terms = Vec::new();
        for term in split_unescaped(s, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some(i) = find_op(term, "!=") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = find_op(term, "==") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = find_op(term, "=") {
                (&term[..i], true, &term[i + 1..])
            } else {
                return Err(Error::BadRequest(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !rt.allows_field(field) {
                return Err(Error::BadRequest(format!(
                    "field label not supported: {field} (resource {}; supported: metadata.name{}{})",
                    rt.qualified(),
                    if rt.namespaced { ", metadata.namespace" } else { "" },
                    rt.field_selectors
                        .iter()
                        .map(|f| format!(", {f}"))
                        .collect::<String>()
                )));
            }
            terms.push((field.to_string(), equal, unescape(value.trim())));
        }
        Ok(Self(terms))
    }

    /// Whether the object satisfies every term.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, equal, want)| (field_value(obj, field) == *want) == *equal)
    }
}

/// The string value of a selectable field (`source` is the Event's `source.component`).
fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let v = path.split('.').try_fold(obj, |v, k| v.get(k));
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_grammar() {
        let o = obj(json!({"app": "podinfo", "tier": "web", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=podinfo"));
        assert!(m("app==podinfo,tier"));
        assert!(!m("app!=podinfo"));
        assert!(m("tier in (web, api)"));
        assert!(!m("tier notin (web)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("n>4,n<6"));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("app=a b").is_err());
    }

    #[test]
    fn field_selector_escapes_and_support() {
        let events = super::super::resources::builtins()
            .into_iter()
            .find(|r| r.kind == "Event")
            .unwrap();
        let ev = json!({"metadata": {"name": "e", "namespace": "test"},
                        "involvedObject": {"kind": "Canary", "name": "a,b=c", "uid": "u1"},
                        "source": {"component": "aviary"}});
        let s = FieldSelector::parse(
            r"involvedObject.name=a\,b\=c,involvedObject.kind==Canary,source=aviary",
            &events,
        )
        .unwrap();
        assert!(s.matches(&ev));
        assert!(
            !FieldSelector::parse("involvedObject.uid!=u1", &events)
                .unwrap()
                .matches(&ev)
        );
        let err = FieldSelector::parse("spec.foo=bar", &events).unwrap_err();
        assert!(
            err.to_string().contains("field label not supported: spec.foo"),
            "{err}"
        );
    }
}
