//! The simulator behind `aviary simulate`: the real engine on simulated ports, with virtual
//! time.
//!
//! - [`Simulator`]: the loop (ticks at the analysis interval on a virtual clock) over any
//!   [`World`] of ports; `aviary simulate` runs it on a [`ScriptedWorld`].
//! - [`world`]: the [`World`] trait, and [`ScriptedWorld`], the scripted ports `aviary simulate`
//!   runs on.
//! - `on_fakes` (feature `test-util`): `Simulation`, the simulator on the fakes, for the engine's
//!   tests.
//!
//! A simulation initializes the canary, presents one new revision of the target, and ticks at
//! the analysis interval until the analysis ends (Succeeded or Failed) or `maxTicks` is reached.
//! The target is always ready. The n-th query of a metric returns the n-th value of its script
//! and the n-th call of a webhook gets the n-th outcome; the last entry repeats. Metrics not in
//! the script are healthy (built-ins: 100% success, 0 ms; template metrics: a value inside their
//! threshold range).

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::defaults::MIN_INTERVAL;
use aviary_api::duration::format_go_duration;
use aviary_api::metric_template::{MetricProvider, MetricTemplateSpec};
use aviary_api::{Canary, CanaryPhase, MetricTemplate};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::{EngineConfig, TickInput, TickMemory, TickOutcome, tick};
use crate::error::{Error, Result};
use crate::ports::EventType;

#[cfg(feature = "test-util")]
mod on_fakes;
pub mod world;

#[cfg(feature = "test-util")]
pub use on_fakes::Simulation;

pub use world::{Answer, ScriptedWorld, World};

/// A simulation script (YAML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Script {
    /// Value per analysis tick, by metric name: a number, `no-values`, or `error`.
    #[serde(default)]
    pub metrics: BTreeMap<String, Vec<ScriptAnswer>>,
    /// Outcome per call, by webhook name: `pass` or `fail`.
    #[serde(default)]
    pub webhooks: BTreeMap<String, Vec<HookOutcome>>,
    /// Stop after this many ticks (default: when the analysis ends, at most 10,000 ticks).
    #[serde(default)]
    pub max_ticks: Option<usize>,
}

/// One scripted metric answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ScriptAnswer {
    Value(f64),
    Word(String),
}

/// One scripted webhook outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookOutcome {
    Pass,
    Fail,
}

impl Script {
    /// Parses a YAML script.
    pub fn from_yaml(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| Error::Script(e.to_string()))
    }
}

/// One event on the virtual timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimedEvent {
    /// Seconds since the simulation started.
    pub t: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// The state after one tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickSummary {
    pub t: u64,
    pub phase: CanaryPhase,
    pub weight: i32,
    pub failed_checks: i32,
    pub iterations: i32,
}

/// What a simulation did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `name.namespace` of the canary.
    pub canary: String,
    /// The provider the engine used: `spec.provider`, else the default (as the agent's).
    pub provider: String,
    /// True when `spec.provider` is not set and the default applied.
    pub default_provider: bool,
    /// The deployment strategy the engine runs (`canary`, `blue-green`, `ab-testing`).
    pub strategy: String,
    /// The analysis interval in seconds.
    pub interval_seconds: u64,
    pub events: Vec<TimedEvent>,
    pub ticks: Vec<TickSummary>,
    pub phase: CanaryPhase,
    pub weight: i32,
    pub failed_checks: i32,
    pub elapsed_seconds: u64,
}

impl Report {
    /// The text timeline: a header (canary, provider, strategy, interval), one line per event,
    /// then the final state.
    pub fn to_text(&self) -> String {
        let default = if self.default_provider {
            " (spec.provider is not set: the agent's default; --provider to change)"
        } else {
            ""
        };
        let mut out = format!(
            "# {}: provider {}{default}, strategy {}, interval {}\n",
            self.canary,
            self.provider,
            self.strategy,
            format_go_duration(Duration::from_secs(self.interval_seconds)),
        );
        for e in &self.events {
            out.push_str(&format!("T+{}s {} {}\n", e.t, e.kind, e.message));
        }
        out.push_str(&format!(
            "phase: {} weight: {} failedChecks: {} elapsed: {}s\n",
            self.phase.as_str(),
            self.weight,
            self.failed_checks,
            self.elapsed_seconds
        ));
        out
    }
}

/// The engine on a virtual clock; each call names the [`World`] whose ports it runs on.
pub struct Simulator {
    pub canary: Canary,
    pub config: EngineConfig,
    memory: TickMemory,
    start: Timestamp,
    now: Timestamp,
    interval: Duration,
    events: Vec<TimedEvent>,
    ticks: Vec<TickSummary>,
}

impl Simulator {
    /// A simulation of `canary` (its status is cleared) on `world`, starting at a fixed instant.
    pub fn new(mut canary: Canary, world: &impl World) -> Self {
        canary.status = None;
        let start = Timestamp::from_second(1_767_225_600).expect("a valid instant"); // 2026-01-01
        let interval = canary.analysis_interval(MIN_INTERVAL);
        world.present_revision("rev-1");
        Self {
            canary,
            config: EngineConfig::default(),
            memory: TickMemory::default(),
            start,
            now: start,
            interval,
            events: Vec::new(),
            ticks: Vec::new(),
        }
    }

    /// An agent restart: the engine's memory between ticks (the judge's state among it) is
    /// gone; the Canary and its status, which live in the API server, stay.
    pub fn restart_agent(&mut self) {
        self.memory = TickMemory::default();
    }

