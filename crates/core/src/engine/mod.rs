//! One analysis tick of one canary: Flagger's `advanceCanary`, step by step, over the ports.
//!
//! The order of a tick (reference: Flagger's scheduler) is: suspend → provider check → initialize
//! (primary, routes, scale down) → should we advance? → primary readiness → read routes → start
//! a new analysis (confirm-rollout) → restart on a changed revision → canary readiness →
//! skipAnalysis → rollback webhooks → promotion traffic shift → finalising → threshold →
//! pre-rollout or analysis (webhooks and metrics) → strategy (A/B, blue/green, canary).
//!
//! [`tick`] works on a defaulted copy of the Canary and writes status through the
//! [`crate::ports::Recorder`] at the points where Flagger does. Deliberate differences from
//! Flagger are listed in docs/compatibility.md and marked `aviary:` below.

mod analysis;
mod gates;
mod status;

use aviary_api::defaults::defaulted;
use aviary_api::{Canary, CanaryPhase, CanaryStatus, Strategy};
use jiff::Timestamp;

use crate::ports::{EventType, NotReady, Ports, Routes, Severity, TargetRevision};
use crate::weights;

/// Agent-wide settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Provider for canaries that do not set `spec.provider` (Flagger's `-mesh-provider`).
    pub default_provider: String,
    /// Added to every alert as the `Cluster` field (Flagger's `-cluster-name`).
    pub cluster: Option<String>,
    /// Global event webhook, used when a canary has no `event` webhooks (`-event-webhook`).
    pub event_webhook: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_provider: "kubernetes".into(),
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
}

/// The result of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct TickOutcome {
    /// The status after the tick (what was persisted last).
    pub status: CanaryStatus,
    /// True when the tick reached the analysis (Flagger observes its duration only then).
    pub analysed: bool,
}

/// Internal: stop the tick here (the reason was already reported as an event).
struct Abort;
type Step<T = ()> = Result<T, Abort>;

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
    analysed: bool,
    /// The platform's `{{ route }}` (from the last revision read this tick).
    route: Option<String>,
}

impl<'a, 'm> Tick<'a, 'm> {
    fn new(
        input: TickInput<'a>,
        memory: &'m mut TickMemory,
        ports: Ports<'a>,
        config: &'a EngineConfig,
    ) -> Self {
        let c = defaulted(input.canary);
        let provider = c
            .spec
            .provider
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| config.default_provider.clone());
        Self {
            c,
            ports,
            config,
            memory,
            now: input.now,
            token: input.token,
            provider,
            analysed: false,
            route: None,
        }
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

    async fn run(&mut self) -> Step {
        if self.c.status.is_none() {
            self.c.status = Some(CanaryStatus::default());
        }
        // 1. suspend: pause even mid-analysis.
        if self.c.suspended() {
            self.event(EventType::Normal, "skipping canary run as object is suspended")
                .await;
            return Err(Abort);
        }
        // The coordinator may ask to promote a known-good revision (a revert) without analysis.
        if !self.c.skip_analysis() && self.ports.gate.skip_analysis(&self.c).await {
            self.c.spec.skip_analysis = Some(true);
        }
        let skip = self.c.skip_analysis();
        let mut phase = self.phase();

        // Flagger's sync handler marks a canary it has never seen as Initializing.
        if phase == CanaryPhase::Empty {
            self.set_phase(CanaryPhase::Initializing).await?;
            phase = CanaryPhase::Initializing;
        }
        let initializing = phase == CanaryPhase::Initializing;

        // 5. metric providers
        if !skip && initializing {
            match self.ports.metrics.check_providers(&self.c).await {
                Ok(()) => {
                    self.event(EventType::Normal, "all the metrics providers are available!")
                        .await
                }
                Err(e) => {
                    self.event(
                        EventType::Warning,
                        &format!("Error checking metric providers: {e}"),
                    )
                    .await
                }
            }
        }

        // 7. the primary; during initialization wait until it is ready.
        if let Err(e) = self.ports.target.initialize(&self.c).await {
            return self.not_ready(e).await;
        }
        if initializing
            && !skip
            && let Err(e) = self.ports.target.primary_ready(&self.c).await
        {
            return self.not_ready(e).await;
        }

        // 9, 11. services and routes
        if let Err(e) = self.ports.router.reconcile(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }

        // 10, 12. scale the target down and record the initial revision
        if initializing {
            tracing::info!(canary = %self.id(), "Scaling down {} {}", self.c.target_kind(), self.target_id());
            if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
                self.event(EventType::Warning, &e).await;
                return Err(Abort);
            }
            let revision = self.revision().await?;
            self.sync_status(CanaryPhase::Initialized, 0, 0, 0, &revision)
                .await?;
            self.ports
                .recorder
                .set_phase_metric(&self.c, CanaryPhase::Initialized);
            self.event(EventType::Normal, &format!("Initialization done! {}", self.id()))
                .await;
            let kind = self.c.target_kind().to_string();
            self.alert(
                &format!("New {kind} detected, initialization completed."),
                true,
                Severity::Info,
            )
            .await;
            return Ok(());
        }

