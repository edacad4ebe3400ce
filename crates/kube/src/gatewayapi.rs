//! The Gateway API router (reference §6.5): one HTTPRoute `<apex>` owned by the Canary, with
//! weighted backendRefs to `<apex>-primary` and `<apex>-canary`.
//!
//! - Matches come from `service.match` (default PathPrefix `/`); A/B merges `analysis.match`
//!   into the weighted rule and adds a second rule (base matches → primary only).
//! - Blue/green mirroring adds a RequestMirror filter to the canary; session affinity adds rules
//!   matching the cookie (a `Cookie` header regex) before the weighted rule and `Set-Cookie`
//!   response headers on the backendRefs.
//! - The weights are read from the rule with exactly two backendRefs, after checking that every
//!   parent Gateway accepted the route at its current generation.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::defaults::defaulted;
use aviary_api::service::{HeaderOperation, HttpMatchRequest, StringMatch};
use aviary_core::ports::{Router, Routes};
use serde_json::{Map, Value, json};

use crate::client::{HTTP_ROUTE, HTTP_ROUTE_V1BETA1, Kind, Kube};
use crate::routing::{
    SessionRoutes, apex_metadata, cookie_regex, cross_matches, kept_routes, owned_metadata, regex_escape,
    require_apex_route, session_routes,
};

/// The Gateway API router.
#[derive(Debug, Clone)]
pub struct GatewayApiRouter {
    kube: Kube,
    kind: Kind,
}

fn string_match(name: &str, m: &StringMatch) -> Option<Value> {
    let (type_, value) = if let Some(v) = &m.exact {
        ("Exact", v.clone())
    } else if let Some(v) = &m.regex {
        ("RegularExpression", v.clone())
    } else if let Some(v) = &m.prefix {
        ("RegularExpression", format!("^{}.*", regex_escape(v)))
    } else if let Some(v) = &m.suffix {
        ("RegularExpression", format!(".*{}$", regex_escape(v)))
    } else {
        return None;
    };
    Some(json!({"name": name, "type": type_, "value": value}))
}

/// An Istio HTTPMatchRequest as an HTTPRouteMatch (uri, headers, query parameters, method).
pub fn route_match(m: &HttpMatchRequest) -> Value {
    let mut out = Map::new();
    if let Some(u) = &m.uri {
        let path = if let Some(v) = &u.exact {
            Some(json!({"type": "Exact", "value": v}))
        } else if let Some(v) = &u.prefix {
            Some(json!({"type": "PathPrefix", "value": v}))
        } else if let Some(v) = &u.regex {
            Some(json!({"type": "RegularExpression", "value": v}))
        } else {
            u.suffix
                .as_ref()
                .map(|v| json!({"type": "RegularExpression", "value": format!(".*{}$", regex_escape(v))}))
        };
        if let Some(p) = path {
            out.insert("path".into(), p);
        }
    }
    for (key, matches) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        let list: Vec<Value> = matches
            .iter()
            .flatten()
            .filter_map(|(k, v)| string_match(k, v))
            .collect();
        if !list.is_empty() {
            out.insert(key.into(), Value::Array(list));
        }
    }
    if let Some(method) = m.method.as_ref().and_then(|s| s.exact.clone()) {
        out.insert("method".into(), Value::from(method));
    }
    if !out.contains_key("path") && !out.contains_key("headers") && !out.contains_key("queryParams") {
        out.insert("path".into(), json!({"type": "PathPrefix", "value": "/"}));
    }
    Value::Object(out)
}

fn header_filter(type_: &str, op: &HeaderOperation) -> Option<Value> {
    let list = |m: &Option<std::collections::BTreeMap<String, String>>| -> Vec<Value> {
        m.iter()
            .flatten()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect()
    };
    let mut modifier = Map::new();
    let add = list(&op.add);
    let set = list(&op.set);
    if !add.is_empty() {
        modifier.insert("add".into(), Value::Array(add));
    }
    if !set.is_empty() {
        modifier.insert("set".into(), Value::Array(set));
    }
    if let Some(r) = op.remove.as_ref().filter(|r| !r.is_empty()) {
        let mut r = r.clone();
        r.sort();
        modifier.insert("remove".into(), json!(r));
    }
    if modifier.is_empty() {
        return None;
    }
    let key = if type_ == "RequestHeaderModifier" {
        "requestHeaderModifier"
    } else {
        "responseHeaderModifier"
    };
    Some(json!({"type": type_, key: modifier}))
}

