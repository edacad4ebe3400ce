//! The ends of an analysis: promotion without analysis, rollback requests, the promotion
//! (copy, traffic back to the primary, finalising), the failed-checks threshold, rollback and
//! a failed promotion. Every step here that acts ends the tick.

use aviary_api::CanaryPhase;

use super::{Step, Stop, Tick};
use crate::ports::{EventType, Routes, Severity, TargetRevision};
use crate::weights;

impl Tick<'_, '_> {
    /// `skipAnalysis`: promote at once, without waiting for the new primary.
    pub(super) async fn promote_without_analysis(&mut self) -> Step {
        if !self.c.skip_analysis() {
            return Ok(());
        }
        self.shift_traffic(weights::TOTAL, 0).await?;
        self.event(EventType::Normal, &self.copying_message()).await;
        if let Err(e) = self.ports.target.promote(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        let done = format!(
            "Promotion completed! Canary analysis was skipped for {}",
            self.target_id()
        );
        self.succeed(true, &done, "Canary analysis was skipped, promotion finished.")
            .await
    }

    /// During an analysis the fleet coordinator, then the rollback webhooks, may ask for an
    /// immediate rollback.
    pub(super) async fn honour_rollback_requests(&mut self) -> Step {
        let phase = self.read_phase;
        if !matches!(
            phase,
            CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion
        ) {
            return Ok(());
        }
        if let Some(reason) = self.ports.gate.rollback_requested(&self.c).await {
            let by = self.ports.gate.name().unwrap_or("the coordinator").to_string();
            self.warn_and_alert(
                &format!("Rolling back {} requested by {by}: {reason}", self.id()),
                &format!("Rolling back, requested by {by}: {reason}"),
                Severity::Warn,
            )
            .await;
            return self.rollback().await;
        }
        if self.run_rollback_hooks(phase).await {
            self.warn_and_alert(
                &format!("Rolling back {} manual webhook invoked", self.id()),
                "Rolling back manual webhook invoked",
                Severity::Warn,
            )
            .await;
            return self.rollback().await;
        }
        Ok(())
    }

    /// Promoting: traffic goes back to the (new) primary, at once or `stepWeightPromotion`
    /// per tick, then Finalising.
    pub(super) async fn shift_traffic_back_to_primary(&mut self, routes: &Routes) -> Step {
        if self.read_phase != CanaryPhase::Promoting {
            return Ok(());
        }
        if self.provider == "kubernetes" {
            self.set_phase(CanaryPhase::Finalising).await?;
            return Err(Stop);
        }
        let a = self.c.analysis().clone();
        if a.step_weight_promotion.unwrap_or(0) == 0 {
            self.event(EventType::Normal, "Routing all traffic to primary")
                .await;
            self.shift_traffic(weights::TOTAL, 0).await?;
            self.set_phase(CanaryPhase::Finalising).await?;
            return Err(Stop);
        }
        if routes.canary > 0 {
            let (p, c) = weights::promotion_step(&a, routes.primary, routes.canary);
            self.shift_traffic(p, c).await?;
            self.event(
                EventType::Normal,
                &format!("Advance {} primary weight {p}", self.id()),
            )
            .await;
            if p == weights::TOTAL {
                self.set_phase(CanaryPhase::Finalising).await?;
            } else {
                self.set_weight(c).await?;
            }
        }
        Err(Stop)
    }

    /// Finalising: scale the canary down and finish (Succeeded).
    pub(super) async fn finalise_promotion(&mut self) -> Step {
        if self.read_phase != CanaryPhase::Finalising {
            return Ok(());
        }
        let done = format!("Promotion completed! Scaling down {}", self.target_id());
        self.succeed(
            false,
            &done,
            "Canary analysis completed successfully, promotion finished.",
        )
        .await
    }

    /// Scales the canary down and ends in Succeeded: status, metrics, post-rollout hooks, the
    /// event and the alert. `skipped` is the success counter's label.
    async fn succeed(&mut self, skipped: bool, event: &str, alert: &str) -> Step {
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        self.set_phase(CanaryPhase::Succeeded).await?;
        self.ports
            .recorder
            .set_phase_metric(&self.c, CanaryPhase::Succeeded);
        self.ports
            .recorder
            .inc_successes(&self.c, self.c.strategy(), skipped);
        self.run_post_rollout_hooks(CanaryPhase::Succeeded, CanaryPhase::Succeeded)
            .await;
        self.event_in(CanaryPhase::Succeeded, EventType::Normal, event)
            .await;
        self.alert(alert, false, Severity::Info).await;
        Err(Stop)
    }

    /// Enough failed checks: roll back (on the tick after the one that reached the threshold).
    pub(super) async fn roll_back_at_threshold(&mut self) -> Step {
        if matches!(
            self.read_phase,
            CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
        ) && self.status().failed_checks >= self.c.threshold()
        {
            return self.rollback().await;
        }
        Ok(())
    }

    /// "Copying <target>.<ns> template spec to <target>-primary.<ns>".
    fn copying_message(&self) -> String {
        format!(
            "Copying {} template spec to {}-primary.{}",
            self.target_id(),
            self.c.target_name(),
            self.c.namespace()
        )
    }

    /// Copies the canary to the primary and enters Promoting.
    pub(super) async fn promote(&mut self) -> Step {
        self.event(EventType::Normal, &self.copying_message()).await;
        if let Err(e) = self.ports.target.promote(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        self.set_phase(CanaryPhase::Promoting).await
    }

    /// Routes everything back to the primary, scales the canary down and marks it Failed.
    /// Ends the tick.
    pub(super) async fn rollback(&mut self) -> Step {
        let failed = self.status().failed_checks;
        if failed >= self.c.threshold() {
            self.warn_and_alert(
                &format!(
                    "Rolling back {} failed checks threshold reached {failed}",
                    self.id()
                ),
                &format!("Failed checks threshold reached {failed}"),
                Severity::Error,
            )
            .await;
        }
        self.shift_traffic(weights::TOTAL, 0).await?;
        self.event_in(
            CanaryPhase::Failed,
            EventType::Warning,
            &format!("Canary failed! Scaling down {}", self.id()),
        )
        .await;
        if let Err(e) = self.ports.target.scale_to_zero(&self.c).await {
            return self.warn_and_stop(&e).await;
        }
        let revision = match self.ports.target.revision(&self.c).await {
            Ok(r) => r,
            Err(_) => self.stored_revision(),
        };
        // aviary: failedChecks keeps its count on Failed (Flagger 1.44 resets it to 0) so the
        // status says why the canary failed.
        self.mark_failed(0, failed, &revision).await
    }

    /// The new primary will not become ready: keep serving from the canary and fail.
    /// Ends the tick.
    pub(super) async fn handle_failed_promotion(&mut self, msg: &str) -> Step {
        self.warn_and_alert(
            &format!(
                "Promotion of {} failed, primary not ready: {msg}",
                self.target_id()
            ),
            &format!("Promotion failed, primary not ready: {msg}"),
            Severity::Error,
        )
        .await;
        self.shift_traffic(0, weights::TOTAL).await?;
        let revision = self.stored_revision();
        let failed = self.status().failed_checks;
        self.mark_failed(weights::TOTAL, failed, &revision).await
    }

    /// Writes the Failed status with `canary_weight` on the canary, counts the failure and runs
    /// the post-rollout webhooks. Ends the tick.
    async fn mark_failed(&mut self, canary_weight: i32, failed: i32, revision: &TargetRevision) -> Step {
        self.sync_status(CanaryPhase::Failed, canary_weight, failed, 0, revision)
            .await?;
        self.ports.recorder.set_phase_metric(&self.c, CanaryPhase::Failed);
        self.ports.recorder.inc_failures(&self.c, self.c.strategy());
        self.run_post_rollout_hooks(CanaryPhase::Failed, self.read_phase)
            .await;
        Err(Stop)
    }

    /// The revision the status already records (when the target cannot be read).
    fn stored_revision(&self) -> TargetRevision {
        TargetRevision {
            fingerprint: self.status().last_applied_spec.clone(),
            tracked_configs: self.status().tracked_configs.clone(),
            route: None,
        }
    }
}
