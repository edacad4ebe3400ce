//! [`Objects`]: untyped access to any kind on the API server by `apiVersion` + `kind`, as JSON,
//! for tests: create, read, update with conflict retry, patch, delete, and bounded waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

use crate::error::{Error, Result};

/// How long discovery of a just-installed CRD may lag behind `Established`.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Discovered resources by `(apiVersion, kind)`.
type Resources = HashMap<(String, String), (ApiResource, ApiCapabilities)>;

/// Untyped objects through one client (one identity).
#[derive(Clone)]
pub struct Objects {
    client: kube::Client,
    resources: Arc<Mutex<Resources>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(apiVersion, kind, namespace, name)` of an object.
fn identity(obj: &Value) -> (String, String, Option<String>, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let m = &obj["metadata"];
    (
        s(&obj["apiVersion"]),
        s(&obj["kind"]),
        m["namespace"].as_str().map(str::to_string),
        s(&m["name"]),
    )
}

fn describe(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl Objects {
    /// Objects seen through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            resources: Default::default(),
        }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// A dynamic `Api` for the kind (namespaced when `ns` is given and the kind is).
    pub async fn api(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Result<Api<DynamicObject>> {
        let (ar, caps) = self.resource(api_version, kind).await?;
        Ok(match (caps.scope, ns) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        })
    }

    async fn resource(&self, api_version: &str, kind: &str) -> Result<(ApiResource, ApiCapabilities)> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = lock(&self.resources).get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let deadline = tokio::time::Instant::now() + DISCOVERY_TIMEOUT;
        let found = loop {
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok(found) => break found,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(Error::kube(format!("discovering {kind} in {api_version}"), e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        lock(&self.resources).insert(key, found.clone());
        Ok(found)
    }

    /// Creates the object (its `metadata.namespace` picks the namespace) and returns it as stored.
    pub async fn create(&self, obj: Value) -> Result<Value> {
        let (av, kind, ns, name) = identity(&obj);
        let api = self.api(&av, &kind, ns.as_deref()).await?;
        let d: DynamicObject = serde_json::from_value(obj).map_err(|e| {
            Error::Setup(format!(
                "{} is not an object: {e}",
                describe(&kind, ns.as_deref(), &name)
            ))
        })?;
        let created = api
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| Error::kube(format!("creating {}", describe(&kind, ns.as_deref(), &name)), e))?;
        Ok(to_value(created))
    }

    /// Creates the object from YAML.
    pub async fn create_yaml(&self, yaml: &str) -> Result<Value> {
        let v: Value =
            serde_yaml_ng::from_str(yaml).map_err(|e| Error::Setup(format!("parsing YAML: {e}\n{yaml}")))?;
        self.create(v).await
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let api = self.api(api_version, kind, ns).await?;
        api.get_opt(name)
            .await
            .map(|o| o.map(to_value))
            .map_err(|e| Error::kube(format!("reading {}", describe(kind, ns, name)), e))
    }

    /// Lists the objects of a kind (in `ns`, or everywhere).
    pub async fn list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Result<Vec<Value>> {
        let api = self.api(api_version, kind, ns).await?;
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube(format!("listing {kind} in {}", ns.unwrap_or("all namespaces")), e))?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    /// Reads, changes with `change`, and writes back (PUT guarded by resourceVersion), retrying
    /// on 409 conflicts with other writers.
    pub async fn update(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        mut change: impl FnMut(&mut Value),
    ) -> Result<Value> {
        let api = self.api(api_version, kind, ns).await?;
        let what = describe(kind, ns, name);
        for _ in 0..20 {
            let current = api
                .get(name)
                .await
                .map_err(|e| Error::kube(format!("reading {what}"), e))?;
            let mut v = to_value(current);
            change(&mut v);
            let d: DynamicObject = serde_json::from_value(v)
                .map_err(|e| Error::Setup(format!("{what} after the change: {e}")))?;
            match api.replace(name, &PostParams::default(), &d).await {
                Ok(o) => return Ok(to_value(o)),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(Error::kube(format!("updating {what}"), e)),
            }
        }
        Err(Error::Setup(format!("updating {what}: 20 conflicts in a row")))
    }

    /// Applies a JSON merge patch.
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let api = self.api(api_version, kind, ns).await?;
        let what = format!("patching {}", describe(kind, ns, name));
        patched(
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await,
            what,
        )
    }

    /// Applies a JSON merge patch to the status subresource (what a controller does).
    pub async fn patch_status(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let api = self.api(api_version, kind, ns).await?;
        let what = format!("patching the status of {}", describe(kind, ns, name));
        patched(
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await,
            what,
        )
    }

    /// Deletes an object (background propagation); a missing object is not an error.
    pub async fn delete(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Result<()> {
        let api = self.api(api_version, kind, ns).await?;
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!("deleting {}", describe(kind, ns, name)), e)),
        }
    }

    /// Polls the object until `pred` holds (errors while polling, e.g. an API server being
    /// restarted, are retried until the timeout).
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.get(api_version, kind, ns, name).await {
                Ok(Some(v)) if pred(&v) => return Ok(v),
                Ok(Some(v)) => format!("; last seen: {v}"),
                Ok(None) => String::from("; it does not exist"),
                Err(e) => format!("; last error: {e}"),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("the awaited state of {}", describe(kind, ns, name)),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the object is gone.
    pub async fn wait_gone(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.get(api_version, kind, ns, name).await {
                Ok(None) => return Ok(()),
                Ok(Some(v)) => format!("; last seen: {v}"),
                Err(e) => format!("; last error: {e}"),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("deletion of {}", describe(kind, ns, name)),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Core/v1 Events in `ns`, oldest first (by `lastTimestamp`, then creation).
    pub async fn events(&self, ns: &str) -> Result<Vec<Value>> {
        let mut events = self.list("v1", "Event", Some(ns)).await?;
        events.sort_by(|a, b| {
            let key = |e: &Value| {
                (
                    e["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    e["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|r| r.parse::<u64>().ok())
                        .unwrap_or(0),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(events)
    }
}

/// A patch's answer as JSON, or the error saying `what` was patched.
fn patched(answer: kube::Result<DynamicObject>, what: String) -> Result<Value> {
    answer.map(to_value).map_err(|e| Error::kube(what, e))
}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}
