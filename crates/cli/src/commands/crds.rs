//! `aviary crds`: print the generated CRDs.

use std::io::Write;
use std::process::ExitCode;

/// Which group's CRDs.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Group {
    /// Canary, MetricTemplate, AlertProvider (`deploy/crds/flagger-crds.yaml`), for every
    /// cluster that runs an agent.
    #[value(name = "flagger.app")]
    Flagger,
    /// FleetRollout (`deploy/crds/aviary-crds.yaml`), for the management cluster the
    /// coordinator watches.
    #[value(name = "aviary.dev")]
    Aviary,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The API group whose CRDs to print.
    #[arg(long, value_enum, default_value = "flagger.app")]
    group: Group,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let yaml = match args.group {
        Group::Flagger => aviary_api::crd::flagger_crds_yaml()?,
        Group::Aviary => aviary_api::crd::aviary_crds_yaml()?,
    };
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
