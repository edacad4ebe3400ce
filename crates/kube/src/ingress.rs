//! The Ingress routers: `nginx` (Flagger's IngressRouter, pkg/router/ingress.go) and `skipper`
//! (pkg/router/skipper.go). Both leave the user's Ingress (`spec.ingressRef`) alone and write a
//! second Ingress `<ingress>-canary` owned by the Canary.
//!
//! - nginx: a copy of the Ingress whose backend is `<apex>-canary`, with ingress-nginx's canary
//!   annotations: `canary-weight` for a weighted split; `canary-by-header`,
//!   `canary-by-header-value`, `canary-by-header-pattern` and `canary-by-cookie` from
//!   `analysis.match` for A/B testing. The annotation prefix is the agent's
//!   `--ingress-annotations-prefix` (Flagger's flag, default `nginx.ingress.kubernetes.io`).
//! - skipper: a copy of the Ingress with every `<apex>` backend replaced by `<apex>-primary` plus
//!   a second path to `<apex>-canary`; the split is the `zalando.org/backend-weights`
//!   annotation, and a `Weight(100)` predicate makes the canary Ingress win over the apex one
//!   (`False()` disables it at weight 0). Skipper has no A/B routing in Flagger.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::ports::{Router, Routes};
use serde_json::{Map, Value, json};

use crate::client::{INGRESS, KUBECTL_LAST_APPLIED, Kube, owner_reference};
use crate::routing::{flux_annotations, referenced_name};

/// ingress-nginx's annotation prefix, Flagger's `-ingress-annotations-prefix` default.
pub const NGINX_ANNOTATIONS_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// The Ingress the canary names in `spec.ingressRef`, or Flagger's error.
fn ingress_name(c: &Canary) -> Result<&str, String> {
    let r = c.spec.ingress_ref.as_deref();
    referenced_name(c, r, "ingress selector", "ingressRef", "the Ingress to split")
}

/// The paths of an Ingress spec whose backend is the Service `name`, mutably.
fn service_backends<'a>(spec: &'a mut Value, name: &str) -> Vec<&'a mut Value> {
    let mut out = Vec::new();
    for rule in spec["rules"].as_array_mut().into_iter().flatten() {
        for path in rule["http"]["paths"].as_array_mut().into_iter().flatten() {
            if path["backend"]["service"]["name"] == name {
                out.push(path);
            }
        }
    }
    out
}

fn string_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Rewrites the annotations of the canary's `<ingress>-canary` Ingress with `f` (the split of
/// both Ingress routers lives there).
async fn rewrite_canary_annotations(
    kube: &Kube,
    c: &Canary,
    f: impl Fn(Map<String, Value>) -> Map<String, Value> + Send + Sync,
) -> Result<(), String> {
    let (name, _) = canary_ingress(kube, c).await?;
    let ns = c.namespace();
    kube.modify(INGRESS, ns, &name, |cur| {
        let current = string_map(&cur["metadata"]["annotations"]);
        cur["metadata"]["annotations"] = Value::Object(f(current));
        Ok(())
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("ingress {name}.{ns} update error {e}"))
}

async fn get_ingress(kube: &Kube, ns: &str, name: &str, what: &str) -> Result<Value, String> {
    kube.require(INGRESS, ns, name, &format!("{what} {name}.{ns} get query error"))
        .await
}

/// The Ingress the canary names in `spec.ingressRef`, and its name (`what` words Flagger's
/// error when it cannot be read).
async fn user_ingress<'c>(kube: &Kube, c: &'c Canary, what: &str) -> Result<(&'c str, Value), String> {
    let name = ingress_name(c)?;
    Ok((name, get_ingress(kube, c.namespace(), name, what).await?))
}

/// The canary's `<ingress>-canary` Ingress, and its name.
async fn canary_ingress(kube: &Kube, c: &Canary) -> Result<(String, Value), String> {
    let name = format!("{}-canary", ingress_name(c)?);
    let ingress = get_ingress(kube, c.namespace(), &name, "ingress").await?;
    Ok((name, ingress))
}

