//! The Kubernetes scale benchmark (`scripts/bench-kube`): N Deployment canaries in one
//! cluster with a 10 s analysis interval, run by Flagger and by aviary — each with its default
//! flags, its own ServiceAccount and a fresh control plane per run — first idle (every canary
//! Initialized, nothing changes), then all analysing at once (a new image for every target).
//!
//! Measured per window:
//! - API requests of the controller per second, from the API server's audit log (the
//!   controller's ServiceAccount is the only audited user; a watch counts once, when it starts),
//!   and per canary per interval;
//! - CPU of kube-apiserver, etcd and the controller (`/proc/PID/stat`), the controller's RSS
//!   (largest `/proc/PID/status` VmRSS sampled every 5 s);
//! - analysis lateness: each canary's `rollout` webhook is called once per analysis tick; the
//!   time between two calls minus the interval (0 when on time) is how late that analysis ran.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aviary_testkit::{Cluster, FakePrometheus, FakeWebhook, Objects, kube_env};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::sides::{self, Launch, Programs, Side};

/// The benchmark's namespace.
const NAMESPACE: &str = "bench";
/// Concurrent object writes while setting up.
const SETUP_CONCURRENCY: usize = 16;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub sides: Vec<Side>,
    pub programs: Programs,
    /// The analysis interval of every canary.
    pub interval: Duration,
    pub idle_window: Duration,
    pub analysis_window: Duration,
    /// How long initialization (or the start of every analysis) may take.
    pub settle_limit: Duration,
    /// Controller logs and `results.json` (rewritten after every run) go here.
    pub logs: PathBuf,
    /// The SVG plot, rewritten after every run.
    pub plot: Option<PathBuf>,
}

/// One measured window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub seconds: f64,
    /// Requests of the controller (audit log), by verb.
    pub by_verb: BTreeMap<String, u64>,
    /// The same by `verb resource[/subresource]`, to see where they go.
    pub by_call: BTreeMap<String, u64>,
    /// Cores used on average.
    pub apiserver_cpu: f64,
    pub etcd_cpu: f64,
    pub controller_cpu: f64,
    /// Largest resident set of the controller seen, MiB.
    pub controller_rss_mib: f64,
    /// The machine's 1-minute load average, mean of the samples taken during the window (the
    /// machine is shared: other work skews CPU and lateness).
    pub machine_load: f64,
}

