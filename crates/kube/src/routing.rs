//! What every router shares: the provider of a canary, the `kubernetes` provider's no-op router,
//! the composite router of Deployment canaries (ClusterIP Services + the mesh/gateway router),
//! the one routing object a router owns ([`RoutingObject`], and [`ObjectRouter`] for routers
//! that own nothing else), the reads of the `<apex>` route, session-affinity cookies and routes,
//! Istio-style match merging, and the annotations that keep Flux off generated objects.

use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::canary::SessionAffinity;
use aviary_api::service::{CanaryService, HttpMatchRequest};
use aviary_core::ports::{Router, Routes, SessionCookies};
use serde_json::{Map, Value};

use crate::client::{Kind, describe};
use crate::services::ClusterIpServices;

/// Annotations Flagger's routers put on the objects they generate (Services, HTTPRoutes,
/// VirtualServices, …) so that Flux does not revert them (pkg/router/util.go `filterMetadata`).
pub const FLUX_OPT_OUT: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// Adds [`FLUX_OPT_OUT`] to an annotation map (overriding the same keys).
pub fn add_flux_opt_out(annotations: &mut serde_json::Map<String, Value>) {
    for (k, v) in FLUX_OPT_OUT {
        annotations.insert(k.to_string(), Value::from(v));
    }
}

/// The traffic providers aviary implements on Kubernetes, named as in Flagger's router factory
/// (pkg/router/factory.go:82-235).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Kubernetes,
    Knative,
    /// `gatewayapi:v1` or `gatewayapi:v1beta1` (the HTTPRoute version).
    GatewayApi {
        v1beta1: bool,
    },
    Istio,
    /// `nginx`: a canary Ingress with ingress-nginx's canary annotations.
    Nginx,
    /// `skipper`: a canary Ingress with Skipper's backend weights.
    Skipper,
    /// `linkerd`, `smi:v1alpha1..3[:mesh]` and `osm`: an SMI TrafficSplit.
    Smi {
        version: crate::smi::SmiVersion,
        /// The mesh after the version (`istio` adds the gateways annotation).
        mesh: String,
    },
    Contour,
    Gloo,
    Traefik,
    /// `appmesh` (v1beta1 objects) or `appmesh:v1beta2`.
    AppMesh {
        v1beta2: bool,
    },
    Kuma,
    Apisix,
}

impl Provider {
    /// The canary's `spec.provider`, else the agent's default. Like Flagger, an unknown name
    /// (which validation rejects anyway) falls back to Istio.
    pub fn of(c: &Canary, default: &str) -> Self {
        let p = c
            .spec
            .provider
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(default);
        Self::named(p).unwrap_or_else(|| {
            tracing::warn!(canary = %c.key(), "unknown provider {p:?}; using istio as Flagger does");
            Self::Istio
        })
    }

    /// The provider called `p`, in the order of Flagger's factory (prefixes included), or `None`.
    pub fn named(p: &str) -> Option<Self> {
        use crate::smi::SmiVersion;
        let smi = |version, rest: &str| Self::Smi {
            version,
            mesh: rest.trim_start_matches(':').to_string(),
        };
        Some(match p {
            p if p.starts_with("appmesh:v1beta2") => Self::AppMesh { v1beta2: true },
            "appmesh" => Self::AppMesh { v1beta2: false },
            "linkerd" => smi(SmiVersion::V1alpha1, "linkerd"),
            "istio" => Self::Istio,
            p if p.starts_with("smi:v1alpha1") => smi(SmiVersion::V1alpha1, &p["smi:v1alpha1".len()..]),
            p if p.starts_with("smi:v1alpha2") => smi(SmiVersion::V1alpha2, &p["smi:v1alpha2".len()..]),
            p if p.starts_with("smi:v1alpha3") => smi(SmiVersion::V1alpha3, &p["smi:v1alpha3".len()..]),
            "contour" => Self::Contour,
            "knative" => Self::Knative,
            p if p.starts_with("gloo") => Self::Gloo,
            "nginx" => Self::Nginx,
            "skipper" => Self::Skipper,
            "traefik" => Self::Traefik,
            "apisix" => Self::Apisix,
            "osm" => smi(SmiVersion::V1alpha2, "osm"),
            "kuma" => Self::Kuma,
            p if p.starts_with("gatewayapi:v1beta1") => Self::GatewayApi { v1beta1: true },
            p if p.starts_with("gatewayapi:v1") => Self::GatewayApi { v1beta1: false },
            "kubernetes" => Self::Kubernetes,
            _ => return None,
        })
    }
}

