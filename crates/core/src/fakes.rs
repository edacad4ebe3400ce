//! Fakes of every port, scriptable and recording, for tests (feature `test-util`). The metric
//! and webhook scripts are the simulator's ([`crate::simulate::world`]); the fakes add what tests
//! inspect and inject (call logs, failures, delays).
//!
//! Each fake is a cheap handle (`Clone` shares state) so a test can keep one and give another
//! to the engine or an actor. Scripts are per name: the n-th query of a metric gets the n-th
//! value, the n-th call of a webhook gets the n-th outcome, and the last entry repeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::canary::{CanaryWebhook, HookType, NamespacedRef};
use aviary_api::{Canary, CanaryPhase, CanaryStatus, MetricTemplate, Strategy};
use parking_lot::Mutex;

use crate::judge::{CounterReading, EvidenceReport};
use crate::ports::*;
use crate::simulate::world::{ScriptedHooks, ScriptedMetrics, World};

// === Target ===

#[derive(Debug, Clone)]
struct TargetState {
    revision: TargetRevision,
    primary: Result<(), NotReady>,
    canary: Result<(), NotReady>,
    /// The revision the primary runs (what `promote` copied).
    primary_revision: Option<String>,
    scaled_up: bool,
    calls: Vec<String>,
    fail_promote: Option<String>,
    fail_scaling: Option<String>,
    panics: Panics,
}

/// When [`FakeTarget`]'s `revision` panics: a bug in a port, which must not take an agent down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Panics {
    #[default]
    Never,
    /// On the next call only.
    Once,
    /// On every call.
    Always,
}

/// A target whose revision and readiness the test sets.
#[derive(Debug, Clone)]
pub struct FakeTarget(Arc<Mutex<TargetState>>);

impl Default for FakeTarget {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(TargetState {
            revision: TargetRevision {
                fingerprint: "rev-1".into(),
                tracked_configs: None,
                route: None,
            },
            primary: Ok(()),
            canary: Ok(()),
            primary_revision: None,
            scaled_up: true,
            calls: Vec::new(),
            fail_promote: None,
            fail_scaling: None,
            panics: Panics::Never,
        })))
    }
}

impl FakeTarget {
    /// Presents a new revision (like a new image on the Deployment).
    pub fn set_revision(&self, fingerprint: &str) {
        self.0.lock().revision.fingerprint = fingerprint.into();
    }
    /// Sets the route the revision reports (Knative's latest created revision).
    pub fn set_route(&self, route: Option<&str>) {
        self.0.lock().revision.route = route.map(str::to_string);
    }
    /// Sets tracked config checksums.
    pub fn set_tracked_configs(&self, configs: Option<BTreeMap<String, String>>) {
        self.0.lock().revision.tracked_configs = configs;
    }
    /// Primary readiness from now on.
    pub fn set_primary_ready(&self, r: Result<(), NotReady>) {
        self.0.lock().primary = r;
    }
    /// Canary readiness from now on.
    pub fn set_canary_ready(&self, r: Result<(), NotReady>) {
        self.0.lock().canary = r;
    }
    /// Makes `promote` fail with this message.
    pub fn fail_promote(&self, msg: Option<&str>) {
        self.0.lock().fail_promote = msg.map(str::to_string);
    }
    /// Makes `scale_to_zero` and `scale_from_zero` fail with this message.
    pub fn fail_scaling(&self, msg: Option<&str>) {
        self.0.lock().fail_scaling = msg.map(str::to_string);
    }
    /// Makes `revision` panic (see [`Panics`]).
    pub fn panic_in_revision(&self, when: Panics) {
        self.0.lock().panics = when;
    }
    /// The revision the primary runs, once promoted or initialized.
    pub fn primary_revision(&self) -> Option<String> {
        self.0.lock().primary_revision.clone()
    }
    /// Whether the canary workload is scaled up.
    pub fn scaled_up(&self) -> bool {
        self.0.lock().scaled_up
    }
    /// Scales the canary workload up or down (`fail_scaling` fails it), logging `call`.
    fn scale(&self, up: bool, call: &str) -> Result<(), String> {
        let mut s = self.0.lock();
        if let Some(e) = s.fail_scaling.clone() {
            return Err(e);
        }
        s.scaled_up = up;
        s.calls.push(call.into());
        Ok(())
    }
    /// Calls in order: initialize, promote, scale_to_zero, scale_from_zero.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().calls.clone()
    }
}

