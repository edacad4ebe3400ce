//! aviary's resource API: the types every other crate reads.
//!
//! - [`canary`], [`service`], [`status`]: `flagger.app/v1beta1` Canary, every field of Flagger's
//!   CRD, with Flagger's status, phases and `Promoted` condition.
//! - [`metric_template`], [`alert_provider`]: MetricTemplate and AlertProvider.
//! - [`local`], [`fleet`]: aviary's own `aviary.dev/v1alpha1` LocalService and FleetRollout.
//! - [`defaults`]: Flagger's defaults, applied by one function.
//! - [`validate`]: the rules, with field paths; [`document`]: reading multi-document YAML.
//! - [`crd`]: the generated CustomResourceDefinitions; [`duration`]: Go-style durations;
//!   [`suggest`]: "did you mean …?" for misspelt kinds and fields.
//! - `error`: the crate's [`Error`]; [`object_key`]: the `namespace/name` of any of the types.

pub mod alert_provider;
pub mod canary;
pub mod crd;
pub mod defaults;
pub mod document;
pub mod duration;
mod error;
pub mod fleet;
pub mod local;
pub mod metric_template;
pub mod service;
pub mod status;
pub mod suggest;
pub mod validate;

pub use alert_provider::{AlertProvider, AlertProviderSpec};
pub use canary::{Canary, CanaryAnalysis, CanarySpec, HookType, Strategy};
pub use error::{Error, Result};
pub use fleet::{FleetRollout, FleetRolloutSpec, FleetRolloutStatus};
pub use local::{LocalService, LocalServiceSpec};
pub use metric_template::{MetricTemplate, MetricTemplateSpec};
pub use status::{CanaryCondition, CanaryPhase, CanaryStatus};

/// Re-exported so users of the API types name the same versions.
pub use k8s_openapi;

/// `namespace/name` of a resource (`default` when its namespace is unset): the key of actor names,
/// logs and validation messages. Each resource type's `key()` is this.
pub fn object_key<K: kube_core::Resource>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}