/// A backendRef to a Service, with an optional `Set-Cookie` response header.
fn backend(name: &str, port: i32, weight: i32, set_cookie: Option<String>) -> Value {
    let mut b = json!({"group": "", "kind": "Service", "name": name, "port": port, "weight": weight});
    if let Some(cookie) = set_cookie {
        b["filters"] = json!([{
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": cookie}]},
        }]);
    }
    b
}

/// Flagger's `mergeMatchConditions` for HTTPRouteMatches: each analysis match over each service
/// match, the analysis match's headers and query parameters (when it has some) replacing the
/// service match's.
fn merge_route_matches(analysis: &[Value], service: &[Value]) -> Vec<Value> {
    if analysis.is_empty() {
        return service.to_vec();
    }
    cross_matches(analysis, service, |a, s| {
        let mut m = s.clone();
        for key in ["headers", "queryParams"] {
            if a[key].as_array().is_some_and(|l| !l.is_empty()) {
                m[key] = a[key].clone();
            }
        }
        m
    })
}

/// Session-affinity routes as HTTPRoute rules: a `Cookie` header regex merged into the service's
/// matches, `Set-Cookie` response header filters on the backendRefs (on the rule to expire one).
struct Sessions<'a> {
    primary: &'a str,
    canary: &'a str,
    port: i32,
    service_matches: &'a [Value],
}

impl SessionRoutes for Sessions<'_> {
    fn matching(&self, rule: &Value, cookie: &str) -> Value {
        let m = json!({"headers": [{"name": "Cookie", "type": "RegularExpression", "value": cookie_regex(cookie)}]});
        let mut r = rule.clone();
        r["matches"] = json!(merge_route_matches(&[m], self.service_matches));
        r
    }

    fn backends(&self, rule: &mut Value, primary: (i32, Option<String>), canary: (i32, Option<String>)) {
        rule["backendRefs"] = json!([
            backend(self.primary, self.port, primary.0, primary.1),
            backend(self.canary, self.port, canary.0, canary.1)
        ]);
    }

    fn expire(&self, rule: &mut Value, expiry: String) {
        let mut filters = rule["filters"].as_array().cloned().unwrap_or_default();
        filters.push(json!({
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": expiry}]},
        }));
        rule["filters"] = Value::Array(filters);
    }
}