#[async_trait]
impl Target for FakeTarget {
    async fn revision(&self, _canary: &Canary) -> Result<TargetRevision, String> {
        let mut s = self.0.lock();
        let panics = s.panics;
        if panics == Panics::Once {
            s.panics = Panics::Never;
        }
        drop(s);
        if panics != Panics::Never {
            panic!("injected panic in Target::revision");
        }
        Ok(self.0.lock().revision.clone())
    }
    async fn initialize(&self, _canary: &Canary) -> Result<(), NotReady> {
        let mut s = self.0.lock();
        if s.primary_revision.is_none() {
            s.primary_revision = Some(s.revision.fingerprint.clone());
            s.calls.push("initialize".into());
        }
        Ok(())
    }
    async fn primary_ready(&self, _canary: &Canary) -> Result<(), NotReady> {
        self.0.lock().primary.clone()
    }
    async fn canary_ready(&self, _canary: &Canary) -> Result<(), NotReady> {
        self.0.lock().canary.clone()
    }
    async fn promote(&self, _canary: &Canary) -> Result<(), String> {
        let mut s = self.0.lock();
        if let Some(e) = s.fail_promote.clone() {
            return Err(e);
        }
        s.primary_revision = Some(s.revision.fingerprint.clone());
        s.calls.push("promote".into());
        Ok(())
    }
    async fn scale_to_zero(&self, _canary: &Canary) -> Result<(), String> {
        self.scale(false, "scale_to_zero")
    }
    async fn scale_from_zero(&self, _canary: &Canary) -> Result<(), String> {
        self.scale(true, "scale_from_zero")
    }
}

// === Router ===

#[derive(Debug, Default)]
struct RouterState {
    routes: Routes,
    history: Vec<Routes>,
    reconciled: bool,
    fail: Option<String>,
    fail_set: Option<String>,
}

/// A router that stores the split. `get_routes` reads back what was set (100/0 initially).
#[derive(Debug, Clone)]
pub struct FakeRouter(Arc<Mutex<RouterState>>);

impl Default for FakeRouter {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(RouterState {
            routes: Routes::split(100, 0),
            ..Default::default()
        })))
    }
}

impl FakeRouter {
    /// The current split.
    pub fn routes(&self) -> Routes {
        self.0.lock().routes.clone()
    }
    /// Every `set_routes` call, in order.
    pub fn history(&self) -> Vec<Routes> {
        self.0.lock().history.clone()
    }
    /// Makes `set_routes` alone fail with this message (`None` to heal).
    pub fn fail_set_routes(&self, msg: Option<&str>) {
        self.0.lock().fail_set = msg.map(str::to_string);
    }
    /// Makes every call fail with this message (`None` to heal).
    pub fn fail(&self, msg: Option<&str>) {
        self.0.lock().fail = msg.map(str::to_string);
    }
}

#[async_trait]
impl Router for FakeRouter {
    async fn reconcile(&self, _canary: &Canary) -> Result<(), String> {
        let mut s = self.0.lock();
        if let Some(e) = &s.fail {
            return Err(e.clone());
        }
        s.reconciled = true;
        Ok(())
    }
    async fn set_routes(&self, _canary: &Canary, routes: &Routes) -> Result<(), String> {
        let mut s = self.0.lock();
        if let Some(e) = s.fail.as_ref().or(s.fail_set.as_ref()) {
            return Err(e.clone());
        }
        s.routes = routes.clone();
        s.history.push(routes.clone());
        Ok(())
    }
    async fn get_routes(&self, _canary: &Canary) -> Result<Routes, String> {
        let s = self.0.lock();
        if let Some(e) = &s.fail {
            return Err(e.clone());
        }
        Ok(s.routes.clone())
    }
}

// === Metrics ===

pub use crate::simulate::world::Answer;

#[derive(Debug, Default)]
struct MetricsState {
    unavailable: Option<String>,
    delay: Option<Duration>,
    queries: Vec<(String, String)>,
    /// Raw counters the judge reads, in order; the last one repeats. Empty: no counters.
    counters: Vec<CounterReading>,
    counter_reads: usize,
}

