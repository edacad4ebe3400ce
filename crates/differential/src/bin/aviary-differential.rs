//! `aviary-differential`: runs the differential scenarios (all of them, or those named) with
//! Flagger and with aviary and prints what differed (see `scripts/differential`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use aviary_differential::{catalogue, report, runner, sides::Programs};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Flagger and aviary side by side on the same scenarios")]
struct Args {
    /// Only these scenarios (default: all).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// The aviary binary (default: `aviary` beside this program).
    #[arg(long, value_name = "FILE")]
    aviary: Option<PathBuf>,
    /// Where the controllers' logs go.
    #[arg(long, value_name = "DIR", default_value = "target/differential")]
    logs: PathBuf,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let all = catalogue::all();
    if args.list {
        for s in &all {
            println!("{:22} {:14} {}", s.name, s.provider, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let unknown: Vec<_> = args
        .scenarios
        .iter()
        .filter(|n| !all.iter().any(|s| s.name == n.as_str()))
        .collect();
    anyhow::ensure!(unknown.is_empty(), "no scenario named {unknown:?} (see --list)");
    let scenarios: Vec<_> = all
        .into_iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == s.name))
        .collect();
    let aviary = args
        .aviary
        .or_else(Programs::aviary_beside_me)
        .context("no aviary binary beside this program: cargo build -p aviary, or pass --aviary")?;
    let programs = Programs::locate(aviary)?;
    let opts = runner::Options {
        scenarios,
        programs,
        logs: args.logs,
        parallel: args.parallel,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(runner::run(&opts))?;
    print!("{}", report::render(&outcomes));
    let summary = report::Summary::of(&outcomes);
    Ok(if summary.undocumented == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
