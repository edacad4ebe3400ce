//! The actor runtime with fake ports and tokio's paused clock: one actor per canary, ticks on
//! the interval, updates, deletion, panic-and-resume, and isolation of slow canaries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_actors::{CanaryActors, CanaryPorts, Clock, Platform, Settings};
use aviary_api::document::parse_canary;
use aviary_api::{Canary, CanaryPhase, CanaryStatus};
use aviary_core::fakes::{Fakes, Panics};
use parking_lot::Mutex;
use tokio::time::sleep;

fn canary(name: &str, interval: &str, step: i32) -> Canary {
    let yaml = format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  provider: istio\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n  service: {{port: 9898}}\n  analysis:\n    interval: {interval}\n    threshold: 2\n    stepWeight: {step}\n    webhooks:\n    - {{name: load, url: http://load/}}\n"
    );
    parse_canary(&yaml).unwrap()
}

/// One set of fakes per canary; the persisted status is what the fake recorder saw last.
#[derive(Default)]
struct TestPlatform {
    fakes: Mutex<HashMap<String, Fakes>>,
}

impl TestPlatform {
    fn fakes(&self, key: &str) -> Fakes {
        self.fakes.lock().entry(key.to_string()).or_default().clone()
    }
}

#[async_trait]
impl Platform for TestPlatform {
    fn ports(&self, canary: &Canary) -> CanaryPorts {
        let f = self.fakes(&canary.key());
        CanaryPorts {
            target: Arc::new(f.target.clone()),
            router: Arc::new(f.router.clone()),
            metrics: Arc::new(f.metrics.clone()),
            hooks: Arc::new(f.hooks.clone()),
            notifier: Arc::new(f.notifier.clone()),
            recorder: Arc::new(f.recorder.clone()),
            gate: Arc::new(f.gate.clone()),
        }
    }
    async fn load_status(&self, canary: &Canary) -> Option<CanaryStatus> {
        self.fakes(&canary.key()).recorder.last_status()
    }
}

/// These tests count ticks from the start (a tick at 0, then one every interval), so they
/// turn the spreading of tick phases off; `canaries_discovered_together_tick_apart` tests it.
fn settings(prefix: &str) -> Settings {
    Settings {
        name_prefix: prefix.into(),
        clock: Clock::tokio(jiff::Timestamp::from_second(1_767_225_600).unwrap()),
        spread_ticks: false,
        ..Settings::default()
    }
}

/// An agent whose actors for `canaries` have started (10 ms of paused time after applying).
async fn agent_with(platform: &Arc<TestPlatform>, settings: Settings, canaries: &[Canary]) -> CanaryActors {
    let agent = CanaryActors::start(platform.clone(), settings).await.unwrap();
    for c in canaries {
        agent.apply(c.clone()).unwrap();
    }
    sleep(Duration::from_millis(10)).await;
    agent
}

/// An agent with the one canary `c` (namespace `test`) whose target presents `rev-2`: a
/// rollout under way.
async fn rolling_out(settings: Settings, c: Canary) -> (Arc<TestPlatform>, CanaryActors, Fakes) {
    let platform = Arc::new(TestPlatform::default());
    let key = c.key();
    let agent = agent_with(&platform, settings, &[c]).await;
    let fakes = platform.fakes(&key);
    fakes.target.set_revision("rev-2");
    (platform, agent, fakes)
}

async fn status(agent: &CanaryActors, key: &str) -> CanaryStatus {
    let views = agent.list().await.unwrap();
    views
        .into_iter()
        .find(|v| v.canary.key() == key)
        .and_then(|v| v.canary.status)
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn one_actor_per_canary_ticks_on_its_interval() {
    let platform = Arc::new(TestPlatform::default());
    let podinfo = canary("podinfo", "30s", 25);
    // the same canary twice: still one actor
    let agent = agent_with(&platform, settings("t1"), &[podinfo.clone(), podinfo]).await;
    assert_eq!(
        status(&agent, "test/podinfo").await.phase,
        CanaryPhase::Initialized
    );
    assert!(ractor::registry::where_is("t1/test/podinfo").is_some());
    assert_eq!(agent.list().await.unwrap().len(), 1);

    let fakes = platform.fakes("test/podinfo");
    fakes.target.set_revision("rev-2");
    sleep(Duration::from_secs(30)).await; // Progressing
    assert_eq!(
        status(&agent, "test/podinfo").await.phase,
        CanaryPhase::Progressing
    );
    sleep(Duration::from_secs(60)).await; // 25, 50
    assert_eq!(status(&agent, "test/podinfo").await.canary_weight, 50);
    sleep(Duration::from_secs(30 * 5)).await;
    assert_eq!(status(&agent, "test/podinfo").await.phase, CanaryPhase::Succeeded);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spec_changes_reach_the_actor_and_delete_stops_it() {
    let (_platform, agent, fakes) = rolling_out(settings("t2"), canary("podinfo", "30s", 10)).await;
    sleep(Duration::from_secs(60)).await; // Progressing, then 10
    assert_eq!(status(&agent, "test/podinfo").await.canary_weight, 10);

    // a larger step and a shorter interval apply on the next ticks, status kept
    agent.apply(canary("podinfo", "10s", 40)).unwrap();
    sleep(Duration::from_secs(11)).await;
    assert_eq!(status(&agent, "test/podinfo").await.canary_weight, 50);

    agent.remove("test", "podinfo").unwrap();
    sleep(Duration::from_millis(10)).await;
    assert!(ractor::registry::where_is("t2/test/podinfo").is_none());
    let statuses = fakes.recorder.statuses().len();
    sleep(Duration::from_secs(120)).await;
    assert_eq!(
        fakes.recorder.statuses().len(),
        statuses,
        "a deleted canary must not tick"
    );
    assert!(agent.list().await.unwrap().is_empty());
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_actor_is_restarted_and_resumes_from_the_persisted_status() {
    let (_platform, agent, fakes) = rolling_out(settings("t3"), canary("podinfo", "30s", 20)).await;
    sleep(Duration::from_secs(90)).await; // Progressing, 20, 40
    assert_eq!(status(&agent, "test/podinfo").await.canary_weight, 40);

    fakes.target.panic_in_revision(Panics::Once);
    sleep(Duration::from_secs(30)).await; // the tick panics; the supervisor restarts the actor
    let views = agent.list().await.unwrap();
    assert_eq!(views[0].restarts, 1);
    assert!(ractor::registry::where_is("t3/test/podinfo").is_some());
    // the new actor resumed at the persisted weight and keeps going
    let s = status(&agent, "test/podinfo").await;
    assert_eq!(
        (s.phase, s.canary_weight),
        (CanaryPhase::Progressing, 60),
        "{s:?}"
    );
    sleep(Duration::from_secs(30 * 6)).await;
    assert_eq!(status(&agent, "test/podinfo").await.phase, CanaryPhase::Succeeded);
    assert_eq!(fakes.target.primary_revision().as_deref(), Some("rev-2"));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_webhook_delays_only_its_own_canary() {
    let platform = Arc::new(TestPlatform::default());
    let canaries = [canary("slow", "10s", 10), canary("fast", "10s", 10)];
    let agent = agent_with(&platform, settings("t4"), &canaries).await;
    let slow = platform.fakes("test/slow");
    let fast = platform.fakes("test/fast");
    slow.hooks.set_delay(Some(Duration::from_secs(600)));
    slow.target.set_revision("rev-2");
    fast.target.set_revision("rev-2");
    sleep(Duration::from_secs(10 * 14)).await;
    assert_eq!(status(&agent, "test/fast").await.phase, CanaryPhase::Succeeded);
    let s = status(&agent, "test/slow").await;
    assert_eq!(s.phase, CanaryPhase::Progressing);
    assert!(
        s.canary_weight <= 10,
        "the slow canary is stuck in its webhook: {s:?}"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_canary_that_keeps_panicking_is_given_up_and_the_others_keep_running() {
    let platform = Arc::new(TestPlatform::default());
    platform
        .fakes("test/bad")
        .target
        .panic_in_revision(Panics::Always);
    let mut s = settings("t5");
    s.max_restarts = 2;
    let canaries = [canary("good", "10s", 50), canary("bad", "10s", 50)];
    let agent = agent_with(&platform, s, &canaries).await;
    platform.fakes("test/good").target.set_revision("rev-2");
    sleep(Duration::from_secs(60)).await;
    let views = agent.list().await.unwrap();
    let bad = views.iter().find(|v| v.canary.key() == "test/bad").unwrap();
    assert_eq!(bad.restarts, 2);
    assert!(
        bad.failure
            .as_deref()
            .unwrap_or("")
            .contains("actor failed 2 times"),
        "{:?}",
        bad.failure
    );
    assert!(ractor::registry::where_is("t5/test/bad").is_none());
    let good = views.iter().find(|v| v.canary.key() == "test/good").unwrap();
    assert_eq!(good.canary.status.as_ref().unwrap().phase, CanaryPhase::Succeeded);
    // a spec change gives the failed canary a fresh start
    platform.fakes("test/bad").target.panic_in_revision(Panics::Never);
    agent.apply(canary("bad", "10s", 25)).unwrap();
    sleep(Duration::from_millis(10)).await;
    assert!(ractor::registry::where_is("t5/test/bad").is_some());
    agent.stop().await;
}

/// `interval: 0s` used to reach `Duration::mul_f64` with NaN and panic on every tick, restarting
/// the actor forever. Validation refuses it; an agent that gets one anyway (a zero floor, a
/// spec that skipped validation) ticks at the default interval instead.
#[tokio::test(start_paused = true)]
async fn a_zero_interval_with_a_zero_floor_never_panics() {
    let zero_floor = Settings {
        min_interval: Duration::ZERO,
        ..settings("t-zero")
    };
    let (_platform, agent, _) = rolling_out(zero_floor, canary("podinfo", "0s", 50)).await;
    sleep(Duration::from_secs(60 * 10)).await;
    let views = agent.list().await.unwrap();
    assert_eq!(views[0].restarts, 0, "the actor must not panic");
    assert_eq!(status(&agent, "test/podinfo").await.phase, CanaryPhase::Succeeded);
    agent.stop().await;
}

/// Canaries discovered in the same instant (an agent starting with its cluster's canaries) tick
/// together once, then at phases spread over the interval, each keeping its own interval:
/// their API writes reach the server as a stream instead of one burst per interval.
#[tokio::test(start_paused = true)]
async fn canaries_discovered_together_tick_apart() {
    let ticks: Arc<Mutex<Vec<(String, tokio::time::Instant)>>> = Arc::default();
    let seen = ticks.clone();
    let platform = Arc::new(TestPlatform::default());
    let agent = CanaryActors::start(
        platform.clone(),
        Settings {
            spread_ticks: true,
            on_tick: Some(Arc::new(move |r: &aviary_actors::TickReport| {
                seen.lock().push((r.key.clone(), tokio::time::Instant::now()));
            })),
            ..settings("t-spread")
        },
    )
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    for i in 0..40 {
        agent.apply(canary(&format!("app-{i}"), "10s", 10)).unwrap();
    }
    sleep(Duration::from_secs(35)).await;
    agent.stop().await;

    let ticks = ticks.lock().clone();
    let mut by_canary: HashMap<String, Vec<f64>> = HashMap::new();
    for (key, at) in ticks {
        by_canary.entry(key).or_default().push((at - start).as_secs_f64());
    }
    assert_eq!(by_canary.len(), 40);
    let mut second_ticks = Vec::new();
    for (key, at) in &by_canary {
        assert!(at[0] < 0.5, "{key}: the first tick is immediate: {at:?}");
        assert!(
            (5.5..=15.5).contains(&at[1]),
            "{key}: the second tick is spread: {at:?}"
        );
        for w in at[1..].windows(2) {
            assert!(
                (w[1] - w[0] - 10.0).abs() < 0.5,
                "{key}: then one every interval: {at:?}"
            );
        }
        second_ticks.push((at[1] * 10.0).round() as i64);
    }
    second_ticks.sort_unstable();
    second_ticks.dedup();
    assert!(
        second_ticks.len() >= 25,
        "40 canaries should tick at many different instants, not in one burst: {second_ticks:?}"
    );
}