/// Metrics answered from per-metric scripts (the simulator's [`ScriptedMetrics`]), plus an
/// unavailable provider and slow queries on demand.
#[derive(Debug, Clone, Default)]
pub struct FakeMetrics {
    scripted: ScriptedMetrics,
    state: Arc<Mutex<MetricsState>>,
}

impl FakeMetrics {
    /// Scripts the answers of metric `name` (the canary's metric name).
    pub fn script(&self, name: &str, answers: Vec<Answer>) {
        self.scripted.script(name, answers);
    }
    /// Scripts plain values.
    pub fn values(&self, name: &str, values: &[f64]) {
        self.script(name, values.iter().map(|v| Answer::Value(*v)).collect());
    }
    /// Makes a MetricTemplate resolvable.
    pub fn add_template(&self, template: MetricTemplate) {
        self.scripted.add_template(template);
    }
    /// Makes the provider check fail.
    pub fn set_unavailable(&self, msg: Option<&str>) {
        self.state.lock().unavailable = msg.map(str::to_string);
    }
    /// Delays every query (to test that a slow query delays only its own canary).
    pub fn set_delay(&self, d: Option<Duration>) {
        self.state.lock().delay = d;
    }
    /// `(metric, rendered query)` of every query, in order; built-ins show an empty query.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.state.lock().queries.clone()
    }
    /// How many times metric `name` was queried.
    pub fn count(&self, name: &str) -> usize {
        self.scripted.count(name)
    }
    /// Scripts the judge's counter readings (one per read; the last repeats).
    pub fn counters(&self, readings: Vec<CounterReading>) {
        let mut s = self.state.lock();
        s.counters = readings;
        s.counter_reads = 0;
    }
    /// How many times the judge read the counters.
    pub fn counter_reads(&self) -> usize {
        self.state.lock().counter_reads
    }

    async fn delay(&self) {
        let delay = self.state.lock().delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl Metrics for FakeMetrics {
    async fn check_providers(&self, _canary: &Canary) -> Result<(), String> {
        match &self.state.lock().unavailable {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
    async fn builtin(&self, canary: &Canary, metric: BuiltinMetric, model: &MetricModel) -> MetricResult {
        let name = match metric {
            BuiltinMetric::SuccessRate => aviary_api::canary::BUILTIN_SUCCESS_RATE,
            BuiltinMetric::Duration => aviary_api::canary::BUILTIN_DURATION,
        };
        self.state.lock().queries.push((name.into(), String::new()));
        self.delay().await;
        self.scripted.builtin(canary, metric, model).await
    }
    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.scripted.template(namespace, name).await
    }
    async fn counters(&self, _canary: &Canary, _model: &MetricModel) -> Result<CounterReading, MetricError> {
        let mut s = self.state.lock();
        let i = s.counter_reads.min(s.counters.len().saturating_sub(1));
        let r = s.counters.get(i).cloned();
        s.counter_reads += 1;
        r.ok_or_else(|| MetricError::Provider(NO_COUNTERS.into()))
    }
    async fn query(&self, q: TemplateQuery<'_>) -> MetricResult {
        self.state.lock().queries.push((q.metric.into(), q.query.into()));
        self.delay().await;
        self.scripted.query(q).await
    }
    async fn inline(&self, canary: &Canary, metric: &str, query: &str) -> MetricResult {
        self.state.lock().queries.push((metric.into(), query.into()));
        self.delay().await;
        self.scripted.inline(canary, metric, query).await
    }
}

// === Hooks ===

/// One recorded webhook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub name: String,
    pub kind: HookType,
    pub payload: HookPayload,
}

#[derive(Debug, Default)]
struct HooksState {
    calls: Vec<HookCall>,
    delay: Option<Duration>,
}

/// Webhooks answered from per-name scripts (the simulator's [`ScriptedHooks`]; unscripted hooks
/// pass), recording every call.
#[derive(Debug, Clone, Default)]
pub struct FakeHooks {
    scripted: ScriptedHooks,
    state: Arc<Mutex<HooksState>>,
}

impl FakeHooks {
    /// Scripts the outcomes of webhook `name`.
    pub fn script(&self, name: &str, outcomes: &[bool]) {
        self.scripted.script(name, outcomes);
    }
    /// Every call, in order.
    pub fn calls(&self) -> Vec<HookCall> {
        self.state.lock().calls.clone()
    }
    /// Delays every call.
    pub fn set_delay(&self, d: Option<Duration>) {
        self.state.lock().delay = d;
    }
}

#[async_trait]
impl Hooks for FakeHooks {
    async fn call(&self, hook: &CanaryWebhook, payload: &HookPayload) -> Result<(), String> {
        let delay = self.state.lock().delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.state.lock().calls.push(HookCall {
            name: hook.name.clone().unwrap_or_default(),
            kind: hook.hook_type(),
            payload: payload.clone(),
        });
        self.scripted.call(hook, payload).await
    }
}

// === Notifier ===

/// Records alerts: `(provider name or "global", alert)`.
#[derive(Debug, Clone, Default)]
pub struct FakeNotifier(Arc<Mutex<Vec<(String, Alert)>>>);

impl FakeNotifier {
    /// Every alert sent, in order.
    pub fn alerts(&self) -> Vec<(String, Alert)> {
        self.0.lock().clone()
    }
}

#[async_trait]
impl Notifier for FakeNotifier {
    async fn notify(
        &self,
        _canary: &Canary,
        provider: Option<&NamespacedRef>,
        alert: &Alert,
    ) -> Result<(), String> {
        let to = provider
            .and_then(|p| p.name.clone())
            .unwrap_or_else(|| "global".into());
        self.0.lock().push((to, alert.clone()));
        Ok(())
    }
}

// === Recorder ===

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub kind: EventType,
    pub message: String,
}

