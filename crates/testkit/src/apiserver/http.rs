//! The HTTP side: routing of Kubernetes REST paths, content negotiation (JSON, Table,
//! PartialObjectMetadata), list pagination and watch streams.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::discovery;
use super::patch::PatchKind;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{DeleteOptions, Event, EventType, Part, Store, WatchStart};
use super::table::{self, IncludeObject};
use crate::error::{Error, Result};

/// Shared state of the HTTP handlers.
pub(crate) struct App {
    pub(crate) store: Arc<Store>,
    pub(crate) cancel: CancellationToken,
    pub(crate) kube_version: String,
    pub(crate) server_address: String,
    pub(crate) bookmark_interval: Duration,
    /// Whether `/api` and `/apis` answer aggregated discovery when asked for it.
    pub(crate) aggregated_discovery: bool,
    /// Watch requests served so far (tests use it to see a client re-watch).
    pub(crate) watches: AtomicU64,
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

const MAX_BODY: usize = 32 * 1024 * 1024;
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &Error) -> Response {
    json_response(e.code(), &e.to_status())
}

fn not_found_path() -> Error {
    Error::NotFound {
        message: "the server could not find the requested resource".into(),
        name: String::new(),
        group: String::new(),
        kind: String::new(),
    }
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let response = match dispatch(&app, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(%method, path, query, status = response.status().as_u16(), "fake-apiserver request");
    response
}

/// The query parameters the fake understands.
#[derive(Debug, Default)]
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// How a request addresses resources.
struct Target {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Sub,
}

/// The subresource a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    None,
    Status,
    Scale,
}

/// Output form chosen from the Accept header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Json,
    Table(IncludeObject),
    Metadata,
}

fn output(headers: &HeaderMap, params: &Params) -> Result<Output> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut json_ok = false;
    for part in accept.split(',') {
        let part = part.trim();
        let media = part.split(';').next().unwrap_or_default().trim();
        if media != "application/json" && media != "*/*" && media != "application/*" {
            continue;
        }
        if part.contains("as=Table") {
            return Ok(Output::Table(IncludeObject::parse(params.get("includeObject"))));
        }
        if part.contains("as=PartialObjectMetadata") {
            return Ok(Output::Metadata);
        }
        if !part.contains("as=") {
            json_ok = true;
        }
    }
    if json_ok {
        Ok(Output::Json)
    } else {
        Err(Error::NotAcceptable(format!(
            "only application/json (optionally as=Table or as=PartialObjectMetadata) is served, not {accept:?}"
        )))
    }
}

async fn body_json(req: Request) -> Result<Value> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or_default().trim().to_string();
    let bytes = body_bytes(req).await?;
    match media.as_str() {
        "application/json" | "" => serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("error decoding JSON body: {e}"))),
        "application/yaml" => serde_yaml_ng::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("error decoding YAML body: {e}"))),
        "application/vnd.kubernetes.protobuf" => super::proto::decode(&bytes),
        other => Err(Error::UnsupportedMediaType(format!(
            "the body of the request was in an unsupported format ({other:?}); send application/json"
        ))),
    }
}

async fn body_bytes(req: Request) -> Result<Bytes> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| Error::BadRequest(format!("reading the request body: {e}")))
}

