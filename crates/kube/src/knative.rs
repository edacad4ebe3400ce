//! Knative Serving (reference §6.3): the Knative Service is both the target and the router.
//!
//! - The primary is a Revision named by the annotation `flagger.app/primary-revision`, set at
//!   initialization from `status.latestCreatedRevisionName` and moved there on promotion; the
//!   canary is the latest created Revision. The revision fingerprint is that name.
//! - Traffic is `.spec.traffic = [{latestRevision: true, percent: canary}, {revisionName:
//!   <primary>, percent: primary}]`; weights are read back from `.status.traffic` once Knative
//!   has observed the Service's generation (from `.spec.traffic` before that).
//! - Knative scales revisions itself: scaling and config tracking do nothing.
//! - [`KnativeRoute`] gives built-in metric queries the latest created revision as `route`.

use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryPhase, MetricTemplate};
use aviary_core::ports::{
    BuiltinMetric, MetricError, MetricModel, MetricResult, Metrics, NotReady, Router, Routes, Target,
    TargetRevision, TemplateQuery,
};
use serde_json::{Value, json};

use crate::client::{KNATIVE_REVISION, KNATIVE_SERVICE, Kube, annotation, describe, set_annotation};

/// The annotation naming the primary revision.
pub const PRIMARY_REVISION_ANNOTATION: &str = "flagger.app/primary-revision";

/// Reads and writes Knative Services for one agent; implements `Target` and `Router`.
#[derive(Debug, Clone)]
pub struct Knative {
    kube: Kube,
}

fn id(c: &Canary) -> String {
    format!("{}.{}", c.target_name(), c.namespace())
}

/// The two traffic entries aviary writes.
pub fn traffic(primary_revision: &str, primary: i32, canary: i32) -> Value {
    json!([
        {"latestRevision": true, "percent": canary},
        {"revisionName": primary_revision, "percent": primary},
    ])
}

/// Reads the split from a list of traffic entries: the canary is the first `latestRevision: true`
/// entry, the primary the first other entry naming the primary revision. Right after a promotion
/// the primary *is* the latest revision; then (as in Flagger) the latest entry stands for both.
pub fn split(entries: &Value, primary_revision: &str) -> Option<(i32, i32)> {
    let entries = entries.as_array()?;
    let latest = |e: &&Value| e["latestRevision"].as_bool() == Some(true);
    let canary = entries.iter().find(latest)?;
    let primary = entries
        .iter()
        .find(|e| !latest(e) && e["revisionName"] == primary_revision)
        .or_else(|| entries.iter().find(|e| e["revisionName"] == primary_revision))?;
    let percent = |e: &Value| e["percent"].as_i64().map(|p| p as i32);
    Some((percent(primary)?, percent(canary)?))
}

impl Knative {
    pub fn new(kube: Kube) -> Self {
        Self { kube }
    }

