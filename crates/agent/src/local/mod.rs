//! The agent on the embedded local platform (`aviary agent --local FILE|DIR --state-dir DIR`).
//!
//! - [`config`]: reading LocalServices and Flagger resources from YAML, validation.
//! - [`ports`]: the engine's ports on processes and the router.
//! - [`state`]: the state directory (status, promoted specs, pushed versions).
//!
//! A LocalService runs as a primary process group (the promoted spec) behind a router on its
//! port. With a canary, a new version runs as a canary group that the router weighs in; promotion
//! starts a new primary generation, which replaces the old one once it is ready. Without a
//! canary, a version change rolls the primary directly.

pub mod config;
mod ports;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aviary_actors::{Agent, CanaryPorts, Platform, Settings};
use aviary_api::local::LocalServiceSpec;
use aviary_api::{Canary, CanaryCondition, CanaryStatus, LocalService};
use aviary_core::EngineConfig;
use aviary_core::ports::{Gate, Hooks, Metrics, NoGate, Notifier, Recorder};
use aviary_local::process::{GroupSpec, GroupStatus, ProcessGroup, Supervisor, SupervisorConfig};
use aviary_local::router::{Backend, Backends, Router as LocalRouterImpl, RouterConfig, RouterMetrics};
use aviary_providers::{
    AlertNotifier, EnvSecrets, FileSecrets, HttpHooks, ProviderMetrics, ResourceStore, SecretChain,
};
use parking_lot::Mutex;

use crate::admin::{AdminSource, AdminState};
use crate::config::{AgentConfig, PlatformConfig};
use crate::observe::{ControllerMetrics, EventLog, Observed};
use crate::{Error, Result};
use config::LoadedConfig;
use ports::{LocalBuiltins, LocalRecorder, LocalRouter, LocalTarget};
use state::{ServiceState, StateDir};

/// Set on the processes of a retried revision (its value is the retry count).
const RETRY_ENV: &str = "AVIARY_RETRY";

/// One LocalService at run time.
struct Service {
    /// The effective spec (the file's, or a version the coordinator pushed).
    spec: LocalService,
    router: Arc<LocalRouterImpl>,
    primary: Option<Group>,
    /// A promotion in progress: the next primary generation, not yet serving.
    next_primary: Option<Group>,
    canary: Option<Group>,
    /// The primary's request counter when the current primary generation took over.
    served_baseline: u64,
    /// Set once the router was brought back to the persisted split after an agent restart.
    restored: bool,
}

/// A process group with the spec it runs and the switch that lets it feed the router.
struct Group {
    group: ProcessGroup,
    spec: LocalServiceSpec,
    active: Arc<AtomicBool>,
    /// Unique per started group (a promotion's readiness task must not swap in a newer one).
    id: u64,
}

/// How often (in 500 ms config polls) services that could not start are tried again.
const UNAVAILABLE_RETRY_TICKS: u32 = 10;

/// Everything the local ports share.
pub(crate) struct Runtime {
    /// A weak handle to itself, for the tasks it spawns.
    me: std::sync::OnceLock<std::sync::Weak<Runtime>>,
    state: StateDir,
    processes: Supervisor,
    services: Mutex<BTreeMap<String, Service>>,
    /// LocalServices of the config that could not start (their router's port is taken, …), with
    /// why: their canaries report it as not ready, and the reconciler retries them.
    unavailable: Mutex<BTreeMap<String, String>>,
    router_metrics: RouterMetrics,
    next_group: std::sync::atomic::AtomicU64,
}

fn group_spec(key: &str, role: &str, spec: &LocalServiceSpec) -> GroupSpec {
    GroupSpec {
        name: format!("{key}-{role}").replace('/', "."),
        command: spec.command.clone().unwrap_or_default(),
        env: spec.env.clone().unwrap_or_default(),
        replicas: spec.replicas.unwrap_or(1),
        readiness_path: spec.readiness_path.clone().unwrap_or_else(|| "/readyz".into()),
        version: spec.version.clone().unwrap_or_default(),
    }
}