    /// The events so far, with their virtual times.
    pub fn timeline(&self) -> &[TimedEvent] {
        &self.events
    }

    /// The current status (default before the first tick).
    pub fn status(&self) -> aviary_api::CanaryStatus {
        self.canary.status.clone().unwrap_or_default()
    }

    /// The provider the engine uses for this canary: `spec.provider`, else
    /// `config.default_provider`.
    pub fn provider(&self) -> (String, bool) {
        match self.canary.spec.provider.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => (p.to_string(), false),
            None => (self.config.default_provider.clone(), true),
        }
    }

    /// The strategy the engine runs: the kubernetes provider turns every other into blue/green.
    pub fn strategy(&self) -> String {
        let strategy = self.canary.strategy();
        if self.provider().0 == "kubernetes" && strategy != aviary_api::Strategy::BlueGreen {
            return format!(
                "blue-green (the kubernetes provider cannot do {})",
                strategy.as_str()
            );
        }
        strategy.as_str().to_string()
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> u64 {
        self.now.duration_since(self.start).as_secs().max(0) as u64
    }

    /// Loads the script into the world; template metrics get a template to resolve.
    pub fn load(&mut self, world: &impl World, script: &Script) {
        for (name, answers) in &script.metrics {
            let answers = answers
                .iter()
                .map(|a| match a {
                    ScriptAnswer::Value(v) => Answer::Value(*v),
                    ScriptAnswer::Word(w) if w == "no-values" || w == "novalues" => Answer::NoValues,
                    ScriptAnswer::Word(w) => Answer::Error(w.clone()),
                })
                .collect();
            world.metrics().script(name, answers);
        }
        for (name, outcomes) in &script.webhooks {
            let outcomes: Vec<bool> = outcomes.iter().map(|o| *o == HookOutcome::Pass).collect();
            world.hooks().script(name, &outcomes);
        }
        let ns = self.canary.namespace().to_string();
        let metrics = self.canary.analysis().metrics.clone().unwrap_or_default();
        for m in metrics {
            let Some(r) = &m.template_ref else { continue };
            let name = m.name.clone().unwrap_or_default();
            let mut t = MetricTemplate::new(
                r.name.as_deref().unwrap_or(""),
                MetricTemplateSpec {
                    provider: Some(MetricProvider {
                        type_: Some("prometheus".into()),
                        ..Default::default()
                    }),
                    query: Some("simulated".into()),
                },
            );
            t.metadata.namespace = Some(r.namespace.clone().unwrap_or_else(|| ns.clone()));
            world.metrics().add_template(t);
            if !script.metrics.contains_key(&name) {
                let healthy = match m.threshold_range {
                    Some(r) => match (r.min, r.max) {
                        (Some(lo), Some(hi)) => (lo + hi) / 2.0,
                        (Some(lo), None) => lo,
                        (None, Some(hi)) => hi,
                        (None, None) => 0.0,
                    },
                    None => 0.0,
                };
                world.metrics().script(&name, vec![Answer::Value(healthy)]);
            }
        }
    }

    /// Runs one tick at the current virtual time, then advances the clock by the interval.
    pub async fn tick(&mut self, world: &impl World) -> TickOutcome {
        let input = TickInput {
            canary: &self.canary,
            now: self.now,
            token: "simcookieaprimarycook",
        };
        let outcome = tick(input, &mut self.memory, world.ports(), &self.config).await;
        self.canary.status = Some(outcome.status.clone());
        let t = self.elapsed();
        for (kind, message) in world.take_events() {
            self.events.push(TimedEvent {
                t,
                kind: match kind {
                    EventType::Normal => "Normal".into(),
                    EventType::Warning => "Warning".into(),
                },
                message,
            });
        }
        self.ticks.push(TickSummary {
            t,
            phase: outcome.status.phase,
            weight: outcome.status.canary_weight,
            failed_checks: outcome.status.failed_checks,
            iterations: outcome.status.iterations,
        });
        // Saturating: an interval of centuries (`2562047h`) must end the timeline, not panic.
        self.now = self.now.saturating_add(self.interval).unwrap_or(Timestamp::MAX);
        outcome
    }

    /// Initializes, presents a new revision, and ticks until the analysis ends.
    pub async fn run(&mut self, world: &impl World, script: &Script) -> Report {
        self.load(world, script);
        let max_ticks = script.max_ticks.unwrap_or(10_000).max(1);
        let mut last = None;
        let mut presented = false;
        for _ in 0..max_ticks {
            let before = self.now;
            let out = self.tick(world).await;
            let phase = out.status.phase;
            last = Some((out, before));
            if !presented && phase == CanaryPhase::Initialized {
                world.present_revision("rev-2");
                presented = true;
                continue;
            }
            if presented && phase.is_final() {
                break;
            }
        }
        let (out, at) = last.expect("max_ticks is at least 1");
        let status = out.status;
        let (provider, default_provider) = self.provider();
        Report {
            canary: format!("{}.{}", self.canary.name(), self.canary.namespace()),
            provider,
            default_provider,
            strategy: self.strategy(),
            interval_seconds: self.interval.as_secs(),
            events: self.events.clone(),
            ticks: self.ticks.clone(),
            phase: status.phase,
            weight: status.canary_weight,
            failed_checks: status.failed_checks,
            elapsed_seconds: at.duration_since(self.start).as_secs().max(0) as u64,
        }
    }
}
