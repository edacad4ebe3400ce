//! Reading manifests: multi-document YAML → typed resources, with the field path of any type
//! error and the paths of unknown fields (which Flagger's API server would silently drop).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert_provider::AlertProvider;
use crate::canary::Canary;
use crate::error::{Error, Result};
use crate::fleet::FleetRollout;
use crate::local::LocalService;
use crate::metric_template::MetricTemplate;

/// One resource read from a manifest.
#[derive(Debug, Clone)]
pub enum Resource {
    Canary(Box<Canary>),
    MetricTemplate(Box<MetricTemplate>),
    AlertProvider(Box<AlertProvider>),
    LocalService(Box<LocalService>),
    FleetRollout(Box<FleetRollout>),
    /// A kind aviary does not act on (Deployments, Knative Services, …).
    Other(ObjectId),
}

/// apiVersion, kind, namespace and name of any object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    /// `namespace/name` (or `name` for cluster-scoped objects).
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.key())
    }
}

/// A parsed document: the resource and the paths of fields the types do not know.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub resource: Resource,
    pub id: ObjectId,
    pub unknown_fields: Vec<String>,
}

/// A document that is YAML but not a usable resource: which object (as far as known), the field
/// path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub id: Box<ObjectId>,
    pub path: String,
    pub message: String,
}

impl DocumentError {
    fn new(id: &ObjectId, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            id: Box::new(id.clone()),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses every document of a (multi-document) YAML text. A YAML syntax error fails the whole
/// text ([`Error::Yaml`]); a document that is valid YAML but not a resource, or has a field of
/// the wrong type, gives a [`DocumentError`] for that document only.
pub fn parse_documents(text: &str) -> Result<Vec<std::result::Result<Parsed, DocumentError>>> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml_ng::Value::deserialize(doc).map_err(|e| Error::Yaml {
            document: index,
            error: e,
        })?;
        if yaml.is_null() {
            continue; // empty document (e.g. a trailing `---`)
        }
        let json: Value = serde_json::to_value(&yaml).map_err(|e| Error::NotJson {
            document: index,
            error: e,
        })?;
        out.push(parse_value(json));
    }
    Ok(out)
}

/// Parses a text whose first document is a Canary (what tests, benchmarks and examples start
/// from); the other documents are ignored.
pub fn parse_canary(text: &str) -> Result<Canary> {
    match parse_documents(text)?.into_iter().next() {
        Some(Ok(Parsed {
            resource: Resource::Canary(c),
            ..
        })) => Ok(*c),
        Some(Ok(p)) => Err(Error::NotACanary(format!("it is a {}", p.id))),
        Some(Err(e)) => Err(Error::NotACanary(format!("{}: {}", e.path, e.message))),
        None => Err(Error::NotACanary("the text holds no document".into())),
    }
}

/// Parses one object already in JSON form.
pub fn parse_value(json: Value) -> std::result::Result<Parsed, DocumentError> {
    let id = object_id(&json);
    let Some(obj) = json.as_object() else {
        return Err(DocumentError::new(&id, "", "expected a YAML mapping (an object)"));
    };
    for field in ["apiVersion", "kind"] {
        if !obj.get(field).is_some_and(Value::is_string) {
            return Err(DocumentError::new(&id, field, "required field is missing"));
        }
    }
    let group = id.api_version.split('/').next().unwrap_or("");
    let resource = match (id.api_version.as_str(), id.kind.as_str()) {
        ("flagger.app/v1beta1", "Canary") => Resource::Canary(Box::new(typed(&json, &id)?)),
        ("flagger.app/v1beta1", "MetricTemplate") => Resource::MetricTemplate(Box::new(typed(&json, &id)?)),
        ("flagger.app/v1beta1", "AlertProvider") => Resource::AlertProvider(Box::new(typed(&json, &id)?)),
        ("aviary.dev/v1alpha1", "LocalService") => Resource::LocalService(Box::new(typed(&json, &id)?)),
        ("aviary.dev/v1alpha1", "FleetRollout") => Resource::FleetRollout(Box::new(typed(&json, &id)?)),
        (_, kind) if KINDS.iter().any(|(g, _, _)| *g == group) => {
            return Err(match served_version(group, kind) {
                Some(version) => {
                    let message = format!(
                        "{kind} is served as {group}/{version} only, got {}",
                        id.api_version
                    );
                    DocumentError::new(&id, "apiVersion", message)
                }
                None => unknown_kind(&id, group, kind),
            });
        }
        _ => Resource::Other(id.clone()),
    };
    let unknown_fields = match &resource {
        Resource::Canary(c) => unknown_fields(&json, &**c),
        Resource::MetricTemplate(t) => unknown_fields(&json, &**t),
        Resource::AlertProvider(a) => unknown_fields(&json, &**a),
        Resource::LocalService(l) => unknown_fields(&json, &**l),
        Resource::FleetRollout(r) => unknown_fields(&json, &**r),
        Resource::Other(_) => Vec::new(),
    };
    Ok(Parsed {
        resource,
        id,
        unknown_fields,
    })
}

