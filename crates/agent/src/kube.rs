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
    let kube = Kube::new(client).with_read_cache();
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
    let link = config.coordinator.as_deref().map(|urls| {
        crate::link::Link::new(crate::link::LinkConfig::new(
            urls,
            &config.cluster,
            &config.region,
            config.labels.clone(),
        ))
    });
    if let Some((l, _)) = &link {
        let l = l.clone();
        events.subscribe(Arc::new(move |e| l.on_event(e)));
    }
    let on_analysis = link.as_ref().map(|(l, _)| {
        let l = l.clone();
        Arc::new(move |c: &Canary, m: &str, v: f64| l.on_metric(c, m, v)) as crate::observe::AnalysisListener
    });
    let recorder: Arc<dyn Recorder> = Arc::new(
        Observed::new(platform.recorder(), controller_metrics.clone(), events.clone())
            .with_analysis_listener(on_analysis),
    );
    let gate = link
        .as_ref()
        .map(|(l, _)| l.gate())
        .unwrap_or_else(CanaryPorts::no_gate);
    let on_status: Option<aviary_actors::platform::StatusListener> = link.as_ref().map(|(l, _)| {
        let l = l.clone();
        Arc::new(move |c: &Canary| l.on_status(c)) as aviary_actors::platform::StatusListener
    });

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
        on_status,
        ..Settings::default()
    };
    let actors_platform: Arc<dyn Platform> = Arc::new(KubeActorsPlatform {
        kube: platform.clone(),
        metrics,
        hooks,
        notifier,
        recorder: recorder.clone(),
        gate,
    });
    let link_task = link.map(|(_, starter)| {
        starter.start(Arc::new(KubeFleet {
            platform: platform.clone(),
            watched: watched.clone(),
        }))
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
    if let Some(l) = link_task {
        l.stop().await;
    }
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
    gate: Arc<dyn aviary_core::ports::Gate>,
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
            gate: self.gate.clone(),
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

/// The Kubernetes platform as the coordinator link sees it: revisions are container images
/// (`name → image`; Knative's unnamed container is `user-container`), applied to the target
/// Deployment or Knative Service with a merge patch guarded by its resourceVersion.
struct KubeFleet {
    platform: Arc<KubePlatform>,
    watched: Arc<Watched>,
}

/// Annotation bumped on the pod template to retry the same images (a new revision).
const RETRY_ANNOTATION: &str = "aviary.dev/retry";

fn container_key(c: &serde_json::Value, i: usize) -> String {
    match c["name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ if i == 0 => "user-container".into(),
        _ => format!("container-{i}"),
    }
}

fn images(containers: &serde_json::Value) -> aviary_proto::v1::Revision {
    let container_images = containers
        .as_array()
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| (container_key(c, i), c["image"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    aviary_proto::v1::Revision {
        container_images,
        version: String::new(),
    }
}

impl KubeFleet {
    fn target_kind(canary: &Canary) -> aviary_kube::client::Kind {
        if canary.is_knative_target() {
            aviary_kube::client::KNATIVE_SERVICE
        } else {
            aviary_kube::client::DEPLOYMENT
        }
    }

    async fn get(&self, kind: aviary_kube::client::Kind, ns: &str, name: &str) -> Option<serde_json::Value> {
        self.platform.kube().get(kind, ns, name).await.ok().flatten()
    }
}

#[async_trait]
impl crate::link::FleetTarget for KubeFleet {
    async fn canaries(&self) -> Vec<Canary> {
        self.watched.canaries()
    }

    async fn target_revision(&self, canary: &Canary) -> aviary_proto::v1::Revision {
        match self
            .get(
                Self::target_kind(canary),
                canary.namespace(),
                canary.target_name(),
            )
            .await
        {
            Some(obj) => images(&obj["spec"]["template"]["spec"]["containers"]),
            None => Default::default(),
        }
    }

    async fn primary_revision(&self, canary: &Canary) -> aviary_proto::v1::Revision {
        let ns = canary.namespace();
        if canary.is_knative_target() {
            let Some(svc) = self
                .get(aviary_kube::client::KNATIVE_SERVICE, ns, canary.target_name())
                .await
            else {
                return Default::default();
            };
            let Some(rev) =
                aviary_kube::client::annotation(&svc, "flagger.app/primary-revision").map(str::to_string)
            else {
                return Default::default();
            };
            return match self.get(aviary_kube::client::KNATIVE_REVISION, ns, &rev).await {
                Some(r) => images(&r["spec"]["containers"]),
                None => Default::default(),
            };
        }
        match self
            .get(
                aviary_kube::client::DEPLOYMENT,
                ns,
                &format!("{}-primary", canary.target_name()),
            )
            .await
        {
            Some(obj) => images(&obj["spec"]["template"]["spec"]["containers"]),
            None => Default::default(),
        }
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
        revision: &aviary_proto::v1::Revision,
        _rollout: &str,
    ) -> Result<(), String> {
        if revision.container_images.is_empty() {
            return Err(format!(
                "{} targets a {}: the revision needs containerImages (version applies to LocalServices)",
                canary.key(),
                canary.target_kind()
            ));
        }
        let wanted = revision.container_images.clone();
        let kind = Self::target_kind(canary);
        let updated = self
            .platform
            .kube()
            .modify(kind, canary.namespace(), canary.target_name(), |obj| {
                let containers = obj["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .ok_or("the target has no containers")?;
                let mut missing: Vec<&String> = wanted.keys().collect();
                for (i, c) in containers.iter_mut().enumerate() {
                    let key = container_key(c, i);
                    if let Some(image) = wanted.get(&key) {
                        c["image"] = serde_json::Value::String(image.clone());
                        missing.retain(|k| **k != key);
                    }
                }
                if !missing.is_empty() {
                    return Err(format!("no container named {missing:?} in the target"));
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        updated
            .map(|_| ())
            .ok_or_else(|| format!("{} {} not found", kind.kind, canary.target_name()))
    }

    async fn retry(&self, canary: &Canary, _rollout: &str) -> Result<(), String> {
        let kind = Self::target_kind(canary);
        self.platform
            .kube()
            .modify(kind, canary.namespace(), canary.target_name(), |obj| {
                let meta = &mut obj["spec"]["template"]["metadata"];
                if !meta.is_object() {
                    *meta = serde_json::json!({});
                }
                let n = meta["annotations"][RETRY_ANNOTATION]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if !meta["annotations"].is_object() {
                    meta["annotations"] = serde_json::json!({});
                }
                meta["annotations"][RETRY_ANNOTATION] = serde_json::Value::String((n + 1).to_string());
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| format!("{} {} not found", kind.kind, canary.target_name()))
    }
}
