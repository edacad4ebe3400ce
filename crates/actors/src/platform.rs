//! What the actors need from a platform (Kubernetes, local): the ports of each canary and the
//! status it last persisted, plus agent-wide settings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_api::{Canary, CanaryStatus};
use aviary_core::EngineConfig;
use aviary_core::ports::{Gate, Hooks, Metrics, NoGate, Notifier, Ports, Recorder, Router, Target};
use jiff::Timestamp;

/// The ports of one canary, owned (shared with other canaries where the platform wants).
#[derive(Clone)]
pub struct CanaryPorts {
    pub target: Arc<dyn Target>,
    pub router: Arc<dyn Router>,
    pub metrics: Arc<dyn Metrics>,
    pub hooks: Arc<dyn Hooks>,
    pub notifier: Arc<dyn Notifier>,
    pub recorder: Arc<dyn Recorder>,
    pub gate: Arc<dyn Gate>,
}

impl CanaryPorts {
    /// Borrowed ports for one tick.
    pub fn as_ports(&self) -> Ports<'_> {
        Ports {
            target: &*self.target,
            router: &*self.router,
            metrics: &*self.metrics,
            hooks: &*self.hooks,
            notifier: &*self.notifier,
            recorder: &*self.recorder,
            gate: &*self.gate,
        }
    }

    /// The gate for agents without a coordinator.
    pub fn no_gate() -> Arc<dyn Gate> {
        Arc::new(NoGate)
    }
}

/// A platform, as seen by the actors.
#[async_trait]
pub trait Platform: Send + Sync + 'static {
    /// The ports for `canary` (called when its actor starts, and again on a spec change).
    fn ports(&self, canary: &Canary) -> CanaryPorts;
    /// The status last persisted for `canary`: what a restarted actor resumes from.
    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus>;
}

/// Wall-clock time for the engine. Tests use [`Clock::tokio`] so paused time moves it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Timestamp::now))
    }

    /// A clock that starts at `start` and follows tokio's (possibly paused) clock.
    pub fn tokio(start: Timestamp) -> Self {
        let base = tokio::time::Instant::now();
        Self(Arc::new(move || {
            let elapsed = tokio::time::Instant::now().duration_since(base);
            start + jiff::SignedDuration::try_from(elapsed).unwrap_or(jiff::SignedDuration::ZERO)
        }))
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// What one tick did, for observers (metrics, benchmarks).
#[derive(Debug, Clone)]
pub struct TickReport {
    /// `namespace/name`.
    pub key: String,
    /// How late the tick started against its schedule.
    pub lateness: Duration,
    /// How long the tick took.
    pub duration: Duration,
    /// Whether it reached the analysis (Flagger observes the duration only then).
    pub analysed: bool,
}

/// Called after every tick with the canary's new state.
pub type StatusListener = Arc<dyn Fn(&Canary) + Send + Sync>;
/// Called after every tick with its timing.
pub type TickObserver = Arc<dyn Fn(&TickReport) + Send + Sync>;

/// Agent-wide settings of the actors.
#[derive(Clone)]
pub struct Settings {
    /// Engine settings (default provider, cluster name, event webhook).
    pub engine: EngineConfig,
    /// Floor of the analysis interval (Flagger: 10s; the demo lowers it).
    pub min_interval: Duration,
    /// The engine's clock.
    pub clock: Clock,
    /// Prefix of actor names, so several agents can share a process (`<prefix>/<ns>/<name>`).
    pub name_prefix: String,
    /// Receives every canary after each tick.
    pub on_status: Option<StatusListener>,
    /// Receives the timing of each tick.
    pub on_tick: Option<TickObserver>,
    /// How many restarts of one canary's actor are allowed within `restart_window`.
    pub max_restarts: u32,
    /// The window for `max_restarts`.
    pub restart_window: Duration,
    /// Spread the canaries' ticks over their interval (a phase from each canary's key) rather
    /// than ticking every canary discovered together in the same instant: the second tick comes
    /// 0.55 to 1.55 intervals after the first, then one every interval. Off, the second tick
    /// comes one interval after the first, as in Flagger (tests that count ticks from the
    /// start turn it off).
    pub spread_ticks: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            min_interval: aviary_api::defaults::MIN_INTERVAL,
            clock: Clock::system(),
            name_prefix: "agent".into(),
            on_status: None,
            on_tick: None,
            max_restarts: 5,
            restart_window: Duration::from_secs(300),
            spread_ticks: true,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("engine", &self.engine)
            .field("min_interval", &self.min_interval)
            .field("name_prefix", &self.name_prefix)
            .finish_non_exhaustive()
    }
}
