//! The ports of one canary on Kubernetes: which Target and Router a canary gets, the Recorder,
//! Kubernetes Secrets for providers, and the status a restarted actor resumes from.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryStatus};
use aviary_core::ports::{NotReady, Router, SecretSource, Target, TargetRevision};

use crate::apisix::ApisixRouter;
use crate::appmesh::AppMeshRouter;
use crate::client::{CANARY, Kube, SECRET, describe};
use crate::contour::ContourRouter;
use crate::daemonset::DaemonSetTarget;
use crate::deployment::{DeploymentSettings, DeploymentTarget};
use crate::gatewayapi::GatewayApiRouter;
use crate::gloo::GlooRouter;
use crate::ingress::{NginxRouter, SkipperRouter};
use crate::istio::IstioRouter;
use crate::knative::Knative;
use crate::kuma::KumaRouter;
use crate::recorder::KubeRecorder;
use crate::routing::{DeploymentRouter, NopRouter, ObjectRouter, Provider, UnsupportedRouter};
use crate::service_target::ServiceTarget;
use crate::services::ClusterIpServices;
use crate::smi::SmiRouter;
use crate::traefik::TraefikRouter;

pub use aviary_api::status::VALIDATED_CONDITION;

/// Agent-wide settings of the Kubernetes platform.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Provider of canaries without `spec.provider` (Flagger's `-mesh-provider`, default istio).
    pub default_provider: String,
    /// Deployment and DaemonSet target behaviour.
    pub deployment: DeploymentSettings,
    /// Written as the event source host (the pod name).
    pub host: String,
    /// ingress-nginx's annotation prefix (Flagger's `-ingress-annotations-prefix`).
    pub ingress_annotations_prefix: String,
    /// The ingress class of Contour HTTPProxies (Flagger's `-ingress-class`; empty: none).
    pub ingress_class: String,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            default_provider: "istio".into(),
            deployment: DeploymentSettings::default(),
            host: hostname(),
            ingress_annotations_prefix: crate::ingress::NGINX_ANNOTATIONS_PREFIX.into(),
            ingress_class: String::new(),
        }
    }
}

/// The machine's host name (the pod name inside a cluster).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "aviary".into())
}

/// Builds the Kubernetes ports of each canary; cheap to share.
#[derive(Debug)]
pub struct KubePlatform {
    kube: Kube,
    settings: KubeSettings,
    recorder: Arc<KubeRecorder>,
    deployment: Arc<DeploymentTarget>,
    daemonset: Arc<DaemonSetTarget>,
    service: Arc<ServiceTarget>,
    knative: Arc<Knative>,
    secrets: Arc<KubeSecrets>,
}

impl KubePlatform {
    pub fn new(kube: Kube, settings: KubeSettings) -> Self {
        Self {
            recorder: Arc::new(KubeRecorder::new(kube.clone(), settings.host.clone())),
            deployment: Arc::new(DeploymentTarget::new(kube.clone(), settings.deployment.clone())),
            daemonset: Arc::new(DaemonSetTarget::new(kube.clone(), settings.deployment.clone())),
            service: Arc::new(ServiceTarget::new(
                kube.clone(),
                settings.deployment.include_label_prefixes.clone(),
            )),
            knative: Arc::new(Knative::new(kube.clone())),
            secrets: Arc::new(KubeSecrets { kube: kube.clone() }),
            kube,
            settings,
        }
    }

