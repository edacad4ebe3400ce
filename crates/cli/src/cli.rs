//! Command-line definition: one subcommand per user task and per component.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// aviary: progressive delivery for fleets of Kubernetes clusters.
///
/// Inside a cluster aviary runs Flagger's Canary, MetricTemplate and AlertProvider resources
/// unchanged; above the clusters a coordinator sequences a release region by region.
#[derive(Parser, Debug)]
#[command(name = "aviary", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check Canary, MetricTemplate, AlertProvider, LocalService and FleetRollout manifests.
    ///
    /// Reads a file, a directory (recursively, *.yaml and *.yml) or stdin (`-`), including
    /// multi-document YAML, and prints one line per resource: `ok`, or each error and warning
    /// with its field path. Other kinds (Deployments, Knative Services, …) are listed as skipped.
    /// Exit status: 0 when no resource has an error, 1 when any has, 2 when the input cannot be
    /// read (missing file, not YAML).
    Validate(commands::validate::Args),

    /// Print the flagger.app/v1beta1 CustomResourceDefinitions (Canary, MetricTemplate,
    /// AlertProvider) as YAML, generated from aviary's types.
    ///
    /// The output is what `deploy/crds/flagger-crds.yaml` holds; apply it with
    /// `aviary crds | kubectl apply -f -`.
    Crds,
}

/// Parses the command line and runs the subcommand.
pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Crds => commands::crds::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
