//! `aviary rollout …`: fleet rollouts through the coordinator's Fleet API; also the client
//! plumbing `aviary clusters` and `aviary canaries` share (coordinator URL, leader following,
//! output formats, tables).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use aviary_coordinator::client::{
    ClientTls, FleetConn, call_leader_retrying_with, checked_url, is_transport_failure, is_unreachable,
    leader_from_status, normalize_url,
};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::out;

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// Where the coordinator is and how to print.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClientArgs {
    /// The coordinator's URL (`http://host:7400` or `host:7400`). A follower replica redirects
    /// to the leader.
    #[arg(
        long,
        env = "AVIARY_COORDINATOR",
        default_value = "http://127.0.0.1:7400",
        value_parser = coordinator_url,
        global = true
    )]
    pub(crate) coordinator: String,

    /// The CA that signed the coordinator's certificate (an `https://` URL means TLS).
    #[arg(long, env = "AVIARY_CA", value_name = "FILE", global = true)]
    pub(crate) ca: Option<PathBuf>,

    /// Your client certificate (`aviary certs issue DIR --user NAME --role ROLE`).
    #[arg(
        long,
        env = "AVIARY_CERT",
        value_name = "FILE",
        global = true,
        requires = "key"
    )]
    pub(crate) cert: Option<PathBuf>,

    /// The key of --cert.
    #[arg(
        long,
        env = "AVIARY_KEY",
        value_name = "FILE",
        global = true,
        requires = "cert"
    )]
    pub(crate) key: Option<PathBuf>,

    /// A bearer token instead of a client certificate (its sha256 is in the coordinator's
    /// token file).
    #[arg(
        long,
        env = "AVIARY_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub(crate) output: Output,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: RolloutCommand,
}

/// Who acts: only on the commands that change a rollout.
#[derive(clap::Args, Debug, Clone)]
struct Actor {
    /// Who acts (recorded in the rollout's history; with mutual TLS the certificate's
    /// identity is recorded and this is kept as a comment).
    #[arg(long, env = "USER", default_value = "cli")]
    actor: String,
}

