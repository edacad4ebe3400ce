//! The bounded soak (`scripts/soak`): one `aviary agent --local` with N canaries (real
//! sample-app processes behind the local router) and one `aviary coordinator` rolling releases
//! of a few of them continuously, on loopback, for a fixed duration. Every 10 s it samples the
//! resident memory and the open file descriptors of the agent and the coordinator; after the
//! warm-up (the first third) neither may grow: the least-squares line through the last two
//! thirds may rise by at most [`Limit`] over that window.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aviary_testkit::aviary::{Pki, cli, start_coordinator};
use aviary_testkit::manifests::LocalCanary;
use aviary_testkit::net::{curl_json, free_port};
use aviary_testkit::netns::Host;
use aviary_testkit::process::{Log, Process, descendants};
use aviary_testkit::traffic::Traffic;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The cluster (and region) name of the soak's agent.
const CLUSTER: &str = "soak";

/// What a soak run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The aviary binary.
    pub aviary: PathBuf,
    /// Canaries on the agent.
    pub canaries: usize,
    /// How many of them are rolled continuously (one rollout after another each).
    pub rolled: usize,
    /// How long releases are rolled.
    pub duration: Duration,
    /// Sampling period.
    pub every: Duration,
    /// How long the agent may take until every canary is Initialized.
    pub settle_limit: Duration,
    /// Logs, samples and results.json.
    pub out: PathBuf,
    /// The SVG plot.
    pub plot: Option<PathBuf>,
}

/// One sample of both processes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the rollouts began.
    pub t: f64,
    pub agent_rss_mib: f64,
    pub agent_fds: f64,
    pub coordinator_rss_mib: f64,
    pub coordinator_fds: f64,
    /// The agent's descendant processes (sample-app replicas).
    pub agent_children: f64,
    /// Rollouts ended so far.
    pub rollouts: u64,
}

/// How much a series may grow over the measured window (the line's rise): the larger of a
/// share of its mean and an absolute floor.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub share: f64,
    pub floor: f64,
}

/// Resident memory: 5% of the mean or 4 MiB. File descriptors: 2% of the mean or 8 (a rollout
/// in flight holds a few pipes and sockets).
pub const RSS_LIMIT: Limit = Limit {
    share: 0.05,
    floor: 4.0,
};
pub const FD_LIMIT: Limit = Limit {
    share: 0.02,
    floor: 8.0,
};

/// The verdict on one series.
#[derive(Debug, Clone)]
pub struct Trend {
    pub name: &'static str,
    pub unit: &'static str,
    pub first: f64,
    pub last: f64,
    pub mean: f64,
    pub max: f64,
    /// The fitted line's rise over the measured window.
    pub rise: f64,
    pub allowed: f64,
}

impl Trend {
    pub fn pass(&self) -> bool {
        self.rise <= self.allowed
    }
}

/// Slope of the least-squares line through `points` (0 for fewer than two points).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The trend of one series over the samples after the warm-up (the first third of the run).
pub fn trend(
    samples: &[Sample],
    name: &'static str,
    unit: &'static str,
    pick: fn(&Sample) -> f64,
    limit: Limit,
) -> Trend {
    let end = samples.last().map_or(0.0, |s| s.t);
    let window: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= end / 3.0)
        .map(|s| (s.t, pick(s)))
        .collect();
    let ys = || window.iter().map(|p| p.1);
    let mean = ys().sum::<f64>() / window.len().max(1) as f64;
    let span = window.last().map_or(0.0, |p| p.0) - window.first().map_or(0.0, |p| p.0);
    Trend {
        name,
        unit,
        first: window.first().map_or(0.0, |p| p.1),
        last: window.last().map_or(0.0, |p| p.1),
        mean,
        max: ys().fold(0.0, f64::max),
        rise: slope(&window) * span,
        allowed: (limit.share * mean).max(limit.floor),
    }
}

/// The four verdicts of a run.
pub fn trends(samples: &[Sample]) -> Vec<Trend> {
    vec![
        trend(samples, "agent RSS", "MiB", |s| s.agent_rss_mib, RSS_LIMIT),
        trend(samples, "agent fds", "", |s| s.agent_fds, FD_LIMIT),
        trend(
            samples,
            "coordinator RSS",
            "MiB",
            |s| s.coordinator_rss_mib,
            RSS_LIMIT,
        ),
        trend(samples, "coordinator fds", "", |s| s.coordinator_fds, FD_LIMIT),
    ]
}

