//! The `aviary` binary: parse the command line and hand over to a subcommand.
//!
//! - `cli`: the command line (clap), one subcommand per user task and per component.
//! - `commands`: one module per subcommand.
//! - `reference`: the Markdown CLI reference (`docs/cli.md`) generated from the definition.

mod cli;
mod commands;
mod reference;

fn main() -> std::process::ExitCode {
    cli::run()
}
