//! The Istio router (reference §6.4): DestinationRules `<apex>-primary` and `<apex>-canary` with
//! the canary's traffic policy, and the VirtualService `<apex>` with weighted destinations, A/B
//! routes, mirroring (`mirror` + `mirrorPercentage`) and session-affinity routes.
//!
//! Taking over an existing VirtualService keeps its previous spec in the annotation
//! `flagger.kubernetes.io/original-configuration`; deletion (`revertOnDeletion`) restores it.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::defaults::defaulted;
use aviary_api::service::HttpMatchRequest;
use aviary_core::ports::{Router, Routes};
use serde_json::{Map, Value, json};

use crate::client::{
    DESTINATION_RULE, KUBECTL_LAST_APPLIED, Kube, VIRTUAL_SERVICE, annotation, owned_by, owner_reference,
    set_annotation,
};
use crate::routing::{
    SessionRoutes, apex_metadata, cookie_regex, kept_routes, merge_matches, owned_metadata,
    require_apex_route, session_routes,
};

/// Where a taken-over VirtualService's previous spec is kept.
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";

/// The Istio router.
#[derive(Debug, Clone)]
pub struct IstioRouter {
    kube: Kube,
}

fn destination(host: &str, weight: i32, set_cookie: Option<String>) -> Value {
    let mut d = json!({"destination": {"host": host}, "weight": weight});
    if let Some(cookie) = set_cookie {
        d["headers"] = json!({"response": {"add": {"Set-Cookie": cookie}}});
    }
    d
}

/// Session-affinity routes as HTTP routes: cookie matches on top of the service's `base`
/// matches, `Set-Cookie` response headers on the destinations.
struct Sessions<'a> {
    primary: &'a str,
    canary: &'a str,
    base: &'a [HttpMatchRequest],
}

impl SessionRoutes for Sessions<'_> {
    fn matching(&self, route: &Value, cookie: &str) -> Value {
        let mut r = route.clone();
        r["match"] = json!(with_cookie(self.base, cookie));
        r
    }

    fn backends(&self, route: &mut Value, primary: (i32, Option<String>), canary: (i32, Option<String>)) {
        route["route"] = json!([
            destination(self.primary, primary.0, primary.1),
            destination(self.canary, canary.0, canary.1)
        ]);
    }

    fn expire(&self, route: &mut Value, expiry: String) {
        route["headers"]["response"]["add"]["Set-Cookie"] = json!(expiry);
    }
}

fn with_cookie(matches: &[HttpMatchRequest], cookie: &str) -> Vec<Value> {
    let cookie_match = json!({"regex": cookie_regex(cookie)});
    if matches.is_empty() {
        return vec![json!({"headers": {"Cookie": cookie_match}})];
    }
    matches
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or(json!({}));
            v["headers"]["Cookie"] = cookie_match.clone();
            v
        })
        .collect()
}

