//! The agent on the embedded local platform (`aviary agent --local FILE|DIR --state-dir DIR`):
//! aviary-local's platform (processes, routers, the state directory, the config directory)
//! wired to the canary actors, the providers, the admin endpoint and the coordinator link.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_actors::{Agent, CanaryPorts, Platform, Settings};
use aviary_api::{AlertProvider, Canary, CanaryStatus, MetricTemplate};
use aviary_core::EngineConfig;
use aviary_core::fleet::Revision;
use aviary_core::ports::{Gate, Hooks, Metrics, NoGate, Notifier, Recorder, Router, Target};
use aviary_local::platform::{ConfigSink, ConfigWatch, LocalPlatform};
use aviary_providers::{
    AlertNotifier, EnvSecrets, FileSecrets, HttpHooks, ProviderMetrics, ResourceStore, SecretChain,
};

use crate::admin::{AdminSource, AdminState};
use crate::config::{AgentConfig, PlatformConfig};
use crate::observe::{ControllerMetrics, EventLog, EventRecord, Observed};
use crate::{Error, Result};

/// The local platform as the actors see it.
struct LocalActorsPlatform {
    platform: Arc<LocalPlatform>,
    target: Arc<dyn Target>,
    router: Arc<dyn Router>,
    metrics: Arc<dyn Metrics>,
    hooks: Arc<dyn Hooks>,
    notifier: Arc<dyn Notifier>,
    recorder: Arc<dyn Recorder>,
    gate: Arc<dyn Gate>,
}

#[async_trait]
impl Platform for LocalActorsPlatform {
    fn ports(&self, _canary: &Canary) -> CanaryPorts {
        CanaryPorts {
            target: self.target.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            hooks: self.hooks.clone(),
            notifier: self.notifier.clone(),
            recorder: self.recorder.clone(),
            gate: self.gate.clone(),
        }
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.platform.load_status(canary)
    }
}

/// Where the config's resources go: canaries to the actors, templates and alert providers to
/// the providers' store, problems to the event log.
struct AgentSink {
    agent: Arc<Agent>,
    resources: Arc<ResourceStore>,
    events: Arc<EventLog>,
}

impl ConfigSink for AgentSink {
    fn apply_canary(&self, canary: Canary) {
        if let Err(e) = self.agent.apply(canary.clone()) {
            tracing::error!("cannot hand {} to the actors: {e}", canary.key());
        }
    }

    fn remove_canary(&self, namespace: &str, name: &str) {
        let _ = self.agent.remove(namespace, name);
    }

    fn metric_template(&self, template: MetricTemplate) {
        self.resources.insert_template(template);
    }

    fn alert_provider(&self, provider: AlertProvider) {
        self.resources.insert_alert_provider(provider);
    }

    fn warning(&self, namespace: &str, name: &str, reason: &str, message: &str) {
        self.events.push(EventRecord {
            canary: format!("{namespace}/{name}"),
            namespace: namespace.into(),
            name: name.into(),
            kind: "Warning".into(),
            reason: reason.into(),
            message: message.into(),
            timestamp: jiff::Timestamp::now().to_string(),
        });
    }
}

/// The admin view: the supervisor's canaries plus invalid ones with a `Validated=False` condition.
struct LocalAdmin {
    agent: Arc<Agent>,
    platform: Arc<LocalPlatform>,
}

/// Every canary the actors run, with its status.
async fn running(agent: &Agent) -> Vec<Canary> {
    agent
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.canary)
        .collect()
}

#[async_trait]
impl AdminSource for LocalAdmin {
    async fn canaries(&self) -> Vec<Canary> {
        let mut out = running(&self.agent).await;
        out.extend(self.platform.invalid_canaries());
        out
    }

    fn extra_metrics(&self) -> String {
        self.platform.router_metrics()
    }
}

/// The local platform as the coordinator link sees it.
struct LocalFleet {
    agent: Arc<Agent>,
    platform: Arc<LocalPlatform>,
}

#[async_trait]
impl crate::link::FleetTarget for LocalFleet {
    async fn canaries(&self) -> Vec<Canary> {
        running(&self.agent).await
    }

    async fn target_revision(&self, canary: &Canary) -> Revision {
        self.platform.target_revision(canary)
    }

    async fn primary_revision(&self, canary: &Canary) -> Revision {
        self.platform.primary_revision(canary)
    }

    async fn served(&self, canary: &Canary) -> (u64, Option<f64>) {
        self.platform.served(canary)
    }

    async fn fingerprint(&self, canary: &Canary) -> Option<String> {
        self.platform.fingerprint(canary)
    }

    async fn apply_revision(
        &self,
        canary: &Canary,
        revision: &Revision,
        rollout: &str,
    ) -> Result<(), String> {
        self.platform.apply_revision(canary, revision, rollout)
    }

    async fn retry(&self, canary: &Canary, rollout: &str) -> Result<(), String> {
        self.platform.retry(canary, rollout)
    }
}

/// A running local agent.
pub struct LocalAgent {
    agent: Arc<Agent>,
    platform: Arc<LocalPlatform>,
    watch: ConfigWatch,
    admin: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    link: Option<crate::link::LinkTask>,
    /// The admin endpoint's address.
    pub admin_addr: std::net::SocketAddr,
    pub events: Arc<EventLog>,
    pub metrics: Arc<ControllerMetrics>,
}

impl LocalAgent {
    /// Every canary with its status.
    pub async fn canaries(&self) -> Vec<Canary> {
        running(&self.agent).await
    }

