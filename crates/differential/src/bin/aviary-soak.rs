//! `aviary-soak`: the bounded soak of a local agent and a coordinator (see `scripts/soak`).

use std::path::PathBuf;
use std::time::Duration;

use aviary_differential::soak::{self, Options, Trend};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "One local agent with many canaries, a coordinator rolling releases; RSS and fds must not grow"
)]
struct Args {
    /// The aviary binary.
    #[arg(long, value_name = "FILE")]
    aviary: PathBuf,
    /// Canaries on the agent.
    #[arg(long, default_value_t = 1000)]
    canaries: usize,
    /// Canaries rolled continuously (each one rollout after another).
    #[arg(long, default_value_t = 4)]
    rolled: usize,
    /// How long releases are rolled, seconds.
    #[arg(long, default_value_t = 1800)]
    duration: u64,
    /// Sampling period, seconds.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// How long the agent may take until every canary is Initialized, seconds.
    #[arg(long, default_value_t = 900)]
    settle_limit: u64,
    /// Where logs, samples.csv and results.json go.
    #[arg(long, value_name = "DIR", default_value = "target/soak")]
    out: PathBuf,
    /// Where the SVG plot goes.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rolled <= args.canaries,
        "--rolled {} exceeds --canaries {}",
        args.rolled,
        args.canaries
    );
    let opts = Options {
        aviary: std::path::absolute(&args.aviary)?,
        canaries: args.canaries,
        rolled: args.rolled,
        duration: Duration::from_secs(args.duration),
        every: Duration::from_secs(args.every.max(1)),
        settle_limit: Duration::from_secs(args.settle_limit),
        out: std::path::absolute(&args.out)?,
        plot: args.plot,
    };
    let (_, trends, summary) = soak::run(&opts)?;
    let table = soak::markdown(&trends, &summary);
    std::fs::write(opts.out.join("results.md"), &table)?;
    println!("{table}");
    anyhow::ensure!(
        trends.iter().all(Trend::pass),
        "the soak failed: a series grew after the warm-up"
    );
    Ok(())
}
