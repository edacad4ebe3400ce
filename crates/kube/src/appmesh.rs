//! The App Mesh routers: `appmesh` (appmesh.k8s.aws/v1beta1, Flagger's AppMeshRouter,
//! pkg/router/appmesh.go) and `appmesh:v1beta2` (AppMeshv1beta2Router, appmesh_v1beta2.go).
//!
//! - v1beta1: VirtualNodes `<apex>`, `<apex>-primary`, `<apex>-canary` (DNS discovery, the
//!   canary's `meshName`), and VirtualServices `<apex>.<ns>` (the split, with App Mesh gateway
//!   annotations from `service.hosts`) and `<apex>-canary.<ns>` (all to the canary), each with
//!   its virtual router and routes inline.
//! - v1beta2: VirtualNodes `<apex>-primary` and `<apex>-canary` selecting the pods by the
//!   target's selector label, VirtualRouters `<apex>` and `<apex>-canary`, and a VirtualService
//!   per router.
//!
//! A/B testing: the apex router gets a route `<apex>-a` (priority 10) with the `analysis.match`
//! headers that carries the split, and `<apex>-b` (priority 20) to the primary. Retries default
//! to one on `gateway-error` with 250 ms per try; `service.timeout` becomes the route timeout
//! (v1beta2, also on the listener). Only the first route's weights are ever changed.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::duration::parse_go_duration;
use aviary_core::ports::{Router, Routes};
use serde_json::{Map, Value, json};

use crate::client::{
    APPMESH_VIRTUAL_NODE, APPMESH_VIRTUAL_NODE_V1BETA1, APPMESH_VIRTUAL_ROUTER, APPMESH_VIRTUAL_SERVICE,
    APPMESH_VIRTUAL_SERVICE_V1BETA1, Kind, Kube, owner_reference,
};
use crate::routing::{RoutingObject, apex_metadata, owned_metadata, set_metadata, without_key};
use crate::services::ClusterIpServices;

/// The canary annotation that turns on Envoy access logs (`enabled`).
pub const ACCESS_LOG_ANNOTATION: &str = "appmesh.flagger.app/accesslog";

/// The App Mesh router of either API version.
#[derive(Debug, Clone)]
pub struct AppMeshRouter {
    kube: Kube,
    v1beta2: bool,
    services: ClusterIpServices,
}

fn service(c: &Canary) -> aviary_api::service::CanaryService {
    c.spec.service.as_deref().cloned().unwrap_or_default()
}

fn protocol(c: &Canary) -> &'static str {
    if service(c).port_name.unwrap_or_default().contains("grpc") {
        "grpc"
    } else {
        "http"
    }
}

fn millis(d: &str) -> Option<i64> {
    parse_go_duration(d).ok().map(|d| d.as_millis() as i64)
}

fn route_prefix(c: &Canary) -> String {
    service(c)
        .match_
        .and_then(|m| m.into_iter().next())
        .and_then(|m| m.uri)
        .and_then(|u| u.prefix)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Flagger's makeHeaders (appmesh.go:493-512).
fn headers(c: &Canary) -> Vec<Value> {
    let mut out = Vec::new();
    for m in c.analysis().match_.iter().flatten() {
        for (name, sm) in m.headers.iter().flatten() {
            let mut method = Map::new();
            for (k, v) in [
                ("exact", &sm.exact),
                ("prefix", &sm.prefix),
                ("regex", &sm.regex),
                ("suffix", &sm.suffix),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                    method.insert(k.into(), json!(v));
                }
            }
            out.push(json!({"name": name, "match": method}));
        }
    }
    out
}