#[derive(Debug, Default)]
struct RecorderState {
    events: Vec<RecordedEvent>,
    statuses: Vec<CanaryStatus>,
    successes: Vec<(Strategy, bool)>,
    failures: Vec<Strategy>,
    phases: Vec<CanaryPhase>,
    analysis: Vec<(String, f64)>,
    observed: Vec<(String, f64)>,
    fail: Option<String>,
}

/// Records events, persisted statuses and metric updates.
#[derive(Debug, Clone, Default)]
pub struct FakeRecorder(Arc<Mutex<RecorderState>>);

impl FakeRecorder {
    /// Every event, in order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.0.lock().events.clone()
    }
    /// Event messages, in order.
    pub fn messages(&self) -> Vec<String> {
        self.0.lock().events.iter().map(|e| e.message.clone()).collect()
    }
    /// Removes and returns the events recorded so far.
    pub fn take_events(&self) -> Vec<RecordedEvent> {
        std::mem::take(&mut self.0.lock().events)
    }
    /// Every persisted status, in order.
    pub fn statuses(&self) -> Vec<CanaryStatus> {
        self.0.lock().statuses.clone()
    }
    /// The last persisted status.
    pub fn last_status(&self) -> Option<CanaryStatus> {
        self.0.lock().statuses.last().cloned()
    }
    /// `(strategy, skipped)` per success counted.
    pub fn successes(&self) -> Vec<(Strategy, bool)> {
        self.0.lock().successes.clone()
    }
    /// Strategy per failure counted.
    pub fn failures(&self) -> Vec<Strategy> {
        self.0.lock().failures.clone()
    }
    /// Values recorded for `flagger_canary_metric_analysis`.
    pub fn analysis_values(&self) -> Vec<(String, f64)> {
        self.0.lock().analysis.clone()
    }
    /// Every value the analysis checks measured, passing or not.
    pub fn observed_values(&self) -> Vec<(String, f64)> {
        self.0.lock().observed.clone()
    }
    /// Makes status writes fail with this message.
    pub fn fail_status(&self, msg: Option<&str>) {
        self.0.lock().fail = msg.map(str::to_string);
    }
}

