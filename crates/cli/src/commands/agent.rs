//! `aviary agent`: one cluster's agent. Thin: flags → `aviary_agent::config::AgentConfig` →
//! `aviary_agent::kube::run` or `aviary_agent::local::run`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use aviary_agent::config::{AgentConfig, ClientSettings, GlobalNotifier, PlatformConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A kubeconfig file; without it (and without --local) the in-cluster configuration is used.
    #[arg(long, value_name = "FILE", conflicts_with = "local")]
    kubeconfig: Option<PathBuf>,

    /// Watch canaries in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,

    /// Prometheus for the built-in metrics and inline queries, unless a canary sets
    /// spec.metricsServer.
    #[arg(long, value_name = "URL", default_value = "http://prometheus:9090")]
    metrics_server: String,

    /// Traffic provider of canaries without spec.provider (Flagger's -mesh-provider).
    #[arg(long, value_name = "NAME", default_value = aviary_core::DEFAULT_PROVIDER)]
    provider: String,

    /// This cluster's name in the fleet (added to alerts as `Cluster`).
    #[arg(long, value_name = "NAME", default_value = "")]
    cluster: String,

    /// This cluster's region.
    #[arg(long, value_name = "R", default_value = "")]
    region: String,

    /// A label for the coordinator's wave selectors (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// The fleet coordinator (`http://host:port`).
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,

    /// The CA of the coordinator's certificate (with an `https://` --coordinator).
    #[arg(long, value_name = "FILE", env = "AVIARY_CA")]
    ca: Option<std::path::PathBuf>,

    /// This agent's client certificate: its identity is the cluster, in the URI SAN
    /// `spiffe://<trust-domain>/cluster/<--cluster>` (`aviary certs issue DIR --agent CLUSTER`).
    #[arg(long, value_name = "FILE", env = "AVIARY_CERT", requires = "key")]
    cert: Option<std::path::PathBuf>,

    /// The key of --cert.
    #[arg(long, value_name = "FILE", env = "AVIARY_KEY", requires = "cert")]
    key: Option<std::path::PathBuf>,

    /// Where /healthz, /metrics, /canaries and /events are served (loopback by default: pass
    /// 0.0.0.0:8080 for Prometheus and probes from outside the pod, as deploy/ does).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    admin_listen: SocketAddr,

    /// Floor of the analysis interval (Flagger's is 10s), a Go duration.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::positive_duration)]
    min_analysis_interval: Duration,

    /// Elect one active replica through a coordination.k8s.io Lease.
    #[arg(long, conflicts_with = "local")]
    leader_election: bool,

    /// Requests per second to the API server (client-side limit; Flagger's default is 100).
    #[arg(long, value_name = "N", default_value_t = ClientSettings::default().qps)]
    kubeconfig_qps: f64,

    /// Requests the client may send at once above --kubeconfig-qps (Flagger's default is 250).
    #[arg(long, value_name = "N", default_value_t = ClientSettings::default().burst)]
    kubeconfig_burst: u32,

    /// GET Deployments, Services, router objects and Canaries on every tick, as Flagger does,
    /// instead of reading them from watches (the default: an idle canary then makes no request;
    /// docs/benchmarks.md, "Kubernetes scale").
    #[arg(long, conflicts_with = "local")]
    no_watch_cache: bool,

    /// The watch cache, which is the default (kept so that older manifests still start).
    #[arg(long, hide = true, conflicts_with_all = ["local", "no_watch_cache"])]
    watch_cache: bool,

    /// Namespace of the leader election Lease (the watched namespace when --namespace is set).
    #[arg(
        long,
        value_name = "NS",
        default_value = "kube-system",
        requires = "leader_election"
    )]
    leader_election_namespace: String,

    /// Global event webhook, used for canaries without `event` webhooks.
    #[arg(long, value_name = "URL", env = "EVENT_WEBHOOK_URL")]
    event_webhook: Option<String>,

    /// Global Slack notifier.
    #[arg(long, value_name = "URL", env = "SLACK_URL")]
    slack_url: Option<String>,
    /// Channel of the global Slack notifier.
    #[arg(long, value_name = "CHANNEL")]
    slack_channel: Option<String>,
    /// User name the global Slack notifier posts as.
    #[arg(long, value_name = "USER")]
    slack_user: Option<String>,
    /// HTTP proxy for the global Slack notifier.
    #[arg(long, value_name = "URL", env = "SLACK_PROXY_URL")]
    slack_proxy_url: Option<String>,
    /// Global MS Teams notifier (wins over Slack).
    #[arg(long, value_name = "URL", env = "MSTEAMS_URL")]
    msteams_url: Option<String>,

    /// Run the embedded local platform from this YAML file or directory.
    #[arg(long, value_name = "FILE|DIR", requires = "state_dir")]
    local: Option<PathBuf>,

    /// Where the local platform persists its state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Log level (`error`, `warn`, `info`, `debug`) or a tracing filter.
    #[arg(long, default_value = "info", env = "AVIARY_LOG")]
    log_level: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logs(&args.log_level)?;
    // Checked before anything starts: a URL the link can never use must not retry forever.
    for url in args.coordinator.iter().flat_map(|c| c.split(',')) {
        aviary_coordinator::client::checked_url(url).map_err(|e| anyhow::anyhow!("--coordinator: {e}"))?;
    }

    let platform = match (&args.local, &args.state_dir) {
        (Some(config), Some(state_dir)) => PlatformConfig::Local {
            config: config.clone(),
            state_dir: state_dir.clone(),
        },
        _ => PlatformConfig::Kube {
            kubeconfig: args.kubeconfig.clone(),
            namespace: args.namespace.clone(),
            leader_election: args.leader_election,
            leader_election_namespace: args.leader_election_namespace.clone(),
            client: ClientSettings {
                qps: args.kubeconfig_qps,
                burst: args.kubeconfig_burst,
                watch_cache: args.watch_cache || !args.no_watch_cache,
            },
        },
    };
    let config = AgentConfig {
        cluster: args.cluster,
        region: args.region,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        coordinator: args.coordinator,
        coordinator_tls: aviary_agent::config::CoordinatorTls {
            ca: args.ca,
            cert: args.cert,
            key: args.key,
        },
        admin_listen: args.admin_listen,
        min_analysis_interval: args.min_analysis_interval,
        metrics_server: args.metrics_server,
        default_provider: args.provider,
        event_webhook: args.event_webhook,
        notifier: GlobalNotifier {
            slack_url: args.slack_url,
            slack_channel: args.slack_channel,
            slack_user: args.slack_user,
            slack_proxy_url: args.slack_proxy_url,
            msteams_url: args.msteams_url,
            ..GlobalNotifier::default()
        },
        platform,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        match config.platform {
            PlatformConfig::Local { .. } => aviary_agent::local::run(config, shutdown).await,
            PlatformConfig::Kube { .. } => aviary_agent::kube::run(config, shutdown).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
