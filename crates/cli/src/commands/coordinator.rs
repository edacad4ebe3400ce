//! `aviary coordinator`: run the fleet coordinator (one replica, in-memory store).
//! Thin: flags → `aviary_coordinator::Coordinator`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use aviary_coordinator::{Coordinator, CoordinatorConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on for gRPC (Fleet, AgentLink, health, reflection). Port 0 picks one.
    #[arg(long, default_value = "0.0.0.0:7400")]
    listen: SocketAddr,

    /// The address agents and clients reach this replica at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,

    /// Seconds between heartbeats on agent streams; a stream silent for 3 periods is closed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat_seconds: u64,

    /// Log level (`error`, `warn`, `info`, `debug`) or a tracing filter.
    #[arg(long, default_value = "info", env = "AVIARY_LOG")]
    log_level: String,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?} is not a level or filter", args.log_level))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut config = CoordinatorConfig::in_memory(args.listen);
        config.advertise = args.advertise;
        config.heartbeat = Duration::from_secs(args.heartbeat_seconds);
        let c = Coordinator::start(config).await?;
        // Scripts and tests read the address from this line (useful with port 0).
        println!("aviary coordinator listening on {}", c.local_addr());
        c.run_until_signal().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
