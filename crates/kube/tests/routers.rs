//! Every traffic provider's router against the real kube-apiserver (testkit's control plane, one
//! per test binary) with the provider's CRDs installed: Contour's HTTPProxy and Traefik's
//! TraefikService from their Go modules (v1.33.8, v3.7.13, exported by build.sh); SMI, App Mesh,
//! Gloo, Kuma and APISIX from schemas written from their API references
//! (crates/testkit/crds/providers.yaml: their modules are not served by the Go proxy); Ingress and
//! HTTPRoute v1beta1 are the server's / Gateway API v1.6.3's own.
//!
//! Each test takes the router the platform picks for `spec.provider` (with the canary's ClusterIP
//! Services) through the calls the engine makes — initialization, a weighted step, A/B where
//! Flagger supports it, blue/green's switch, promotion/rollback (back to 100/0), a second
//! reconcile that must write nothing, revert on deletion — and compares the stored objects field
//! by field with what Flagger 1.44 writes for the same Canary (the lines of pkg/router/*.go are
//! cited at each comparison). The API server validates every write against the CRD's schema.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aviary_api::Canary;
use aviary_core::ports::{Router, Routes};
use aviary_kube::{KubePlatform, KubeSettings};
use aviary_testkit::kube_env::canary;
use common::*;
use serde_json::{Value, json};

/// Flux's annotations on every object Flagger generates from `service.apex` (util.go:31-39).
fn flux() -> Value {
    json!({"kustomize.toolkit.fluxcd.io/reconcile": "disabled", "helm.toolkit.fluxcd.io/driftDetection": "disabled"})
}

/// The shared cluster with every provider's CRDs, a podinfo Deployment and the canary from `yaml`.
async fn setup(name: &str, yaml: &str) -> (Env, Canary, Arc<dyn Router>) {
    setup_with(name, yaml, KubeSettings::default()).await
}

async fn setup_with(name: &str, yaml: &str, settings: KubeSettings) -> (Env, Canary, Arc<dyn Router>) {
    let env = start(name).await;
    env.cluster
        .install_provider_crds()
        .await
        .expect("the providers' CRDs install");
    env.create(deployment(&env.ns, "podinfo", "podinfo:6.0.0")).await;
    let c = env.canary(yaml).await;
    let router = KubePlatform::new(env.kube.clone(), settings).router(&c);
    (env, c, router)
}

impl Env {
    /// A second reconcile rewrites neither the spec (generation) nor labels and annotations
    /// (the resourceVersion also moves with status writes of the gateway stand-in).
    async fn reconcile_is_idempotent(
        &self,
        router: &Arc<dyn Router>,
        c: &Canary,
        api_version: &str,
        kind: &str,
        name: &str,
    ) {
        let before = self.obj(api_version, kind, name).await;
        router.reconcile(c).await.unwrap();
        let after = self.obj(api_version, kind, name).await;
        for field in ["generation", "labels", "annotations"] {
            assert_eq!(
                after["metadata"][field], before["metadata"][field],
                "a second reconcile rewrote {kind} {name}: {before:#}\n{after:#}"
            );
        }
        assert_eq!(after["spec"], before["spec"]);
    }

    /// The generated object (API version, kind, name) is the canary's and a second reconcile
    /// leaves it alone.
    async fn owned_and_idempotent(&self, router: &Arc<dyn Router>, c: &Canary, obj: (&str, &str, &str)) {
        let (api_version, kind, name) = obj;
        owner_is_canary(&self.obj(api_version, kind, name).await, c);
        self.reconcile_is_idempotent(router, c, api_version, kind, name)
            .await;
    }

    /// Deletes the canary and waits for the garbage collector to remove `name` (owner refs).
    async fn delete_canary_and_wait_gone(&self, api_version: &str, kind: &str, name: &str) {
        self.objects
            .delete("flagger.app/v1beta1", "Canary", Some(&self.ns), "podinfo")
            .await
            .unwrap();
        self.objects
            // The garbage collector finds kinds installed after it started on its next
            // discovery pass (every 30 s).
            .wait_gone(api_version, kind, Some(&self.ns), name, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} goes with the canary: {e}"));
    }
}

/// Sets the split as a step of the engine does, and reads it back through the router.
async fn set_and_read(router: &Arc<dyn Router>, c: &Canary, primary: i32, canary: i32) {
    let routes = Routes::split(primary, canary);
    router.set_routes(c, &routes).await.unwrap();
    assert_eq!(router.get_routes(c).await.unwrap(), routes);
}

/// Adds annotations (key, value) to an annotations object.
fn annotate(annotations: &mut Value, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        annotations[k] = json!(v);
    }
}

fn owner_is_canary(obj: &Value, c: &Canary) {
    let r = &obj["metadata"]["ownerReferences"][0];
    assert_eq!(r["kind"], "Canary", "{obj:#}");
    assert_eq!(r["name"], c.name());
    assert_eq!(r["uid"], c.metadata.uid.clone().unwrap().as_str());
    assert_eq!(r["controller"], true);
}

fn with_match(c: &Canary, matches: Value) -> Canary {
    let mut c = c.clone();
    c.spec.analysis.as_mut().unwrap().match_ = Some(serde_json::from_value(matches).unwrap());
    c
}

// === nginx (pkg/router/ingress.go) ===

/// The nginx canary (skipper's too, with its provider).
fn nginx(provider: &str) -> String {
    canary(
        provider,
        r#"
  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}
  service: {port: 80, targetPort: 9898}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}
"#,
    )
}

fn user_ingress(annotations: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
    "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}, "annotations": annotations},
    "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}},
        {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "cdn", "port": {"number": 80}}}},
    ]}}]}})
}

