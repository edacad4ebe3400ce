//! The Kuma router (Flagger's KumaRouter, pkg/router/kuma.go): a **cluster-scoped** TrafficRoute
//! `<apex>` (kuma.io/v1alpha1) in the mesh of the canary's `kuma.io/mesh` annotation (default
//! `default`), from every service to `<apex>_<ns>_svc_<port>`, split between the primary's and
//! the canary's Kuma services. Being cluster-scoped it has no owner reference; Flagger never
//! deletes it, aviary deletes it on `revertOnDeletion` (it would route to a primary that the
//! garbage collector removes). No header matching in Flagger.

use async_trait::async_trait;
use aviary_api::Canary;
use aviary_core::ports::Routes;
use serde_json::{Map, Value, json};

use crate::client::{KUMA_TRAFFIC_ROUTE, Kube};
use crate::routing::{ObjectRouting, RoutingObject, apex_metadata};

/// The canary annotation that names the Kuma mesh.
pub const MESH_ANNOTATION: &str = "kuma.io/mesh";

/// The Kuma router.
#[derive(Debug, Clone)]
pub struct KumaRouter;

fn kuma_service(name: &str, c: &Canary) -> String {
    let port = c.spec.service.as_ref().and_then(|s| s.port).unwrap_or(0);
    format!("{name}_{}_svc_{port}", c.namespace())
}

#[async_trait]
impl ObjectRouting for KumaRouter {
    const WEIGHTS: &'static str = "/conf";

    /// The TrafficRoute spec (kuma.go:33-64, :183-198).
    fn spec(&self, c: &Canary, routes: &Routes) -> Value {
        let apex = c.apex_name();
        json!({
            "sources": [{"match": {"kuma.io/service": "*"}}],
            "destinations": [{"match": {"kuma.io/service": kuma_service(apex, c)}}],
            "conf": {"split": [
                {"weight": routes.primary, "destination": {"kuma.io/service": kuma_service(&format!("{apex}-primary"), c)}},
                {"weight": routes.canary, "destination": {"kuma.io/service": kuma_service(&format!("{apex}-canary"), c)}},
            ]},
        })
    }

    /// The primary's weight; the canary has the rest (kuma.go:138-167).
    fn read(&self, c: &Canary, tr: &Value) -> Result<Routes, String> {
        let apex = c.apex_name();
        let primary = format!("{apex}-primary");
        let weight = tr["spec"]["conf"]["split"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                s["destination"]["kuma.io/service"]
                    .as_str()
                    .and_then(|d| d.split('_').next())
                    == Some(primary.as_str())
            })
            .map(|s| s["weight"].as_i64().unwrap_or(0) as i32);
        match weight {
            Some(w) => Ok(Routes::split(w, 100 - w)),
            None => Err(format!(
                "TrafficRoute {apex} does not contain routes for {apex}-primary and {apex}-canary"
            )),
        }
    }

    fn object(&self, c: &Canary) -> RoutingObject {
        let (labels, annotations) = apex_metadata(c);
        let mut metadata = json!({});
        if !labels.is_empty() {
            metadata["labels"] = Value::Object(labels);
        }
        metadata["annotations"] = Value::Object(annotations);
        let mesh = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MESH_ANNOTATION).cloned())
            .unwrap_or_else(|| "default".into());
        let mut extra = Map::new();
        extra.insert("mesh".into(), Value::from(mesh));
        RoutingObject {
            kind: KUMA_TRAFFIC_ROUTE,
            namespace: String::new(),
            name: c.apex_name().to_string(),
            metadata,
            extra,
            sync_metadata: true,
        }
    }

    /// Flagger sets the mesh only on creation (kuma.go:82-96).
    async fn prepare(&self, kube: &Kube, c: &Canary) -> Result<RoutingObject, String> {
        let object = self.object(c);
        Ok(match object.get(kube).await? {
            Some(_) => RoutingObject {
                extra: Map::new(),
                ..object
            },
            None => object,
        })
    }

    /// Not in Flagger (kuma.go:211-213 does nothing): the cluster-scoped route is removed.
    async fn finalize(&self, kube: &Kube, c: &Canary) -> Result<(), String> {
        kube.delete(KUMA_TRAFFIC_ROUTE, "", c.apex_name())
            .await
            .map_err(|e| format!("TrafficRoute {} delete error: {e}", c.apex_name()))
    }
}