/// Flagger's `filterMetadata` (pkg/router/util.go:31-39): the annotations of a generated
/// routing object, plus the two that stop Flux from reverting what the router writes.
pub fn flux_annotations(mut annotations: Map<String, Value>) -> Map<String, Value> {
    add_flux_opt_out(&mut annotations);
    annotations
}

/// A field of the canary's `spec.service` (its default when unset).
pub fn service_field<T: Default>(c: &Canary, field: impl FnOnce(&CanaryService) -> Option<T>) -> T {
    c.spec.service.as_deref().and_then(field).unwrap_or_default()
}

/// The labels and annotations (with [`flux_annotations`]) of `spec.service.apex`, which Flagger
/// puts on the routing objects it generates.
pub fn apex_metadata(c: &Canary) -> (Map<String, Value>, Map<String, Value>) {
    let apex = service_field(c, |s| s.apex.clone());
    let to_map = |m: Option<std::collections::BTreeMap<String, String>>| -> Map<String, Value> {
        m.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect()
    };
    (to_map(apex.labels), flux_annotations(to_map(apex.annotations)))
}

/// The canary's `<apex>` object of `kind` (its VirtualService, its HTTPRoute), if any; Flagger's
/// `<Kind> <apex>.<ns> query error: …` when it cannot be read.
pub async fn apex_route(kube: &crate::Kube, kind: Kind, c: &Canary) -> Result<Option<Value>, String> {
    let (ns, apex) = (c.namespace(), c.apex_name());
    kube.get(kind, ns, apex)
        .await
        .map_err(|e| format!("{} {apex}.{ns} query error: {}", kind.kind, describe(&e)))
}

/// The canary's `<apex>` object of `kind`, or Flagger's `<Kind> <apex>.<ns> query error: …`.
pub async fn require_apex_route(kube: &crate::Kube, kind: Kind, c: &Canary) -> Result<Value, String> {
    let (ns, apex) = (c.namespace(), c.apex_name());
    kube.require(kind, ns, apex, &format!("{} {apex}.{ns} query error", kind.kind))
        .await
}

/// The split a reconcile of the `<apex>` object writes: the live weights and mirroring, as `read`
/// finds them (100/0 for a new object), and the cookies of the canary's status. Changing those
/// is for set_routes.
pub async fn kept_routes(
    kube: &crate::Kube,
    kind: Kind,
    c: &Canary,
    read: impl Fn(&Value, &Canary) -> Option<Routes>,
) -> Result<Routes, String> {
    let live = apex_route(kube, kind, c).await?;
    let mut routes = live
        .as_ref()
        .and_then(|v| read(v, c))
        .unwrap_or_else(|| Routes::split(100, 0));
    routes.session = status_cookies(c);
    Ok(routes)
}

/// `metadata` of a routing object owned by the canary.
pub fn owned_metadata(c: &Canary, labels: &Map<String, Value>, annotations: &Map<String, Value>) -> Value {
    let mut m = serde_json::json!({"ownerReferences": [crate::client::owner_reference(c)]});
    if !labels.is_empty() {
        m["labels"] = Value::Object(labels.clone());
    }
    if !annotations.is_empty() {
        m["annotations"] = Value::Object(annotations.clone());
    }
    m
}

/// Sets `metadata.labels` and `metadata.annotations` to exactly these (empty ones removed).
pub fn set_metadata(obj: &mut Value, labels: &Map<String, Value>, annotations: &Map<String, Value>) {
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if map.is_empty() {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove(key);
            }
        } else {
            obj["metadata"][key] = Value::Object(map.clone());
        }
    }
}

/// `v` without any `key` field, at any depth (Flagger compares specs ignoring the weights).
pub fn without_key(v: &Value, key: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != key)
                .map(|(k, v)| (k.clone(), without_key(v, key)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| without_key(v, key)).collect()),
        other => other.clone(),
    }
}

/// A weight as Flagger reads it: an integer, or a quantity string (`"50"`).
pub fn weight_of(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => n.as_i64().map(|w| w as i32),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|w| w as i32),
        Value::Null => Some(0),
        _ => None,
    }
}

/// Flagger's NopRouter for the `kubernetes` provider: no traffic switch (blue/green through the
/// `-primary`/`-canary` Services). The split it reports follows the iterations, as Flagger's does.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopRouter;