/// Resident memory of `pid` in MiB and its open file descriptors.
fn usage(pid: u32) -> (f64, f64) {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss_kib / 1024.0, fds as f64)
}

/// `n` free loopback ports below the kernel's ephemeral range (from 20000): the replicas the
/// agent starts take ephemeral ports, and a thousand routers on ephemeral ports chosen in
/// advance would collide with them.
fn service_ports(n: usize) -> Result<Vec<u16>> {
    let ports: Vec<u16> = (20_000..32_768)
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .take(n)
        .collect();
    if ports.len() < n {
        return Err(Error::Bench(format!(
            "only {} free ports in 20000-32767, {n} needed",
            ports.len()
        )));
    }
    Ok(ports)
}

/// The agent's config directory: canary `soak-I` serves on its own port; the rolled ones are
/// analysed every second, the others every 10 s.
fn write_canaries(opts: &Options, dir: &Path) -> Result<Vec<(String, u16)>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let bin = opts.aviary.to_string_lossy();
    service_ports(opts.canaries)?
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("soak-{i}");
            let yaml = LocalCanary {
                name: name.clone(),
                interval: if i < opts.rolled { "1s" } else { "10s" }.into(),
                metric_interval: "5s".into(),
                threshold: 3,
                duration_check: false,
                ..LocalCanary::sample_app(&bin, port, "1.0.0")
            }
            .yaml();
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, yaml).map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            Ok((name, port))
        })
        .collect()
}

fn start_agent(opts: &Options, dir: &Path, url: &str, log: &Log) -> Result<(Process, u16)> {
    let admin = free_port();
    let mut child = Command::new(&opts.aviary)
        .args(["agent", "--local"])
        .arg(dir)
        .arg("--state-dir")
        .arg(opts.out.join("state"))
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args([
            "--min-analysis-interval",
            "1s",
            "--cluster",
            CLUSTER,
            "--region",
            CLUSTER,
        ])
        .args(["--coordinator", url, "--log-level", "warn"])
        .args(Pki::get(&opts.aviary.to_string_lossy()).agent_args(CLUSTER))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting aviary agent", e))?;
    if let Some(err) = child.stderr.take() {
        log.capture("agent", err, |_| false);
    }
    Ok((Process::new(child).graceful(Duration::from_secs(30)), admin))
}

/// Canaries of the agent in `phase`.
fn count_phase(admin: u16, phase: &str) -> usize {
    curl_json(&format!("http://127.0.0.1:{admin}/canaries"))["items"]
        .as_array()
        .map_or(0, |items| {
            items.iter().filter(|c| c["status"]["phase"] == phase).count()
        })
}

/// Rolls `name` to 1.0.1, 1.0.2, … one rollout after another (each deleted once ended) until
/// `stop`; counts the outcomes.
fn roll(bin: &str, url: &str, dir: &Path, name: &str, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut n = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let rollout = format!("{name}-{n}");
        let file = dir.join(format!("{rollout}.yaml"));
        let manifest = format!(
            "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: {rollout}}}\nspec:\n  canary: {{namespace: test, name: {name}}}\n  revision: {{version: 1.0.{n}}}\n  waves:\n  - {{name: all, regions: [{CLUSTER}]}}\n"
        );
        if std::fs::write(&file, manifest).is_err() {
            return;
        }
        let (code, _, err) = cli(
            bin,
            url,
            "soak",
            &["rollout", "apply", "-f", &file.to_string_lossy()],
        );
        if code != 0 {
            eprintln!("soak: applying {rollout}: {err}");
            failed.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(5));
            continue;
        }
        let (code, _, _) = cli(
            bin,
            url,
            "soak",
            &["rollout", "wait", &rollout, "--timeout", "10m"],
        );
        if code == 0 { ok } else { failed }.fetch_add(1, Ordering::Relaxed);
        let _ = cli(bin, url, "soak", &["rollout", "delete", &rollout]);
        let _ = std::fs::remove_file(&file);
        n += 1;
    }
}

