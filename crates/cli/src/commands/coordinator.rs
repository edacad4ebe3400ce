//! `aviary coordinator`: run the fleet coordinator, either as the only replica (state in memory)
//! or, with `--etcd`, as one replica of several (state in etcd, leader elected there).
//! Thin: flags → `aviary_coordinator::Coordinator`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::{Coordinator, CoordinatorConfig, DashboardConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on for gRPC (Fleet, AgentLink, health, reflection). Port 0 picks one.
    #[arg(long, default_value = "0.0.0.0:7400")]
    listen: SocketAddr,

    /// The address agents, clients and the other replicas reach this replica at (default: the
    /// listen address). Followers send clients to the leader's advertised address, so with
    /// --etcd and a --listen on 0.0.0.0 it is required.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,

    /// etcd client URLs, comma-separated: run as one replica of several, with the fleet state
    /// in etcd and the leader elected there. Without it: one replica, state in memory.
    #[arg(long, value_name = "URLS", env = "AVIARY_ETCD")]
    etcd: Option<String>,

    /// TTL of the leader's etcd lease (whole seconds, 2s to 60s): a crashed leader is replaced
    /// within 2/3 to 1 TTL plus up to 0.5 s. Keep-alives go every TTL/3.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_ttl)]
    lease_ttl: Duration,

    /// Key prefix of this fleet in etcd (several fleets can share one etcd).
    #[arg(long, value_name = "PREFIX", default_value = aviary_coordinator::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,

    /// Serve Prometheus metrics on `/metrics` over plain HTTP at this address (e.g.
    /// 0.0.0.0:9400); off by default. docs/operations.md lists the metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Serve the web dashboard (rollouts, a live waves × clusters view, the actions) over plain
    /// HTTP at this address (e.g. 0.0.0.0:8080); off by default. See docs/operations.md.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,

    /// The dashboard only shows: every caller is a viewer (no action buttons; actions are
    /// refused with 403).
    #[arg(long, requires = "http_listen")]
    dashboard_read_only: bool,

    /// Seconds between heartbeats on agent streams; a stream silent for 3 periods is closed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat_seconds: u64,

    /// Log level (`error`, `warn`, `info`, `debug`) or a tracing filter.
    #[arg(long, default_value = "info", env = "AVIARY_LOG")]
    log_level: String,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = aviary_api::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 || !(2..=60).contains(&d.as_secs()) {
        return Err(format!(
            "{s}: etcd leases have whole seconds; use 2s to 60s (etcd's minimum is 2s with its default election timeout)"
        ));
    }
    Ok(d)
}

/// The advertised address, checked: followers hand it to clients and agents.
fn advertise(args: &Args) -> anyhow::Result<Option<String>> {
    match &args.advertise {
        Some(a) => {
            let (host, port) = a.rsplit_once(':').unwrap_or((a.as_str(), ""));
            if a.contains("://") || host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                bail!("--advertise {a}: expected HOST:PORT (no scheme), e.g. coordinator-0.aviary:7400");
            }
            if args.etcd.is_some() && (host == "0.0.0.0" || host == "[::]" || host == "::") {
                bail!(
                    "--advertise {a}: not routable; pass the address other replicas, agents and \
                     clients reach this replica at (its pod IP or DNS name and port)"
                );
            }
            Ok(Some(a.clone()))
        }
        None if args.etcd.is_some() && args.listen.ip().is_unspecified() => bail!(
            "--advertise is required with --etcd when --listen is {} (all interfaces): followers \
             send clients and agents to the leader's advertised address; pass the address they \
             reach this replica at, e.g. --advertise 10.0.0.5:{} or \
             --advertise coordinator-0.coordinator:{}",
            args.listen,
            args.listen.port(),
            args.listen.port()
        ),
        None => Ok(None),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logs(&args.log_level)?;
    let advertise = advertise(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut config = CoordinatorConfig::in_memory(args.listen);
        config.advertise = advertise;
        config.heartbeat = Duration::from_secs(args.heartbeat_seconds);
        if let Some(urls) = &args.etcd {
            let mut etcd_config = EtcdConfig::new(urls)?;
            etcd_config.lease_ttl = args.lease_ttl;
            etcd_config.prefix = args.etcd_prefix.clone();
            let etcd = Etcd::connect(&etcd_config.endpoints).await?;
            let leadership = EtcdLeadership::new(etcd, &etcd_config);
            config.store = Arc::new(EtcdStore::new(&etcd_config, &leadership));
            config.leadership = leadership;
        }
        let c = Coordinator::start(config).await?;
        if let Some(addr) = args.metrics_listen {
            c.serve_metrics(addr).await?;
        }
        let dashboard = match args.http_listen {
            Some(addr) => {
                let config = DashboardConfig {
                    read_only: args.dashboard_read_only,
                };
                Some(c.serve_dashboard(addr, config).await?)
            }
            None => None,
        };
        // Scripts and tests read the address from this line (useful with port 0).
        println!("aviary coordinator listening on {}", c.local_addr());
        if let Some(addr) = dashboard {
            // Readers of the first line may have closed stdout already: not an error.
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "aviary dashboard on http://{addr}/");
        }
        c.run_until_signal().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
