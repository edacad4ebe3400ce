//! The `aviary` binary: parse the command line and hand over to a subcommand.
//!
//! - `cli`: the command line (clap), one subcommand per user task and per component.
//! - `commands`: one module per subcommand.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    cli::run()
}
