//! The agent on Kubernetes (`aviary agent --kubeconfig FILE` or in-cluster): a kube-rs client,
//! the watchers of aviary-kube feeding one actor per Canary, the HTTP providers (built-in metrics
//! against `--metrics-server` or `spec.metricsServer`), Flagger's controller metrics and event
//! log, optional leader election through a Lease, and the admin endpoint.
//!
//! With `--coordinator`, the link to the fleet coordinator gates new revisions and applies the
//! revisions it pushes (container images, by container name) to the target.
//!
//! With leader election, a standby replica serves `/healthz` and `/metrics` but watches nothing;
//! the active one runs the watchers and the actors until it stops or loses the Lease, and then
//! stops every actor before it gives the Lease up (or campaigns again after a loss).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aviary_actors::CanaryActors;
use aviary_api::{AlertProvider, Canary, CanaryStatus, MetricTemplate};
use aviary_core::fleet::Revision;
use aviary_core::ports::{Router, SecretSource, Target};
use aviary_kube::knative::KnativeRoute;
use aviary_kube::{
    CanarySink, Kube, KubePlatform, KubeSettings, LeaderElector, LeaseEnd, LeaseSettings, Watched, revisions,
};
use aviary_providers::{AlertProviderSource, PrometheusBuiltins, ProviderMetrics, TemplateSource};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminSource;
use crate::assemble::{Assembly, PlatformParts, TickTarget, Workloads};
use crate::config::{AgentConfig, PlatformConfig};
use crate::error::Result;
use crate::link::FleetTarget;
use crate::observe::ControllerMetrics;

/// How often `flagger_canary_total` is refreshed (Flagger's control loop interval).
const TOTALS_INTERVAL: Duration = Duration::from_secs(10);
/// Agents started in this process (for unique actor names).
static AGENTS: AtomicU64 = AtomicU64::new(0);

/// How long a stopping agent waits for its queued events to be written.
const EVENT_FLUSH: Duration = Duration::from_secs(5);

/// Runs the agent on Kubernetes until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let PlatformConfig::Kube {
        kubeconfig,
        namespace,
        leader_election,
        leader_election_namespace,
        client: settings,
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

    let client = aviary_kube::connect(kubeconfig.as_deref(), settings).await?;
    let kube = if settings.watch_cache {
        Kube::new(client).with_read_cache()
    } else {
        Kube::new(client)
    };
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
    // Like Flagger at startup: one probe of the metrics server, logged either way.
    match builtins.probe_default().await {
        Ok(m) => tracing::info!("{m}"),
        Err(e) => tracing::error!("{e}"),
    }
    let cache = Arc::new(WatchedCache(watched.clone()));
    let provider_metrics = ProviderMetrics::new(cache.clone(), secrets.clone(), builtins)?
        .with_cluster(Arc::new(KubeApi(kube.clone())));
    let mut assembly = Assembly::new(
        &config,
        PlatformParts {
            provider: config.default_provider.clone(),
            // Actor names are process-wide: several agents in one process (tests) must not collide.
            name_prefix: format!(
                "kube-{}-{}",
                config.cluster,
                AGENTS.fetch_add(1, Ordering::Relaxed)
            ),
            workloads: platform.clone(),
            recorder: platform.recorder(),
            metrics: Arc::new(KnativeRoute::new(Arc::new(provider_metrics), kube.clone())),
            alert_providers: cache.clone(),
            secrets,
            tick_target: target_of(watched.clone()),
        },
    )?;
    let (_, admin_task) = assembly.serve_admin(cache, token.clone()).await?;
    let link_task = assembly.start_link(Arc::new(KubeFleet {
        platform: platform.clone(),
        watched: watched.clone(),
    }));

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
            let actors = Arc::new(
                CanaryActors::start(assembly.actor_platform.clone(), assembly.settings.clone()).await?,
            );
            let watchers = tokio::spawn(aviary_kube::watch::run(
                platform.clone(),
                namespace.clone(),
                Arc::new(ActorSink(actors.clone())),
                assembly.recorder.clone(),
                watched.clone(),
                term.clone(),
            ));
            let totals = tokio::spawn(totals_loop(
                assembly.metrics.clone(),
                watched.clone(),
                platform.clone(),
                term.clone(),
            ));
            let outcome = match &elector {
                Some(e) => e.hold(&token).await,
                None => {
                    token.cancelled().await;
                    LeaseEnd::Shutdown
                }
            };
            term.cancel();
            let _ = watchers.await;
            let _ = totals.await;
            match Arc::try_unwrap(actors) {
                Ok(actors) => actors.stop().await,
                Err(actors) => actors.supervisor().stop(Some("agent stopping".into())),
            }
            watched.clear();
            // Events are written off the tick: give the queued ones a moment to reach the API server.
            if tokio::time::timeout(EVENT_FLUSH, platform.recorder().flush())
                .await
                .is_err()
            {
                tracing::warn!("events still queued after {EVENT_FLUSH:?} were not written");
            }
            match outcome {
                LeaseEnd::Shutdown => {
                    if let Some(e) = &elector {
                        e.release().await;
                    }
                    return Ok(());
                }
                LeaseEnd::Lost => {
                    tracing::warn!("leadership lost: every canary actor stopped; campaigning again")
                }
            }
        }
    }
    .await;
    token.cancel();
    if let Some(l) = link_task {
        l.stop().await;
    }
    let _ = admin_task.await;
    result
}