/// The VirtualService spec for a split.
pub fn virtual_service_spec(c: &Canary, routes: &Routes) -> Value {
    let svc = c.spec.service.clone().unwrap_or_default();
    let apex = c.apex_name().to_string();
    let (primary, canary) = (format!("{apex}-primary"), format!("{apex}-canary"));
    let mut spec = Map::new();
    if svc.delegation != Some(true) {
        let mut hosts = svc.hosts.clone().unwrap_or_default();
        if !hosts.iter().any(|h| h == &apex || h == "*") {
            hosts.push(apex.clone());
        }
        let mut gateways = svc.gateways.clone().unwrap_or_default();
        if gateways.is_empty() {
            gateways.push("mesh".into());
        }
        spec.insert("hosts".into(), json!(hosts));
        spec.insert("gateways".into(), json!(gateways));
    }
    let base: Vec<HttpMatchRequest> = svc.match_.clone().unwrap_or_default();

    if svc.app_protocol.as_deref() == Some("tcp") {
        let port = svc.port.unwrap_or(0);
        spec.insert(
            "tcp".into(),
            json!([{"match": [{"port": port}], "route": [destination(&primary, routes.primary, None), destination(&canary, routes.canary, None)]}]),
        );
        return Value::Object(spec);
    }

    let common = |route: &mut Value| {
        if let Some(r) = &svc.rewrite {
            let mut rw = Map::new();
            if let Some(u) = r.uri.as_ref().filter(|u| !u.is_empty()) {
                rw.insert("uri".into(), json!(u));
            }
            if let Some(a) = r.authority.as_ref().filter(|a| !a.is_empty()) {
                rw.insert("authority".into(), json!(a));
            }
            if !rw.is_empty() {
                route["rewrite"] = Value::Object(rw);
            }
        }
        if let Some(t) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
            route["timeout"] = json!(t);
        }
        if let Some(r) = &svc.retries {
            route["retries"] = serde_json::to_value(r).unwrap_or(Value::Null);
        }
        if let Some(cp) = &svc.cors_policy {
            route["corsPolicy"] = serde_json::to_value(cp).unwrap_or(Value::Null);
        }
        if let Some(h) = &svc.headers {
            route["headers"] = serde_json::to_value(h).unwrap_or(Value::Null);
        }
    };
    let matches_value = |ms: &[HttpMatchRequest]| serde_json::to_value(ms).unwrap_or(json!([]));

    let analysis = c.analysis();
    let ab: Vec<HttpMatchRequest> = analysis.match_.clone().unwrap_or_default();
    // As Flagger's SetRoutes (pkg/router/istio.go): the weighted route, the session-affinity
    // routes around it, mirroring on the first route, and for A/B two routes instead of all that.
    let mut weighted = json!({
        "route": [destination(&primary, routes.primary, None), destination(&canary, routes.canary, None)],
    });
    if !base.is_empty() {
        weighted["match"] = matches_value(&base);
    }
    common(&mut weighted);
    let sessions = Sessions {
        primary: &primary,
        canary: &canary,
        base: &base,
    };
    let mut http = session_routes(c, routes, weighted, &sessions);
    if routes.mirror {
        http[0]["mirror"] = json!({"host": canary});
        if let Some(w) = analysis.mirror_weight.filter(|w| *w > 0) {
            http[0]["mirrorPercentage"] = json!({"value": w});
        }
    }
    if !ab.is_empty() {
        let mut tested = json!({
            "match": matches_value(&merge_matches(&ab, &base)),
            "route": [destination(&primary, routes.primary, None), destination(&canary, routes.canary, None)],
        });
        common(&mut tested);
        // The primary's weight here too (0 while matched requests go to the canary); a lone
        // destination gets all the traffic whatever its weight.
        let mut rest = json!({"route": [destination(&primary, routes.primary, None)]});
        if !base.is_empty() {
            rest["match"] = matches_value(&base);
        }
        common(&mut rest);
        http = vec![tested, rest];
    }
    spec.insert("http".into(), Value::Array(http));
    Value::Object(spec)
}

/// The split of a VirtualService, read as Flagger's GetRoutes reads it: the last HTTP route
/// with a canary destination (a missing destination weighs 0); with session affinity, the
/// destinations that set a cookie win.
pub fn read_routes(vs: &Value, c: &Canary) -> Option<Routes> {
    let apex = c.apex_name();
    let (primary, canary) = (format!("{apex}-primary"), format!("{apex}-canary"));
    let spec = &vs["spec"];
    let list = spec["http"].as_array().or_else(|| spec["tcp"].as_array())?;
    let has = |r: &Value, host: &str| {
        r["route"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["destination"]["host"] == host))
    };
    let route = list.iter().rev().find(|r| has(r, &canary))?;
    let weight = |r: &Value, host: &str| {
        r["route"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["destination"]["host"] == host))
            .and_then(|d| d["weight"].as_i64())
            .unwrap_or(0) as i32
    };
    let mut routes = Routes {
        primary: weight(route, &primary),
        canary: weight(route, &canary),
        mirror: route["mirror"]["host"].as_str().is_some_and(|h| !h.is_empty()),
        session: None,
    };
    if c.analysis().session_affinity.is_some() {
        for d in list.iter().filter_map(|r| r["route"].as_array()).flatten() {
            if d["headers"].is_object() {
                let w = d["weight"].as_i64().unwrap_or(0) as i32;
                if d["destination"]["host"] == primary.as_str() {
                    routes.primary = w;
                } else if d["destination"]["host"] == canary.as_str() {
                    routes.canary = w;
                }
            }
        }
    }
    Some(routes)
}

