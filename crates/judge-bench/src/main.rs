//! `bench-judge`: runs the judge's benchmark; see scripts/bench-judge.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    aviary_judge_bench::report::main(aviary_judge_bench::report::Args::parse())
}