/// Keeps a router pool equal to a group's ready processes while the group is active.
fn feed_router(
    router: Arc<LocalRouterImpl>,
    backend: Backend,
    group: &ProcessGroup,
    active: Arc<AtomicBool>,
) {
    let mut rx = group.subscribe();
    tokio::spawn(async move {
        loop {
            let status: GroupStatus = rx.borrow_and_update().clone();
            if active.load(Ordering::SeqCst) {
                router.set_pool(backend, status.backends.clone());
            }
            if status.stopped || rx.changed().await.is_err() {
                return;
            }
        }
    });
}

impl Runtime {
    /// Why a service is not running: it failed to start, or the config does not define it.
    fn missing(&self, key: &str) -> String {
        match self.unavailable.lock().get(key) {
            Some(why) => format!("LocalService {key} is unavailable: {why}"),
            None => format!("LocalService {key} is not defined"),
        }
    }

    fn start_group(
        &self,
        key: &str,
        role: &str,
        spec: &LocalServiceSpec,
        router: &Arc<LocalRouterImpl>,
        backend: Backend,
        active: bool,
    ) -> Result<Group, String> {
        let group = self
            .processes
            .start(group_spec(key, role, spec))
            .map_err(|e| format!("{key}: cannot start the {role}: {e}"))?;
        let flag = Arc::new(AtomicBool::new(active));
        feed_router(router.clone(), backend, &group, flag.clone());
        let id = self.next_group.fetch_add(1, Ordering::SeqCst);
        Ok(Group {
            group,
            spec: spec.clone(),
            active: flag,
            id,
        })
    }

    /// The effective spec of a service.
    fn spec(&self, key: &str) -> Result<LocalServiceSpec, String> {
        self.services
            .lock()
            .get(key)
            .map(|s| s.spec.spec.clone())
            .ok_or_else(|| self.missing(key))
    }

    fn router(&self, key: &str) -> Result<Arc<LocalRouterImpl>, String> {
        self.services
            .lock()
            .get(key)
            .map(|s| s.router.clone())
            .ok_or_else(|| self.missing(key))
    }

    /// Starts the primary if it is not running (the persisted promoted spec, else the current).
    fn ensure_primary(&self, key: &str) -> Result<(), String> {
        let mut services = self.services.lock();
        let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
        if svc.primary.is_some() {
            return Ok(());
        }
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let mut st = self.state.service(ns, name);
        let mut spec = st.primary.clone().unwrap_or_else(|| svc.spec.spec.clone());
        spec.replicas = svc.spec.spec.replicas;
        let group = self.start_group(key, "primary", &spec, &svc.router, Backend::Primary, true)?;
        svc.primary = Some(group);
        svc.served_baseline = svc.router.requests_total(Backend::Primary);
        if st.primary.as_ref() != Some(&spec) {
            st.primary = Some(spec);
            self.state
                .save_service(ns, name, &st)
                .map_err(|e| format!("{key}: cannot persist the primary spec: {e}"))?;
        }
        Ok(())
    }

    /// The status of the group that must become ready (the next primary during a promotion).
    fn primary_status(&self, key: &str) -> Result<GroupStatus, String> {
        let services = self.services.lock();
        let svc = services.get(key).ok_or_else(|| self.missing(key))?;
        let g = svc
            .next_primary
            .as_ref()
            .or(svc.primary.as_ref())
            .ok_or_else(|| format!("{key}: the primary is not running"))?;
        Ok(g.group.status())
    }

    /// A ready next primary (group `only`, when given) takes over from the old one.
    async fn primary_became_ready(&self, key: &str, only: Option<u64>) {
        let old = {
            let mut services = self.services.lock();
            let Some(svc) = services.get_mut(key) else { return };
            if only.is_some_and(|id| svc.next_primary.as_ref().map(|n| n.id) != Some(id)) {
                return;
            }
            let Some(next) = svc.next_primary.take() else {
                return;
            };
            next.active.store(true, Ordering::SeqCst);
            svc.router
                .set_pool(Backend::Primary, next.group.status().backends);
            svc.served_baseline = svc.router.requests_total(Backend::Primary);
            svc.primary.replace(next)
        };
        if let Some(old) = old {
            old.active.store(false, Ordering::SeqCst);
            old.group.stop().await;
        }
    }

