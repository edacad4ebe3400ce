//! `aviary-bench-kube`: the Kubernetes scale benchmark (see `scripts/bench-kube`).

use std::path::PathBuf;
use std::time::Duration;

use aviary_differential::bench::{self, Options};
use aviary_differential::sides::{Programs, Side};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "N Deployment canaries on a real API server, Flagger and aviary")]
struct Args {
    /// Numbers of canaries, one run each per controller.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    sizes: Vec<usize>,
    /// Controllers (flagger, aviary).
    #[arg(long, value_delimiter = ',', default_value = "flagger,aviary")]
    controllers: Vec<String>,
    /// The aviary binary (a release build).
    #[arg(long, value_name = "FILE")]
    aviary: PathBuf,
    /// Analysis interval of the canaries, seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Idle window, seconds.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Analysis window, seconds.
    #[arg(long, default_value_t = 120)]
    analysis: u64,
    /// How long initialization (or the start of the analyses) may take, seconds.
    #[arg(long, default_value_t = 1200)]
    settle_limit: u64,
    /// Where logs and results.json go.
    #[arg(long, value_name = "DIR", default_value = "target/bench-kube")]
    out: PathBuf,
    /// Where the SVG plot goes.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Only draw the plot again from `<out>/results.json` (after editing which runs it keeps).
    #[arg(long, requires = "plot")]
    replot: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (true, Some(plot)) = (args.replot, &args.plot) {
        let results = args.out.join("results.json");
        let n = bench::replot(&results, plot)?;
        println!("plot: {} ({n} runs from {})", plot.display(), results.display());
        return Ok(());
    }
    let sides = args
        .controllers
        .iter()
        .map(|c| match c.as_str() {
            "flagger" => Ok(Side::Flagger),
            "aviary" => Ok(Side::Aviary),
            other => anyhow::bail!("--controllers: {other:?} is neither flagger nor aviary"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = Options {
        sizes: args.sizes,
        sides,
        programs: Programs::locate(args.aviary)?,
        interval: Duration::from_secs(args.interval),
        idle_window: Duration::from_secs(args.idle),
        analysis_window: Duration::from_secs(args.analysis),
        settle_limit: Duration::from_secs(args.settle_limit),
        logs: args.out.clone(),
        plot: args.plot.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = runtime.block_on(bench::run(&opts))?;
    println!("controller canaries | idle ... | analysing ...");
    for r in &runs {
        println!("{}", bench::row(r));
    }
    println!("results: {}", args.out.join("results.json").display());
    if let Some(plot) = args.plot {
        println!("plot: {}", plot.display());
    }
    Ok(())
}
