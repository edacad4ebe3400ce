//! Webhooks, the coordinator gate, events and alerts, with Flagger's gating and counting rules
//! and event texts.

use std::collections::BTreeMap;

use aviary_api::canary::{CanaryWebhook, HookType};
use aviary_api::{CanaryPhase, Strategy};

use super::{Step, Tick};
use crate::ports::{Alert, EventType, GateDecision, HookPayload, Severity, TargetRevision};
use crate::weights;

impl Tick<'_, '_> {
    /// Records an event (reason `Synced`), logs it, and posts it to the `event` webhooks (or the
    /// global event webhook) with the phase the tick read.
    pub(super) async fn event(&mut self, kind: EventType, message: &str) {
        self.event_in(self.read_phase, kind, message).await
    }

    /// An event Flagger emits on a copy of the canary already in `phase` (its webhook payload
    /// carries that phase).
    pub(super) async fn event_in(&mut self, phase: CanaryPhase, kind: EventType, message: &str) {
        match kind {
            EventType::Normal => tracing::info!(canary = %self.id(), "{message}"),
            EventType::Warning => tracing::warn!(canary = %self.id(), "{message}"),
        }
        self.ports.recorder.event(&self.c, kind, message).await;

        let mut hooks: Vec<CanaryWebhook> = self.hooks_of(HookType::Event);
        if hooks.is_empty()
            && let Some(url) = &self.config.event_webhook
        {
            hooks.push(CanaryWebhook {
                name: Some("event-webhook".into()),
                type_: Some("event".into()),
                url: Some(url.clone()),
                timeout: Some(aviary_api::defaults::DEFAULT_WEBHOOK_TIMEOUT.into()),
                ..Default::default()
            });
        }
        for hook in hooks {
            let mut metadata: BTreeMap<String, String> = BTreeMap::new();
            metadata.insert("eventMessage".into(), message.into());
            metadata.insert("eventType".into(), kind.as_str().into());
            metadata.insert("timestamp".into(), self.now.as_millisecond().to_string());
            for (k, v) in hook.metadata.iter().flatten() {
                metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let payload = self.payload(phase, metadata);
            if let Err(e) = self.ports.hooks.call(&hook, &payload).await {
                tracing::warn!(canary = %self.id(), hook = hook.name.as_deref().unwrap_or(""), "event webhook failed: {e}");
            }
        }
    }

    /// Sends an alert to the canary's AlertProviders (filtered by severity) or to the global
    /// notifier. A failing alert is logged and never stops the analysis.
    pub(super) async fn alert(&mut self, message: &str, with_metadata: bool, severity: Severity) {
        let mut fields = Vec::new();
        if let Some(cluster) = &self.config.cluster {
            fields.push(("Cluster".to_string(), cluster.clone()));
        }
        if with_metadata {
            fields.extend(self.alert_metadata());
        }
        let alert = Alert {
            message: message.into(),
            severity,
            fields,
        };
        let routes = self.c.analysis().alerts.clone().unwrap_or_default();
        if routes.is_empty() {
            if let Err(e) = self.ports.notifier.notify(&self.c, None, &alert).await {
                tracing::warn!(canary = %self.id(), "alert failed: {e}");
            }
            return;
        }
        for route in routes {
            let wanted = Severity::parse(route.severity.as_deref().unwrap_or("")).unwrap_or(Severity::Info);
            let send = wanted == Severity::Info
                || wanted == severity
                || (severity == Severity::Error && wanted == Severity::Warn);
            if !send {
                continue;
            }
            if let Err(e) = self
                .ports
                .notifier
                .notify(&self.c, route.provider_ref.as_ref(), &alert)
                .await
            {
                tracing::warn!(canary = %self.id(), alert = route.name.as_deref().unwrap_or(""), "alert failed: {e}");
            }
        }
    }

    /// A warning event, then an alert without the canary's metadata: how a rollback or a
    /// failed promotion is announced.
    pub(super) async fn warn_and_alert(&mut self, event: &str, alert: &str, severity: Severity) {
        self.event(EventType::Warning, event).await;
        self.alert(alert, false, severity).await;
    }

    fn alert_metadata(&self) -> Vec<(String, String)> {
        let a = self.c.analysis();
        let mut f = vec![
            (
                "Target".to_string(),
                format!("{}/{}", self.c.target_kind(), self.target_id()),
            ),
            (
                "Failed checks threshold".to_string(),
                self.c.threshold().to_string(),
            ),
            (
                "Progress deadline".to_string(),
                format!("{}s", self.c.progress_deadline().as_secs()),
            ),
        ];
        // aviary: `max` is the effective maximum weight; Flagger prints the raw field (0 when
        // unset, and whatever it says next to stepWeights, which ignore it).
        let max = weights::max_weight(a);
        let routing = match self.c.strategy() {
            Strategy::AbTesting => Some("A/B Testing".to_string()),
            Strategy::BlueGreen => Some("Blue/Green".to_string()),
            Strategy::Canary if a.step_weight.unwrap_or(0) > 0 => {
                Some(format!("Weight step: {} max: {max}", a.step_weight.unwrap_or(0)))
            }
            Strategy::Canary => a.step_weights.as_ref().filter(|s| !s.is_empty()).map(|steps| {
                let joined: Vec<String> = steps.iter().map(i32::to_string).collect();
                format!("Weight steps: {} max: {max}", joined.join(","))
            }),
        };
        if let Some(r) = routing {
            f.push(("Traffic routing".into(), r));
        }
        f
    }

    pub(super) fn hooks_of(&self, kind: HookType) -> Vec<CanaryWebhook> {
        self.c
            .analysis()
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.hook_type() == kind)
            .cloned()
            .collect()
    }