#[async_trait]
impl Router for NopRouter {
    async fn reconcile(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn set_routes(&self, _c: &Canary, _routes: &Routes) -> Result<(), String> {
        Ok(())
    }
    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        if c.status.as_ref().is_some_and(|s| s.iterations > 0) {
            Ok(Routes::split(0, 100))
        } else {
            Ok(Routes::split(100, 0))
        }
    }
}

/// A provider that does not fit the target (Knative's router for a Deployment, a mesh for a
/// Knative Service): every call says so.
#[derive(Debug, Clone)]
pub struct UnsupportedRouter(pub String);

impl UnsupportedRouter {
    fn err(&self, c: &Canary) -> String {
        format!(
            "provider {:?} (spec.provider of canary {}.{}) does not fit its target: a Knative Service \
             needs provider knative, and knative routes only Knative Services",
            self.0,
            c.name(),
            c.namespace()
        )
    }
}

#[async_trait]
impl Router for UnsupportedRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        Err(self.err(c))
    }
    async fn set_routes(&self, c: &Canary, _routes: &Routes) -> Result<(), String> {
        Err(self.err(c))
    }
    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        Err(self.err(c))
    }
}

/// The router of a Deployment canary: the ClusterIP Services first, then the traffic provider.
pub struct DeploymentRouter {
    pub services: ClusterIpServices,
    pub traffic: Arc<dyn Router>,
}

#[async_trait]
impl Router for DeploymentRouter {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        self.services.reconcile(c).await?;
        self.traffic.reconcile(c).await
    }
    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        self.traffic.set_routes(c, routes).await
    }
    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        self.traffic.get_routes(c).await
    }
    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        self.services.finalize(c).await?;
        self.traffic.finalize(c).await
    }
}

/// The cookies of the canary's status (what the routing objects must reflect on reconcile);
/// `None` before any was minted, so that a new route is the plain weighted one, as Flagger's
/// Reconcile creates it.
pub fn status_cookies(c: &Canary) -> Option<SessionCookies> {
    c.analysis().session_affinity.as_ref()?;
    let s = c.status.clone().unwrap_or_default();
    let some = |v: String| Some(v).filter(|v| !v.is_empty());
    let cookies = SessionCookies {
        canary: some(s.session_affinity_cookie),
        primary: some(s.primary_session_affinity_cookie),
        previous: some(s.previous_session_affinity_cookie),
    };
    (cookies != SessionCookies::default()).then_some(cookies)
}

/// A `Set-Cookie` value: `name=value; Max-Age=N` plus the canary's cookie attributes, in the
/// order Flagger's `SessionAffinity.BuildCookie` writes them.
pub fn set_cookie(cookie: &str, sa: &SessionAffinity, max_age: i64) -> String {
    let mut out = format!("{cookie}; Max-Age={max_age}");
    if let Some(d) = sa.domain.as_deref().filter(|d| !d.is_empty()) {
        out.push_str(&format!("; Domain={d}"));
    }
    if sa.http_only == Some(true) {
        out.push_str("; HttpOnly");
    }
    if sa.partitioned == Some(true) {
        out.push_str("; Partitioned");
    }
    if let Some(p) = sa.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("; Path={p}"));
    }
    if let Some(s) = sa.same_site.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("; SameSite={s}"));
    }
    if sa.secure == Some(true) {
        out.push_str("; Secure");
    }
    out
}

/// The `Set-Cookie` value that expires a retired cookie (no attributes, as Flagger writes it).
pub fn expire_cookie(cookie: &str) -> String {
    format!("{cookie}; Max-Age=-1")
}

/// The regex matching a `Cookie` header that carries `cookie` (`name=value`), as Flagger
/// builds it: `.*name.*value.*`, unescaped.
pub fn cookie_regex(cookie: &str) -> String {
    let mut parts = cookie.split('=');
    let name = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();
    format!(".*{name}.*{value}.*")
}

/// Escapes regex metacharacters.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Istio's A/B match (pkg/router/istio.go `mergeMatchConditions`): every analysis match
/// combined with every service match, the service match with the analysis match's `headers`
/// and `sourceLabels` (when set) in place of its own; the analysis matches alone when the
/// service has none.
pub fn merge_matches(analysis: &[HttpMatchRequest], base: &[HttpMatchRequest]) -> Vec<HttpMatchRequest> {
    cross_matches(analysis, base, |a, b| {
        let mut merged = b.clone();
        if a.headers.is_some() {
            merged.headers = a.headers.clone();
        }
        if a.source_labels.is_some() {
            merged.source_labels = a.source_labels.clone();
        }
        merged
    })
}

