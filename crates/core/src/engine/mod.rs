//! One analysis tick of one canary: Flagger's `advanceCanary`, step by step, over the ports.
//!
//! [`Tick::run`] is the order of a tick, one named step per line; each step either lets the
//! tick go on or ends it (`Err(Stop)`, after reporting why as an event where Flagger does).
//! The steps live with the decision they make:
//!
//! - [`initialize`]: a new canary (Initializing → Initialized), suspend, the metric providers.
//! - [`revision`]: is there anything to do, start a new analysis (confirm-rollout), restart on
//!   a revision that changed mid-analysis.
//! - [`readiness`]: primary and canary readiness and the progress deadline.
//! - [`verdict`]: the ends of an analysis: skip, rollback requests, promotion, finalising,
//!   rollback, a failed promotion.
//! - [`strategy`]: the analysis proper (pre-rollout or checks) and the next step of the
//!   canary, A/B or blue/green strategy.
//! - [`judge`]: the statistical judge's step (opt-in per canary): counters read every tick,
//!   evidence to the gate, ROLLBACK and early PROMOTE through Flagger's own paths.
//! - [`analysis`]: metric checks; [`gates`]: webhooks, events, alerts; [`status`]: status
//!   writes.
//!
//! [`tick`] works on a defaulted copy of the Canary and writes status through the
//! [`crate::ports::Recorder`] at the points where Flagger does. Deliberate differences from
//! Flagger are listed in docs/compatibility.md and marked `aviary:` in the code.

mod analysis;
mod gates;
mod initialize;
mod judge;
mod readiness;
mod revision;
mod status;
mod strategy;
mod verdict;

use aviary_api::defaults::defaulted;
use aviary_api::{Canary, CanaryPhase, CanaryStatus};
use jiff::Timestamp;

use crate::fingerprint::checksum;
use crate::ports::{EventType, Ports, Routes, TargetRevision};

/// The provider of canaries without `spec.provider`: Flagger's `-mesh-provider` default, and the
/// agent's and `aviary simulate`'s.
pub const DEFAULT_PROVIDER: &str = "istio";

/// Agent-wide settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Provider for canaries that do not set `spec.provider` (Flagger's `-mesh-provider`;
    /// [`DEFAULT_PROVIDER`] by default).
    pub default_provider: String,
    /// Added to every alert as the `Cluster` field (Flagger's `-cluster-name`).
    pub cluster: Option<String>,
    /// Global event webhook, used when a canary has no `event` webhooks (`-event-webhook`).
    pub event_webhook: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_provider: DEFAULT_PROVIDER.into(),
            cluster: None,
            event_webhook: None,
        }
    }
}

/// What one tick needs besides the ports.
#[derive(Debug, Clone)]
pub struct TickInput<'a> {
    /// The canary with its current status.
    pub canary: &'a Canary,
    /// Wall-clock (or virtual) time of this tick.
    pub now: Timestamp,
    /// Random letters for session-affinity cookie values (the first 10 for the canary cookie,
    /// the next 10 for the primary cookie). Passed in so the engine stays deterministic.
    pub token: &'a str,
}

/// State kept by the caller between ticks that is not worth persisting.
#[derive(Debug, Clone, Default)]
pub struct TickMemory {
    /// When the canary was first seen not ready in a row (for the progress deadline).
    canary_unready_since: Option<Timestamp>,
    /// When the primary was first seen not ready in a row (during promotion).
    primary_unready_since: Option<Timestamp>,
    /// Set after the first tick; before it, "not ready since" starts at the status' last
    /// transition so a restarted agent does not extend the deadline.
    warm: bool,
    /// The statistical judge's run of the current analysis, when the canary asks for one.
    judge: Option<judge::JudgeRun>,
    /// The revision whose analysis runs without the judge (reported once).
    judge_off: Option<String>,
}

/// The result of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct TickOutcome {
    /// The status after the tick (what was persisted last).
    pub status: CanaryStatus,
    /// True when the tick reached the analysis (Flagger observes its duration only then).
    pub analysed: bool,
}

/// Internal: the tick ends here, because a step finished the tick's work or reported (as an
/// event) why it cannot go on.
struct Stop;
type Step<T = ()> = Result<T, Stop>;

/// Runs one tick.
pub async fn tick(
    input: TickInput<'_>,
    memory: &mut TickMemory,
    ports: Ports<'_>,
    config: &EngineConfig,
) -> TickOutcome {
    let mut t = Tick::new(input, memory, ports, config);
    let _ = t.run().await;
    t.memory.warm = true;
    TickOutcome {
        status: t.c.status.clone().unwrap_or_default(),
        analysed: t.analysed,
    }
}

