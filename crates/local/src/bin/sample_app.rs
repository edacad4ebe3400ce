//! `aviary-sample-app`: the sample app as a stand-alone program, for the process tests and the
//! router benchmark (the `aviary sample-app` command runs the same code).

use clap::Parser;

#[derive(Parser)]
#[command(name = "aviary-sample-app", about = "A podinfo-like HTTP workload")]
struct Cli {
    #[command(flatten)]
    args: aviary_local::sample_app::SampleAppArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match aviary_local::sample_app::run(cli.args, std::future::pending()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aviary-sample-app: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
