//! Fan-in benchmark: many simulated agents reporting to one coordinator process.
//!
//! `scripts/bench-fan-in` (or `cargo bench -p aviary-coordinator --bench fan_in -- [flags]`).
//! The coordinator runs as a child process (this binary with `--serve`) on 127.0.0.1; the
//! parent runs the simulated agents (one gRPC stream each, every canary reported once per
//! interval, spread over the interval) and a client measuring `ListCanaries` and `GetRollout`
//! latency. The coordinator's CPU comes from /proc/<pid>/stat (utime + stime) over the measured
//! window, its memory from VmRSS/VmHWM. Loopback only; stops by itself.
//!
//! Flags: `--agents 1000 --canaries 100 --interval 10 --warmup 15 --duration 60 [--batch]`
//! (`--batch`: each agent sends its interval's reports in one `CanaryUpdate.canaries`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_coordinator::client::fleet_client;
use aviary_coordinator::sim::{SimAgent, SimCanary, SimConfig};
use aviary_coordinator::{Coordinator, CoordinatorConfig};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use aviary_testkit::bench::flag;
use aviary_testkit::process::Process;

struct Opts {
    agents: usize,
    canaries: usize,
    interval: u64,
    warmup: u64,
    duration: u64,
    batch: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve();
        return;
    }
    let o = Opts {
        agents: flag(&args, "--agents", 1000) as usize,
        canaries: flag(&args, "--canaries", 100) as usize,
        interval: flag(&args, "--interval", 10),
        warmup: flag(&args, "--warmup", 15),
        duration: flag(&args, "--duration", 60),
        batch: args.iter().any(|a| a == "--batch"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(o));
}

/// Child: one coordinator with the in-memory store; prints its address; stops on SIGTERM.
fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Coordinator::start(CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        println!("{}", c.local_addr());
        c.run_until_signal().await.unwrap();
    });
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The median and 99th percentile of the `sorted` call latencies, and how many calls there were.
fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "{} / {} ms ({} calls)",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        sorted.len()
    )
}

struct Measured {
    wall: f64,
    cpu: f64,
    rss: u64,
    rss_max: u64,
    hwm: u64,
    list_by_cluster: Vec<Duration>,
    list_by_phase: Vec<Duration>,
    get_rollout: Vec<Duration>,
    sizes: (usize, usize),
    all: usize,
    full: Duration,
}

