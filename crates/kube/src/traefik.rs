//! The Traefik router (Flagger's TraefikRouter, pkg/router/traefik.go): one TraefikService
//! `<apex>` (traefik.io/v1alpha1) owned by the Canary, a weighted round robin over
//! `<apex>-primary` and, while it gets traffic, `<apex>-canary`. An IngressRoute of the user's
//! points at it (`kind: TraefikService`). Traefik has no header matching in Flagger.

use aviary_api::Canary;
use aviary_core::ports::Routes;
use serde_json::{Value, json};

use crate::client::TRAEFIK_SERVICE;
use crate::routing::{ObjectRouting, RoutingObject, primary_share};

/// The Traefik router.
#[derive(Debug, Clone)]
pub struct TraefikRouter;

impl ObjectRouting for TraefikRouter {
    const WEIGHTS: &'static str = "/weighted/services";
    const REFUSES_NO_WEIGHTS: Option<&'static str> = Some("RoutingRule");

    /// The TraefikService spec (traefik.go:45-56, :190-205): the canary only with a weight.
    fn spec(&self, c: &Canary, routes: &Routes) -> Value {
        let apex = c.apex_name();
        let port = c.spec.service.as_ref().and_then(|s| s.port).unwrap_or(0);
        let service = |name: String, weight: i32| {
            let mut s = json!({"name": name, "namespace": c.namespace(), "port": port});
            if weight != 0 {
                s["weight"] = json!(weight);
            }
            s
        };
        let mut services = vec![service(format!("{apex}-primary"), routes.primary)];
        if routes.canary > 0 {
            services.push(service(format!("{apex}-canary"), routes.canary));
        }
        json!({"weighted": {"services": services}})
    }

    /// The primary's weight; the canary has the rest (traefik.go:142-171).
    fn read(&self, c: &Canary, ts: &Value) -> Result<Routes, String> {
        let apex = c.apex_name();
        let services = ts["spec"]["weighted"]["services"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if services.is_empty() {
            return Err(format!(
                "TraefikService {apex}.{} services not found",
                c.namespace()
            ));
        }
        let primary = format!("{apex}-primary");
        Ok(primary_share(&services, |s| s["name"] == primary.as_str()))
    }

    fn object(&self, c: &Canary) -> RoutingObject {
        RoutingObject::owned(TRAEFIK_SERVICE, c, c.apex_name())
    }
}
