//! Agent scale: N canaries (default 10,000) on one agent with cheap shared ports and a 10 s
//! analysis interval, every canary in an active analysis. Reports resident memory per canary
//! and timer lateness (how late each tick starts against its schedule).
//!
//!     cargo bench -p aviary-actors --bench agent_scale            # or scripts/bench-agent-scale
//!     CANARIES=10000 INTERVALS=6 cargo bench -p aviary-actors --bench agent_scale

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aviary_actors::{CanaryActors, CanaryPorts, Platform, Settings, TickReport};
use aviary_api::document::parse_canary;
use aviary_api::{Canary, CanaryPhase, CanaryStatus, MetricTemplate};
use aviary_core::ports::*;
use aviary_core::simulate::world::{ScriptedHooks, SilentNotifier, SimulatedTarget};
use parking_lot::Mutex;

/// One set of ports shared by every canary, with per-canary state where the engine needs it.
#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Routes>>,
    /// The last phase of each canary (the fake keeps no more: its memory is not the agent's).
    phases: Mutex<HashMap<String, CanaryPhase>>,
    events: AtomicU64,
}

struct P(Arc<Shared>);

#[async_trait]
impl Router for P {
    async fn reconcile(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn set_routes(&self, c: &Canary, r: &Routes) -> Result<(), String> {
        self.0.routes.lock().insert(c.key(), r.clone());
        Ok(())
    }
    async fn get_routes(&self, c: &Canary) -> Result<Routes, String> {
        Ok(self
            .0
            .routes
            .lock()
            .get(&c.key())
            .cloned()
            .unwrap_or_else(|| Routes::split(100, 0)))
    }
}

#[async_trait]
impl Metrics for P {
    async fn check_providers(&self, _c: &Canary) -> Result<(), String> {
        Ok(())
    }
    async fn builtin(&self, _c: &Canary, _m: BuiltinMetric, _model: &MetricModel) -> MetricResult {
        Ok(100.0)
    }
    async fn template(&self, _ns: &str, name: &str) -> Result<MetricTemplate, String> {
        Err(format!("no template {name}"))
    }
    async fn query(&self, _q: TemplateQuery<'_>) -> MetricResult {
        Ok(0.0)
    }
    async fn inline(&self, _c: &Canary, _m: &str, _q: &str) -> MetricResult {
        Ok(0.0)
    }
}

#[async_trait]
impl Recorder for P {
    async fn status(&self, c: &Canary, s: &CanaryStatus) -> Result<(), String> {
        self.0.phases.lock().insert(c.key(), s.phase);
        Ok(())
    }
    async fn event(&self, _c: &Canary, _k: EventType, _m: &str) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

struct BenchPlatform {
    ports: CanaryPorts,
}

#[async_trait]
impl Platform for BenchPlatform {
    fn ports(&self, _c: &Canary) -> CanaryPorts {
        self.ports.clone()
    }
    async fn load_status(&self, _c: &Canary) -> Option<CanaryStatus> {
        None
    }
}

fn template_canary() -> Canary {
    let yaml = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: x, namespace: bench}\nspec:\n  provider: istio\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  service: {port: 9898}\n  analysis:\n    interval: 10s\n    threshold: 5\n    maxWeight: 100\n    stepWeight: 1\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n      interval: 1m\n";
    parse_canary(yaml).unwrap()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("CANARIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let intervals: u64 = std::env::var("INTERVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let shared = Arc::new(Shared::default());
        let p = Arc::new(P(shared.clone()));
        // Always ready, presenting the revision the bench sets; webhooks pass; no alerts.
        let target = SimulatedTarget::default();
        target.set_revision("rev-1");
        let ports = CanaryPorts {
            target: Arc::new(target.clone()),
            router: p.clone(),
            metrics: p.clone(),
            hooks: Arc::new(ScriptedHooks::default()),
            notifier: Arc::new(SilentNotifier),
            recorder: p.clone(),
            gate: CanaryPorts::no_gate(),
        };
        let lateness: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(n * (intervals as usize + 2))));
        let measuring = Arc::new(AtomicBool::new(false));
        let (l, m) = (lateness.clone(), measuring.clone());
        let settings = Settings {
            name_prefix: "bench".into(),
            on_tick: Some(Arc::new(move |r: &TickReport| {
                if m.load(Ordering::Relaxed) {
                    l.lock().push(r.lateness.as_micros() as u64);
                }
            })),
            ..Settings::default()
        };
        let template = template_canary();
        let base_rss = rss_bytes();
        let agent = CanaryActors::start(Arc::new(BenchPlatform { ports }), settings).await.unwrap();
        let spawn = Instant::now();
        for i in 0..n {
            let mut c = template.clone();
            c.metadata.name = Some(format!("canary-{i:05}"));
            c.spec.target_ref.as_mut().unwrap().name = Some(format!("app-{i:05}"));
            agent.apply(c).unwrap();
        }
        // every canary ticks once at start: wait until all are Initialized
        loop {
            let done = shared.phases.lock().values().filter(|p| **p == CanaryPhase::Initialized).count();
            if done == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spawned = spawn.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_bytes();
        // a new revision everywhere: every canary is in an active analysis from now on
        target.set_revision("rev-2");
        tokio::time::sleep(Duration::from_secs(10)).await;
        measuring.store(true, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(10 * intervals)).await;
        measuring.store(false, Ordering::Relaxed);
        let measured = start.elapsed();
        let rss = rss_bytes();
        let progressing = shared.phases.lock().values().filter(|p| **p == CanaryPhase::Progressing).count();
        let mut lat = lateness.lock().clone();
        lat.sort_unstable();
        let per = (rss.saturating_sub(base_rss)) as f64 / n as f64 / 1024.0;
        println!("agent scale: {n} canaries, 10s interval, {workers} tokio workers, {intervals} intervals measured");
        println!("  spawn + first tick of all canaries: {:.2}s", spawned.as_secs_f64());
        println!("  canaries progressing at the end:   {progressing}");
        println!("  ticks measured:                     {} ({:.0}/s)", lat.len(), lat.len() as f64 / measured.as_secs_f64());
        println!("  events emitted (total):             {}", shared.events.load(Ordering::Relaxed));
        println!("  RSS before: {:.1} MiB, after: {:.1} MiB", base_rss as f64 / 1048576.0, rss as f64 / 1048576.0);
        println!(
            "  resident memory per canary:         {per:.1} KiB analysing ({:.1} KiB idle after initialization)",
            (idle_rss.saturating_sub(base_rss)) as f64 / n as f64 / 1024.0
        );
        println!(
            "  timer lateness p50 / p99 / max:     {:.2} / {:.2} / {:.2} ms",
            percentile(&lat, 0.50) as f64 / 1000.0,
            percentile(&lat, 0.99) as f64 / 1000.0,
            lat.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        agent.stop().await;
    });
}
