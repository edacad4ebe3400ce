//! The APISIX router (Flagger's ApisixRouter, pkg/router/apisix.go): the user's ApisixRoute
//! (`spec.routeRef`, apisix.apache.org/v2) is left alone; a copy `<route>-<apex>-canary` owned by
//! the Canary keeps only the http route whose single backend is the apex Service, at priority
//! 10000, with backends `<apex>-primary` and `<apex>-canary` weighted. No header matching.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::ports::{Router, Routes};
use serde_json::{Value, json};

use crate::client::{APISIX_ROUTE, Kube, owner_reference};
use crate::routing::{RoutingObject, primary_share, referenced_name};

/// Flagger's maxPriority (apisix.go:42).
const MAX_PRIORITY: i64 = 10000;

/// The APISIX router.
#[derive(Debug, Clone)]
pub struct ApisixRouter {
    kube: Kube,
}

/// The ApisixRoute the canary names in `spec.routeRef`, or Flagger's error.
fn route_name(c: &Canary) -> Result<&str, String> {
    let r = c.spec.route_ref.as_deref();
    referenced_name(c, r, "apisix route selector", "routeRef", "the ApisixRoute")
}

/// The index of the http route with a backend named `service`.
fn http_route_index(route: &Value, service: &str) -> Option<usize> {
    route["spec"]["http"].as_array()?.iter().position(|h| {
        h["backends"]
            .as_array()
            .is_some_and(|bs| bs.iter().any(|b| b["serviceName"] == service))
    })
}

impl ApisixRouter {
    pub fn new(kube: Kube) -> Self {
        Self { kube }
    }

    /// The canary route's spec built from the user's route (apisix.go:56-90).
    pub fn canary_spec(c: &Canary, user: &Value) -> Result<Value, String> {
        let name = route_name(c)?;
        let ns = c.namespace();
        let apex = c.apex_name();
        if user["spec"]["http"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("APISIX route {name}.{ns}'s spec.http is empty"));
        }
        let i = http_route_index(user, apex)
            .ok_or_else(|| format!("Can not find {apex} backend on apisix route {name}.{ns} "))?;
        let mut http = user["spec"]["http"][i].clone();
        let backends = http["backends"].as_array().cloned().unwrap_or_default();
        if backends.len() != 1 {
            return Err(format!(
                "APISIX route {name}.{ns}'s http route {} only one http backend is supported",
                http["name"].as_str().unwrap_or_default()
            ));
        }
        http["priority"] = json!(MAX_PRIORITY);
        let mut primary = backends[0].clone();
        primary["serviceName"] = json!(format!("{apex}-primary"));
        primary["weight"] = json!(100);
        let mut canary = json!({"serviceName": format!("{apex}-canary"), "servicePort": primary["servicePort"], "weight": 0});
        for f in ["resolveGranularity", "subset"] {
            if let Some(v) = primary.get(f) {
                canary[f] = v.clone();
            }
        }
        http["backends"] = json!([primary, canary]);
        // Flagger's typed copy always writes `websocket` (no omitempty).
        if http.get("websocket").is_none() {
            http["websocket"] = json!(false);
        }
        let mut spec = user["spec"].clone();
        spec["http"] = json!([http]);
        Ok(spec)
    }

    /// The primary's weight; the canary has the rest (apisix.go:158-185).
    pub fn read(c: &Canary, route: &Value) -> Result<Routes, String> {
        let apex = c.apex_name();
        let primary = format!("{apex}-primary");
        let i = http_route_index(route, &primary).ok_or_else(|| {
            format!(
                "Can not find {primary} backend on apisix route {}.{} ",
                route_name(c).unwrap_or_default(),
                c.namespace()
            )
        })?;
        let backends = route["spec"]["http"][i]["backends"]
            .as_array()
            .into_iter()
            .flatten();
        Ok(primary_share(backends, |b| b["serviceName"] == primary.as_str()))
    }

    fn object(c: &Canary) -> Result<RoutingObject, String> {
        let name = format!("{}-{}-canary", route_name(c)?, c.apex_name());
        Ok(RoutingObject::owned(APISIX_ROUTE, c, name))
    }
}

#[async_trait]
impl Router for ApisixRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let name = route_name(c)?;
        let ns = c.namespace();
        let context = format!("APISIX route {name}.{ns} get query error");
        let user = self.kube.require(APISIX_ROUTE, ns, name, &context).await?;
        let spec = Self::canary_spec(c, &user)?;
        let object = Self::object(c)?;
        let apex = c.apex_name().to_string();
        // The canary route carries the user route's labels and annotations (apisix.go:96-104);
        // only its spec is kept in sync, weights aside.
        let create = || {
            let mut metadata = json!({"ownerReferences": [owner_reference(c)]});
            for f in ["labels", "annotations"] {
                if let Some(m) = user["metadata"][f].as_object() {
                    metadata[f] = Value::Object(m.clone());
                }
            }
            Ok(json!({"metadata": metadata, "spec": spec}))
        };
        self.kube
            .upsert(APISIX_ROUTE, ns, &object.name, create, |cur| {
                let mut desired = spec.clone();
                // Keep the live weights.
                if let Ok(live) = Self::read(c, cur) {
                    for b in desired["http"][0]["backends"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                    {
                        if b["serviceName"] == format!("{apex}-primary").as_str() {
                            b["weight"] = json!(live.primary);
                        } else {
                            b["weight"] = json!(live.canary);
                        }
                    }
                }
                if crate::routing::without_key(&desired, "weight")
                    != crate::routing::without_key(&cur["spec"], "weight")
                {
                    cur["spec"] = desired;
                }
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("APISIX route {}.{ns} update error: {e}", object.name))
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        crate::routing::require_weights("RoutingRule", c, routes)?;
        let apex = c.apex_name();
        let (primary, canary) = (format!("{apex}-primary"), format!("{apex}-canary"));
        Self::object(c)?
            .update(&self.kube, |route| {
                let i = http_route_index(route, &primary)
                    .ok_or_else(|| format!("Can not find {primary} backend on the canary apisix route"))?;
                for b in route["spec"]["http"][i]["backends"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if b["serviceName"] == primary.as_str() {
                        b["weight"] = json!(routes.primary);
                    } else if b["serviceName"] == canary.as_str() {
                        b["weight"] = json!(routes.canary);
                    }
                }
                Ok(())
            })
            .await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        Self::object(c)?.routes(&self.kube, |r| Self::read(c, r)).await
    }
}
