//! The Knative Serving stand-in: what Knative's controller does that Flagger reads. A new
//! Service template makes Revision `NAME-0000N` (owned by the Service, with Knative's labels),
//! which becomes Ready (or stays `Ready=Unknown` when annotated never-ready), and the Service's
//! status follows: latest created/ready revision, `observedGeneration`, conditions, URL, and
//! `status.traffic` resolved from `spec.traffic` (`latestRevision: true` → the latest ready
//! revision; a missing named revision → `RoutesReady=False RevisionMissing`).

use std::sync::Arc;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Map, Value, json};

use super::{NEVER_READY_ANNOTATION, condition, retry_soon};

const API_VERSION: &str = "serving.knative.dev/v1";
const SERVICE_LABEL: &str = "serving.knative.dev/service";
const GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";

struct Ctx {
    client: kube::Client,
    revisions: ApiResource,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("serving.knative.dev", "v1", kind), plural)
}

pub(super) async fn run(client: kube::Client) {
    let services = resource("Service", "services");
    let revisions = resource("Revision", "revisions");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        revisions: revisions.clone(),
    });
    Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &services),
        watcher::Config::default(),
        services,
    )
    .owns_with(
        Api::<DynamicObject>::all_with(client, &revisions),
        revisions,
        watcher::Config::default(),
    )
    .run(reconcile, retry_soon::<DynamicObject, Ctx>("knative"), ctx)
    .for_each(|_| async {})
    .await;
}

fn value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn never_ready(obj: &Value) -> bool {
    obj["metadata"]["annotations"][NEVER_READY_ANNOTATION].as_str() == Some("true")
}

async fn reconcile(svc: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let svc = value(&svc);
    if !svc["metadata"]["deletionTimestamp"].is_null() {
        return Ok(Action::await_change());
    }
    let ns = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let uid = svc["metadata"]["uid"].clone();
    let revisions_api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &ctx.revisions);
    let mut revisions: Vec<Value> = revisions_api
        .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")))
        .await?
        .items
        .iter()
        .map(value)
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .collect();
    revisions.sort_by_key(config_generation);

    // A new template: its revision first (its events bring us back).
    let template = &svc["spec"]["template"];
    if !revisions.last().is_some_and(|r| revision_matches(r, template)) {
        let n = revisions.iter().map(config_generation).max().unwrap_or(0) + 1;
        let rev_name = template["metadata"]["name"]
            .as_str()
            .map_or_else(|| format!("{name}-{n:05}"), str::to_string);
        if !revisions
            .iter()
            .any(|r| r["metadata"]["name"] == rev_name.as_str())
        {
            let rev: DynamicObject =
                serde_json::from_value(new_revision(&svc, &rev_name, n)).map_err(kube::Error::SerdeError)?;
            revisions_api.create(&PostParams::default(), &rev).await?;
            return Ok(Action::await_change());
        }
    }

    // Revisions without a Ready condition: deploying, then ready (unless never-ready).
    for rev in revisions.iter().filter(|r| ready_status(r).is_none()) {
        let rev_name = rev["metadata"]["name"].as_str().unwrap_or_default();
        revisions_api
            .patch_status(
                rev_name,
                &PatchParams::default(),
                &Patch::Merge(revision_status(rev)),
            )
            .await?;
    }
    if revisions.iter().any(|r| ready_status(r).is_none()) {
        return Ok(Action::await_change());
    }

    let generation = svc["metadata"]["generation"].as_i64().unwrap_or(1);
    let status = service_status(&svc, &revisions, generation);
    if status != svc["status"] {
        let services =
            Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &resource("Service", "services"));
        services
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

fn revision_status(rev: &Value) -> Value {
    let prev = &rev["status"];
    let conditions = if never_ready(rev) {
        json!([condition(prev, "Ready", "Unknown", "Deploying", "")])
    } else {
        json!([
            condition(prev, "Active", "True", "", ""),
            condition(prev, "ContainerHealthy", "True", "", ""),
            condition(prev, "Ready", "True", "", ""),
            condition(prev, "ResourcesAvailable", "True", "", ""),
        ])
    };
    let replicas = i64::from(!never_ready(rev));
    json!({"status": {
        "observedGeneration": rev["metadata"]["generation"],
        "conditions": conditions,
        "actualReplicas": replicas,
        "desiredReplicas": 1,
    }})
}