#[tokio::test]
async fn nginx_canary_ingress_with_weight_and_header_annotations() {
    let (env, c, router) = setup("nginx-router", &nginx("nginx")).await;
    let ab = with_match(
        &c,
        json!([{"headers": {"x-canary": {"exact": "insider"}}}, {"headers": {"cookie": {"exact": "canary"}}}]),
    );
    // Without the Ingress: Flagger's error, with the path to fix.
    let e = router.reconcile(&c).await.unwrap_err();
    assert_eq!(
        e,
        env.msg("ingress podinfo.test get query error: ingresses.networking.k8s.io \"podinfo\" not found")
    );
    env.create(user_ingress(
        json!({"owner": "team-a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
    ))
    .await;
    router.reconcile(&c).await.unwrap();

    // ingress.go:57-103: a copy of the Ingress, backend renamed to podinfo-canary, the user's
    // labels, makeAnnotations(user's annotations) = filterMetadata + canary "true", weight "0",
    // without kubectl's annotation.
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    let mut spec = user_ingress(json!({}))["spec"].clone();
    spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("podinfo-canary");
    assert_eq!(ing["spec"], spec);
    assert_eq!(ing["metadata"]["labels"], json!({"app": "podinfo"}));
    let mut annotations = flux();
    annotate(
        &mut annotations,
        &[
            ("owner", "team-a"),
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "0"),
        ],
    );
    assert_eq!(ing["metadata"]["annotations"], annotations);
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(100, 0));
    env.owned_and_idempotent(&router, &c, ("networking.k8s.io/v1", "Ingress", "podinfo-canary"))
        .await;

    // A weighted step (ingress.go:195-205): canary-weight and canary "true".
    router.set_routes(&c, &Routes::split(90, 10)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    annotations["nginx.ingress.kubernetes.io/canary-weight"] = json!("10");
    assert_eq!(ing["metadata"]["annotations"], annotations);
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(90, 10));

    // Blue/green's switch: everything to the canary.
    set_and_read(&router, &c, 0, 100).await;

    // Promotion or rollback: back to weight 0 (makeAnnotations).
    router.set_routes(&c, &Routes::split(100, 0)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    annotations["nginx.ingress.kubernetes.io/canary-weight"] = json!("0");
    assert_eq!(ing["metadata"]["annotations"], annotations);
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(100, 0));

    // A/B (ingress.go:180-194, :235-263): header, header value and cookie; Flagger's filter on
    // annotation values keeps canary-weight "0".
    router.set_routes(&ab, &Routes::split(0, 100)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    let mut ab_annotations = annotations.clone();
    annotate(
        &mut ab_annotations,
        &[
            ("nginx.ingress.kubernetes.io/canary-by-header", "x-canary"),
            ("nginx.ingress.kubernetes.io/canary-by-header-value", "insider"),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
        ],
    );
    assert_eq!(ing["metadata"]["annotations"], ab_annotations);
    // ingress.go:137-144: with header annotations an A/B canary has all the matching traffic.
    assert_eq!(router.get_routes(&ab).await.unwrap(), Routes::split(0, 100));
    let regex = with_match(&c, json!([{"headers": {"user-agent": {"regex": ".*Firefox.*"}}}]));
    router.set_routes(&regex, &Routes::split(0, 100)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
        ".*Firefox.*"
    );
    // The A/B test ends: the header annotations go.
    router.set_routes(&ab, &Routes::split(100, 0)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    assert_eq!(ing["metadata"]["annotations"], annotations);

    // Revert on deletion: nothing to revert in the user's Ingress (Finalize is a no-op,
    // ingress.go:269-271); the canary Ingress goes with the canary.
    router.finalize(&c).await.unwrap();
    let user = env.obj("networking.k8s.io/v1", "Ingress", "podinfo").await;
    assert_eq!(user["spec"], user_ingress(json!({}))["spec"]);
    assert_eq!(
        env.obj("v1", "Service", "podinfo").await["spec"]["selector"],
        json!({"app": "podinfo"}),
        "the apex Service selects the target again"
    );
    env.delete_canary_and_wait_gone("networking.k8s.io/v1", "Ingress", "podinfo-canary")
        .await;
}

#[tokio::test]
async fn nginx_errors_name_the_field() {
    let (env, c, router) = setup("nginx-errors", &nginx("nginx")).await;
    let mut no_ref = c.clone();
    no_ref.spec.ingress_ref = None;
    let e = router.reconcile(&no_ref).await.unwrap_err();
    assert_eq!(
        e,
        env.msg("ingress selector is empty (spec.ingressRef.name of canary podinfo.test names the Ingress to split)")
    );
    let mut other = user_ingress(json!({}));
    other["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("web");
    env.create(other).await;
    assert_eq!(
        router.reconcile(&c).await.unwrap_err(),
        "backend podinfo not found in ingress podinfo"
    );
}

// === skipper (pkg/router/skipper.go) ===

#[tokio::test]
async fn skipper_canary_ingress_with_backend_weights() {
    let (env, c, router) = setup("skipper-router", &nginx("skipper")).await;
    let mut user = user_ingress(json!({"zalando.org/skipper-predicate": "Host(/^app/)"}));
    user["spec"]["ingressClassName"] = json!("skipper");
    env.create(user.clone()).await;
    router.reconcile(&c).await.unwrap();

    // skipper.go:79-110: the Ingress copied, the apex backend flipped to the primary plus a
    // canary path; backend weights {canary 0, primary 100} (Go's sorted JSON) and the
    // Weight(100) predicate first.
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    let mut spec = user["spec"].clone();
    spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("podinfo-primary");
    let mut canary_path = spec["rules"][0]["http"]["paths"][0].clone();
    canary_path["backend"]["service"]["name"] = json!("podinfo-canary");
    spec["rules"][0]["http"]["paths"]
        .as_array_mut()
        .unwrap()
        .push(canary_path);
    assert_eq!(ing["spec"], spec);
    assert_eq!(
        ing["metadata"]["annotations"],
        json!({
            "zalando.org/backend-weights": r#"{"podinfo-canary":0,"podinfo-primary":100}"#,
            "zalando.org/skipper-predicate": "Weight(100) && Host(/^app/)",
        })
    );
    assert_eq!(ing["metadata"]["labels"], json!({"app": "podinfo"}));
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(100, 0));
    env.owned_and_idempotent(&router, &c, ("networking.k8s.io/v1", "Ingress", "podinfo-canary"))
        .await;

    router.set_routes(&c, &Routes::split(70, 30)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    assert_eq!(
        ing["metadata"]["annotations"]["zalando.org/backend-weights"],
        r#"{"podinfo-canary":30,"podinfo-primary":70}"#
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(70, 30));
    set_and_read(&router, &c, 0, 100).await;

    // Promotion/rollback: at weight 0 the canary route is disabled with False() first
    // (skipper.go:197-201), which drops Weight(100).
    router.set_routes(&c, &Routes::split(100, 0)).await.unwrap();
    let ing = env.obj("networking.k8s.io/v1", "Ingress", "podinfo-canary").await;
    assert_eq!(
        ing["metadata"]["annotations"]["zalando.org/skipper-predicate"],
        "False() && Host(/^app/)"
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(100, 0));

    // Revert on deletion deletes the canary Ingress (skipper.go:214-226).
    router.finalize(&c).await.unwrap();
    assert!(
        env.get("networking.k8s.io/v1", "Ingress", "podinfo-canary")
            .await
            .is_none_or(|i| i["metadata"]["deletionTimestamp"].is_string())
    );
    assert_eq!(
        env.obj("networking.k8s.io/v1", "Ingress", "podinfo").await["spec"],
        user["spec"]
    );
}

// === SMI: linkerd, smi:v1alpha1..3, osm (pkg/router/smi*.go) ===

/// The canary most routers share: port 9898 behind a gateway, weight steps of 10.
fn smi_yaml(provider: &str) -> String {
    canary(
        provider,
        r#"
  service: {port: 9898, gateways: [public-gateway]}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#,
    )
}

async fn smi(provider: &str, version: &str, quantity: bool, gateway_annotation: bool) {
    // The CRD's enum has no mesh suffix: `smi:v1alpha2:istio` is the agent's default provider
    // (Flagger's -mesh-provider), for a canary without spec.provider.
    let name = format!("smi-{}", provider.replace(':', "-"));
    let (env, c, router) = if provider.matches(':').count() > 1 {
        let yaml = smi_yaml("PROVIDER").replace("  provider: PROVIDER\n", "");
        let settings = KubeSettings {
            default_provider: provider.into(),
            ..KubeSettings::default()
        };
        setup_with(&name, &yaml, settings).await
    } else {
        setup(&name, &smi_yaml(provider)).await
    };
    let api = format!("split.smi-spec.io/{version}");
    let w = |n: i32| if quantity { json!(n.to_string()) } else { json!(n) };
    router.reconcile(&c).await.unwrap();
    // smi.go:59-101 (v1alpha2/3: smi_v1alpha2.go:57-99): canary first at 0, primary at 100;
    // v1alpha1 weights are resource.Quantity, written as strings.
    let ts = env.obj(&api, "TrafficSplit", "podinfo").await;
    assert_eq!(
        ts["spec"],
        json!({"service": "podinfo", "backends": [{"service": "podinfo-canary", "weight": w(0)}, {"service": "podinfo-primary", "weight": w(100)}]})
    );
    // Only smi:*:istio carries the gateways (smi.go:193-200); no labels, no Flux annotations.
    let annotations = if gateway_annotation {
        json!({"VirtualService.v1alpha3.networking.istio.io/spec.gateways": "[\"public-gateway\"]"})
    } else {
        Value::Null
    };
    assert_eq!(ts["metadata"]["annotations"], annotations);
    assert_eq!(ts["metadata"]["labels"], Value::Null);
    env.owned_and_idempotent(&router, &c, (&api, "TrafficSplit", "podinfo"))
        .await;

    router.set_routes(&c, &Routes::split(80, 20)).await.unwrap();
    let ts = env.obj(&api, "TrafficSplit", "podinfo").await;
    assert_eq!(
        ts["spec"]["backends"],
        json!([{"service": "podinfo-canary", "weight": w(20)}, {"service": "podinfo-primary", "weight": w(80)}])
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(80, 20));
    // A reconcile mid-analysis keeps the live weights (Flagger resets them, smi.go:106-119).
    router.reconcile(&c).await.unwrap();
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(80, 20));
    set_and_read(&router, &c, 0, 100).await;
    set_and_read(&router, &c, 100, 0).await;
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone(&api, "TrafficSplit", "podinfo")
        .await;
}

/// One test per SMI provider (they run in parallel): `name: (provider, TrafficSplit version,
/// weights as quantities, gateways annotation)`.
macro_rules! smi_tests {
    ($($name:ident: $args:expr,)*) => {$(
        #[tokio::test]
        async fn $name() {
            let (provider, version, quantity, gateway_annotation) = $args;
            smi(provider, version, quantity, gateway_annotation).await;
        }
    )*};
}

smi_tests! {
    linkerd_traffic_split_v1alpha1: ("linkerd", "v1alpha1", true, false),
    smi_v1alpha1_traffic_split: ("smi:v1alpha1", "v1alpha1", true, false),
    smi_v1alpha2_istio_traffic_split_with_gateways: ("smi:v1alpha2:istio", "v1alpha2", false, true),
    smi_v1alpha3_traffic_split: ("smi:v1alpha3", "v1alpha3", false, false),
    osm_traffic_split_v1alpha2: ("osm", "v1alpha2", false, false),
}

// === contour (pkg/router/contour.go) ===

fn contour() -> String {
    canary(
        "contour",
        r#"
  service:
    port: 9898
    timeout: 15s
    retries: {attempts: 3, perTryTimeout: 5s, retryOn: "5xx,gateway-error"}
    match: [{uri: {prefix: /api}}]
    apex: {labels: {team: web}, annotations: {owner: me}}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#,
    )
}

fn contour_service(name: &str, ns: &str, weight: i64) -> Value {
    let mut s = json!({"name": name, "port": 9898, "requestHeadersPolicy": {"set": [
        {"name": "l5d-dst-override", "value": format!("{name}.{ns}.svc.cluster.local:9898")}]}});
    if weight != 0 {
        s["weight"] = json!(weight);
    }
    s
}

#[tokio::test]
async fn contour_http_proxy_with_policies_and_header_routes() {
    let (env, c, router) = setup("contour-router", &contour()).await;
    let ns = env.ns.clone();
    router.reconcile(&c).await.unwrap();
    // contour.go:52-86, :447-484: prefix from service.match, timeout policy (idle 5m), retry
    // policy, l5d-dst-override per service; a zero weight is omitted (Go's omitempty).
    let route = |conditions: Value, p: i64, k: i64| {
        json!({
            "conditions": conditions,
            "timeoutPolicy": {"response": "15s", "idle": "5m"},
            "retryPolicy": {"count": 3, "perTryTimeout": "5s", "retryOn": ["5xx", "gateway-error"]},
            "services": [contour_service("podinfo-primary", &ns, p), contour_service("podinfo-canary", &ns, k)],
        })
    };
    let proxy = env.obj("projectcontour.io/v1", "HTTPProxy", "podinfo").await;
    assert_eq!(
        proxy["spec"],
        json!({"routes": [route(json!([{"prefix": "/api"}]), 100, 0)]})
    );
    // contour.go:153-182: apex labels and annotations + filterMetadata.
    assert_eq!(proxy["metadata"]["labels"], json!({"team": "web"}));
    let mut annotations = flux();
    annotations["owner"] = json!("me");
    assert_eq!(proxy["metadata"]["annotations"], annotations);
    env.owned_and_idempotent(&router, &c, ("projectcontour.io/v1", "HTTPProxy", "podinfo"))
        .await;

    router.set_routes(&c, &Routes::split(60, 40)).await.unwrap();
    let proxy = env.obj("projectcontour.io/v1", "HTTPProxy", "podinfo").await;
    assert_eq!(
        proxy["spec"],
        json!({"routes": [route(json!([{"prefix": "/api"}]), 60, 40)]})
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(60, 40));
    set_and_read(&router, &c, 0, 100).await;
    assert_eq!(
        router.set_routes(&c, &Routes::split(0, 0)).await.unwrap_err(),
        env.msg("HTTPProxy podinfo.test update failed: no valid weights")
    );

    // A/B (contour.go:320-383, :408-445): header conditions on the first route, the rest to the
    // primary; exact as exact, a prefix as `contains`.
    let ab = with_match(
        &c,
        json!([{"headers": {"x-canary": {"exact": "insider"}}}, {"headers": {"user-agent": {"prefix": "Mozilla"}}}]),
    );
    router.set_routes(&ab, &Routes::split(0, 100)).await.unwrap();
    let proxy = env.obj("projectcontour.io/v1", "HTTPProxy", "podinfo").await;
    assert_eq!(
        proxy["spec"]["routes"],
        json!([
            route(
                json!([
                    {"prefix": "/api", "header": {"name": "x-canary", "exact": "insider"}},
                    {"prefix": "/api", "header": {"name": "user-agent", "contains": "Mozilla"}},
                ]),
                0,
                100
            ),
            route(json!([{"prefix": "/api"}]), 100, 0),
        ])
    );
    assert_eq!(router.get_routes(&ab).await.unwrap(), Routes::split(0, 100));
    router.reconcile(&ab).await.unwrap();
    assert_eq!(
        router.get_routes(&ab).await.unwrap(),
        Routes::split(0, 100),
        "a reconcile keeps the live split"
    );
    set_and_read(&router, &ab, 100, 0).await;
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone("projectcontour.io/v1", "HTTPProxy", "podinfo")
        .await;
}

#[tokio::test]
async fn contour_retries_without_retry_on_pass_contours_schema() {
    // Flagger writes retryOn: [""] here (contour.go:468-476), which Contour's own CRD refuses.
    let yaml = contour().replace(", retryOn: \"5xx,gateway-error\"", "");
    let (env, c, router) = setup("contour-retry-on", &yaml).await;
    router.reconcile(&c).await.unwrap();
    let proxy = env.obj("projectcontour.io/v1", "HTTPProxy", "podinfo").await;
    assert_eq!(
        proxy["spec"]["routes"][0]["retryPolicy"],
        json!({"count": 3, "perTryTimeout": "5s"})
    );
    // The server does refuse Flagger's form: the schema is Contour's.
    let mut flagger = proxy.clone();
    flagger["spec"]["routes"][0]["retryPolicy"]["retryOn"] = json!([""]);
    assert!(
        env.objects
            .create({
                let mut o = flagger;
                o["metadata"] = json!({"name": "flagger-form", "namespace": env.ns});
                o
            })
            .await
            .is_err()
    );
}

// === gloo (pkg/router/gloo.go) ===

fn gloo() -> String {
    canary(
        "gloo",
        r#"
  upstreamRef: {apiVersion: gloo.solo.io/v1, kind: Upstream, name: config}
  service: {port: 9898}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#,
    )
}

#[tokio::test]
async fn gloo_upstreams_and_route_table() {
    let (env, c, router) = setup("gloo-router", &gloo()).await;
    let ns = env.ns.clone();
    env.create(json!({"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "metadata": {"name": "config"},
        "spec": {"loadBalancerConfig": {"roundRobin": {}}, "connectionConfig": {"maxRequestsPerConnection": 10},
                 "static": {"hosts": [{"addr": "ignored"}]}}}))
    .await;
    router.reconcile(&c).await.unwrap();
    // gloo.go:333-378: an Upstream per Service with the config Upstream's settings and a kube
    // upstream with the Service's selector; no labels.
    for (role, selector) in [("primary", "podinfo-primary"), ("canary", "podinfo")] {
        let name = format!("{ns}-podinfo-{role}upstream-9898");
        let us = env.obj("gloo.solo.io/v1", "Upstream", &name).await;
        assert_eq!(
            us["spec"],
            json!({
                "loadBalancerConfig": {"roundRobin": {}},
                "connectionConfig": {"maxRequestsPerConnection": 10},
                "kube": {"serviceName": format!("podinfo-{role}"), "serviceNamespace": ns, "servicePort": 9898, "selector": {"app": selector}},
            })
        );
        assert_eq!(us["metadata"]["labels"], Value::Null);
        owner_is_canary(&us, &c);
    }
    // gloo.go:70-101: one route, inheritable path matchers, weighted upstream destinations.
    let dest = |role: &str, w: i64| {
        let mut d = json!({"destination": {"upstream": {"name": format!("{ns}-podinfo-{role}upstream-9898"), "namespace": ns}}});
        if w != 0 {
            d["weight"] = json!(w);
        }
        d
    };
    let rt = env.obj("gateway.solo.io/v1", "RouteTable", "podinfo").await;
    assert_eq!(
        rt["spec"],
        json!({"routes": [{"inheritablePathMatchers": true, "routeAction": {"multi": {"destinations": [dest("primary", 100), dest("canary", 0)]}}}]})
    );
    assert_eq!(rt["metadata"]["annotations"], flux());
    env.owned_and_idempotent(&router, &c, ("gateway.solo.io/v1", "RouteTable", "podinfo"))
        .await;

    router.set_routes(&c, &Routes::split(75, 25)).await.unwrap();
    let rt = env.obj("gateway.solo.io/v1", "RouteTable", "podinfo").await;
    assert_eq!(
        rt["spec"]["routes"][0]["routeAction"]["multi"]["destinations"],
        json!([dest("primary", 75), dest("canary", 25)])
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(75, 25));

    // A/B (gloo.go:392-438): header matchers (exact value, or regex) and methods.
    let ab = with_match(
        &c,
        json!([{"headers": {"x-canary": {"exact": "insider"}, "user-agent": {"regex": ".*Firefox.*"}}, "method": {"exact": "GET"}}]),
    );
    router.set_routes(&ab, &Routes::split(0, 100)).await.unwrap();
    let rt = env.obj("gateway.solo.io/v1", "RouteTable", "podinfo").await;
    assert_eq!(
        rt["spec"]["routes"][0]["matchers"],
        json!([{"headers": [
            {"name": "user-agent", "value": ".*Firefox.*", "regex": true},
            {"name": "x-canary", "value": "insider"},
        ], "methods": ["GET"]}])
    );
    assert_eq!(router.get_routes(&ab).await.unwrap(), Routes::split(0, 100));
    set_and_read(&router, &c, 100, 0).await;

    // The config Upstream's load balancer is followed (gloo.go:300-331).
    env.merge_patch(
        "gloo.solo.io/v1",
        "Upstream",
        "config",
        &json!({"spec": {"loadBalancerConfig": {"roundRobin": null, "leastRequest": {}}}}),
    )
    .await;
    router.reconcile(&c).await.unwrap();
    let us = env
        .obj(
            "gloo.solo.io/v1",
            "Upstream",
            &format!("{ns}-podinfo-primaryupstream-9898"),
        )
        .await;
    assert_eq!(us["spec"]["loadBalancerConfig"], json!({"leastRequest": {}}));
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone("gateway.solo.io/v1", "RouteTable", "podinfo")
        .await;
}

// === traefik (pkg/router/traefik.go) ===

#[tokio::test]
async fn traefik_weighted_service() {
    let yaml = smi_yaml("traefik").replace("gateways: [public-gateway]", "apex: {labels: {team: web}}");
    let (env, c, router) = setup("traefik-router", &yaml).await;
    let ns = env.ns.clone();
    router.reconcile(&c).await.unwrap();
    // traefik.go:45-97: the primary alone at 100 while the canary has no weight.
    let ts = env.obj("traefik.io/v1alpha1", "TraefikService", "podinfo").await;
    assert_eq!(
        ts["spec"],
        json!({"weighted": {"services": [{"name": "podinfo-primary", "namespace": ns, "port": 9898, "weight": 100}]}})
    );
    assert_eq!(ts["metadata"]["labels"], json!({"team": "web"}));
    assert_eq!(ts["metadata"]["annotations"], flux());
    env.owned_and_idempotent(&router, &c, ("traefik.io/v1alpha1", "TraefikService", "podinfo"))
        .await;

    // traefik.go:190-207: the canary joins with its weight.
    router.set_routes(&c, &Routes::split(85, 15)).await.unwrap();
    let ts = env.obj("traefik.io/v1alpha1", "TraefikService", "podinfo").await;
    assert_eq!(
        ts["spec"]["weighted"]["services"],
        json!([
            {"name": "podinfo-primary", "namespace": ns, "port": 9898, "weight": 85},
            {"name": "podinfo-canary", "namespace": ns, "port": 9898, "weight": 15},
        ])
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(85, 15));
    router.reconcile(&c).await.unwrap();
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(85, 15));
    // Blue/green's switch: a zero weight is omitted (uint, omitempty).
    router.set_routes(&c, &Routes::split(0, 100)).await.unwrap();
    let ts = env.obj("traefik.io/v1alpha1", "TraefikService", "podinfo").await;
    assert_eq!(
        ts["spec"]["weighted"]["services"][0],
        json!({"name": "podinfo-primary", "namespace": ns, "port": 9898})
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(0, 100));
    router.set_routes(&c, &Routes::split(100, 0)).await.unwrap();
    let ts = env.obj("traefik.io/v1alpha1", "TraefikService", "podinfo").await;
    assert_eq!(ts["spec"]["weighted"]["services"].as_array().unwrap().len(), 1);
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone("traefik.io/v1alpha1", "TraefikService", "podinfo")
        .await;
}

// === kuma (pkg/router/kuma.go) ===

#[tokio::test]
async fn kuma_cluster_scoped_traffic_route() {
    let yaml = smi_yaml("kuma")
        .replace(
            "metadata: {name: podinfo, namespace: test}",
            "metadata: {name: podinfo, namespace: test, annotations: {kuma.io/mesh: edge}}",
        )
        .replace("gateways: [public-gateway]", "name: kuma-podinfo");
    let (env, c, router) = setup("kuma-router", &yaml).await;
    let ns = env.ns.clone();
    router.reconcile(&c).await.unwrap();
    let get = async || {
        env.objects
            .get("kuma.io/v1alpha1", "TrafficRoute", None, "kuma-podinfo")
            .await
            .unwrap()
            .expect("the TrafficRoute exists")
    };
    // kuma.go:33-98: cluster-scoped, the canary's mesh, no owner reference.
    let split = |p: i64, k: i64| {
        json!([
            {"weight": p, "destination": {"kuma.io/service": format!("kuma-podinfo-primary_{ns}_svc_9898")}},
            {"weight": k, "destination": {"kuma.io/service": format!("kuma-podinfo-canary_{ns}_svc_9898")}},
        ])
    };
    let tr = get().await;
    assert_eq!(tr["mesh"], "edge");
    assert_eq!(
        tr["spec"],
        json!({
            "sources": [{"match": {"kuma.io/service": "*"}}],
            "destinations": [{"match": {"kuma.io/service": format!("kuma-podinfo_{ns}_svc_9898")}}],
            "conf": {"split": split(100, 0)},
        })
    );
    assert_eq!(tr["metadata"]["annotations"], flux());
    assert!(tr["metadata"]["ownerReferences"].is_null());
    let rv = tr["metadata"]["resourceVersion"].clone();
    router.reconcile(&c).await.unwrap();
    assert_eq!(get().await["metadata"]["resourceVersion"], rv);

    router.set_routes(&c, &Routes::split(50, 50)).await.unwrap();
    assert_eq!(get().await["spec"]["conf"]["split"], split(50, 50));
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(50, 50));
    set_and_read(&router, &c, 0, 100).await;
    set_and_read(&router, &c, 100, 0).await;
    // Revert on deletion removes it (Flagger leaves it routing to a deleted primary).
    router.finalize(&c).await.unwrap();
    assert!(
        env.objects
            .get("kuma.io/v1alpha1", "TrafficRoute", None, "kuma-podinfo")
            .await
            .unwrap()
            .is_none()
    );
}