async fn dispatch(app: &Arc<App>, req: Request) -> Result<Response> {
    let params = Params {
        pairs: Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .map(|q| q.0)
            .unwrap_or_default(),
    };
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    if req.method() == Method::GET {
        let types = || app.store.resource_types();
        match segs.as_slice() {
            ["healthz" | "livez" | "readyz"] | [] => {
                return Ok(Response::new(Body::from("ok")));
            }
            ["version"] => return ok(discovery::version(&app.kube_version)),
            ["api" | "apis"] => {
                let core = segs[0] == "api";
                if let Some(av) = app
                    .aggregated_discovery
                    .then(|| aggregated_version(req.headers()))
                    .flatten()
                {
                    let mut r = json_response(StatusCode::OK, &discovery::aggregated(&types(), core, av));
                    let ct = format!(
                        "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList",
                        av.rsplit('/').next().unwrap_or("v2")
                    );
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, ct.parse().expect("valid header value"));
                    return Ok(r);
                }
                if core {
                    return ok(discovery::core_versions(&app.server_address));
                }
                return ok(discovery::group_list(&types()));
            }
            ["api", v] => return discovery::resource_list(&types(), "", v).map_or(Err(not_found_path()), ok),
            ["apis", g] => return discovery::group(&types(), g).map_or(Err(not_found_path()), ok),
            ["apis", g, v] => {
                return discovery::resource_list(&types(), g, v).map_or(Err(not_found_path()), ok);
            }
            ["openapi", "v2"] => return Ok(openapi_v2(app, req.headers())),
            ["openapi", "v3"] => return ok(discovery::openapi_v3_root()),
            ["openapi", ..] => return Err(not_found_path()),
            _ => {}
        }
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Err(not_found_path()),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let target = resolve(&app.store, group, version, rest)?;
    let method = req.method().clone();
    match (method, target.name.is_some()) {
        (Method::GET, false) if legacy_watch || params.flag("watch") => {
            let out = output(req.headers(), &params)?;
            watch(app, &target, &params, out)
        }
        (Method::GET, false) => {
            let out = output(req.headers(), &params)?;
            list(app, &target, &params, out)
        }
        (Method::GET, true) if legacy_watch || params.flag("watch") => {
            // A watch on one name (legacy `/watch/.../NAME` or `NAME?watch=1`) = a watch with a
            // metadata.name field selector.
            let out = output(req.headers(), &params)?;
            let mut p = params;
            let name = target.name.clone().unwrap_or_default();
            let fs = match p.get("fieldSelector") {
                Some(f) if !f.is_empty() => format!("{f},metadata.name={name}"),
                _ => format!("metadata.name={name}"),
            };
            p.pairs.push(("fieldSelector".into(), fs));
            let t = Target { name: None, ..target };
            watch(app, &t, &p, out)
        }
        (Method::GET, true) => {
            let out = output(req.headers(), &params)?;
            let name = target.name.as_deref().unwrap_or_default();
            let obj = app.store.get_at(&target.rt, target.namespace.as_deref(), name)?;
            if target.sub == Sub::Scale {
                return Ok(json_response(StatusCode::OK, &scale_doc(&target, &obj)));
            }
            Ok(render_one(&target, obj, out))
        }
        (Method::PUT, true) if target.sub == Sub::Scale => {
            let body = body_json(req).await?;
            scale_write(app, &target, &body, params.dry_run())
        }
        (Method::PATCH, true) if target.sub == Sub::Scale => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(ct)?;
            let body = body_bytes(req).await?;
            let name = target.name.as_deref().unwrap_or_default();
            let obj = app.store.get_at(&target.rt, target.namespace.as_deref(), name)?;
            let mut scale = scale_doc(&target, &obj);
            super::patch::apply(&mut scale, kind, &body)?;
            scale_write(app, &target, &scale, params.dry_run())
        }
        (Method::POST, false) => {
            let body = body_json(req).await?;
            let obj = app.store.create_at(
                &target.rt,
                &target.version,
                target.namespace.as_deref(),
                body,
                Part::Main,
                params.dry_run(),
            )?;
            Ok(json_response(StatusCode::CREATED, &relabel(&target, obj)))
        }
        (Method::PUT, true) => {
            let name = target.name.clone().unwrap_or_default();
            let body = body_json(req).await?;
            let part = if target.sub == Sub::Status {
                Part::Status
            } else {
                Part::Main
            };
            let obj = app.store.update_at(
                &target.rt,
                &target.version,
                target.namespace.as_deref(),
                &name,
                body,
                part,
                params.dry_run(),
            )?;
            Ok(json_response(StatusCode::OK, &relabel(&target, obj)))
        }
        (Method::PATCH, true) => {
            let name = target.name.clone().unwrap_or_default();
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(ct)?;
            let body = body_bytes(req).await?;
            let part = if target.sub == Sub::Status {
                Part::Status
            } else {
                Part::Main
            };
            let obj = app.store.patch_at(
                &target.rt,
                &target.version,
                target.namespace.as_deref(),
                &name,
                kind,
                &body,
                part,
                params.dry_run(),
            )?;
            Ok(json_response(StatusCode::OK, &relabel(&target, obj)))
        }
        (Method::DELETE, true) if target.sub == Sub::None => {
            let name = target.name.clone().unwrap_or_default();
            let opts = delete_options(req, &params).await?;
            let obj = app
                .store
                .delete_at(&target.rt, target.namespace.as_deref(), &name, &opts)?;
            Ok(json_response(StatusCode::OK, &relabel(&target, obj)))
        }
        (Method::DELETE, false) => {
            let opts = delete_options(req, &params).await?;
            let (labels, fields) = selectors(&target, &params)?;
            let (items, rv) = app
                .store
                .list_at(&target.rt, target.namespace.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for o in items {
                let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let ns = o["metadata"]["namespace"].as_str().map(str::to_string);
                match app.store.delete_at(&target.rt, ns.as_deref(), &name, &opts) {
                    Ok(o) => deleted.push(relabel(&target, o)),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &list_doc(&target, deleted, rv, None, None),
            ))
        }
        (m, _) => Err(Error::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({m} {path})"
        ))),
    }
}

