//! `aviary crds`: print the generated CRDs.

use std::io::Write;
use std::process::ExitCode;

pub(crate) fn run() -> anyhow::Result<ExitCode> {
    let yaml = aviary_api::crd::flagger_crds_yaml()?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