    async fn service(&self, c: &Canary) -> Result<Value, String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let context = format!("Knative Service {name}.{ns} get query error");
        self.kube.require(KNATIVE_SERVICE, ns, name, &context).await
    }

    /// A revision name the Knative Service must have: `name` when set, else an error saying
    /// it has no `what`.
    fn required(c: &Canary, name: Option<&str>, what: &str) -> Result<String, String> {
        name.filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("Knative Service {} has no {what}", id(c)))
    }

    fn latest_created(c: &Canary, svc: &Value) -> Result<String, String> {
        let name = svc["status"]["latestCreatedRevisionName"].as_str();
        Self::required(
            c,
            name,
            "status.latestCreatedRevisionName yet; waiting for Knative",
        )
    }

    fn primary_revision(c: &Canary, svc: &Value) -> Result<String, String> {
        let name = annotation(svc, PRIMARY_REVISION_ANNOTATION);
        Self::required(c, name, &format!("{PRIMARY_REVISION_ANNOTATION} annotation"))
    }

    /// The latest created revision of the canary's Knative Service (the metrics' `route`).
    pub async fn latest_revision(&self, c: &Canary) -> Result<String, String> {
        let svc = self.service(c).await?;
        Self::latest_created(c, &svc)
    }

    /// Whether a Revision is Ready.
    async fn revision_ready(&self, c: &Canary, revision: &str, role: &str) -> Result<(), NotReady> {
        let ns = c.namespace();
        let rev = match self.kube.get(KNATIVE_REVISION, ns, revision).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(NotReady::retriable(format!(
                    "{role} revision {revision}.{ns} not ready: revisions.serving.knative.dev \"{revision}\" not found"
                )));
            }
            Err(e) => {
                return Err(NotReady::retriable(format!(
                    "{role} revision {revision}.{ns} get query error: {}",
                    describe(&e)
                )));
            }
        };
        let ready = rev["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        match ready {
            Some(r) if r["status"] == "True" => Ok(()),
            Some(r) => {
                let why = [r["reason"].as_str(), r["message"].as_str()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                Err(NotReady::retriable(format!(
                    "{role} revision {revision}.{ns} not ready: Ready={}{}",
                    r["status"].as_str().unwrap_or("Unknown"),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )))
            }
            None => Err(NotReady::retriable(format!(
                "{role} revision {revision}.{ns} not ready: no Ready condition yet"
            ))),
        }
    }

    /// Points the primary annotation at the latest created revision; with `all_to_primary`
    /// also routes everything to it in the same write (Flagger's initialization, one Update).
    async fn set_primary(
        &self,
        c: &Canary,
        only_if_missing: bool,
        all_to_primary: bool,
    ) -> Result<(), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let mut missing_latest = None;
        self.kube
            .modify(KNATIVE_SERVICE, ns, name, |svc| {
                if only_if_missing
                    && annotation(svc, PRIMARY_REVISION_ANNOTATION).is_some_and(|a| !a.is_empty())
                {
                    return Ok(());
                }
                match Self::latest_created(c, svc) {
                    Ok(latest) => {
                        set_annotation(svc, PRIMARY_REVISION_ANNOTATION, Some(&latest));
                        if all_to_primary {
                            svc["spec"]["traffic"] = traffic(&latest, 100, 0);
                        }
                    }
                    Err(e) => missing_latest = Some(e),
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Knative Service {} get query error: not found", id(c)))?;
        match missing_latest {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn write_traffic(&self, c: &Canary, primary: i32, canary: i32) -> Result<(), String> {
        let (ns, name) = (c.namespace(), c.target_name());
        let mut problem = None;
        self.kube
            .modify(KNATIVE_SERVICE, ns, name, |svc| {
                match Self::primary_revision(c, svc) {
                    Ok(p) => svc["spec"]["traffic"] = traffic(&p, primary, canary),
                    Err(e) => problem = Some(e),
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Knative Service {} get query error: not found", id(c)))?;
        problem.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Target for Knative {
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        let svc = self.service(c).await?;
        let latest = Self::latest_created(c, &svc)?;
        Ok(TargetRevision {
            fingerprint: latest.clone(),
            tracked_configs: None,
            route: Some(latest),
        })
    }

    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        let initializing = matches!(
            c.status.as_ref().map(|s| s.phase),
            None | Some(CanaryPhase::Empty | CanaryPhase::Initializing)
        );
        self.set_primary(c, !initializing, initializing)
            .await
            .map_err(NotReady::retriable)
    }

    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let svc = self.service(c).await.map_err(NotReady::retriable)?;
        let primary = Self::primary_revision(c, &svc).map_err(NotReady::retriable)?;
        self.revision_ready(c, &primary, "primary").await
    }

    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        let svc = self.service(c).await.map_err(NotReady::retriable)?;
        let latest = Self::latest_created(c, &svc).map_err(NotReady::retriable)?;
        self.revision_ready(c, &latest, "canary").await
    }

    async fn promote(&self, c: &Canary) -> Result<(), String> {
        self.set_primary(c, false, false).await
    }

    async fn scale_to_zero(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }

    async fn scale_from_zero(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
}

#[async_trait]
impl Router for Knative {
    async fn reconcile(&self, c: &Canary) -> Result<(), String> {
        self.set_primary(c, true, false).await?;
        let svc = self.service(c).await?;
        let initializing = matches!(
            c.status.as_ref().map(|s| s.phase),
            None | Some(CanaryPhase::Empty | CanaryPhase::Initializing)
        );
        let ours = svc["spec"]["traffic"]
            .as_array()
            .is_some_and(|t| t.len() == 2 && t.iter().any(|e| e["latestRevision"].as_bool() == Some(true)));
        // Take over (all traffic to the primary) at initialization, or when the traffic block is
        // not ours; otherwise leave the weights to set_routes.
        if initializing || !ours {
            self.write_traffic(c, 100, 0).await?;
        }
        Ok(())
    }

    async fn set_routes(&self, c: &Canary, routes: &Routes) -> Result<(), String> {
        self.write_traffic(c, routes.primary, routes.canary).await
    }

    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        let svc = self.service(c).await?;
        let primary = Self::primary_revision(c, &svc)?;
        let generation = svc["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = svc["status"]["observedGeneration"].as_i64().unwrap_or(0);
        // Until Knative has observed the latest spec, its status describes an older split.
        let entries = if observed >= generation {
            &svc["status"]["traffic"]
        } else {
            &svc["spec"]["traffic"]
        };
        let (p, k) = split(entries, &primary).ok_or_else(|| {
            format!(
                "Knative Service {} traffic spec invalid: expected an entry with latestRevision: true and one for \
                 revision {primary}, got {}",
                id(c),
                entries
            )
        })?;
        Ok(Routes::split(p, k))
    }

    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        // Unmanaged again: no primary annotation, all traffic to the latest revision (as a
        // Deployment target serves from the target again after deletion).
        let (ns, name) = (c.namespace(), c.target_name());
        self.kube
            .modify(KNATIVE_SERVICE, ns, name, |svc| {
                set_annotation(svc, PRIMARY_REVISION_ANNOTATION, None);
                svc["spec"]["traffic"] = json!([{"latestRevision": true, "percent": 100}]);
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A `Metrics` decorator: for Knative canaries the built-in queries' `route` is the Knative
/// Service's `status.latestCreatedRevisionName` (Flagger reads it on every check).
pub struct KnativeRoute {
    inner: Arc<dyn Metrics>,
    knative: Knative,
}

impl KnativeRoute {
    pub fn new(inner: Arc<dyn Metrics>, kube: Kube) -> Self {
        Self {
            inner,
            knative: Knative::new(kube),
        }
    }

    /// `model` with the route of a Knative canary: its latest created revision.
    async fn routed(&self, canary: &Canary, model: &MetricModel) -> Result<MetricModel, MetricError> {
        let revision = self.knative.latest_revision(canary).await.map_err(|e| {
            MetricError::Query(format!(
                "Error fetching Knative service {}/{} {e}",
                canary.namespace(),
                canary.target_name()
            ))
        })?;
        let mut model = model.clone();
        model.route = revision;
        Ok(model)
    }
}

#[async_trait]
impl Metrics for KnativeRoute {
    async fn check_providers(&self, canary: &Canary) -> Result<(), String> {
        self.inner.check_providers(canary).await
    }

    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult {
        if !canary.is_knative_target() {
            return self.inner.builtin(canary, metric, model).await;
        }
        let model = self.routed(canary, model).await?;
        self.inner.builtin(canary, metric, &model).await
    }

    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.inner.template(namespace, name).await
    }

    async fn query(&self, q: TemplateQuery<'_>) -> MetricResult {
        self.inner.query(q).await
    }

    async fn counters(
        &self,
        canary: &Canary,
        model: &MetricModel,
    ) -> Result<aviary_core::judge::CounterReading, MetricError> {
        if !canary.is_knative_target() {
            return self.inner.counters(canary, model).await;
        }
        let model = self.routed(canary, model).await?;
        self.inner.counters(canary, &model).await
    }

    async fn inline(&self, canary: &Canary, metric: &str, query: &str) -> MetricResult {
        self.inner.inline(canary, metric, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_the_latest_and_the_named_primary() {
        // Knative resolves latestRevision to the latest *ready* revision, which can be the primary.
        let status = json!([
            {"latestRevision": true, "revisionName": "podinfo-00001", "percent": 10},
            {"latestRevision": false, "revisionName": "podinfo-00001", "percent": 90},
        ]);
        assert_eq!(split(&status, "podinfo-00001"), Some((90, 10)));
        // Just promoted: the primary is the latest revision.
        let promoted = json!([
            {"latestRevision": true, "revisionName": "podinfo-00002", "percent": 50},
            {"latestRevision": false, "revisionName": "podinfo-00001", "percent": 50},
        ]);
        assert_eq!(split(&promoted, "podinfo-00002"), Some((50, 50)));
        assert_eq!(
            split(&traffic("podinfo-00001", 100, 0), "podinfo-00001"),
            Some((100, 0))
        );
        assert_eq!(
            split(
                &json!([{"latestRevision": true, "percent": 100}]),
                "podinfo-00001"
            ),
            None
        );
        assert_eq!(split(&Value::Null, "x"), None);
    }
}
