//! `aviary certs`: certificates for mutual TLS between the coordinator, its agents and its
//! users (thin: flags → `aviary_coordinator::security::certs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use aviary_coordinator::security::Role;
use aviary_coordinator::security::auth::token_hash;
use aviary_coordinator::security::certs;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CertsCommand {
    /// Write a CA (`ca.pem`, `ca-key.pem`) and the coordinator's serving certificate
    /// (`server.pem`, `server-key.pem`) into DIR.
    Init {
        /// The directory to write into (created if missing).
        dir: PathBuf,
        /// A DNS name or IP the coordinator is reached at (repeatable; default localhost and
        /// 127.0.0.1).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Issue a certificate from DIR's CA: `--agent CLUSTER` writes CLUSTER.pem and
    /// CLUSTER-key.pem (identity: spiffe://<trust-domain>/cluster/CLUSTER); `--user NAME --role
    /// ROLE` writes NAME.pem and NAME-key.pem (spiffe://<trust-domain>/user/NAME, the role in
    /// the subject's O); `--server` re-issues server.pem (rotation).
    Issue {
        /// The directory holding the CA (`aviary certs init`); the certificate is written there.
        dir: PathBuf,
        /// An agent's client certificate for cluster CLUSTER.
        #[arg(long, value_name = "CLUSTER", conflicts_with_all = ["user", "server"])]
        agent: Option<String>,
        /// A person's or CI's client certificate for NAME (needs --role).
        #[arg(long, value_name = "NAME", requires = "role", conflicts_with = "server")]
        user: Option<String>,
        /// viewer, operator or admin.
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
        /// Re-issue the coordinator's serving certificate (rotation).
        #[arg(long)]
        server: bool,
        /// With --server: the hosts (default localhost and 127.0.0.1).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// The SPIFFE trust domain of the identities (`spiffe://<trust-domain>/…`).
        #[arg(long, default_value = certs::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Print a token file line for TOKEN (`SHA256 SUBJECT ROLE`); the token itself is never
    /// stored.
    TokenLine {
        /// The bearer token to hash (better from the environment than the command line).
        #[arg(long, env = "AVIARY_NEW_TOKEN", hide_env_values = true)]
        token: String,
        /// Who the token stands for (recorded in the audit history as `token:SUBJECT`).
        #[arg(long)]
        subject: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
    },
}

fn role(s: &str) -> anyhow::Result<Role> {
    Role::parse(s).ok_or_else(|| anyhow!("--role {s:?}: use viewer, operator or admin"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let written = match args.command {
        CertsCommand::Init { dir, hosts } => certs::init(&dir, &hosts)?,
        CertsCommand::Issue {
            dir,
            agent,
            user,
            role: r,
            server,
            hosts,
            trust_domain,
        } => match (agent, user) {
            (Some(cluster), None) => certs::issue_agent(&dir, &cluster, &trust_domain)?,
            (None, Some(name)) => {
                certs::issue_user(&dir, &name, role(&r.unwrap_or_default())?, &trust_domain)?
            }
            (None, None) if server => certs::issue_server(&dir, &hosts)?,
            _ => {
                return Err(anyhow!(
                    "say what to issue: --agent CLUSTER, --user NAME --role ROLE or --server"
                ));
            }
        },
        CertsCommand::TokenLine {
            token,
            subject,
            role: r,
        } => {
            role(&r)?;
            if token.len() < 16 {
                return Err(anyhow!(
                    "--token: use at least 16 random characters (e.g. openssl rand -hex 32)"
                ));
            }
            println!("{} {subject} {r}", token_hash(&token));
            return Ok(ExitCode::SUCCESS);
        }
    };
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
