//! The analysis proper and the next step of the deployment strategy: progressive canary (with
//! optional mirroring), A/B testing or blue/green.

use aviary_api::{CanaryPhase, Strategy};

use super::{Step, Stop, Tick};
use crate::judge::Decision;
use crate::ports::{EventType, Routes};
use crate::weights;

impl Tick<'_, '_> {
    /// The first analysis tick (no traffic yet) runs the pre-rollout hooks; later ticks run
    /// the rollout hooks and the metric checks. A failure counts a failed check and ends the
    /// tick.
    pub(super) async fn analyse(&mut self, routes: &Routes) -> Step {
        self.analysed = true;
        let mirror = self.c.analysis().mirror.unwrap_or(false);
        let first = routes.canary == 0 && self.status().iterations == 0 && !(mirror && routes.mirror);
        let passed = if first {
            self.event(
                EventType::Normal,
                &format!("Starting canary analysis for {}", self.target_id()),
            )
            .await;
            self.start_judge().await;
            self.run_pre_rollout_hooks().await
        } else {
            self.run_analysis().await
        };
        // aviary: the statistical judge, only for canaries that ask for it.
        let judged = if first {
            Decision::Continue
        } else {
            self.judge_interval().await
        };
        if judged == Decision::Rollback {
            return self.roll_back_by_judge().await;
        }
        if passed {
            self.judge_promotes = judged == Decision::Promote;
            return Ok(());
        }
        let n = self.status().failed_checks + 1;
        self.set_failed_checks(n).await?;
        Err(Stop)
    }

    /// The `kubernetes` provider cannot split traffic: A/B matches are dropped and a
    /// progressive canary runs as blue/green with 10 iterations (for this tick, as in Flagger).
    pub(super) async fn adapt_to_kubernetes_provider(&mut self) {
        if self.provider != "kubernetes" {
            return;
        }
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

    /// One step of the canary's strategy.
    pub(super) async fn advance(&mut self, routes: &Routes) -> Step {
        match self.c.strategy() {
            Strategy::AbTesting => self.run_ab().await,
            Strategy::BlueGreen => self.run_blue_green(routes).await,
            Strategy::Canary => {
                if weights::next_step(self.c.analysis(), routes.canary) == 0 {
                    return Ok(());
                }
                if !routes.mirror
                    && !self.judge_promotes
                    && self.read_phase == CanaryPhase::Progressing
                    && !self.run_confirm_traffic_increase_hooks().await
                {
                    return Ok(());
                }
                self.run_canary(routes).await
            }
        }
    }

    /// Progressive canary: one step up, or promotion at max weight.
    async fn run_canary(&mut self, routes: &Routes) -> Step {
        let a = self.c.analysis().clone();
        if routes.canary < weights::max_weight(&a) && !self.judge_promotes {
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

    /// Counts iteration `next` of `n` and says so.
    async fn advance_iteration(&mut self, next: i32, n: i32) -> Step {
        self.set_iterations(next).await?;
        self.event(
            EventType::Normal,
            &format!("Advance {} canary iteration {next}/{n}", self.id()),
        )
        .await;
        Ok(())
    }

    /// A/B testing: `iterations` ticks with matching requests on the canary.
    async fn run_ab(&mut self) -> Step {
        let n = self.c.analysis().iterations.unwrap_or(0);
        let i = self.status().iterations;
        if n > i {
            self.shift_traffic(0, weights::TOTAL).await?;
            return self.advance_iteration(i + 1, n).await;
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
                // A failure to start mirroring is reported; the iteration still counts
                // (scheduler.go:689-696).
                let _ = self.set_routes(weights::TOTAL, 0, true).await;
                tracing::info!(canary = %self.id(), "Start traffic mirroring");
            }
            return self.advance_iteration(i + 1, n).await;
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
                self.shift_traffic(0, weights::TOTAL).await?;
            }
            return self.set_iterations(i + 1).await;
        }
        if n < i {
            return self.promote().await;
        }
        Ok(())
    }
}
