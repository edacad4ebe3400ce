//! Discovery documents (`/version`, `/api`, `/apis`, …) and the OpenAPI endpoints.
//!
//! Discovery comes in both forms: aggregated (`apidiscovery.k8s.io/v2` and `v2beta1`
//! APIGroupDiscoveryList on `/api` and `/apis`, when the Accept header asks for it first) and
//! legacy (APIVersions/APIGroupList plus one APIResourceList per group version). With
//! [`Options::aggregated_discovery`](super::Options) off, every client gets the legacy form with
//! `Content-Type: application/json`, and client-go (kubectl) falls back to per-group-version
//! requests; both ways are tested with the real kubectl.
//!
//! OpenAPI: the fake publishes no schemas. kubectl 1.32 (`apply`, `patch`, `create` with the default
//! `--validate=strict`) asks `/openapi/v3` whether the server supports server-side field validation
//! and reads `/openapi/v2` for client-side validation and for strategic-merge metadata. The fake
//! answers `/openapi/v3` with an empty `paths` map (so "field validation unsupported") and
//! `/openapi/v2` with an empty document (zero-length protobuf, or `{"swagger":"2.0",…}` as JSON).
//! kubectl then validates against an empty schema set, which accepts every object, and computes
//! strategic merge patches from its compiled-in types. `kubectl explain` has nothing to show.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// `/version` for the configured Kubernetes version (`major.minor.patch`).
pub(crate) fn version(kube_version: &str) -> Value {
    let mut parts = kube_version.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("32");
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{kube_version}"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, types: &[ResourceType]) -> Value {
    let mut versions: Vec<String> = Vec::new();
    for t in types.iter().filter(|t| t.group == group) {
        for v in &t.versions {
            if !versions.contains(&v.name) {
                versions.push(v.name.clone());
            }
        }
    }
    versions.sort_by(|a, b| super::resources::compare_versions(a, b));
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(&versions[0]),
    })
}

/// Groups in discovery order (built-in groups first, then CRD groups).
fn groups(types: &[ResourceType]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        if !out.contains(&t.group) {
            out.push(t.group.clone());
        }
    }
    out
}

/// `/apis`.
pub(crate) fn group_list(types: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types).iter().map(|g| group_entry(g, types)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if any version of the group is served.
pub(crate) fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    types.iter().any(|t| t.group == group).then(|| {
        let mut g = group_entry(group, types);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// `/api/v1` or `/apis/{group}/{version}`, if that group version serves anything.
pub(crate) fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types.iter().filter(|t| t.group == group) {
        let Some(v) = t.version(version) else { continue };
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if v.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if v.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// Aggregated discovery (`apidiscovery.k8s.io/{v2,v2beta1}` APIGroupDiscoveryList) for `/api`
/// (`core`) or `/apis`.
pub(crate) fn aggregated(types: &[ResourceType], core: bool, api_version: &str) -> Value {
    let group_names: Vec<String> = if core { vec![String::new()] } else { groups(types) };
    let items: Vec<Value> = group_names
        .iter()
        .map(|g| {
            let entry = if g.is_empty() { json!({"versions": [{"version": "v1"}]}) } else { group_entry(g, types) };
            let versions: Vec<Value> = entry["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str())
                .map(|v| {
                    let resources: Vec<Value> = types
                        .iter()
                        .filter(|t| t.group == *g)
                        .filter_map(|t| t.version(v).map(|def| (t, def)))
                        .map(|(t, def)| {
                            let kind = |k: &str| json!({"group": t.group, "version": v, "kind": k});
                            let mut subresources = Vec::new();
                            if def.status_subresource {
                                subresources.push(json!({"subresource": "status", "responseKind": kind(&t.kind),
                                                         "verbs": ["get", "patch", "update"]}));
                            }
                            if def.scale.is_some() {
                                subresources.push(json!({"subresource": "scale",
                                    "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                                    "verbs": ["get", "patch", "update"]}));
                            }
                            let mut r = json!({
                                "resource": t.plural,
                                "responseKind": kind(&t.kind),
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular,
                                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                            });
                            if !t.short_names.is_empty() {
                                r["shortNames"] = json!(t.short_names);
                            }
                            if !t.categories.is_empty() {
                                r["categories"] = json!(t.categories);
                            }
                            if !subresources.is_empty() {
                                r["subresources"] = json!(subresources);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

/// `/openapi/v2` as JSON (see the module docs for why it is empty).
pub(crate) fn openapi_v2_json(kube_version: &str) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "aviary fake API server (test double, no schemas)", "version": format!("v{kube_version}")},
        "paths": {},
        "definitions": {},
    })
}

/// `/openapi/v3`: no group versions published.
pub(crate) fn openapi_v3_root() -> Value {
    json!({"paths": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_status_subresources_and_short_names() {
        let types = super::super::resources::builtins();
        let apps = resource_list(&types, "apps", "v1").unwrap();
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["deployments", "deployments/scale", "deployments/status"]);
        assert_eq!(apps["resources"][0]["shortNames"], json!(["deploy"]));
        let istio = group(&types, "networking.istio.io").unwrap();
        assert_eq!(istio["preferredVersion"]["version"], "v1");
        assert_eq!(istio["versions"].as_array().unwrap().len(), 3);
        assert!(resource_list(&types, "apps", "v2").is_none());
    }
}
