//! Server-side tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) for `kubectl get`,
//! with the simple JSONPath subset that CRD `additionalPrinterColumns` use.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::resources::{CellSource, ResourceType};

/// What each table row carries in `object` (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    /// `[?(@.path op literal)]`
    Filter(Vec<String>, bool, Value),
}

/// A parsed simple JSONPath: fields, indexes, `[*]`, quoted keys and `[?(@.a=='b')]` filters.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JsonPath(Vec<Step>);

fn unescape_dots(s: &str) -> String {
    s.replace("\\.", ".")
}

impl JsonPath {
    /// Parses `.a.b[0]['c\.d'][?(@.type=="Ready")].e` (optionally wrapped in `{}`).
    pub(crate) fn parse(src: &str) -> Result<Self, String> {
        let s = src.trim();
        let s = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(s);
        let s = s.strip_prefix('$').unwrap_or(s);
        let b = s.as_bytes();
        let mut i = 0;
        let mut steps = Vec::new();
        while i < b.len() {
            match b[i] {
                b'.' => {
                    if b.get(i + 1) == Some(&b'.') {
                        return Err("recursive descent (..) is not supported".into());
                    }
                    let start = i + 1;
                    i = start;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    let name = unescape_dots(&s[start..i.min(b.len())]);
                    if name.is_empty() {
                        return Err(format!("empty field name at offset {start}"));
                    }
                    steps.push(if name == "*" {
                        Step::Wildcard
                    } else {
                        Step::Field(name)
                    });
                }
                b'[' => {
                    let end = s[i..].find(']').map(|e| e + i).ok_or("unterminated '['")?;
                    // A filter may contain ']' only inside quotes; simple paths never do.
                    let inner = s[i + 1..end].trim();
                    steps.push(Self::bracket(inner)?);
                    i = end + 1;
                }
                c => return Err(format!("unexpected '{}' at offset {i}", c as char)),
            }
        }
        Ok(Self(steps))
    }

    fn bracket(inner: &str) -> Result<Step, String> {
        if inner == "*" {
            return Ok(Step::Wildcard);
        }
        if let Some(q) = unquote(inner) {
            return Ok(Step::Field(unescape_dots(&q)));
        }
        if let Ok(n) = inner.parse::<i64>() {
            return Ok(Step::Index(n));
        }
        let f = inner
            .strip_prefix("?(")
            .and_then(|f| f.strip_suffix(')'))
            .ok_or_else(|| format!("unsupported subscript [{inner}]"))?;
        let (lhs, eq, rhs) = if let Some((l, r)) = f.split_once("==") {
            (l, true, r)
        } else if let Some((l, r)) = f.split_once("!=") {
            (l, false, r)
        } else {
            return Err(format!("unsupported filter [{inner}]: use @.field=='value'"));
        };
        let path = lhs.trim().strip_prefix("@.").ok_or("filter must start with @.")?;
        let rhs = rhs.trim();
        let lit = match unquote(rhs) {
            Some(s) => Value::from(s),
            None => serde_json::from_str(rhs).map_err(|_| format!("bad filter literal {rhs}"))?,
        };
        Ok(Step::Filter(
            path.split('.').map(str::to_string).collect(),
            eq,
            lit,
        ))
    }

    /// All values the path selects in `root`.
    pub(crate) fn eval<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![root];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in cur {
                match step {
                    Step::Field(f) => next.extend(v.get(f)),
                    Step::Index(n) => {
                        if let Some(a) = v.as_array() {
                            let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                            next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                        }
                    }
                    Step::Wildcard => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter(path, eq, lit) => {
                        for e in v.as_array().into_iter().flatten() {
                            let got = path.iter().try_fold(e, |e, k| e.get(k));
                            if got.is_some_and(|g| g == lit) == *eq {
                                next.push(e);
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return Some(s[1..s.len() - 1].to_string());
        }
    }
    None
}

/// kubectl's human-readable duration ("45s", "3m20s", "5h", "2d3h", "1y20d").
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        return match secs % 60 {
            0 => format!("{mins}m"),
            s => format!("{mins}m{s}s"),
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = mins / 60;
    if hours < 8 {
        return match mins % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if days < 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// Age of an RFC 3339 timestamp, or `<invalid>`.
pub(crate) fn age_of(ts: &str) -> String {
    match ts.parse::<Timestamp>() {
        Ok(t) => human_duration(Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<invalid>".into(),
    }
}

/// Prints a JSONPath result the way the API server does: scalars bare, the rest as JSON.
fn print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cell(source: &CellSource, type_: &str, obj: &Value) -> Value {
    match source {
        CellSource::Name => obj["metadata"]["name"].clone(),
        CellSource::Age => obj["metadata"]["creationTimestamp"]
            .as_str()
            .map_or(Value::from("<unknown>"), |t| Value::from(age_of(t))),
        CellSource::Computed(f) => f(obj),
        CellSource::JsonPath(p) => {
            let Ok(path) = JsonPath::parse(p) else {
                return Value::Null;
            };
            let Some(v) = path.eval(obj).into_iter().next() else {
                return Value::Null;
            };
            match (type_, v) {
                ("date", Value::String(s)) => Value::from(age_of(s)),
                ("integer" | "number", Value::Number(_)) | ("boolean", Value::Bool(_)) => v.clone(),
                (_, Value::Null) => Value::Null,
                _ => Value::from(print(v)),
            }
        }
    }
}

/// The PartialObjectMetadata form of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// Builds a `meta.k8s.io/v1` Table for `objects` of `rt` in `version`.
pub(crate) fn table(
    rt: &ResourceType,
    version: &str,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Map<String, Value>,
) -> Value {
    let columns = rt.version(version).map(|v| v.columns.clone()).unwrap_or_default();
    let defs: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description,
                   "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(&c.source, &c.type_, o)).collect();
            let mut row = json!({ "cells": cells });
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({
            "metadata": {"labels": {"serving.knative.dev/configuration": "podinfo"}},
            "spec": {"analysis": {"stepWeight": 10}, "hosts": ["a", "b"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}
        });
        let first = |p: &str| JsonPath::parse(p).unwrap().eval(&o).first().map(|v| print(v));
        assert_eq!(first(".spec.analysis.stepWeight").as_deref(), Some("10"));
        assert_eq!(first("{.spec.hosts[1]}").as_deref(), Some("b"));
        assert_eq!(first(".spec.hosts").as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(
            first(r".metadata.labels['serving\.knative\.dev/configuration']").as_deref(),
            Some("podinfo")
        );
        assert_eq!(
            first(".status.conditions[?(@.type=='Ready')].status").as_deref(),
            Some("True")
        );
        assert_eq!(
            first(".status.conditions[?(@.type==\"X\")].status").as_deref(),
            Some("False")
        );
        assert_eq!(first(".status.missing"), None);
        assert!(JsonPath::parse("..status").is_err());
    }

    #[test]
    fn durations_match_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }
}
