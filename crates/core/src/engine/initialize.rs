//! The first steps of every tick: suspend, a never-seen canary, the metric providers, the
//! primary, the routes and, for a new canary, the end of its initialization.

use aviary_api::CanaryPhase;

use super::{Step, Stop, Tick};
use crate::fingerprint::checksum;
use crate::ports::{EventType, Severity};

impl Tick<'_, '_> {
    /// Initializing: a canary Flagger has never seen, or one still waiting for its primary.
    fn initializing(&self) -> bool {
        matches!(self.read_phase, CanaryPhase::Empty | CanaryPhase::Initializing)
    }

    /// A suspended canary pauses where it is, even mid-analysis.
    pub(super) async fn skip_if_suspended(&mut self) -> Step {
        if self.c.suspended() {
            self.event(EventType::Normal, "skipping canary run as object is suspended")
                .await;
            return Err(Stop);
        }
        Ok(())
    }

    /// The fleet coordinator may ask to promote a known-good revision (a revert) without
    /// analysis; the tick then behaves as if `skipAnalysis` were set.
    pub(super) async fn honour_coordinator_skip(&mut self) {
        if !self.c.skip_analysis() && self.ports.gate.skip_analysis(&self.c).await {
            self.c.spec.skip_analysis = Some(true);
        }
    }

    /// Flagger's sync handler marks a canary it has never seen as Initializing before the
    /// scheduler runs it.
    pub(super) async fn mark_new_canary_initializing(&mut self) -> Step {
        if self.read_phase == CanaryPhase::Empty {
            self.set_phase(CanaryPhase::Initializing).await?;
            self.read_phase = CanaryPhase::Initializing;
        }
        Ok(())
    }

    /// While initializing, tell whether the metric providers answer. Never stops the tick.
    pub(super) async fn check_metric_providers(&mut self) {
        if self.c.skip_analysis() || !self.initializing() {
            return;
        }
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

    /// Creates the primary if it is missing; while initializing, waits until it is ready.
    pub(super) async fn initialize_primary(&mut self) -> Step {
        if let Err(e) = self.ports.target.initialize(&self.c).await {
            return self.not_ready_while_initializing(e).await;
        }
        if self.initializing()
            && !self.c.skip_analysis()
            && let Err(e) = self.ports.target.primary_ready(&self.c).await
        {
            return self.not_ready_while_initializing(e).await;
        }
        Ok(())
    }

    /// Services and mesh routes (the apex points at the primary).
    pub(super) async fn reconcile_routes(&mut self) -> Step {
        if let Err(e) = self.ports.router.reconcile(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        Ok(())
    }

    /// A new canary: scale the target down and record the revision the primary runs.
    pub(super) async fn finish_initialization(&mut self) -> Step {
        if !self.initializing() {
            return Ok(());
        }
        tracing::info!(canary = %self.id(), "Scaling down {} {}", self.c.target_kind(), self.target_id());
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            let msg = format!(
                "scaling down canary {} {} failed: {e}",
                self.c.target_kind(),
                self.target_id()
            );
            return self.warn_and_stop(&msg).await;
        }
        let revision = self.revision().await?;
        self.sync_status(CanaryPhase::Initialized, 0, 0, 0, &revision)
            .await?;
        // Flagger's setPhaseInitialized moves the canary it works on to Initialized.
        self.read_phase = CanaryPhase::Initialized;
        self.read_checksum = checksum(revision.tracked_configs.as_ref(), &revision.fingerprint);
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
        Err(Stop)
    }
}
