//! New revisions: whether an idle canary has work (Flagger's `shouldAdvance`), starting an
//! analysis behind the confirm-rollout gates (`checkCanaryStatus`), and restarting one when the
//! revision changes mid-analysis (`hasCanaryRevisionChanged`).

use aviary_api::CanaryPhase;

use super::{Step, Stop, Tick};
use crate::ports::{EventType, Severity, TargetRevision};
use crate::weights;

impl Tick<'_, '_> {
    /// An idle canary (Initialized, Succeeded, Failed) goes on only for a new revision; an
    /// analysis in flight always goes on.
    pub(super) async fn stop_unless_there_is_work(&mut self) -> Step {
        let phase = self.read_phase;
        if phase.is_active() {
            return Ok(());
        }
        let revision = self.revision().await?;
        if !self.revision_changed(&revision) {
            self.ports.recorder.set_phase_metric(&self.c, phase);
            return Err(Stop);
        }
        // aviary: unlike Flagger, a Failed canary does not store the new fingerprint here; it
        // is stored only when the analysis starts, so an early return cannot skip a revision.
        Ok(())
    }

    /// Outside an analysis (Initialized, Succeeded, Failed, Waiting), a new revision asks the
    /// confirm-rollout gates and, once approved, scales the canary up and enters Progressing.
    /// Either way the tick ends here: the analysis proper starts on the next tick.
    pub(super) async fn start_analysis_of_new_revision(&mut self) -> Step {
        let phase = self.read_phase;
        self.ports.recorder.set_phase_metric(&self.c, phase);
        if matches!(
            phase,
            CanaryPhase::Progressing
                | CanaryPhase::WaitingPromotion
                | CanaryPhase::Promoting
                | CanaryPhase::Finalising
        ) {
            return Ok(());
        }
        // Idle phases got here only for a new revision; a Waiting canary asks its gates again
        // whatever its revision (Flagger's shouldAdvance is always true there).
        let revision = self.revision().await?;
        if !self.run_confirm_rollout_gates(&revision).await? {
            return Err(Stop);
        }
        // Flagger announces the revision (on a Progressing copy) before scaling up; a failed
        // scale-up repeats the announcement on the next tick.
        self.event_in(
            CanaryPhase::Progressing,
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
        if let Err(e) = self.ports.target.scale_from_zero(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        self.sync_status(CanaryPhase::Progressing, 0, 0, 0, &revision)
            .await?;
        self.memory.canary_unready_since = None;
        self.ports
            .recorder
            .set_phase_metric(&self.c, CanaryPhase::Progressing);
        Err(Stop)
    }

    /// A revision that changes mid-analysis restarts it from weight 0.
    pub(super) async fn restart_on_changed_revision(&mut self) -> Step {
        if !matches!(
            self.read_phase,
            CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
        ) {
            return Ok(());
        }
        let revision = self.revision().await?;
        if !self.revision_changed(&revision) {
            return Ok(());
        }
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
        Err(Stop)
    }

    /// Flagger's `HasTargetChanged || HaveDependenciesChanged`.
    pub(super) fn revision_changed(&self, revision: &TargetRevision) -> bool {
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
}
