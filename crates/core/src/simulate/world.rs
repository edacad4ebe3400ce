//! The simulated world of `aviary simulate`: a target that is always ready and describes the
//! revision the simulator presents, a router that keeps the split it is given, metrics and
//! webhooks answered from per-name scripts, a recorder that keeps the events, no alerts and no
//! outside gate. Scripts are per name: the n-th query of a metric gets the n-th answer, the n-th
//! call of a webhook the n-th outcome, and the last entry repeats.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::canary::{BUILTIN_DURATION, BUILTIN_SUCCESS_RATE, CanaryWebhook, NamespacedRef};
use aviary_api::{Canary, CanaryStatus, MetricTemplate};
use parking_lot::Mutex;

use crate::ports::{
    Alert, BuiltinMetric, EventType, HookPayload, Hooks, MetricError, MetricModel, MetricResult, Metrics,
    NoGate, NotReady, Notifier, PortSet, Ports, Recorder, Router, Routes, Target, TargetRevision,
    TemplateQuery,
};

/// The ports a simulation runs on, and what the simulator scripts in them.
pub trait World {
    /// The ports for one tick.
    fn ports(&self) -> Ports<'_>;
    /// The target describes a new revision from now on (like a new image on a Deployment).
    fn present_revision(&self, fingerprint: &str);
    /// The metrics' scripts and templates.
    fn metrics(&self) -> &ScriptedMetrics;
    /// The webhooks' scripts.
    fn hooks(&self) -> &ScriptedHooks;
    /// The events recorded since the last call.
    fn take_events(&self) -> Vec<(EventType, String)>;
}

/// One scripted query answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    NoValues,
    Error(String),
}

/// Per-name sequences of answers, and how often each name was asked.
#[derive(Debug)]
pub(crate) struct Scripts<T> {
    lists: HashMap<String, Vec<T>>,
    counts: HashMap<String, usize>,
}

impl<T> Default for Scripts<T> {
    fn default() -> Self {
        Self {
            lists: HashMap::new(),
            counts: HashMap::new(),
        }
    }
}

impl<T: Clone> Scripts<T> {
    /// Scripts `name` from its first call on.
    pub(crate) fn set(&mut self, name: &str, answers: Vec<T>) {
        self.lists.insert(name.into(), answers);
        self.counts.remove(name);
    }

    /// Counts a call of `name`; its scripted answer, if any.
    pub(crate) fn next(&mut self, name: &str) -> Option<T> {
        let n = {
            let c = self.counts.entry(name.into()).or_insert(0);
            *c += 1;
            *c
        };
        match self.lists.get(name) {
            Some(list) if !list.is_empty() => Some(list[(n - 1).min(list.len() - 1)].clone()),
            _ => None,
        }
    }

    /// How often `name` was called.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// A target that is always ready and describes the revision it was last given.
#[derive(Debug, Clone, Default)]
pub struct SimulatedTarget(Arc<Mutex<String>>);

impl SimulatedTarget {
    /// Presents a new revision.
    pub fn set_revision(&self, fingerprint: &str) {
        *self.0.lock() = fingerprint.into();
    }
}

#[async_trait]
impl Target for SimulatedTarget {
    async fn revision(&self, _canary: &Canary) -> Result<TargetRevision, String> {
        Ok(TargetRevision {
            fingerprint: self.0.lock().clone(),
            tracked_configs: None,
            route: None,
        })
    }
    async fn initialize(&self, _canary: &Canary) -> Result<(), NotReady> {
        Ok(())
    }
    async fn primary_ready(&self, _canary: &Canary) -> Result<(), NotReady> {
        Ok(())
    }
    async fn canary_ready(&self, _canary: &Canary) -> Result<(), NotReady> {
        Ok(())
    }
    async fn promote(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn scale_to_zero(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn scale_from_zero(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
}

/// A router that keeps the split it is given (100/0 at first).
#[derive(Debug, Clone)]
pub struct SimulatedRouter(Arc<Mutex<Routes>>);

impl Default for SimulatedRouter {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Routes::split(100, 0))))
    }
}