fn config_generation(r: &Value) -> i64 {
    r["metadata"]["labels"][GENERATION_LABEL]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn ready_status(obj: &Value) -> Option<&str> {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
}

/// The revision was made from `template` (spec, labels and annotations).
/// Whether the revision was made from this template. Zero values (`name: ""`, `resources: {}`,
/// empty lists, nulls) do not count: a Go client's full Update (Flagger's) writes them where the
/// user wrote nothing, and Knative's defaulting webhook, which this stand-in does not run, makes
/// both the same template, so real Knative makes no new revision for them.
fn revision_matches(rev: &Value, template: &Value) -> bool {
    let subset = |field: &str| {
        template["metadata"][field]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| rev["metadata"][field][k] == *v)
    };
    without_zero_values(&rev["spec"]) == without_zero_values(&template_spec(template))
        && subset("labels")
        && subset("annotations")
}

/// `v` without empty strings, objects, lists and nulls (recursively).
fn without_zero_values(v: &Value) -> Value {
    fn zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        }
    }
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), without_zero_values(v)))
                .filter(|(_, v)| !zero(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_zero_values).collect()),
        v => v.clone(),
    }
}

fn template_spec(template: &Value) -> Value {
    if template["spec"].is_null() {
        json!({})
    } else {
        template["spec"].clone()
    }
}

fn new_revision(svc: &Value, rev_name: &str, n: i64) -> Value {
    let name = svc["metadata"]["name"].clone();
    let template = &svc["spec"]["template"];
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_LABEL.into(), name.clone());
    labels.insert("serving.knative.dev/configuration".into(), name.clone());
    labels.insert(GENERATION_LABEL.into(), Value::from(n.to_string()));
    labels.insert(
        "serving.knative.dev/serviceUID".into(),
        svc["metadata"]["uid"].clone(),
    );
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if never_ready(svc) {
        annotations.insert(NEVER_READY_ANNOTATION.into(), Value::from("true"));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": {
            "name": rev_name,
            "namespace": svc["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": "Service", "name": name, "uid": svc["metadata"]["uid"],
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": template_spec(template),
    })
}

