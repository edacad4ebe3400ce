//! The Kubernetes client and the few write patterns every adapter uses.
//!
//! Objects are handled as JSON (`serde_json::Value`) through `Api<DynamicObject>`, so built-in
//! kinds and custom resources (Knative, Gateway API, Istio) go through the same code. Writes are
//! read-modify-write with a **JSON merge patch** computed from the difference (removed keys become
//! `null`) that carries the object's `metadata.resourceVersion` as a precondition; a 409 Conflict
//! re-reads and retries. Server-side apply is never used (it is not needed, and the strategic
//! merge patch is refused for custom resources).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cache::{CACHED_KINDS, ReadCache};
use crate::error::{Error, Result};

/// The annotation `kubectl apply` keeps the applied object in.
pub const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How often a write is retried after a 409 Conflict.
const CONFLICT_RETRIES: usize = 8;

/// A kind the adapters read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl Kind {
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
    ) -> Self {
        Self {
            group,
            version,
            kind,
            plural,
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kube-rs resource description.
    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }

    /// `plural.group` (Kubernetes' wording in messages, e.g. `deployments.apps`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Kubernetes' wording for a missing object: `deployments.apps "name" not found`.
pub fn not_found(kind: Kind, name: &str) -> String {
    format!("{} \"{name}\" not found", kind.qualified())
}

pub const CANARY: Kind = Kind::new("flagger.app", "v1beta1", "Canary", "canaries");
pub const METRIC_TEMPLATE: Kind = Kind::new("flagger.app", "v1beta1", "MetricTemplate", "metrictemplates");
pub const ALERT_PROVIDER: Kind = Kind::new("flagger.app", "v1beta1", "AlertProvider", "alertproviders");
pub const DEPLOYMENT: Kind = Kind::new("apps", "v1", "Deployment", "deployments");
pub const DAEMON_SET: Kind = Kind::new("apps", "v1", "DaemonSet", "daemonsets");
pub const SERVICE: Kind = Kind::new("", "v1", "Service", "services");
pub const CONFIG_MAP: Kind = Kind::new("", "v1", "ConfigMap", "configmaps");
pub const SECRET: Kind = Kind::new("", "v1", "Secret", "secrets");
pub const EVENT: Kind = Kind::new("", "v1", "Event", "events");
pub const HPA: Kind = Kind::new(
    "autoscaling",
    "v2",
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
);
pub const SCALED_OBJECT: Kind = Kind::new("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects");
pub const LEASE: Kind = Kind::new("coordination.k8s.io", "v1", "Lease", "leases");
pub const KNATIVE_SERVICE: Kind = Kind::new("serving.knative.dev", "v1", "Service", "services");
pub const KNATIVE_REVISION: Kind = Kind::new("serving.knative.dev", "v1", "Revision", "revisions");
pub const HTTP_ROUTE: Kind = Kind::new("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
pub const HTTP_ROUTE_V1BETA1: Kind =
    Kind::new("gateway.networking.k8s.io", "v1beta1", "HTTPRoute", "httproutes");
pub const VIRTUAL_SERVICE: Kind = Kind::new(
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
);
pub const DESTINATION_RULE: Kind = Kind::new(
    "networking.istio.io",
    "v1beta1",
    "DestinationRule",
    "destinationrules",
);

pub const INGRESS: Kind = Kind::new("networking.k8s.io", "v1", "Ingress", "ingresses");
pub const TRAFFIC_SPLIT_V1ALPHA1: Kind =
    Kind::new("split.smi-spec.io", "v1alpha1", "TrafficSplit", "trafficsplits");
pub const TRAFFIC_SPLIT_V1ALPHA2: Kind =
    Kind::new("split.smi-spec.io", "v1alpha2", "TrafficSplit", "trafficsplits");
pub const TRAFFIC_SPLIT_V1ALPHA3: Kind =
    Kind::new("split.smi-spec.io", "v1alpha3", "TrafficSplit", "trafficsplits");
pub const HTTP_PROXY: Kind = Kind::new("projectcontour.io", "v1", "HTTPProxy", "httpproxies");
pub const GLOO_UPSTREAM: Kind = Kind::new("gloo.solo.io", "v1", "Upstream", "upstreams");
pub const GLOO_ROUTE_TABLE: Kind = Kind::new("gateway.solo.io", "v1", "RouteTable", "routetables");
pub const TRAEFIK_SERVICE: Kind = Kind::new("traefik.io", "v1alpha1", "TraefikService", "traefikservices");
/// Cluster-scoped.
pub const KUMA_TRAFFIC_ROUTE: Kind = Kind::new("kuma.io", "v1alpha1", "TrafficRoute", "trafficroutes");
pub const APISIX_ROUTE: Kind = Kind::new("apisix.apache.org", "v2", "ApisixRoute", "apisixroutes");
pub const APPMESH_VIRTUAL_NODE_V1BETA1: Kind =
    Kind::new("appmesh.k8s.aws", "v1beta1", "VirtualNode", "virtualnodes");
pub const APPMESH_VIRTUAL_SERVICE_V1BETA1: Kind =
    Kind::new("appmesh.k8s.aws", "v1beta1", "VirtualService", "virtualservices");
pub const APPMESH_VIRTUAL_NODE: Kind = Kind::new("appmesh.k8s.aws", "v1beta2", "VirtualNode", "virtualnodes");
pub const APPMESH_VIRTUAL_ROUTER: Kind =
    Kind::new("appmesh.k8s.aws", "v1beta2", "VirtualRouter", "virtualrouters");
pub const APPMESH_VIRTUAL_SERVICE: Kind =
    Kind::new("appmesh.k8s.aws", "v1beta2", "VirtualService", "virtualservices");

/// Client settings (`--kubeconfig-qps`, `--kubeconfig-burst`, `--no-watch-cache`). Flagger's
/// defaults are 100 and 250 (issue #638: client-go's 5 QPS stalled 50 canaries). aviary's are
/// 500 and 1000: 1,000 canaries analysing at a 10 s interval write about 300 requests a second
/// (status, route, event per tick; docs/benchmarks.md, "Kubernetes scale").
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub qps: f64,
    pub burst: u32,
    /// Read what every tick reads from watches ([`crate::cache`]); on by default, shown to
    /// hold at 500 and 1,000 canaries (docs/benchmarks.md); `--no-watch-cache` GETs instead.
    pub watch_cache: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            qps: 500.0,
            burst: 1000,
            watch_cache: true,
        }
    }
}