/// The canary Ingress as it is created: `spec`, the user Ingress' labels, `annotations`, owned
/// by the canary.
fn new_canary_ingress(c: &Canary, user: &Value, annotations: &Map<String, Value>, spec: &Value) -> Value {
    let mut metadata = json!({"annotations": annotations, "ownerReferences": [owner_reference(c)]});
    if let Some(l) = user["metadata"]["labels"].as_object() {
        metadata["labels"] = Value::Object(l.clone());
    }
    json!({"metadata": metadata, "spec": spec})
}

/// Creates `name` from `create` when missing; otherwise rewrites it with `update` when its spec
/// differs from `spec`.
async fn upsert_ingress(
    kube: &Kube,
    ns: &str,
    name: &str,
    spec: &Value,
    create: impl Fn() -> Value + Send + Sync,
    update: impl Fn(&mut Value) + Send + Sync,
) -> Result<(), String> {
    kube.upsert(
        INGRESS,
        ns,
        name,
        || Ok(create()),
        |cur| {
            if &cur["spec"] != spec {
                update(cur);
            }
            Ok(())
        },
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("ingress {name}.{ns} update error: {e}"))
}

// === nginx ===

/// The `nginx` router.
#[derive(Debug, Clone)]
pub struct NginxRouter {
    kube: Kube,
    prefix: String,
}

impl NginxRouter {
    /// `prefix` is ingress-nginx's annotation prefix ([`NGINX_ANNOTATIONS_PREFIX`]).
    pub fn new(kube: Kube, prefix: impl Into<String>) -> Self {
        Self {
            kube,
            prefix: prefix.into(),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    /// Flagger's makeAnnotations (ingress.go:215-233): the canary annotations reset to a
    /// weighted canary at 0 %, other annotations kept.
    pub fn weighted_annotations(&self, annotations: Map<String, Value>) -> Map<String, Value> {
        let canary = self.key("canary");
        let mut out: Map<String, Value> = flux_annotations(annotations)
            .into_iter()
            .filter(|(k, _)| !k.contains(&canary) && !k.contains(KUBECTL_LAST_APPLIED))
            .collect();
        out.insert(canary, Value::from("true"));
        out.insert(self.key("canary-weight"), Value::from("0"));
        out
    }

    /// Flagger's makeHeaderAnnotations (ingress.go:235-263). Flagger filters on the annotation
    /// *values* there, so an existing `canary-weight` stays; aviary writes the same object.
    pub fn header_annotations(&self, annotations: Map<String, Value>, c: &Canary) -> Map<String, Value> {
        let canary = self.key("canary");
        let mut out: Map<String, Value> = flux_annotations(annotations)
            .into_iter()
            .filter(|(_, v)| !v.as_str().is_some_and(|v| v.contains(&canary)))
            .collect();
        out.insert(canary, Value::from("true"));
        let (mut cookie, mut header, mut value, mut pattern) = (None, None, None, None);
        for m in c.analysis().match_.iter().flatten() {
            for (name, sm) in m.headers.iter().flatten() {
                if name == "cookie" {
                    cookie = sm.exact.clone();
                } else {
                    header = Some(name.clone());
                    value = sm.exact.clone();
                    pattern = sm.regex.clone();
                }
            }
        }
        for (suffix, v) in [
            ("canary-by-cookie", cookie),
            ("canary-by-header", header),
            ("canary-by-header-value", value),
            ("canary-by-header-pattern", pattern),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                out.insert(self.key(suffix), Value::from(v));
            }
        }
        out
    }

    /// The annotations of the canary Ingress for a split (ingress.go:165-213).
    pub fn split_annotations(
        &self,
        c: &Canary,
        current: Map<String, Value>,
        canary_weight: i32,
    ) -> Map<String, Value> {
        let ab = c.analysis().match_.as_ref().is_some_and(|m| !m.is_empty());
        let mut annotations = if ab {
            self.header_annotations(current, c)
        } else {
            let mut a = current;
            a.insert(self.key("canary-weight"), Value::from(canary_weight.to_string()));
            a
        };
        if canary_weight > 0 {
            annotations.insert(self.key("canary"), Value::from("true"));
        } else {
            annotations = self.weighted_annotations(annotations);
        }
        annotations
    }

    /// The split an Ingress' canary annotations describe (ingress.go:124-163).
    pub fn read_split(&self, c: &Canary, annotations: &Map<String, Value>) -> Result<Routes, String> {
        let ab = c.analysis().match_.as_ref().is_some_and(|m| !m.is_empty());
        if ab
            && (annotations.contains_key(&self.key("canary-by-cookie"))
                || annotations.contains_key(&self.key("canary-by-header")))
        {
            return Ok(Routes::split(0, 100));
        }
        let canary = match annotations.get(&self.key("canary-weight")) {
            Some(v) => {
                let s = v.as_str().unwrap_or_default();
                s.parse::<i32>()
                    .map_err(|e| format!("failed to convert {s} to int: {e}"))?
            }
            None => 0,
        };
        Ok(Routes::split(100 - canary, canary))
    }
}

#[async_trait]
impl Router for NginxRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let (name, ingress) = user_ingress(&self.kube, c, "ingress").await?;
        let (ns, apex) = (c.namespace(), c.apex_name());
        let mut spec = ingress["spec"].clone();
        let backends = service_backends(&mut spec, apex);
        if backends.is_empty() {
            return Err(format!("backend {apex} not found in ingress {name}"));
        }
        for b in backends {
            b["backend"]["service"]["name"] = Value::from(format!("{apex}-canary"));
        }
        let canary_name = format!("{name}-canary");
        let create = || {
            let annotations = self.weighted_annotations(string_map(&ingress["metadata"]["annotations"]));
            new_canary_ingress(c, &ingress, &annotations, &spec)
        };
        upsert_ingress(&self.kube, ns, &canary_name, &spec, create, |cur| {
            cur["spec"] = spec.clone();
        })
        .await
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        rewrite_canary_annotations(&self.kube, c, |current| {
            self.split_annotations(c, current, routes.canary)
        })
        .await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let (_, ingress) = canary_ingress(&self.kube, c).await?;
        self.read_split(c, &string_map(&ingress["metadata"]["annotations"]))
    }
}

