//! What the coordinator link asks of a Kubernetes cluster: revisions are container images
//! (`name → image`; Knative's unnamed container is `user-container`), read from the canary's
//! target and primary, applied to the target Deployment or Knative Service with a merge patch
//! guarded by its resourceVersion, and retried as a new revision by bumping a pod-template
//! annotation (Flagger never re-analyses a revision that failed).

use aviary_api::Canary;
use aviary_core::fleet::Revision;
use serde_json::Value;

use crate::client::{DAEMON_SET, DEPLOYMENT, KNATIVE_REVISION, KNATIVE_SERVICE, Kind, Kube, annotation};
use crate::knative::PRIMARY_REVISION_ANNOTATION;

/// Annotation bumped on the pod template to retry the same images (a new revision).
pub const RETRY_ANNOTATION: &str = "aviary.dev/retry";

fn container_key(c: &Value, i: usize) -> String {
    match c["name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ if i == 0 => "user-container".into(),
        _ => format!("container-{i}"),
    }
}

fn images(containers: &Value) -> Revision {
    let container_images = containers
        .as_array()
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| (container_key(c, i), c["image"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    Revision {
        container_images,
        version: String::new(),
    }
}

fn target_kind(canary: &Canary) -> Kind {
    if canary.is_knative_target() {
        KNATIVE_SERVICE
    } else if canary.target_kind() == "DaemonSet" {
        DAEMON_SET
    } else {
        DEPLOYMENT
    }
}

async fn get(kube: &Kube, kind: Kind, ns: &str, name: &str) -> Option<Value> {
    kube.get(kind, ns, name).await.ok().flatten()
}

/// The images the canary's target describes now (empty when it cannot be read).
pub async fn target_revision(kube: &Kube, canary: &Canary) -> Revision {
    match get(
        kube,
        target_kind(canary),
        canary.namespace(),
        canary.target_name(),
    )
    .await
    {
        Some(obj) => images(&obj["spec"]["template"]["spec"]["containers"]),
        None => Revision::default(),
    }
}

/// The images the canary's primary runs: the `-primary` Deployment, or the Knative Revision the
/// Service's primary-revision annotation names.
pub async fn primary_revision(kube: &Kube, canary: &Canary) -> Revision {
    let ns = canary.namespace();
    if canary.is_knative_target() {
        let Some(svc) = get(kube, KNATIVE_SERVICE, ns, canary.target_name()).await else {
            return Revision::default();
        };
        let Some(rev) = annotation(&svc, PRIMARY_REVISION_ANNOTATION).map(str::to_string) else {
            return Revision::default();
        };
        return match get(kube, KNATIVE_REVISION, ns, &rev).await {
            Some(r) => images(&r["spec"]["containers"]),
            None => Revision::default(),
        };
    }
    let primary = format!("{}-primary", canary.target_name());
    match get(kube, DEPLOYMENT, ns, &primary).await {
        Some(obj) => images(&obj["spec"]["template"]["spec"]["containers"]),
        None => Revision::default(),
    }
}

/// Sets the revision's images on the canary's target, by container name.
pub async fn apply_revision(kube: &Kube, canary: &Canary, revision: &Revision) -> Result<(), String> {
    if revision.container_images.is_empty() {
        return Err(format!(
            "{} targets a {}: the revision needs containerImages (version applies to LocalServices)",
            canary.key(),
            canary.target_kind()
        ));
    }
    let wanted = revision.container_images.clone();
    let kind = target_kind(canary);
    let updated = kube
        .modify(kind, canary.namespace(), canary.target_name(), |obj| {
            let containers = obj["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .ok_or("the target has no containers")?;
            let mut missing: Vec<&String> = wanted.keys().collect();
            for (i, c) in containers.iter_mut().enumerate() {
                let key = container_key(c, i);
                if let Some(image) = wanted.get(&key) {
                    c["image"] = Value::String(image.clone());
                    missing.retain(|k| **k != key);
                }
            }
            if !missing.is_empty() {
                return Err(format!("no container named {missing:?} in the target"));
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    updated
        .map(|_| ())
        .ok_or_else(|| format!("{} {} not found", kind.kind, canary.target_name()))
}

/// Makes the target's images a new revision by bumping [`RETRY_ANNOTATION`] on its pod template.
pub async fn retry(kube: &Kube, canary: &Canary) -> Result<(), String> {
    let kind = target_kind(canary);
    kube.modify(kind, canary.namespace(), canary.target_name(), |obj| {
        let meta = &mut obj["spec"]["template"]["metadata"];
        if !meta.is_object() {
            *meta = serde_json::json!({});
        }
        let n = meta["annotations"][RETRY_ANNOTATION]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if !meta["annotations"].is_object() {
            meta["annotations"] = serde_json::json!({});
        }
        meta["annotations"][RETRY_ANNOTATION] = Value::String((n + 1).to_string());
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map(|_| ())
    .ok_or_else(|| format!("{} {} not found", kind.kind, canary.target_name()))
}
