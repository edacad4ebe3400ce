//! `aviary canaries`: every canary of the fleet, as the agents report them to the coordinator;
//! or, with `--agent URL`, the canaries of one agent with `kubectl get canaries`' columns.

use std::process::ExitCode;

use aviary_proto::v1;

use super::rollout::{ClientArgs, Output, block_on, print_structured, short_revision, table, time};

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

    /// Only canaries in this Flagger phase (e.g. Progressing; case-insensitive; an unknown
    /// phase is refused).
    #[arg(long, value_parser = phase)]
    phase: Option<String>,

    /// Ask one agent's admin endpoint instead of the coordinator (e.g. http://127.0.0.1:8080);
    /// prints NAMESPACE, NAME, STATUS, WEIGHT, LASTTRANSITIONTIME like `kubectl get canaries`.
    #[arg(long, env = "AVIARY_AGENT", value_name = "URL", conflicts_with_all = ["cluster", "region"])]
    agent: Option<String>,
}

/// A Flagger phase, case-insensitively, as Flagger spells it; or the list of phases.
fn phase(s: &str) -> Result<String, String> {
    use aviary_api::CanaryPhase;
    let known = || {
        CanaryPhase::ALL
            .iter()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
    };
    known()
        .find(|p| p.eq_ignore_ascii_case(s))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "unknown phase{}; Flagger's phases are {}",
                aviary_api::suggest::did_you_mean(s, known()),
                known().collect::<Vec<_>>().join(", ")
            )
        })
}

pub(crate) const COLUMNS: [&str; 10] = [
    "CLUSTER",
    "REGION",
    "NAMESPACE",
    "NAME",
    "STATUS",
    "WEIGHT",
    "FAILEDCHECKS",
    "PRIMARY",
    "CANARY",
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
                short_revision(c.primary_revision.as_ref()),
                short_revision(c.target_revision.as_ref()),
                time(c.last_transition_time.as_ref()),
            ]
        })
        .collect()
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(agent) = &args.agent {
        return from_agent(agent, &args);
    }
    let req = v1::ListCanariesRequest {
        cluster: args.cluster.unwrap_or_default(),
        region: args.region.unwrap_or_default(),
        namespace: args.namespace.unwrap_or_default(),
        phase: args.phase.unwrap_or_default(),
        ..Default::default()
    };
    block_on(async {
        let resp = super::rollout::unary(&args.client, |mut c| {
            let req = req.clone();
            async move { aviary_coordinator::client::list_all_canaries(&mut c, req).await }
        })
        .await?;
        match args.client.output {
            Output::Table => table(&COLUMNS, rows(&resp.canaries)),
            o => print_structured(o, &resp)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `--agent URL`: the agent's `/canaries` (a `kubectl get canaries -o json` list).
fn from_agent(agent: &str, args: &Args) -> anyhow::Result<ExitCode> {
    let url = format!("{}/canaries", agent.trim_end_matches('/'));
    let list: serde_json::Value = super::events::agent_json(&url, "/canaries")?;
    let items: Vec<&serde_json::Value> = list["items"]
        .as_array()
        .map(|a| a.iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            args.namespace
                .as_deref()
                .is_none_or(|n| c["metadata"]["namespace"] == n)
        })
        .filter(|c| {
            args.phase.as_deref().is_none_or(|p| {
                c["status"]["phase"]
                    .as_str()
                    .unwrap_or("")
                    .eq_ignore_ascii_case(p)
            })
        })
        .collect();
    match args.client.output {
        Output::Table => {
            let s = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let rows = items
                .iter()
                .map(|c| {
                    vec![
                        s(&c["metadata"]["namespace"]),
                        s(&c["metadata"]["name"]),
                        s(&c["status"]["phase"]),
                        s(&c["status"]["canaryWeight"]),
                        s(&c["status"]["lastTransitionTime"]),
                    ]
                })
                .collect();
            table(
                &["NAMESPACE", "NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"],
                rows,
            );
        }
        o => {
            let filtered = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            print_structured(o, &filtered)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
