//! The Gloo Edge router (Flagger's GlooRouter, pkg/router/gloo.go): two Upstreams
//! (gloo.solo.io/v1) `<ns>-<apex>-primaryupstream-<port>` and `…-canaryupstream-<port>` for the
//! `-primary` and `-canary` Services, configured like the canary's `spec.upstreamRef` Upstream
//! when it names one, and one RouteTable `<apex>` (gateway.solo.io/v1) whose route splits between
//! them. A/B testing: the route's matchers are the `analysis.match` headers (exact or regex) and
//! methods, as in Flagger (requests that do not match are not routed by this table).

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::ports::Routes;
use serde_json::{Map, Value, json};

use crate::client::{GLOO_ROUTE_TABLE, GLOO_UPSTREAM, Kube, SERVICE, describe, not_found, owner_reference};
use crate::routing::{ObjectRouting, RoutingObject, primary_share};

/// The fields of the config Upstream that Flagger copies (gloo.go:336-349).
const COPIED: &[&str] = &[
    "labels",
    "sslConfig",
    "circuitBreakers",
    "connectionConfig",
    "loadBalancerConfig",
    "useHttp2",
    "initialStreamWindowSize",
    "initialConnectionWindowSize",
    "httpProxyHostName",
];

/// The Gloo Edge router.
#[derive(Debug, Clone)]
pub struct GlooRouter;

/// `<ns>-<apex>-<role>upstream-<port>`.
pub fn upstream_name(c: &Canary, role: &str) -> String {
    let port = c.spec.service.as_ref().and_then(|s| s.port).unwrap_or(0);
    format!("{}-{}-{role}upstream-{port}", c.namespace(), c.apex_name())
}

/// Flagger's getMatchers (gloo.go:392-438).
fn matchers(c: &Canary) -> Option<Value> {
    let mut headers = Vec::new();
    let mut methods = Vec::new();
    for m in c.analysis().match_.iter().flatten() {
        for (name, sm) in m.headers.iter().flatten() {
            let h = if let Some(r) = sm.regex.as_ref().filter(|r| !r.is_empty()) {
                json!({"name": name, "value": r, "regex": true})
            } else {
                let mut h = json!({"name": name});
                if let Some(e) = sm.exact.as_ref().filter(|e| !e.is_empty()) {
                    h["value"] = json!(e);
                }
                h
            };
            headers.push(h);
        }
        if let Some(method) = &m.method {
            methods.push(Value::from(method.exact.clone().unwrap_or_default()));
        }
    }
    if headers.is_empty() && methods.is_empty() {
        return None;
    }
    let mut m = Map::new();
    if !headers.is_empty() {
        m.insert("headers".into(), Value::Array(headers));
    }
    if !methods.is_empty() {
        m.insert("methods".into(), Value::Array(methods));
    }
    Some(json!([m]))
}

#[async_trait]
impl ObjectRouting for GlooRouter {
    const REFUSES_NO_WEIGHTS: Option<&'static str> = Some("RoutingRule");

    fn object(&self, c: &Canary) -> RoutingObject {
        RoutingObject::owned(GLOO_ROUTE_TABLE, c, c.apex_name())
    }

    /// The RouteTable spec (gloo.go:70-101, :225-256).
    fn spec(&self, c: &Canary, routes: &Routes) -> Value {
        let destination = |name: String, weight: i32| {
            let mut d = json!({"destination": {"upstream": {"name": name, "namespace": c.namespace()}}});
            if weight != 0 {
                d["weight"] = json!(weight);
            }
            d
        };
        let mut route = json!({
            "inheritablePathMatchers": true,
            "routeAction": {"multi": {"destinations": [
                destination(upstream_name(c, "primary"), routes.primary),
                destination(upstream_name(c, "canary"), routes.canary),
            ]}},
        });
        if let Some(m) = matchers(c) {
            route["matchers"] = m;
        }
        json!({"routes": [route]})
    }

