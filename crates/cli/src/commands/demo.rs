//! `aviary demo`: a multi-region staged rollout on one machine, in one process tree.
//!
//! An in-memory coordinator, three local agents (`us-east-1a` in us-east-1, `eu-west-1a` and
//! `eu-west-1b` in eu-west-1), each running a podinfo-like LocalService (`aviary sample-app`) with
//! the seed tutorial's canary settings scaled down to seconds, and a traffic generator so the
//! metrics are real. Rollout 1 (6.0.0 → 6.0.1) goes region by region and succeeds; rollout 2
//! (6.0.1 → 6.0.2, which answers some requests with 500) fails its analysis in us-east-1, the
//! rollout fails (the first wave is mandatory) and eu-west-1 is never touched.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use aviary_agent::config::{AgentConfig, GlobalNotifier, PlatformConfig};
use aviary_agent::local::LocalAgent;
use aviary_coordinator::client::{ClientTls, fleet_client_with};
use aviary_coordinator::security::Role;
use aviary_coordinator::security::auth::{new_token, token_hash};
use aviary_coordinator::security::certs;
use aviary_coordinator::security::tls::ServerTlsFiles;
use aviary_coordinator::{Coordinator, CoordinatorConfig, DashboardConfig};
use aviary_proto::v1;

use super::out;
use super::rollout::{Bars, lines};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Leave the fleet running after the two rollouts (explore it with `aviary` and grpcurl;
    /// Ctrl-C stops everything).
    #[arg(long)]
    keep_running: bool,

    /// The canaries' analysis interval (Flagger's floor of 10s is lowered for the demo).
    #[arg(long, default_value = "2s", value_parser = super::positive_duration)]
    interval: Duration,

    /// Keep the fleet's files (configs, state, process logs) here instead of a temporary
    /// directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Plain line-by-line progress even on a terminal.
    #[arg(long)]
    plain: bool,

    /// Where the web dashboard listens (port 0 picks a free one; the URL is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: std::net::SocketAddr,
}

/// The demo's clusters: (name, region).
const CLUSTERS: [(&str, &str); 3] = [
    ("us-east-1a", "us-east-1"),
    ("eu-west-1a", "eu-west-1"),
    ("eu-west-1b", "eu-west-1"),
];