/// The HTTPRoute spec for a split.
pub fn route_spec(c: &Canary, routes: &Routes) -> Value {
    let svc = c.spec.service.clone().unwrap_or_default();
    let apex = c.apex_name();
    let (primary, canary) = (format!("{apex}-primary"), format!("{apex}-canary"));
    let port = svc.port.unwrap_or(0);
    let base: Vec<HttpMatchRequest> = svc.match_.clone().unwrap_or_default();
    let base_matches: Vec<Value> = if base.is_empty() {
        vec![json!({"path": {"type": "PathPrefix", "value": "/"}})]
    } else {
        base.iter().map(route_match).collect()
    };

    let mut filters = Vec::new();
    if let Some(h) = &svc.headers {
        if let Some(f) = h
            .request
            .as_ref()
            .and_then(|r| header_filter("RequestHeaderModifier", r))
        {
            filters.push(f);
        }
        if let Some(f) = h
            .response
            .as_ref()
            .and_then(|r| header_filter("ResponseHeaderModifier", r))
        {
            filters.push(f);
        }
    }
    if let Some(r) = &svc.rewrite {
        let mut rw = Map::new();
        if let Some(uri) = r.uri.as_ref().filter(|u| !u.is_empty()) {
            let path = if r.type_.as_deref() == Some("ReplacePrefixMatch") {
                json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": uri})
            } else {
                json!({"type": "ReplaceFullPath", "replaceFullPath": uri})
            };
            rw.insert("path".into(), path);
        }
        if let Some(a) = r.authority.as_ref().filter(|a| !a.is_empty()) {
            rw.insert("hostname".into(), Value::from(a.clone()));
        }
        if !rw.is_empty() {
            filters.push(json!({"type": "URLRewrite", "urlRewrite": rw}));
        }
    }
    for m in svc.mirror.iter().flatten() {
        if let Some(b) = &m.backend_ref {
            filters.push(json!({"type": "RequestMirror", "requestMirror": {"backendRef": b}}));
        }
    }
    let mut timeouts = Map::new();
    if let Some(t) = svc.timeout.as_ref().filter(|t| !t.is_empty()) {
        timeouts.insert("request".into(), Value::from(t.clone()));
    }
    if let Some(t) = svc.backend_timeout.as_ref().filter(|t| !t.is_empty()) {
        timeouts.insert("backendRequest".into(), Value::from(t.clone()));
    }
    let rule = |matches: Vec<Value>, backends: Vec<Value>, extra_filters: Vec<Value>| {
        let mut r = json!({"matches": matches, "backendRefs": backends});
        let all: Vec<Value> = filters.iter().cloned().chain(extra_filters).collect();
        if !all.is_empty() {
            r["filters"] = Value::Array(all);
        }
        if !timeouts.is_empty() {
            r["timeouts"] = Value::Object(timeouts.clone());
        }
        r
    };

    // As Flagger's SetRoutes (pkg/router/gateway_api.go): the weighted rule (with the
    // blue/green mirror), the session-affinity rules around it, then for A/B the analysis
    // matches merged into the first rule and a rule sending the rest to the primary.
    let analysis = c.analysis();
    let mut extra = Vec::new();
    if routes.mirror && analysis.iterations.unwrap_or(0) > 0 {
        extra.push(json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": canary, "port": port}}}));
    }
    let weighted = rule(
        base_matches.clone(),
        vec![
            backend(&primary, port, routes.primary, None),
            backend(&canary, port, routes.canary, None),
        ],
        extra,
    );
    let service_matches: Vec<Value> = base.iter().map(route_match).collect();
    let sessions = Sessions {
        primary: &primary,
        canary: &canary,
        port,
        service_matches: &service_matches,
    };
    let mut rules = session_routes(c, routes, weighted, &sessions);
    let ab: Vec<HttpMatchRequest> = analysis.match_.clone().unwrap_or_default();
    if !ab.is_empty() {
        let tested: Vec<Value> = ab.iter().map(route_match).collect();
        rules[0]["matches"] = json!(merge_route_matches(&tested, &base_matches));
        rules.push(rule(
            base_matches,
            vec![backend(&primary, port, 100, None)],
            vec![],
        ));
    }

    let mut spec = json!({
        "parentRefs": serde_json::to_value(svc.gateway_refs.clone().unwrap_or_default()).unwrap_or(json!([])),
        "rules": rules,
    });
    if let Some(h) = svc.hosts.as_ref().filter(|h| !h.is_empty()) {
        spec["hostnames"] = json!(h);
    }
    spec
}

/// The split of an HTTPRoute, read as Flagger's GetRoutes reads it: the last rule with exactly
/// two backendRefs (with session affinity, the rule whose backendRefs set cookies), mirrored
/// when any rule mirrors to the canary.
pub fn read_routes(route: &Value, c: &Canary) -> Option<Routes> {
    let apex = c.apex_name();
    let (primary, canary) = (format!("{apex}-primary"), format!("{apex}-canary"));
    let rules = route["spec"]["rules"].as_array()?;
    let backends = |r: &Value| r["backendRefs"].as_array().cloned().unwrap_or_default();
    let mut rule = rules.iter().rev().find(|r| backends(r).len() == 2)?;
    if c.analysis().session_affinity.is_some()
        && let Some(r) = rules.iter().rev().find(|r| {
            backends(r)
                .iter()
                .any(|b| b["filters"].as_array().is_some_and(|f| !f.is_empty()))
        })
    {
        rule = r;
    }
    let weight = |name: &str| {
        backends(rule)
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["weight"].as_i64().unwrap_or(1) as i32)
    };
    let mirror = rules.iter().any(|r| {
        r["filters"].as_array().is_some_and(|fs| {
            fs.iter().any(|f| {
                f["type"] == "RequestMirror" && f["requestMirror"]["backendRef"]["name"] == canary.as_str()
            })
        })
    });
    Some(Routes {
        primary: weight(&primary).unwrap_or(0),
        canary: weight(&canary).unwrap_or(0),
        mirror,
        session: None,
    })
}