impl Window {
    pub fn requests(&self) -> u64 {
        self.by_verb.values().sum()
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// How late analyses ran (seconds past the interval).
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    pub gaps: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// One controller at one size.
#[derive(Debug, Clone)]
pub struct Run {
    pub side: Side,
    pub canaries: usize,
    /// Canaries Initialized before the idle window, and how long that took.
    pub initialized: usize,
    pub init_seconds: f64,
    pub idle: Window,
    /// Canaries analysing when the analysis window started, and how long that took.
    pub analysing: usize,
    pub start_seconds: f64,
    pub analysis: Window,
    pub lateness: Lateness,
    pub interval: Duration,
}

impl Run {
    /// Requests per canary per interval in a window.
    pub fn per_canary_interval(&self, w: &Window) -> f64 {
        w.requests_per_second() * self.interval.as_secs_f64() / self.canaries.max(1) as f64
    }
}

/// Runs every side at every size, one after the other (each on its own control plane).
pub async fn run(opts: &Options) -> Result<Vec<Run>> {
    std::fs::create_dir_all(&opts.logs)
        .map_err(|e| Error::io(format!("creating {}", opts.logs.display()), e))?;
    let mut out = Vec::new();
    for &n in &opts.sizes {
        for &side in &opts.sides {
            eprintln!("== {} with {n} canaries", side.name());
            let r = run_one(opts, side, n).await?;
            eprintln!("{}", row(&r));
            eprintln!("   idle requests: {:?}", r.idle.by_call);
            eprintln!("   analysis requests: {:?}", r.analysis.by_call);
            out.push(r);
            save(opts, &out)?;
        }
    }
    Ok(out)
}

/// Writes `results.json` and the plot for the runs so far (a long benchmark keeps what it has),
/// keeping the runs of earlier invocations in the same directory for the other (controller,
/// size) pairs, so points can be measured one at a time.
fn save(opts: &Options, runs: &[Run]) -> Result<()> {
    let results = opts.logs.join("results.json");
    let earlier = std::fs::read_to_string(&results)
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
        .unwrap_or_default();
    let mut runs: Vec<Run> = earlier
        .iter()
        .filter_map(from_json)
        .filter(|e| !runs.iter().any(|r| r.side == e.side && r.canaries == e.canaries))
        .chain(runs.iter().cloned())
        .collect();
    runs.sort_by_key(|r| (r.canaries, r.side.name()));
    let runs = &runs[..];
    let json = serde_json::to_string_pretty(&to_json(runs)).unwrap_or_default();
    std::fs::write(&results, json).map_err(|e| Error::io(format!("writing {}", results.display()), e))?;
    if let Some(plot) = &opts.plot {
        std::fs::write(plot, svg(runs)).map_err(|e| Error::io(format!("writing {}", plot.display()), e))?;
    }
    Ok(())
}

/// Draws the plot again from `results` (a `results.json` of earlier runs), without running.
pub fn replot(results: &std::path::Path, plot: &std::path::Path) -> Result<usize> {
    let text = std::fs::read_to_string(results)
        .map_err(|e| Error::io(format!("reading {}", results.display()), e))?;
    let runs: Vec<Run> = serde_json::from_str::<Vec<Value>>(&text)
        .map_err(|e| Error::io(format!("parsing {}", results.display()), std::io::Error::other(e)))?
        .iter()
        .filter_map(from_json)
        .collect();
    std::fs::write(plot, svg(&runs)).map_err(|e| Error::io(format!("writing {}", plot.display()), e))?;
    Ok(runs.len())
}

async fn run_one(opts: &Options, side: Side, n: usize) -> Result<Run> {
    let started = Instant::now();
    let cluster = Cluster::start().await?;
    let logs = opts.logs.join(format!("{}-{n}", side.name()));
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;
    let kubeconfig = sides::prepare(side, &cluster, &opts.programs, &logs).await?;
    cluster.namespace_named(NAMESPACE).await?;
    let prom = FakePrometheus::start().await?;
    prom.set_default(Some(100.0));
    let hooks = FakeWebhook::start().await?;
    let objects = cluster.objects().await?;
    create_all(&objects, (0..n).map(|i| deployment(i, "example/app:1")).collect()).await?;
    let interval = format!("{}s", opts.interval.as_secs());
    create_all(
        &objects,
        (0..n).map(|i| canary(i, &interval, hooks.url())).collect(),
    )
    .await?;
    eprintln!(
        "   {n} targets and canaries created in {:.0}s",
        started.elapsed().as_secs_f64()
    );

    let controller = sides::start(
        side,
        &opts.programs,
        &Launch {
            kubeconfig: &kubeconfig,
            namespace: None,
            provider: None,
            metrics_server: prom.url(),
            event_webhook: None,
            control_loop_interval: None,
            log: logs.join("controller.log"),
        },
    )?;
    let pids = Pids {
        apiserver: cluster.control_plane().pid("kube-apiserver"),
        etcd: cluster.control_plane().pid("etcd"),
        controller: controller.pid(),
    };
    let audit = cluster.control_plane().audit_log();
    let user = side.user();

    let t = Instant::now();
    let initialized = wait_canaries(&objects, n, opts.settle_limit, |s| s["phase"] == "Initialized").await?;
    let init_seconds = t.elapsed().as_secs_f64();
    eprintln!("   {initialized}/{n} Initialized in {init_seconds:.0}s");
    tokio::time::sleep(opts.interval).await;
    let idle = measure(&pids, &audit, &user, opts.idle_window).await;

    let t = Instant::now();
    let patch = |i: usize| (format!("app-{i}"), image_patch("example/app:2"));
    let patches: Vec<_> = (0..n).map(patch).collect();
    futures::stream::iter(patches)
        .map(|(name, p)| {
            let objects = objects.clone();
            async move {
                objects
                    .merge_patch("apps/v1", "Deployment", Some(NAMESPACE), &name, &p)
                    .await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let analysing = wait_canaries(&objects, n, opts.settle_limit, |s| {
        s["phase"] == "Progressing" && s["canaryWeight"].as_i64().unwrap_or(0) > 0
    })
    .await?;
    let start_seconds = t.elapsed().as_secs_f64();
    eprintln!("   {analysing}/{n} analysing in {start_seconds:.0}s");
    let from = Instant::now();
    let analysis = measure(&pids, &audit, &user, opts.analysis_window).await;
    let lateness = lateness(&hooks.arrivals(), from, Instant::now(), opts.interval);
    drop(controller);
    drop(cluster);
    Ok(Run {
        side,
        canaries: n,
        initialized,
        init_seconds,
        idle,
        analysing,
        start_seconds,
        analysis,
        lateness,
        interval: opts.interval,
    })
}

async fn create_all(objects: &Objects, all: Vec<Value>) -> Result<()> {
    futures::stream::iter(all)
        .map(|o| {
            let objects = objects.clone();
            async move { objects.create(o).await }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn deployment(i: usize, image: &str) -> Value {
    let mut d = kube_env::deployment(&format!("app-{i}"), 1, "app", image);
    d["metadata"]["namespace"] = json!(NAMESPACE);
    d
}

fn image_patch(image: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": image, "ports": [{"containerPort": 9898}]}
    ]}}}})
}

/// A canary with the default provider (Istio for both controllers' default flags), one built-in
/// metric and a rollout webhook (whose calls time the analysis); 50 steps of 2%, so it analyses
/// for longer than the benchmark watches.
fn canary(i: usize, interval: &str, hooks: &str) -> Value {
    let name = format!("app-{i}");
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 3600,
            "service": {"port": 9898},
            "analysis": {
                "interval": interval,
                "threshold": 5,
                "stepWeight": 2,
                "maxWeight": 100,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}],
                "webhooks": [{"name": "load-test", "url": format!("{hooks}/{name}"), "timeout": "5s",
                              "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://app-canary/"}}],
            },
        },
    })
}

