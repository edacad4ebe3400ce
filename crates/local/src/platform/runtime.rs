//! The running LocalServices: for each, a router on its port and process groups (the primary,
//! a promotion's next primary, the canary) that feed the router's pools while they are active.
//! The ports and the config reconciler act on services through this runtime; the state
//! directory keeps what a restarted agent cannot observe again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aviary_api::local::LocalServiceSpec;
use aviary_api::{Canary, LocalService};
use parking_lot::Mutex;

use super::config::LoadedConfig;
use super::state::{self, ServiceState, StateDir};
use super::translate::{local_routes, revision_of};
use crate::process::{GroupSpec, GroupStatus, ProcessGroup, ProcessSupervisor, ProcessSupervisorConfig};
use crate::router::{Backend, Backends, HttpRouter, RouterConfig, RouterMetrics};

/// Set on the processes of a retried revision (its value is the retry count).
const RETRY_ENV: &str = "AVIARY_RETRY";

/// One LocalService at run time.
struct Service {
    /// The effective spec (the file's, or a version the coordinator pushed).
    spec: LocalService,
    router: Arc<HttpRouter>,
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

impl Service {
    /// Stops every process group of the service, then its router.
    async fn shutdown(self) {
        for g in [self.primary, self.next_primary, self.canary]
            .into_iter()
            .flatten()
        {
            g.group.stop().await;
        }
        if let Ok(router) = Arc::try_unwrap(self.router) {
            router.shutdown().await;
        }
    }
}

/// Everything the local ports share.
pub(super) struct Runtime {
    /// A weak handle to itself, for the tasks it spawns.
    me: std::sync::OnceLock<std::sync::Weak<Runtime>>,
    pub(super) state: StateDir,
    processes: ProcessSupervisor,
    services: Mutex<BTreeMap<String, Service>>,
    /// LocalServices of the config that could not start (their router's port is taken, …), with
    /// why: their canaries report it as not ready, and the reconciler retries them.
    unavailable: Mutex<BTreeMap<String, String>>,
    pub(super) router_metrics: RouterMetrics,
    next_group: AtomicU64,
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
fn feed_router(router: Arc<HttpRouter>, backend: Backend, group: &ProcessGroup, active: Arc<AtomicBool>) {
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
    /// Opens (and creates) the state directory; no service runs yet.
    pub(super) fn open(state_dir: &Path) -> std::io::Result<Arc<Self>> {
        let state = StateDir::open(state_dir)?;
        let processes = ProcessSupervisor::new(ProcessSupervisorConfig {
            log_dir: Some(state.logs()),
            grace_period: Duration::from_secs(3),
            ..ProcessSupervisorConfig::default()
        });
        let runtime = Arc::new(Self {
            me: std::sync::OnceLock::new(),
            state,
            processes,
            services: Mutex::new(BTreeMap::new()),
            unavailable: Mutex::new(BTreeMap::new()),
            router_metrics: RouterMetrics::new(),
            next_group: AtomicU64::new(1),
        });
        let _ = runtime.me.set(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// Stops every service (processes and routers) and the process supervisor.
    pub(super) async fn shutdown(&self) {
        let services: Vec<Service> = std::mem::take(&mut *self.services.lock()).into_values().collect();
        for svc in services {
            svc.shutdown().await;
        }
        self.processes.shutdown().await;
    }

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
        router: &Arc<HttpRouter>,
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
    pub(super) fn spec(&self, key: &str) -> Result<LocalServiceSpec, String> {
        self.services
            .lock()
            .get(key)
            .map(|s| s.spec.spec.clone())
            .ok_or_else(|| self.missing(key))
    }

    pub(super) fn router(&self, key: &str) -> Result<Arc<HttpRouter>, String> {
        self.services
            .lock()
            .get(key)
            .map(|s| s.router.clone())
            .ok_or_else(|| self.missing(key))
    }

    /// Starts the primary if it is not running (the persisted promoted spec, else the current).
    pub(super) fn ensure_primary(&self, key: &str) -> Result<(), String> {
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
    pub(super) fn primary_status(&self, key: &str) -> Result<GroupStatus, String> {
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
    pub(super) async fn primary_became_ready(&self, key: &str, only: Option<u64>) {
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
    pub(super) fn canary_status(&self, key: &str) -> Result<Option<GroupStatus>, String> {
        let stale = {
            let services = self.services.lock();
            let svc = services.get(key).ok_or_else(|| self.missing(key))?;
            match &svc.canary {
                None => return Ok(None),
                Some(c) if revision_of(&c.spec) == revision_of(&svc.spec.spec) => {
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
    pub(super) fn promote(&self, key: &str) -> Result<(), String> {
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

    pub(super) async fn scale_canary(&self, key: &str, up: bool) -> Result<(), String> {
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
    pub(super) async fn restore(&self, key: &str, canary: &Canary) -> Result<bool, String> {
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
            .set_routes(local_routes(canary, &routes, interval))
            .map_err(|e| e.to_string())?;
        tracing::info!(canary = %canary.key(), "resumed the split {}/{} from the persisted status", 100 - canary_weight, canary_weight);
        Ok(true)
    }

    /// Sets a LocalService's version on behalf of the coordinator; it wins over the file's until
    /// the file's version changes. Persisted, so a restarted agent keeps it.
    pub(super) fn push_version(&self, key: &str, version: &str, rollout: &str) -> Result<(), String> {
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
    pub(super) fn retry(&self, key: &str, rollout: &str) -> Result<(), String> {
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
    pub(super) fn primary_version(&self, key: &str) -> String {
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
    pub(super) fn served(&self, key: &str, window: Duration) -> (u64, Option<f64>) {
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

    /// Brings the running services in line with the config: stops the removed ones, starts or
    /// updates the others (a version the coordinator pushed wins over the file's until the file's
    /// version changes). A service that cannot start is remembered as unavailable, with why.
    pub(super) async fn apply_services(&self, cfg: &LoadedConfig, with_canary: &BTreeSet<String>) {
        let mut to_stop = Vec::new();
        {
            let mut services = self.services.lock();
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
            s.shutdown().await;
        }
        for (key, file_svc) in &cfg.services {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let mut effective = file_svc.clone();
            let mut st: ServiceState = self.state.service(ns, name);
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
                    let _ = self.state.save_service(ns, name, &st);
                }
            }
            match self
                .upsert_service(key, effective, with_canary.contains(key))
                .await
            {
                Ok(()) => {
                    self.unavailable.lock().remove(key);
                }
                Err(e) => {
                    let again = self.unavailable.lock().insert(key.clone(), e.clone());
                    if again.as_ref() != Some(&e) {
                        tracing::error!("LocalService {key}: {e}");
                    }
                }
            }
        }
        self.unavailable
            .lock()
            .retain(|k, _| cfg.services.contains_key(k));
    }

    /// Whether some service failed to start (the reconciler then retries the config now and then).
    pub(super) fn has_unavailable(&self) -> bool {
        !self.unavailable.lock().is_empty()
    }

    async fn upsert_service(&self, key: &str, spec: LocalService, has_canary: bool) -> Result<(), String> {
        let port = spec.spec.port.unwrap_or(0);
        let existing_port = self
            .services
            .lock()
            .get(key)
            .map(|s| s.router.local_addr().port());
        if existing_port.is_some_and(|p| p != port) {
            // a new port: take the old router down first
            let old = self.services.lock().remove(key);
            if let Some(s) = old {
                s.shutdown().await;
            }
        }
        let exists = self.services.lock().contains_key(key);
        if !exists {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let router = HttpRouter::start(RouterConfig::new(ns, name, listen))
                .await
                .map_err(|e| format!("cannot start its router on {listen}: {e}"))?;
            router.set_backends(Backends {
                primary: Vec::new(),
                canary: Vec::new(),
            });
            self.router_metrics.register(&router);
            let router = Arc::new(router);
            self.services.lock().insert(
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
            return self.ensure_primary(key);
        }
        let roll = {
            let mut services = self.services.lock();
            let svc = services.get_mut(key).expect("checked above");
            svc.spec = spec;
            // Without a canary a new version (or replica count) rolls the primary directly.
            let primary = svc.primary.as_ref().map(|p| p.spec.clone());
            !has_canary && primary.is_some_and(|p| p != svc.spec.spec)
        };
        if roll {
            let old = {
                let mut services = self.services.lock();
                services.get_mut(key).and_then(|s| s.primary.take())
            };
            if let Some(old) = old {
                old.active.store(false, Ordering::SeqCst);
                old.group.stop().await;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let mut st = self.state.service(ns, name);
            st.primary = None;
            let _ = self.state.save_service(ns, name, &st);
            self.ensure_primary(key)?;
        }
        Ok(())
    }
}