#[async_trait]
impl Workloads for KubePlatform {
    fn target(&self, canary: &Canary) -> Arc<dyn Target> {
        KubePlatform::target(self, canary)
    }

    fn router(&self, canary: &Canary) -> Arc<dyn Router> {
        KubePlatform::router(self, canary)
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        KubePlatform::load_status(self, canary).await
    }
}

/// The watchers hand canaries to the supervisor.
struct ActorSink(Arc<CanaryActors>);

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

/// The agent's Kubernetes client for metric providers that read the cluster (keptn,
/// externalmetrics): Flagger uses its own rest config for them too.
struct KubeApi(Kube);

#[async_trait]
impl aviary_providers::metrics::ClusterApi for KubeApi {
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<serde_json::Value, aviary_providers::metrics::ClusterError> {
        self.0
            .request_json(method, path, body.as_ref())
            .await
            .map_err(|(status, message)| aviary_providers::metrics::ClusterError { status, message })
    }
}

/// The watchers' cache as the providers and the admin server read it: MetricTemplates,
/// AlertProviders, and for `/canaries` the Canaries with the status the API server holds.
struct WatchedCache(Arc<Watched>);

/// `found`, or Kubernetes' wording for a missing `resource` (`metrictemplate.flagger.app`).
fn watched<T>(found: Option<T>, resource: &str, name: &str) -> Result<T, String> {
    found.ok_or_else(|| format!("{resource} \"{name}\" not found"))
}

#[async_trait]
impl TemplateSource for WatchedCache {
    async fn metric_template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        let found = self.0.metric_template(namespace, name);
        watched(found, "metrictemplate.flagger.app", name)
    }
}

#[async_trait]
impl AlertProviderSource for WatchedCache {
    async fn alert_provider(&self, namespace: &str, name: &str) -> Result<AlertProvider, String> {
        let found = self.0.alert_provider(namespace, name);
        watched(found, "alertprovider.flagger.app", name)
    }
}

#[async_trait]
impl AdminSource for WatchedCache {
    async fn canaries(&self) -> Vec<Canary> {
        self.0.canaries()
    }
}

/// Ticks are labelled with the canary's target name, as Flagger does.
fn target_of(watched: Arc<Watched>) -> TickTarget {
    Arc::new(move |ns: &str, name: &str| {
        watched
            .canary(ns, name)
            .map(|c| c.target_name().to_string())
            .unwrap_or_else(|| name.to_string())
    })
}

/// `flagger_canary_total{namespace}`, refreshed like Flagger's control loop, and the count of
/// dropped events.
async fn totals_loop(
    metrics: Arc<ControllerMetrics>,
    watched: Arc<Watched>,
    platform: Arc<KubePlatform>,
    stop: CancellationToken,
) {
    loop {
        let canaries = watched.canaries();
        metrics.set_totals(canaries.iter().map(|c| c.namespace()));
        metrics.set_events_dropped(platform.recorder().dropped_events());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TOTALS_INTERVAL) => {}
        }
    }
}

/// The Kubernetes platform as the coordinator link sees it (aviary-kube's `revisions`).
struct KubeFleet {
    platform: Arc<KubePlatform>,
    watched: Arc<Watched>,
}

#[async_trait]
impl FleetTarget for KubeFleet {
    async fn canaries(&self) -> Vec<Canary> {
        self.watched.canaries()
    }

    async fn target_revision(&self, canary: &Canary) -> Revision {
        revisions::target_revision(self.platform.kube(), canary).await
    }

    async fn primary_revision(&self, canary: &Canary) -> Revision {
        revisions::primary_revision(self.platform.kube(), canary).await
    }

    async fn served(&self, _canary: &Canary) -> (u64, Option<f64>) {
        // Not measured on Kubernetes yet: bakes use their duration (see docs/fleet-rollouts.md).
        (0, None)
    }

    async fn fingerprint(&self, canary: &Canary) -> Option<String> {
        self.platform
            .target(canary)
            .revision(canary)
            .await
            .ok()
            .map(|r| r.fingerprint)
    }

    async fn apply_revision(
        &self,
        canary: &Canary,
        revision: &Revision,
        _rollout: &str,
    ) -> Result<(), String> {
        revisions::apply_revision(self.platform.kube(), canary, revision).await
    }

    async fn retry(&self, canary: &Canary, _rollout: &str) -> Result<(), String> {
        revisions::retry(self.platform.kube(), canary).await
    }
}