/// The retry policy (appmesh.go:462-490, appmesh_v1beta2.go:551-581).
fn retry_policy(c: &Canary, v1beta2: bool) -> Option<Value> {
    let r = service(c).retries?;
    let timeout = r.per_try_timeout.as_deref().and_then(millis).unwrap_or(250);
    let attempts = r.attempts.filter(|a| *a > 0).unwrap_or(1);
    let events: Vec<String> = match r.retry_on.as_deref().filter(|o| !o.is_empty()) {
        Some(on) => on.split(',').map(str::to_string).collect(),
        None => vec!["gateway-error".into()],
    };
    Some(if v1beta2 {
        json!({"perRetryTimeout": {"unit": "ms", "value": timeout}, "maxRetries": attempts, "httpRetryEvents": events})
    } else {
        json!({"perRetryTimeoutMillis": timeout, "maxRetries": attempts, "httpRetryEvents": events})
    })
}

/// App Mesh gateway annotations for the apex virtual service (appmesh.go:521-538).
fn gateway_annotations(c: &Canary) -> Map<String, Value> {
    let svc = service(c);
    let domains: String = svc.hosts.iter().flatten().map(|h| format!("{h},")).collect();
    let mut a = Map::new();
    if !domains.is_empty() {
        a.insert("gateway.appmesh.k8s.aws/expose".into(), json!("true"));
        a.insert("gateway.appmesh.k8s.aws/domain".into(), json!(domains));
        if let Some(t) = svc.timeout.filter(|t| !t.is_empty()) {
            a.insert("gateway.appmesh.k8s.aws/timeout".into(), json!(t));
        }
        if let Some(n) = svc.retries.and_then(|r| r.attempts).filter(|n| *n > 0) {
            a.insert("gateway.appmesh.k8s.aws/retries".into(), json!(n.to_string()));
        }
    }
    a
}

fn access_log(c: &Canary) -> Option<Value> {
    let on = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACCESS_LOG_ANNOTATION))
        .is_some_and(|v| v == "enabled");
    on.then(|| json!({"accessLog": {"file": {"path": "/dev/stdout"}}}))
}

/// The weighted targets of a split, canary first (as Flagger writes them).
fn targets(c: &Canary, v1beta2: bool, primary: i32, canary: i32) -> Value {
    let apex = c.apex_name();
    let t = |name: String, w: i32| {
        if v1beta2 {
            json!({"virtualNodeRef": {"name": name}, "weight": w})
        } else {
            json!({"virtualNodeName": name, "weight": w})
        }
    };
    json!([
        t(format!("{apex}-canary"), canary),
        t(format!("{apex}-primary"), primary)
    ])
}

/// The routes of a virtual router: the split, or the A/B pair (appmesh.go:230-300).
fn routes(c: &Canary, v1beta2: bool, router: &str, primary: i32, canary: i32, ab: bool) -> Value {
    let apex = c.apex_name();
    let prefix = route_prefix(c);
    let http_key = if v1beta2 { "httpRoute" } else { "http" };
    let http = |matched: Value, action: Value| {
        let mut h = json!({"match": matched, "action": {"weightedTargets": action}});
        if let Some(p) = retry_policy(c, v1beta2) {
            h["retryPolicy"] = p;
        }
        if v1beta2 && let Some(ms) = service(c).timeout.as_deref().and_then(millis) {
            h["timeout"] = json!({"perRequest": {"unit": "ms", "value": ms}});
        }
        h
    };
    if !ab {
        return json!([{"name": router, http_key: http(json!({"prefix": prefix}), targets(c, v1beta2, primary, canary))}]);
    }
    let only_primary = if v1beta2 {
        json!([{"virtualNodeRef": {"name": format!("{apex}-primary")}, "weight": 100}])
    } else {
        json!([{"virtualNodeName": format!("{apex}-primary"), "weight": 100}])
    };
    json!([
        {"name": format!("{apex}-a"), "priority": 10, http_key: http(json!({"prefix": prefix, "headers": headers(c)}), targets(c, v1beta2, primary, canary))},
        {"name": format!("{apex}-b"), "priority": 20, http_key: http(json!({"prefix": prefix}), only_primary)},
    ])
}

