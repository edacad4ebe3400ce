//! `aviary coordinator`: run the fleet coordinator, either as the only replica (state in memory)
//! or, with `--etcd`, as one replica of several (state in etcd, leader elected there).
//! Thin: flags → `aviary_coordinator::Coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::management::ManagementCluster;
use aviary_coordinator::security::ClientTls;
use aviary_coordinator::security::tls::ServerTlsFiles;
use aviary_coordinator::{Coordinator, CoordinatorConfig, DashboardConfig};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("management").args(["kubeconfig", "in_cluster"])))]
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
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_ttl)]
    lease_ttl: Duration,

    /// Key prefix of this fleet in etcd (several fleets can share one etcd).
    #[arg(long, value_name = "PREFIX", default_value = aviary_coordinator::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,

    /// Serve Prometheus metrics on `/metrics` over plain HTTP at this address (e.g.
    /// 0.0.0.0:9400); off by default. docs/operations.md lists the metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Serve the web dashboard (rollouts, a live waves × clusters view, the actions) at this
    /// address (e.g. 0.0.0.0:8443); off by default. HTTPS with the gRPC API's certificate, client
    /// CA, token file and roles (plain HTTP only with --insecure). See docs/operations.md.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,

    /// The dashboard only shows: every caller is at most a viewer there (no action buttons;
    /// actions are refused with 403).
    #[arg(long, requires = "http_listen")]
    dashboard_read_only: bool,

    /// How long a cluster's registration outlives its agent's last contact; then it is
    /// forgotten (audited), as by `aviary clusters deregister`. A returning agent registers
    /// again. At least 1s.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_cluster_ttl)]
    cluster_ttl: Duration,

    /// Seconds between heartbeats on agent streams; a stream silent for 3 periods is closed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat_seconds: u64,

    /// Watch FleetRollout objects (`aviary crds --group aviary.dev`) in a management cluster
    /// through this kubeconfig: each becomes a rollout and gets its status written back.
    #[arg(long, value_name = "FILE", conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,

    /// Like --kubeconfig, with the in-cluster configuration (the pod's ServiceAccount).
    #[arg(long)]
    in_cluster: bool,

    /// Namespace of the FleetRollout objects (default: the kubeconfig context's namespace, or
    /// the pod's). Needs --kubeconfig or --in-cluster.
    #[arg(long, value_name = "NAMESPACE", requires = "management")]
    namespace: Option<String>,
    /// The serving certificate (PEM) for mutual TLS; with --tls-key and --client-ca. Reloaded
    /// when the file changes. `aviary certs init DIR` writes one for localhost.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,

    /// The key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// The CA that signs agent and user certificates (identities: docs/operations.md,
    /// Security).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,

    /// Bearer tokens: `SHA256-HEX SUBJECT ROLE` a line (roles viewer, operator, admin).
    /// Reloaded when the file changes. Needs TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    token_file: Option<PathBuf>,

    /// Serve plaintext gRPC with no authentication: anyone who reaches the port is admin.
    /// Refused on a non-loopback --listen unless --insecure-listen-anywhere is given too.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,

    /// With --insecure: also on a non-loopback address (a lab, a port-forward sidecar).
    #[arg(long, requires = "insecure")]
    insecure_listen_anywhere: bool,

    /// The CA of etcd's serving certificate (use https:// etcd URLs).
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_ca: Option<PathBuf>,

    /// A client certificate for etcd's --client-cert-auth; with --etcd-key.
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_key"])]
    etcd_cert: Option<PathBuf>,

    /// The key of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,

    /// Log level (`error`, `warn`, `info`, `debug`) or a tracing filter.
    #[arg(long, default_value = "info", env = "AVIARY_LOG")]
    log_level: String,
}

fn parse_cluster_ttl(s: &str) -> Result<Duration, String> {
    let d = aviary_api::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: use at least 1s (e.g. 24h)"));
    }
    Ok(d)
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