/// Runs the soak: returns the samples (also written to `out` as they come) and the verdicts.
pub fn run(opts: &Options) -> Result<(Vec<Sample>, Vec<Trend>, Value)> {
    let _ = std::fs::remove_dir_all(&opts.out);
    let config = opts.out.join("config");
    let canaries = write_canaries(opts, &config)?;
    let bin = opts.aviary.to_string_lossy().into_owned();
    let log = Log::default();
    let (coordinator, url) = start_coordinator(
        &Host::loopback(),
        &bin,
        &["--log-level", "warn"],
        "coordinator",
        &log,
        |_| false,
    );
    let started = Instant::now();
    let (agent, admin) = start_agent(opts, &config, &url, &log)?;
    let mut initialized = 0;
    while initialized < opts.canaries {
        if started.elapsed() > opts.settle_limit {
            return Err(Error::Bench(format!(
                "{initialized} of {} canaries Initialized after {:?}; agent log: {}",
                opts.canaries,
                opts.settle_limit,
                log.lines().join("\n")
            )));
        }
        std::thread::sleep(Duration::from_secs(5));
        initialized = count_phase(admin, "Initialized");
        eprintln!(
            "soak: {initialized}/{} canaries Initialized ({:.0} s)",
            opts.canaries,
            started.elapsed().as_secs_f64()
        );
    }
    let settle = started.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic: Vec<Traffic> = canaries[..opts.rolled]
        .iter()
        .map(|(_, port)| Traffic::start(*port, Duration::from_millis(50)))
        .collect();
    let rollers: Vec<_> = canaries[..opts.rolled]
        .iter()
        .map(|(name, _)| {
            let (bin, url, dir, name) = (bin.clone(), url.clone(), opts.out.clone(), name.clone());
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || roll(&bin, &url, &dir, &name, &stop, &ok, &failed))
        })
        .collect();

    let begin = Instant::now();
    let mut samples = Vec::new();
    let csv = opts.out.join("samples.csv");
    let mut lines = vec![
        "seconds,agent_rss_mib,agent_fds,coordinator_rss_mib,coordinator_fds,agent_children,rollouts"
            .to_string(),
    ];
    while begin.elapsed() <= opts.duration {
        let (agent_rss_mib, agent_fds) = usage(agent.id());
        let (coordinator_rss_mib, coordinator_fds) = usage(coordinator.id());
        let s = Sample {
            t: begin.elapsed().as_secs_f64(),
            agent_rss_mib,
            agent_fds,
            coordinator_rss_mib,
            coordinator_fds,
            agent_children: descendants(agent.id()).len() as f64,
            rollouts: ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed),
        };
        eprintln!(
            "soak: {:>5.0} s  agent {:.1} MiB {} fds {} processes  coordinator {:.1} MiB {} fds  rollouts {}",
            s.t,
            s.agent_rss_mib,
            s.agent_fds,
            s.agent_children,
            s.coordinator_rss_mib,
            s.coordinator_fds,
            s.rollouts
        );
        lines.push(format!(
            "{:.1},{:.2},{},{:.2},{},{},{}",
            s.t,
            s.agent_rss_mib,
            s.agent_fds,
            s.coordinator_rss_mib,
            s.coordinator_fds,
            s.agent_children,
            s.rollouts
        ));
        std::fs::write(&csv, lines.join("\n") + "\n")
            .map_err(|e| Error::io(format!("writing {}", csv.display()), e))?;
        samples.push(s);
        std::thread::sleep(opts.every.saturating_sub(Duration::from_millis(
            (begin.elapsed().as_millis() % opts.every.as_millis().max(1)) as u64,
        )));
    }
    stop.store(true, Ordering::Relaxed);
    for r in rollers {
        let _ = r.join();
    }
    drop(traffic);
    let trends = trends(&samples);
    let summary = json!({
        "canaries": opts.canaries,
        "rolled": opts.rolled,
        "seconds": opts.duration.as_secs(),
        "settle_seconds": settle,
        "rollouts_succeeded": ok.load(Ordering::Relaxed),
        "rollouts_failed": failed.load(Ordering::Relaxed),
        "agent_children_last": samples.last().map_or(0.0, |s| s.agent_children),
        "trends": trends.iter().map(|t| json!({
            "series": t.name, "unit": t.unit, "first": t.first, "last": t.last, "mean": t.mean,
            "max": t.max, "rise": t.rise, "allowed": t.allowed, "pass": t.pass(),
        })).collect::<Vec<_>>(),
        "pass": trends.iter().all(Trend::pass),
    });
    let results = opts.out.join("results.json");
    std::fs::write(
        &results,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| Error::io(format!("writing {}", results.display()), e))?;
    if let Some(plot) = &opts.plot {
        svg(plot, &samples)?;
    }
    drop(agent);
    drop(coordinator);
    Ok((samples, trends, summary))
}