/// The kinds of aviary's groups: (group, version, kinds).
const KINDS: [(&str, &str, &[&str]); 2] = [
    (
        "flagger.app",
        "v1beta1",
        &["Canary", "MetricTemplate", "AlertProvider"],
    ),
    ("aviary.dev", "v1alpha1", &["LocalService", "FleetRollout"]),
];

/// The version aviary serves `kind` of `group` at, if it has that kind.
fn served_version(group: &str, kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(g, _, kinds)| *g == group && kinds.contains(&kind))
        .map(|(_, version, _)| *version)
}

/// A kind aviary does not have in one of its groups: the closest one, and where a kind of the
/// other group lives.
fn unknown_kind(id: &ObjectId, group: &str, kind: &str) -> DocumentError {
    let (_, version, kinds) = KINDS
        .iter()
        .find(|(g, _, _)| *g == group)
        .copied()
        .unwrap_or(KINDS[0]);
    let elsewhere = KINDS
        .iter()
        .find(|(g, _, ks)| *g != group && ks.contains(&kind))
        .map(|(g, v, _)| format!("; {kind} is {g}/{v}"))
        .unwrap_or_default();
    let hint = if elsewhere.is_empty() {
        crate::suggest::did_you_mean(kind, kinds.iter().copied())
    } else {
        String::new()
    };
    let message = format!(
        "unknown kind {kind:?} in {group}{hint}{elsewhere}; {group}/{version} has {}",
        kinds.join(", ")
    );
    DocumentError::new(id, "kind", message)
}

fn object_id(json: &Value) -> ObjectId {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let meta = json.get("metadata");
    ObjectId {
        api_version: s(json.get("apiVersion")).unwrap_or_default(),
        kind: s(json.get("kind")).unwrap_or_default(),
        namespace: s(meta.and_then(|m| m.get("namespace"))),
        name: s(meta.and_then(|m| m.get("name"))).unwrap_or_default(),
    }
}

fn typed<T: DeserializeOwned>(json: &Value, id: &ObjectId) -> std::result::Result<T, DocumentError> {
    serde_path_to_error::deserialize(json.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner().to_string();
        // serde names a missing field of the parent; report the full path of the field itself.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            let full = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return DocumentError::new(id, full, "required field is missing");
        }
        DocumentError::new(id, path, inner)
    })
}

/// Paths present in `original` that do not survive a round trip through the typed value.
fn unknown_fields<T: Serialize>(original: &Value, typed: &T) -> Vec<String> {
    let round_trip = serde_json::to_value(typed).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff(original, &round_trip, "", &mut out);
    out
}

fn diff(original: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (original, kept) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, value) in o {
                if value.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff(value, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                diff(ov, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_kinds_and_skips_others() {
        let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: a, namespace: test}\nspec: {}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(matches!(docs[0].as_ref().unwrap().resource, Resource::Canary(_)));
        match &docs[1].as_ref().unwrap().resource {
            Resource::Other(id) => assert_eq!(id.to_string(), "Deployment d"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_canary_takes_the_first_document_and_says_what_else_it_found() {
        let canary =
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: a, namespace: test}\nspec: {}\n";
        let c = parse_canary(&format!(
            "{canary}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n"
        ))
        .unwrap();
        assert_eq!(c.key(), "test/a");
        let err = |text: &str| parse_canary(text).unwrap_err().to_string();
        assert_eq!(
            err("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"),
            "document 1: not a usable Canary: it is a Deployment d"
        );
        assert!(
            err(&canary.replace("spec: {}", "spec: {analysis: {stepWeight: ten}}"))
                .starts_with("document 1: not a usable Canary: spec.analysis.stepWeight: invalid type"),
        );
        assert_eq!(
            err(""),
            "document 1: not a usable Canary: the text holds no document"
        );
    }

    #[test]
    fn type_errors_carry_the_field_path() {
        let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: a, namespace: test}\n\
                    spec:\n  analysis:\n    stepWeight: ten\n";
        let err = parse_documents(text).unwrap().remove(0).unwrap_err();
        assert_eq!(err.path, "spec.analysis.stepWeight");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_listed_with_paths() {
        let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: a, namespace: test}\n\
                    spec:\n  analysis:\n    stepWieght: 5\n    metrics:\n    - name: x\n      treshold: 3\n  bogus: true\n";
        let parsed = parse_documents(text).unwrap().remove(0).unwrap();
        assert_eq!(
            parsed.unknown_fields,
            vec![
                "spec.analysis.metrics[0].treshold",
                "spec.analysis.stepWieght",
                "spec.bogus"
            ]
        );
    }

    #[test]
    fn syntax_errors_fail_the_text() {
        assert!(matches!(
            parse_documents("a: [1, 2\nb: }"),
            Err(Error::Yaml { .. })
        ));
    }

    #[test]
    fn non_mapping_and_missing_kind_are_document_errors() {
        let docs = parse_documents("- 1\n- 2\n---\nmetadata: {name: x}\n").unwrap();
        assert_eq!(
            docs[0].as_ref().unwrap_err().message,
            "expected a YAML mapping (an object)"
        );
        assert_eq!(docs[1].as_ref().unwrap_err().path, "apiVersion");
    }
}