    pub fn kube(&self) -> &Kube {
        &self.kube
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// Status and events (wrap it with the agent's metrics decorator).
    pub fn recorder(&self) -> Arc<KubeRecorder> {
        self.recorder.clone()
    }

    /// Kubernetes Secrets, for metric and alert providers.
    pub fn secrets(&self) -> Arc<KubeSecrets> {
        self.secrets.clone()
    }

    /// The target of a canary.
    pub fn target(&self, c: &Canary) -> Arc<dyn Target> {
        if c.is_knative_target() {
            return self.knative.clone();
        }
        let target: Arc<dyn Target> = match c.target_kind() {
            "Deployment" => self.deployment.clone(),
            "DaemonSet" => self.daemonset.clone(),
            "Service" => self.service.clone(),
            other => Arc::new(UnsupportedTarget(other.to_string())),
        };
        // App Mesh injects its Envoy into pods of registered virtual nodes only: Flagger
        // reconciles the mesh before it creates the primary (scheduler.go:215-221).
        if let Provider::AppMesh { v1beta2 } = Provider::of(c, &self.settings.default_provider) {
            return Arc::new(MeshFirst {
                mesh: AppMeshRouter::new(
                    self.kube.clone(),
                    v1beta2,
                    self.settings.deployment.selector_labels.clone(),
                ),
                target,
            });
        }
        target
    }

    /// The router of a canary: Knative's for a Knative target; for a Deployment or DaemonSet the
    /// ClusterIP Services plus the provider's router; for a core Service target the provider's
    /// router alone (Flagger's KubernetesNoopRouter: the target service controller made the
    /// `-primary` and `-canary` copies).
    pub fn router(&self, c: &Canary) -> Arc<dyn Router> {
        let provider = Provider::of(c, &self.settings.default_provider);
        if c.is_knative_target() {
            return match provider {
                Provider::Knative => self.knative.clone(),
                _ => Arc::new(UnsupportedRouter(c.provider().to_string())),
            };
        }
        let kube = self.kube.clone();
        let traffic: Arc<dyn Router> = match provider {
            Provider::Kubernetes => Arc::new(NopRouter),
            Provider::Istio => Arc::new(IstioRouter::new(kube)),
            Provider::GatewayApi { v1beta1 } => Arc::new(GatewayApiRouter::new(kube, v1beta1)),
            Provider::Knative => Arc::new(UnsupportedRouter("knative".into())),
            Provider::Nginx => Arc::new(NginxRouter::new(kube, &self.settings.ingress_annotations_prefix)),
            Provider::Skipper => Arc::new(SkipperRouter::new(kube)),
            Provider::Smi { version, mesh } => {
                Arc::new(ObjectRouter::new(kube, SmiRouter::new(version, mesh)))
            }
            Provider::Contour => {
                let contour = ContourRouter::new(&self.settings.ingress_class);
                Arc::new(ObjectRouter::new(kube, contour))
            }
            Provider::Gloo => Arc::new(ObjectRouter::new(kube, GlooRouter)),
            Provider::Traefik => Arc::new(ObjectRouter::new(kube, TraefikRouter)),
            Provider::AppMesh { v1beta2 } => Arc::new(AppMeshRouter::new(
                kube,
                v1beta2,
                self.settings.deployment.selector_labels.clone(),
            )),
            Provider::Kuma => Arc::new(ObjectRouter::new(kube, KumaRouter)),
            Provider::Apisix => Arc::new(ApisixRouter::new(kube)),
        };
        if c.target_kind() == "Service" {
            return traffic;
        }
        Arc::new(DeploymentRouter {
            services: ClusterIpServices::new(
                self.kube.clone(),
                self.settings.deployment.selector_labels.clone(),
            ),
            traffic,
        })
    }

    /// The canary's persisted status (what a restarted actor resumes from), without aviary's
    /// validation condition.
    pub async fn load_status(&self, c: &Canary) -> Option<CanaryStatus> {
        let obj = match self.kube.get(CANARY, c.namespace(), c.name()).await {
            Ok(Some(o)) => o,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(canary = %c.key(), "cannot read the canary's status: {}; using the watched one", describe(&e));
                return c.status.clone().map(without_validation);
            }
        };
        let status: Option<CanaryStatus> = obj
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        status.map(without_validation)
    }
}

/// A status without aviary's `Validated` condition.
pub fn without_validation(mut s: CanaryStatus) -> CanaryStatus {
    s.conditions.retain(|c| c.type_ != VALIDATED_CONDITION);
    s
}

/// A target whose initialization first registers the App Mesh virtual nodes and routers.
struct MeshFirst {
    mesh: AppMeshRouter,
    target: Arc<dyn Target>,
}

#[async_trait]
impl Target for MeshFirst {
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        self.target.revision(c).await
    }
    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        self.mesh.reconcile(c).await.map_err(NotReady::retriable)?;
        self.target.initialize(c).await
    }
    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        self.target.primary_ready(c).await
    }
    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        self.target.canary_ready(c).await
    }
    async fn promote(&self, c: &Canary) -> Result<(), String> {
        self.target.promote(c).await
    }
    async fn scale_to_zero(&self, c: &Canary) -> Result<(), String> {
        self.target.scale_to_zero(c).await
    }
    async fn scale_from_zero(&self, c: &Canary) -> Result<(), String> {
        self.target.scale_from_zero(c).await
    }
    async fn finalize(&self, c: &Canary) -> Result<(), String> {
        self.target.finalize(c).await
    }
}

/// A target kind neither Flagger nor aviary knows (validation refuses it first).
#[derive(Debug, Clone)]
pub struct UnsupportedTarget(pub String);

impl UnsupportedTarget {
    fn err(&self, c: &Canary) -> String {
        format!(
            "target kind {:?} (spec.targetRef.kind of canary {}.{}) is not supported by aviary; use a Deployment, a DaemonSet, a Service or a Knative Service",
            self.0,
            c.name(),
            c.namespace()
        )
    }
}

#[async_trait]
impl Target for UnsupportedTarget {
    async fn revision(&self, c: &Canary) -> Result<TargetRevision, String> {
        Err(self.err(c))
    }
    async fn initialize(&self, c: &Canary) -> Result<(), NotReady> {
        Err(NotReady::retriable(self.err(c)))
    }
    async fn primary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        Err(NotReady::retriable(self.err(c)))
    }
    async fn canary_ready(&self, c: &Canary) -> Result<(), NotReady> {
        Err(NotReady::retriable(self.err(c)))
    }
    async fn promote(&self, c: &Canary) -> Result<(), String> {
        Err(self.err(c))
    }
    async fn scale_to_zero(&self, c: &Canary) -> Result<(), String> {
        Err(self.err(c))
    }
    async fn scale_from_zero(&self, c: &Canary) -> Result<(), String> {
        Err(self.err(c))
    }
}

/// Kubernetes Secrets as the providers' `SecretSource`.
#[derive(Debug, Clone)]
pub struct KubeSecrets {
    kube: Kube,
}

#[async_trait]
impl SecretSource for KubeSecrets {
    async fn secret(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let obj = match self.kube.get(SECRET, namespace, name).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err(format!("secrets \"{name}\" not found in namespace {namespace}")),
            Err(e) => return Err(format!("cannot read secret {namespace}/{name}: {}", describe(&e))),
        };
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(obj)
            .map_err(|e| format!("secret {namespace}/{name} is not readable: {e}"))?;
        let mut out: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        Ok(out)
    }
}
