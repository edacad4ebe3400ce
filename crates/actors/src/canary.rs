//! `CanaryActor`: one canary, its timer, its ports and its last status. Each timer tick runs
//! one engine tick; ticks of one canary never overlap, and a slow webhook or query delays only
//! this canary (other canaries are other actors).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use aviary_api::Canary;
use aviary_core::{TickInput, TickMemory, tick};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::platform::{CanaryPorts, Settings, TickReport};
use crate::supervisor::SupervisorMsg;

/// Messages of a [`CanaryActor`].
pub enum CanaryMsg {
    /// The analysis timer fired.
    Tick,
    /// The spec changed; the actor keeps its own status and takes the new ports.
    Update(Arc<Canary>, CanaryPorts),
    /// The canary with its latest status.
    Get(RpcReplyPort<Canary>),
}

/// Start arguments of a [`CanaryActor`].
pub struct CanaryArgs {
    /// The canary, with the status to resume from.
    pub canary: Canary,
    pub ports: CanaryPorts,
    pub settings: Arc<Settings>,
    /// Told about every new status (the supervisor keeps the fleet view).
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
}

/// The actor of one canary.
pub struct CanaryActor;

/// Aborts the timer task when the actor's state goes away (stop, panic or kill).
struct TimerGuard(JoinHandle<()>);

impl Drop for TimerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The actor's state. The spec is shared with the supervisor (one copy per canary); the status
/// is the actor's own.
pub struct CanaryState {
    spec: Arc<Canary>,
    /// Shared with the supervisor's view (one copy per canary).
    status: Option<Arc<aviary_api::CanaryStatus>>,
    ports: CanaryPorts,
    settings: Arc<Settings>,
    supervisor: Option<ActorRef<SupervisorMsg>>,
    memory: TickMemory,
    interval: Duration,
    schedule_start: Instant,
    last_tick: Option<Instant>,
    _timer: TimerGuard,
}

/// Starts the tick timer: the first tick at `first`, then one every `interval`. Ticks that the
/// actor could not take in time queue up and collapse in `run_tick`, like Go's Ticker.
fn start_timer(myself: &ActorRef<CanaryMsg>, first: Instant, interval: Duration) -> TimerGuard {
    // tokio's interval panics on a zero period; `analysis_interval` never returns one, and this
    // keeps a future caller from turning a bad spec into a panic loop.
    let interval = interval.max(Duration::from_millis(1));
    let actor = myself.clone();
    TimerGuard(tokio::spawn(async move {
        let mut timer = tokio::time::interval_at(first, interval);
        loop {
            timer.tick().await;
            if actor.send_message(CanaryMsg::Tick).is_err() {
                break; // the actor is gone
            }
        }
    }))
}

/// When the periodic ticks of a canary start, counted from its first (immediate) tick.
///
/// Without spreading this is one interval, as in Flagger. With it, the canary's ticks fall at
/// a fixed phase of the interval taken from a hash of its key, the first of them between 0.55
/// and 1.55 intervals after the first tick. An agent that starts with a thousand canaries
/// otherwise ticks them all in the same second, every interval, and their status, route and
/// event writes reach the API server as one burst that its queues answer late (or with 429)
/// instead of a steady stream it answers at once. The floor keeps the second tick clear of the
/// backlog collapse in `run_tick` (half an interval).
pub(crate) fn first_periodic_tick(key: &str, interval: Duration, spread: bool) -> Duration {
    if !spread {
        return interval;
    }
    let phase = phase(key);
    interval.mul_f64(if phase >= 0.55 { phase } else { 1.0 + phase })
}

/// A fraction in [0, 1) that depends only on `key` (the same in every agent of one build).
fn phase(key: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}

/// Starts the timer of a canary's periodic ticks; returns it and the instant its schedule
/// counts from (one interval before the first periodic tick), for the lateness figure.
fn schedule(
    myself: &ActorRef<CanaryMsg>,
    key: &str,
    interval: Duration,
    settings: &Settings,
) -> (TimerGuard, Instant) {
    let first = Instant::now() + first_periodic_tick(key, interval, settings.spread_ticks);
    let start = first.checked_sub(interval).unwrap_or(first);
    (start_timer(myself, first, interval), start)
}

/// How late a tick started `since` the schedule began, against the nearest multiple of
/// `interval`. Total: a zero interval or an absurd ratio gives zero instead of a panic.
pub(crate) fn lateness(since: Duration, interval: Duration) -> Duration {
    if interval.is_zero() {
        return Duration::ZERO;
    }
    let periods = (since.as_secs_f64() / interval.as_secs_f64()).round();
    let expected = Duration::try_from_secs_f64(interval.as_secs_f64() * periods).unwrap_or(since);
    since.saturating_sub(expected)
}

fn token() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