/// The version that answers some requests with 500.
const FAULTY: &str = "6.0.2";

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            s.cancel();
        });
        let tmp;
        let dir = match &args.dir {
            Some(d) => d.clone(),
            None => {
                tmp = tempfile::tempdir().context("creating a temporary directory")?;
                tmp.path().to_path_buf()
            }
        };
        let fleet = Fleet::start(&dir, args.interval, args.http_listen).await?;
        let outcome = tokio::select! {
            r = demo(&fleet, &args) => r,
            _ = stop.cancelled() => Err(anyhow!("interrupted")),
        };
        if args.keep_running && outcome.is_ok() && !stop.is_cancelled() {
            out(format_args!("\nThe fleet keeps running (Ctrl-C stops it):"));
            out(format_args!("  coordinator  {}", fleet.coordinator.url()));
            out(format_args!("  dashboard    {} (token {})", fleet.dashboard, fleet.token));
            for (agent, (name, _)) in fleet.agents.iter().zip(CLUSTERS) {
                out(format_args!("  {name:<12} admin http://{}   service http://127.0.0.1:{}", agent.admin_addr, fleet.ports[name]));
            }
            stop.cancelled().await;
        }
        out("Stopping the fleet: traffic, agents (and their processes), coordinator.");
        fleet.stop().await;
        match outcome {
            Ok(()) => {
                out("Demo finished as expected.");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: the demo did not end as expected: {e:#}");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// The running fleet.
struct Fleet {
    coordinator: Coordinator,
    /// `aviary certs` output: the CA, the agents' and the demo user's certificates.
    certs_dir: PathBuf,
    /// The web dashboard's URL.
    dashboard: String,
    /// The operator token the dashboard's sign-in accepts.
    token: String,
    agents: Vec<LocalAgent>,
    ports: BTreeMap<&'static str, u16>,
    traffic_stop: Arc<AtomicBool>,
    traffic: Vec<tokio::task::JoinHandle<()>>,
    requests: Arc<AtomicU64>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_config(dir: &Path, port: u16, interval: Duration) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the aviary binary")?;
    let exe = exe.display();
    let secs = interval.as_secs_f64();
    let interval = aviary_api::duration::format_go_duration(interval);
    // the metric window covers about five analysis ticks
    let window = aviary_api::duration::format_go_duration(Duration::from_secs_f64((secs * 5.0).max(5.0)));
    let yaml = format!(
        r#"# podinfo on the local platform, with the seed tutorial's canary scaled to seconds.
apiVersion: aviary.dev/v1alpha1
kind: LocalService
metadata: {{name: podinfo, namespace: test}}
spec:
  port: {port}
  version: 6.0.0
  replicas: 2
  # {FAULTY} answers 30% of the requests with 500: the bad release of the demo.
  command: [sh, -c, 'if [ "{{{{version}}}}" = "{FAULTY}" ]; then e=0.3; else e=0; fi; exec "{exe}" sample-app --port {{{{port}}}} --version {{{{version}}}} --error-rate $e']
  readinessPath: /readyz
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  provider: local
  targetRef: {{apiVersion: aviary.dev/v1alpha1, kind: LocalService, name: podinfo}}
  progressDeadlineSeconds: 60
  analysis:
    interval: {interval}
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: {window}
    - name: request-duration
      thresholdRange: {{max: 500}}
      interval: {window}
"#
    );
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("podinfo.yaml"), yaml)?;
    Ok(())
}

impl Fleet {
    async fn start(
        dir: &Path,
        interval: Duration,
        http_listen: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        out(format_args!("Starting the demo fleet in {}", dir.display()));
        // Mutual TLS, as in production: a CA, the coordinator's certificate, one per agent
        // (identity: its cluster) and an admin certificate for the demo's own calls.
        let certs_dir = dir.join("certs");
        if certs_dir.exists() {
            std::fs::remove_dir_all(&certs_dir)?;
        }
        certs::init(&certs_dir, &[])?;
        for (name, _) in CLUSTERS {
            certs::issue_agent(&certs_dir, name, certs::DEFAULT_TRUST_DOMAIN)?;
        }
        certs::issue_user(&certs_dir, "demo", Role::Admin, certs::DEFAULT_TRUST_DOMAIN)?;
        // The dashboard's sign-in: an operator token (approve, pause, ...; abort needs admin).
        let token = new_token();
        let token_file = certs_dir.join("tokens");
        std::fs::write(
            &token_file,
            format!("{} dashboard operator\n", token_hash(&token)),
        )?;
        let mut config = CoordinatorConfig::in_memory("127.0.0.1:0".parse()?);
        config.tls = Some(ServerTlsFiles {
            cert: certs_dir.join(certs::SERVER),
            key: certs_dir.join(certs::SERVER_KEY),
            client_ca: certs_dir.join(certs::CA),
        });
        config.token_file = Some(token_file);
        let coordinator = Coordinator::start(config)
            .await
            .context("starting the coordinator")?;
        out(format_args!("  coordinator   {}", coordinator.url()));
        let dashboard = coordinator
            .serve_dashboard(http_listen, DashboardConfig::default())
            .await
            .context("starting the dashboard")?;
        let dashboard = coordinator.dashboard_url(dashboard);
        // Tests and the screenshot script read the URL and the token from these lines.
        out(format_args!("  dashboard     {dashboard}"));
        out(format_args!(
            "                sign in with token {token} (TLS certificate from {})",
            certs_dir.join(certs::CA).display()
        ));
        let mut agents = Vec::new();
        let mut ports = BTreeMap::new();
        for (name, region) in CLUSTERS {
            let port = free_port()?;
            let cluster_dir = dir.join(name);
            write_config(&cluster_dir.join("config"), port, interval)?;
            let config = AgentConfig {
                cluster: name.into(),
                region: region.into(),
                labels: [("env".to_string(), "demo".to_string())].into(),
                coordinator: Some(coordinator.url()),
                coordinator_tls: aviary_agent::config::CoordinatorTls {
                    ca: Some(certs_dir.join(certs::CA)),
                    cert: Some(certs_dir.join(format!("{name}.pem"))),
                    key: Some(certs_dir.join(format!("{name}-key.pem"))),
                },
                admin_listen: "127.0.0.1:0".parse()?,
                min_analysis_interval: interval.min(Duration::from_secs(1)),
                metrics_server: String::new(),
                default_provider: "local".into(),
                event_webhook: None,
                notifier: GlobalNotifier::default(),
                platform: PlatformConfig::Local {
                    config: cluster_dir.join("config"),
                    state_dir: cluster_dir.join("state"),
                },
            };
            let agent = aviary_agent::local::start(config)
                .await
                .with_context(|| format!("starting the {name} agent"))?;
            out(format_args!(
                "  agent         {name:<11} ({region})  service 127.0.0.1:{port}  admin http://{}",
                agent.admin_addr
            ));
            ports.insert(name, port);
            agents.push(agent);
        }
        let traffic_stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let traffic = ports
            .values()
            .map(|&port| {
                let stop = traffic_stop.clone();
                let n = requests.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(2))
                        .build()
                        .expect("a client");
                    let url = format!("http://127.0.0.1:{port}/");
                    while !stop.load(Ordering::Relaxed) {
                        if client.get(&url).send().await.is_ok() {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                })
            })
            .collect();
        out(format_args!(
            "  traffic       about 30 requests/s to each service\n"
        ));
        Ok(Self {
            coordinator,
            certs_dir,
            dashboard,
            token,
            agents,
            ports,
            traffic_stop,
            traffic,
            requests,
        })
    }

    async fn stop(self) {
        self.traffic_stop.store(true, Ordering::Relaxed);
        for t in self.traffic {
            let _ = t.await;
        }
        for a in self.agents {
            a.stop().await;
        }
        let _ = self.coordinator.shutdown().await;
    }
}

fn rollout_yaml(name: &str, version: &str) -> String {
    format!(
        r#"apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {{name: {name}}}
spec:
  canary: {{namespace: test, name: podinfo}}
  revision: {{version: "{version}"}}
  waves:
  - name: us-east-1
    regions: [us-east-1]
    bake: {{duration: 5s, minRequests: 50}}
  - name: eu-west-1
    regions: [eu-west-1]
    maxConcurrent: 1
  failurePolicy:
    mandatoryWaves: [us-east-1]
    rollback: wave
  clusterDeadline: 3m
"#
    )
}

async fn demo(fleet: &Fleet, args: &Args) -> anyhow::Result<()> {
    let url = fleet.coordinator.url();
    let me = ClientTls::from_dir(&fleet.certs_dir, "demo");
    let mut client = fleet_client_with(&url, &me)?;

    out("Waiting for the three clusters to register and their canaries to initialize…");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let canaries = client
            .list_canaries(v1::ListCanariesRequest::default())
            .await?
            .into_inner()
            .canaries;
        let ready = canaries
            .iter()
            .filter(|c| c.canary.as_ref().is_some_and(|k| k.phase == "Initialized"))
            .count();
        if ready == CLUSTERS.len() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {ready} of {} canaries initialized within 60s",
                CLUSTERS.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    out(
        "\nRollout 1: podinfo 6.0.0 → 6.0.1, us-east-1 first (bake 5s and 50 requests), then eu-west-1 one cluster at a time.",
    );
    let r1 = run_rollout(&mut client, "podinfo-6-0-1", "6.0.1", args).await?;
    out("\nRollout 2: podinfo 6.0.1 → 6.0.2, a release that answers 30% of the requests with 500.");
    let r2 = run_rollout(&mut client, "podinfo-6-0-2", FAULTY, args).await?;

    let canaries = client
        .list_canaries(v1::ListCanariesRequest::default())
        .await?
        .into_inner()
        .canaries;
    summary(&[&r1, &r2], &canaries);
    out(format_args!(
        "\nLook further ({} requests served during the demo):\n  dashboard {} (token {})\n  export AVIARY_COORDINATOR={url} AVIARY_CA={c}/ca.pem AVIARY_CERT={c}/demo.pem AVIARY_KEY={c}/demo-key.pem\n  aviary rollout get podinfo-6-0-2\n  aviary canaries\n  aviary events --agent http://{}\n  grpcurl -cacert {c}/ca.pem -cert {c}/demo.pem -key {c}/demo-key.pem {} aviary.v1.Fleet/ListRollouts",
        fleet.requests.load(Ordering::Relaxed),
        fleet.dashboard,
        fleet.token,
        fleet.agents[0].admin_addr,
        url.trim_start_matches("https://"),
        c = fleet.certs_dir.display(),
    ));

    // What must have happened.
    if r1.phase != "Succeeded" {
        bail!(
            "rollout 1 ended {} ({}); it should have succeeded",
            r1.phase,
            r1.message
        );
    }
    if r2.phase != "Failed" {
        bail!(
            "rollout 2 ended {} ({}); it should have failed in us-east-1",
            r2.phase,
            r2.message
        );
    }
    let touched: Vec<&str> = r2
        .waves
        .iter()
        .filter(|w| w.name == "eu-west-1")
        .flat_map(|w| w.clusters.iter())
        .filter(|c| c.attempts > 0 || !matches!(c.phase.as_str(), "Pending" | ""))
        .map(|c| c.cluster.as_str())
        .collect();
    if !touched.is_empty() {
        bail!("rollout 2 touched eu-west-1 ({touched:?}); the failed first wave should have stopped it");
    }
    Ok(())
}

async fn run_rollout(
    client: &mut aviary_coordinator::client::FleetConn,
    name: &str,
    version: &str,
    args: &Args,
) -> anyhow::Result<v1::Rollout> {
    client
        .create_rollout(v1::CreateRolloutRequest {
            manifest: rollout_yaml(name, version),
            actor: "demo".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("CreateRollout {name}: {}", s.message()))?;
    let mut stream = client
        .watch_rollout(v1::GetRolloutRequest { name: name.into() })
        .await?
        .into_inner();
    let tty = std::io::stdout().is_terminal() && !args.plain;
    let mut bars = tty.then(Bars::new);
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    let mut last = None;
    while let Some(r) = stream.message().await? {
        match &mut bars {
            Some(b) => b.update(&r),
            None => {
                for (key, line) in lines(&r) {
                    // the time prefix changes every second; compare without it
                    let body = line
                        .split_once(' ')
                        .map(|(_, b)| b.to_string())
                        .unwrap_or_default();
                    if printed.get(&key) != Some(&body) {
                        out(&line);
                        printed.insert(key, body);
                    }
                }
            }
        }
        let done = matches!(r.phase.as_str(), "Succeeded" | "Failed" | "Aborted");
        last = Some(r);
        if done {
            break;
        }
    }
    if let Some(b) = bars {
        b.finish();
    }
    let r = last.ok_or_else(|| anyhow!("the watch of {name} ended without news"))?;
    out(format_args!("rollout {} {}: {}", r.name, r.phase, r.message));
    Ok(r)
}

/// The table at the end: per rollout and cluster, the version before and after and the outcome.
fn summary(rollouts: &[&v1::Rollout], canaries: &[v1::FleetCanary]) {
    let serving: BTreeMap<&str, &str> = canaries
        .iter()
        .filter_map(|c| {
            Some((
                c.cluster.as_str(),
                c.canary.as_ref()?.primary_revision.as_ref()?.version.as_str(),
            ))
        })
        .collect();
    out("\nSummary");
    let mut rows = Vec::new();
    for r in rollouts {
        for w in &r.waves {
            for c in &w.clusters {
                let before = c
                    .previous_revision
                    .as_ref()
                    .map(|p| p.version.clone())
                    .unwrap_or_default();
                let after = match c.phase.as_str() {
                    "Succeeded" => r.revision.as_ref().map(|v| v.version.clone()).unwrap_or_default(),
                    _ => before.clone(),
                };
                let outcome = match c.phase.as_str() {
                    "Pending" | "" => "not started".to_string(),
                    p => p.to_string(),
                };
                rows.push(vec![
                    r.name.clone(),
                    c.cluster.clone(),
                    c.region.clone(),
                    before,
                    after,
                    outcome,
                    c.failed_checks.to_string(),
                ]);
            }
        }
    }
    super::rollout::table(
        &[
            "ROLLOUT",
            "CLUSTER",
            "REGION",
            "BEFORE",
            "AFTER",
            "OUTCOME",
            "FAILED CHECKS",
        ],
        rows,
    );
    let now: Vec<String> = CLUSTERS
        .iter()
        .map(|(c, _)| format!("{c}={}", serving.get(c).copied().unwrap_or("?")))
        .collect();
    out(format_args!("Serving now: {}", now.join("  ")));
}