/// The management cluster to watch FleetRollouts in, if asked.
async fn management(args: &Args) -> anyhow::Result<Option<ManagementCluster>> {
    if args.kubeconfig.is_none() && !args.in_cluster {
        if args.namespace.is_some() {
            bail!(
                "--namespace names where FleetRollout objects are watched: add --kubeconfig FILE or --in-cluster"
            );
        }
        return Ok(None);
    }
    let client = aviary_kube::client::connect(args.kubeconfig.as_deref(), Default::default()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    Ok(Some(ManagementCluster { client, namespace }))
}

/// TLS, or plaintext only when asked for explicitly (and loudly on a non-loopback address).
fn server_tls(args: &Args) -> anyhow::Result<Option<ServerTlsFiles>> {
    match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: ca.clone(),
        })),
        _ if !args.insecure => bail!(
            "the coordinator serves mutual TLS: pass --tls-cert, --tls-key and --client-ca (`aviary certs init DIR` writes a CA and a certificate for localhost), or --insecure for plaintext without authentication"
        ),
        _ if !args.listen.ip().is_loopback() && !args.insecure_listen_anywhere => bail!(
            "--insecure on {}: anyone who reaches it could create, approve or abort rollouts and pose as any cluster; listen on 127.0.0.1, use mutual TLS, or add --insecure-listen-anywhere if you really mean it",
            args.listen
        ),
        _ if args.http_listen.is_some_and(|a| !a.ip().is_loopback()) && !args.insecure_listen_anywhere => {
            bail!(
                "--insecure with --http-listen {}: anyone who reaches it could approve or abort rollouts from the dashboard; listen on 127.0.0.1, use mutual TLS, or add --insecure-listen-anywhere if you really mean it",
                args.http_listen.map(|a| a.to_string()).unwrap_or_default()
            )
        }
        _ => {
            eprintln!(
                "WARNING: INSECURE: {} serves plaintext gRPC without authentication; every caller \
                 is admin and may pose as any cluster",
                args.listen
            );
            Ok(None)
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logs(&args.log_level)?;
    let advertise = advertise(&args)?;
    let tls = server_tls(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut config = CoordinatorConfig::in_memory(args.listen);
        config.advertise = advertise;
        config.heartbeat = Duration::from_secs(args.heartbeat_seconds);
        config.cluster_ttl = args.cluster_ttl;
        config.tls = tls;
        config.token_file = args.token_file.clone();
        if let Some(urls) = &args.etcd {
            let mut etcd_config = EtcdConfig::new(urls)?;
            etcd_config.lease_ttl = args.lease_ttl;
            etcd_config.prefix = args.etcd_prefix.clone();
            let https = etcd_config.endpoints[0].starts_with("https://");
            let flags = args.etcd_ca.is_some() || args.etcd_cert.is_some();
            if flags && !https {
                bail!("--etcd-ca/--etcd-cert talk TLS to etcd: give its members as https://host:port");
            }
            // https:// without a CA: the system's roots.
            let etcd_tls = https.then(|| ClientTls {
                ca: args.etcd_ca.clone(),
                cert: args.etcd_cert.clone(),
                key: args.etcd_key.clone(),
                token: None,
            });
            let etcd = Etcd::connect_tls(&etcd_config.endpoints, etcd_tls.as_ref()).await?;
            let leadership = EtcdLeadership::new(etcd, &etcd_config);
            config.store = Arc::new(EtcdStore::new(&etcd_config, &leadership));
            config.leadership = leadership;
        }
        config.management = management(&args).await?;
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
            let _ = writeln!(std::io::stdout(), "aviary dashboard on {}", c.dashboard_url(addr));
        }
        c.run_until_signal().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn tls_of(argv: &[&str]) -> Result<Option<ServerTlsFiles>, String> {
        let cmd = Cmd::try_parse_from(std::iter::once("coordinator").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        server_tls(&cmd.args).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plaintext_dashboard_stays_on_loopback_unless_asked() {
        let local = ["--insecure", "--listen", "127.0.0.1:7400", "--http-listen"];
        let e = tls_of(&[&local[..], &["0.0.0.0:8443"]].concat()).unwrap_err();
        assert!(e.contains("--http-listen 0.0.0.0:8443"), "{e}");
        assert!(
            tls_of(&[&local[..], &["127.0.0.1:8443"]].concat())
                .unwrap()
                .is_none()
        );
        let anywhere = [
            "--insecure",
            "--insecure-listen-anywhere",
            "--listen",
            "0.0.0.0:7400",
            "--http-listen",
            "0.0.0.0:8443",
        ];
        assert!(tls_of(&anywhere).unwrap().is_none());
        let e = tls_of(&["--http-listen", "0.0.0.0:8443"]).unwrap_err();
        assert!(e.contains("--tls-cert"), "{e}");
    }
}
