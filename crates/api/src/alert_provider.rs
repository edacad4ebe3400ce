//! `flagger.app/v1beta1` AlertProvider: where alerts go.

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric_template::SecretRef;

/// Alert provider types: Flagger's five plus aviary's `generic` (POSTs the event as JSON).
pub const ALERT_PROVIDER_TYPES: &[&str] = &["slack", "msteams", "discord", "rocket", "gchat", "generic"];

/// AlertProvider is the Schema for the AlertProvider API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    plural = "alertproviders",
    namespaced,
    status = "AlertProviderStatus",
    category = "all",
    doc = "AlertProvider is the Schema for the AlertProvider API.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(
    description = "AlertProviderSpec defines the desired state of a AlertProvider.",
    extend("oneOf" = [{"required": ["type", "address"]}, {"required": ["type", "secretRef"]}])
)]
pub struct AlertProviderSpec {
    /// Type of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    #[schemars(extend("enum" = ALERT_PROVIDER_TYPES))]
    pub type_: Option<String>,
    /// Alert channel for this provider (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Bot username for this provider (default `flagger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Hook URL address of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP/S proxy of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret with the keys `address` (overrides spec.address) and optional `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Status of a AlertProvider: Flagger declares the subresource but never writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct AlertProviderStatus {}

impl AlertProvider {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        crate::object_key(self)
    }
}