impl IstioRouter {
    pub fn new(kube: Kube) -> Self {
        Self { kube }
    }

    async fn destination_rules(&self, c: &Canary) -> Result<(), String> {
        let ns = c.namespace();
        let policy = c.spec.service.as_ref().and_then(|s| s.traffic_policy.clone());
        for name in [
            format!("{}-primary", c.apex_name()),
            format!("{}-canary", c.apex_name()),
        ] {
            let mut spec = json!({"host": name});
            if let Some(p) = &policy {
                spec["trafficPolicy"] = serde_json::to_value(p).unwrap_or(Value::Null);
            }
            let create = || {
                Ok(
                    json!({"metadata": {"name": name, "namespace": ns, "ownerReferences": [owner_reference(c)]}, "spec": spec}),
                )
            };
            self.kube
                .upsert(DESTINATION_RULE, ns, &name, create, |cur| {
                    cur["spec"] = spec.clone();
                    Ok(())
                })
                .await
                .map_err(|e| format!("DestinationRule {name}.{ns} update error: {e}"))?;
        }
        Ok(())
    }

    async fn write(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        let ns = c.namespace();
        let apex = c.apex_name().to_string();
        let spec = virtual_service_spec(c, routes);
        let (labels, annotations) = apex_metadata(c);
        let create = || Ok(json!({"metadata": owned_metadata(c, &labels, &annotations), "spec": spec}));
        self.kube
            .upsert(VIRTUAL_SERVICE, ns, &apex, create, |cur| {
                if cur["spec"] == spec {
                    return Ok(());
                }
                let taken_over = !owned_by(cur, c);
                if taken_over
                    && annotation(cur, ORIGINAL_CONFIGURATION).is_none()
                    && annotation(cur, KUBECTL_LAST_APPLIED).is_none()
                {
                    let original = cur["spec"].to_string();
                    set_annotation(cur, ORIGINAL_CONFIGURATION, Some(&original));
                }
                for (k, v) in &annotations {
                    set_annotation(cur, k, v.as_str());
                }
                cur["spec"] = spec.clone();
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("VirtualService {apex}.{ns} update error: {e}"))
    }
}

#[async_trait]
impl Router for IstioRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let c = defaulted(c);
        self.destination_rules(&c).await?;
        let routes = kept_routes(&self.kube, VIRTUAL_SERVICE, &c, read_routes).await?;
        self.write(&c, &routes).await
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        self.write(&defaulted(c), routes).await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let (ns, apex) = (c.namespace(), c.apex_name());
        let vs = require_apex_route(&self.kube, VIRTUAL_SERVICE, c).await?;
        let routes = read_routes(&vs, c)
            .ok_or_else(|| format!("VirtualService {apex}.{ns} has no route with the destinations {apex}-primary and {apex}-canary"))?;
        if routes.primary == 0 && routes.canary == 0 {
            return Err(format!(
                "VirtualService {apex}.{ns} does not contain routes for {apex}-primary and {apex}-canary"
            ));
        }
        Ok(routes)
    }

    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        let (ns, apex) = (c.namespace(), c.apex_name().to_string());
        self.kube
            .modify(VIRTUAL_SERVICE, ns, &apex, |cur| {
                let saved = annotation(cur, KUBECTL_LAST_APPLIED)
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .map(|o| o["spec"].clone())
                    .filter(Value::is_object)
                    .or_else(|| {
                        annotation(cur, ORIGINAL_CONFIGURATION).and_then(|s| serde_json::from_str(s).ok())
                    });
                if let Some(spec) = saved {
                    cur["spec"] = spec;
                    set_annotation(cur, ORIGINAL_CONFIGURATION, None);
                }
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("VirtualService {apex}.{ns} revert error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_api::canary::CanaryAnalysis;
    use aviary_api::service::{CanaryService, StringMatch};

    use crate::routing::{sticky_analysis, with_cookie};

    fn canary(analysis: CanaryAnalysis, service: CanaryService) -> Canary {
        crate::routing::podinfo_canary(None, analysis, service)
    }

    #[test]
    fn weighted_virtual_service() {
        let c = canary(
            CanaryAnalysis {
                step_weight: Some(10),
                ..Default::default()
            },
            CanaryService {
                hosts: Some(vec!["app.example.com".into()]),
                gateways: Some(vec!["public-gateway".into()]),
                timeout: Some("30s".into()),
                ..Default::default()
            },
        );
        let spec = virtual_service_spec(&c, &Routes::split(80, 20));
        assert_eq!(spec["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(spec["gateways"], json!(["public-gateway"]));
        assert_eq!(
            spec["http"],
            json!([{"route": [{"destination": {"host": "podinfo-primary"}, "weight": 80}, {"destination": {"host": "podinfo-canary"}, "weight": 20}], "timeout": "30s"}])
        );
        assert_eq!(
            read_routes(&json!({"spec": spec}), &c),
            Some(Routes::split(80, 20))
        );
    }

    #[test]
    fn mirror_ab_and_sessions() {
        let c = canary(
            CanaryAnalysis {
                iterations: Some(5),
                mirror: Some(true),
                mirror_weight: Some(50),
                ..Default::default()
            },
            CanaryService::default(),
        );
        let routes = Routes {
            mirror: true,
            ..Routes::split(100, 0)
        };
        let spec = virtual_service_spec(&c, &routes);
        assert_eq!(spec["gateways"], json!(["mesh"]));
        assert_eq!(spec["http"][0]["mirror"], json!({"host": "podinfo-canary"}));
        assert_eq!(spec["http"][0]["mirrorPercentage"], json!({"value": 50}));
        assert_eq!(read_routes(&json!({"spec": spec}), &c), Some(routes));

        let m = HttpMatchRequest::header("user-agent", StringMatch::regex(".*Firefox.*"));
        let ab = canary(
            CanaryAnalysis {
                iterations: Some(10),
                match_: Some(vec![m]),
                ..Default::default()
            },
            CanaryService::default(),
        );
        let spec = virtual_service_spec(&ab, &Routes::split(0, 100));
        assert_eq!(spec["http"].as_array().unwrap().len(), 2);
        assert_eq!(
            spec["http"][0]["match"][0]["headers"]["user-agent"]["regex"],
            ".*Firefox.*"
        );
        // As Flagger: the rest goes to the primary at the primary's weight (0 here; a lone
        // destination gets everything).
        assert_eq!(
            spec["http"][1]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 0}])
        );

        let sa = canary(sticky_analysis("c"), CanaryService::default());
        let routes = with_cookie(Routes::split(90, 10), "c=xyz", false);
        let spec = virtual_service_spec(&sa, &routes);
        // Flagger's layout: a sticky route (primary 0, canary 100) for the cookie, then the
        // weighted route whose canary destination sets it.
        assert_eq!(
            spec["http"][0]["match"][0]["headers"]["Cookie"]["regex"],
            ".*c.*xyz.*"
        );
        assert_eq!(
            spec["http"][0]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 0}, {"destination": {"host": "podinfo-canary"}, "weight": 100}])
        );
        assert_eq!(
            spec["http"][1]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "c=xyz; Max-Age=86400"
        );
        assert_eq!(
            read_routes(&json!({"spec": spec}), &sa).map(|r| (r.primary, r.canary)),
            Some((90, 10))
        );
        // Back at weight 0: a copy of the weighted route matching the retired cookie expires it.
        let retired = with_cookie(Routes::split(100, 0), "c=xyz", true);
        let spec = virtual_service_spec(&sa, &retired);
        assert_eq!(
            spec["http"][0]["headers"]["response"]["add"]["Set-Cookie"],
            "c=xyz; Max-Age=-1"
        );
        assert_eq!(spec["http"][0]["route"], spec["http"][1]["route"]);
        assert_eq!(
            read_routes(&json!({"spec": spec}), &sa).map(|r| (r.primary, r.canary)),
            Some((100, 0))
        );
    }
}