    /// The primary's weight in the first route; the canary has the rest (gloo.go:175-203).
    fn read(&self, c: &Canary, rt: &Value) -> Result<Routes, String> {
        let destinations = rt["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if destinations.len() < 2 {
            return Err(format!(
                "RouteTable {}.{} destinations not found",
                c.apex_name(),
                c.namespace()
            ));
        }
        let primary = upstream_name(c, "primary");
        let upstream = |d: &Value| d["destination"]["upstream"]["name"] == primary.as_str();
        Ok(primary_share(&destinations, upstream))
    }

    /// The Upstreams of the `-primary` and `-canary` Services first.
    async fn prepare(&self, kube: &Kube, c: &Canary) -> Result<RoutingObject, String> {
        let config = config_upstream(kube, c).await?;
        upstream(kube, c, "primary", config.as_ref())
            .await
            .map_err(|e| format!("error creating flagger primary upstream: {e}"))?;
        upstream(kube, c, "canary", config.as_ref())
            .await
            .map_err(|e| format!("error creating flagger canary upstream: {e}"))?;
        Ok(self.object(c))
    }
}

/// The Upstream named by `spec.upstreamRef`, if any (gloo.go:380-390).
async fn config_upstream(kube: &Kube, c: &Canary) -> Result<Option<Value>, String> {
    let Some(r) = c.spec.upstream_ref.as_ref() else {
        return Ok(None);
    };
    let name = r.name.clone().unwrap_or_default();
    let ns = r.namespace.clone().unwrap_or_else(|| c.namespace().to_string());
    match kube.get(GLOO_UPSTREAM, &ns, &name).await {
        Ok(Some(u)) => Ok(Some(u)),
        Ok(None) => Err(format!(
            "config upstream {name}.{ns} get query error: {} (spec.upstreamRef)",
            not_found(GLOO_UPSTREAM, &name)
        )),
        Err(e) => Err(format!(
            "config upstream {name}.{ns} get query error: {}",
            describe(&e)
        )),
    }
}

/// Creates an Upstream for the `-primary` or `-canary` Service; an existing one only follows
/// the config Upstream's load balancer (gloo.go:269-331).
async fn upstream(kube: &Kube, c: &Canary, role: &str, config: Option<&Value>) -> Result<(), String> {
    let ns = c.namespace();
    let svc_name = format!("{}-{role}", c.apex_name());
    let context = format!("service {svc_name}.{ns} get query error");
    let svc = kube.require(SERVICE, ns, &svc_name, &context).await?;
    let name = upstream_name(c, role);
    let mut spec = Map::new();
    if let Some(cfg) = config {
        for f in COPIED {
            if let Some(v) = cfg["spec"].get(*f) {
                spec.insert((*f).to_string(), v.clone());
            }
        }
    }
    let mut kube_us = json!({
        "serviceName": svc_name,
        "serviceNamespace": ns,
        "servicePort": c.spec.service.as_ref().and_then(|s| s.port).unwrap_or(0),
    });
    if let Some(sel) = svc["spec"]["selector"].as_object().filter(|s| !s.is_empty()) {
        kube_us["selector"] = Value::Object(sel.clone());
    }
    spec.insert("kube".into(), kube_us);
    let lb = config.and_then(|cfg| cfg["spec"].get("loadBalancerConfig").cloned());
    kube.upsert(
        GLOO_UPSTREAM,
        ns,
        &name,
        || Ok(json!({"metadata": {"ownerReferences": [owner_reference(c)]}, "spec": spec})),
        |cur| {
            if config.is_some() && cur["spec"].get("loadBalancerConfig") != lb.as_ref() {
                match &lb {
                    Some(lb) => cur["spec"]["loadBalancerConfig"] = lb.clone(),
                    None => {
                        if let Some(s) = cur["spec"].as_object_mut() {
                            s.remove("loadBalancerConfig");
                        }
                    }
                }
            }
            Ok(())
        },
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("upstream {name}.{ns} create query error: {e}"))
}