    /// Stops the canaries, the routers and every process.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(link) = self.link {
            link.stop().await;
        }
        self.watch.stop().await;
        let _ = self.admin.await;
        if let Ok(agent) = Arc::try_unwrap(self.agent) {
            agent.stop().await;
        }
        self.platform.shutdown().await;
    }
}

/// Runs the local agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let agent = start(config).await?;
    tracing::info!("local agent running; admin on http://{}", agent.admin_addr);
    shutdown.await;
    tracing::info!("stopping: canaries, routers and processes");
    agent.stop().await;
    Ok(())
}

/// Starts the local agent.
pub async fn start(config: AgentConfig) -> Result<LocalAgent> {
    let PlatformConfig::Local {
        config: path,
        state_dir,
    } = &config.platform
    else {
        return Err(Error::Config(
            "the local agent needs --local FILE|DIR and --state-dir DIR".into(),
        ));
    };
    let platform = Arc::new(LocalPlatform::open(state_dir)?);

    let resources = Arc::new(ResourceStore::new());
    let secrets = Arc::new(SecretChain::new(vec![
        Arc::new(FileSecrets::new(platform.secrets_dir())),
        Arc::new(EnvSecrets::from_env()),
    ]));
    let metrics: Arc<dyn Metrics> = Arc::new(ProviderMetrics::new(
        resources.clone(),
        secrets.clone(),
        platform.builtins(),
    )?);
    let hooks: Arc<dyn Hooks> = Arc::new(HttpHooks::new()?);
    let global = aviary_providers::alerts::Receiver::from_flags(&aviary_providers::alerts::GlobalFlags {
        slack_url: config.notifier.slack_url.clone(),
        slack_channel: config.notifier.slack_channel.clone(),
        slack_user: config.notifier.slack_user.clone(),
        slack_proxy_url: config.notifier.slack_proxy.clone(),
        msteams_url: config.notifier.msteams_url.clone(),
        ..Default::default()
    });
    let notifier: Arc<dyn Notifier> = Arc::new(AlertNotifier::new(resources.clone(), secrets, global)?);
    let controller_metrics = Arc::new(ControllerMetrics::new(env!("CARGO_PKG_VERSION"), "local"));
    let events = Arc::new(EventLog::new(2000));
    let link = config.coordinator.as_deref().map(|urls| {
        crate::link::Link::new(crate::link::LinkConfig::new(
            urls,
            &config.cluster,
            &config.region,
            config.labels.clone(),
        ))
    });
    let on_analysis = link.as_ref().map(|(l, _)| {
        let l = l.clone();
        Arc::new(move |c: &Canary, m: &str, v: f64| l.on_metric(c, m, v)) as crate::observe::AnalysisListener
    });
    if let Some((l, _)) = &link {
        let l = l.clone();
        events.subscribe(Arc::new(move |e| l.on_event(e)));
    }
    let recorder: Arc<dyn Recorder> = Arc::new(
        Observed::new(platform.recorder(), controller_metrics.clone(), events.clone())
            .with_analysis_listener(on_analysis),
    );
    let gate = link
        .as_ref()
        .map(|(l, _)| l.gate())
        .unwrap_or_else(|| Arc::new(NoGate));
    let on_status: Option<aviary_actors::platform::StatusListener> = link.as_ref().map(|(l, _)| {
        let l = l.clone();
        Arc::new(move |c: &Canary| l.on_status(c)) as aviary_actors::platform::StatusListener
    });
    let actors_platform = Arc::new(LocalActorsPlatform {
        platform: platform.clone(),
        target: platform.target(),
        router: platform.router(),
        metrics,
        hooks,
        notifier,
        recorder,
        gate,
    });

    let m = controller_metrics.clone();
    let settings = Settings {
        engine: EngineConfig {
            default_provider: "local".into(),
            cluster: Some(config.cluster.clone()).filter(|c| !c.is_empty()),
            event_webhook: config.event_webhook.clone(),
        },
        min_interval: config.min_analysis_interval,
        name_prefix: if config.cluster.is_empty() {
            "local".into()
        } else {
            config.cluster.clone()
        },
        on_status,
        on_tick: Some(Arc::new(move |r: &aviary_actors::TickReport| {
            let (ns, _) = r.key.split_once('/').unwrap_or(("", ""));
            m.observe_tick(
                r.key.rsplit('/').next().unwrap_or(""),
                ns,
                r.duration,
                r.lateness,
                r.analysed,
            );
        })),
        ..Settings::default()
    };
    let agent = Arc::new(Agent::start(actors_platform, settings).await?);

    let stop = tokio_util::sync::CancellationToken::new();
    let listener = crate::admin::bind(config.admin_listen).await?;
    let admin_addr = listener.local_addr().map_err(|e| Error::Config(e.to_string()))?;
    let admin_state = AdminState {
        source: Arc::new(LocalAdmin {
            agent: agent.clone(),
            platform: platform.clone(),
        }),
        metrics: controller_metrics.clone(),
        events: events.clone(),
    };
    let admin_stop = stop.clone();
    let admin = tokio::spawn(async move {
        if let Err(e) =
            crate::admin::serve(listener, admin_state, async move { admin_stop.cancelled().await }).await
        {
            tracing::error!("admin endpoint failed: {e}");
        }
    });

    let sink = Arc::new(AgentSink {
        agent: agent.clone(),
        resources,
        events: events.clone(),
    });
    let watch = platform.watch(path, sink).await;

    let link = link.map(|(_, starter)| {
        starter.start(Arc::new(LocalFleet {
            agent: agent.clone(),
            platform: platform.clone(),
        }))
    });
    Ok(LocalAgent {
        agent,
        platform,
        watch,
        admin,
        stop,
        link,
        admin_addr,
        events,
        metrics: controller_metrics,
    })
}