/// Polls the canaries until all satisfy `pred` on their status, or the limit; returns how many
/// did.
async fn wait_canaries(
    objects: &Objects,
    n: usize,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let ok = objects
            .list("flagger.app/v1beta1", "Canary", Some(NAMESPACE))
            .await?
            .iter()
            .filter(|c| pred(&c["status"]))
            .count();
        if ok >= n || Instant::now() > deadline {
            return Ok(ok);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct Pids {
    apiserver: Option<u32>,
    etcd: Option<u32>,
    controller: Option<u32>,
}

/// Measures one window.
async fn measure(pids: &Pids, audit: &Path, user: &str, window: Duration) -> Window {
    let from = file_len(audit);
    let cpu = |p: Option<u32>| p.and_then(cpu_seconds);
    let before = (cpu(pids.apiserver), cpu(pids.etcd), cpu(pids.controller));
    let t = Instant::now();
    let mut rss: f64 = 0.0;
    let mut loads = Vec::new();
    while t.elapsed() < window {
        if let Some(r) = pids.controller.and_then(rss_mib) {
            rss = rss.max(r);
        }
        loads.extend(load_average());
        tokio::time::sleep(Duration::from_secs(5).min(window.saturating_sub(t.elapsed()))).await;
    }
    let seconds = t.elapsed().as_secs_f64();
    let to = file_len(audit);
    if to < from {
        eprintln!("   the audit log shrank during the window (rotated?): its requests are not counted");
    }
    let after = (cpu(pids.apiserver), cpu(pids.etcd), cpu(pids.controller));
    let used = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (b - a) / seconds,
        _ => f64::NAN,
    };
    if let Some(r) = pids.controller.and_then(rss_mib) {
        rss = rss.max(r);
    }
    let (by_verb, by_call) = requests(audit, from, to, user);
    Window {
        seconds,
        by_verb,
        by_call,
        apiserver_cpu: used(before.0, after.0),
        etcd_cpu: used(before.1, after.1),
        controller_cpu: used(before.2, after.2),
        controller_rss_mib: rss,
        machine_load: loads.iter().sum::<f64>() / loads.len().max(1) as f64,
    }
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Request counts by key.
type Counts = BTreeMap<String, u64>;

/// The user's requests in bytes `from..to` of the audit log, by verb and by verb and resource.
/// Every request is logged when it completes; a watch when it starts (`ResponseStarted`) and
/// again when it ends, so a watch is counted at its start only.
fn requests(audit: &Path, from: u64, to: u64, user: &str) -> (Counts, Counts) {
    let (mut out, mut calls) = (Counts::new(), Counts::new());
    let Ok(mut f) = std::fs::File::open(audit) else {
        return (out, calls);
    };
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err()
        || f.take(to.saturating_sub(from)).read_to_end(&mut bytes).is_err()
    {
        return (out, calls);
    }
    // The window's ends may cut a line (or a character) in two: that line is skipped below.
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e["user"]["username"] != user {
            continue;
        }
        let verb = e["verb"].as_str().unwrap_or("?");
        let stage = e["stage"].as_str().unwrap_or("");
        let counted = if verb == "watch" {
            stage == "ResponseStarted"
        } else {
            stage == "ResponseComplete" || stage == "Panic"
        };
        if counted {
            *out.entry(verb.to_string()).or_default() += 1;
            let r = &e["objectRef"];
            let mut call = format!("{verb} {}", r["resource"].as_str().unwrap_or("?"));
            if let Some(sub) = r["subresource"].as_str() {
                call = format!("{call}/{sub}");
            }
            *calls.entry(call).or_default() += 1;
        }
    }
    (out, calls)
}

/// Clock ticks per second for `/proc/PID/stat`.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Lateness of the analyses whose webhook call came between `from` and `to`: per canary, the
/// time since its previous call minus the interval (never below 0).
pub fn lateness(arrivals: &[(String, Instant)], from: Instant, to: Instant, interval: Duration) -> Lateness {
    let mut by_canary: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for (path, at) in arrivals {
        by_canary.entry(path.as_str()).or_default().push(*at);
    }
    let mut late: Vec<f64> = Vec::new();
    for times in by_canary.values_mut() {
        times.sort();
        for w in times.windows(2) {
            if w[1] >= from && w[1] <= to {
                late.push((w[1] - w[0]).as_secs_f64() - interval.as_secs_f64());
            }
        }
    }
    let mut late: Vec<f64> = late.into_iter().map(|l| l.max(0.0)).collect();
    late.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if late.is_empty() {
            f64::NAN
        } else {
            late[((late.len() - 1) as f64 * p).round() as usize]
        }
    };
    Lateness {
        gaps: late.len(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: late.last().copied().unwrap_or(f64::NAN),
    }
}

/// One line of the results table.
pub fn row(r: &Run) -> String {
    format!(
        "{:8} {:6} | load {:4.1}/{:4.1} | idle {} | analysing ({}/{} after {:.0}s) {}, lateness p50 {:.2}s p99 {:.2}s max {:.2}s ({} analyses)",
        r.side.name(),
        r.canaries,
        r.idle.machine_load,
        r.analysis.machine_load,
        window_columns(r, &r.idle),
        r.analysing,
        r.canaries,
        r.start_seconds,
        window_columns(r, &r.analysis),
        r.lateness.p50,
        r.lateness.p99,
        r.lateness.max,
        r.lateness.gaps,
    )
}

/// The columns the table shows for each window, idle and analysing alike.
fn window_columns(r: &Run, w: &Window) -> String {
    format!(
        "{:7.1} req/s {:5.2} req/canary/interval, apiserver {:4.2} etcd {:4.2} controller {:4.2} cores, RSS {:6.1} MiB",
        w.requests_per_second(),
        r.per_canary_interval(w),
        w.apiserver_cpu,
        w.etcd_cpu,
        w.controller_cpu,
        w.controller_rss_mib,
    )
}

/// The results as JSON (for the record beside the plot).
pub fn to_json(runs: &[Run]) -> Value {
    let window = |w: &Window, r: &Run| {
        json!({
            "seconds": w.seconds,
            "requests_by_verb": w.by_verb,
            "requests_by_call": w.by_call,
            "requests_per_second": w.requests_per_second(),
            "requests_per_canary_per_interval": r.per_canary_interval(w),
            "apiserver_cores": w.apiserver_cpu,
            "etcd_cores": w.etcd_cpu,
            "controller_cores": w.controller_cpu,
            "controller_rss_mib": w.controller_rss_mib,
            "machine_load": w.machine_load,
        })
    };
    json!(runs
        .iter()
        .map(|r| json!({
            "controller": r.side.name(),
            "canaries": r.canaries,
            "interval_seconds": r.interval.as_secs(),
            "initialized": r.initialized,
            "initialization_seconds": r.init_seconds,
            "idle": window(&r.idle, r),
            "analysing": r.analysing,
            "analysis_start_seconds": r.start_seconds,
            "analysis": window(&r.analysis, r),
            "lateness_seconds": {"analyses": r.lateness.gaps, "p50": r.lateness.p50, "p99": r.lateness.p99, "max": r.lateness.max},
        }))
        .collect::<Vec<_>>())
}

/// A run back from [`to_json`] (`None` when it is not one).
pub fn from_json(v: &Value) -> Option<Run> {
    let window = |w: &Value| -> Option<Window> {
        let counts = |c: &Value| -> Counts {
            c.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
        Some(Window {
            seconds: w["seconds"].as_f64()?,
            by_verb: counts(&w["requests_by_verb"]),
            by_call: counts(&w["requests_by_call"]),
            apiserver_cpu: f("apiserver_cores"),
            etcd_cpu: f("etcd_cores"),
            controller_cpu: f("controller_cores"),
            controller_rss_mib: f("controller_rss_mib"),
            machine_load: f("machine_load"),
        })
    };
    let side = Side::BOTH.into_iter().find(|s| v["controller"] == s.name())?;
    let late = &v["lateness_seconds"];
    let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    Some(Run {
        side,
        canaries: usize::try_from(v["canaries"].as_u64()?).ok()?,
        initialized: usize::try_from(v["initialized"].as_u64()?).ok()?,
        init_seconds: f(&v["initialization_seconds"]),
        idle: window(&v["idle"])?,
        analysing: usize::try_from(v["analysing"].as_u64()?).ok()?,
        start_seconds: f(&v["analysis_start_seconds"]),
        analysis: window(&v["analysis"])?,
        lateness: Lateness {
            gaps: usize::try_from(late["analyses"].as_u64()?).ok()?,
            p50: f(&late["p50"]),
            p99: f(&late["p99"]),
            max: f(&late["max"]),
        },
        interval: Duration::from_secs(v["interval_seconds"].as_u64()?),
    })
}

/// A chart's title and its lines (controller, label, points).
type Chart<'a> = (&'a str, Vec<(Side, &'a str, Vec<(f64, f64)>)>);

/// An SVG with two charts over the number of canaries: API requests per canary per interval
/// (idle and analysing), and p99 analysis lateness; one colour per controller.
pub fn svg(runs: &[Run]) -> String {
    let series = |side: Side, f: &dyn Fn(&Run) -> f64| -> Vec<(f64, f64)> {
        runs.iter()
            .filter(|r| r.side == side)
            .map(|r| (r.canaries as f64, f(r)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let colour = |s: Side| match s {
        Side::Flagger => "#c0392b",
        Side::Aviary => "#2471a3",
    };
    let mut out = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="960" height="380" font-family="sans-serif" font-size="12">
<rect width="960" height="380" fill="white"/>
"##,
    );
    let charts: [Chart<'_>; 2] = [
        (
            "API requests per canary per interval",
            Side::BOTH
                .iter()
                .flat_map(|&s| {
                    [
                        (s, "idle", series(s, &|r| r.per_canary_interval(&r.idle))),
                        (s, "analysing", series(s, &|r| r.per_canary_interval(&r.analysis))),
                    ]
                })
                .collect(),
        ),
        (
            "p99 analysis lateness (s)",
            Side::BOTH
                .iter()
                .map(|&s| (s, "", series(s, &|r| r.lateness.p99)))
                .collect(),
        ),
    ];
    for (k, (title, lines)) in charts.iter().enumerate() {
        let (x0, y0, w, h) = (60.0 + k as f64 * 480.0, 40.0, 380.0, 270.0);
        let xmax = runs.iter().map(|r| r.canaries as f64).fold(1.0, f64::max);
        let ymax = lines
            .iter()
            .flat_map(|(_, _, pts)| pts.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(0.1)
            * 1.1;
        let px = |x: f64| x0 + x / xmax * w;
        let py = |y: f64| y0 + h - y / ymax * h;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">{title}</text>\n",
            x0
        ));
        out.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"black\"/>\n",
            y0 + h,
            x0 + w,
            y0 + h,
            y0 + h
        ));
        for i in 0..=4 {
            let y = ymax * i as f64 / 4.0;
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
                x0 - 6.0,
                py(y) + 4.0,
                short(y),
                py(y),
                x0 + w,
                py(y)
            ));
        }
        let mut xs: Vec<f64> = runs.iter().map(|r| r.canaries as f64).collect();
        xs.dedup();
        for x in xs {
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x}</text>\n",
                px(x),
                y0 + h + 16.0
            ));
        }
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">canaries</text>\n",
            x0 + w / 2.0,
            y0 + h + 34.0
        ));
        for (j, (side, label, pts)) in lines.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let dash = if *label == "idle" {
                " stroke-dasharray=\"5,4\""
            } else {
                ""
            };
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            out.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\n",
                path.join(" "),
                colour(*side)
            ));
            for (x, y) in pts {
                out.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>\n",
                    px(*x),
                    py(*y),
                    colour(*side)
                ));
            }
            let name = if label.is_empty() {
                side.name().to_string()
            } else {
                format!("{} {label}", side.name())
            };
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{}\">{name}</text>\n",
                x0 + 10.0,
                y0 + 14.0 + j as f64 * 15.0,
                colour(*side)
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_the_gap_past_the_interval() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let calls = vec![
            ("/a".to_string(), at(0.0)),
            ("/a".to_string(), at(10.0)),
            ("/a".to_string(), at(23.0)),
            ("/b".to_string(), at(5.0)),
            ("/b".to_string(), at(15.5)),
        ];
        let l = lateness(&calls, at(1.0), at(30.0), Duration::from_secs(10));
        assert_eq!(l.gaps, 3);
        assert!((l.max - 3.0).abs() < 1e-6, "{l:?}");
        assert!((l.p50 - 0.5).abs() < 1e-6, "{l:?}");
    }

    #[test]
    fn results_read_back_as_written() {
        let window = Window {
            seconds: 30.0,
            by_verb: [("get".to_string(), 7)].into(),
            by_call: [("get deployments".to_string(), 7)].into(),
            apiserver_cpu: 0.5,
            etcd_cpu: f64::NAN,
            controller_cpu: 0.1,
            controller_rss_mib: 50.0,
            machine_load: 3.5,
        };
        let run = Run {
            side: Side::Aviary,
            canaries: 100,
            initialized: 100,
            init_seconds: 12.0,
            idle: window.clone(),
            analysing: 99,
            start_seconds: 20.0,
            analysis: window,
            lateness: Lateness {
                gaps: 300,
                p50: 0.0,
                p99: 0.2,
                max: 0.3,
            },
            interval: Duration::from_secs(10),
        };
        let json = to_json(std::slice::from_ref(&run));
        let back: Vec<Run> = json.as_array().unwrap().iter().filter_map(from_json).collect();
        assert_eq!(back.len(), 1);
        assert_eq!(to_json(&back), json);
    }
}