    /// The canary group's status, `None` when scaled to zero. A canary running an older spec
    /// than the target is restarted (like a Deployment rolling to a new template).
    fn canary_status(&self, key: &str) -> Result<Option<GroupStatus>, String> {
        let stale = {
            let services = self.services.lock();
            let svc = services.get(key).ok_or_else(|| self.missing(key))?;
            match &svc.canary {
                None => return Ok(None),
                Some(c) if ports::revision_of(&c.spec) == ports::revision_of(&svc.spec.spec) => {
                    return Ok(Some(c.group.status()));
                }
                Some(_) => true,
            }
        };
        if stale {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).expect("checked above");
            let spec = svc.spec.spec.clone();
            let router = svc.router.clone();
            if let Some(old) = svc.canary.take() {
                old.active.store(false, Ordering::SeqCst);
                let g = old.group.clone();
                tokio::spawn(async move { g.stop().await });
            }
            let group = self.start_group(key, "canary", &spec, &router, Backend::Canary, true)?;
            let status = group.group.status();
            svc.canary = Some(group);
            return Ok(Some(status));
        }
        Ok(None)
    }

    /// Starts the next primary generation on the canary's spec.
    fn promote(&self, key: &str) -> Result<(), String> {
        let mut services = self.services.lock();
        let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
        let spec = svc.spec.spec.clone();
        let router = svc.router.clone();
        if let Some(stale) = svc.next_primary.take() {
            let g = stale.group.clone();
            tokio::spawn(async move { g.stop().await });
        }
        let next = self.start_group(key, "primary", &spec, &router, Backend::Primary, false)?;
        let group = next.group.clone();
        let id = next.id;
        svc.next_primary = Some(next);
        // The new generation takes over as soon as it is ready, whether or not the engine asks
        // again (a promotion without analysis does not wait for the primary).
        if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
            let key = key.to_string();
            tokio::spawn(async move {
                if group
                    .wait_for(Duration::from_secs(600), |s| s.is_ready() || s.stopped)
                    .await
                    .is_ok_and(|s| s.is_ready())
                {
                    me.primary_became_ready(&key, Some(id)).await;
                }
            });
        }
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let mut st = self.state.service(ns, name);
        st.primary = Some(spec);
        self.state
            .save_service(ns, name, &st)
            .map_err(|e| format!("{key}: cannot persist the primary spec: {e}"))
    }

    async fn scale_canary(&self, key: &str, up: bool) -> Result<(), String> {
        let old = {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
            if up {
                if svc.canary.is_none() {
                    let spec = svc.spec.spec.clone();
                    let router = svc.router.clone();
                    svc.canary =
                        Some(self.start_group(key, "canary", &spec, &router, Backend::Canary, true)?);
                }
                None
            } else {
                svc.router.set_pool(Backend::Canary, Vec::new());
                svc.canary.take()
            }
        };
        if let Some(old) = old {
            old.active.store(false, Ordering::SeqCst);
            old.group.stop().await;
        }
        Ok(())
    }

    /// After an agent restart, a canary in the middle of an analysis gets its canary processes
    /// and its persisted split back, so the analysis resumes where it stood (Flagger re-reads
    /// the split from the mesh; the local router starts empty). The split is restored once the
    /// canary processes are ready (at most 30 s), so the restart does not show up as errors.
    /// Returns `true` when it restored a split on this call.
    async fn restore(&self, key: &str, canary: &Canary) -> Result<bool, String> {
        use aviary_api::CanaryPhase::*;
        let (group, router) = {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
            if svc.restored {
                return Ok(false);
            }
            svc.restored = true;
            let Some(status) = canary.status.as_ref() else {
                return Ok(false);
            };
            if !matches!(
                status.phase,
                Progressing | WaitingPromotion | Promoting | Finalising
            ) {
                return Ok(false);
            }
            if svc.canary.is_none() {
                let spec = svc.spec.spec.clone();
                let router = svc.router.clone();
                svc.canary = Some(self.start_group(key, "canary", &spec, &router, Backend::Canary, true)?);
            }
            (svc.canary.as_ref().map(|g| g.group.clone()), svc.router.clone())
        };
        if let Some(g) = group {
            let _ = g.wait_for(Duration::from_secs(30), |s| s.is_ready()).await;
        }
        let status = canary.status.clone().unwrap_or_default();
        let a = canary.analysis();
        let iterations = a.iterations.unwrap_or(0);
        let canary_weight = match (status.phase, canary.strategy()) {
            (Finalising, _) => 0,
            (_, aviary_api::Strategy::AbTesting) if status.iterations > 0 => 100,
            (_, aviary_api::Strategy::BlueGreen) if status.iterations > iterations => 100,
            (_, aviary_api::Strategy::BlueGreen) => 0,
            (WaitingPromotion, _) => aviary_core::weights::max_weight(a),
            _ => status.canary_weight.clamp(0, 100),
        };
        let routes = aviary_core::ports::Routes::split(100 - canary_weight, canary_weight);
        let interval = canary.analysis_interval(Duration::from_secs(1));
        router
            .set_routes(ports::local_routes(canary, &routes, interval))
            .map_err(|e| e.to_string())?;
        tracing::info!(canary = %canary.key(), "resumed the split {}/{} from the persisted status", 100 - canary_weight, canary_weight);
        Ok(true)
    }

    /// Sets a LocalService's version on behalf of the coordinator; it wins over the file's until
    /// the file's version changes. Persisted, so a restarted agent keeps it.
    fn push_version(&self, key: &str, version: &str, rollout: &str) -> Result<(), String> {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let mut st = self.state.service(ns, name);
        {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
            let file_version = st
                .pushed
                .as_ref()
                .map(|p| p.file_version.clone())
                .unwrap_or_else(|| svc.spec.spec.version.clone().unwrap_or_default());
            svc.spec.spec.version = Some(version.to_string());
            if let Some(env) = svc.spec.spec.env.as_mut() {
                env.remove(RETRY_ENV);
            }
            st.pushed = Some(state::PushedVersion {
                version: version.into(),
                file_version,
                rollout: rollout.into(),
                retry: 0,
            });
        }
        self.state
            .save_service(ns, name, &st)
            .map_err(|e| format!("{key}: cannot persist the pushed version: {e}"))
    }

    /// A new revision of the same version (the coordinator retries a failed cluster; Flagger
    /// never re-analyses a revision that failed). The retry count goes into the processes'
    /// environment, which makes a new fingerprint.
    fn retry(&self, key: &str, rollout: &str) -> Result<(), String> {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let mut st = self.state.service(ns, name);
        {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).ok_or_else(|| self.missing(key))?;
            let version = svc.spec.spec.version.clone().unwrap_or_default();
            let mut pushed = st.pushed.clone().unwrap_or_else(|| state::PushedVersion {
                version: version.clone(),
                file_version: version.clone(),
                rollout: rollout.into(),
                retry: 0,
            });
            pushed.retry += 1;
            pushed.rollout = rollout.into();
            svc.spec
                .spec
                .env
                .get_or_insert_with(Default::default)
                .insert(RETRY_ENV.into(), pushed.retry.to_string());
            st.pushed = Some(pushed);
        }
        self.state
            .save_service(ns, name, &st)
            .map_err(|e| format!("{key}: cannot persist the retry: {e}"))
    }

    /// The version the primary runs.
    fn primary_version(&self, key: &str) -> String {
        let services = self.services.lock();
        services
            .get(key)
            .and_then(|s| {
                s.primary
                    .as_ref()
                    .map(|p| p.spec.version.clone().unwrap_or_default())
            })
            .unwrap_or_default()
    }

    /// Requests the primary's current generation served, and its success rate over `window`.
    fn served(&self, key: &str, window: Duration) -> (u64, Option<f64>) {
        let services = self.services.lock();
        let Some(svc) = services.get(key) else {
            return (0, None);
        };
        let total = svc
            .router
            .requests_total(Backend::Primary)
            .saturating_sub(svc.served_baseline);
        (total, svc.router.stats(Backend::Primary, window).success_rate)
    }
}