/// The shape of Flagger's `mergeMatchConditions`: `merge` of every analysis match with every
/// base match, in that order; the analysis matches alone when there are no base matches.
pub fn cross_matches<T: Clone>(analysis: &[T], base: &[T], merge: impl Fn(&T, &T) -> T) -> Vec<T> {
    if base.is_empty() {
        return analysis.to_vec();
    }
    let merge = &merge;
    analysis
        .iter()
        .flat_map(|a| base.iter().map(move |b| merge(a, b)))
        .collect()
}

/// How a router writes session-affinity routes in its own route objects (an Istio HTTP route, a
/// Gateway API rule): see [`session_routes`].
pub trait SessionRoutes {
    /// A copy of the weighted route `route` that matches requests carrying `cookie`
    /// (`name=value`).
    fn matching(&self, route: &Value, cookie: &str) -> Value;
    /// Sets the primary's and the canary's backend of `route`: a weight and, optionally, a
    /// `Set-Cookie` value each.
    fn backends(&self, route: &mut Value, primary: (i32, Option<String>), canary: (i32, Option<String>));
    /// Makes `route` answer with the `Set-Cookie` value `expiry`.
    fn expire(&self, route: &mut Value, expiry: String);
}

/// Flagger's `getSessionAffinityRouteRules`: the `weighted` route alone without session affinity
/// in effect; while the canary gets traffic, sticky copies of it first (requests with the canary
/// cookie to the canary, `primary 0, canary 100`, and with a primary cookie name, those with the
/// primary cookie to the primary, `100, 0`), its backends setting the cookies; at weight 0, a
/// copy matching the retired cookie expires it.
pub fn session_routes(c: &Canary, routes: &Routes, weighted: Value, form: &impl SessionRoutes) -> Vec<Value> {
    let (Some(sa), Some(cookies)) = (c.analysis().session_affinity.as_deref(), &routes.session) else {
        return vec![weighted];
    };
    if routes.canary == 0 {
        let sticky = match &cookies.previous {
            Some(old) => {
                let mut sticky = form.matching(&weighted, old);
                form.expire(&mut sticky, expire_cookie(old));
                sticky
            }
            None => weighted.clone(),
        };
        return vec![sticky, weighted];
    }
    let primary_named = sa.primary_cookie_name.as_deref().is_some_and(|n| !n.is_empty());
    let cookie = cookies.canary.clone().unwrap_or_default();
    let pc = cookies.primary.clone().unwrap_or_default();
    let sticky = |cookie: &str, (p, k): (i32, i32)| {
        let mut r = form.matching(&weighted, cookie);
        form.backends(&mut r, (p, None), (k, None));
        r
    };
    let mut out = vec![sticky(&cookie, (0, 100))];
    if primary_named {
        out.push(sticky(&pc, (100, 0)));
    }
    let max_age = sa.max_age.unwrap_or(aviary_api::defaults::DEFAULT_COOKIE_MAX_AGE);
    let interval = c.analysis_interval(std::time::Duration::ZERO).as_secs() as i64;
    let primary_cookie = primary_named.then(|| set_cookie(&pc, sa, interval));
    let mut weighted = weighted;
    form.backends(
        &mut weighted,
        (routes.primary, primary_cookie),
        (routes.canary, Some(set_cookie(&cookie, sa, max_age))),
    );
    out.push(weighted);
    out
}

/// The one routing object a router owns (an HTTPProxy, a TrafficSplit, …) whose spec is a
/// function of the split: created at 100/0, its spec rewritten when the canary changes (the live
/// weights kept), its weights set and read back.
#[derive(Debug, Clone)]
pub struct RoutingObject {
    pub kind: crate::client::Kind,
    /// Empty for a cluster-scoped kind.
    pub namespace: String,
    pub name: String,
    /// `metadata` on creation (labels, annotations, owner references).
    pub metadata: Value,
    /// Top-level fields besides `spec` (Kuma's `mesh`).
    pub extra: Map<String, Value>,
    /// Keep `metadata.labels` and `metadata.annotations` equal to those of [`Self::metadata`].
    pub sync_metadata: bool,
}