// === apisix (pkg/router/apisix.go) ===

#[tokio::test]
async fn apisix_canary_route() {
    let yaml = smi_yaml("apisix")
        .replace("gateways: [public-gateway]", "name: podinfo")
        .replace(
            "  service:",
            "  routeRef: {apiVersion: apisix.apache.org/v2, kind: ApisixRoute, name: podinfo}\n  service:",
        );
    let (env, c, router) = setup("apisix-router", &yaml).await;
    let user = json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
    "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}, "annotations": {"owner": "me"}},
    "spec": {"http": [
        {"name": "static", "match": {"paths": ["/static/*"]}, "backends": [{"serviceName": "cdn", "servicePort": 80}]},
        {"name": "method", "match": {"hosts": ["app.example.com"], "paths": ["/*"]},
         "backends": [{"serviceName": "podinfo", "servicePort": 9898, "resolveGranularity": "service"}],
         "plugins": [{"name": "prometheus", "enable": true}]},
    ]}});
    env.create(user).await;
    router.reconcile(&c).await.unwrap();
    const API: &str = "apisix.apache.org/v2";
    /// The canary's route (apisix.go:56-104): the apex route's name with `-podinfo-canary`.
    const ROUTE: &str = "podinfo-podinfo-canary";
    // apisix.go:56-104: only the http route with the apex backend, priority 10000, primary at
    // 100 and the canary at 0 with the same port and resolve granularity; the user's labels and
    // annotations.
    let route = env.obj(API, "ApisixRoute", ROUTE).await;
    let http = |p: i64, k: i64| {
        json!([{"name": "method", "priority": 10000, "match": {"hosts": ["app.example.com"], "paths": ["/*"]},
            "backends": [
                {"serviceName": "podinfo-primary", "servicePort": 9898, "resolveGranularity": "service", "weight": p},
                {"serviceName": "podinfo-canary", "servicePort": 9898, "resolveGranularity": "service", "weight": k},
            ],
            "plugins": [{"name": "prometheus", "enable": true}], "websocket": false}])
    };
    assert_eq!(route["spec"], json!({"http": http(100, 0)}));
    assert_eq!(route["metadata"]["labels"], json!({"app": "podinfo"}));
    assert_eq!(route["metadata"]["annotations"], json!({"owner": "me"}));
    env.owned_and_idempotent(&router, &c, (API, "ApisixRoute", ROUTE))
        .await;

    router.set_routes(&c, &Routes::split(65, 35)).await.unwrap();
    let route = env.obj(API, "ApisixRoute", ROUTE).await;
    assert_eq!(route["spec"]["http"], http(65, 35));
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(65, 35));
    set_and_read(&router, &c, 0, 100).await;
    set_and_read(&router, &c, 100, 0).await;
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone(API, "ApisixRoute", ROUTE).await;
}