/// Connects with a kubeconfig file, or with the in-cluster configuration when `None`.
pub async fn connect(kubeconfig: Option<&Path>, settings: ClientSettings) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read the kubeconfig {}: {e}; check --kubeconfig",
                    path.display()
                ))
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("the kubeconfig {} is not usable: {e}", path.display())))?
        }
        None => Config::incluster().map_err(|e| {
            Error::Config(format!(
                "no --kubeconfig given and the in-cluster configuration is not available ({e}); \
                 run inside a pod with a service account or pass --kubeconfig FILE"
            ))
        })?,
    };
    client_from(config, settings)
}

/// A client for `config`, rate limited to `settings`.
pub fn client_from(config: Config, settings: ClientSettings) -> Result<Client> {
    let builder = ClientBuilder::try_from(config)
        .map_err(|e| Error::Config(format!("cannot build the Kubernetes client: {e}")))?;
    Ok(builder.with_layer(&RateLimitLayer::new(settings)).build())
}

// === client-side rate limit (a token bucket shared by every request) ===

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket: `burst` requests at once, then `qps` per second.
#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: Arc<parking_lot::Mutex<Bucket>>,
    settings: ClientSettings,
}

impl RateLimitLayer {
    pub fn new(settings: ClientSettings) -> Self {
        let bucket = Bucket {
            tokens: f64::from(settings.burst.max(1)),
            last: Instant::now(),
        };
        Self {
            bucket: Arc::new(parking_lot::Mutex::new(bucket)),
            settings,
        }
    }

    /// Takes a token, returning how long to wait before the request may go.
    fn reserve(&self) -> Duration {
        let qps = self.settings.qps.max(0.001);
        let burst = f64::from(self.settings.burst.max(1));
        let mut b = self.bucket.lock();
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * qps).min(burst);
        b.last = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / qps)
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimited<S> {
    inner: S,
    limit: RateLimitLayer,
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let wait = self.limit.reserve();
        // The request is sent when the inner future is first polled, after the wait.
        let fut = self.inner.call(req);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            fut.await
        })
    }
}

// === objects as JSON ===

pub use crate::error::describe;