impl RoutingObject {
    /// `kind` `name` in the canary's namespace, owned by the canary, labelled and annotated from
    /// `spec.service.apex` (Flagger's newMetadata + filterMetadata).
    pub fn owned(kind: crate::client::Kind, c: &Canary, name: impl Into<String>) -> Self {
        let (labels, annotations) = apex_metadata(c);
        Self {
            kind,
            namespace: c.namespace().to_string(),
            name: name.into(),
            metadata: owned_metadata(c, &labels, &annotations),
            extra: Map::new(),
            sync_metadata: true,
        }
    }

    fn shown(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind.kind, self.name)
        } else {
            format!("{} {}.{}", self.kind.kind, self.name, self.namespace)
        }
    }

    /// The live object, if any.
    pub async fn get(&self, kube: &crate::Kube) -> Result<Option<Value>, String> {
        kube.get(self.kind, &self.namespace, &self.name)
            .await
            .map_err(|e| {
                format!(
                    "{} get query error: {}",
                    self.shown(),
                    crate::client::describe(&e)
                )
            })
    }

    /// The live object, or an error naming it.
    pub async fn require(&self, kube: &crate::Kube) -> Result<Value, String> {
        self.get(kube).await?.ok_or_else(|| {
            format!(
                "{} get query error: {} \"{}\" not found",
                self.shown(),
                self.kind.qualified(),
                self.name
            )
        })
    }

    /// Creates the object with `spec(100/0)`, or rewrites its spec with the live split (read by
    /// `read`, 100/0 when unreadable) when anything but the weights differs. Flagger resets the
    /// weights on such a rewrite; aviary keeps them (as its istio router does).
    pub async fn reconcile(
        &self,
        kube: &crate::Kube,
        spec: impl Fn(&Routes) -> Value + Send + Sync,
        read: impl Fn(&Value) -> Option<Routes> + Send + Sync,
    ) -> Result<(), String> {
        let create = || {
            let mut obj =
                serde_json::json!({"metadata": self.metadata, "spec": spec(&Routes::split(100, 0))});
            for (k, v) in &self.extra {
                obj[k.as_str()] = v.clone();
            }
            Ok(obj)
        };
        let labels = self.metadata["labels"].as_object().cloned().unwrap_or_default();
        let annotations = self.metadata["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        kube.upsert(self.kind, &self.namespace, &self.name, create, |cur| {
            let live = read(cur).unwrap_or_else(|| Routes::split(100, 0));
            let desired = spec(&live);
            // Equality as in Flagger's cmp.Diff: a field removed from the canary is removed here.
            if without_key(&desired, "weight") != without_key(&cur["spec"], "weight") {
                cur["spec"] = desired;
            }
            for (k, v) in &self.extra {
                cur[k.as_str()] = v.clone();
            }
            if self.sync_metadata {
                set_metadata(cur, &labels, &annotations);
            }
            Ok(())
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("{} update error: {e}", self.shown()))
    }

    /// Edits the live object with `f` (an error when it is missing).
    pub async fn update(
        &self,
        kube: &crate::Kube,
        f: impl FnMut(&mut Value) -> Result<(), String> + Send,
    ) -> Result<(), String> {
        match kube.modify(self.kind, &self.namespace, &self.name, f).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.require(kube).await.map(|_| ()),
            Err(e) => Err(format!("{} update error: {e}", self.shown())),
        }
    }

    /// Copies the part of `spec` at `pointer` (a JSON pointer below `spec`, `""` for all of it)
    /// into the live object, leaving the rest of its spec alone: a set_routes write.
    pub async fn set_spec(&self, kube: &crate::Kube, spec: &Value, pointer: &str) -> Result<(), String> {
        let part = spec.pointer(pointer).cloned().unwrap_or(Value::Null);
        self.update(kube, |o| {
            let mut at = &mut o["spec"];
            for key in pointer.split('/').skip(1) {
                at = &mut at[key];
            }
            *at = part.clone();
            Ok(())
        })
        .await
    }

    /// The split `read` finds in the live object.
    pub async fn routes(
        &self,
        kube: &crate::Kube,
        read: impl Fn(&Value) -> Result<Routes, String>,
    ) -> Result<Routes, String> {
        read(&self.require(kube).await?)
    }
}

