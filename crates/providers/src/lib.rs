//! aviary's HTTP adapters: everything the analysis talks to over the network.
//!
//! - [`metrics`]: [`ProviderMetrics`] implements the engine's `Metrics` port. MetricTemplates run
//!   on their provider (`prometheus`, `datadog`, `newrelic`, `graphite`, `influxdb`, `dynatrace`,
//!   `cloudwatch`, `stackdriver`, `splunk`, and through a [`ClusterApi`](metrics::ClusterApi) the
//!   platform plugs in, `keptn` and `externalmetrics`); built-in metrics come from a pluggable
//!   [`BuiltinSource`](aviary_core::ports::BuiltinSource), by default [`PrometheusBuiltins`] with Flagger's PromQL.
//! - [`hooks`]: [`HttpHooks`] implements `Hooks` (Flagger's webhook calls, retries, timeouts).
//! - [`alerts`]: [`AlertNotifier`] implements `Notifier` (slack, msteams, discord, rocket, gchat
//!   and aviary's `generic`).
//! - [`secrets`]: [`SecretSource`](aviary_core::ports::SecretSource) for platforms without
//!   Kubernetes Secrets: [`FileSecrets`], [`EnvSecrets`], [`StaticSecrets`], [`SecretChain`].
//! - [`sources`]: how adapters find MetricTemplates and AlertProviders ([`TemplateSource`],
//!   [`AlertProviderSource`]), and an in-memory [`ResourceStore`].
//! - [`loadtester`]: the Flagger-compatible load tester behind `aviary loadtester` (every Flagger
//!   task type, `concord` and `ngrinder` included).
//! - `http`: shared client plumbing (timeouts, TLS, proxies, redaction of secrets).
//! - `error`: the crate's [`Error`].
//! - `test_util` (tests only): helpers of the unit tests.
//!
//! Adapters do I/O only: the engine renders queries, applies thresholds, filters alerts and
//! writes the event texts.

pub mod alerts;
mod error;
pub mod hooks;
mod http;
pub mod loadtester;
pub mod metrics;
pub mod secrets;
pub mod sources;
#[cfg(test)]
mod test_util;

pub use alerts::{AlertNotifier, GlobalNotifier};
pub use error::{Error, Result};
pub use hooks::HttpHooks;
pub use metrics::{PrometheusBuiltins, ProviderMetrics};
pub use secrets::{EnvSecrets, FileSecrets, SecretChain, StaticSecrets};
pub use sources::{AlertProviderSource, ResourceStore, TemplateSource};