/// The markdown table of the verdicts.
pub fn markdown(trends: &[Trend], summary: &Value) -> String {
    let mut out = format!(
        "{} canaries on one local agent ({} rolled continuously), {} s of releases: {} rollouts succeeded, {} failed; all canaries Initialized after {:.0} s.\n\n| series | after warm-up | end | mean | max | fitted rise | allowed | |\n|---|---|---|---|---|---|---|---|\n",
        summary["canaries"],
        summary["rolled"],
        summary["seconds"],
        summary["rollouts_succeeded"],
        summary["rollouts_failed"],
        summary["settle_seconds"].as_f64().unwrap_or(0.0)
    );
    for t in trends {
        out.push_str(&format!(
            "| {} ({}) | {:.1} | {:.1} | {:.1} | {:.1} | {:+.2} | {:.2} | {} |\n",
            t.name,
            if t.unit.is_empty() { "count" } else { t.unit },
            t.first,
            t.last,
            t.mean,
            t.max,
            t.rise,
            t.allowed,
            if t.pass() { "pass" } else { "FAIL" }
        ));
    }
    out
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Bench(format!("plot: {e}"))
}

/// Two panels over time (minutes): resident memory (MiB) and open file descriptors, one line
/// per process; the warm-up is shaded.
pub fn svg(path: &Path, samples: &[Sample]) -> Result<()> {
    let root = SVGBackend::new(path, (960, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let end = samples.last().map_or(1.0, |s| s.t / 60.0).max(1.0 / 6.0);
    type Line = (&'static str, RGBColor, fn(&Sample) -> f64);
    let panels: [(&str, [Line; 2]); 2] = [
        (
            "resident memory (MiB)",
            [
                ("agent", RGBColor(36, 113, 163), |s| s.agent_rss_mib),
                ("coordinator", RGBColor(192, 57, 43), |s| s.coordinator_rss_mib),
            ],
        ),
        (
            "open file descriptors",
            [
                ("agent", RGBColor(36, 113, 163), |s| s.agent_fds),
                ("coordinator", RGBColor(192, 57, 43), |s| s.coordinator_fds),
            ],
        ),
    ];
    for (area, (title, lines)) in root.split_evenly((1, 2)).iter().zip(panels) {
        let top = samples
            .iter()
            .flat_map(|s| lines.iter().map(move |l| (l.2)(s)))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series([Rectangle::new(
                [(0.0, 0.0), (end / 3.0, top)],
                RGBColor(238, 238, 238).filled(),
            )])
            .map_err(plot_err)?
            .label("warm-up")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], RGBColor(238, 238, 238).filled()));
        for (name, colour, pick) in lines {
            chart
                .draw_series(LineSeries::new(
                    samples.iter().map(|s| (s.t / 60.0, pick(s))),
                    colour.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(f: fn(f64) -> f64) -> Vec<Sample> {
        (0..=30)
            .map(|i| {
                let t = i as f64 * 10.0;
                Sample {
                    t,
                    agent_rss_mib: f(t),
                    agent_fds: 100.0,
                    coordinator_rss_mib: 20.0,
                    coordinator_fds: 30.0,
                    agent_children: 0.0,
                    rollouts: 0,
                }
            })
            .collect()
    }

    #[test]
    fn the_line_through_the_last_two_thirds_decides() {
        // Growth during the warm-up only, then flat with noise: passes.
        let warm = trends(&samples(|t| {
            if t < 100.0 {
                50.0 + t
            } else {
                150.0 + (t / 10.0 % 3.0)
            }
        }));
        assert!(warm.iter().all(Trend::pass), "{warm:?}");
        // A steady leak of 10 MiB per minute over 200 s of a ~100 MiB process: fails.
        let leak = trends(&samples(|t| 100.0 + t / 60.0 * 10.0));
        assert!(!leak[0].pass(), "{:?}", leak[0]);
        assert!(leak[1..].iter().all(Trend::pass));
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
    }
}