/// The local platform as the actors see it.
pub struct LocalPlatform {
    runtime: Arc<Runtime>,
    metrics: Arc<dyn Metrics>,
    hooks: Arc<dyn Hooks>,
    notifier: Arc<dyn Notifier>,
    recorder: Arc<dyn Recorder>,
    gate: Arc<dyn Gate>,
}

#[async_trait]
impl Platform for LocalPlatform {
    fn ports(&self, _canary: &Canary) -> CanaryPorts {
        CanaryPorts {
            target: Arc::new(LocalTarget {
                runtime: self.runtime.clone(),
            }),
            router: Arc::new(LocalRouter {
                runtime: self.runtime.clone(),
            }),
            metrics: self.metrics.clone(),
            hooks: self.hooks.clone(),
            notifier: self.notifier.clone(),
            recorder: self.recorder.clone(),
            gate: self.gate.clone(),
        }
    }

    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.runtime
            .state
            .canary_status(canary.namespace(), canary.name())
    }
}

/// The admin view: the supervisor's canaries plus invalid ones with a `Validated=False` condition.
struct LocalAdmin {
    agent: Arc<Agent>,
    invalid: Arc<Mutex<Vec<config::Invalid>>>,
    runtime: Arc<Runtime>,
}

#[async_trait]
impl AdminSource for LocalAdmin {
    async fn canaries(&self) -> Vec<Canary> {
        let mut out: Vec<Canary> = self
            .agent
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.canary)
            .collect();
        for inv in self.invalid.lock().iter() {
            if let Some(c) = &inv.canary {
                let mut c = (**c).clone();
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
                out.push(c);
            }
        }
        out
    }

    fn extra_metrics(&self) -> String {
        let text = self.runtime.router_metrics.encode();
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_string()
    }
}

