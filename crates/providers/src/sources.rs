//! Where adapters find MetricTemplates and AlertProviders. Platforms implement these from their
//! watchers (the kube platform's reflector stores) or their configuration (the local platform);
//! [`ResourceStore`] is a ready in-memory implementation of both.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// Objects in memory by namespace and name. Cheap to clone; clones share the contents. `Debug`
/// lists the names only (the objects may be Secrets).
pub(crate) struct ByName<T>(Arc<RwLock<BTreeMap<(String, String), T>>>);

impl<T> std::fmt::Debug for ByName<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.0.read();
        f.debug_list()
            .entries(names.keys().map(|(ns, n)| format!("{ns}/{n}")))
            .finish()
    }
}

// Derived `Clone`/`Default` would ask `T` for them; the shared map needs neither.
impl<T> Clone for ByName<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> ByName<T> {
    /// Adds or replaces the object at `(namespace, name)`.
    pub(crate) fn insert(&self, key: (String, String), value: T) {
        self.0.write().insert(key, value);
    }

    /// Removes `namespace/name`.
    pub(crate) fn remove(&self, namespace: &str, name: &str) {
        self.0.write().remove(&key(namespace, name));
    }

    /// A copy of `namespace/name`.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<T> {
        self.0.read().get(&key(namespace, name)).cloned()
    }

    /// A copy of `namespace/name`, or the error `missing` words (each source says it its way).
    pub(crate) fn require(
        &self,
        namespace: &str,
        name: &str,
        missing: impl FnOnce() -> String,
    ) -> Result<T, String> {
        self.get(namespace, name).ok_or_else(missing)
    }
}

pub(crate) fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

/// MetricTemplates and AlertProviders held in memory, keyed by their namespace and name
/// (`default` when the object has no namespace). Cheap to clone; clones share the contents.
/// `Debug` lists the names.
#[derive(Debug, Clone, Default)]
pub struct ResourceStore {
    templates: ByName<MetricTemplate>,
    providers: ByName<AlertProvider>,
}

/// The namespace (`default` when unset) and name of an object.
fn key_of(meta: &ObjectMeta) -> (String, String) {
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
        self.templates.insert(key_of(&template.metadata), template);
    }

    /// Removes a MetricTemplate.
    pub fn remove_template(&self, namespace: &str, name: &str) {
        self.templates.remove(namespace, name);
    }

    /// Adds or replaces an AlertProvider.
    pub fn insert_alert_provider(&self, provider: AlertProvider) {
        self.providers.insert(key_of(&provider.metadata), provider);
    }

    /// Removes an AlertProvider.
    pub fn remove_alert_provider(&self, namespace: &str, name: &str) {
        self.providers.remove(namespace, name);
    }
}

#[async_trait]
impl TemplateSource for ResourceStore {
    async fn metric_template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        let missing = || format!("metrictemplate.flagger.app \"{name}\" not found");
        self.templates.require(namespace, name, missing)
    }
}

#[async_trait]
impl AlertProviderSource for ResourceStore {
    async fn alert_provider(&self, namespace: &str, name: &str) -> Result<AlertProvider, String> {
        let missing = || format!("alertprovider.flagger.app \"{name}\" not found");
        self.providers.require(namespace, name, missing)
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