/// The aggregated discovery apiVersion the Accept header prefers, if it prefers one at all.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if params.contains(&"as=APIGroupDiscoveryList") && params.contains(&"g=apidiscovery.k8s.io") {
            if params.contains(&"v=v2") {
                return Some("apidiscovery.k8s.io/v2");
            }
            if params.contains(&"v=v2beta1") {
                return Some("apidiscovery.k8s.io/v2beta1");
            }
        } else if params
            .first()
            .is_some_and(|m| *m == "application/json" || *m == "*/*")
        {
            return None;
        }
    }
    None
}

fn openapi_v2(app: &App, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("protobuf") {
        // A zero-length protobuf message is a valid, empty openapi_v2.Document.
        let mut r = Response::new(Body::empty());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
        );
        return r;
    }
    json_response(StatusCode::OK, &discovery::openapi_v2_json(&app.kube_version))
}

fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> Result<Target> {
    let lookup = |plural: &str| -> Option<ResourceType> {
        store
            .resource(group, plural)
            .filter(|rt| rt.version(version).is_some())
    };
    let make =
        |rt: ResourceType, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| -> Result<Target> {
            if rt.namespaced != ns.is_some() && name.is_some() {
                return Err(not_found_path());
            }
            let sub = match sub {
                None => Sub::None,
                Some("status") if rt.has_status(version) => Sub::Status,
                Some("scale") if rt.scale(version).is_some() => Sub::Scale,
                Some(_) => return Err(not_found_path()),
            };
            Ok(Target {
                rt,
                version: version.to_string(),
                namespace: ns.map(str::to_string),
                name: name.map(str::to_string),
                sub,
            })
        };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            if let Some(rt) = lookup(plural).filter(|rt| rt.namespaced) {
                return make(rt, Some(ns), tail.first().copied(), tail.get(1).copied());
            }
            // `/api/v1/namespaces/{name}/status`: a subresource of the Namespace itself.
            match (lookup("namespaces"), tail) {
                (Some(rt), []) => make(rt, None, Some(ns), Some(plural)),
                _ => Err(not_found_path()),
            }
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let rt = lookup(plural).ok_or_else(not_found_path)?;
            if rt.namespaced && !tail.is_empty() {
                return Err(not_found_path());
            }
            make(rt, None, tail.first().copied(), tail.get(1).copied())
        }
        _ => Err(not_found_path()),
    }
}

/// Reads a dotted path (`.spec.replicas`).
fn get_path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .trim_start_matches('.')
        .split('.')
        .try_fold(obj, |v, k| v.get(k))
}

/// Writes a dotted path, creating objects on the way.
fn set_path(obj: &mut Value, dotted: &str, v: Value) {
    let mut cur = obj;
    let keys: Vec<&str> = dotted.trim_start_matches('.').split('.').collect();
    for k in &keys[..keys.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[keys[keys.len() - 1]] = v;
}

/// The `autoscaling/v1` Scale of an object.
fn scale_doc(target: &Target, obj: &Value) -> Value {
    let Some(def) = target.rt.scale(&target.version) else {
        return Value::Null;
    };
    let selector = match &def.label_selector {
        Some(p) => get_path(obj, p).cloned().unwrap_or(Value::Null),
        // Deployments: the selector's matchLabels as a selector string.
        None => Value::from(
            obj["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
    };
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                     "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": get_path(obj, &def.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": get_path(obj, &def.status_replicas).and_then(Value::as_i64).unwrap_or(0),
                   "selector": selector},
    })
}

/// Applies a Scale's `spec.replicas` to the object (with the Scale's resourceVersion, if any).
fn scale_write(app: &App, target: &Target, scale: &Value, dry_run: bool) -> Result<Response> {
    let def = target.rt.scale(&target.version).ok_or_else(not_found_path)?;
    let name = target.name.as_deref().unwrap_or_default();
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Required value: a number >= 0"
            ))
        })?;
    let mut patch = json!({});
    set_path(&mut patch, &def.spec_replicas, Value::from(replicas));
    if let Some(rv) = scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
    {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let body = serde_json::to_vec(&patch).map_err(|e| Error::Internal(e.to_string()))?;
    let obj = app.store.patch_at(
        &target.rt,
        &target.version,
        target.namespace.as_deref(),
        name,
        PatchKind::Merge,
        &body,
        Part::Main,
        dry_run,
    )?;
    Ok(json_response(StatusCode::OK, &scale_doc(target, &obj)))
}

