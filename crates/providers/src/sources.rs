//! Where adapters find MetricTemplates and AlertProviders. Platforms implement these from their
//! watchers (the kube platform's reflector stores) or their configuration (the local platform);
//! [`ResourceStore`] is a ready in-memory implementation of both.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::{AlertProvider, MetricTemplate};
use parking_lot::RwLock;

/// Looks up MetricTemplates by namespace and name.
#[async_trait]
pub trait TemplateSource: Send + Sync {
    /// The MetricTemplate `namespace/name`; `Err` says why not (Kubernetes' wording for a missing
    /// object: `metrictemplate.flagger.app "name" not found`).
    async fn metric_template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String>;
}

/// Looks up AlertProviders by namespace and name.
#[async_trait]
pub trait AlertProviderSource: Send + Sync {
    /// The AlertProvider `namespace/name`; `Err` says why not.
    async fn alert_provider(&self, namespace: &str, name: &str) -> Result<AlertProvider, String>;
}

type Key = (String, String);

/// MetricTemplates and AlertProviders held in memory, keyed by their namespace and name
/// (`default` when the object has no namespace). Cheap to clone; clones share the contents.
#[derive(Debug, Clone, Default)]
pub struct ResourceStore {
    templates: Arc<RwLock<BTreeMap<Key, MetricTemplate>>>,
    providers: Arc<RwLock<BTreeMap<Key, AlertProvider>>>,
}

fn key_of(meta: &aviary_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl ResourceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a MetricTemplate.
    pub fn insert_template(&self, template: MetricTemplate) {
        let key = key_of(&template.metadata);
        self.templates.write().insert(key, template);
    }

    /// Removes a MetricTemplate.
    pub fn remove_template(&self, namespace: &str, name: &str) {
        self.templates
            .write()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Adds or replaces an AlertProvider.
    pub fn insert_alert_provider(&self, provider: AlertProvider) {
        let key = key_of(&provider.metadata);
        self.providers.write().insert(key, provider);
    }

    /// Removes an AlertProvider.
    pub fn remove_alert_provider(&self, namespace: &str, name: &str) {
        self.providers
            .write()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[async_trait]
impl TemplateSource for ResourceStore {
    async fn metric_template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.templates
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| format!("metrictemplate.flagger.app \"{name}\" not found"))
    }
}

#[async_trait]
impl AlertProviderSource for ResourceStore {
    async fn alert_provider(&self, namespace: &str, name: &str) -> Result<AlertProvider, String> {
        self.providers
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| format!("alertprovider.flagger.app \"{name}\" not found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_api::{AlertProviderSpec, MetricTemplateSpec};

    #[tokio::test]
    async fn the_store_finds_objects_by_namespace_and_name() {
        let store = ResourceStore::new();
        let mut t = MetricTemplate::new("error-rate", MetricTemplateSpec::default());
        t.metadata.namespace = Some("istio-system".into());
        store.insert_template(t.clone());
        let found = store.metric_template("istio-system", "error-rate").await.unwrap();
        assert_eq!(found.spec, t.spec);
        assert_eq!(found.metadata, t.metadata);
        assert_eq!(
            store.metric_template("test", "error-rate").await.unwrap_err(),
            "metrictemplate.flagger.app \"error-rate\" not found"
        );
        store.remove_template("istio-system", "error-rate");
        assert!(store.metric_template("istio-system", "error-rate").await.is_err());

        let p = AlertProvider::new("slack", AlertProviderSpec::default());
        store.insert_alert_provider(p.clone());
        assert_eq!(
            store.alert_provider("default", "slack").await.unwrap().metadata,
            p.metadata
        );
        store.remove_alert_provider("default", "slack");
        assert_eq!(
            store.alert_provider("default", "slack").await.unwrap_err(),
            "alertprovider.flagger.app \"slack\" not found"
        );
    }
}