        // 13. should we advance?
        if !phase.is_active() {
            let revision = self.revision().await?;
            if !self.revision_changed(&revision) {
                self.ports.recorder.set_phase_metric(&self.c, phase);
                return Ok(());
            }
            // aviary: unlike Flagger, a Failed canary does not store the new fingerprint here; it
            // is stored only when the analysis starts, so an early return cannot skip a revision.
        }

        // 14. primary readiness
        if !skip {
            match self.ports.target.primary_ready(&self.c).await {
                Ok(()) => self.memory.primary_unready_since = None,
                Err(e) => return self.primary_not_ready(e).await,
            }
        }

        // 15. the live split
        let routes = match self.ports.router.get_routes(&self.c).await {
            Ok(r) => r,
            Err(e) => {
                self.event(EventType::Warning, &e).await;
                return Err(Abort);
            }
        };
        self.ports
            .recorder
            .set_weight_metric(&self.c, routes.primary, routes.canary);

        // 16. start a new analysis (or keep waiting for approval)
        self.ports.recorder.set_phase_metric(&self.c, phase);
        if !matches!(
            phase,
            CanaryPhase::Progressing
                | CanaryPhase::WaitingPromotion
                | CanaryPhase::Promoting
                | CanaryPhase::Finalising
        ) {
            return self.start_analysis().await;
        }