/// True for a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// True when every field of `wanted` is in `live` with the same value (lists item by item), so
/// `live` differs at most by fields the API server filled in (defaults) or others added.
pub fn is_subset(wanted: &Value, live: &Value) -> bool {
    match (wanted, live) {
        (Value::Object(w), Value::Object(l)) => {
            w.iter().all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv)))
        }
        (Value::Array(w), Value::Array(l)) => {
            w.len() == l.len() && w.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        _ => wanted == live,
    }
}

/// The RFC 7386 merge patch that turns `old` into `new` (removed keys become `null`; arrays are
/// replaced whole).
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, ov) in o {
                match n.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(nv) if nv != ov => {
                        out.insert(k.clone(), merge_diff(ov, nv));
                    }
                    Some(_) => {}
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    out.insert(k.clone(), nv.clone());
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// `metadata.name` etc. of a JSON object.
pub fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// A JSON object's `metadata.annotations[key]`.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

/// Sets (or with `None` removes) an annotation on a JSON object.
pub fn set_annotation(obj: &mut Value, key: &str, value: Option<&str>) {
    let meta = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        .expect("a Kubernetes object is a JSON object");
    match value {
        Some(v) => {
            let ann = meta
                .as_object_mut()
                .map(|m| m.entry("annotations").or_insert_with(|| json!({})))
                .expect("metadata is an object");
            if !ann.is_object() {
                *ann = json!({});
            }
            ann[key] = Value::from(v);
        }
        None => {
            if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                ann.remove(key);
            }
        }
    }
}

