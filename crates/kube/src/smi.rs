//! The SMI router (Flagger's SmiRouter, Smiv1alpha2Router and Smiv1alpha3Router,
//! pkg/router/smi*.go) for `linkerd` (v1alpha1), `smi:v1alpha1..3[:mesh]` and `osm` (v1alpha2):
//! one TrafficSplit `<apex>` owned by the Canary, for the apex Service (or `service.hosts[0]`),
//! with the backends `<apex>-canary` and `<apex>-primary`. v1alpha1 weights are quantities
//! (written as strings, `"90"`), later versions integers. SMI has no header matching: an A/B
//! canary gets all its traffic at once, as in Flagger.

use aviary_api::Canary;
use aviary_core::ports::Routes;
use serde_json::{Map, Value, json};

use crate::client::{
    Kind, TRAFFIC_SPLIT_V1ALPHA1, TRAFFIC_SPLIT_V1ALPHA2, TRAFFIC_SPLIT_V1ALPHA3, owner_reference,
};
use crate::routing::{ObjectRouting, RoutingObject, weight_of};

/// The TrafficSplit API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmiVersion {
    V1alpha1,
    V1alpha2,
    V1alpha3,
}

impl SmiVersion {
    pub fn kind(self) -> Kind {
        match self {
            Self::V1alpha1 => TRAFFIC_SPLIT_V1ALPHA1,
            Self::V1alpha2 => TRAFFIC_SPLIT_V1ALPHA2,
            Self::V1alpha3 => TRAFFIC_SPLIT_V1ALPHA3,
        }
    }

    /// A weight as this version stores it (smi.go:64-68: a `resource.Quantity` in v1alpha1).
    fn weight(self, w: i32) -> Value {
        match self {
            Self::V1alpha1 => Value::from(w.to_string()),
            _ => Value::from(w),
        }
    }
}

/// The SMI router.
#[derive(Debug, Clone)]
pub struct SmiRouter {
    version: SmiVersion,
    mesh: String,
}

impl SmiRouter {
    /// `mesh` is what follows the version in the provider name (`linkerd`, `osm`, `istio`, …).
    pub fn new(version: SmiVersion, mesh: impl Into<String>) -> Self {
        Self {
            version,
            mesh: mesh.into(),
        }
    }
}

impl ObjectRouting for SmiRouter {
    const WEIGHTS: &'static str = "/backends";

    /// The TrafficSplit spec for a split (smi.go:59-71, :171-180).
    fn spec(&self, c: &Canary, routes: &Routes) -> Value {
        let apex = c.apex_name();
        let host = c
            .spec
            .service
            .as_ref()
            .and_then(|s| s.hosts.as_ref())
            .and_then(|h| h.first().cloned())
            .unwrap_or_else(|| apex.to_string());
        json!({
            "service": host,
            "backends": [
                {"service": format!("{apex}-canary"), "weight": self.version.weight(routes.canary)},
                {"service": format!("{apex}-primary"), "weight": self.version.weight(routes.primary)},
            ],
        })
    }

    /// The split of a TrafficSplit (smi.go:125-156).
    fn read(&self, c: &Canary, ts: &Value) -> Result<Routes, String> {
        let apex = c.apex_name();
        let (mut primary, mut canary) = (0, 0);
        for b in ts["spec"]["backends"].as_array().into_iter().flatten() {
            let w = weight_of(&b["weight"]).unwrap_or(0);
            if b["service"] == format!("{apex}-primary").as_str() {
                primary = w;
            }
            if b["service"] == format!("{apex}-canary").as_str() {
                canary = w;
            }
        }
        if primary == 0 && canary == 0 {
            return Err(format!(
                "TrafficSplit {apex}.{} does not contain routes for {apex}-primary and {apex}-canary",
                c.namespace()
            ));
        }
        Ok(Routes::split(primary, canary))
    }

    fn object(&self, c: &Canary) -> RoutingObject {
        // Flagger writes no labels and no Flux annotations here, only Istio's gateways (smi.go:193-200).
        let mut annotations = Map::new();
        let gateways = crate::routing::service_field(c, |s| s.gateways.clone());
        if self.mesh == "istio" && !gateways.is_empty() {
            annotations.insert(
                "VirtualService.v1alpha3.networking.istio.io/spec.gateways".into(),
                Value::from(serde_json::to_string(&gateways).unwrap_or_default()),
            );
        }
        let mut metadata = json!({"ownerReferences": [owner_reference(c)]});
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        RoutingObject {
            kind: self.version.kind(),
            namespace: c.namespace().to_string(),
            name: c.apex_name().to_string(),
            metadata,
            extra: Map::new(),
            sync_metadata: false,
        }
    }
}