/// The split of the first route of `routes` (appmesh.go:386-423).
fn read_targets(c: &Canary, v1beta2: bool, routes: &Value, what: &str) -> Result<Routes, String> {
    let apex = c.apex_name();
    let http_key = if v1beta2 { "httpRoute" } else { "http" };
    let targets = routes[0][http_key]["action"]["weightedTargets"]
        .as_array()
        .filter(|t| t.len() == 2)
        .ok_or_else(|| format!("{what} routes {apex} not found"))?;
    let (mut primary, mut canary) = (0, 0);
    for t in targets {
        let name = if v1beta2 {
            &t["virtualNodeRef"]["name"]
        } else {
            &t["virtualNodeName"]
        };
        let w = t["weight"].as_i64().unwrap_or(0) as i32;
        if name == format!("{apex}-canary").as_str() {
            canary = w;
        }
        if name == format!("{apex}-primary").as_str() {
            primary = w;
        }
    }
    if primary == 0 && canary == 0 {
        return Err(format!(
            "{what} {apex} does not contain routes for {apex}-primary and {apex}-canary"
        ));
    }
    Ok(Routes::split(primary, canary))
}

impl AppMeshRouter {
    /// `selector_labels` are the agent's selector labels (the pod label v1beta2 nodes select by).
    pub fn new(kube: Kube, v1beta2: bool, selector_labels: Vec<String>) -> Self {
        Self {
            services: ClusterIpServices::new(kube.clone(), selector_labels),
            kube,
            v1beta2,
        }
    }

    fn ab(c: &Canary) -> bool {
        c.analysis().match_.as_ref().is_some_and(|m| !m.is_empty())
    }

    /// A virtual node spec (appmesh.go:100-142 for v1beta1, appmesh_v1beta2.go:97-156).
    pub fn node_spec(&self, c: &Canary, host: &str, pod_selector: Option<(&str, String)>) -> Value {
        let svc = service(c);
        let port = svc.port.unwrap_or(0);
        let mut spec = if self.v1beta2 {
            let container_port = match &svc.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) if *p > 0 => *p,
                _ => port,
            };
            let mut listener = json!({"portMapping": {"port": container_port, "protocol": protocol(c)}});
            if let Some(ms) = svc.timeout.as_deref().and_then(millis) {
                listener["timeout"] = json!({"http": {"perRequest": {"unit": "ms", "value": ms}}});
            }
            let mut s = json!({"listeners": [listener], "serviceDiscovery": {"dns": {"hostname": host}}});
            if let Some((label, value)) = pod_selector {
                s["podSelector"] = json!({"matchLabels": {label: value}});
            }
            s
        } else {
            json!({
                "meshName": svc.mesh_name.clone().unwrap_or_default(),
                "listeners": [{"portMapping": {"port": port, "protocol": protocol(c)}}],
                "serviceDiscovery": {"dns": {"hostName": host}},
            })
        };
        if let Some(l) = access_log(c) {
            spec["logging"] = l;
        }
        let backends: Vec<Value> = svc
            .backends
            .iter()
            .flatten()
            .map(|b| {
                if !self.v1beta2 {
                    json!({"virtualService": {"virtualServiceName": b}})
                } else if b.starts_with("arn:aws") {
                    json!({"virtualService": {"virtualServiceARN": b}})
                } else {
                    json!({"virtualService": {"virtualServiceRef": {"name": b}}})
                }
            })
            .collect();
        if !backends.is_empty() {
            spec["backends"] = Value::Array(backends);
        }
        spec
    }
}

/// Keeps the App Mesh controller's `awsName` and `meshRef` of a live v1beta2 spec in `desired`.
fn keep_controller_fields(desired: &mut Value, live: &Value) {
    for f in ["awsName", "meshRef"] {
        if let Some(v) = live.get(f) {
            desired[f] = v.clone();
        }
    }
}

impl AppMeshRouter {
    /// Creates or updates the VirtualNode `name` with `spec` and the apex's labels and
    /// annotations.
    async fn upsert_node(&self, kind: Kind, c: &Canary, name: &str, spec: Value) -> Result<(), String> {
        let (labels, annotations) = apex_metadata(c);
        self.upsert_spec(
            kind,
            c,
            name,
            owned_metadata(c, &labels, &annotations),
            Some((labels, annotations)),
            |_| spec.clone(),
        )
        .await
        .map_err(|e| format!("reconcileVirtualNode failed: {e}"))
    }

