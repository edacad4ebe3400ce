//! `aviary canaries`: every canary of the fleet, as the agents report them to the coordinator.
//! (Reading one agent directly, `--agent URL`, is a separate source with the same columns.)

use std::process::ExitCode;

use aviary_proto::v1;

use super::rollout::{ClientArgs, Output, block_on, print_structured, table, time};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    client: ClientArgs,

    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,

    /// Only clusters of this region.
    #[arg(long)]
    region: Option<String>,

    /// Only this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,

    /// Only canaries in this Flagger phase (e.g. Progressing; case-insensitive).
    #[arg(long)]
    phase: Option<String>,
}

pub(crate) const COLUMNS: [&str; 8] = [
    "CLUSTER",
    "REGION",
    "NAMESPACE",
    "NAME",
    "STATUS",
    "WEIGHT",
    "FAILEDCHECKS",
    "LASTTRANSITIONTIME",
];

/// One table row per canary (the columns of [`COLUMNS`]).
pub(crate) fn rows(canaries: &[v1::FleetCanary]) -> Vec<Vec<String>> {
    canaries
        .iter()
        .map(|fc| {
            let c = fc.canary.clone().unwrap_or_default();
            vec![
                fc.cluster.clone(),
                fc.region.clone(),
                c.namespace,
                c.name,
                c.phase,
                c.canary_weight.to_string(),
                c.failed_checks.to_string(),
                time(c.last_transition_time.as_ref()),
            ]
        })
        .collect()
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let req = v1::ListCanariesRequest {
        cluster: args.cluster.unwrap_or_default(),
        region: args.region.unwrap_or_default(),
        namespace: args.namespace.unwrap_or_default(),
        phase: args.phase.unwrap_or_default(),
    };
    block_on(async {
        let resp = super::rollout::unary(&args.client, |mut c| {
            let req = req.clone();
            async move { c.list_canaries(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        match args.client.output {
            Output::Table => table(&COLUMNS, rows(&resp.canaries)),
            o => print_structured(o, &resp)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}
