//! `aviary.dev/v1alpha1` LocalService: a workload of the embedded local platform.
//!
//! A LocalService is a command line run as `replicas` processes per version behind a router that
//! listens on `port`. Changing `version` is a new revision, like a new image on a Deployment.

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API version of the local platform's resources.
pub const LOCAL_API_VERSION: &str = "aviary.dev/v1alpha1";

/// A service of the local platform.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "aviary.dev",
    version = "v1alpha1",
    kind = "LocalService",
    plural = "localservices",
    namespaced,
    doc = "LocalService is a workload of aviary's embedded local platform.",
    crates(kube_core = "::kube_core")
)]
#[serde(rename_all = "camelCase")]
pub struct LocalServiceSpec {
    /// The port the router listens on (the apex address users call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The version; a change is a new revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Processes per version (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Command line; `{{port}}` and `{{version}}` are expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment; `{{port}}` and `{{version}}` are expanded in values. The processes inherit
    /// only PATH, HOME, USER, LOGNAME, SHELL, HOSTNAME, LANG, LANGUAGE, LC_*, TZ and TMPDIR from
    /// the agent: anything else, credentials included, must be set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// HTTP path answering 2xx when a process is ready (default `/readyz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_path: Option<String>,
}

impl LocalService {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        crate::object_key(self)
    }

    /// Replicas per version (1 when unset).
    pub fn replicas(&self) -> u32 {
        self.spec.replicas.unwrap_or(1)
    }

    /// The readiness path (`/readyz` when unset).
    pub fn readiness_path(&self) -> &str {
        self.spec.readiness_path.as_deref().unwrap_or("/readyz")
    }
}