/// The name a canary's object reference (`spec.ingressRef`, `spec.routeRef`) gives, or Flagger's
/// `<selector> is empty` with the field and the object it should name.
pub(crate) fn referenced_name<'a>(
    c: &Canary,
    r: Option<&'a aviary_api::canary::TypedRef>,
    selector: &str,
    field: &str,
    object: &str,
) -> Result<&'a str, String> {
    r.and_then(|r| r.name.as_deref())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "{selector} is empty (spec.{field}.name of canary {}.{} names {object})",
                c.name(),
                c.namespace()
            )
        })
}

/// A router whose routing is one [`RoutingObject`] with a spec made from the split (Contour's
/// HTTPProxy, SMI's TrafficSplit, Gloo's RouteTable, Traefik's TraefikService, Kuma's
/// TrafficRoute); [`ObjectRouter`] makes it a [`Router`].
#[async_trait]
pub trait ObjectRouting: Send + Sync {
    /// The part of the spec a set_routes writes: a JSON pointer below `spec`, `""` for all of it.
    const WEIGHTS: &'static str = "";
    /// The kind Flagger names when it refuses a split of 0/0 (see [`require_weights`]); `None`
    /// for routers that write it.
    const REFUSES_NO_WEIGHTS: Option<&'static str> = None;

    /// The routing object of the canary.
    fn object(&self, c: &Canary) -> RoutingObject;
    /// Its spec for a split.
    fn spec(&self, c: &Canary, routes: &Routes) -> Value;
    /// The split of the live object.
    fn read(&self, c: &Canary, obj: &Value) -> Result<Routes, String>;

    /// The object a reconcile writes, after whatever it needs first (Gloo's Upstreams).
    async fn prepare(&self, _kube: &crate::Kube, c: &Canary) -> Result<RoutingObject, String> {
        Ok(self.object(c))
    }

    /// Reverts routing on deletion.
    async fn finalize(&self, _kube: &crate::Kube, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
}

/// The [`Router`] of an [`ObjectRouting`]: reconcile creates or rewrites the object (keeping the
/// live weights), set_routes writes the weights, get_routes reads them back.
#[derive(Debug, Clone)]
pub struct ObjectRouter<T> {
    kube: crate::Kube,
    routing: T,
}

impl<T> ObjectRouter<T> {
    pub fn new(kube: crate::Kube, routing: T) -> Self {
        Self { kube, routing }
    }
}

#[async_trait]
impl<T: ObjectRouting> Router for ObjectRouter<T> {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        let r = &self.routing;
        let object = r.prepare(&self.kube, c).await?;
        object
            .reconcile(&self.kube, |s| r.spec(c, s), |o| r.read(c, o).ok())
            .await
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        let r = &self.routing;
        if let Some(kind) = T::REFUSES_NO_WEIGHTS {
            require_weights(kind, c, routes)?;
        }
        r.object(c)
            .set_spec(&self.kube, &r.spec(c, routes), T::WEIGHTS)
            .await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let r = &self.routing;
        r.object(c).routes(&self.kube, |o| r.read(c, o)).await
    }

    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        self.routing.finalize(&self.kube, c).await
    }
}

/// The split of a route whose primary backend is the one `is_primary` picks: its weight (0 when
/// missing or unset), the rest to the canary (Flagger's read for Contour, Gloo, Traefik, APISIX).
pub fn primary_share<'a>(
    backends: impl IntoIterator<Item = &'a Value>,
    is_primary: impl Fn(&Value) -> bool,
) -> Routes {
    let primary = backends
        .into_iter()
        .find(|b| is_primary(b))
        .map_or(0, |b| b["weight"].as_i64().unwrap_or(0) as i32);
    Routes::split(primary, 100 - primary)
}

/// Flagger's refusal to write a route that sends nothing anywhere (all weights 0), with the
/// router's kind in the text: `<Kind> <apex>.<namespace> update failed: no valid weights`.
pub(crate) fn require_weights(kind: &str, c: &Canary, routes: &Routes) -> Result<(), String> {
    if routes.primary == 0 && routes.canary == 0 {
        return Err(format!(
            "{kind} {}.{} update failed: no valid weights",
            c.apex_name(),
            c.namespace()
        ));
    }
    Ok(())
}