    async fn upsert_spec(
        &self,
        kind: Kind,
        c: &Canary,
        name: &str,
        metadata: Value,
        sync: Option<(Map<String, Value>, Map<String, Value>)>,
        desired: impl Fn(&Value) -> Value + Send + Sync,
    ) -> Result<(), String> {
        let ns = c.namespace();
        self.kube
            .upsert(
                kind,
                ns,
                name,
                || Ok(json!({"metadata": metadata, "spec": desired(&Value::Null)})),
                |cur| {
                    let mut want = desired(&cur["spec"]);
                    keep_controller_fields(&mut want, &cur["spec"]);
                    if without_key(&want, "weightedTargets") != without_key(&cur["spec"], "weightedTargets") {
                        cur["spec"] = want;
                    }
                    if let Some((labels, annotations)) = &sync {
                        set_metadata(cur, labels, annotations);
                    }
                    Ok(())
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{} {name} update error: {e}", kind.kind))
    }

    async fn reconcile_v1beta1(&self, c: &Canary) -> Result<(), String> {
        let svc = service(c);
        if svc.mesh_name.as_deref().unwrap_or_default().is_empty() {
            return Err(format!(
                "mesh name cannot be empty (spec.service.meshName of canary {}.{})",
                c.name(),
                c.namespace()
            ));
        }
        let (ns, apex) = (c.namespace(), c.apex_name());
        let primary_host = format!("{apex}-primary.{ns}");
        for (name, host) in [
            (apex.to_string(), primary_host.clone()),
            (format!("{apex}-primary"), primary_host.clone()),
            (format!("{apex}-canary"), format!("{apex}-canary.{ns}")),
        ] {
            let spec = self.node_spec(c, &host, None);
            self.upsert_node(APPMESH_VIRTUAL_NODE_V1BETA1, c, &name, spec)
                .await?;
        }
        for (name, canary_weight) in [(format!("{apex}.{ns}"), 0), (format!("{apex}-canary.{ns}"), 100)] {
            let router = if canary_weight > 0 {
                format!("{apex}-canary")
            } else {
                apex.to_string()
            };
            let ab = Self::ab(c) && canary_weight == 0;
            let mut metadata = json!({"ownerReferences": [owner_reference(c)]});
            let gateway = if canary_weight == 0 {
                gateway_annotations(c)
            } else {
                Map::new()
            };
            if !gateway.is_empty() {
                metadata["annotations"] = Value::Object(gateway.clone());
            }
            let spec = |live: &Value| {
                let mut routes = routes(c, false, &router, 100 - canary_weight, canary_weight, ab);
                if let Some(action) = live["routes"][0]["http"].get("action") {
                    routes[0]["http"]["action"] = action.clone();
                }
                json!({
                    "meshName": svc.mesh_name.clone().unwrap_or_default(),
                    "virtualRouter": {"name": router, "listeners": [{"portMapping": {"port": svc.port.unwrap_or(0), "protocol": protocol(c)}}]},
                    "routes": routes,
                })
            };
            let sync = (!gateway.is_empty()).then(|| (Map::new(), gateway.clone()));
            self.upsert_spec(APPMESH_VIRTUAL_SERVICE_V1BETA1, c, &name, metadata, sync, spec)
                .await
                .map_err(|e| format!("reconcileVirtualService failed: {e}"))?;
        }
        Ok(())
    }

    async fn reconcile_v1beta2(&self, c: &Canary) -> Result<(), String> {
        let (ns, apex) = (c.namespace(), c.apex_name());
        let (_, selector) = self.services.target(c).await?;
        let target = c.target_name();
        for (name, pod) in [
            (format!("{apex}-primary"), format!("{target}-primary")),
            (format!("{apex}-canary"), target.to_string()),
        ] {
            let host = format!("{name}.{ns}.svc.cluster.local.");
            let spec = self.node_spec(c, &host, Some((&selector.label, pod)));
            self.upsert_node(APPMESH_VIRTUAL_NODE, c, &name, spec).await?;
        }
        let port = {
            let svc = service(c);
            match &svc.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) if *p > 0 => *p,
                _ => svc.port.unwrap_or(0),
            }
        };
        for (name, canary_weight) in [(apex.to_string(), 0), (format!("{apex}-canary"), 100)] {
            let ab = Self::ab(c) && canary_weight == 0;
            let spec = |live: &Value| {
                let mut routes = routes(c, true, &name, 100 - canary_weight, canary_weight, ab);
                if let Some(action) = live["routes"][0]["httpRoute"].get("action") {
                    routes[0]["httpRoute"]["action"] = action.clone();
                }
                json!({
                    "listeners": [{"portMapping": {"port": port, "protocol": protocol(c)}}],
                    "routes": routes,
                })
            };
            let owner = json!({"ownerReferences": [owner_reference(c)]});
            self.upsert_spec(APPMESH_VIRTUAL_ROUTER, c, &name, owner.clone(), None, spec)
                .await
                .map_err(|e| format!("reconcileVirtualRouter failed: {e}"))?;
            // The virtual service in front of the router (appmesh_v1beta2.go:372-411).
            let mut metadata = owner;
            let gateway = if canary_weight == 0 {
                gateway_annotations(c)
            } else {
                Map::new()
            };
            if !gateway.is_empty() {
                metadata["annotations"] = Value::Object(gateway);
            }
            let vs_spec = json!({"provider": {"virtualRouter": {"virtualRouterRef": {"name": name}}}});
            self.kube
                .upsert(
                    APPMESH_VIRTUAL_SERVICE,
                    ns,
                    &name,
                    || Ok(json!({"metadata": metadata, "spec": vs_spec})),
                    |_| Ok(()),
                )
                .await
                .map_err(|e| format!("VirtualService {name} create error {e}"))?;
        }
        Ok(())
    }

