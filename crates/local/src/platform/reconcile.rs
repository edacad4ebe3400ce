//! Applying the config directory to the running platform: services to the runtime, canaries to
//! the actors, MetricTemplates and AlertProviders to the providers, problems to the event log.
//! The directory is polled every 500 ms; services that could not start are retried every 5 s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aviary_api::{AlertProvider, Canary, MetricTemplate};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{self, Invalid, LoadedConfig};
use super::runtime::Runtime;

/// How often the config directory is read for changes.
const POLL: Duration = Duration::from_millis(500);
/// How often (in polls) services that could not start are tried again.
const UNAVAILABLE_RETRY_POLLS: u32 = 10;

/// Where the config's resources go: the agent hands canaries to its actors, templates and alert
/// providers to its metric providers and notifier, and warnings to its event log.
pub trait ConfigSink: Send + Sync + 'static {
    /// A valid Canary of the config (new, changed or not): create or update its actor.
    fn apply_canary(&self, canary: Canary);
    /// A Canary that left the config: stop its actor.
    fn remove_canary(&self, namespace: &str, name: &str);
    /// A valid MetricTemplate of the config.
    fn metric_template(&self, template: MetricTemplate);
    /// A valid AlertProvider of the config.
    fn alert_provider(&self, provider: AlertProvider);
    /// A new problem of an invalid resource `namespace/name` (one Warning event per change, as on
    /// Kubernetes, not one per reload).
    fn warning(&self, namespace: &str, name: &str, reason: &str, message: &str);
}

/// Applies loaded configurations, remembering what the previous one held.
pub(super) struct Reconciler {
    runtime: Arc<Runtime>,
    sink: Arc<dyn ConfigSink>,
    /// The invalid resources of the last load (the admin endpoint shows the canaries among them).
    invalid: Arc<Mutex<Vec<Invalid>>>,
    canaries: BTreeSet<String>,
    /// The last reported problem per invalid resource.
    reported: BTreeMap<String, String>,
}

impl Reconciler {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        sink: Arc<dyn ConfigSink>,
        invalid: Arc<Mutex<Vec<Invalid>>>,
    ) -> Self {
        Self {
            runtime,
            sink,
            invalid,
            canaries: BTreeSet::new(),
            reported: BTreeMap::new(),
        }
    }

    async fn apply(&mut self, cfg: LoadedConfig) {
        for u in &cfg.unreadable {
            tracing::error!("{u}");
        }
        self.report_invalid(&cfg.invalid);
        for t in &cfg.templates {
            self.sink.metric_template(t.clone());
        }
        for a in &cfg.alert_providers {
            self.sink.alert_provider(a.clone());
        }
        let with_canary: BTreeSet<String> = cfg
            .canaries
            .values()
            .map(|c| format!("{}/{}", c.namespace(), c.target_name()))
            .collect();
        self.runtime.apply_services(&cfg, &with_canary).await;

        let keys: BTreeSet<String> = cfg.canaries.keys().cloned().collect();
        for removed in self.canaries.difference(&keys) {
            let (ns, name) = removed.split_once('/').unwrap_or(("default", removed));
            self.sink.remove_canary(ns, name);
            self.runtime.state.remove_canary(ns, name);
        }
        for c in cfg.canaries.values() {
            self.sink.apply_canary(c.clone());
        }
        self.canaries = keys;
        *self.invalid.lock() = cfg.invalid;
    }

    /// Logs every invalid resource and reports a warning when its problem is new.
    fn report_invalid(&mut self, invalid: &[Invalid]) {
        let mut now = BTreeMap::new();
        for inv in invalid {
            let summary = inv.report.error_summary();
            tracing::error!("invalid {} {}: {summary}", inv.kind, inv.key);
            let id = format!("{}/{}", inv.kind, inv.key);
            if self.reported.get(&id) != Some(&summary) {
                let (namespace, name) = inv.key.split_once('/').unwrap_or(("default", inv.key.as_str()));
                let what = if inv.kind == "Canary" {
                    "canary spec".to_string()
                } else {
                    inv.kind.clone()
                };
                self.sink.warning(
                    namespace,
                    name,
                    aviary_api::status::INVALID_SPEC_REASON,
                    &format!("invalid {what}: {summary}"),
                );
            }
            now.insert(id, summary);
        }
        self.reported = now;
    }

    /// Loads `path` once now (so the caller sees the services running), then follows it.
    pub(super) async fn watch(mut self, path: PathBuf) -> ConfigWatch {
        let stamp = config::stamp(&path);
        self.apply(config::load(&path)).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.follow(path, stamp, stop.clone()));
        ConfigWatch { stop, task }
    }

    async fn follow(mut self, path: PathBuf, mut stamp: config::Stamp, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        let mut polls: u32 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            polls = polls.wrapping_add(1);
            let now = config::stamp(&path);
            if now != stamp {
                stamp = now;
                tracing::info!("configuration changed; reloading {}", path.display());
                self.apply(config::load(&path)).await;
            } else if self.runtime.has_unavailable() && polls.is_multiple_of(UNAVAILABLE_RETRY_POLLS) {
                // a taken port may have been freed: try the services that could not start again
                self.apply(config::load(&path)).await;
            }
        }
    }
}

/// The running config watcher.
pub struct ConfigWatch {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ConfigWatch {
    /// Stops following the config (the services keep running).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