/// The owner reference that makes the Canary the controller of an object it generated.
pub fn owner_reference(canary: &aviary_api::Canary) -> Value {
    json!({
        "apiVersion": CANARY.api_version(),
        "kind": CANARY.kind,
        "name": canary.name(),
        "uid": canary.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// True when `obj` is controlled by the canary (an owner reference with its uid, or its kind and
/// name when the canary has no uid).
pub fn owned_by(obj: &Value, canary: &aviary_api::Canary) -> bool {
    obj["metadata"]["ownerReferences"].as_array().is_some_and(|refs| {
        refs.iter().any(|r| {
            r["kind"] == CANARY.kind
                && match canary.metadata.uid.as_deref() {
                    Some(uid) => r["uid"] == uid,
                    None => r["name"] == canary.name(),
                }
        })
    })
}

/// The Kubernetes API as the adapters use it.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    /// Watch-backed reads of the kinds every tick reads (the agent's; tests read directly).
    cache: Option<Arc<ReadCache>>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kube")
    }
}

impl Kube {
    /// Every read is a GET.
    pub fn new(client: Client) -> Self {
        Self { client, cache: None }
    }

    /// Reads of [`CACHED_KINDS`] come from watches while they are in step (see [`crate::cache`]).
    pub fn with_read_cache(mut self) -> Self {
        self.cache = Some(Arc::new(ReadCache::new(self.client.clone(), &CACHED_KINDS)));
        self
    }

    /// Tells the cache about a write of ours (`None`: deleted).
    fn wrote(&self, kind: Kind, namespace: &str, name: &str, written: Option<&Value>) {
        if let Some(c) = &self.cache {
            let version = written.map(|o| o["metadata"]["resourceVersion"].as_str().unwrap_or_default());
            c.wrote(kind, namespace, name, version);
        }
    }

    /// The object a patch returned, as JSON, told to the cache.
    fn written(&self, kind: Kind, namespace: &str, name: &str, o: DynamicObject) -> Result<Value> {
        let written = serde_json::to_value(o).map_err(|e| Error::Invalid(e.to_string()))?;
        self.wrote(kind, namespace, name, Some(&written));
        Ok(written)
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API of `kind` in `namespace` (all namespaces for an empty one).
    pub fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), &kind.resource())
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource())
        }
    }

    /// The object, or `None` when it does not exist (from the read cache when it can answer).
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Value>, kube::Error> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(kind, namespace, name)) {
            return Ok(hit);
        }
        self.get_fresh(kind, namespace, name).await
    }

    /// The object as the API server has it now (a GET), or `None` when it does not exist.
    pub async fn get_fresh(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, kube::Error> {
        match self.api(kind, namespace).get_opt(name).await? {
            Some(o) => Ok(Some(serde_json::to_value(o).map_err(kube::Error::SerdeError)?)),
            None => Ok(None),
        }
    }

    /// The object, or the error `<context>: <reason>` Flagger's controllers return for a failed
    /// read (`context` such as `deployment x.ns get query error`; the reason is the API's answer
    /// or Kubernetes' [`not_found`] wording).
    pub async fn require(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        context: &str,
    ) -> Result<Value, String> {
        match self.get(kind, namespace, name).await {
            Ok(Some(o)) => Ok(o),
            Ok(None) => Err(format!("{context}: {}", not_found(kind, name))),
            Err(e) => Err(format!("{context}: {}", describe(&e))),
        }
    }

    /// Any request to an API path with its query (`/apis/group/version/…`), for adapters that
    /// read kinds aviary has no type for (metric providers): the JSON answer (`null` when
    /// empty), or the HTTP status (0 without an answer) and the API's message.
    pub async fn request_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::result::Result<Value, (u16, String)> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| (0, e.to_string()))?,
            None => Vec::new(),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| (0, format!("{method} {path}: {e}")))?;
        match self.client.request_text(req).await {
            Ok(text) if text.trim().is_empty() => Ok(Value::Null),
            Ok(text) => serde_json::from_str(&text).map_err(|e| (0, format!("{method} {path}: {e}"))),
            Err(kube::Error::Api(s)) => Err((s.code, describe(&kube::Error::Api(s)))),
            Err(e) => Err((0, describe(&e))),
        }
    }

    /// The objects of `kind` in `namespace`.
    pub async fn list(&self, kind: Kind, namespace: &str) -> Result<Vec<Value>, kube::Error> {
        let list = self.api(kind, namespace).list(&Default::default()).await?;
        list.items
            .into_iter()
            .map(|o| serde_json::to_value(o).map_err(kube::Error::SerdeError))
            .collect()
    }

    /// Creates an object (`apiVersion` and `kind` are filled in).
    pub async fn create(&self, kind: Kind, namespace: &str, mut obj: Value) -> Result<Value, kube::Error> {
        obj["apiVersion"] = Value::from(kind.api_version());
        obj["kind"] = Value::from(kind.kind);
        let dynamic: DynamicObject = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
        let name = dynamic.metadata.name.clone().unwrap_or_default();
        let created = self
            .api(kind, namespace)
            .create(&PostParams::default(), &dynamic)
            .await?;
        let created = serde_json::to_value(created).map_err(kube::Error::SerdeError)?;
        self.wrote(kind, namespace, &name, Some(&created));
        Ok(created)
    }

    /// Read-modify-write: `f` edits a copy of the object; the difference is sent as a merge patch
    /// guarded by the object's resourceVersion, retried on conflicts. Nothing is written when
    /// `f` changes nothing. `Ok(None)` when the object does not exist.
    pub async fn modify<F>(&self, kind: Kind, namespace: &str, name: &str, mut f: F) -> Result<Option<Value>>
    where
        F: FnMut(&mut Value) -> Result<(), String> + Send,
    {
        let what = || format!("{} {name}.{namespace}", kind.kind);
        for attempt in 0..CONFLICT_RETRIES {
            // A conflict may come from a stale cached copy: retries read the API server.
            let read = if attempt == 0 {
                self.get(kind, namespace, name).await
            } else {
                self.get_fresh(kind, namespace, name).await
            };
            let Some(current) = read.map_err(|e| Error::api(format!("reading {}", what()), e))? else {
                return Ok(None);
            };
            let mut next = current.clone();
            f(&mut next).map_err(Error::Invalid)?;
            if next == current {
                return Ok(Some(current));
            }
            let mut patch = merge_diff(&current, &next);
            patch["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            match self
                .api(kind, namespace)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(o) => return self.written(kind, namespace, name, o).map(Some),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!("conflict writing {}; retrying", what());
                    continue;
                }
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(Error::api(format!("updating {}", what()), e)),
            }
        }
        Err(Error::Conflict(what()))
    }

    /// Creates the object built by `create` when it is missing, otherwise applies `update` to it
    /// (see [`Kube::modify`]). A concurrent creation is retried as an update.
    pub async fn upsert<C, F>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        create: C,
        mut update: F,
    ) -> Result<Value>
    where
        C: Fn() -> Result<Value, String> + Send,
        F: FnMut(&mut Value) -> Result<(), String> + Send,
    {
        for _ in 0..CONFLICT_RETRIES {
            if let Some(o) = self.modify(kind, namespace, name, &mut update).await? {
                return Ok(o);
            }
            let mut obj = create().map_err(Error::Invalid)?;
            obj["metadata"]["name"] = Value::from(name);
            obj["metadata"]["namespace"] = Value::from(namespace);
            match self.create(kind, namespace, obj).await {
                Ok(o) => return Ok(o),
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => continue,
                Err(e) => {
                    return Err(Error::api(
                        format!("creating {} {name}.{namespace}", kind.kind),
                        e,
                    ));
                }
            }
        }
        Err(Error::Conflict(format!("{} {name}.{namespace}", kind.kind)))
    }

    /// Merge-patches `.status` through the status subresource so that it equals `status`
    /// (removed fields are deleted). `Ok(false)` when the object is gone.
    pub async fn write_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        status: &Value,
    ) -> Result<bool> {
        let what = || format!("the status of {} {name}.{namespace}", kind.kind);
        let Some(current) = self
            .get(kind, namespace, name)
            .await
            .map_err(|e| Error::api(format!("reading {}", what()), e))?
        else {
            return Ok(false);
        };
        let old = current.get("status").cloned().unwrap_or(json!({}));
        if &old == status {
            return Ok(true);
        }
        let diff = if old.is_object() {
            merge_diff(&old, status)
        } else {
            status.clone()
        };
        let patch = json!({ "status": diff });
        match self
            .api(kind, namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(o) => self.written(kind, namespace, name, o).map(|_| true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(Error::api(format!("writing {}", what()), e)),
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<()> {
        match self
            .api(kind, namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                self.wrote(kind, namespace, name, None);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::api(
                format!("deleting {} {name}.{namespace}", kind.kind),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_removes_changes_and_adds() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"});
        let new = json!({"a": 1, "b": {"c": 2, "g": 4}, "e": [1], "h": true});
        assert_eq!(
            merge_diff(&old, &new),
            json!({"b": {"d": null, "g": 4}, "e": [1], "f": null, "h": true})
        );
        assert_eq!(merge_diff(&old, &old), json!({}));
    }

    #[test]
    fn a_403_names_the_missing_verb_and_resource() {
        let forbidden = |message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, "Forbidden")
                    .with_code(403)
                    .boxed(),
            )
        };
        let e = forbidden(
            r#"deployments.apps "podinfo" is forbidden: User "system:serviceaccount:test:aviary-agent" cannot patch resource "deployments" in API group "apps" in the namespace "test""#,
        );
        assert!(
            describe(&e).starts_with(
                r#"missing permission: patch deployments.apps (deployments.apps "podinfo" is forbidden: User"#
            ),
            "{}",
            describe(&e)
        );
        assert!(
            describe(&e).ends_with("grant it in the agent's ClusterRole (deploy/rbac/cluster-role.yaml)")
        );
        let e = forbidden(
            r#"canaries.flagger.app "podinfo" is forbidden: User "u" cannot patch resource "canaries/status" in API group "flagger.app" in the namespace "test""#,
        );
        assert!(describe(&e).starts_with("missing permission: patch canaries.flagger.app/status ("));
        let e = forbidden(
            r#"services "x" is forbidden: User "u" cannot create resource "services" in API group "" in the namespace "t""#,
        );
        assert!(describe(&e).starts_with("missing permission: create services ("));
        assert_eq!(describe(&forbidden("no reason given")), "no reason given");
    }

    #[test]
    fn subsets_ignore_server_defaults_but_not_changes() {
        let live = json!({"parentRefs": [{"group": "g", "kind": "Gateway", "name": "gw"}], "rules": [{"matches": [{"path": "/"}], "backendRefs": [{"name": "a", "weight": 90}]}]});
        assert!(is_subset(
            &json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "a", "weight": 90}]}]}),
            &live
        ));
        assert!(!is_subset(
            &json!({"rules": [{"backendRefs": [{"name": "a", "weight": 80}]}]}),
            &live
        ));
        assert!(!is_subset(
            &json!({"parentRefs": [{"name": "gw"}, {"name": "other"}]}),
            &live
        ));
    }

    #[test]
    fn annotations_are_set_and_removed() {
        let mut o = json!({"metadata": {"name": "x"}});
        set_annotation(&mut o, "k", Some("v"));
        assert_eq!(annotation(&o, "k"), Some("v"));
        set_annotation(&mut o, "k", None);
        assert_eq!(annotation(&o, "k"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_qps() {
        let l = RateLimitLayer::new(ClientSettings {
            qps: 10.0,
            burst: 2,
            watch_cache: false,
        });
        assert_eq!(l.reserve(), Duration::ZERO);
        assert_eq!(l.reserve(), Duration::ZERO);
        let w = l.reserve();
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.reserve(), Duration::ZERO);
    }
}
