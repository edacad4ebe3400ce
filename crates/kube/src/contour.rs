//! The Contour router (Flagger's ContourRouter, pkg/router/contour.go): one HTTPProxy `<apex>`
//! owned by the Canary (no virtualhost: a root HTTPProxy includes it), whose route sends the
//! `service.match[0].uri.prefix` (default `/`) to `<apex>-primary` and `<apex>-canary` by weight,
//! with `service.timeout` as a timeout policy, `service.retries` as a retry policy and Linkerd's
//! `l5d-dst-override` request header per service. A/B testing: a first route with the
//! `analysis.match` headers (exact, or `contains` for a prefix/suffix) carries the split, a second
//! one sends the rest to the primary. The agent's `--ingress-class` sets `ingressClassName`.

use aviary_api::Canary;
use aviary_core::ports::Routes;
use serde_json::{Value, json};

use crate::client::HTTP_PROXY;
use crate::routing::{ObjectRouting, RoutingObject, primary_share};

/// The Contour router.
#[derive(Debug, Clone)]
pub struct ContourRouter {
    ingress_class: String,
}

fn prefix(c: &Canary) -> String {
    c.spec
        .service
        .as_ref()
        .and_then(|s| s.match_.as_ref())
        .and_then(|m| m.first())
        .and_then(|m| m.uri.as_ref())
        .and_then(|u| u.prefix.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Flagger's makeConditions (contour.go:408-445).
fn conditions(c: &Canary) -> Vec<Value> {
    let prefix = prefix(c);
    let mut out = Vec::new();
    for m in c.analysis().match_.iter().flatten() {
        for (name, sm) in m.headers.iter().flatten() {
            let mut header = json!({"name": name});
            if let Some(e) = sm.exact.as_ref().filter(|e| !e.is_empty()) {
                header["exact"] = json!(e);
            }
            // Contour has no prefix/suffix header match: Flagger uses `contains`.
            if let Some(s) = sm.suffix.as_ref().filter(|s| !s.is_empty()) {
                header = json!({"name": name, "contains": s});
            }
            if let Some(p) = sm.prefix.as_ref().filter(|p| !p.is_empty()) {
                header = json!({"name": name, "contains": p});
            }
            out.push(json!({"prefix": prefix, "header": header}));
        }
    }
    if out.is_empty() {
        out.push(json!({"prefix": prefix}));
    }
    out
}

/// One route: conditions, policies and the two weighted services (contour.go:52-86).
fn route(c: &Canary, conditions: Vec<Value>, primary: i32, canary: i32) -> Value {
    let svc = c.spec.service.clone().unwrap_or_default();
    let apex = c.apex_name();
    let port = svc.port.unwrap_or(0);
    let service = |name: String, weight: i32| {
        let mut s = json!({
            "name": name,
            "port": port,
            "requestHeadersPolicy": {"set": [{
                "name": "l5d-dst-override",
                "value": format!("{name}.{}.svc.cluster.local:{port}", c.namespace()),
            }]},
        });
        // Go's omitempty: a zero weight is not written.
        if weight != 0 {
            s["weight"] = json!(weight);
        }
        s
    };
    let mut r = json!({
        "conditions": conditions,
        "services": [service(format!("{apex}-primary"), primary), service(format!("{apex}-canary"), canary)],
    });
    if let Some(t) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
        r["timeoutPolicy"] = json!({"response": t, "idle": "5m"});
    }
    if let Some(retries) = &svc.retries {
        let mut p = json!({"count": retries.attempts.unwrap_or(0)});
        if let Some(t) = retries.per_try_timeout.as_ref().filter(|t| !t.is_empty()) {
            p["perTryTimeout"] = json!(t);
        }
        // Flagger writes `[""]` without retryOn, which Contour's schema refuses; aviary omits it.
        if let Some(on) = retries.retry_on.as_ref().filter(|o| !o.is_empty()) {
            p["retryOn"] = json!(on.split(',').collect::<Vec<_>>());
        }
        r["retryPolicy"] = p;
    }
    r
}

impl ContourRouter {
    /// `ingress_class` is the agent's `--ingress-class` (empty: none).
    pub fn new(ingress_class: impl Into<String>) -> Self {
        Self {
            ingress_class: ingress_class.into(),
        }
    }
}

impl ObjectRouting for ContourRouter {
    const REFUSES_NO_WEIGHTS: Option<&'static str> = Some("HTTPProxy");

    /// The HTTPProxy spec for a split (contour.go:285-387).
    fn spec(&self, c: &Canary, routes: &Routes) -> Value {
        let ab = c.analysis().match_.as_ref().is_some_and(|m| !m.is_empty());
        let mut routes_out = vec![route(c, conditions(c), routes.primary, routes.canary)];
        if ab {
            routes_out.push(route(c, vec![json!({"prefix": prefix(c)})], 100, 0));
        }
        let mut spec = json!({"routes": routes_out});
        if !self.ingress_class.is_empty() {
            spec["ingressClassName"] = json!(self.ingress_class);
        }
        spec
    }

    /// The split of an HTTPProxy: the primary's weight in the first route (contour.go:237-265).
    fn read(&self, c: &Canary, proxy: &Value) -> Result<Routes, String> {
        let apex = c.apex_name();
        let services = proxy["spec"]["routes"][0]["services"].as_array();
        let Some(services) = services.filter(|s| s.len() >= 2) else {
            return Err(format!("HTTPProxy {apex}.{} services not found", c.namespace()));
        };
        let primary = format!("{apex}-primary");
        Ok(primary_share(services, |s| s["name"] == primary.as_str()))
    }

    fn object(&self, c: &Canary) -> RoutingObject {
        RoutingObject::owned(HTTP_PROXY, c, c.apex_name())
    }
}