// === appmesh (pkg/router/appmesh.go) and appmesh:v1beta2 (appmesh_v1beta2.go) ===

const APPMESH: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test, annotations: {appmesh.flagger.app/accesslog: enabled}}
spec:
  provider: PROVIDER
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    meshName: global
    timeout: 15s
    retries: {attempts: 3, perTryTimeout: 5s, retryOn: "gateway-error,client-error"}
    hosts: [app.example.com]
    backends: [backend1, "arn:aws:appmesh:eu-west-1:01234567890:mesh/global/virtualService/backend2"]
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#;

#[tokio::test]
async fn appmesh_v1beta2_nodes_routers_and_services() {
    let (env, c, router) = setup("appmesh-v1beta2", &APPMESH.replace("PROVIDER", "appmesh:v1beta2")).await;
    let ns = env.ns.clone();
    let api = "appmesh.k8s.aws/v1beta2";
    // The target registers the virtual nodes before it creates the primary, so that App Mesh
    // injects Envoy into the primary's pods (Flagger's scheduler.go:215-221).
    let platform = KubePlatform::new(env.kube.clone(), KubeSettings::default());
    platform.target(&c).initialize(&c).await.unwrap();
    assert!(env.get(api, "VirtualNode", "podinfo-primary").await.is_some());
    assert!(
        env.get("apps/v1", "Deployment", "podinfo-primary")
            .await
            .is_some()
    );
    router.reconcile(&c).await.unwrap();
    // appmesh_v1beta2.go:97-156: listener with the route timeout, DNS hostname, pods selected by
    // the target's selector label, access log, backends by ref or ARN; apex labels/annotations.
    for (name, pods) in [
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let vn = env.obj(api, "VirtualNode", name).await;
        assert_eq!(
            vn["spec"],
            json!({
                "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}, "timeout": {"http": {"perRequest": {"unit": "ms", "value": 15000}}}}],
                "serviceDiscovery": {"dns": {"hostname": format!("{name}.{ns}.svc.cluster.local.")}},
                "podSelector": {"matchLabels": {"app": pods}},
                "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
                "backends": [
                    {"virtualService": {"virtualServiceRef": {"name": "backend1"}}},
                    {"virtualService": {"virtualServiceARN": "arn:aws:appmesh:eu-west-1:01234567890:mesh/global/virtualService/backend2"}},
                ],
            })
        );
        assert_eq!(vn["metadata"]["annotations"], flux());
        owner_is_canary(&vn, &c);
    }
    // appmesh_v1beta2.go:228-342: the routers; retries in ms; weights canary first.
    let targets = |k: i64, p: i64| json!([{"virtualNodeRef": {"name": "podinfo-canary"}, "weight": k}, {"virtualNodeRef": {"name": "podinfo-primary"}, "weight": p}]);
    let http = |matched: Value, t: Value| {
        json!({"match": matched, "timeout": {"perRequest": {"unit": "ms", "value": 15000}},
            "retryPolicy": {"perRetryTimeout": {"unit": "ms", "value": 5000}, "maxRetries": 3, "httpRetryEvents": ["gateway-error", "client-error"]},
            "action": {"weightedTargets": t}})
    };
    let listeners = json!([{"portMapping": {"port": 9898, "protocol": "http"}}]);
    let vr = env.obj(api, "VirtualRouter", "podinfo").await;
    assert_eq!(
        vr["spec"],
        json!({"listeners": listeners, "routes": [{"name": "podinfo", "httpRoute": http(json!({"prefix": "/"}), targets(0, 100))}]})
    );
    let vr = env.obj(api, "VirtualRouter", "podinfo-canary").await;
    assert_eq!(
        vr["spec"]["routes"],
        json!([{"name": "podinfo-canary", "httpRoute": http(json!({"prefix": "/"}), targets(100, 0))}])
    );
    // appmesh_v1beta2.go:372-403: a VirtualService per router; gateway annotations on the apex.
    let vs = env.obj(api, "VirtualService", "podinfo").await;
    assert_eq!(
        vs["spec"],
        json!({"provider": {"virtualRouter": {"virtualRouterRef": {"name": "podinfo"}}}})
    );
    assert_eq!(
        vs["metadata"]["annotations"],
        json!({"gateway.appmesh.k8s.aws/expose": "true", "gateway.appmesh.k8s.aws/domain": "app.example.com,",
               "gateway.appmesh.k8s.aws/timeout": "15s", "gateway.appmesh.k8s.aws/retries": "3"})
    );
    assert!(env.obj(api, "VirtualService", "podinfo-canary").await["metadata"]["annotations"].is_null());
    // App Mesh's controller fills in awsName and meshRef: they are kept, nothing rewritten.
    env.merge_patch(
        api,
        "VirtualRouter",
        "podinfo",
        &json!({"spec": {"awsName": "podinfo_test", "meshRef": {"name": "global", "uid": "1"}}}),
    )
    .await;
    env.reconcile_is_idempotent(&router, &c, api, "VirtualRouter", "podinfo")
        .await;

    router.set_routes(&c, &Routes::split(90, 10)).await.unwrap();
    let vr = env.obj(api, "VirtualRouter", "podinfo").await;
    assert_eq!(
        vr["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"],
        targets(10, 90)
    );
    assert_eq!(vr["spec"]["awsName"], "podinfo_test");
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(90, 10));
    router.reconcile(&c).await.unwrap();
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(90, 10));

    // A/B (appmesh_v1beta2.go:277-330): route -a (priority 10) with the headers carries the
    // split, -b (priority 20) sends the rest to the primary.
    let ab = with_match(&c, json!([{"headers": {"x-canary": {"exact": "insider"}}}]));
    router.set_routes(&ab, &Routes::split(100, 0)).await.unwrap();
    router.reconcile(&ab).await.unwrap();
    router.set_routes(&ab, &Routes::split(0, 100)).await.unwrap();
    let vr = env.obj(api, "VirtualRouter", "podinfo").await;
    assert_eq!(
        vr["spec"]["routes"],
        json!([
            {"name": "podinfo-a", "priority": 10, "httpRoute": http(json!({"prefix": "/", "headers": [{"name": "x-canary", "match": {"exact": "insider"}}]}), targets(100, 0))},
            {"name": "podinfo-b", "priority": 20, "httpRoute": http(json!({"prefix": "/"}), json!([{"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 100}]))},
        ])
    );
    assert_eq!(router.get_routes(&ab).await.unwrap(), Routes::split(0, 100));
    set_and_read(&router, &ab, 100, 0).await;
    router.finalize(&c).await.unwrap();
    env.delete_canary_and_wait_gone(api, "VirtualRouter", "podinfo")
        .await;
}

#[tokio::test]
async fn appmesh_v1beta1_nodes_and_virtual_services() {
    let (env, c, router) = setup("appmesh-v1beta1", &APPMESH.replace("PROVIDER", "appmesh")).await;
    let ns = env.ns.clone();
    let api = "appmesh.k8s.aws/v1beta1";
    router.reconcile(&c).await.unwrap();
    // appmesh.go:100-142: three nodes; the apex one discovers the primary's host.
    for (name, host) in [
        ("podinfo", format!("podinfo-primary.{ns}")),
        ("podinfo-primary", format!("podinfo-primary.{ns}")),
        ("podinfo-canary", format!("podinfo-canary.{ns}")),
    ] {
        let vn = env.obj(api, "VirtualNode", name).await;
        assert_eq!(
            vn["spec"],
            json!({
                "meshName": "global",
                "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostName": host}},
                "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
                "backends": [
                    {"virtualService": {"virtualServiceName": "backend1"}},
                    {"virtualService": {"virtualServiceName": "arn:aws:appmesh:eu-west-1:01234567890:mesh/global/virtualService/backend2"}},
                ],
            })
        );
    }
    // appmesh.go:212-316: virtual services named <host>, routes inline.
    let targets = |k: i64, p: i64| json!([{"virtualNodeName": "podinfo-canary", "weight": k}, {"virtualNodeName": "podinfo-primary", "weight": p}]);
    let retry = json!({"perRetryTimeoutMillis": 5000, "maxRetries": 3, "httpRetryEvents": ["gateway-error", "client-error"]});
    let vs_name = format!("podinfo.{ns}");
    let vs = env.obj(api, "VirtualService", &vs_name).await;
    assert_eq!(
        vs["spec"],
        json!({
            "meshName": "global",
            "virtualRouter": {"name": "podinfo", "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}]},
            "routes": [{"name": "podinfo", "http": {"match": {"prefix": "/"}, "retryPolicy": retry, "action": {"weightedTargets": targets(0, 100)}}}],
        })
    );
    assert_eq!(
        vs["metadata"]["annotations"]["gateway.appmesh.k8s.aws/domain"],
        "app.example.com,"
    );
    let canary_vs = env
        .obj(api, "VirtualService", &format!("podinfo-canary.{ns}"))
        .await;
    assert_eq!(canary_vs["spec"]["virtualRouter"]["name"], "podinfo-canary");
    assert_eq!(
        canary_vs["spec"]["routes"][0]["http"]["action"]["weightedTargets"],
        targets(100, 0)
    );
    env.reconcile_is_idempotent(&router, &c, api, "VirtualService", &vs_name)
        .await;

    router.set_routes(&c, &Routes::split(80, 20)).await.unwrap();
    assert_eq!(
        env.obj(api, "VirtualService", &vs_name).await["spec"]["routes"][0]["http"]["action"]["weightedTargets"],
        targets(20, 80)
    );
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(80, 20));
    set_and_read(&router, &c, 0, 100).await;
    set_and_read(&router, &c, 100, 0).await;

    let mut no_mesh = c.clone();
    no_mesh.spec.service.as_mut().unwrap().mesh_name = None;
    assert_eq!(
        router.reconcile(&no_mesh).await.unwrap_err(),
        env.msg("mesh name cannot be empty (spec.service.meshName of canary podinfo.test)")
    );
    env.delete_canary_and_wait_gone(api, "VirtualService", &vs_name)
        .await;
}

// === gatewayapi:v1beta1 (pkg/router/gateway_api_v1beta1.go) ===

#[tokio::test]
async fn gateway_api_v1beta1_http_route() {
    let yaml = smi_yaml("gatewayapi:v1beta1").replace(
        "gateways: [public-gateway]",
        "gatewayRefs: [{name: gw, namespace: gateways}]",
    );
    let (env, c, router) = setup("gatewayapi-v1beta1", &yaml).await;
    let api = "gateway.networking.k8s.io/v1beta1";
    router.reconcile(&c).await.unwrap();
    // gateway_api_v1beta1.go:74-160: parentRefs, a PathPrefix / match, weighted backendRefs;
    // the CRD defaults group/kind server-side.
    let route = env.obj(api, "HTTPRoute", "podinfo").await;
    let backend =
        |name: &str, w: i64| json!({"group": "", "kind": "Service", "name": name, "port": 9898, "weight": w});
    assert_eq!(
        route["spec"]["rules"],
        json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)]}])
    );
    assert_eq!(route["apiVersion"], api);
    env.owned_and_idempotent(&router, &c, (api, "HTTPRoute", "podinfo"))
        .await;
    env.wait_for(api, "HTTPRoute", "podinfo", |r| {
        r["status"]["parents"][0]["conditions"][0]["observedGeneration"] == r["metadata"]["generation"]
    })
    .await;
    router.set_routes(&c, &Routes::split(90, 10)).await.unwrap();
    env.wait_for(api, "HTTPRoute", "podinfo", |r| {
        r["status"]["parents"][0]["conditions"][0]["observedGeneration"] == r["metadata"]["generation"]
    })
    .await;
    assert_eq!(router.get_routes(&c).await.unwrap(), Routes::split(90, 10));
    // A/B: the match rule carries the split, a second rule sends the rest to the primary.
    let ab = with_match(&c, json!([{"headers": {"x-canary": {"exact": "insider"}}}]));
    router.set_routes(&ab, &Routes::split(0, 100)).await.unwrap();
    let route = env.obj(api, "HTTPRoute", "podinfo").await;
    assert_eq!(
        route["spec"]["rules"][0]["matches"][0]["headers"],
        json!([{"name": "x-canary", "type": "Exact", "value": "insider"}])
    );
    assert_eq!(
        route["spec"]["rules"][1]["backendRefs"],
        json!([backend("podinfo-primary", 100)])
    );
    router.set_routes(&c, &Routes::split(100, 0)).await.unwrap();
    env.delete_canary_and_wait_gone(api, "HTTPRoute", "podinfo").await;
}