        // 17. restart when the revision changes mid-analysis
        if matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion) {
            let revision = self.revision().await?;
            if self.revision_changed(&revision) {
                self.event(
                    EventType::Normal,
                    &format!(
                        "New revision detected! Restarting analysis for {}",
                        self.target_id()
                    ),
                )
                .await;
                self.set_routes(weights::TOTAL, 0, false).await?;
                self.sync_status(CanaryPhase::Progressing, 0, 0, 0, &revision)
                    .await?;
                return Ok(());
            }
        }

        // 18. canary readiness
        match self.ports.target.canary_ready(&self.c).await {
            Ok(()) => self.memory.canary_unready_since = None,
            Err(e) => return self.canary_not_ready(e).await,
        }

        // 19. skipAnalysis
        if skip {
            return self.skip_analysis().await;
        }

        // 20. rollback requests: the fleet coordinator, then rollback webhooks
        if matches!(
            phase,
            CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion
        ) {
            if let Some(reason) = self.ports.gate.rollback_requested(&self.c).await {
                let by = self.ports.gate.name().unwrap_or("the coordinator").to_string();
                self.event(
                    EventType::Warning,
                    &format!("Rolling back {} requested by {by}: {reason}", self.id()),
                )
                .await;
                self.alert(
                    &format!("Rolling back, requested by {by}: {reason}"),
                    false,
                    Severity::Warn,
                )
                .await;
                return self.rollback().await;
            }
            if self.run_rollback_hooks(phase).await {
                self.event(
                    EventType::Warning,
                    &format!("Rolling back {} manual webhook invoked", self.id()),
                )
                .await;
                self.alert("Rolling back manual webhook invoked", false, Severity::Warn)
                    .await;
                return self.rollback().await;
            }
        }

        // 21. promotion traffic shift
        if phase == CanaryPhase::Promoting {
            return self.promotion_traffic_shift(&routes).await;
        }

        // 22. finalising
        if phase == CanaryPhase::Finalising {
            return self.finalise().await;
        }

        // 23. failed checks threshold
        if matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion)
            && self.status().failed_checks >= self.c.threshold()
        {
            return self.rollback().await;
        }

        // 25. the first tick runs pre-rollout hooks; later ticks run the analysis
        self.analysed = true;
        let mirror = self.c.analysis().mirror.unwrap_or(false);
        if routes.canary == 0 && self.status().iterations == 0 && !(mirror && routes.mirror) {
            self.event(
                EventType::Normal,
                &format!("Starting canary analysis for {}", self.target_id()),
            )
            .await;
            if !self.run_pre_rollout_hooks().await {
                return self.count_failed_check().await;
            }
        } else if !self.run_analysis().await {
            return self.count_failed_check().await;
        }

        // 26. the kubernetes provider can only do blue/green
        if self.provider == "kubernetes" {
            let a = self
                .c
                .spec
                .analysis
                .as_mut()
                .expect("validated canaries have an analysis");
            let had_match = a.match_.as_ref().is_some_and(|m| !m.is_empty());
            let iterations = a.iterations.unwrap_or(0);
            if had_match {
                a.match_ = None;
            }
            if iterations < 1 {
                a.iterations = Some(10);
            }
            if had_match {
                self.event(
                    EventType::Warning,
                    "A/B testing is not supported when using the kubernetes provider",
                )
                .await;
            }
            if iterations < 1 {
                self.event(
                    EventType::Warning,
                    "Progressive traffic is not supported when using the kubernetes provider",
                )
                .await;
                self.event(EventType::Warning, "Setting canaryAnalysis.iterations: 10")
                    .await;
            }
        }

        // 27. strategy
        match self.c.strategy() {
            Strategy::AbTesting => self.run_ab().await,
            Strategy::BlueGreen => self.run_blue_green(&routes).await,
            Strategy::Canary => {
                if weights::next_step(self.c.analysis(), routes.canary) > 0 {
                    if !routes.mirror
                        && phase == CanaryPhase::Progressing
                        && !self.run_confirm_traffic_increase_hooks().await
                    {
                        return Ok(());
                    }
                    self.run_canary(&routes).await
                } else {
                    Ok(())
                }
            }
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
            Err(e) => {
                self.event(EventType::Warning, &e).await;
                Err(Abort)
            }
        }
    }

    /// Flagger's `HasTargetChanged || HaveDependenciesChanged`.
    fn revision_changed(&self, revision: &TargetRevision) -> bool {
        let s = self.status();
        let spec_changed = if s.last_applied_spec.is_empty() {
            true
        } else if s.last_promoted_spec == revision.fingerprint {
            false // a manual rollback to the promoted revision starts nothing
        } else {
            s.last_applied_spec != revision.fingerprint
        };
        let deps_changed = match (&revision.tracked_configs, &s.tracked_configs) {
            (Some(now), Some(before)) => now.iter().any(|(k, v)| before.get(k) != Some(v)),
            (Some(now), None) => !now.is_empty() && !s.last_applied_spec.is_empty(),
            _ => false,
        };
        spec_changed || deps_changed
    }

    /// A readiness failure during initialization: wait, or fail on a fatal one.
    async fn not_ready(&mut self, e: NotReady) -> Step {
        if e.retriable {
            self.event(EventType::Warning, &e.message).await;
            return Err(Abort);
        }
        self.event(EventType::Warning, &e.message).await;
        self.rollback().await
    }

    async fn primary_not_ready(&mut self, e: NotReady) -> Step {
        let promoting = matches!(self.phase(), CanaryPhase::Promoting | CanaryPhase::Finalising);
        let fatal = !e.retriable || (promoting && self.deadline_passed(false));
        if !fatal {
            self.event(EventType::Warning, &e.message).await;
            return Err(Abort);
        }
        if promoting {
            return self.handle_failed_promotion(&e.message).await;
        }
        self.event(EventType::Warning, &e.message).await;
        self.rollback().await
    }

    async fn canary_not_ready(&mut self, e: NotReady) -> Step {
        let analysing = matches!(
            self.phase(),
            CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
        );
        // aviary: the progress deadline is enforced here even when the platform never reports it
        // (Flagger #1247: crash-looping pods never produce ProgressDeadlineExceeded).
        let fatal = !e.retriable || (analysing && self.deadline_passed(true));
        if !fatal {
            self.event(EventType::Warning, &e.message).await;
            return Err(Abort);
        }
        let msg = &e.message;
        self.event(
            EventType::Warning,
            &format!("Rolling back {} progress deadline exceeded {msg}", self.id()),
        )
        .await;
        self.alert(
            &format!("Progress deadline exceeded {msg}"),
            false,
            Severity::Error,
        )
        .await;
        self.rollback().await
    }

    /// Tracks "not ready since" and tells whether `progressDeadlineSeconds` has passed.
    fn deadline_passed(&mut self, canary: bool) -> bool {
        let start = if self.memory.warm {
            self.now
        } else {
            self.status()
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(self.now)
        };
        let slot = if canary {
            &mut self.memory.canary_unready_since
        } else {
            &mut self.memory.primary_unready_since
        };
        let since = *slot.get_or_insert(start);
        let waited = self.now.duration_since(since);
        let deadline = self.c.progress_deadline();
        waited.is_positive() && waited.unsigned_abs() > deadline
    }

    /// 16: a new revision (or a Waiting one) asks for approval and starts the analysis.
    async fn start_analysis(&mut self) -> Step {
        let revision = self.revision().await?;
        if !self.revision_changed(&revision) {
            return Ok(());
        }
        if !self.run_confirm_rollout_gates(&revision).await? {
            return Ok(());
        }
        if let Err(e) = self.ports.target.scale_from_zero(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        self.sync_status(CanaryPhase::Progressing, 0, 0, 0, &revision)
            .await?;
        self.memory.canary_unready_since = None;
        self.ports
            .recorder
            .set_phase_metric(&self.c, CanaryPhase::Progressing);
        self.event(
            EventType::Normal,
            &format!("New revision detected! Scaling up {}", self.target_id()),
        )
        .await;
        self.alert(
            "New revision detected, progressing canary analysis.",
            true,
            Severity::Info,
        )
        .await;
        Ok(())
    }

    async fn skip_analysis(&mut self) -> Step {
        self.set_routes(weights::TOTAL, 0, false).await?;
        self.ports.recorder.set_weight_metric(&self.c, weights::TOTAL, 0);
        self.event(
            EventType::Normal,
            &format!(
                "Copying {} template spec to {}-primary.{}",
                self.target_id(),
                self.c.target_name(),
                self.c.namespace()
            ),
        )
        .await;
        if let Err(e) = self.ports.target.promote(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        self.set_phase(CanaryPhase::Succeeded).await?;
        self.ports
            .recorder
            .set_phase_metric(&self.c, CanaryPhase::Succeeded);
        self.ports
            .recorder
            .inc_successes(&self.c, self.c.strategy(), true);
        self.run_post_rollout_hooks(CanaryPhase::Succeeded).await;
        self.event(
            EventType::Normal,
            &format!(
                "Promotion completed! Canary analysis was skipped for {}",
                self.target_id()
            ),
        )
        .await;
        self.alert(
            "Canary analysis was skipped, promotion finished.",
            false,
            Severity::Info,
        )
        .await;
        Ok(())
    }

    /// 21: shift traffic back to the (new) primary.
    async fn promotion_traffic_shift(&mut self, routes: &Routes) -> Step {
        if self.provider == "kubernetes" {
            return self.set_phase(CanaryPhase::Finalising).await;
        }
        let a = self.c.analysis().clone();
        if a.step_weight_promotion.unwrap_or(0) == 0 {
            self.event(EventType::Normal, "Routing all traffic to primary")
                .await;
            self.set_routes(weights::TOTAL, 0, false).await?;
            self.ports.recorder.set_weight_metric(&self.c, weights::TOTAL, 0);
            return self.set_phase(CanaryPhase::Finalising).await;
        }
        if routes.canary > 0 {
            let (p, c) = weights::promotion_step(&a, routes.primary, routes.canary);
            self.set_routes(p, c, false).await?;
            self.set_weight(c).await?;
            self.ports.recorder.set_weight_metric(&self.c, p, c);
            self.event(
                EventType::Normal,
                &format!("Advance {} primary weight {p}", self.id()),
            )
            .await;
            if p == weights::TOTAL {
                self.set_phase(CanaryPhase::Finalising).await?;
            }
        }
        Ok(())
    }

    /// 22: scale the canary down and finish.
    async fn finalise(&mut self) -> Step {
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        self.set_phase(CanaryPhase::Succeeded).await?;
        self.ports
            .recorder
            .set_phase_metric(&self.c, CanaryPhase::Succeeded);
        self.ports
            .recorder
            .inc_successes(&self.c, self.c.strategy(), false);
        self.run_post_rollout_hooks(CanaryPhase::Succeeded).await;
        self.event(
            EventType::Normal,
            &format!("Promotion completed! Scaling down {}", self.target_id()),
        )
        .await;
        self.alert(
            "Canary analysis completed successfully, promotion finished.",
            false,
            Severity::Info,
        )
        .await;
        Ok(())
    }

    async fn count_failed_check(&mut self) -> Step {
        let n = self.status().failed_checks + 1;
        self.set_failed_checks(n).await
    }

    /// Progressive canary: one step up, or promotion at max weight.
    async fn run_canary(&mut self, routes: &Routes) -> Step {
        let a = self.c.analysis().clone();
        if routes.canary < weights::max_weight(&a) {
            let (p, c, mirrored) = weights::advance(&a, routes.primary, routes.canary, routes.mirror);
            if a.mirror.unwrap_or(false) && routes.canary == 0 {
                tracing::info!(canary = %self.id(), "Running mirror step {p}/{c}/{mirrored}");
            }
            self.set_routes(p, c, mirrored).await?;
            self.set_weight(c).await?;
            self.ports.recorder.set_weight_metric(&self.c, p, c);
            self.event(
                EventType::Normal,
                &format!("Advance {} canary weight {c}", self.id()),
            )
            .await;
            return Ok(());
        }
        if !self.run_confirm_promotion_hooks().await? {
            return Ok(());
        }
        self.promote().await
    }

    /// A/B testing: `iterations` ticks with matching requests on the canary.
    async fn run_ab(&mut self) -> Step {
        let n = self.c.analysis().iterations.unwrap_or(0);
        let i = self.status().iterations;
        if n > i {
            self.set_routes(0, weights::TOTAL, false).await?;
            self.ports.recorder.set_weight_metric(&self.c, 0, weights::TOTAL);
            self.set_iterations(i + 1).await?;
            self.event(
                EventType::Normal,
                &format!("Advance {} canary iteration {}/{n}", self.id(), i + 1),
            )
            .await;
            return Ok(());
        }
        if !self.run_confirm_promotion_hooks().await? {
            return Ok(());
        }
        if n == self.status().iterations {
            return self.promote().await;
        }
        Ok(())
    }

    /// Blue/green: `iterations` ticks on the idle canary (mirrored if asked), then all traffic
    /// to the canary for one tick, then promotion.
    async fn run_blue_green(&mut self, routes: &Routes) -> Step {
        let n = self.c.analysis().iterations.unwrap_or(0);
        let i = self.status().iterations;
        let mirror = self.c.analysis().mirror.unwrap_or(false);
        let kubernetes = self.provider == "kubernetes";
        if n > i {
            if !kubernetes && mirror && !routes.mirror {
                self.set_routes(weights::TOTAL, 0, true).await?;
                tracing::debug!(canary = %self.id(), "Start traffic mirroring");
            }
            self.set_iterations(i + 1).await?;
            self.event(
                EventType::Normal,
                &format!("Advance {} canary iteration {}/{n}", self.id(), i + 1),
            )
            .await;
            return Ok(());
        }
        if !self.run_confirm_promotion_hooks().await? {
            return Ok(());
        }
        let i = self.status().iterations;
        if n == i {
            if !kubernetes {
                let msg = if mirror {
                    "Stop traffic mirroring and route all traffic to canary"
                } else {
                    "Routing all traffic to canary"
                };
                self.event(EventType::Normal, msg).await;
                self.set_routes(0, weights::TOTAL, false).await?;
                self.ports.recorder.set_weight_metric(&self.c, 0, weights::TOTAL);
            }
            return self.set_iterations(i + 1).await;
        }
        if n < i {
            return self.promote().await;
        }
        Ok(())
    }

    /// Copies the canary to the primary and enters Promoting.
    async fn promote(&mut self) -> Step {
        self.event(
            EventType::Normal,
            &format!(
                "Copying {} template spec to {}-primary.{}",
                self.target_id(),
                self.c.target_name(),
                self.c.namespace()
            ),
        )
        .await;
        if let Err(e) = self.ports.target.promote(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        self.set_phase(CanaryPhase::Promoting).await
    }

    /// Routes everything back to the primary, scales the canary down and marks it Failed.
    async fn rollback(&mut self) -> Step {
        let failed = self.status().failed_checks;
        if failed >= self.c.threshold() {
            self.event(
                EventType::Warning,
                &format!(
                    "Rolling back {} failed checks threshold reached {failed}",
                    self.id()
                ),
            )
            .await;
            self.alert(
                &format!("Failed checks threshold reached {failed}"),
                false,
                Severity::Error,
            )
            .await;
        }
        self.set_routes(weights::TOTAL, 0, false).await?;
        self.ports.recorder.set_weight_metric(&self.c, weights::TOTAL, 0);
        self.event(
            EventType::Warning,
            &format!("Canary failed! Scaling down {}", self.id()),
        )
        .await;
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        let revision = match self.ports.target.revision(&self.c).await {
            Ok(r) => r,
            Err(_) => TargetRevision {
                fingerprint: self.status().last_applied_spec.clone(),
                tracked_configs: self.status().tracked_configs.clone(),
                route: None,
            },
        };
        // aviary: failedChecks keeps its count on Failed (Flagger 1.44 resets it to 0) so the
        // status says why the canary failed.
        self.sync_status(CanaryPhase::Failed, 0, failed, 0, &revision)
            .await?;
        self.ports.recorder.set_phase_metric(&self.c, CanaryPhase::Failed);
        self.ports.recorder.inc_failures(&self.c, self.c.strategy());
        self.run_post_rollout_hooks(CanaryPhase::Failed).await;
        Ok(())
    }

    /// The new primary will not become ready: keep serving from the canary and fail.
    async fn handle_failed_promotion(&mut self, msg: &str) -> Step {
        self.event(
            EventType::Warning,
            &format!("Promotion of {} failed, primary not ready: {msg}", self.id()),
        )
        .await;
        self.alert(
            &format!("Promotion failed, primary not ready: {msg}"),
            false,
            Severity::Error,
        )
        .await;
        self.set_routes(0, weights::TOTAL, false).await?;
        self.ports.recorder.set_weight_metric(&self.c, 0, weights::TOTAL);
        let revision = TargetRevision {
            fingerprint: self.status().last_applied_spec.clone(),
            tracked_configs: self.status().tracked_configs.clone(),
            route: None,
        };
        let failed = self.status().failed_checks;
        self.sync_status(CanaryPhase::Failed, weights::TOTAL, failed, 0, &revision)
            .await?;
        self.ports.recorder.set_phase_metric(&self.c, CanaryPhase::Failed);
        self.ports.recorder.inc_failures(&self.c, self.c.strategy());
        self.run_post_rollout_hooks(CanaryPhase::Failed).await;
        Ok(())
    }

    /// Sets the split, with the session-affinity cookies the status carries.
    async fn set_routes(&mut self, primary: i32, canary: i32, mirror: bool) -> Step {
        let session = self.session_cookies(canary).await?;
        let routes = Routes {
            primary,
            canary,
            mirror,
            session,
        };
        if let Err(e) = self.ports.router.set_routes(&self.c, &routes).await {
            self.event(EventType::Warning, &e).await;
            return Err(Abort);
        }
        Ok(())
    }
}