// === skipper ===

const SKIPPER_PREDICATE: &str = "zalando.org/skipper-predicate";
const SKIPPER_BACKEND_WEIGHTS: &str = "zalando.org/backend-weights";
const CANARY_ROUTE_WEIGHT: &str = "Weight(100)";
const CANARY_ROUTE_DISABLE: &str = "False()";

/// The `skipper` router.
#[derive(Debug, Clone)]
pub struct SkipperRouter {
    kube: Kube,
}

/// Flagger's insertPredicate (skipper.go:258-272): `insert` first, the other predicates kept,
/// a previous `Weight(100)` or `False()` dropped.
pub fn insert_predicate(raw: &str, insert: &str) -> String {
    let mut out = vec![insert.to_string()];
    for p in raw.split("&&").map(str::trim) {
        if !p.is_empty() && p != CANARY_ROUTE_WEIGHT && p != CANARY_ROUTE_DISABLE {
            out.push(p.to_string());
        }
    }
    out.join(" && ")
}

/// The backend weights annotation as Go's `json.Marshal` of a map writes it (keys sorted).
fn backend_weights(primary: (&str, i32), canary: (&str, i32)) -> String {
    let mut pairs = [primary, canary];
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl SkipperRouter {
    pub fn new(kube: Kube) -> Self {
        Self { kube }
    }

    /// Flagger's makeAnnotations (skipper.go:228-239).
    fn weighted(annotations: &mut Map<String, Value>, c: &Canary, primary: i32, canary: i32) {
        let apex = c.apex_name();
        annotations.insert(
            SKIPPER_BACKEND_WEIGHTS.into(),
            Value::from(backend_weights(
                (&format!("{apex}-primary"), primary),
                (&format!("{apex}-canary"), canary),
            )),
        );
        let raw = annotations
            .get(SKIPPER_PREDICATE)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        annotations.insert(
            SKIPPER_PREDICATE.into(),
            Value::from(insert_predicate(&raw, CANARY_ROUTE_WEIGHT)),
        );
    }
}

#[async_trait]
impl Router for SkipperRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let (name, ingress) = user_ingress(&self.kube, c, "apexIngress").await?;
        let (ns, apex) = (c.namespace(), c.apex_name());
        let mut spec = ingress["spec"].clone();
        let mut found = false;
        for rule in spec["rules"].as_array_mut().into_iter().flatten() {
            let Some(paths) = rule["http"]["paths"].as_array_mut() else {
                continue;
            };
            let mut added = Vec::new();
            for path in paths.iter_mut() {
                if path["backend"]["service"]["name"] == apex {
                    path["backend"]["service"]["name"] = Value::from(format!("{apex}-primary"));
                    let mut canary = path.clone();
                    canary["backend"]["service"]["name"] = Value::from(format!("{apex}-canary"));
                    added.push(canary);
                    found = true;
                }
            }
            paths.extend(added);
        }
        // Flagger's check compares two pointers and never fires (skipper.go:95); aviary says so.
        if !found {
            return Err(format!("backend {apex} not found in ingress {name}"));
        }
        let mut annotations = string_map(&ingress["metadata"]["annotations"]);
        Self::weighted(&mut annotations, c, 100, 0);
        let canary_name = format!("{name}-canary");
        let create = || new_canary_ingress(c, &ingress, &annotations, &spec);
        // A changed apex Ingress resets the split, as in Flagger (skipper.go:132-136).
        upsert_ingress(&self.kube, ns, &canary_name, &spec, create, |cur| {
            cur["spec"] = spec.clone();
            cur["metadata"]["annotations"] = Value::Object(flux_annotations(annotations.clone()));
        })
        .await
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        rewrite_canary_annotations(&self.kube, c, |mut a| {
            Self::weighted(&mut a, c, routes.primary, routes.canary);
            if routes.canary == 0 {
                let raw = a[SKIPPER_PREDICATE].as_str().unwrap_or_default().to_string();
                a.insert(
                    SKIPPER_PREDICATE.into(),
                    Value::from(insert_predicate(&raw, CANARY_ROUTE_DISABLE)),
                );
            }
            a
        })
        .await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let (name, ingress) = canary_ingress(&self.kube, c).await?;
        let (ns, apex) = (c.namespace(), c.apex_name());
        let raw = ingress["metadata"]["annotations"][SKIPPER_BACKEND_WEIGHTS]
            .as_str()
            .ok_or_else(|| {
                format!("ingress {name}.{ns} get backendWeights error: annotation {SKIPPER_BACKEND_WEIGHTS} not found")
            })?;
        let weights: std::collections::BTreeMap<String, i32> = serde_json::from_str(raw)
            .map_err(|e| format!("ingress {name}.{ns} get backendWeights error: {e}"))?;
        let weight = |svc: String, what: &str| {
            weights
                .get(&svc)
                .copied()
                .ok_or_else(|| format!("ingress {name}.{ns} could not get weights[{what}]"))
        };
        Ok(Routes::split(
            weight(format!("{apex}-primary"), "primarySvcName")?,
            weight(format!("{apex}-canary"), "canarySvcName")?,
        ))
    }

    /// Flagger deletes the canary Ingress on finalization (skipper.go:214-226).
    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        let name = format!("{}-canary", ingress_name(c)?);
        let ns = c.namespace();
        self.kube
            .delete(INGRESS, ns, &name)
            .await
            .map_err(|e| format!("ingress {name}.{ns} unable to remove canary ingress: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_weights_are_written_as_flagger_writes_them() {
        assert_eq!(insert_predicate("", CANARY_ROUTE_WEIGHT), "Weight(100)");
        assert_eq!(
            insert_predicate("Host(/a/) && Weight(100)", CANARY_ROUTE_DISABLE),
            "False() && Host(/a/)"
        );
        assert_eq!(
            insert_predicate("False() && Host(/a/)", CANARY_ROUTE_WEIGHT),
            "Weight(100) && Host(/a/)"
        );
        assert_eq!(
            backend_weights(("podinfo-primary", 90), ("podinfo-canary", 10)),
            r#"{"podinfo-canary":10,"podinfo-primary":90}"#
        );
    }
}
