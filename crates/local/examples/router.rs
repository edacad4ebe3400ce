//! A stand-alone router for the benchmark (`scripts/bench-router`): one service, fixed backends,
//! a weighted split, until SIGINT or SIGTERM.
//!
//! `cargo run --release -p aviary-local --example router -- --listen 127.0.0.1:8080 \
//!    --primary 127.0.0.1:9001 --canary 127.0.0.1:9002 --canary-weight 10`

use std::net::SocketAddr;

use aviary_local::router::{Backends, HttpRouter, RouterConfig, Routes};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// Primary backend addresses (repeat for several).
    #[arg(long, required = true)]
    primary: Vec<SocketAddr>,
    /// Canary backend addresses (repeat for several).
    #[arg(long)]
    canary: Vec<SocketAddr>,
    /// Percent of the requests sent to the canary.
    #[arg(long, default_value_t = 0)]
    canary_weight: u32,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = RouterConfig {
        workers: args.workers,
        ..RouterConfig::new("bench", "podinfo", args.listen)
    };
    let router = HttpRouter::start(config).await?;
    router.set_backends(Backends {
        primary: args.primary,
        canary: args.canary,
    });
    router.set_routes(Routes::weighted(
        100 - args.canary_weight.min(100),
        args.canary_weight.min(100),
    ))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    router.shutdown().await;
    Ok(())
}