    fn weights_object(&self, c: &Canary) -> (Kind, String, &'static str) {
        if self.v1beta2 {
            (APPMESH_VIRTUAL_ROUTER, c.apex_name().to_string(), "VirtualRouter")
        } else {
            (
                APPMESH_VIRTUAL_SERVICE_V1BETA1,
                format!("{}.{}", c.apex_name(), c.namespace()),
                "VirtualService",
            )
        }
    }
}

#[async_trait]
impl Router for AppMeshRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        if self.v1beta2 {
            self.reconcile_v1beta2(c).await
        } else {
            self.reconcile_v1beta1(c).await
        }
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        let (kind, name, what) = self.weights_object(c);
        let http_key = if self.v1beta2 { "httpRoute" } else { "http" };
        let action = json!({"weightedTargets": targets(c, self.v1beta2, routes.primary, routes.canary)});
        let object = RoutingObject {
            kind,
            namespace: c.namespace().to_string(),
            name: name.clone(),
            metadata: Value::Null,
            extra: Map::new(),
            sync_metadata: false,
        };
        object
            .update(&self.kube, |o| {
                if o["spec"]["routes"][0][http_key].is_null() {
                    return Err(format!("{what} {name} has no route to set the weights of"));
                }
                o["spec"]["routes"][0][http_key]["action"] = action.clone();
                Ok(())
            })
            .await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let (kind, name, what) = self.weights_object(c);
        match self.kube.get(kind, c.namespace(), &name).await {
            Ok(Some(o)) => read_targets(c, self.v1beta2, &o["spec"]["routes"], what),
            Ok(None) => Err(format!(
                "{what} {name} get query error: {} \"{name}\" not found",
                kind.qualified()
            )),
            Err(e) => Err(format!(
                "{what} {name} get query error: {}",
                crate::client::describe(&e)
            )),
        }
    }
}
