//! What every router shares: the provider of a canary, the `kubernetes` provider's no-op router,
//! the composite router of Deployment canaries (ClusterIP Services + the mesh/gateway router),
//! session-affinity cookies, Istio-style match merging, and the annotations that keep Flux off
//! generated objects.

use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_api::canary::SessionAffinity;
use aviary_api::service::HttpMatchRequest;
use aviary_core::ports::{Router, Routes, SessionCookies};
use serde_json::Value;

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

/// `annotations` (e.g. `service.apex.annotations`) with [`FLUX_OPT_OUT`].
pub fn generated_annotations<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> serde_json::Map<String, Value> {
    let mut m: serde_json::Map<String, Value> = annotations
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    add_flux_opt_out(&mut m);
    m
}

/// The traffic providers aviary implements on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Kubernetes,
    Knative,
    /// `gatewayapi:v1` or `gatewayapi:v1beta1` (the HTTPRoute version).
    GatewayApi {
        v1beta1: bool,
    },
    Istio,
    /// A Flagger provider aviary does not implement.
    Unsupported(String),
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
        match p {
            "kubernetes" => Self::Kubernetes,
            "knative" => Self::Knative,
            "gatewayapi:v1" => Self::GatewayApi { v1beta1: false },
            "gatewayapi:v1beta1" => Self::GatewayApi { v1beta1: true },
            "istio" => Self::Istio,
            p if aviary_api::canary::FLAGGER_PROVIDERS.contains(&p) => Self::Unsupported(p.to_string()),
            p if p.starts_with("gatewayapi") || p.starts_with("appmesh") || p.starts_with("smi") => {
                Self::Unsupported(p.to_string())
            }
            other => {
                tracing::warn!(canary = %c.key(), "unknown provider {other:?}; using istio as Flagger does");
                Self::Istio
            }
        }
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

/// A provider aviary does not implement: every call says so.
#[derive(Debug, Clone)]
pub struct UnsupportedRouter(pub String);

impl UnsupportedRouter {
    fn err(&self, c: &Canary) -> String {
        format!(
            "provider {:?} (spec.provider of canary {}.{}) is not supported by aviary; use istio, \
             gatewayapi:v1, knative or kubernetes",
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
    if base.is_empty() {
        return analysis.to_vec();
    }
    let mut out = Vec::new();
    for a in analysis {
        for b in base {
            let mut merged = b.clone();
            if a.headers.is_some() {
                merged.headers = a.headers.clone();
            }
            if a.source_labels.is_some() {
                merged.source_labels = a.source_labels.clone();
            }
            out.push(merged);
        }
    }
    out
}

/// The session-affinity settings and cookies in effect for a split, or `None`.
pub fn session(c: &Canary, routes: &Routes) -> Option<(SessionAffinity, SessionCookies)> {
    let sa = c.analysis().session_affinity.clone()?;
    let cookies = routes.session.clone()?;
    Some((*sa, cookies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_api::service::StringMatch;

    #[test]
    fn providers() {
        let mut c = Canary::new("x", Default::default());
        assert_eq!(Provider::of(&c, "istio"), Provider::Istio);
        c.spec.provider = Some("gatewayapi:v1".into());
        assert_eq!(Provider::of(&c, "istio"), Provider::GatewayApi { v1beta1: false });
        c.spec.provider = Some("linkerd".into());
        assert_eq!(Provider::of(&c, "istio"), Provider::Unsupported("linkerd".into()));
        c.spec.provider = Some("kubernetes".into());
        assert_eq!(Provider::of(&c, "istio"), Provider::Kubernetes);
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
        let header = |v: &str| HttpMatchRequest {
            headers: Some(
                [(
                    "x-canary".to_string(),
                    StringMatch {
                        exact: Some(v.into()),
                        ..Default::default()
                    },
                )]
                .into(),
            ),
            ..Default::default()
        };
        let uri = HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some("/api".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = merge_matches(&[header("a"), header("b")], std::slice::from_ref(&uri));
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].uri, uri.uri);
        assert!(merged[1].headers.as_ref().unwrap()["x-canary"].exact.as_deref() == Some("b"));
        assert_eq!(merge_matches(&[header("a")], &[]), vec![header("a")]);
        // Only headers and sourceLabels come from the analysis match.
        let mut both = header("c");
        both.method = Some(StringMatch {
            exact: Some("GET".into()),
            ..Default::default()
        });
        let merged = merge_matches(&[both], std::slice::from_ref(&uri));
        assert_eq!(merged[0].method, None);
        assert_eq!(merged[0].uri, uri.uri);
    }
}
