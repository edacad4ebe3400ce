//! One assembly path for both platforms. A platform supplies what differs ([`PlatformParts`]:
//! its workloads, where statuses persist, its metric sources, alert providers and secrets); the
//! [`Assembly`] adds what every agent shares: Flagger's controller metrics and the event log
//! (through the [`Observed`] recorder), the webhook caller, the notifier with the global
//! notifier of the agent's flags, the coordinator link and its gate, the actors' settings, and
//! the admin endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_actors::platform::{StatusListener, TickObserver};
use aviary_actors::{CanaryPorts, Platform, Settings, TickReport};
use aviary_api::{Canary, CanaryStatus};
use aviary_core::EngineConfig;
use aviary_core::ports::{Gate, Hooks, Metrics, NoGate, Notifier, Recorder, Router, SecretSource, Target};
use aviary_providers::alerts::Receiver;
use aviary_providers::{AlertNotifier, AlertProviderSource, HttpHooks};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminSource, AdminState};
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::link::{FleetTarget, Link, LinkConfig, LinkStarter, LinkTask};
use crate::observe::{AnalysisListener, ControllerMetrics, EventLog, Observed};

/// Events kept for `/events`.
const EVENT_LOG_CAPACITY: usize = 2000;

/// A platform's workloads: each canary's Target and Router, and the status its actor resumes
/// from after a restart.
#[async_trait]
pub(crate) trait Workloads: Send + Sync + 'static {
    fn target(&self, canary: &Canary) -> Arc<dyn Target>;
    fn router(&self, canary: &Canary) -> Arc<dyn Router>;
    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus>;
}

/// Names the target of a canary (`namespace`, `name`) in `flagger_canary_duration_seconds`.
pub(crate) type TickTarget = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// What differs between platforms.
pub(crate) struct PlatformParts {
    /// The engine's default provider and the `mesh_provider` of Flagger's controller metrics.
    pub(crate) provider: String,
    /// Prefix of the actors' names (unique per agent in a process).
    pub(crate) name_prefix: String,
    pub(crate) workloads: Arc<dyn Workloads>,
    /// Where statuses persist (the Kubernetes status subresource, the state directory).
    pub(crate) recorder: Arc<dyn Recorder>,
    /// The Metrics port over the platform's MetricTemplates, Secrets and built-in metrics.
    pub(crate) metrics: Arc<dyn Metrics>,
    /// The AlertProviders the notifier looks up, and the Secrets they name.
    pub(crate) alert_providers: Arc<dyn AlertProviderSource>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) tick_target: TickTarget,
}

/// The shared parts of one agent, assembled around its platform.
pub(crate) struct Assembly {
    /// The platform as the canary actors see it.
    pub(crate) actor_platform: Arc<dyn Platform>,
    pub(crate) settings: Settings,
    /// Every status and event goes through it (the Kubernetes watchers' warnings too).
    pub(crate) recorder: Arc<dyn Recorder>,
    pub(crate) metrics: Arc<ControllerMetrics>,
    pub(crate) events: Arc<EventLog>,
    admin_listen: SocketAddr,
    link: Option<LinkStarter>,
}