#[async_trait]
impl Router for SimulatedRouter {
    async fn reconcile(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn set_routes(&self, _canary: &Canary, routes: &Routes) -> Result<(), String> {
        *self.0.lock() = routes.clone();
        Ok(())
    }
    async fn get_routes(&self, _canary: &Canary) -> Result<Routes, String> {
        Ok(self.0.lock().clone())
    }
}

#[derive(Debug, Default)]
struct MetricsScript {
    answers: Scripts<Answer>,
    templates: HashMap<(String, String), MetricTemplate>,
}

/// Metrics answered from per-metric scripts. Unscripted built-ins are healthy (100% success,
/// 0 ms); unscripted template and inline metrics answer 0.
#[derive(Debug, Clone, Default)]
pub struct ScriptedMetrics(Arc<Mutex<MetricsScript>>);

impl ScriptedMetrics {
    /// Scripts the answers of metric `name` (the canary's metric name).
    pub fn script(&self, name: &str, answers: Vec<Answer>) {
        self.0.lock().answers.set(name, answers);
    }

    /// Makes a MetricTemplate resolvable.
    pub fn add_template(&self, template: MetricTemplate) {
        let ns = template
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = template.metadata.name.clone().unwrap_or_default();
        self.0.lock().templates.insert((ns, name), template);
    }

    /// How many times metric `name` was queried.
    pub fn count(&self, name: &str) -> usize {
        self.0.lock().answers.count(name)
    }

    fn answer(&self, name: &str, default: f64) -> MetricResult {
        match self.0.lock().answers.next(name).unwrap_or(Answer::Value(default)) {
            Answer::Value(v) => Ok(v),
            Answer::NoValues => Err(MetricError::NoValues("no values found".into())),
            Answer::Error(e) => Err(MetricError::Query(e)),
        }
    }
}

#[async_trait]
impl Metrics for ScriptedMetrics {
    async fn check_providers(&self, _canary: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn builtin(&self, _canary: &Canary, metric: BuiltinMetric, _model: &MetricModel) -> MetricResult {
        match metric {
            BuiltinMetric::SuccessRate => self.answer(BUILTIN_SUCCESS_RATE, 100.0),
            BuiltinMetric::Duration => self.answer(BUILTIN_DURATION, 0.0),
        }
    }
    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        self.0
            .lock()
            .templates
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| format!("metrictemplate.flagger.app \"{name}\" not found"))
    }
    async fn query(&self, q: TemplateQuery<'_>) -> MetricResult {
        self.answer(q.metric, 0.0)
    }
    async fn inline(&self, _canary: &Canary, metric: &str, _query: &str) -> MetricResult {
        self.answer(metric, 0.0)
    }
}

/// Webhooks answered from per-name scripts (`true` = pass); unscripted hooks pass.
#[derive(Debug, Clone, Default)]
pub struct ScriptedHooks(Arc<Mutex<Scripts<bool>>>);

impl ScriptedHooks {
    /// Scripts the outcomes of webhook `name`.
    pub fn script(&self, name: &str, outcomes: &[bool]) {
        self.0.lock().set(name, outcomes.to_vec());
    }
}

#[async_trait]
impl Hooks for ScriptedHooks {
    async fn call(&self, hook: &CanaryWebhook, _payload: &HookPayload) -> Result<(), String> {
        let name = hook.name.clone().unwrap_or_default();
        match self.0.lock().next(&name).unwrap_or(true) {
            true => Ok(()),
            false => Err(format!("{name} refused")),
        }
    }
}

/// Alerts go nowhere in a simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentNotifier;

#[async_trait]
impl Notifier for SilentNotifier {
    async fn notify(
        &self,
        _canary: &Canary,
        _provider: Option<&NamespacedRef>,
        _alert: &Alert,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// Keeps the events; statuses live in the simulated canary.
#[derive(Debug, Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<(EventType, String)>>>);

#[async_trait]
impl Recorder for Timeline {
    async fn status(&self, _canary: &Canary, _status: &CanaryStatus) -> Result<(), String> {
        Ok(())
    }
    async fn event(&self, _canary: &Canary, kind: EventType, message: &str) {
        self.0.lock().push((kind, message.into()));
    }
}

/// The ports `aviary simulate` runs on.
pub type ScriptedWorld = PortSet<
    SimulatedTarget,
    SimulatedRouter,
    ScriptedMetrics,
    ScriptedHooks,
    SilentNotifier,
    Timeline,
    NoGate,
>;

impl World for ScriptedWorld {
    fn ports(&self) -> Ports<'_> {
        PortSet::ports(self)
    }
    fn present_revision(&self, fingerprint: &str) {
        self.target.set_revision(fingerprint);
    }
    fn metrics(&self) -> &ScriptedMetrics {
        &self.metrics
    }
    fn hooks(&self) -> &ScriptedHooks {
        &self.hooks
    }
    fn take_events(&self) -> Vec<(EventType, String)> {
        std::mem::take(&mut *self.recorder.0.lock())
    }
}
