//! CustomResourceDefinitions on the test control plane: the upstream definitions of the kinds
//! aviary's routers and targets write (Knative Serving, Gateway API, Istio, KEDA; Contour's HTTPProxy
//! and Traefik's TraefikService for the router tests), read out of their Go modules by
//! `tests/control-plane/build.sh`; schemas written for the tests from the API references of the
//! providers whose modules the Go proxy does not serve (`crds/providers.yaml`); and installation
//! of any CRD with a wait for `Established`.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::error::{Error, Result};

/// The upstream CRDs the test control plane installs, by file (as exported by build.sh) and name.
pub const UPSTREAM: &[(&str, &[&str])] = &[
    ("knative-serving-service.yaml", &["services.serving.knative.dev"]),
    (
        "knative-serving-configuration.yaml",
        &["configurations.serving.knative.dev"],
    ),
    (
        "knative-serving-revision.yaml",
        &["revisions.serving.knative.dev"],
    ),
    ("knative-serving-route.yaml", &["routes.serving.knative.dev"]),
    (
        "gateway-api-gatewayclasses.yaml",
        &["gatewayclasses.gateway.networking.k8s.io"],
    ),
    (
        "gateway-api-gateways.yaml",
        &["gateways.gateway.networking.k8s.io"],
    ),
    (
        "gateway-api-httproutes.yaml",
        &["httproutes.gateway.networking.k8s.io"],
    ),
    (
        "gateway-api-referencegrants.yaml",
        &["referencegrants.gateway.networking.k8s.io"],
    ),
    (
        "istio.yaml",
        &[
            "virtualservices.networking.istio.io",
            "destinationrules.networking.istio.io",
        ],
    ),
    ("keda-scaledobjects.yaml", &["scaledobjects.keda.sh"]),
];

/// The traffic providers' upstream CRDs (build.sh's `provider-crds/`), by file and name.
pub const PROVIDERS_UPSTREAM: &[(&str, &[&str])] = &[
    ("contour.yaml", &["httpproxies.projectcontour.io"]),
    ("traefik.yaml", &["traefikservices.traefik.io"]),
];

/// Schemas written from the API references of SMI (TrafficSplit v1alpha1-3), AWS App Mesh
/// (v1beta1 and v1beta2), Gloo Edge (Upstream, RouteTable), Kuma (TrafficRoute) and APISIX
/// (ApisixRoute v2): their Go modules are not served by the Go module proxy.
pub const PROVIDERS_WRITTEN: &str = include_str!("../crds/providers.yaml");

const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the CRDs named in [`UPSTREAM`] from `dir`.
pub fn upstream(dir: &Path) -> Result<Vec<Value>> {
    pick(dir, UPSTREAM)
}

/// Every traffic provider's CRD: [`PROVIDERS_UPSTREAM`] from `dir` (build.sh's
/// `provider-crds/`) and [`PROVIDERS_WRITTEN`].
pub fn providers(dir: &Path) -> Result<Vec<Value>> {
    let mut out = pick(dir, PROVIDERS_UPSTREAM)?;
    let list: Value = serde_yaml_ng::from_str(PROVIDERS_WRITTEN)
        .map_err(|e| Error::Setup(format!("crds/providers.yaml: {e}")))?;
    out.extend(list["items"].as_array().cloned().unwrap_or_default());
    Ok(out)
}

fn pick(dir: &Path, list: &[(&str, &[&str])]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (file, names) in list {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let docs = documents(&text).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
        for name in *names {
            let crd = docs
                .iter()
                .find(|d| d["kind"] == "CustomResourceDefinition" && d["metadata"]["name"] == *name)
                .ok_or_else(|| Error::Setup(format!("{} has no CRD {name}", path.display())))?;
            out.push(crd.clone());
        }
    }
    Ok(out)
}

/// The YAML documents of a multi-document file (empty ones skipped).
pub fn documents(text: &str) -> std::result::Result<Vec<Value>, serde_yaml_ng::Error> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Creates the CRDs that do not exist yet and waits until every one is `Established`.
pub async fn install(client: &kube::Client, crds: &[Value]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let typed: CustomResourceDefinition =
            serde_json::from_value(crd.clone()).map_err(|e| Error::Setup(format!("CRD {name}: {e}")))?;
        match api.create(&PostParams::default(), &typed).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating CRD {name}"), e)),
        }
    }
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(ESTABLISHED_TIMEOUT, established)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("CRD {name} Established"),
                timeout: ESTABLISHED_TIMEOUT,
                last: String::new(),
            })?
            .map_err(|e| Error::Setup(format!("waiting for CRD {name}: {e}")))?;
    }
    Ok(())
}
