//! The `aviary` binary: parse the command line and hand over to a subcommand.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    cli::run()
}