/// The working state of one tick.
pub(crate) struct Tick<'a, 'm> {
    /// Defaulted working copy; `status` is updated as the tick persists changes.
    c: Canary,
    ports: Ports<'a>,
    config: &'a EngineConfig,
    memory: &'m mut TickMemory,
    now: Timestamp,
    token: &'a str,
    provider: String,
    /// The phase this tick read. Flagger decides on `cd.Status.Phase` as read at the start of
    /// the tick and writes status through copies, so the phase does not move during a tick
    /// (except at initialization); events and webhook payloads carry it too, except the few
    /// Flagger emits on a copy with the new phase.
    read_phase: CanaryPhase,
    /// The webhook `checksum` of the status this tick read (same rule as `read_phase`).
    read_checksum: String,
    analysed: bool,
    /// The platform's `{{ route }}` (from the last revision read this tick).
    route: Option<String>,
    /// The judge's PROMOTE (mode `enforce`) on this tick, whose own checks passed.
    judge_promotes: bool,
}

impl<'a, 'm> Tick<'a, 'm> {
    fn new(
        input: TickInput<'a>,
        memory: &'m mut TickMemory,
        ports: Ports<'a>,
        config: &'a EngineConfig,
    ) -> Self {
        let mut c = defaulted(input.canary);
        let provider = c
            .spec
            .provider
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| config.default_provider.clone());
        let status = c.status.get_or_insert_with(CanaryStatus::default);
        let read_phase = status.phase;
        let read_checksum = checksum(status.tracked_configs.as_ref(), &status.last_applied_spec);
        Self {
            c,
            ports,
            config,
            memory,
            now: input.now,
            token: input.token,
            provider,
            read_phase,
            read_checksum,
            analysed: false,
            route: None,
            judge_promotes: false,
        }
    }

    /// The order of one tick (Flagger's `advanceCanary`, pkg/controller/scheduler.go:158).
    async fn run(&mut self) -> Step {
        self.mark_new_canary_initializing().await?;
        self.skip_if_suspended().await?;
        self.honour_coordinator_skip().await;
        self.check_metric_providers().await;
        self.initialize_primary().await?;
        self.reconcile_routes().await?;
        self.finish_initialization().await?;
        self.stop_unless_there_is_work().await?;
        self.require_primary_ready().await?;
        let routes = self.read_routes().await?;
        self.start_analysis_of_new_revision().await?;
        self.restart_on_changed_revision().await?;
        self.require_canary_ready().await?;
        self.promote_without_analysis().await?;
        self.honour_rollback_requests().await?;
        self.shift_traffic_back_to_primary(&routes).await?;
        self.finalise_promotion().await?;
        self.roll_back_at_threshold().await?;
        self.analyse(&routes).await?;
        self.adapt_to_kubernetes_provider().await;
        self.advance(&routes).await
    }

    fn status(&self) -> &CanaryStatus {
        self.c.status.as_ref().expect("Tick::new sets a status")
    }

    fn phase(&self) -> CanaryPhase {
        self.status().phase
    }

    /// `name.namespace` of the canary (Flagger's `%s.%s` with the canary name).
    fn id(&self) -> String {
        format!("{}.{}", self.c.name(), self.c.namespace())
    }

    /// `target.namespace` (Flagger's `%s.%s` with the target name).
    fn target_id(&self) -> String {
        format!("{}.{}", self.c.target_name(), self.c.namespace())
    }

    /// Reports a port's error as a warning event and ends the tick.
    async fn warn_and_stop<T>(&mut self, message: &str) -> Step<T> {
        self.event(EventType::Warning, message).await;
        Err(Stop)
    }

    /// The live split; the weight gauge follows it.
    async fn read_routes(&mut self) -> Step<Routes> {
        match self.ports.router.get_routes(&self.c).await {
            Ok(routes) => {
                self.ports
                    .recorder
                    .set_weight_metric(&self.c, routes.primary, routes.canary);
                Ok(routes)
            }
            Err(e) => self.warn_and_stop(&e).await,
        }
    }

    /// The target's current revision; a failure is a warning that ends the tick.
    async fn revision(&mut self) -> Step<TargetRevision> {
        match self.ports.target.revision(&self.c).await {
            Ok(r) => {
                if r.route.is_some() {
                    self.route = r.route.clone();
                }
                Ok(r)
            }
            Err(e) => self.warn_and_stop(&e).await,
        }
    }

    /// Sets the split without mirroring; the weight gauge follows it.
    async fn shift_traffic(&mut self, primary: i32, canary: i32) -> Step {
        self.set_routes(primary, canary, false).await?;
        self.ports.recorder.set_weight_metric(&self.c, primary, canary);
        Ok(())
    }

    /// Sets the split, with the session-affinity cookies the status carries.
    async fn set_routes(&mut self, primary: i32, canary: i32, mirror: bool) -> Step {
        let session = self.session_cookies(canary);
        let routes = Routes {
            primary,
            canary,
            mirror,
            session,
        };
        if let Err(e) = self.ports.router.set_routes(&self.c, &routes).await {
            return self.warn_and_stop(&e).await;
        }
        Ok(())
    }
}
