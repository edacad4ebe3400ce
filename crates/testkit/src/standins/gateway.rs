//! The gateway stand-in: what a Gateway API implementation writes into an HTTPRoute's status
//! when its Gateways accept the route (`Accepted` and `ResolvedRefs` per parent, at the route's
//! generation). Paused namespaces are left alone.

use std::sync::Arc;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{GATEWAY_CONTROLLER_NAME, StandIns, condition, retry_soon};

struct Ctx {
    client: kube::Client,
    routes: ApiResource,
    standins: StandIns,
}

pub(super) async fn run(client: kube::Client, standins: StandIns) {
    let routes = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let resyncs = standins.resyncs();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        routes: routes.clone(),
        standins,
    });
    Controller::new_with(
        Api::<DynamicObject>::all_with(client, &routes),
        watcher::Config::default(),
        routes,
    )
    .reconcile_all_on(resyncs)
    .run(reconcile, retry_soon::<DynamicObject, Ctx>("gateway"), ctx)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(route: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let route = serde_json::to_value(route.as_ref()).unwrap_or(Value::Null);
    let ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = route["metadata"]["name"].as_str().unwrap_or_default();
    if ctx.standins.gateway_paused(ns) || !route["metadata"]["deletionTimestamp"].is_null() {
        return Ok(Action::await_change());
    }
    let status = route_status(&route);
    if route["status"] != status {
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &ctx.routes)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

fn route_status(route: &Value) -> Value {
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(1);
    let prev_parents = route["status"]["parents"].as_array().cloned().unwrap_or_default();
    let parents: Vec<Value> = route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let prev = prev_parents
                .iter()
                .find(|x| x["parentRef"] == *p)
                .cloned()
                .unwrap_or(Value::Null);
            let mut accepted = condition(&prev, "Accepted", "True", "Accepted", "Route was valid");
            accepted["observedGeneration"] = Value::from(generation);
            let mut resolved = condition(&prev, "ResolvedRefs", "True", "ResolvedRefs", "All references resolved");
            resolved["observedGeneration"] = Value::from(generation);
            json!({"parentRef": p, "controllerName": GATEWAY_CONTROLLER_NAME, "conditions": [accepted, resolved]})
        })
        .collect();
    json!({ "parents": parents })
}