impl Assembly {
    /// Assembles the agent's shared parts around `parts`; the link (with `--coordinator`) waits
    /// for [`Assembly::start_link`].
    pub(crate) fn new(config: &AgentConfig, parts: PlatformParts) -> Result<Self> {
        let metrics = Arc::new(ControllerMetrics::new(env!("CARGO_PKG_VERSION"), &parts.provider));
        let events = Arc::new(EventLog::new(EVENT_LOG_CAPACITY));
        let link = config.coordinator.as_deref().map(|urls| {
            Link::new(LinkConfig::new(
                urls,
                &config.cluster,
                &config.region,
                config.labels.clone(),
            ))
        });
        let link_handle = link.as_ref().map(|(l, _)| l.clone());
        if let Some(l) = link_handle.clone() {
            events.subscribe(Arc::new(move |e| l.on_event(e)));
        }
        let on_analysis = link_handle
            .clone()
            .map(|l| Arc::new(move |c: &Canary, m: &str, v: f64| l.on_metric(c, m, v)) as AnalysisListener);
        let recorder: Arc<dyn Recorder> = Arc::new(
            Observed::new(parts.recorder, metrics.clone(), events.clone())
                .with_analysis_listener(on_analysis),
        );
        let gate: Arc<dyn Gate> = match &link_handle {
            Some(l) => l.gate(),
            None => Arc::new(NoGate),
        };
        let on_status = link_handle.map(|l| Arc::new(move |c: &Canary| l.on_status(c)) as StatusListener);
        let global = Receiver::from_flags(&config.notifier);
        let notifier: Arc<dyn Notifier> =
            Arc::new(AlertNotifier::new(parts.alert_providers, parts.secrets, global)?);
        let actor_platform = Arc::new(AgentPlatform {
            workloads: parts.workloads,
            metrics: parts.metrics,
            hooks: Arc::new(HttpHooks::new()?),
            notifier,
            recorder: recorder.clone(),
            gate,
        });
        let settings = Settings {
            engine: EngineConfig {
                default_provider: parts.provider,
                cluster: Some(config.cluster.clone()).filter(|c| !c.is_empty()),
                event_webhook: config.event_webhook.clone(),
            },
            min_interval: config.min_analysis_interval,
            name_prefix: parts.name_prefix,
            on_tick: Some(tick_observer(metrics.clone(), parts.tick_target)),
            on_status,
            ..Settings::default()
        };
        Ok(Self {
            actor_platform,
            settings,
            recorder,
            metrics,
            events,
            admin_listen: config.admin_listen,
            link: link.map(|(_, starter)| starter),
        })
    }

    /// Binds the admin endpoint and serves `source` until `stop`; its address and task.
    pub(crate) async fn serve_admin(
        &self,
        source: Arc<dyn AdminSource>,
        stop: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<()>)> {
        let listener = admin::bind(self.admin_listen).await?;
        let addr = listener.local_addr().map_err(|e| Error::Config(e.to_string()))?;
        tracing::info!("admin endpoint on http://{addr}");
        let state = AdminState {
            source,
            metrics: self.metrics.clone(),
            events: self.events.clone(),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, state, stop.cancelled_owned()).await {
                tracing::error!("admin endpoint failed: {e}");
            }
        });
        Ok((addr, task))
    }

    /// Starts the coordinator link against the platform's fleet view (with `--coordinator`).
    pub(crate) fn start_link(&mut self, target: Arc<dyn FleetTarget>) -> Option<LinkTask> {
        self.link.take().map(|starter| starter.start(target))
    }
}

/// `flagger_canary_duration_seconds` (labelled with the target name, as Flagger does) and tick
/// lateness.
fn tick_observer(metrics: Arc<ControllerMetrics>, target: TickTarget) -> TickObserver {
    Arc::new(move |r: &TickReport| {
        let (ns, name) = r.key.split_once('/').unwrap_or(("default", r.key.as_str()));
        metrics.observe_tick(&target(ns, name), ns, r.duration, r.lateness, r.analysed);
    })
}

/// The platform as the actors see it: the workloads' Target and Router per canary, the shared
/// ports for the rest.
struct AgentPlatform {
    workloads: Arc<dyn Workloads>,
    metrics: Arc<dyn Metrics>,
    hooks: Arc<dyn Hooks>,
    notifier: Arc<dyn Notifier>,
    recorder: Arc<dyn Recorder>,
    gate: Arc<dyn Gate>,
}

#[async_trait]
impl Platform for AgentPlatform {
    fn ports(&self, canary: &Canary) -> CanaryPorts {
        CanaryPorts {
            target: self.workloads.target(canary),
            router: self.workloads.router(canary),
            metrics: self.metrics.clone(),
            hooks: self.hooks.clone(),
            notifier: self.notifier.clone(),
            recorder: self.recorder.clone(),
            gate: self.gate.clone(),
        }
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.workloads.load_status(canary).await
    }
}