#[derive(clap::Subcommand, Debug)]
enum RolloutCommand {
    /// Create a rollout from a FleetRollout manifest (YAML or JSON; `-` for stdin).
    Apply {
        /// The manifest, or `-` for stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
        file: PathBuf,
        /// Print the plan the coordinator would pin (waves, clusters in order, concurrency,
        /// budgets) without creating the rollout.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        who: Actor,
    },
    /// Show one rollout: plan, waves, clusters, verdicts and history.
    Get {
        /// The rollout's name.
        name: String,
    },
    /// List rollouts, newest first.
    List,
    /// Follow a rollout live until it ends (progress bars on a terminal, lines otherwise).
    Watch {
        /// The rollout's name.
        name: String,
    },
    /// Block until the rollout ends: exit 0 when Succeeded, 1 when Failed or Aborted
    /// (2 on timeout or error). For CI pipelines.
    Wait {
        /// The rollout's name.
        name: String,
        /// Give up after this Go duration (`30m`); 0 waits as long as it takes.
        #[arg(long, default_value = "0")]
        timeout: String,
    },
    /// Pause: no new cluster starts; running canaries finish.
    Pause {
        /// The rollout's name.
        name: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Resume a paused rollout.
    Resume {
        /// The rollout's name.
        name: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Abort: roll back per the failure policy, then Aborted.
    Abort {
        /// The rollout's name.
        name: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Approve a wave with `approval: manual` (also in advance).
    Approve {
        /// The rollout's name.
        name: String,
        /// The wave to approve.
        wave: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Skip a cluster that has not started or has failed.
    Skip {
        /// The rollout's name.
        name: String,
        /// The cluster to skip.
        cluster: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Start a failed cluster again (a new attempt).
    Retry {
        /// The rollout's name.
        name: String,
        /// The cluster to start again.
        cluster: String,
        #[command(flatten)]
        who: Actor,
    },
    /// Delete an ended rollout (Succeeded, Failed, Aborted) so its name can be used again;
    /// `--force` aborts an active one first and deletes it once the rollback ended. Role admin.
    Delete {
        /// The rollout's name.
        name: String,
        /// Abort an active rollout first (rolling back per its failure policy), wait for the
        /// rollback to end, then delete it.
        #[arg(long)]
        force: bool,
        /// Why (recorded with the abort of --force).
        #[arg(long, default_value = "", requires = "force")]
        reason: String,
        /// How long --force waits for the rollback (Go duration).
        #[arg(long, default_value = "60s", requires = "force", value_parser = super::positive_duration)]
        timeout: Duration,
        #[command(flatten)]
        who: Actor,
    },
}

/// Runs a future on a small runtime.
pub(crate) fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// The coordinator could not be reached, did not speak gRPC, or the connection was lost: the
/// command exits with [`EXIT_CONNECTION`] (see docs/cli.md).
#[derive(Debug)]
pub(crate) struct ConnectionError(pub(crate) String);

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectionError {}

/// Exit status of a command that could not talk to the coordinator.
pub(crate) const EXIT_CONNECTION: u8 = 3;

/// The transport error behind a status, down to its root (`Connection refused (os error 111)`).
fn transport_detail(s: &tonic::Status) -> String {
    let mut parts = vec![s.message().to_string()];
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// A gRPC error as the user reads it: the code and the server's message (with its field path);
/// a transport failure says which address failed and what to check.
pub(crate) fn status_error(url: &str, s: tonic::Status) -> anyhow::Error {
    // An HTTP server that is not gRPC answers without a grpc-status ("grpc-status header
    // missing, mapped from HTTP status code 404", "missing grpc-status trailer").
    let not_grpc = s.message().contains("grpc-status");
    if !is_transport_failure(&s) && !not_grpc {
        return anyhow!("{:?}: {}", s.code(), s.message());
    }
    let url = normalize_url(url);
    let detail = transport_detail(&s);
    if is_unreachable(&s) {
        anyhow::Error::new(ConnectionError(format!(
            "cannot reach the coordinator at {url} ({detail}); is it running there? Point the CLI \
             at it with --coordinator URL or AVIARY_COORDINATOR (default http://127.0.0.1:7400)"
        )))
    } else {
        anyhow::Error::new(ConnectionError(format!(
            "{url} did not answer as a gRPC server ({detail}): is this aviary's gRPC port? \
             `aviary coordinator` serves gRPC on its --listen address (port 7400 by default), \
             not on an agent's admin port"
        )))
    }
}

/// The connection dropped mid-watch or mid-wait and could not be opened again.
fn lost_connection(url: &str, what: &str, last: Option<&v1::Rollout>, s: &tonic::Status) -> anyhow::Error {
    let seen = last
        .map(|r| format!("; last seen {}: {}", r.phase, r.message))
        .unwrap_or_default();
    anyhow::Error::new(ConnectionError(format!(
        "lost the connection to the coordinator at {} while {what} ({}){seen}; the rollout \
         goes on without this command: run it again once the coordinator is reachable",
        normalize_url(url),
        transport_detail(s)
    )))
}

/// `--coordinator` as clap reads it: `HOST:PORT` or `http://HOST:PORT`, other schemes refused.
pub(crate) fn coordinator_url(s: &str) -> Result<String, String> {
    checked_url(s).map_err(|e| e.to_string())
}

/// How long a command rides out a coordinator election (a crashed leader is replaced within
/// one lease TTL plus half a second; a new leader loads its state in milliseconds).
pub(crate) const ELECTION_BUDGET: Duration = Duration::from_secs(15);

impl ClientArgs {
    /// The certificates and token to connect with.
    pub(crate) fn tls(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            token: self.token.clone(),
        }
    }
}

/// One unary call, following the leader and riding out an election.
pub(crate) async fn unary<T, F, Fut>(args: &ClientArgs, f: F) -> anyhow::Result<T>
where
    F: FnMut(FleetConn) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    call_leader_retrying_with(&args.coordinator, &args.tls(), ELECTION_BUDGET, f)
        .await
        .map_err(|s| status_error(&args.coordinator, s))
}

/// Sends `request` with `rpc` to the leader (following it through an election); the rollout it
/// answers with.
async fn send<Q, F, Fut>(args: &ClientArgs, request: Q, rpc: F) -> anyhow::Result<v1::Rollout>
where
    Q: Clone,
    F: Fn(FleetConn, Q) -> Fut,
    Fut: Future<Output = Result<tonic::Response<v1::Rollout>, tonic::Status>>,
{
    unary(args, |cl| {
        let call = rpc(cl, request.clone());
        async move { call.await.map(tonic::Response::into_inner) }
    })
    .await
}

/// GetRollout.
async fn get(args: &ClientArgs, name: &str) -> anyhow::Result<v1::Rollout> {
    unary(args, |mut cl| {
        let name = name.to_string();
        async move {
            cl.get_rollout(v1::GetRolloutRequest { name })
                .await
                .map(|r| r.into_inner())
        }
    })
    .await
}

fn cluster_verb(name: String, cluster: String, actor: &str) -> v1::ClusterVerbRequest {
    v1::ClusterVerbRequest {
        name,
        cluster,
        actor: actor.into(),
    }
}

/// Prints as JSON or YAML (protobuf's JSON field names).
pub(crate) fn print_structured(o: Output, v: &impl Serialize) -> anyhow::Result<()> {
    match o {
        Output::Json => out(serde_json::to_string_pretty(v)?),
        Output::Yaml | Output::Table => out(serde_yaml_ng::to_string(v)?.trim_end()),
    }
    Ok(())
}

/// Prints an aligned table.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("   ")
    };
    out(line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        out(line(r));
    }
}

/// RFC 3339 time or `-`.
pub(crate) fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(aviary_proto::ts::to_jiff)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// How long ago (`12s`, `3m`, `2h`), or `-`.
pub(crate) fn age(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t.and_then(aviary_proto::ts::to_jiff) else {
        return "-".into();
    };
    let secs = jiff::Timestamp::now().duration_since(t).as_secs().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// The revision's parts joined by `,` (a table cell), `-` when unknown.
fn revision(r: Option<&v1::Revision>) -> String {
    let parts = r.map(|r| Revision::from(r).parts()).unwrap_or_default();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// What a revision runs, short: the version, or the image tags (`podinfod:6.0.1`), `-` when
/// unknown.
pub(crate) fn short_revision(r: Option<&v1::Revision>) -> String {
    let Some(r) = r else { return "-".into() };
    if !r.version.is_empty() {
        return r.version.clone();
    }
    let tags: Vec<String> = r
        .container_images
        .iter()
        .map(|(c, image)| {
            let tag = image
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map(|(_, t)| t);
            format!("{c}:{}", tag.unwrap_or(image))
        })
        .collect();
    if tags.is_empty() {
        "-".into()
    } else {
        tags.join(",")
    }
}

fn metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", aviary_core::fleet::numbers::show(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pooled evidence in one line: decision, e-value against its threshold, the fleet-wide
/// error ratio with its interval.
fn evidence_line(e: &v1::PooledEvidence) -> String {
    let ratio = match (e.ratio, e.ratio_low, e.ratio_high) {
        (Some(r), Some(lo), Some(hi)) => format!(
            ", error ratio canary/primary {r:.2} ∈ [{lo:.2}, {hi:.2}] ({}%)",
            (e.confidence * 1000.0).round() / 10.0
        ),
        _ => String::new(),
    };
    let look = e
        .planned_look_p
        .map(|p| format!(", planned look p = {p:.3}"))
        .unwrap_or_default();
    format!(
        "{} (pooled evidence {:.3} of threshold {:.0}, {}/{} clusters reporting{ratio}{look})",
        e.decision, e.evidence, e.threshold, e.clusters_reporting, e.clusters_planned
    )
}

fn print_rollout(r: &v1::Rollout) {
    let canary = r
        .canary
        .as_ref()
        .map(|c| format!("{}/{}", c.namespace, c.name))
        .unwrap_or_default();
    out(format!("Rollout:   {} ({})", r.name, r.phase));
    out(format!(
        "Canary:    {canary} → {} ({} mode)",
        revision(r.revision.as_ref()),
        r.mode
    ));
    out(format!(
        "Policy:    {} failed (budget {}), rollback scope {}",
        r.failed_clusters, r.max_failed_clusters, r.rollback_scope
    ));
    out(format!(
        "Created:   {}   Finished: {}",
        time(r.created.as_ref()),
        time(r.finished.as_ref())
    ));
    out(format!("Message:   {}", r.message));
    if let Some(e) = &r.evidence {
        out(format!("Evidence:  {}", evidence_line(e)));
        out(format!("           {}", e.explanation));
    }
    for w in &r.waves {
        let mut extra = vec![format!("max {} at once", w.max_concurrent)];
        if w.mandatory {
            extra.push("mandatory".into());
        }
        if w.manual_approval {
            extra.push(if w.approved_by.is_empty() {
                "manual approval".into()
            } else {
                format!("approved by {}", w.approved_by)
            });
        }
        if !w.bake_duration.is_empty() {
            extra.push(format!(
                "bake {} and {} requests ({} so far)",
                w.bake_duration, w.bake_min_requests, w.bake_requests
            ));
        }
        out("");
        out(format!("Wave {} — {} ({})", w.name, w.phase, extra.join(", ")));
        let rows: Vec<Vec<String>> = w
            .clusters
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", c.cluster),
                    c.region.clone(),
                    c.phase.clone(),
                    if c.canary_phase.is_empty() {
                        "-".into()
                    } else {
                        c.canary_phase.clone()
                    },
                    c.canary_weight.to_string(),
                    c.failed_checks.to_string(),
                    c.attempts.to_string(),
                    if c.connected { "yes".into() } else { "no".into() },
                    c.verdict.clone(),
                ]
            })
            .collect();
        table(
            &[
                "  CLUSTER",
                "REGION",
                "PHASE",
                "CANARY",
                "WEIGHT",
                "CHECKS",
                "ATTEMPTS",
                "CONNECTED",
                "VERDICT",
            ],
            rows,
        );
    }
    if !r.history.is_empty() {
        out("");
        out("History:");
        for h in &r.history {
            let mut what = vec![h.kind.clone()];
            if !h.wave.is_empty() {
                what.push(format!("wave={}", h.wave));
            }
            if !h.cluster.is_empty() {
                what.push(format!("cluster={}", h.cluster));
            }
            let m = if h.metrics.is_empty() {
                String::new()
            } else {
                format!(" [{}]", metrics(&h.metrics))
            };
            out(format!(
                "  {}  {:<12} {}: {}{m}",
                time(h.time.as_ref()),
                h.actor,
                what.join(" "),
                h.message
            ));
        }
    }
}

fn show(o: Output, r: &v1::Rollout) -> anyhow::Result<()> {
    match o {
        Output::Table => print_rollout(r),
        o => print_structured(o, r)?,
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.client.clone();
    block_on(async move {
        let c = &client;
        let verb = |name: &str, reason: &str, who: &Actor| v1::RolloutVerbRequest {
            name: name.into(),
            actor: who.actor.clone(),
            reason: reason.into(),
        };
        let r = match args.command {
            RolloutCommand::Apply { file, dry_run, who } => {
                let actor = who.actor;
                let manifest = super::read_input(&file)?;
                let r = unary(c, |mut cl| {
                    let req = v1::CreateRolloutRequest {
                        manifest: manifest.clone(),
                        actor: actor.clone(),
                        dry_run,
                        ..Default::default()
                    };
                    async move { cl.create_rollout(req).await.map(|r| r.into_inner()) }
                })
                .await?;
                if dry_run {
                    show(c.output, &r)?;
                    if c.output == Output::Table {
                        out("");
                        out(format!(
                            "dry run: the plan above was not created (no rollout {})",
                            r.name
                        ));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                r
            }
            RolloutCommand::Get { name } => get(c, &name).await?,
            RolloutCommand::List => {
                let list = unary(c, |mut cl| async move {
                    aviary_coordinator::client::list_all_rollouts(&mut cl).await
                })
                .await?;
                match c.output {
                    Output::Table => {
                        let rows = list
                            .rollouts
                            .iter()
                            .map(|r| {
                                let total: usize = r.waves.iter().map(|w| w.clusters.len()).sum();
                                let done = r
                                    .waves
                                    .iter()
                                    .flat_map(|w| &w.clusters)
                                    .filter(|c| c.phase == "Succeeded")
                                    .count();
                                vec![
                                    r.name.clone(),
                                    r.phase.clone(),
                                    r.canary
                                        .as_ref()
                                        .map(|c| format!("{}/{}", c.namespace, c.name))
                                        .unwrap_or_default(),
                                    revision(r.revision.as_ref()),
                                    format!("{done}/{total}"),
                                    r.failed_clusters.to_string(),
                                    age(r.created.as_ref()),
                                    r.message.clone(),
                                ]
                            })
                            .collect();
                        table(
                            &[
                                "NAME",
                                "PHASE",
                                "CANARY",
                                "REVISION",
                                "SUCCEEDED",
                                "FAILED",
                                "AGE",
                                "MESSAGE",
                            ],
                            rows,
                        );
                    }
                    o => print_structured(o, &list)?,
                }
                return Ok(ExitCode::SUCCESS);
            }
            RolloutCommand::Watch { name } => return watch(c, &name).await,
            RolloutCommand::Wait { name, timeout } => {
                let secs = aviary_api::duration::parse_go_duration(&timeout)
                    .map_err(|e| anyhow!("--timeout: {e}"))?
                    .as_secs()
                    .min(u64::from(u32::MAX)) as u32;
                // Reachable and known first: a transport failure after this is a lost wait.
                let seen = get(c, &name).await?;
                // A wait on a leader that steps down ends with UNAVAILABLE: wait again on the
                // new leader (the timeout restarts; the coordinator measures it).
                let res = call_leader_retrying_with(&c.coordinator, &c.tls(), ELECTION_BUDGET, |mut cl| {
                    let name = name.clone();
                    async move {
                        cl.wait_rollout(v1::WaitRolloutRequest {
                            name,
                            timeout_seconds: secs,
                        })
                        .await
                        .map(|r| r.into_inner())
                    }
                })
                .await;
                let r = match res {
                    Ok(r) => r,
                    Err(s) if s.code() == tonic::Code::DeadlineExceeded => {
                        eprintln!("error: {}", s.message());
                        return Ok(ExitCode::from(2));
                    }
                    Err(s) if is_transport_failure(&s) => {
                        let what = format!("waiting for rollout {name}");
                        return Err(lost_connection(&c.coordinator, &what, Some(&seen), &s));
                    }
                    Err(s) => return Err(status_error(&c.coordinator, s)),
                };
                match c.output {
                    Output::Table => out(format!("rollout {} {}: {}", r.name, r.phase, r.message)),
                    o => print_structured(o, &r)?,
                }
                return Ok(if r.phase == "Succeeded" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            RolloutCommand::Pause { name, reason, who } => {
                send(c, verb(&name, &reason, &who), |mut cl, q| async move {
                    cl.pause_rollout(q).await
                })
                .await?
            }
            RolloutCommand::Resume { name, reason, who } => {
                send(c, verb(&name, &reason, &who), |mut cl, q| async move {
                    cl.resume_rollout(q).await
                })
                .await?
            }
            RolloutCommand::Abort { name, reason, who } => {
                send(c, verb(&name, &reason, &who), |mut cl, q| async move {
                    cl.abort_rollout(q).await
                })
                .await?
            }
            RolloutCommand::Approve { name, wave, who } => {
                let q = v1::WaveVerbRequest {
                    name,
                    wave,
                    actor: who.actor,
                };
                send(c, q, |mut cl, q| async move { cl.approve_wave(q).await }).await?
            }
            RolloutCommand::Skip { name, cluster, who } => {
                let q = cluster_verb(name, cluster, &who.actor);
                send(c, q, |mut cl, q| async move { cl.skip_cluster(q).await }).await?
            }
            RolloutCommand::Retry { name, cluster, who } => {
                let q = cluster_verb(name, cluster, &who.actor);
                send(c, q, |mut cl, q| async move { cl.retry_cluster(q).await }).await?
            }
            RolloutCommand::Delete {
                name,
                force,
                reason,
                timeout,
                who,
            } => return delete(c, name, force, reason, timeout, who).await,
        };
        show(c.output, &r)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `rollout delete`: DeleteRollout; prints what was deleted.
async fn delete(
    c: &ClientArgs,
    name: String,
    force: bool,
    reason: String,
    timeout: Duration,
    who: Actor,
) -> anyhow::Result<ExitCode> {
    let q = v1::DeleteRolloutRequest {
        name: name.clone(),
        actor: who.actor,
        reason,
        force,
        timeout_seconds: timeout.as_secs().clamp(1, 3600) as u32,
    };
    let deleted = unary(c, |mut cl| {
        let q = q.clone();
        async move { cl.delete_rollout(q).await.map(|r| r.into_inner()) }
    })
    .await?;
    match (c.output, &deleted.rollout) {
        (Output::Table, Some(r)) => out(format!(
            "rollout {} deleted (it had ended {}: {})",
            r.name, r.phase, r.message
        )),
        (Output::Table, None) => out(format!(
            "rollout {name} deleted (its stored record could not be read)"
        )),
        (o, _) => print_structured(o, &deleted)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `rollout watch`: bars on a terminal, one line per change otherwise; ends with the rollout.
async fn watch(c: &ClientArgs, name: &str) -> anyhow::Result<ExitCode> {
    let open = |url: String| async move {
        call_leader_retrying_with(&url, &c.tls(), ELECTION_BUDGET, |mut cl| {
            let name = name.to_string();
            async move { cl.watch_rollout(v1::GetRolloutRequest { name }).await }
        })
        .await
        .map(|r| r.into_inner())
    };
    let mut stream = open(c.coordinator.clone())
        .await
        .map_err(|s| status_error(&c.coordinator, s))?;
    let tty = std::io::stdout().is_terminal() && c.output == Output::Table;
    let mut view = if tty { Some(Bars::new()) } else { None };
    let mut last_lines: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<v1::Rollout> = None;
    loop {
        let r = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            // The leader stepped down or went away, or the connection broke: watch again (on
            // the new leader when one is named); if that fails too, say the watch was lost.
            Err(s) if s.code() == tonic::Code::Unavailable || is_transport_failure(&s) => {
                let url = leader_from_status(&s).unwrap_or_else(|| c.coordinator.clone());
                stream = match open(url).await {
                    Ok(stream) => stream,
                    Err(again)
                        if is_transport_failure(&again) || again.code() == tonic::Code::Unavailable =>
                    {
                        return Err(lost_connection(
                            &c.coordinator,
                            &format!("watching rollout {name}"),
                            last.as_ref(),
                            &again,
                        ));
                    }
                    Err(again) => return Err(status_error(&c.coordinator, again)),
                };
                continue;
            }
            Err(s) => return Err(status_error(&c.coordinator, s)),
        };
        match (&mut view, c.output) {
            (Some(bars), _) => bars.update(&r),
            (None, Output::Table) => {
                for line in changed_lines(&r, &mut last_lines) {
                    out(line);
                }
            }
            (None, o) => match o {
                Output::Json => out(serde_json::to_string(&r)?),
                _ => out(format!("---\n{}", serde_yaml_ng::to_string(&r)?.trim_end())),
            },
        }
        last = Some(r);
    }
    if let Some(bars) = view {
        bars.finish();
    }
    let Some(r) = last else {
        return Err(anyhow!("the watch ended without a rollout"));
    };
    if c.output == Output::Table {
        out(format!("rollout {} {}: {}", r.name, r.phase, r.message));
    }
    Ok(match r.phase.as_str() {
        "Succeeded" => ExitCode::SUCCESS,
        "Failed" | "Aborted" => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

/// The progress lines of `r` that changed since `printed` (compared without their time
/// prefix, which changes every second); `printed` is updated.
pub(crate) fn changed_lines(r: &v1::Rollout, printed: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, line) in lines(r) {
        let body = line.split_once(' ').map_or(line.as_str(), |(_, b)| b).to_string();
        if printed.get(&key) != Some(&body) {
            out.push(line);
            printed.insert(key, body);
        }
    }
    out
}

/// Plain progress lines, keyed by what they describe (printed when they change).
pub(crate) fn lines(r: &v1::Rollout) -> Vec<(String, String)> {
    let now = jiff::Timestamp::now().strftime("%H:%M:%S");
    let mut v = vec![(
        "rollout".to_string(),
        format!("{now} rollout {} {}: {}", r.name, r.phase, r.message),
    )];
    if let Some(e) = &r.evidence {
        v.push((
            "evidence".to_string(),
            format!("{now} evidence {}", evidence_line(e)),
        ));
    }
    for w in &r.waves {
        let done = w.clusters.iter().filter(|c| is_done(&c.phase)).count();
        let bake = if w.phase == "Baking" {
            format!(" bake {}/{} requests", w.bake_requests, w.bake_min_requests)
        } else {
            String::new()
        };
        v.push((
            format!("wave/{}", w.name),
            format!(
                "{now} wave {} {} {done}/{}{bake}",
                w.name,
                w.phase,
                w.clusters.len()
            ),
        ));
        for c in &w.clusters {
            v.push((
                format!("cluster/{}", c.cluster),
                format!(
                    "{now} cluster {} {} canary={} weight={} failedChecks={}{}",
                    c.cluster,
                    c.phase,
                    if c.canary_phase.is_empty() {
                        "-"
                    } else {
                        &c.canary_phase
                    },
                    c.canary_weight,
                    c.failed_checks,
                    aviary_core::fleet::aside(&c.verdict)
                ),
            ));
        }
    }
    v
}

fn is_done(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "Skipped" | "Reverted")
}

/// Live bars: one per wave (clusters done), one per cluster (canary weight).
pub(crate) struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    bars: BTreeMap<String, ProgressBar>,
}

impl Bars {
    pub(crate) fn new() -> Self {
        let multi = MultiProgress::new();
        let header = multi.add(ProgressBar::new_spinner());
        header.enable_steady_tick(Duration::from_millis(200));
        Self {
            multi,
            header,
            bars: BTreeMap::new(),
        }
    }

    fn bar(&mut self, key: &str, len: u64, template: &str) -> ProgressBar {
        let multi = &self.multi;
        self.bars
            .entry(key.to_string())
            .or_insert_with(|| {
                let b = multi.add(ProgressBar::new(len));
                b.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("█▌ "),
                );
                b
            })
            .clone()
    }

    pub(crate) fn update(&mut self, r: &v1::Rollout) {
        self.header
            .set_message(format!("rollout {} {}: {}", r.name, r.phase, r.message));
        for w in &r.waves {
            let done = w.clusters.iter().filter(|c| is_done(&c.phase)).count() as u64;
            let b = self.bar(
                &format!("wave/{}", w.name),
                w.clusters.len() as u64,
                "wave {prefix:<14} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
            );
            b.set_prefix(w.name.clone());
            b.set_position(done);
            let bake = if w.phase == "Baking" {
                format!(" ({}/{} requests)", w.bake_requests, w.bake_min_requests)
            } else {
                String::new()
            };
            b.set_message(format!("{}{bake}", w.phase));
            for c in &w.clusters {
                let b = self.bar(
                    &format!("cluster/{}", c.cluster),
                    100,
                    "  {prefix:<16} [{bar:30.green/white}] {pos:>3}% {msg}",
                );
                b.set_prefix(c.cluster.clone());
                let pos = if c.phase == "Succeeded" {
                    100
                } else {
                    c.canary_weight.clamp(0, 100) as u64
                };
                b.set_position(pos);
                let canary = if c.canary_phase.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.canary_phase)
                };
                b.set_message(format!("{}{canary}", c.phase));
            }
        }
    }

    pub(crate) fn finish(self) {
        for b in self.bars.values() {
            b.abandon();
        }
        self.header.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_cell_lists_images_then_version() {
        let r = v1::Revision {
            container_images: [("app".to_string(), "podinfo:6.0.1".to_string())].into(),
            version: "v2".into(),
        };
        assert_eq!(revision(Some(&r)), "app=podinfo:6.0.1,version v2");
        assert_eq!(revision(Some(&v1::Revision::default())), "-");
        assert_eq!(revision(None), "-");
    }
}
