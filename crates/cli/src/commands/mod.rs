//! One module per subcommand.

pub(crate) mod agent;
pub(crate) mod canaries;
pub(crate) mod clusters;
pub(crate) mod coordinator;
pub(crate) mod crds;
pub(crate) mod demo;
pub(crate) mod events;
pub(crate) mod loadtester;
pub(crate) mod rollout;
pub(crate) mod simulate;
pub(crate) mod validate;

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// Writes one line to stdout. A closed pipe (`aviary validate … | head -1`) ends the process
/// quietly instead of panicking like `println!`.
pub(crate) fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// Logs to stderr at `--log-level` (a level or an `EnvFilter` directive), in colour on a
/// terminal.
pub(crate) fn init_logs(log_level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log_level)
        .with_context(|| format!("--log-level {log_level:?} is not a level or filter"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    Ok(())
}

/// A clap value parser: a Go duration (`30s`, `1m30s`) longer than zero. Intervals and timeouts
/// of zero would spin or expire at once, so they are refused here rather than at run time.
pub(crate) fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = aviary_api::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero; give a positive Go duration such as 1s or 500ms"
        ));
    }
    Ok(d)
}

/// Reads a file, or stdin for `-`, as UTF-8 text.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    String::from_utf8(bytes).with_context(|| format!("{}: not a text file (not UTF-8)", path.display()))
}

/// `aviary sample-app`.
pub(crate) fn sample_app(
    args: aviary_local::sample_app::SampleAppArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(aviary_local::sample_app::run(args, std::future::pending::<()>()))?;
    Ok(std::process::ExitCode::SUCCESS)
}
