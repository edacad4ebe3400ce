//! `aviary clusters`: the clusters registered with the coordinator; `aviary clusters deregister
//! NAME` forgets a disconnected one.

use std::process::ExitCode;

use aviary_proto::v1;

use super::rollout::{ClientArgs, Output, age, block_on, print_structured, table, unary};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: Option<ClustersCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum ClustersCommand {
    /// Forget a disconnected cluster: its registration and its canaries (role admin; audited).
    /// Refused while its agent is connected. An agent that connects again registers again;
    /// registrations also expire by themselves (`aviary coordinator --cluster-ttl`).
    Deregister {
        /// The cluster's name.
        name: String,
        /// Who acts (recorded in the audit log).
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ClustersCommand::Deregister { name, actor, reason }) => {
            deregister(&args.client, name, actor, reason)
        }
        None => list(args.client),
    }
}

fn deregister(client: &ClientArgs, name: String, actor: String, reason: String) -> anyhow::Result<ExitCode> {
    block_on(async {
        let resp = unary(client, |mut c| {
            let req = v1::DeregisterClusterRequest {
                name: name.clone(),
                actor: actor.clone(),
                reason: reason.clone(),
            };
            async move { c.deregister_cluster(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        match client.output {
            Output::Table => println!("cluster {name} deregistered"),
            o => print_structured(o, &resp)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn list(client: ClientArgs) -> anyhow::Result<ExitCode> {
    let args = Args {
        client,
        command: None,
    };
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
