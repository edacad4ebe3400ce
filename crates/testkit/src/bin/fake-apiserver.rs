//! `fake-apiserver --port P --kubeconfig-out FILE`: runs the aviary fake Kubernetes API server (a
//! test double) until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use aviary_testkit::{FakeApiServer, Options, SimulatorConfig};
use clap::Parser;

/// Fake Kubernetes API server for tests (plain HTTP, no auth). Not a cluster.
#[derive(Parser, Debug)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Port to listen on (0 = pick a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Write a kubeconfig for this server to FILE (for kubectl --kubeconfig or KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Turn off the Deployment, Knative and HTTPRoute simulators.
    #[arg(long)]
    no_simulators: bool,
    /// Delay before simulated Deployments, Revisions and HTTPRoutes become ready.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    ready_delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-apiserver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> aviary_testkit::Result<()> {
    let mut simulators = if args.no_simulators {
        SimulatorConfig::disabled()
    } else {
        SimulatorConfig::default()
    };
    simulators.delay = Duration::from_millis(args.ready_delay_ms);
    let options = Options {
        addr: SocketAddr::new(args.address, args.port),
        simulators,
        ..Options::default()
    };
    let server = FakeApiServer::start_with(options).await?;
    if let Some(path) = &args.kubeconfig_out {
        server.write_kubeconfig(path)?;
    }
    // Scripts read the URL from the first line of stdout.
    println!("fake-apiserver listening on {}", server.url());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| {
            aviary_testkit::Error::Io {
                context: "installing the SIGTERM handler".into(),
                source: e,
            }
        })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