impl GatewayApiRouter {
    pub fn new(kube: Kube, v1beta1: bool) -> Self {
        Self {
            kube,
            kind: if v1beta1 { HTTP_ROUTE_V1BETA1 } else { HTTP_ROUTE },
        }
    }

    async fn write(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        let c = defaulted(c);
        let ns = c.namespace();
        let apex = c.apex_name().to_string();
        let spec = route_spec(&c, routes);
        let (labels, annotations) = apex_metadata(&c);
        let create = || Ok(json!({"metadata": owned_metadata(&c, &labels, &annotations), "spec": spec}));
        self.kube
            .upsert(self.kind, ns, &apex, create, |cur| {
                // Existing annotations are merged, the spec is ours (as in Flagger).
                for (field, map) in [("annotations", &annotations), ("labels", &labels)] {
                    for (k, v) in map {
                        cur["metadata"][field][k.as_str()] = v.clone();
                    }
                }
                // The CRD's defaults (parentRef group/kind, a PathPrefix "/" match, backendRef
                // group/kind) are not ours to fight: rewrite only when our fields differ.
                if !crate::client::is_subset(&spec, &cur["spec"]) {
                    cur["spec"] = spec.clone();
                }
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("HTTPRoute {apex}.{ns} update error: {e}"))
    }
}

/// Flagger's readiness check: every parentRef must be Accepted at the route's generation.
fn check_parents(route: &Value, c: &Canary) -> Result<(), String> {
    let (ns, apex) = (c.namespace(), c.apex_name());
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let statuses = route["status"]["parents"].as_array().cloned().unwrap_or_default();
    for p in route["spec"]["parentRefs"].as_array().into_iter().flatten() {
        let pname = p["name"].as_str().unwrap_or_default();
        let pns = p["namespace"].as_str().unwrap_or(ns);
        let section = p["sectionName"].as_str();
        let shown = format!("{pns}/{pname}");
        let status = statuses.iter().find(|s| {
            let r = &s["parentRef"];
            r["name"] == pname
                && r["namespace"].as_str().unwrap_or(ns) == pns
                && r["sectionName"].as_str() == section
        });
        let Some(status) = status else {
            return Err(format!(
                "HTTPRoute {apex}.{ns} parent {shown} is not ready (no status reported by the gateway yet)"
            ));
        };
        let accepted = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"));
        match accepted {
            None => {
                return Err(format!(
                    "HTTPRoute {apex}.{ns} parent {shown} is not ready (no Accepted condition)"
                ));
            }
            Some(a) if a["status"] != "True" => {
                return Err(format!(
                    "HTTPRoute {apex}.{ns} parent {shown} is not ready (Accepted={}: {} {})",
                    a["status"].as_str().unwrap_or("Unknown"),
                    a["reason"].as_str().unwrap_or_default(),
                    a["message"].as_str().unwrap_or_default()
                )
                .trim_end()
                .to_string());
            }
            Some(a) => {
                let observed = a["observedGeneration"].as_i64().unwrap_or(0);
                if observed < generation {
                    return Err(format!(
                        "HTTPRoute {apex}.{ns} parent {shown} is not ready (observedGeneration {observed} < generation {generation})"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Router for GatewayApiRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let routes = kept_routes(&self.kube, self.kind, c, read_routes).await?;
        self.write(c, &routes).await
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        self.write(c, routes).await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let route = require_apex_route(&self.kube, self.kind, c).await?;
        check_parents(&route, c)?;
        read_routes(&route, c).ok_or_else(|| {
            format!(
                "HTTPRoute {}.{} has no rule with the backendRefs {0}-primary and {0}-canary",
                c.apex_name(),
                c.namespace()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_api::canary::CanaryAnalysis;
    use aviary_api::service::{CanaryService, ParentReference};

    use crate::routing::{sticky_analysis, with_cookie};

    fn canary(analysis: CanaryAnalysis) -> Canary {
        let service = CanaryService {
            gateway_refs: Some(vec![ParentReference {
                name: Some("gw".into()),
                namespace: Some("istio-ingress".into()),
                ..Default::default()
            }]),
            hosts: Some(vec!["app.example.com".into()]),
            ..Default::default()
        };
        crate::routing::podinfo_canary(Some("gatewayapi:v1"), analysis, service)
    }

    #[test]
    fn weighted_route_and_read_back() {
        let c = canary(CanaryAnalysis {
            step_weight: Some(10),
            ..Default::default()
        });
        let spec = route_spec(&c, &Routes::split(90, 10));
        assert_eq!(spec["hostnames"], json!(["app.example.com"]));
        assert_eq!(spec["parentRefs"][0]["name"], "gw");
        let rules = spec["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/"}}])
        );
        assert_eq!(
            rules[0]["backendRefs"][0],
            json!({"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 90})
        );
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 10);
        let route = json!({"spec": spec});
        assert_eq!(read_routes(&route, &c), Some(Routes::split(90, 10)));
    }

    #[test]
    fn ab_testing_adds_a_base_rule_and_mirroring_a_filter() {
        let m = HttpMatchRequest::header("x-canary", StringMatch::exact("insider"));
        let c = canary(CanaryAnalysis {
            iterations: Some(10),
            match_: Some(vec![m]),
            ..Default::default()
        });
        let spec = route_spec(&c, &Routes::split(0, 100));
        let rules = spec["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"][0]["headers"],
            json!([{"name": "x-canary", "type": "Exact", "value": "insider"}])
        );
        assert_eq!(rules[1]["backendRefs"].as_array().unwrap().len(), 1);
        assert_eq!(
            read_routes(&json!({"spec": spec}), &c),
            Some(Routes::split(0, 100))
        );

        let bg = canary(CanaryAnalysis {
            iterations: Some(5),
            mirror: Some(true),
            ..Default::default()
        });
        let routes = Routes {
            mirror: true,
            ..Routes::split(100, 0)
        };
        let spec = route_spec(&bg, &routes);
        assert_eq!(
            spec["rules"][0]["filters"][0]["requestMirror"]["backendRef"]["name"],
            "podinfo-canary"
        );
        assert_eq!(read_routes(&json!({"spec": spec}), &bg), Some(routes));
    }

    #[test]
    fn session_affinity_pins_cookies() {
        let c = canary(sticky_analysis("flagger-cookie"));
        let routes = with_cookie(Routes::split(90, 10), "flagger-cookie=abc", false);
        let spec = route_spec(&c, &routes);
        let rules = spec["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"][0]["headers"][0],
            json!({"name": "Cookie", "type": "RegularExpression", "value": ".*flagger-cookie.*abc.*"})
        );
        // Flagger's sticky rule: both backends, the canary at 100.
        assert_eq!(rules[0]["backendRefs"][0]["name"], "podinfo-primary");
        assert_eq!(rules[0]["backendRefs"][0]["weight"], 0);
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 100);
        assert_eq!(
            rules[1]["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
            "flagger-cookie=abc; Max-Age=86400"
        );
        assert_eq!(
            read_routes(&json!({"spec": spec}), &c).map(|r| (r.primary, r.canary)),
            Some((90, 10))
        );
    }

    #[test]
    fn parents_must_accept_the_current_generation() {
        let c = canary(CanaryAnalysis::default());
        let mut route = json!({"metadata": {"generation": 2}, "spec": {"parentRefs": [{"name": "gw", "namespace": "istio-ingress"}]}});
        assert!(
            check_parents(&route, &c)
                .unwrap_err()
                .contains("parent istio-ingress/gw is not ready")
        );
        route["status"] = json!({"parents": [{"parentRef": {"name": "gw", "namespace": "istio-ingress"},
            "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}]}]});
        assert_eq!(
            check_parents(&route, &c).unwrap_err(),
            "HTTPRoute podinfo.test parent istio-ingress/gw is not ready (observedGeneration 1 < generation 2)"
        );
        route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = json!(2);
        assert!(check_parents(&route, &c).is_ok());
    }
}
