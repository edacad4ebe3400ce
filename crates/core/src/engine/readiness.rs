//! Readiness of the primary and the canary: a retriable "not ready" waits (a warning, the tick
//! ends); a fatal one, or one that outlasts `progressDeadlineSeconds`, fails the canary.

use aviary_api::CanaryPhase;
use jiff::Timestamp;

use super::{Step, Stop, Tick};
use crate::ports::{EventType, NotReady, Severity};

impl Tick<'_, '_> {
    /// A readiness failure while initializing: wait, or fail on a fatal one.
    pub(super) async fn not_ready_while_initializing(&mut self, e: NotReady) -> Step {
        self.event(EventType::Warning, &e.message).await;
        if e.retriable {
            return Err(Stop);
        }
        self.rollback().await
    }

    /// The primary must be ready before anything moves (not checked when skipping analysis).
    pub(super) async fn require_primary_ready(&mut self) -> Step {
        if self.c.skip_analysis() {
            return Ok(());
        }
        match self.ready(false).await {
            Ok(()) => Ok(()),
            Err(e) => self.primary_not_ready(e).await,
        }
    }

    /// During promotion the canary is the only healthy copy, so a primary that will not become
    /// ready fails the promotion (traffic stays on the canary) instead of rolling back.
    async fn primary_not_ready(&mut self, e: NotReady) -> Step {
        let promoting = matches!(self.phase(), CanaryPhase::Promoting | CanaryPhase::Finalising);
        let fatal = !e.retriable || (promoting && self.deadline_passed(false));
        // Flagger reports the readiness error first, whatever comes next (scheduler.go:298).
        self.event(EventType::Warning, &e.message).await;
        if !fatal {
            return Err(Stop);
        }
        if promoting {
            return self.handle_failed_promotion(&e.message).await;
        }
        self.rollback().await
    }

    /// The canary must be ready before it is analysed.
    pub(super) async fn require_canary_ready(&mut self) -> Step {
        match self.ready(true).await {
            Ok(()) => Ok(()),
            Err(e) => self.canary_not_ready(e).await,
        }
    }

    /// Asks the target whether the canary (else the primary) is ready; once it is, its progress
    /// deadline counts from scratch.
    async fn ready(&mut self, canary: bool) -> Result<(), NotReady> {
        let ready = if canary {
            self.ports.target.canary_ready(&self.c).await
        } else {
            self.ports.target.primary_ready(&self.c).await
        };
        if ready.is_ok() {
            *self.unready_since(canary) = None;
        }
        ready
    }

    /// When the canary (else the primary) was first seen not ready.
    fn unready_since(&mut self, canary: bool) -> &mut Option<Timestamp> {
        if canary {
            &mut self.memory.canary_unready_since
        } else {
            &mut self.memory.primary_unready_since
        }
    }

    /// A fatal "not ready" (Kubernetes reported ProgressDeadlineExceeded) is reported as is and
    /// rolls back, as in Flagger (scheduler.go:354-360).
    async fn canary_not_ready(&mut self, e: NotReady) -> Step {
        if !e.retriable {
            self.event(EventType::Warning, &e.message).await;
            return self.rollback().await;
        }
        // aviary: the progress deadline is enforced even when the platform never reports it
        // (Flagger #1247: crash-looping pods never produce ProgressDeadlineExceeded, and Flagger
        // waits forever). The text is Flagger's format string at scheduler.go:433, which
        // Flagger itself never reaches.
        let analysing = matches!(
            self.phase(),
            CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
        );
        if !(analysing && self.deadline_passed(true)) {
            return self.warn_and_stop(&e.message).await;
        }
        let msg = &e.message;
        self.warn_and_alert(
            &format!("Rolling back {} progress deadline exceeded {msg}", self.id()),
            &format!("Progress deadline exceeded {msg}"),
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
        let since = *self.unready_since(canary).get_or_insert(start);
        let waited = self.now.duration_since(since);
        let deadline = self.c.progress_deadline();
        waited.is_positive() && waited.unsigned_abs() > deadline
    }
}