/// The client side: ListCanaries and GetRollout every 50 ms for `duration`, and the
/// coordinator's CPU and memory over that window.
async fn measure(
    mut client: aviary_coordinator::client::FleetConn,
    pid: u32,
    duration: Duration,
    agents: u64,
) -> Measured {
    let tck = clk_tck();
    let cpu0 = proc_cpu_ticks(pid);
    let w0 = Instant::now();
    let mut list_by_cluster = Vec::new();
    let mut list_by_phase = Vec::new();
    let mut get_rollout = Vec::new();
    let mut rss_max = 0;
    let mut i = 0u64;
    let mut sizes = (0usize, 0usize);
    while w0.elapsed() < duration {
        let cluster = format!("c{:04}", (i * 7919) % agents);
        let t = Instant::now();
        let r = client
            .list_canaries(v1::ListCanariesRequest {
                cluster,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        list_by_cluster.push(t.elapsed());
        sizes.0 = r.canaries.len();
        let t = Instant::now();
        let r = client
            .get_rollout(v1::GetRolloutRequest { name: "bench".into() })
            .await
            .unwrap()
            .into_inner();
        get_rollout.push(t.elapsed());
        sizes.1 = r.waves.iter().map(|w| w.clusters.len()).sum();
        if i.is_multiple_of(10) {
            let t = Instant::now();
            client
                .list_canaries(v1::ListCanariesRequest {
                    namespace: "ns3".into(),
                    phase: "Progressing".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            list_by_phase.push(t.elapsed());
            rss_max = rss_max.max(proc_status_kib(pid, "VmRSS:"));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu = (proc_cpu_ticks(pid) - cpu0) as f64 / tck as f64;
    let rss = proc_status_kib(pid, "VmRSS:");
    let hwm = proc_status_kib(pid, "VmHWM:");
    let t = Instant::now();
    let all = aviary_coordinator::client::list_all_canaries(&mut client, v1::ListCanariesRequest::default())
        .await
        .unwrap()
        .canaries
        .len();
    let full = t.elapsed();
    Measured {
        wall,
        cpu,
        rss,
        rss_max,
        hwm,
        list_by_cluster,
        list_by_phase,
        get_rollout,
        sizes,
        all,
        full,
    }
}

async fn run(o: Opts) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // SIGTERM (SIGKILL 10 s later) when dropped, also when the bench panics.
    let coordinator = Process::new(child).graceful(Duration::from_secs(10));
    let pid = coordinator.id();
    let url = format!("http://{}", line.trim());
    eprintln!(
        "coordinator pid {pid} at {url}; starting {} agents × {} canaries, one report per canary every {}s",
        o.agents, o.canaries, o.interval
    );

    let rev = Revision {
        container_images: [("app".to_string(), "registry.example/app:1.0.0".to_string())].into(),
        version: String::new(),
    };
    let regions = 10;
    let mut agents = Vec::with_capacity(o.agents);
    for i in 0..o.agents {
        let canaries = (0..o.canaries)
            .map(|k| SimCanary::new(&format!("ns{}", k % 10), &format!("app{k}"), rev.clone()))
            .collect();
        let mut cfg = SimConfig::new(
            &url,
            &format!("c{i:04}"),
            &format!("region-{}", i % regions),
            canaries,
        );
        cfg.tick = Duration::from_secs(o.interval);
        // Spread the agents' reports evenly over the interval.
        cfg.tick_offset = Duration::from_millis((i as u64 * o.interval * 1000) / o.agents as u64);
        cfg.reconnect = Duration::from_secs(1);
        cfg.batch = o.batch;
        agents.push(SimAgent::spawn(cfg));
        if (i + 1).is_multiple_of(100) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut client = fleet_client(&url).unwrap();
    let t0 = Instant::now();
    loop {
        let n = client
            .list_clusters(v1::ListClustersRequest {})
            .await
            .map(|r| r.into_inner().clusters.iter().filter(|c| c.connected).count())
            .unwrap_or(0);
        if n == o.agents {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "only {n} of {} agents connected",
            o.agents
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{} agents connected in {:.1}s",
        o.agents,
        t0.elapsed().as_secs_f64()
    );

    // A rollout over every cluster, held at its first wave's approval: GetRollout renders a
    // 1,000-cluster plan with live values.
    let by_region: Vec<String> = (0..regions).map(|r| format!("region-{r}")).collect();
    let manifest = format!(
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: bench}}\nspec:\n  \
         canary: {{namespace: ns0, name: app0}}\n  revision: {{containerImages: {{app: 'registry.example/app:2.0.0'}}}}\n  \
         byRegion: {by_region:?}\n  waveDefaults: {{approval: manual, maxConcurrent: '10%'}}\n"
    );
    client
        .create_rollout(v1::CreateRolloutRequest {
            manifest,
            actor: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    eprintln!("warming up {}s", o.warmup);
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;

    // The measuring client is a separate program in real life (the CLI, grpcurl): give it its
    // own thread and runtime so that its timings are not queued behind the simulated agents'
    // tasks in this process's scheduler.
    let duration = Duration::from_secs(o.duration);
    let n_agents = o.agents as u64;
    let m = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = fleet_client(&url).unwrap();
                measure(client, pid, duration, n_agents).await
            })
    })
    .join()
    .unwrap();
    let Measured {
        wall,
        cpu,
        rss,
        rss_max,
        hwm,
        mut list_by_cluster,
        mut list_by_phase,
        mut get_rollout,
        sizes,
        all,
        full,
    } = m;

    for v in [&mut list_by_cluster, &mut list_by_phase, &mut get_rollout] {
        v.sort();
    }
    let reported: usize = agents.iter().filter(|a| a.is_connected()).count();
    println!();
    println!(
        "## Fan-in: {} agents × {} canaries, one report per canary every {}s ({})",
        o.agents,
        o.canaries,
        o.interval,
        if o.batch {
            "one CanaryUpdate per agent and interval"
        } else {
            "one CanaryUpdate per canary"
        }
    );
    println!();
    println!(
        "Load: {:.0} canary status updates/s over {} gRPC streams ({} connected at the end); measured {:.0}s after {}s warm-up.",
        (o.agents * o.canaries) as f64 / o.interval as f64,
        o.agents,
        reported,
        wall,
        o.warmup
    );
    println!();
    println!("| metric | value | target |");
    println!("| --- | --- | --- |");
    println!(
        "| coordinator CPU (utime+stime / wall) | {:.1}% of one core | ≤ 50% |",
        cpu / wall * 100.0
    );
    println!(
        "| coordinator RSS (end / max sampled / peak VmHWM) | {} / {} / {} MiB | |",
        rss / 1024,
        rss_max.max(rss) / 1024,
        hwm / 1024
    );
    println!(
        "| ListCanaries{{cluster}} ({} canaries) p50 / p99 | {} | p99 ≤ 10 ms |",
        sizes.0,
        p50_p99(&list_by_cluster)
    );
    println!(
        "| GetRollout ({}-cluster plan, with history) p50 / p99 | {} | p99 ≤ 10 ms |",
        sizes.1,
        p50_p99(&get_rollout)
    );
    println!(
        "| ListCanaries{{namespace, phase}} (scans all {}) p50 / p99 | {} | |",
        o.agents * o.canaries,
        p50_p99(&list_by_phase)
    );
    println!("| ListCanaries (all {all}, once) | {} ms | |", ms(full));

    drop(coordinator);
    for a in agents {
        a.stop().await;
    }
}
