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
    /// Run one cluster's agent: watch Flagger's Canary, MetricTemplate and AlertProvider
    /// resources and drive one actor per canary.
    ///
    /// On Kubernetes: `--kubeconfig FILE` or the in-cluster configuration, all namespaces or
    /// `--namespace`; built-in metrics from `--metrics-server` (or `spec.metricsServer`);
    /// `--leader-election` elects one active replica through a Lease. Serves `/healthz`,
    /// `/metrics`, `/canaries` and `/events` on `--admin-listen`. Stops on SIGTERM or Ctrl-C.
    Agent(Box<commands::agent::Args>),

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

    /// Run the analysis engine on simulated metrics and webhooks and print the timeline.
    ///
    /// The simulation initializes the canary, presents one new revision of the target and
    /// ticks at the canary's analysis interval (virtual time) until the analysis ends. The
    /// script gives, per metric name, the value of each successive query, and per webhook
    /// name, the outcome (pass or fail) of each successive call; the last entry repeats.
    /// Metrics and webhooks not in the script are healthy. Exit status: 0 when the simulation
    /// ran (whatever the outcome), 1 for an invalid canary, 2 for unreadable input.
    Simulate(commands::simulate::Args),

    /// Run Flagger's load tester: a webhook target that runs load tests and keeps manual gates.
    ///
    /// Compatible with flagger-loadtester, so canaries that call
    /// `http://flagger-loadtester.test/` keep working. `POST /` runs the task in the payload's
    /// metadata: `cmd` (`sh -c`, in the background, answered 202; the same command for the same
    /// canary runs once at a time), `bash` (blocking: 200 on exit 0, 500 otherwise;
    /// `returnCmdOutput: "true"` returns the output), `helm`/`helmv3`/`kubectl` (when installed);
    /// `logCmdOutput: "true"` logs the output. Gates: `/gate/check` answers 200 once
    /// `/gate/open` was called for the canary and 403 after `/gate/close`; `/gate/approve`
    /// always passes, `/gate/halt` never; `/rollback/check`, `/rollback/open`,
    /// `/rollback/close` drive a rollback webhook. Also `/healthz` and `/metrics`. Prints
    /// `aviary loadtester listening on ADDR` once ready; stops on SIGTERM or Ctrl-C.
    Loadtester(commands::loadtester::Args),
}

/// Parses the command line and runs the subcommand.
pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => commands::agent::run(*args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Crds => commands::crds::run(),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Loadtester(args) => commands::loadtester::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