impl Actor for CanaryActor {
    type Msg = CanaryMsg;
    type State = CanaryState;
    type Arguments = CanaryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CanaryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = args.canary.analysis_interval(args.settings.min_interval);
        let (timer, schedule_start) = schedule(&myself, &args.canary.key(), interval, &args.settings);
        let mut spec = args.canary;
        let status = spec.status.take().map(Arc::new);
        // Like Flagger's job, run once at start, then on every tick.
        myself.send_message(CanaryMsg::Tick)?;
        Ok(CanaryState {
            spec: Arc::new(spec),
            status,
            ports: args.ports,
            settings: args.settings,
            supervisor: args.supervisor,
            memory: TickMemory::default(),
            interval,
            schedule_start,
            last_tick: None,
            _timer: timer,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // Boxed: the engine's future is large, and an actor keeps its handler future inline
            // for its whole life; boxing costs one allocation per tick instead of kilobytes
            // per idle canary.
            CanaryMsg::Tick => Box::pin(run_tick(state)).await,
            CanaryMsg::Update(spec, ports) => {
                state.spec = spec;
                state.ports = ports;
                let interval = state.spec.analysis_interval(state.settings.min_interval);
                if interval != state.interval {
                    state.interval = interval;
                    let (timer, start) = schedule(&myself, &state.spec.key(), interval, &state.settings);
                    state._timer = timer;
                    state.schedule_start = start;
                }
            }
            CanaryMsg::Get(reply) => {
                let _ = reply.send(state.canary());
            }
        }
        Ok(())
    }
}

impl CanaryState {
    /// The canary with its current status (a copy).
    fn canary(&self) -> Canary {
        let mut c = (*self.spec).clone();
        c.status = self.status.as_deref().cloned();
        c
    }
}

async fn run_tick(state: &mut CanaryState) {
    let started = Instant::now();
    // A backlog of ticks (after a slow tick) collapses into one, like Go's Ticker.
    if let Some(last) = state.last_tick
        && started.duration_since(last) < state.interval / 2
    {
        return;
    }
    state.last_tick = Some(started);
    let lateness = lateness(started.duration_since(state.schedule_start), state.interval);

    let token = token();
    let canary = state.canary();
    let input = TickInput {
        canary: &canary,
        now: state.settings.clock.now(),
        token: &token,
    };
    let outcome = tick(
        input,
        &mut state.memory,
        state.ports.as_ports(),
        &state.settings.engine,
    )
    .await;
    let status = Arc::new(outcome.status);
    state.status = Some(status.clone());

    if let Some(on_status) = &state.settings.on_status {
        let mut c = canary;
        c.status = Some((*status).clone());
        on_status(&c);
    }
    if let Some(sup) = &state.supervisor {
        let _ = sup.cast(SupervisorMsg::Observed {
            key: state.spec.key(),
            status,
        });
    }
    if let Some(on_tick) = &state.settings.on_tick {
        on_tick(&TickReport {
            key: state.spec.key(),
            lateness,
            duration: started.elapsed(),
            analysed: outcome.analysed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{first_periodic_tick, lateness};
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn lateness_against_the_nearest_tick() {
        let s = Duration::from_secs;
        assert_eq!(lateness(s(31), s(10)), s(1));
        assert_eq!(lateness(s(29), s(10)), Duration::ZERO);
        assert_eq!(lateness(s(5), Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn without_spreading_the_second_tick_is_one_interval_later() {
        let s = Duration::from_secs;
        assert_eq!(first_periodic_tick("test/podinfo", s(30), false), s(30));
    }

    #[test]
    fn a_thousand_canaries_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(10);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let first = first_periodic_tick(&format!("bench/app-{i}"), interval, true);
            // the phase within the interval, in tenths
            let phase = (first.as_secs_f64() / interval.as_secs_f64()).fract();
            buckets[(phase * 10.0) as usize] += 1;
        }
        // uniform would be 100 a bucket; a burst would put them all in one
        assert!(buckets.iter().all(|&n| (60..=140).contains(&n)), "{buckets:?}");
    }

    proptest! {
        /// The second tick stays clear of the backlog collapse (half an interval) and comes
        /// within one and a half intervals past it.
        #[test]
        fn the_second_tick_is_within_the_spread(key in ".{0,64}", interval_ms in 1u64..86_400_000) {
            let interval = Duration::from_millis(interval_ms);
            let first = first_periodic_tick(&key, interval, true);
            prop_assert!(first >= interval.mul_f64(0.55) && first <= interval.mul_f64(1.55));
        }

        /// No schedule (a zero interval included) panics, and lateness stays below one period.
        #[test]
        fn lateness_is_total(since_ns in any::<u64>(), interval_ns in any::<u64>()) {
            let since = Duration::from_nanos(since_ns);
            let interval = Duration::from_nanos(interval_ns);
            let l = lateness(since, interval);
            prop_assert!(l <= since);
        }

        /// For realistic schedules (1 ms to a day, up to a year in) it is within one period.
        #[test]
        fn lateness_is_within_a_period(since_ms in 0u64..31_536_000_000, interval_ms in 1u64..86_400_000) {
            let l = lateness(Duration::from_millis(since_ms), Duration::from_millis(interval_ms));
            prop_assert!(l <= Duration::from_millis(interval_ms));
        }
    }
}
