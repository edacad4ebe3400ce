//! `aviary clusters`: the clusters registered with the coordinator.

use std::process::ExitCode;

use aviary_proto::v1;

use super::rollout::{ClientArgs, Output, age, block_on, print_structured, table, unary};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    block_on(async {
        let resp = unary(&args.client, |mut c| async move {
            c.list_clusters(v1::ListClustersRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        match args.client.output {
            Output::Table => {
                let rows = resp
                    .clusters
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.region.clone(),
                            if c.connected { "yes" } else { "no" }.to_string(),
                            c.canaries.to_string(),
                            c.agent_version.clone(),
                            age(c.last_seen.as_ref()),
                            c.labels
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "REGION",
                        "CONNECTED",
                        "CANARIES",
                        "AGENT",
                        "LAST SEEN",
                        "LABELS",
                    ],
                    rows,
                );
            }
            o => print_structured(o, &resp)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}
