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
    /// Watch a release go region by region on one machine, then a bad release get caught.
    ///
    /// Starts an in-memory coordinator, three agents on the embedded local platform
    /// (us-east-1a in us-east-1; eu-west-1a and eu-west-1b in eu-west-1) running a podinfo-like
    /// service as real processes behind real HTTP routers, and traffic to each. Rollout 1 takes
    /// podinfo 6.0.0 → 6.0.1 region by region; rollout 2 (6.0.2, which answers 30% of the
    /// requests with 500) fails its analysis in us-east-1 and never reaches eu-west-1. Shows a
    /// live view on a terminal (plain lines otherwise), then a summary. Exit status 0 when both
    /// rollouts ended that way. Ctrl-C stops everything, processes included.
    Demo(commands::demo::Args),

    /// Run one cluster's agent: watch Flagger's Canary, MetricTemplate and AlertProvider
    /// resources and drive one actor per canary.
    ///
    /// On Kubernetes: `--kubeconfig FILE` or the in-cluster configuration, all namespaces or
    /// `--namespace`; built-in metrics from `--metrics-server` (or `spec.metricsServer`);
    /// `--leader-election` elects one active replica through a Lease. On the embedded local
    /// platform: `--local FILE|DIR --state-dir DIR` runs LocalServices as processes behind a
    /// weighted router, watches the files (editing a version starts a canary) and persists each
    /// canary's status. Serves `/healthz`, `/metrics`, `/canaries` and `/events` on
    /// `--admin-listen`. Stops on SIGTERM or Ctrl-C, taking its processes down with it.
    Agent(Box<commands::agent::Args>),

    /// Run the podinfo-like sample workload used by the demo and the tests.
    ///
    /// Serves `/` (JSON with the version and hostname), `/version`, `/healthz`, `/readyz`,
    /// `/status/{code}`, `/delay/{seconds}` and `/metrics`; `--error-rate` answers that share of
    /// requests with 500 and `--latency-ms` delays every answer. Exits on SIGTERM, Ctrl-C, or
    /// when its parent process dies.
    #[command(disable_version_flag = true)]
    SampleApp(aviary_local::sample_app::SampleAppArgs),

    /// Recent events of the canaries of one agent (`--agent http://ADMIN`).
    Events(commands::events::Args),

    /// Check Canary, MetricTemplate, AlertProvider, LocalService and FleetRollout manifests.
    ///
    /// Reads a file, a directory (recursively, *.yaml and *.yml) or stdin (`-`), including
    /// multi-document YAML, and prints one line per resource: `ok`, or each error and warning
    /// with its field path. Other kinds (Deployments, Knative Services, …) are listed as skipped.
    /// Exit status: 0 when no resource has an error, 1 when any has, 2 when the input cannot be
    /// read (missing file, not YAML).
    Validate(commands::validate::Args),

    /// Print the CustomResourceDefinitions as YAML, generated from aviary's types.
    ///
    /// By default the flagger.app/v1beta1 ones (Canary, MetricTemplate, AlertProvider), what
    /// `deploy/crds/flagger-crds.yaml` holds: `aviary crds | kubectl apply -f -`. With
    /// `--group aviary.dev` the FleetRollout CRD for a management cluster
    /// (`deploy/crds/aviary-crds.yaml`).
    Crds(commands::crds::Args),

    /// Run the analysis engine on simulated metrics and webhooks and print the timeline.
    ///
    /// The simulation initializes the canary, presents one new revision of the target and
    /// ticks at the canary's analysis interval (virtual time) until the analysis ends. The
    /// script gives, per metric name, the value of each successive query, and per webhook
    /// name, the outcome (pass or fail) of each successive call; the last entry repeats.
    /// Metrics and webhooks not in the script are healthy; a name in the script that is not
    /// one of the canary's is refused. Exit status: 0 when the simulation ran (whatever the
    /// outcome), 1 for an invalid canary, 2 for unreadable input, a script naming what the
    /// canary does not have, or a file with several canaries and no --canary.
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

    /// Run the fleet coordinator: the gRPC Fleet API (operators, CI, grpcurl) and the
    /// AgentLink stream of every agent, with health and server reflection.
    ///
    /// Without `--etcd`: one replica with an in-memory store. With `--etcd URLS`: one replica
    /// of several, state in etcd, the leader elected on an etcd lease (`--lease-ttl`, default
    /// 2s); followers redirect to the leader. Prints `aviary coordinator listening on ADDR`
    /// once ready; on SIGTERM or Ctrl-C it resigns leadership and stops gracefully.
    Coordinator(Box<commands::coordinator::Args>),

    /// Fleet rollouts: apply, get, list, watch, wait, pause, resume, abort, approve, skip, retry.
    ///
    /// Talks to the coordinator at `--coordinator` (or `AVIARY_COORDINATOR`); errors print the
    /// server's message with the field path. `wait` exits 0 when the rollout Succeeded and 1
    /// when it Failed or was Aborted.
    Rollout(commands::rollout::Args),

    /// The clusters registered with the coordinator.
    Clusters(commands::clusters::Args),

    /// Every canary of the fleet (CLUSTER, REGION, NAMESPACE, NAME, STATUS, WEIGHT, …).
    Canaries(commands::canaries::Args),

    /// Print the Markdown command-line reference (docs/cli.md).
    #[command(hide = true)]
    CliReference,
    /// Certificates for mutual TLS: `certs init DIR` (a CA and the coordinator's certificate),
    /// `certs issue DIR --agent CLUSTER`, `certs issue DIR --user NAME --role ROLE`, and
    /// `certs token-line` for the token file.
    Certs(commands::certs::Args),
}

/// Parses the command line and runs the subcommand.
pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Agent(args) => commands::agent::run(*args),
        Command::SampleApp(args) => commands::sample_app(args),
        Command::Events(args) => commands::events::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Crds(args) => commands::crds::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Loadtester(args) => commands::loadtester::run(args),
        Command::Coordinator(args) => commands::coordinator::run(*args),
        Command::Rollout(args) => commands::rollout::run(args),
        Command::Clusters(args) => commands::clusters::run(args),
        Command::Canaries(args) => commands::canaries::run(args),
        Command::CliReference => {
            use clap::CommandFactory as _;
            commands::out(crate::reference::markdown(&Cli::command()).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => commands::certs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<commands::rollout::ConnectionError>().is_some() {
                ExitCode::from(commands::rollout::EXIT_CONNECTION)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