fn relabel(target: &Target, mut obj: Value) -> Value {
    obj["apiVersion"] = Value::from(target.rt.api_version(&target.version));
    obj["kind"] = Value::from(target.rt.kind.clone());
    obj
}

fn render_one(target: &Target, obj: Value, out: Output) -> Response {
    let obj = relabel(target, obj);
    let rv = obj["metadata"]["resourceVersion"].clone();
    let v = match out {
        Output::Json => obj,
        Output::Metadata => table::partial_metadata(&obj),
        Output::Table(include) => {
            let mut meta = Map::new();
            meta.insert("resourceVersion".into(), rv);
            table::table(&target.rt, &target.version, &[obj], include, meta)
        }
    };
    json_response(StatusCode::OK, &v)
}

fn selectors(target: &Target, params: &Params) -> Result<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default(), &target.rt)?;
    Ok((labels, fields))
}

fn list_doc(
    target: &Target,
    items: Vec<Value>,
    rv: u64,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::from(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = Value::from(r);
    }
    json!({
        "kind": target.rt.list_kind,
        "apiVersion": target.rt.api_version(&target.version),
        "metadata": meta,
        "items": items,
    })
}

/// Continue tokens carry the resourceVersion of the first page and the last key served.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!({"rv": rv, "ns": ns, "name": name}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String)> {
    let bad = || {
        Error::BadRequest(format!(
            "invalid continue token {token:?}: pass the token of the previous page"
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        v["ns"].as_str().ok_or_else(bad)?.to_string(),
        v["name"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

fn list(app: &App, target: &Target, params: &Params, out: Output) -> Result<Response> {
    let (labels, fields) = selectors(target, params)?;
    let (mut items, mut rv) = app
        .store
        .list_at(&target.rt, target.namespace.as_deref(), &labels, &fields);
    // Pages read the current state; reporting the first page's resourceVersion makes a watch
    // started from it replay whatever changed meanwhile.
    if let Some(token) = params.get("continue").filter(|t| !t.is_empty()) {
        let (first_rv, ns, name) = decode_continue(token)?;
        rv = first_rv;
        items.retain(|o| {
            let k = (
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
            );
            k > (ns.as_str(), name.as_str())
        });
    }
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut cont = None;
    let mut remaining = None;
    if let Some(limit) = limit.filter(|l| items.len() > *l) {
        let rest = items.split_off(limit);
        let last = items.last().map(|o| &o["metadata"]).cloned().unwrap_or_default();
        cont = Some(encode_continue(
            rv,
            last["namespace"].as_str().unwrap_or_default(),
            last["name"].as_str().unwrap_or_default(),
        ));
        remaining = Some(rest.len());
    }
    let items: Vec<Value> = items.into_iter().map(|o| relabel(target, o)).collect();
    let doc = match out {
        Output::Json => list_doc(target, items, rv, cont, remaining),
        Output::Metadata => {
            let mut d = list_doc(
                target,
                items.iter().map(table::partial_metadata).collect(),
                rv,
                cont,
                remaining,
            );
            d["kind"] = json!("PartialObjectMetadataList");
            d["apiVersion"] = json!("meta.k8s.io/v1");
            d
        }
        Output::Table(include) => {
            let mut meta = Map::new();
            meta.insert("resourceVersion".into(), Value::from(rv.to_string()));
            if let Some(c) = cont {
                meta.insert("continue".into(), Value::from(c));
            }
            table::table(&target.rt, &target.version, &items, include, meta)
        }
    };
    Ok(json_response(StatusCode::OK, &doc))
}

async fn delete_options(req: Request, params: &Params) -> Result<DeleteOptions> {
    let protobuf = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("protobuf"));
    let bytes = body_bytes(req).await?;
    // Protobuf DeleteOptions are not decoded: the query parameters still apply.
    let body: Value = if protobuf || bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .or(params.get("propagationPolicy"))
        .unwrap_or("Background");
    let dry_run = params.dry_run()
        || body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        orphan: policy == "Orphan" || body["orphanDependents"].as_bool() == Some(true),
        dry_run,
    })
}

// === watch ===

/// How one event looks to one watcher (selectors turn MODIFIED into ADDED/DELETED when an object
/// starts or stops matching, like the API server's watch cache).
fn watch_type(
    ev: &Event,
    target: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<&'static str> {
    if ev.group != target.rt.group || ev.plural != target.rt.plural {
        return None;
    }
    if target.namespace.as_deref().is_some_and(|n| n != ev.namespace()) {
        return None;
    }
    let matches = |o: &Value| labels.matches(o) && fields.matches(o);
    match ev.type_ {
        EventType::Added => matches(&ev.object).then_some("ADDED"),
        EventType::Deleted => matches(&ev.object).then_some("DELETED"),
        EventType::Modified => {
            let now = matches(&ev.object);
            let before = ev.old.as_ref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

fn watch_line(type_: &str, object: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(app: &App, target: &Target, params: &Params, out: Output) -> Result<Response> {
    app.watches.fetch_add(1, Ordering::SeqCst);
    let (labels, fields) = selectors(target, params)?;
    let initial_events = params.flag("sendInitialEvents");
    let since = match params.get("resourceVersion").unwrap_or_default() {
        _ if initial_events => None,
        "" | "0" => None,
        rv => Some(rv.parse::<u64>().map_err(|_| {
            Error::BadRequest(format!(
                "invalid resourceVersion {rv:?}: must be a resourceVersion returned by this server"
            ))
        })?),
    };
    let bookmarks = params.flag("allowWatchBookmarks");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let render = {
        let target_rt = target.rt.clone();
        let version = target.version.clone();
        move |obj: &Value| -> Value {
            let mut obj = obj.clone();
            obj["apiVersion"] = Value::from(target_rt.api_version(&version));
            obj["kind"] = Value::from(target_rt.kind.clone());
            match out {
                Output::Json => obj,
                Output::Metadata => table::partial_metadata(&obj),
                Output::Table(include) => {
                    let mut meta = Map::new();
                    meta.insert(
                        "resourceVersion".into(),
                        obj["metadata"]["resourceVersion"].clone(),
                    );
                    table::table(&target_rt, &version, &[obj], include, meta)
                }
            }
        }
    };
    let bookmark = {
        let kind = target.rt.kind.clone();
        let av = target.rt.api_version(&target.version);
        move |rv: u64, initial_end: bool| -> Bytes {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_line(
                "BOOKMARK",
                json!({"kind": kind, "apiVersion": av, "metadata": meta}),
            )
        }
    };
    let start = app.store.watch_at(&target.rt, since);
    let target = Target {
        rt: target.rt.clone(),
        version: target.version.clone(),
        namespace: target.namespace.clone(),
        name: None,
        sub: Sub::None,
    };
    let cancel = app.cancel.clone();
    let interval = app.bookmark_interval;
    tokio::spawn(async move {
        let WatchStart {
            first,
            mut live,
            rv: mut last_rv,
        } = match start {
            Ok(s) => s,
            Err(e) => {
                // Like the API server: a 200 stream with one ERROR event (kube-rs re-lists on 410).
                let _ = tx.send(watch_line("ERROR", e.to_status())).await;
                return;
            }
        };
        let start_rv = last_rv;
        for ev in &first {
            if let Some(t) = watch_type(ev, &target, &labels, &fields)
                && tx.send(watch_line(t, render(&ev.object))).await.is_err()
            {
                return;
            }
        }
        if initial_events && tx.send(bookmark(last_rv, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = tx.send(bookmark(last_rv, false)).await;
                    }
                    return;
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) if ev.rv <= start_rv => {}
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if let Some(t) = watch_type(&ev, &target, &labels, &fields)
                            && tx.send(watch_line(t, render(&ev.object))).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that falls behind is closed; the client resumes from its last
                    // resourceVersion, which the history still holds.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
