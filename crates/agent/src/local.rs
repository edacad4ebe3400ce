//! The agent on the embedded local platform (`aviary agent --local FILE|DIR --state-dir DIR`):
//! aviary-local's platform (processes, routers, the state directory, the config directory)
//! wired to the canary actors, the providers, the admin endpoint and the coordinator link.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_actors::CanaryActors;
use aviary_api::{AlertProvider, Canary, CanaryStatus, MetricTemplate};
use aviary_core::fleet::Revision;
use aviary_core::ports::{Router, Target};
use aviary_local::platform::{ConfigSink, ConfigWatch, LocalPlatform};
use aviary_providers::{EnvSecrets, FileSecrets, ProviderMetrics, ResourceStore, SecretChain};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminSource;
use crate::assemble::{Assembly, PlatformParts, Workloads};
use crate::config::{AgentConfig, PlatformConfig};
use crate::link::{FleetTarget, LinkTask};
use crate::observe::{ControllerMetrics, EventLog, EventRecord};
use crate::{Error, Result};

#[async_trait]
impl Workloads for LocalPlatform {
    fn target(&self, _canary: &Canary) -> Arc<dyn Target> {
        LocalPlatform::target(self)
    }

    fn router(&self, _canary: &Canary) -> Arc<dyn Router> {
        LocalPlatform::router(self)
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        LocalPlatform::load_status(self, canary)
    }
}

/// Where the config's resources go: canaries to the actors, templates and alert providers to
/// the providers' store, problems to the event log.
struct AgentSink {
    actors: Arc<CanaryActors>,
    resources: Arc<ResourceStore>,
    events: Arc<EventLog>,
}

impl ConfigSink for AgentSink {
    fn apply_canary(&self, canary: Canary) {
        if let Err(e) = self.actors.apply(canary.clone()) {
            tracing::error!("cannot hand {} to the actors: {e}", canary.key());
        }
    }

    fn remove_canary(&self, namespace: &str, name: &str) {
        let _ = self.actors.remove(namespace, name);
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
    actors: Arc<CanaryActors>,
    platform: Arc<LocalPlatform>,
}

/// Every canary the actors run, with its status.
async fn running(actors: &CanaryActors) -> Vec<Canary> {
    actors
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
        let mut out = running(&self.actors).await;
        out.extend(self.platform.invalid_canaries());
        out
    }

    fn extra_metrics(&self) -> String {
        self.platform.router_metrics()
    }
}

/// The local platform as the coordinator link sees it.
struct LocalFleet {
    actors: Arc<CanaryActors>,
    platform: Arc<LocalPlatform>,
}

#[async_trait]
impl FleetTarget for LocalFleet {
    async fn canaries(&self) -> Vec<Canary> {
        running(&self.actors).await
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
    actors: Arc<CanaryActors>,
    platform: Arc<LocalPlatform>,
    watch: ConfigWatch,
    admin: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    link: Option<LinkTask>,
    /// The admin endpoint's address.
    pub admin_addr: std::net::SocketAddr,
    pub events: Arc<EventLog>,
    pub metrics: Arc<ControllerMetrics>,
}

impl LocalAgent {
    /// Every canary with its status.
    pub async fn canaries(&self) -> Vec<Canary> {
        running(&self.actors).await
    }

    /// Stops the canaries, the routers and every process.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(link) = self.link {
            link.stop().await;
        }
        self.watch.stop().await;
        let _ = self.admin.await;
        if let Ok(actors) = Arc::try_unwrap(self.actors) {
            actors.stop().await;
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
    let metrics = ProviderMetrics::new(resources.clone(), secrets.clone(), platform.builtins())?;
    let mut assembly = Assembly::new(
        &config,
        PlatformParts {
            provider: "local".into(),
            name_prefix: if config.cluster.is_empty() {
                "local".into()
            } else {
                config.cluster.clone()
            },
            workloads: platform.clone(),
            recorder: platform.recorder(),
            metrics: Arc::new(metrics),
            alert_providers: resources.clone(),
            secrets,
            // Ticks are labelled with the canary's name.
            tick_target: Arc::new(|_: &str, name: &str| name.to_string()),
        },
    )?;
    let actors =
        Arc::new(CanaryActors::start(assembly.actor_platform.clone(), assembly.settings.clone()).await?);

    let stop = CancellationToken::new();
    let admin_source = Arc::new(LocalAdmin {
        actors: actors.clone(),
        platform: platform.clone(),
    });
    let (admin_addr, admin) = assembly.serve_admin(admin_source, stop.clone()).await?;
    let sink = Arc::new(AgentSink {
        actors: actors.clone(),
        resources,
        events: assembly.events.clone(),
    });
    let watch = platform.watch(path, sink).await;
    let link = assembly.start_link(Arc::new(LocalFleet {
        actors: actors.clone(),
        platform: platform.clone(),
    }));
    Ok(LocalAgent {
        actors,
        platform,
        watch,
        admin,
        stop,
        link,
        admin_addr,
        events: assembly.events,
        metrics: assembly.metrics,
    })
}