#[async_trait]
impl Recorder for FakeRecorder {
    async fn status(&self, _canary: &Canary, status: &CanaryStatus) -> Result<(), String> {
        let mut s = self.0.lock();
        if let Some(e) = &s.fail {
            return Err(e.clone());
        }
        s.statuses.push(status.clone());
        Ok(())
    }
    async fn event(&self, _canary: &Canary, kind: EventType, message: &str) {
        self.0.lock().events.push(RecordedEvent {
            kind,
            message: message.into(),
        });
    }
    fn set_phase_metric(&self, _canary: &Canary, phase: CanaryPhase) {
        self.0.lock().phases.push(phase);
    }
    fn set_analysis_metric(&self, _canary: &Canary, metric: &str, value: f64) {
        self.0.lock().analysis.push((metric.into(), value));
    }
    fn observe_metric(&self, _canary: &Canary, metric: &str, value: f64) {
        self.0.lock().observed.push((metric.into(), value));
    }
    fn inc_successes(&self, _canary: &Canary, strategy: Strategy, skipped: bool) {
        self.0.lock().successes.push((strategy, skipped));
    }
    fn inc_failures(&self, _canary: &Canary, strategy: Strategy) {
        self.0.lock().failures.push(strategy);
    }
}

// === Gate ===

#[derive(Debug, Default)]
struct GateState {
    closed: Option<String>,
    rollback: Option<String>,
    skip: bool,
    asked: Vec<String>,
    evidence: Vec<EvidenceReport>,
}

/// A gate the test opens and closes. Without a name it behaves as no gate.
#[derive(Debug, Clone, Default)]
pub struct FakeGate {
    name: Option<String>,
    state: Arc<Mutex<GateState>>,
}

impl FakeGate {
    /// A named gate, initially open.
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.into()),
            state: Arc::default(),
        }
    }
    /// Closes the gate (`Some(reason)`) or opens it (`None`).
    pub fn set_closed(&self, reason: Option<&str>) {
        self.state.lock().closed = reason.map(str::to_string);
    }
    /// Requests a rollback (`Some(reason)`) or withdraws it.
    pub fn request_rollback(&self, reason: Option<&str>) {
        self.state.lock().rollback = reason.map(str::to_string);
    }
    /// Asks for promotion without analysis (a revert) or withdraws it.
    pub fn set_skip_analysis(&self, skip: bool) {
        self.state.lock().skip = skip;
    }
    /// Revisions the gate was asked about.
    pub fn asked(&self) -> Vec<String> {
        self.state.lock().asked.clone()
    }
    /// The judge's evidence reports, in order.
    pub fn evidence(&self) -> Vec<EvidenceReport> {
        self.state.lock().evidence.clone()
    }
}

#[async_trait]
impl Gate for FakeGate {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    async fn confirm_rollout(&self, _canary: &Canary, revision: &TargetRevision) -> GateDecision {
        let mut s = self.state.lock();
        s.asked.push(revision.fingerprint.clone());
        match &s.closed {
            Some(r) => GateDecision::Closed(r.clone()),
            None => GateDecision::Open,
        }
    }
    async fn rollback_requested(&self, _canary: &Canary) -> Option<String> {
        self.state.lock().rollback.clone()
    }
    async fn skip_analysis(&self, _canary: &Canary) -> bool {
        self.state.lock().skip
    }
    async fn report_evidence(&self, _canary: &Canary, report: &EvidenceReport) {
        self.state.lock().evidence.push(report.clone());
    }
}

// === All together ===

/// One of every fake.
pub type Fakes =
    PortSet<FakeTarget, FakeRouter, FakeMetrics, FakeHooks, FakeNotifier, FakeRecorder, FakeGate>;

impl World for Fakes {
    fn ports(&self) -> Ports<'_> {
        PortSet::ports(self)
    }
    fn present_revision(&self, fingerprint: &str) {
        self.target.set_revision(fingerprint);
    }
    fn metrics(&self) -> &ScriptedMetrics {
        &self.metrics.scripted
    }
    fn hooks(&self) -> &ScriptedHooks {
        &self.hooks.scripted
    }
    fn take_events(&self) -> Vec<(EventType, String)> {
        self.recorder
            .take_events()
            .into_iter()
            .map(|e| (e.kind, e.message))
            .collect()
    }
}

/// The metric model of Flagger's podinfo example (`test/podinfo`, interval 1m), as the query
/// tests render it.
pub fn podinfo_model() -> MetricModel {
    MetricModel {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        ingress: "podinfo".into(),
        route: "podinfo-00002".into(),
        interval: "1m".into(),
        variables: Default::default(),
    }
}
