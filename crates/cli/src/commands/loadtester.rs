//! `aviary loadtester`: Flagger's load tester (webhook target for load tests, manual gates).
//! Thin: flags → `aviary_providers::loadtester`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use aviary_providers::loadtester::{Config, Loadtester, namespace_filter};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Port to listen on (Flagger's default; its Helm chart uses 8080 behind a Service on port 80).
    #[arg(long, default_value_t = 9090)]
    port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,

    /// Per-command timeout, a Go duration (`30s`, `10m`, `1h`); the command and everything it
    /// started are killed after it.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,

    /// Serve only payloads whose namespace matches this regular expression; others get
    /// 403 Forbidden. Unanchored as in Flagger: `test` also matches `test-2` and `my-test`;
    /// write `^(test|staging)$` or add --anchor-namespace-regexp.
    #[arg(long, value_name = "REGEX")]
    namespace_regexp: Option<String>,

    /// Match --namespace-regexp against the whole namespace (as `^(?:REGEX)$`).
    #[arg(long, requires = "namespace_regexp")]
    anchor_namespace_regexp: bool,

    /// Persist the gates (`/gate/*`, `/rollback/*`) in this JSON file, written atomically on
    /// every change and reloaded on start, so approvals survive a restart. Without it the gates
    /// live in memory, as in Flagger.
    #[arg(long, value_name = "FILE", env = "AVIARY_LOADTESTER_STATE_FILE")]
    state_file: Option<PathBuf>,

    /// A `concord` task sends the content of its payload's `apiKeyPath` file to its payload's
    /// server; with this flag only files in DIR may be named (Flagger accepts any path).
    #[arg(long, value_name = "DIR", env = "AVIARY_LOADTESTER_CONCORD_KEY_DIR")]
    concord_key_dir: Option<PathBuf>,

    /// Log level (`error`, `warn`, `info`, `debug`) or a tracing filter such as
    /// `aviary_providers=debug`.
    #[arg(long, default_value = "info", env = "AVIARY_LOG")]
    log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = aviary_api::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the timeout must be longer than zero".into());
    }
    Ok(d)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logs(&args.log_level)?;
    let namespace_regexp = args
        .namespace_regexp
        .as_deref()
        .map(|re| namespace_filter(re, args.anchor_namespace_regexp))
        .transpose()
        .with_context(|| {
            format!(
                "--namespace-regexp {:?} is not a regular expression",
                args.namespace_regexp.as_deref().unwrap_or_default()
            )
        })?;
    let config = Config {
        listen: SocketAddr::new(args.host, args.port),
        timeout: args.timeout,
        namespace_regexp,
        state_file: args.state_file,
        concord_key_dir: args.concord_key_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let lt = Loadtester::start(config).await?;
        // Scripts and tests read the address from this line (useful with --port 0).
        println!("aviary loadtester listening on {}", lt.local_addr());
        shutdown_signal().await?;
        lt.stop().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