/// A routers' unit-test analysis: steps of 10 with session affinity through the cookie `name`.
#[cfg(test)]
pub(crate) fn sticky_analysis(name: &str) -> aviary_api::canary::CanaryAnalysis {
    aviary_api::canary::CanaryAnalysis {
        step_weight: Some(10),
        session_affinity: Some(Box::new(SessionAffinity {
            cookie_name: Some(name.into()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `routes` with the session cookie `cookie` (`name=value`): the one pinning clients to the
/// canary, or with `retired` the one to expire.
#[cfg(test)]
pub(crate) fn with_cookie(routes: Routes, cookie: &str, retired: bool) -> Routes {
    let mut cookies = SessionCookies::default();
    let slot = if retired {
        &mut cookies.previous
    } else {
        &mut cookies.canary
    };
    *slot = Some(cookie.to_string());
    Routes {
        session: Some(cookies),
        ..routes
    }
}

/// The routers' unit-test canary: `test/podinfo` of Deployment `podinfo`, with `provider`,
/// `analysis` and `service` on port 9898, defaulted.
#[cfg(test)]
pub(crate) fn podinfo_canary(
    provider: Option<&str>,
    analysis: aviary_api::canary::CanaryAnalysis,
    service: CanaryService,
) -> Canary {
    let mut c = Canary::new("podinfo", Default::default());
    c.metadata.namespace = Some("test".into());
    c.spec.provider = provider.map(str::to_string);
    c.spec.target_ref = Some(aviary_api::canary::TargetRef {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some("podinfo".into()),
    });
    c.spec.service = Some(Box::new(CanaryService {
        port: Some(9898),
        ..service
    }));
    c.spec.analysis = Some(analysis);
    aviary_api::defaults::defaulted(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_api::service::StringMatch;

    #[test]
    fn providers() {
        use crate::smi::SmiVersion;
        let smi = |version, mesh: &str| Provider::Smi {
            version,
            mesh: mesh.into(),
        };
        let mut c = Canary::new("x", Default::default());
        assert_eq!(Provider::of(&c, "istio"), Provider::Istio);
        for (name, provider) in [
            ("gatewayapi:v1", Provider::GatewayApi { v1beta1: false }),
            ("linkerd", smi(SmiVersion::V1alpha1, "linkerd")),
            ("smi:v1alpha3:istio", smi(SmiVersion::V1alpha3, "istio")),
            ("osm", smi(SmiVersion::V1alpha2, "osm")),
            ("appmesh:v1beta2", Provider::AppMesh { v1beta2: true }),
            ("gatewayapi:v1beta1", Provider::GatewayApi { v1beta1: true }),
            ("mystery", Provider::Istio),
            ("kubernetes", Provider::Kubernetes),
        ] {
            c.spec.provider = Some(name.into());
            assert_eq!(Provider::of(&c, "istio"), provider, "{name}");
        }
        for p in aviary_api::canary::FLAGGER_PROVIDERS {
            assert!(Provider::named(p).is_some(), "{p}");
        }
    }

    #[test]
    fn cookies() {
        let sa = SessionAffinity {
            cookie_name: Some("flagger-cookie".into()),
            path: Some("/".into()),
            http_only: Some(true),
            same_site: Some("Strict".into()),
            ..Default::default()
        };
        assert_eq!(
            set_cookie("flagger-cookie=abc", &sa, 86400),
            "flagger-cookie=abc; Max-Age=86400; HttpOnly; Path=/; SameSite=Strict"
        );
        assert_eq!(cookie_regex("a.b=c"), ".*a.b.*c.*");
        assert_eq!(expire_cookie("a=b"), "a=b; Max-Age=-1");
    }

    #[test]
    fn ab_matches_are_a_cross_product() {
        let header = |v: &str| HttpMatchRequest::header("x-canary", StringMatch::exact(v));
        let uri = HttpMatchRequest {
            uri: Some(StringMatch::prefix("/api")),
            ..Default::default()
        };
        let merged = merge_matches(&[header("a"), header("b")], std::slice::from_ref(&uri));
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].uri, uri.uri);
        assert!(merged[1].headers.as_ref().unwrap()["x-canary"].exact.as_deref() == Some("b"));
        assert_eq!(merge_matches(&[header("a")], &[]), vec![header("a")]);
        // Only headers and sourceLabels come from the analysis match.
        let mut both = header("c");
        both.method = Some(StringMatch::exact("GET"));
        let merged = merge_matches(&[both], std::slice::from_ref(&uri));
        assert_eq!(merged[0].method, None);
        assert_eq!(merged[0].uri, uri.uri);
    }
}