/// The Service status Knative's controller would report for these revisions.
fn service_status(svc: &Value, revisions: &[Value], generation: i64) -> Value {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    let prev = &svc["status"];
    let host = |prefix: &str| format!("http://{prefix}{name}.{ns}.example.com");
    let latest_created = revisions.last().and_then(|r| r["metadata"]["name"].as_str());
    let latest_ready = revisions
        .iter()
        .rev()
        .find(|r| ready_status(r) == Some("True"))
        .and_then(|r| r["metadata"]["name"].as_str());
    let mut st = Map::new();
    st.insert("observedGeneration".into(), Value::from(generation));
    if let Some(c) = latest_created {
        st.insert("latestCreatedRevisionName".into(), Value::from(c));
    }
    if let Some(r) = latest_ready {
        st.insert("latestReadyRevisionName".into(), Value::from(r));
    }
    st.insert("url".into(), Value::from(host("")));
    st.insert(
        "address".into(),
        json!({"url": format!("http://{name}.{ns}.svc.cluster.local")}),
    );

    let config_ready = latest_created.is_some() && latest_created == latest_ready;
    let config_cond = if config_ready {
        condition(prev, "ConfigurationsReady", "True", "", "")
    } else {
        let rev = latest_created.unwrap_or_default();
        condition(
            prev,
            "ConfigurationsReady",
            "Unknown",
            "RevisionDeploying",
            &format!("Revision \"{rev}\" is not ready yet."),
        )
    };

    // spec.traffic → status.traffic; without spec.traffic all traffic goes to the latest revision.
    let spec_traffic = svc["spec"]["traffic"]
        .as_array()
        .cloned()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| vec![json!({"latestRevision": true, "percent": 100})]);
    let mut missing = None;
    let mut traffic = Vec::new();
    for t in &spec_traffic {
        let mut out = Map::new();
        if let Some(tag) = t["tag"].as_str() {
            out.insert("tag".into(), Value::from(tag));
            out.insert("url".into(), Value::from(host(&format!("{tag}-"))));
        }
        if t["latestRevision"].as_bool() == Some(true) || t["revisionName"].is_null() {
            match latest_ready {
                Some(r) => {
                    out.insert("revisionName".into(), Value::from(r));
                }
                None => {
                    missing.get_or_insert_with(|| {
                        format!("Configuration \"{name}\" does not have any ready Revision.")
                    });
                }
            }
            out.insert("latestRevision".into(), Value::from(true));
        } else {
            let r = t["revisionName"].as_str().unwrap_or_default();
            if !revisions.iter().any(|x| x["metadata"]["name"] == r) {
                missing.get_or_insert_with(|| format!("Revision \"{r}\" referenced in traffic not found."));
            }
            out.insert("revisionName".into(), Value::from(r));
            out.insert("latestRevision".into(), Value::from(false));
        }
        if !t["percent"].is_null() {
            out.insert("percent".into(), t["percent"].clone());
        }
        traffic.push(Value::Object(out));
    }
    let routes_cond = match &missing {
        None => {
            st.insert("traffic".into(), Value::Array(traffic));
            condition(prev, "RoutesReady", "True", "", "")
        }
        Some(msg) => {
            if let Some(t) = prev.get("traffic") {
                st.insert("traffic".into(), t.clone());
            }
            condition(prev, "RoutesReady", "False", "RevisionMissing", msg)
        }
    };
    let ready = if config_ready && missing.is_none() {
        condition(prev, "Ready", "True", "", "")
    } else if missing.is_some() && latest_ready.is_some() {
        condition(
            prev,
            "Ready",
            "False",
            "RevisionMissing",
            missing.as_deref().unwrap_or_default(),
        )
    } else {
        condition(
            prev,
            "Ready",
            "Unknown",
            "RevisionDeploying",
            "Revision is not ready yet.",
        )
    };
    st.insert("conditions".into(), json!([config_cond, ready, routes_cond]));
    Value::Object(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_resolves_latest_and_named_revisions() {
        let svc = json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"traffic": [
                {"revisionName": "podinfo-00001", "percent": 90},
                {"latestRevision": true, "percent": 10, "tag": "canary"},
            ]},
        });
        let rev = |n: &str, ready: &str| json!({"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": ready}]}});
        let st = service_status(
            &svc,
            &[rev("podinfo-00001", "True"), rev("podinfo-00002", "True")],
            2,
        );
        assert_eq!(
            st["traffic"],
            json!([
                {"revisionName": "podinfo-00001", "latestRevision": false, "percent": 90},
                {"revisionName": "podinfo-00002", "latestRevision": true, "percent": 10, "tag": "canary",
                 "url": "http://canary-podinfo.test.example.com"},
            ])
        );
        assert_eq!(st["latestReadyRevisionName"], "podinfo-00002");
    }

    #[test]
    fn a_missing_named_revision_is_reported_and_keeps_the_old_traffic() {
        let svc = json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"traffic": [{"revisionName": "podinfo-00009", "percent": 100}]},
            "status": {"traffic": [{"revisionName": "podinfo-00001", "percent": 100}]},
        });
        let rev = json!({"metadata": {"name": "podinfo-00001"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let st = service_status(&svc, &[rev], 1);
        assert_eq!(st["traffic"], svc["status"]["traffic"]);
        let routes = &st["conditions"][2];
        assert_eq!(routes["status"], "False");
        assert_eq!(routes["reason"], "RevisionMissing");
    }

    #[test]
    fn zero_values_written_by_a_go_client_make_no_new_revision() {
        let rev = json!({"metadata": {}, "spec": {"containers": [{"image": "podinfo:1", "ports": [{"containerPort": 9898}]}]}});
        let go = json!({"metadata": {}, "spec": {"containers": [
            {"name": "", "image": "podinfo:1", "ports": [{"containerPort": 9898}], "resources": {}}
        ]}});
        assert!(revision_matches(&rev, &go));
        let changed =
            json!({"spec": {"containers": [{"image": "podinfo:2", "ports": [{"containerPort": 9898}]}]}});
        assert!(!revision_matches(&rev, &changed));
    }
}
