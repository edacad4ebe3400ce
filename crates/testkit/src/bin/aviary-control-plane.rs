//! `aviary-control-plane run DIR`: the test control plane in the foreground (etcd,
//! kube-apiserver, kube-controller-manager, the kubelet/Knative/gateway stand-ins and the test
//! CRDs), files in DIR, until SIGINT or SIGTERM. `scripts/control-plane up|down DIR` wraps it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The aviary test control plane (a real kube-apiserver on 127.0.0.1)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run in the foreground; writes DIR/admin.kubeconfig, then DIR/ready once everything answers.
    Run {
        /// Directory for kubeconfigs, certificates, etcd data and logs.
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Command::Run { dir } = Cli::parse().command;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(dir))
}

async fn run(dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("ready"));
    let cluster = aviary_testkit::Cluster::start_in(&dir).await?;
    let kubeconfig = cluster.admin_kubeconfig();
    std::fs::write(dir.join("ready"), format!("{}\n", kubeconfig.display()))?;
    println!("{}", kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_file(dir.join("ready"));
    drop(cluster);
    Ok(())
}
