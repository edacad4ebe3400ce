//! `CanaryActor`: one canary, its timer, its ports and its last status. Each timer tick runs
//! one engine tick; ticks of one canary never overlap, and a slow webhook or query delays only
//! this canary (other canaries are other actors).

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

fn start_timer(myself: &ActorRef<CanaryMsg>, interval: Duration) -> TimerGuard {
    // tokio's interval panics on a zero period; `analysis_interval` never returns one, and this
    // keeps a future caller from turning a bad spec into a panic loop.
    let interval = interval.max(Duration::from_millis(1));
    TimerGuard(myself.send_interval(interval, || CanaryMsg::Tick))
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
        let timer = start_timer(&myself, interval);
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
            schedule_start: Instant::now(),
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
                    state._timer = start_timer(&myself, interval);
                    state.schedule_start = Instant::now();
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
    use super::lateness;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn lateness_against_the_nearest_tick() {
        let s = Duration::from_secs;
        assert_eq!(lateness(s(31), s(10)), s(1));
        assert_eq!(lateness(s(29), s(10)), Duration::ZERO);
        assert_eq!(lateness(s(5), Duration::ZERO), Duration::ZERO);
    }

    proptest! {
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
