//! The agent on Kubernetes (`aviary agent --kubeconfig FILE` or in-cluster): a kube-rs client,
//! the watchers of aviary-kube feeding one actor per Canary, the HTTP providers (built-in metrics
//! against `--metrics-server` or `spec.metricsServer`), Flagger's controller metrics and event
//! log, optional leader election through a Lease, and the admin endpoint.
//!
//! With leader election, a standby replica serves `/healthz` and `/metrics` but watches nothing;
//! the active one runs the watchers and the actors until it stops or loses the Lease, and then
//! stops every actor before it gives the Lease up (or campaigns again after a loss).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aviary_actors::{Agent, CanaryPorts, Platform, Settings, TickReport};
use aviary_api::{AlertProvider, Canary, CanaryStatus, MetricTemplate};
use aviary_core::EngineConfig;
use aviary_core::ports::{Hooks, Metrics, Notifier, Recorder, SecretSource};
use aviary_kube::knative::KnativeRoute;
use aviary_kube::{
    CanarySink, ClientSettings, Kube, KubePlatform, KubeSettings, LeaderElector, Leadership, LeaseSettings,
    Watched,
};
use aviary_providers::alerts::GlobalFlags;
use aviary_providers::{
    AlertNotifier, AlertProviderSource, GlobalNotifier, HttpHooks, PrometheusBuiltins, ProviderMetrics,
    TemplateSource,
};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminSource, AdminState};
use crate::config::{AgentConfig, PlatformConfig};
use crate::error::Result;
use crate::observe::{ControllerMetrics, EventLog, Observed};

/// How often `flagger_canary_total` is refreshed (Flagger's control loop interval).
const TOTALS_INTERVAL: Duration = Duration::from_secs(10);
/// Events kept for `/events`.
const EVENT_LOG_CAPACITY: usize = 2000;
/// Agents started in this process (for unique actor names).
static AGENTS: AtomicU64 = AtomicU64::new(0);

/// Runs the agent on Kubernetes until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let PlatformConfig::Kube {
        kubeconfig,
        namespace,
        leader_election,
        leader_election_namespace,
    } = config.platform.clone()
    else {
        return Err(aviary_kube::Error::Config(
            "aviary_agent::kube::run needs the Kubernetes platform (--kubeconfig or in-cluster)".into(),
        )
        .into());
    };
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }

    let client = aviary_kube::connect(kubeconfig.as_deref(), ClientSettings::default()).await?;
    let kube = Kube::new(client);
    let platform = Arc::new(KubePlatform::new(
        kube.clone(),
        KubeSettings {
            default_provider: config.default_provider.clone(),
            ..KubeSettings::default()
        },
    ));
    let watched = Arc::new(Watched::default());

    let secrets: Arc<dyn SecretSource> = platform.secrets();
    let builtins = Arc::new(PrometheusBuiltins::new(
        config.metrics_server.clone(),
        config.default_provider.clone(),
    )?);
    let provider_metrics = ProviderMetrics::new(
        Arc::new(WatchedTemplates(watched.clone())),
        secrets.clone(),
        builtins,
    )?;
    let metrics: Arc<dyn Metrics> = Arc::new(KnativeRoute::new(Arc::new(provider_metrics), kube.clone()));
    let hooks: Arc<dyn Hooks> = Arc::new(HttpHooks::new()?);
    let n = &config.notifier;
    let global = GlobalNotifier::from_flags(&GlobalFlags {
        slack_url: n.slack_url.clone(),
        slack_channel: n.slack_channel.clone(),
        slack_user: n.slack_user.clone(),
        slack_proxy_url: n.slack_proxy.clone(),
        msteams_url: n.msteams_url.clone(),
        ..GlobalFlags::default()
    });
    let notifier: Arc<dyn Notifier> = Arc::new(AlertNotifier::new(
        Arc::new(WatchedAlertProviders(watched.clone())),
        secrets,
        global,
    )?);

    let controller_metrics = Arc::new(ControllerMetrics::new(
        env!("CARGO_PKG_VERSION"),
        &config.default_provider,
    ));
    let events = Arc::new(EventLog::new(EVENT_LOG_CAPACITY));
    let recorder: Arc<dyn Recorder> = Arc::new(Observed::new(
        platform.recorder(),
        controller_metrics.clone(),
        events.clone(),
    ));

    let listener = admin::bind(config.admin_listen).await?;
    tracing::info!(
        "admin endpoint on http://{}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    let admin_state = AdminState {
        source: Arc::new(KubeAdmin(watched.clone())),
        metrics: controller_metrics.clone(),
        events,
    };
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin_state,
        token.clone().cancelled_owned(),
    ));

    let settings = Settings {
        engine: EngineConfig {
            default_provider: config.default_provider.clone(),
            cluster: Some(config.cluster.clone()).filter(|c| !c.is_empty()),
            event_webhook: config.event_webhook.clone(),
        },
        min_interval: config.min_analysis_interval,
        // Actor names are process-wide: several agents in one process (tests) must not collide.
        name_prefix: format!(
            "kube-{}-{}",
            config.cluster,
            AGENTS.fetch_add(1, Ordering::Relaxed)
        ),
        on_tick: Some(tick_observer(controller_metrics.clone(), watched.clone())),
        ..Settings::default()
    };
    let actors_platform: Arc<dyn Platform> = Arc::new(KubeActorsPlatform {
        kube: platform.clone(),
        metrics,
        hooks,
        notifier,
        recorder: recorder.clone(),
    });

    let elector = leader_election.then(|| {
        let ns = namespace.clone().unwrap_or(leader_election_namespace.clone());
        LeaderElector::new(kube.clone(), LeaseSettings::new(ns))
    });
    if let Some(e) = &elector {
        tracing::info!("leader election on; this replica is {}", e.identity());
    }

    let result = async {
        loop {
            if let Some(e) = &elector
                && !e.acquire(&token).await
            {
                return Ok(());
            }
            tracing::info!(
                cluster = %config.cluster,
                "watching canaries in {}",
                namespace.as_deref().map_or("all namespaces".to_string(), |n| format!("namespace {n}"))
            );
            let term = token.child_token();
            let agent = Arc::new(Agent::start(actors_platform.clone(), settings.clone()).await?);
            let watchers = tokio::spawn(aviary_kube::watch::run(
                platform.clone(),
                namespace.clone(),
                Arc::new(ActorSink(agent.clone())),
                recorder.clone(),
                watched.clone(),
                term.clone(),
            ));
            let totals = tokio::spawn(totals_loop(
                controller_metrics.clone(),
                watched.clone(),
                term.clone(),
            ));
            let outcome = match &elector {
                Some(e) => e.hold(&token).await,
                None => {
                    token.cancelled().await;
                    Leadership::Shutdown
                }
            };
            term.cancel();
            let _ = watchers.await;
            let _ = totals.await;
            match Arc::try_unwrap(agent) {
                Ok(agent) => agent.stop().await,
                Err(agent) => agent.supervisor().stop(Some("agent stopping".into())),
            }
            watched.clear();
            match outcome {
                Leadership::Shutdown => {
                    if let Some(e) = &elector {
                        e.release().await;
                    }
                    return Ok(());
                }
                Leadership::Lost => {
                    tracing::warn!("leadership lost: every canary actor stopped; campaigning again")
                }
            }
        }
    }
    .await;
    token.cancel();
    let _ = admin_task.await;
    result
}