/// The local platform as the coordinator link sees it.
struct LocalFleet {
    agent: Arc<Agent>,
    runtime: Arc<Runtime>,
}

#[async_trait]
impl crate::link::FleetTarget for LocalFleet {
    async fn canaries(&self) -> Vec<Canary> {
        self.agent
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.canary)
            .collect()
    }

    async fn target_revision(&self, canary: &Canary) -> aviary_proto::v1::Revision {
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        let version = self
            .runtime
            .spec(&key)
            .ok()
            .and_then(|s| s.version)
            .unwrap_or_default();
        aviary_proto::v1::Revision {
            version,
            ..Default::default()
        }
    }

    async fn primary_revision(&self, canary: &Canary) -> aviary_proto::v1::Revision {
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        aviary_proto::v1::Revision {
            version: self.runtime.primary_version(&key),
            ..Default::default()
        }
    }

    async fn served(&self, canary: &Canary) -> (u64, Option<f64>) {
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        self.runtime.served(&key, Duration::from_secs(60))
    }

    async fn fingerprint(&self, canary: &Canary) -> Option<String> {
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        self.runtime.spec(&key).ok().map(|s| ports::revision_of(&s))
    }

    async fn apply_revision(
        &self,
        canary: &Canary,
        revision: &aviary_proto::v1::Revision,
        rollout: &str,
    ) -> Result<(), String> {
        if revision.version.is_empty() {
            return Err(format!(
                "{} targets a LocalService: the revision needs a version (containerImages apply to Deployments and Knative Services)",
                canary.key()
            ));
        }
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        self.runtime.push_version(&key, &revision.version, rollout)
    }

    async fn retry(&self, canary: &Canary, rollout: &str) -> Result<(), String> {
        let key = format!("{}/{}", canary.namespace(), canary.target_name());
        self.runtime.retry(&key, rollout)
    }
}

/// Settings of [`start`] beyond the agent config (for in-process use, e.g. `aviary demo`).
#[derive(Clone, Default)]
pub struct LocalOptions {
    /// Replaces the no-coordinator gate (the coordinator link provides one).
    pub gate: Option<Arc<dyn Gate>>,
    /// Called with every canary after each tick.
    pub on_status: Option<aviary_actors::platform::StatusListener>,
}

