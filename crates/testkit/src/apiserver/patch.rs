//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a documented subset of
//! strategic merge patch.
//!
//! Strategic merge here = JSON merge patch, except:
//! - lists whose field name is known to Kubernetes as merge-by-key are merged item by item,
//!   whatever their path: `containers`, `initContainers`, `ephemeralContainers`, `volumes`, `env`,
//!   `imagePullSecrets` (key `name`), `volumeMounts` (`mountPath`), `ports` (`containerPort` when
//!   the items have one, else `port` as in Services), `conditions` (`type`), `ownerReferences`
//!   (`uid`); an item without its key is a 400;
//! - `finalizers` lists are merged as sets (union, order kept);
//! - directives: `$patch: replace|delete` on maps and list items, `{"$patch": "replace"}` as a list
//!   item, `$retainKeys`, `$deleteFromPrimitiveList/<field>`; `$setElementOrder/<field>` is
//!   accepted and ignored (merged items keep the server's order, new ones are appended).
//!
//! Every other list is replaced, as in a merge patch.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The PATCH content types the fake understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
    Strategic,
}

impl PatchKind {
    /// Maps a Content-Type to a patch kind; server-side apply and unknown types are 415.
    pub(crate) fn from_content_type(ct: &str) -> Result<Self> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Err(Error::UnsupportedMediaType(
                "server-side apply (application/apply-patch+yaml) is not supported by the aviary fake API server \
                 (a test double); use a merge patch (application/merge-patch+json), a JSON patch or PUT instead"
                    .into(),
            )),
            other => Err(Error::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other:?}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ))),
        }
    }
}

/// Applies `body` (raw bytes of the request) to `doc`.
pub(crate) fn apply(doc: &mut Value, kind: PatchKind, body: &[u8]) -> Result<()> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(Error::BadRequest("a merge patch must be a JSON object".into()));
            }
            if kind == PatchKind::Merge {
                json_patch::merge(doc, &patch);
            } else {
                strategic_merge(doc, &patch)?;
            }
            Ok(())
        }
        PatchKind::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("error decoding JSON patch: {e}")))?;
            let mut work = doc.clone();
            for (i, op) in patch.0.iter().enumerate() {
                // The API server's JSON patch lets `test` with a null value pass on a missing
                // path (kube-runtime's finalizer helper relies on it).
                if let json_patch::PatchOperation::Test(t) = op
                    && t.value.is_null()
                    && work.pointer(t.path.as_str()).is_none()
                {
                    continue;
                }
                // Like the API server: a failed operation (including a failed `test`) is 422.
                json_patch::patch(&mut work, std::slice::from_ref(op))
                    .map_err(|e| Error::Invalid(format!("JSON patch operation {i} failed: {e}")))?;
            }
            *doc = work;
            Ok(())
        }
    }
}

/// Strategic merge of `patch` into `doc` (see the module docs for what is supported).
pub(crate) fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<()> {
    match merge_map_value(Some(doc.clone()), patch)? {
        Some(v) => *doc = v,
        None => {
            return Err(Error::BadRequest(
                "a strategic merge patch cannot delete the whole object".into(),
            ));
        }
    }
    Ok(())
}

fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Removes directives and nulls from a value that is inserted rather than merged.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merges a map patch into an optional target; `None` result = delete.
fn merge_map_value(target: Option<Value>, patch: &Value) -> Result<Option<Value>> {
    let Some(p) = patch.as_object() else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => return Ok(Some(strip(patch))),
        Some("merge") | None => {}
        Some(other) => return Err(Error::BadRequest(format!("unknown $patch directive {other:?}"))),
    }
    let mut t = match target {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(Error::BadRequest(format!(
                "unknown strategic merge directive {k:?}"
            )));
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => {
                if let Some(merged) = merge_map_value(t.remove(k), v)? {
                    t.insert(k.clone(), merged);
                }
            }
            Value::Array(items) => {
                let merged = merge_list(k, t.remove(k), items)?;
                t.insert(k.clone(), merged);
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(Some(Value::Object(t)))
}

fn merge_list(field: &str, target: Option<Value>, items: &[Value]) -> Result<Value> {
    if items.iter().any(|i| {
        i.get("$patch").and_then(Value::as_str) == Some("replace")
            && i.as_object().is_some_and(|m| m.len() == 1)
    }) {
        return Ok(strip(&Value::Array(items.to_vec())));
    }
    let mut current = match target {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    if field == "finalizers" {
        for i in items {
            if !current.contains(i) {
                current.push(i.clone());
            }
        }
        return Ok(Value::Array(current));
    }
    let all: Vec<&Value> = current.iter().chain(items.iter()).collect();
    let Some(key) = merge_key(field, &all) else {
        return Ok(strip(&Value::Array(items.to_vec())));
    };
    for item in items {
        let Some(id) = item.get(key).cloned() else {
            return Err(Error::BadRequest(format!(
                "strategic merge patch: an item of list {field:?} has no merge key {key:?}"
            )));
        };
        let pos = current.iter().position(|c| c.get(key) == Some(&id));
        match (pos, merge_map_value(pos.map(|p| current[p].clone()), item)?) {
            (Some(p), Some(v)) => current[p] = v,
            (Some(p), None) => {
                current.remove(p);
            }
            (None, Some(v)) => current.push(v),
            (None, None) => {}
        }
    }
    Ok(Value::Array(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value) -> Value {
        let mut d = doc;
        strategic_merge(&mut d, &patch).unwrap();
        d
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "sidecar", "image": "s:1"}
        ]}}}});
        let out = smp(
            doc,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "app", "image": "a:2",
                                 "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                                 "ports": [{"containerPort": 9090, "name": "metrics"}]},
                                {"name": "sidecar", "$patch": "delete"}]}}}}),
        );
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "a:2");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(c[0]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn directives_and_plain_lists() {
        let doc = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
                         "spec": {"args": ["1", "2"], "selector": {"a": "b"}}});
        let out = smp(
            doc,
            json!({"metadata": {"finalizers": ["b", "a"], "labels": {"x": null}},
                   "spec": {"args": ["3"], "selector": {"$patch": "replace", "c": "d"}}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(out["spec"]["args"], json!(["3"]));
        assert_eq!(out["spec"]["selector"], json!({"c": "d"}));
        let out = smp(
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn json_patch_null_test_passes_on_a_missing_path() {
        let mut doc = json!({"metadata": {}});
        let ops = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
                       {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        apply(&mut doc, PatchKind::Json, ops).unwrap();
        assert_eq!(doc, json!({"metadata": {"finalizers": ["f"]}}));
        assert!(
            apply(&mut doc, PatchKind::Json, ops).is_err(),
            "now the path holds a value"
        );
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let mut doc = json!({"a": 1});
        let err = apply(
            &mut doc,
            PatchKind::Json,
            br#"[{"op":"test","path":"/a","value":2}]"#,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "Invalid");
        assert_eq!(doc, json!({"a": 1}));
    }
}