    fn payload(&self, phase: CanaryPhase, metadata: BTreeMap<String, String>) -> HookPayload {
        HookPayload {
            name: self.c.name().into(),
            namespace: self.c.namespace().into(),
            phase,
            checksum: self.read_checksum.clone(),
            metadata,
        }
    }

    async fn call(&self, hook: &CanaryWebhook, phase: CanaryPhase) -> Result<(), String> {
        let payload = self.payload(phase, hook.metadata.clone().unwrap_or_default());
        self.ports.hooks.call(hook, &payload).await
    }

    /// Calls a gating webhook; a pass is reported as "`label` check NAME passed".
    async fn check(&mut self, hook: &CanaryWebhook, phase: CanaryPhase, label: &str) -> Result<(), String> {
        self.call(hook, phase).await?;
        let name = hook.name.as_deref().unwrap_or_default();
        self.event(EventType::Normal, &format!("{label} check {name} passed"))
            .await;
        Ok(())
    }

    /// The coordinator gate, then the confirm-rollout webhooks. A closed gate puts the canary
    /// in Waiting (once, with an alert unless muted) and returns `false`.
    pub(super) async fn run_confirm_rollout_gates(&mut self, revision: &TargetRevision) -> Step<bool> {
        if let Some(name) = self.ports.gate.name().map(str::to_string) {
            match self.ports.gate.confirm_rollout(&self.c, revision).await {
                GateDecision::Open => {
                    self.event(EventType::Normal, &format!("Confirm-rollout check {name} passed"))
                        .await;
                }
                GateDecision::Closed(reason) => {
                    tracing::info!(canary = %self.id(), "gate {name} closed: {reason}");
                    self.wait_for_approval(&name, false).await?;
                    self.explain_hold(&name, &reason).await?;
                    return Ok(false);
                }
            }
        }
        let phase = self.read_phase;
        for hook in self.hooks_of(HookType::ConfirmRollout) {
            if self.check(&hook, phase, "Confirm-rollout").await.is_err() {
                let name = hook.name.clone().unwrap_or_default();
                self.wait_for_approval(&name, hook.mute_alert.unwrap_or(false))
                    .await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn wait_for_approval(&mut self, name: &str, mute: bool) -> Step {
        if self.phase() != CanaryPhase::Waiting {
            self.set_phase(CanaryPhase::Waiting).await?;
            self.halt_for_approval(None, name, mute).await;
        }
        Ok(())
    }

    /// Says the analysis halts until `name` approves (the `stage`, if named): a warning event,
    /// and an alert unless muted.
    async fn halt_for_approval(&mut self, stage: Option<&str>, name: &str, mute: bool) {
        let stage = stage.map(|s| format!("{s} ")).unwrap_or_default();
        self.event(
            EventType::Warning,
            &format!(
                "Halt {} advancement waiting for {stage}approval {name}",
                self.id()
            ),
        )
        .await;
        if !mute {
            let alert = format!("Canary {stage}is waiting for approval.");
            self.alert(&alert, false, Severity::Warn).await;
        }
    }

    /// [`Self::halt_for_approval`] for a webhook that refused.
    async fn halt_for_hook(&mut self, stage: &str, hook: &CanaryWebhook) {
        let name = hook.name.as_deref().unwrap_or_default();
        self.halt_for_approval(Some(stage), name, hook.mute_alert.unwrap_or(false))
            .await;
    }

    pub(super) async fn run_pre_rollout_hooks(&mut self) -> bool {
        for hook in self.hooks_of(HookType::PreRollout) {
            if let Err(e) = self.check(&hook, CanaryPhase::Progressing, "Pre-rollout").await {
                let name = hook.name.clone().unwrap_or_default();
                self.event(
                    EventType::Warning,
                    &format!(
                        "Halt {} advancement pre-rollout check {name} failed {e}",
                        self.id()
                    ),
                )
                .await;
                return false;
            }
        }
        true
    }

    /// The rollout webhooks, then built-in metrics, then template metrics; the first failure
    /// fails the check.
    pub(super) async fn run_analysis(&mut self) -> bool {
        for hook in self.hooks_of(HookType::Rollout) {
            let name = hook.name.clone().unwrap_or_default();
            if let Err(e) = self.call(&hook, CanaryPhase::Progressing).await {
                self.event(
                    EventType::Warning,
                    &format!("Halt {} advancement external check {name} failed {e}", self.id()),
                )
                .await;
                return false;
            }
        }
        self.run_builtin_checks().await && self.run_template_checks().await
    }

    pub(super) async fn run_confirm_traffic_increase_hooks(&mut self) -> bool {
        for hook in self.hooks_of(HookType::ConfirmTrafficIncrease) {
            let passed = self
                .check(&hook, CanaryPhase::Progressing, "Confirm-traffic-increase")
                .await;
            if passed.is_err() {
                self.halt_for_hook("traffic increase", &hook).await;
                return false;
            }
        }
        true
    }

    /// Confirm-promotion webhooks: the first failure enters WaitingPromotion (once); later
    /// failures keep `iterations` at N-1 so the analysis keeps running.
    pub(super) async fn run_confirm_promotion_hooks(&mut self) -> Step<bool> {
        for hook in self.hooks_of(HookType::ConfirmPromotion) {
            let passed = self
                .check(&hook, CanaryPhase::Progressing, "Confirm-promotion")
                .await;
            if passed.is_ok() {
                continue;
            }
            if self.phase() != CanaryPhase::WaitingPromotion {
                self.set_phase(CanaryPhase::WaitingPromotion).await?;
                self.halt_for_hook("promotion", &hook).await;
            } else {
                // Rewritten on every refusal, as Flagger does (the transition time moves);
                // aviary: clamped at 0.
                let n = (self.c.analysis().iterations.unwrap_or(0) - 1).max(0);
                self.set_iterations(n).await?;
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Post-rollout webhooks with `phase` in the payload; their events carry `event_phase`
    /// (Flagger runs them on a Succeeded copy after a promotion, on the canary as read after a
    /// rollback). A failure is reported and stops the remaining ones.
    pub(super) async fn run_post_rollout_hooks(&mut self, phase: CanaryPhase, event_phase: CanaryPhase) {
        for hook in self.hooks_of(HookType::PostRollout) {
            let name = hook.name.clone().unwrap_or_default();
            match self.call(&hook, phase).await {
                Ok(()) => {
                    self.event_in(
                        event_phase,
                        EventType::Normal,
                        &format!("Post-rollout check {name} passed"),
                    )
                    .await
                }
                Err(e) => {
                    self.event_in(
                        event_phase,
                        EventType::Warning,
                        &format!("Post-rollout hook {name} failed {e}"),
                    )
                    .await;
                    return;
                }
            }
        }
    }

    /// Rollback webhooks: the first that answers with a pass asks for a rollback.
    pub(super) async fn run_rollback_hooks(&mut self, phase: CanaryPhase) -> bool {
        for hook in self.hooks_of(HookType::Rollback) {
            let name = hook.name.clone().unwrap_or_default();
            match self.call(&hook, phase).await {
                Ok(()) => {
                    self.event(EventType::Warning, &format!("Rollback check {name} passed"))
                        .await;
                    return true;
                }
                Err(_) => {
                    self.event(
                        EventType::Normal,
                        &format!("Rollback hook {name} not signaling a rollback"),
                    )
                    .await
                }
            }
        }
        false
    }
}