/// A running local agent.
pub struct LocalAgent {
    agent: Arc<Agent>,
    runtime: Arc<Runtime>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        self.agent
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.canary)
            .collect()
    }

    /// Requests served by a LocalService's current primary, and its recent success rate.
    pub fn served(&self, service_key: &str) -> (u64, Option<f64>) {
        self.runtime.served(service_key, Duration::from_secs(60))
    }

    /// The effective spec of a LocalService.
    pub fn service_spec(&self, key: &str) -> Option<LocalServiceSpec> {
        self.runtime.spec(key).ok()
    }

    /// Pushes a version to a LocalService (the coordinator's StartRevision or Revert).
    pub fn push_version(&self, key: &str, version: &str, rollout: &str) -> Result<(), String> {
        self.runtime.push_version(key, version, rollout)
    }

    /// Stops the canaries, the routers and every process.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(link) = self.link {
            link.stop().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
        if let Ok(agent) = Arc::try_unwrap(self.agent) {
            agent.stop().await;
        }
        let services: Vec<Service> = std::mem::take(&mut *self.runtime.services.lock())
            .into_values()
            .collect();
        for svc in services {
            for g in [svc.primary, svc.next_primary, svc.canary].into_iter().flatten() {
                g.group.stop().await;
            }
            if let Ok(router) = Arc::try_unwrap(svc.router) {
                router.shutdown().await;
            }
        }
        self.runtime.processes.shutdown().await;
    }
}

/// Runs the local agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let agent = start(config, LocalOptions::default()).await?;
    tracing::info!("local agent running; admin on http://{}", agent.admin_addr);
    shutdown.await;
    tracing::info!("stopping: canaries, routers and processes");
    agent.stop().await;
    Ok(())
}

