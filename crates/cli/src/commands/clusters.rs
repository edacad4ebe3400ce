//! `aviary clusters`: the clusters registered with the coordinator, with the versions their
//! canaries' primaries run (and the canary's, while it differs); `aviary clusters deregister
//! NAME` forgets a disconnected one.

use std::collections::BTreeMap;
use std::process::ExitCode;

use aviary_proto::v1;

use super::rollout::{ClientArgs, Output, age, block_on, print_structured, short_revision, table, unary};

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
                let canaries = unary(&args.client, |mut c| async move {
                    aviary_coordinator::client::list_all_canaries(&mut c, v1::ListCanariesRequest::default())
                        .await
                })
                .await?;
                let versions = versions_by_cluster(&canaries.canaries);
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
                            versions.get(&c.name).cloned().unwrap_or_else(|| "-".into()),
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
                        "VERSIONS",
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

/// Per cluster: `NAMESPACE/NAME=PRIMARY` for each canary, `→CANARY` added while the canary's
/// target describes another version than the primary runs.
fn versions_by_cluster(canaries: &[v1::FleetCanary]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for fc in canaries {
        let Some(c) = &fc.canary else { continue };
        let primary = short_revision(c.primary_revision.as_ref());
        let target = short_revision(c.target_revision.as_ref());
        let shown = if target == primary || target == "-" {
            format!("{}/{}={primary}", c.namespace, c.name)
        } else {
            format!("{}/{}={primary}→{target}", c.namespace, c.name)
        };
        out.entry(fc.cluster.clone()).or_default().push(shown);
    }
    out.into_iter().map(|(k, v)| (k, v.join(" "))).collect()
}