/// The actors' view of the Kubernetes platform.
struct KubeActorsPlatform {
    kube: Arc<KubePlatform>,
    metrics: Arc<dyn Metrics>,
    hooks: Arc<dyn Hooks>,
    notifier: Arc<dyn Notifier>,
    recorder: Arc<dyn Recorder>,
}

#[async_trait]
impl Platform for KubeActorsPlatform {
    fn ports(&self, canary: &Canary) -> CanaryPorts {
        CanaryPorts {
            target: self.kube.target(canary),
            router: self.kube.router(canary),
            metrics: self.metrics.clone(),
            hooks: self.hooks.clone(),
            notifier: self.notifier.clone(),
            recorder: self.recorder.clone(),
            gate: CanaryPorts::no_gate(),
        }
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.kube.load_status(canary).await
    }
}

/// The watchers hand canaries to the supervisor.
struct ActorSink(Arc<Agent>);

impl CanarySink for ActorSink {
    fn apply(&self, canary: Canary) {
        if let Err(e) = self.0.apply(canary) {
            tracing::error!("the actor supervisor is gone: {e}");
        }
    }
    fn remove(&self, namespace: &str, name: &str) {
        if let Err(e) = self.0.remove(namespace, name) {
            tracing::error!("the actor supervisor is gone: {e}");
        }
    }
}

/// MetricTemplates from the watcher's cache.
struct WatchedTemplates(Arc<Watched>);

#[async_trait]
impl TemplateSource for WatchedTemplates {
    async fn metric_template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.0
            .metric_template(namespace, name)
            .ok_or_else(|| format!("metrictemplate.flagger.app \"{name}\" not found"))
    }
}

/// AlertProviders from the watcher's cache.
struct WatchedAlertProviders(Arc<Watched>);

#[async_trait]
impl AlertProviderSource for WatchedAlertProviders {
    async fn alert_provider(&self, namespace: &str, name: &str) -> Result<AlertProvider, String> {
        self.0
            .alert_provider(namespace, name)
            .ok_or_else(|| format!("alertprovider.flagger.app \"{name}\" not found"))
    }
}

/// `/canaries`: the watched Canaries with the status the API server holds.
struct KubeAdmin(Arc<Watched>);

#[async_trait]
impl AdminSource for KubeAdmin {
    async fn canaries(&self) -> Vec<Canary> {
        self.0.canaries()
    }
}

/// `flagger_canary_duration_seconds` (labelled with the target name, as Flagger does) and tick
/// lateness.
fn tick_observer(
    metrics: Arc<ControllerMetrics>,
    watched: Arc<Watched>,
) -> Arc<dyn Fn(&TickReport) + Send + Sync> {
    Arc::new(move |r: &TickReport| {
        let (ns, name) = r.key.split_once('/').unwrap_or(("default", r.key.as_str()));
        let target = watched
            .canaries()
            .into_iter()
            .find(|c| c.namespace() == ns && c.name() == name)
            .map(|c| c.target_name().to_string())
            .unwrap_or_else(|| name.to_string());
        metrics.observe_tick(&target, ns, r.duration, r.lateness, r.analysed);
    })
}

/// `flagger_canary_total{namespace}`, refreshed like Flagger's control loop.
async fn totals_loop(metrics: Arc<ControllerMetrics>, watched: Arc<Watched>, stop: CancellationToken) {
    loop {
        let canaries = watched.canaries();
        metrics.set_totals(canaries.iter().map(|c| c.namespace()));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TOTALS_INTERVAL) => {}
        }
    }
}