/// Starts the local agent.
pub async fn start(config: AgentConfig, options: LocalOptions) -> Result<LocalAgent> {
    let PlatformConfig::Local {
        config: path,
        state_dir,
    } = &config.platform
    else {
        return Err(Error::Config(
            "the local agent needs --local FILE|DIR and --state-dir DIR".into(),
        ));
    };
    let state = StateDir::open(state_dir)
        .map_err(|e| Error::Config(format!("state dir {}: {e}", state_dir.display())))?;
    let processes = Supervisor::new(SupervisorConfig {
        log_dir: Some(state.logs()),
        grace_period: Duration::from_secs(3),
        ..SupervisorConfig::default()
    });
    let runtime = Arc::new(Runtime {
        me: std::sync::OnceLock::new(),
        state: state.clone(),
        processes,
        services: Mutex::new(BTreeMap::new()),
        unavailable: Mutex::new(BTreeMap::new()),
        router_metrics: RouterMetrics::new(),
        next_group: std::sync::atomic::AtomicU64::new(1),
    });
    let _ = runtime.me.set(Arc::downgrade(&runtime));

    let resources = Arc::new(ResourceStore::new());
    let secrets = Arc::new(SecretChain::new(vec![
        Arc::new(FileSecrets::new(state_dir.join("secrets"))),
        Arc::new(EnvSecrets::from_env()),
    ]));
    let builtins = Arc::new(LocalBuiltins {
        runtime: runtime.clone(),
    });
    let metrics: Arc<dyn Metrics> = Arc::new(ProviderMetrics::new(
        resources.clone(),
        secrets.clone(),
        builtins,
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
        Observed::new(
            Arc::new(LocalRecorder { state: state.clone() }),
            controller_metrics.clone(),
            events.clone(),
        )
        .with_analysis_listener(on_analysis),
    );
    let gate = options
        .gate
        .clone()
        .or_else(|| link.as_ref().map(|(l, _)| l.gate()))
        .unwrap_or_else(|| Arc::new(NoGate));
    let on_status: Option<aviary_actors::platform::StatusListener> =
        match (options.on_status.clone(), link.as_ref().map(|(l, _)| l.clone())) {
            (None, None) => None,
            (user, link) => Some(Arc::new(move |c: &Canary| {
                if let Some(f) = &user {
                    f(c);
                }
                if let Some(l) = &link {
                    l.on_status(c);
                }
            })),
        };
    let platform = Arc::new(LocalPlatform {
        runtime: runtime.clone(),
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
    let agent = Arc::new(Agent::start(platform, settings).await?);

    let invalid = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = crate::admin::bind(config.admin_listen).await?;
    let admin_addr = listener.local_addr().map_err(|e| Error::Config(e.to_string()))?;
    let admin_state = AdminState {
        source: Arc::new(LocalAdmin {
            agent: agent.clone(),
            invalid: invalid.clone(),
            runtime: runtime.clone(),
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

    // First load synchronously so the caller sees the services running, then watch.
    let mut reconciler = Reconciler {
        path: path.clone(),
        runtime: runtime.clone(),
        agent: agent.clone(),
        resources,
        invalid,
        canaries: BTreeSet::new(),
        services_with_canary: BTreeSet::new(),
        events: events.clone(),
        reported: BTreeMap::new(),
    };
    let mut stamp = config::stamp(path);
    reconciler.apply(config::load(path)).await;
    let watch_stop = stop.clone();
    let p = path.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut ticks: u32 = 0;
        loop {
            tokio::select! {
                _ = watch_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            ticks = ticks.wrapping_add(1);
            let now = config::stamp(&p);
            if now != stamp {
                stamp = now;
                tracing::info!("configuration changed; reloading {}", p.display());
                reconciler.apply(config::load(&p)).await;
            } else if reconciler.has_unavailable() && ticks.is_multiple_of(UNAVAILABLE_RETRY_TICKS) {
                // a taken port may have been freed: try the services that could not start again
                reconciler.apply(config::load(&p)).await;
            }
        }
    });

    let link = link.map(|(_, starter)| {
        starter.start(Arc::new(LocalFleet {
            agent: agent.clone(),
            runtime: runtime.clone(),
        }))
    });
    Ok(LocalAgent {
        agent,
        runtime,
        tasks: vec![watcher, admin],
        stop,
        link,
        admin_addr,
        events,
        metrics: controller_metrics,
    })
}

/// Applies a loaded configuration to the running platform.
struct Reconciler {
    path: std::path::PathBuf,
    runtime: Arc<Runtime>,
    agent: Arc<Agent>,
    resources: Arc<ResourceStore>,
    invalid: Arc<Mutex<Vec<config::Invalid>>>,
    canaries: BTreeSet<String>,
    services_with_canary: BTreeSet<String>,
    events: Arc<EventLog>,
    /// The last reported problem per invalid resource: one Warning event per change, as on
    /// Kubernetes, not one per reload.
    reported: BTreeMap<String, String>,
}

impl Reconciler {
    async fn apply(&mut self, cfg: LoadedConfig) {
        for u in &cfg.unreadable {
            tracing::error!("{u}");
        }
        self.report_invalid(&cfg.invalid);
        for t in &cfg.templates {
            self.resources.insert_template(t.clone());
        }
        for a in &cfg.alert_providers {
            self.resources.insert_alert_provider(a.clone());
        }
        self.services_with_canary = cfg
            .canaries
            .values()
            .map(|c| format!("{}/{}", c.namespace(), c.target_name()))
            .collect();
        self.apply_services(&cfg).await;

        let keys: BTreeSet<String> = cfg.canaries.keys().cloned().collect();
        for removed in self.canaries.difference(&keys) {
            let (ns, name) = removed.split_once('/').unwrap_or(("default", removed));
            let _ = self.agent.remove(ns, name);
            self.runtime.state.remove_canary(ns, name);
        }
        for c in cfg.canaries.values() {
            if let Err(e) = self.agent.apply(c.clone()) {
                tracing::error!("cannot hand {} to the actors: {e}", c.key());
            }
        }
        self.canaries = keys;
        *self.invalid.lock() = cfg.invalid;
        let _ = &self.path;
    }

    /// Logs every invalid resource and records a Warning event when its problem is new.
    fn report_invalid(&mut self, invalid: &[config::Invalid]) {
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
                self.events.push(crate::observe::EventRecord {
                    canary: format!("{namespace}/{name}"),
                    namespace: namespace.into(),
                    name: name.into(),
                    kind: "Warning".into(),
                    reason: aviary_api::status::INVALID_SPEC_REASON.into(),
                    message: format!("invalid {what}: {summary}"),
                    timestamp: jiff::Timestamp::now().to_string(),
                });
            }
            now.insert(id, summary);
        }
        self.reported = now;
    }

    async fn apply_services(&mut self, cfg: &LoadedConfig) {
        let mut to_stop = Vec::new();
        {
            let mut services = self.runtime.services.lock();
            let gone: Vec<String> = services
                .keys()
                .filter(|k| !cfg.services.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(s) = services.remove(&k) {
                    to_stop.push(s);
                }
            }
        }
        for s in to_stop {
            for g in [s.primary, s.next_primary, s.canary].into_iter().flatten() {
                g.group.stop().await;
            }
            if let Ok(r) = Arc::try_unwrap(s.router) {
                r.shutdown().await;
            }
        }
        for (key, file_svc) in &cfg.services {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let mut effective = file_svc.clone();
            let mut st: ServiceState = self.runtime.state.service(ns, name);
            if let Some(p) = &st.pushed {
                if file_svc.spec.version.as_deref() == Some(p.file_version.as_str()) {
                    effective.spec.version = Some(p.version.clone());
                    if p.retry > 0 {
                        effective
                            .spec
                            .env
                            .get_or_insert_with(Default::default)
                            .insert(RETRY_ENV.into(), p.retry.to_string());
                    }
                } else {
                    // the file changed since the push: the file wins
                    st.pushed = None;
                    let _ = self.runtime.state.save_service(ns, name, &st);
                }
            }
            match self.upsert_service(key, effective).await {
                Ok(()) => {
                    self.runtime.unavailable.lock().remove(key);
                }
                Err(e) => {
                    let again = self.runtime.unavailable.lock().insert(key.clone(), e.clone());
                    if again.as_ref() != Some(&e) {
                        tracing::error!("LocalService {key}: {e}");
                    }
                }
            }
        }
        self.runtime
            .unavailable
            .lock()
            .retain(|k, _| cfg.services.contains_key(k));
    }

    /// Whether some service failed to start (the watcher then retries the config now and then).
    fn has_unavailable(&self) -> bool {
        !self.runtime.unavailable.lock().is_empty()
    }

    async fn upsert_service(&mut self, key: &str, spec: LocalService) -> Result<(), String> {
        let port = spec.spec.port.unwrap_or(0);
        let existing_port = self
            .runtime
            .services
            .lock()
            .get(key)
            .map(|s| s.router.local_addr().port());
        if existing_port.is_some_and(|p| p != port) {
            // a new port: take the old router down first
            let old = self.runtime.services.lock().remove(key);
            if let Some(s) = old {
                for g in [s.primary, s.next_primary, s.canary].into_iter().flatten() {
                    g.group.stop().await;
                }
                if let Ok(r) = Arc::try_unwrap(s.router) {
                    r.shutdown().await;
                }
            }
        }
        let exists = self.runtime.services.lock().contains_key(key);
        if !exists {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let router = LocalRouterImpl::start(RouterConfig::new(ns, name, listen))
                .await
                .map_err(|e| format!("cannot start its router on {listen}: {e}"))?;
            router.set_backends(Backends {
                primary: Vec::new(),
                canary: Vec::new(),
            });
            self.runtime.router_metrics.register(&router);
            let router = Arc::new(router);
            self.runtime.services.lock().insert(
                key.to_string(),
                Service {
                    spec,
                    router,
                    primary: None,
                    next_primary: None,
                    canary: None,
                    served_baseline: 0,
                    restored: false,
                },
            );
            return self.runtime.ensure_primary(key);
        }
        let has_canary = self.services_with_canary.contains(key);
        let roll = {
            let mut services = self.runtime.services.lock();
            let svc = services.get_mut(key).expect("checked above");
            svc.spec = spec;
            // Without a canary a new version (or replica count) rolls the primary directly.
            let primary = svc.primary.as_ref().map(|p| p.spec.clone());
            !has_canary && primary.is_some_and(|p| p != svc.spec.spec)
        };
        if roll {
            let old = {
                let mut services = self.runtime.services.lock();
                services.get_mut(key).and_then(|s| s.primary.take())
            };
            if let Some(old) = old {
                old.active.store(false, Ordering::SeqCst);
                old.group.stop().await;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let mut st = self.runtime.state.service(ns, name);
            st.primary = None;
            let _ = self.runtime.state.save_service(ns, name, &st);
            self.runtime.ensure_primary(key)?;
        }
        Ok(())
    }
}
