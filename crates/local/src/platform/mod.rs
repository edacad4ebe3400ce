//! The local platform (`aviary agent --local FILE|DIR --state-dir DIR`): LocalServices run as
//! process groups behind a router on their port, and the engine's ports act on them.
//!
//! - [`config`]: reading LocalServices and Flagger resources from YAML, validation.
//! - `runtime`: the running services (process groups, routers, promotions, pushed versions).
//! - `ports`: the engine's Target, Router, built-in metrics and Recorder on the runtime.
//! - `translate`: a LocalService's revision fingerprint, and the engine's split as router routes.
//! - [`reconcile`]: applying the config directory to the platform, and following it.
//! - [`state`]: the state directory (status, promoted specs, pushed versions).
//!
//! A LocalService runs as a primary process group (the promoted spec) behind a router on its
//! port. With a canary, a new version runs as a canary group that the router weighs in; promotion
//! starts a new primary generation, which replaces the old one once it is ready. Without a
//! canary, a version change rolls the primary directly.

pub mod config;
mod ports;
pub mod reconcile;
mod runtime;
pub mod state;
mod translate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aviary_api::{Canary, CanaryCondition, CanaryStatus};
use aviary_core::fleet::Revision;
use aviary_core::ports::{BuiltinSource, Recorder, Router, Target};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use config::Invalid;
use ports::{LocalBuiltins, LocalRecorder, LocalRouter, LocalTarget, target_key};
pub use reconcile::{ConfigSink, ConfigWatch};
use runtime::Runtime;
use translate::revision_of;

/// The window of the primary's success rate reported to the coordinator.
const SERVED_WINDOW: Duration = Duration::from_secs(60);

/// The local platform of one agent.
pub struct LocalPlatform {
    runtime: Arc<Runtime>,
    /// The invalid resources of the last config load.
    invalid: Arc<Mutex<Vec<Invalid>>>,
}

impl LocalPlatform {
    /// Opens (and creates) the state directory; services start with [`LocalPlatform::watch`].
    pub fn open(state_dir: &Path) -> Result<Self> {
        let runtime = Runtime::open(state_dir)
            .map_err(|e| Error::io(format!("state dir {}", state_dir.display()), e))?;
        Ok(Self {
            runtime,
            invalid: Arc::default(),
        })
    }

    /// Where the file secrets of MetricTemplates and AlertProviders are read from
    /// (`<state-dir>/secrets/<namespace>/<name>/<key>`).
    pub fn secrets_dir(&self) -> PathBuf {
        self.runtime.state.root().join("secrets")
    }

    /// The Target port: a LocalService's primary and canary process groups.
    pub fn target(&self) -> Arc<dyn Target> {
        Arc::new(LocalTarget {
            runtime: self.runtime.clone(),
        })
    }

    /// The Router port: the LocalService's router.
    pub fn router(&self) -> Arc<dyn Router> {
        Arc::new(LocalRouter {
            runtime: self.runtime.clone(),
        })
    }

    /// Built-in metrics from the router's statistics of the canary.
    pub fn builtins(&self) -> Arc<dyn BuiltinSource> {
        Arc::new(LocalBuiltins {
            runtime: self.runtime.clone(),
        })
    }

    /// The Recorder port: statuses persisted in the state directory (events go elsewhere).
    pub fn recorder(&self) -> Arc<dyn Recorder> {
        Arc::new(LocalRecorder {
            state: self.runtime.state.clone(),
        })
    }

    /// The status a restarted actor resumes from.
    pub fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.runtime
            .state
            .canary_status(canary.namespace(), canary.name())
    }

    /// Applies the config at `path` now, then follows its changes until stopped.
    pub async fn watch(&self, path: &Path, sink: Arc<dyn ConfigSink>) -> ConfigWatch {
        reconcile::Reconciler::new(self.runtime.clone(), sink, self.invalid.clone())
            .watch(path.to_path_buf())
            .await
    }

    /// The invalid canaries of the config as written, with a `Validated=False` condition saying
    /// why.
    pub fn invalid_canaries(&self) -> Vec<Canary> {
        self.invalid
            .lock()
            .iter()
            .filter_map(|inv| {
                let mut c = (**inv.canary.as_ref()?).clone();
                let mut status = c.status.take().unwrap_or_default();
                status.conditions.push(CanaryCondition {
                    type_: aviary_api::status::VALIDATED_CONDITION.into(),
                    status: "False".into(),
                    reason: aviary_api::status::INVALID_SPEC_REASON.into(),
                    message: format!("invalid canary spec: {}", inv.report.error_summary()),
                    last_update_time: None,
                    last_transition_time: None,
                });
                c.status = Some(status);
                Some(c)
            })
            .collect()
    }

    /// The routers' Prometheus metrics (OpenMetrics text without the final `# EOF`).
    pub fn router_metrics(&self) -> String {
        let text = self.runtime.router_metrics.encode();
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_string()
    }

    /// The version the canary's LocalService describes now.
    pub fn target_revision(&self, canary: &Canary) -> Revision {
        let version = self
            .runtime
            .spec(&target_key(canary))
            .ok()
            .and_then(|s| s.version)
            .unwrap_or_default();
        Revision {
            version,
            ..Default::default()
        }
    }

    /// The version the canary's primary runs.
    pub fn primary_revision(&self, canary: &Canary) -> Revision {
        Revision {
            version: self.runtime.primary_version(&target_key(canary)),
            ..Default::default()
        }
    }

    /// Requests served by the primary's current generation, and its success rate over the last
    /// minute.
    pub fn served(&self, canary: &Canary) -> (u64, Option<f64>) {
        self.runtime.served(&target_key(canary), SERVED_WINDOW)
    }

    /// The fingerprint of what the canary's LocalService describes now.
    pub fn fingerprint(&self, canary: &Canary) -> Option<String> {
        self.runtime
            .spec(&target_key(canary))
            .ok()
            .map(|s| revision_of(&s))
    }

    /// Sets the LocalService's version on behalf of the coordinator; it wins over the file's
    /// until the file's version changes.
    pub fn apply_revision(&self, canary: &Canary, revision: &Revision, rollout: &str) -> Result<(), String> {
        if revision.version.is_empty() {
            return Err(format!(
                "{} targets a LocalService: the revision needs a version (containerImages apply to Deployments and Knative Services)",
                canary.key()
            ));
        }
        self.runtime
            .push_version(&target_key(canary), &revision.version, rollout)
    }

    /// A new revision of the same version (a coordinator retry after a failed analysis).
    pub fn retry(&self, canary: &Canary, rollout: &str) -> Result<(), String> {
        self.runtime.retry(&target_key(canary), rollout)
    }

    /// Stops every service: routers and processes.
    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}
