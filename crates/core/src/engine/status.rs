//! Status transitions, as Flagger's `SyncStatus`, `SetStatusPhase`, `SetStatusWeight`,
//! `SetStatusFailedChecks` and `SetStatusIterations` write them, plus the `Promoted` condition
//! and the session-affinity cookies. Every write persists through the Recorder before the tick
//! goes on; a failed write ends the tick with a warning.

use aviary_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use aviary_api::status::{PROMOTED_CONDITION, promoted_condition_for};
use aviary_api::{CanaryCondition, CanaryPhase, CanaryStatus};

use super::{Step, Stop, Tick};
use crate::ports::{EventType, SessionCookies, TargetRevision};

impl Tick<'_, '_> {
    fn status_mut(&mut self) -> &mut CanaryStatus {
        self.c.status.get_or_insert_with(Default::default)
    }

    async fn persist(&mut self) -> Step {
        let status = self.status().clone();
        if let Err(e) = self.ports.recorder.status(&self.c, &status).await {
            self.event(EventType::Warning, &format!("status update failed: {e}"))
                .await;
            return Err(Stop);
        }
        Ok(())
    }

    /// `SyncStatus`: phase and counters, the revision's fingerprint and tracked configs, the
    /// transition time and the condition.
    pub(super) async fn sync_status(
        &mut self,
        phase: CanaryPhase,
        weight: i32,
        failed_checks: i32,
        iterations: i32,
        revision: &TargetRevision,
    ) -> Step {
        let now = self.now;
        let kind = self.c.target_kind().to_string();
        let s = self.status_mut();
        s.phase = phase;
        s.canary_weight = weight;
        s.failed_checks = failed_checks;
        s.iterations = iterations;
        s.last_applied_spec = revision.fingerprint.clone();
        if phase == CanaryPhase::Initialized {
            s.last_promoted_spec = revision.fingerprint.clone();
        }
        s.tracked_configs = revision.tracked_configs.clone();
        s.last_transition_time = Some(Time(now));
        update_condition(s, phase, &kind, now);
        self.persist().await
    }

    /// `SetStatusPhase`: weight and iterations reset except while Progressing, Waiting or
    /// Promoting; WaitingPromotion keeps `iterations - 1`; Succeeded records the promoted spec.
    pub(super) async fn set_phase(&mut self, phase: CanaryPhase) -> Step {
        let now = self.now;
        let kind = self.c.target_kind().to_string();
        let iterations = self.c.analysis().iterations.unwrap_or(0);
        let s = self.status_mut();
        s.phase = phase;
        s.last_transition_time = Some(Time(now));
        if !matches!(
            phase,
            CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::Promoting
        ) {
            s.canary_weight = 0;
            s.iterations = 0;
            if phase == CanaryPhase::WaitingPromotion {
                // aviary: clamped at 0 (Flagger writes -1 for progressive canaries)
                s.iterations = (iterations - 1).max(0);
            }
        }
        if matches!(phase, CanaryPhase::Initialized | CanaryPhase::Succeeded) {
            s.last_promoted_spec = s.last_applied_spec.clone();
        }
        update_condition(s, phase, &kind, now);
        self.persist().await
    }

    pub(super) async fn set_weight(&mut self, weight: i32) -> Step {
        self.set_counter(|s| s.canary_weight = weight).await
    }

    pub(super) async fn set_failed_checks(&mut self, n: i32) -> Step {
        self.set_counter(|s| s.failed_checks = n).await
    }

    pub(super) async fn set_iterations(&mut self, n: i32) -> Step {
        self.set_counter(|s| s.iterations = n).await
    }

    /// Applies `set` to the status, moves its transition time to now and persists it.
    async fn set_counter(&mut self, set: impl FnOnce(&mut CanaryStatus)) -> Step {
        let now = self.now;
        let s = self.status_mut();
        set(s);
        s.last_transition_time = Some(Time(now));
        self.persist().await
    }

    /// The cookies for a split with `canary_weight` on the canary, as Flagger's routers keep
    /// them in the status: minted when a split first gives the canary traffic (the primary's
    /// only with `primaryCookieName`), the canary's retired (kept as `previous`, for the router
    /// to expire) when the canary's weight is 0 again; the primary's stays. Like Flagger, the
    /// change is not written here: the status write that follows the split in the tick carries it.
    pub(super) fn session_cookies(&mut self, canary_weight: i32) -> Option<SessionCookies> {
        let sa = self.c.analysis().session_affinity.clone()?;
        let token = self.token;
        let (canary_token, primary_token) = token.split_at(token.len() / 2);
        let cookie_name = sa.cookie_name.clone().unwrap_or_default();
        let s = self.status_mut();
        if canary_weight != 0 {
            if s.session_affinity_cookie.is_empty() {
                s.session_affinity_cookie = format!("{cookie_name}={canary_token}");
            }
            if let Some(primary) = sa.primary_cookie_name.as_deref().filter(|p| !p.is_empty())
                && s.primary_session_affinity_cookie.is_empty()
            {
                s.primary_session_affinity_cookie = format!("{primary}={primary_token}");
            }
        } else if !s.session_affinity_cookie.is_empty() {
            s.previous_session_affinity_cookie = std::mem::take(&mut s.session_affinity_cookie);
        }
        let some = |v: &String| Some(v.clone()).filter(|c| !c.is_empty());
        Some(SessionCookies {
            canary: some(&s.session_affinity_cookie),
            primary: some(&s.primary_session_affinity_cookie),
            previous: some(&s.previous_session_affinity_cookie),
        })
    }
}

/// Rewrites the `Promoted` condition when its status or reason changes; the transition time
/// moves only when the status does.
impl Tick<'_, '_> {
    /// Why the coordinator gate holds the canary ("waiting for wave eu of rollout r1"), as the
    /// Promoted condition's message and, when it changes, an event: `kubectl describe canary`
    /// explains the hold. (aviary only: Flagger has no coordinator gate.)
    pub(super) async fn explain_hold(&mut self, gate: &str, reason: &str) -> Step {
        let message = format!("Waiting for approval from {gate}: {reason}");
        let now = self.now;
        let s = self.status_mut();
        let Some(c) = s.conditions.iter_mut().find(|c| c.type_ == PROMOTED_CONDITION) else {
            return Ok(());
        };
        if c.message == message {
            return Ok(());
        }
        c.message = message.clone();
        c.last_update_time = Some(Time(now));
        self.persist().await?;
        self.event(crate::ports::EventType::Normal, &message).await;
        Ok(())
    }
}

fn update_condition(s: &mut CanaryStatus, phase: CanaryPhase, kind: &str, now: jiff::Timestamp) {
    let Some((status, message)) = promoted_condition_for(phase, kind) else {
        return;
    };
    let existing = s.conditions.iter().position(|c| c.type_ == PROMOTED_CONDITION);
    if let Some(i) = existing {
        let c = &s.conditions[i];
        if c.status == status && c.reason == phase.as_str() {
            return;
        }
    }
    let transition = match existing {
        Some(i) if s.conditions[i].status == status => s.conditions[i].last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    let cond = CanaryCondition {
        type_: PROMOTED_CONDITION.into(),
        status: status.into(),
        last_update_time: Some(Time(now)),
        last_transition_time: transition,
        reason: phase.as_str().into(),
        message,
    };
    match existing {
        Some(i) => s.conditions[i] = cond,
        None => s.conditions.push(cond),
    }
}
