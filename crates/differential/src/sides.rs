//! The two controllers, run the way their users run them: Flagger (built from its Go module by
//! `tests/flagger/build.sh`) with its own ClusterRole and ServiceAccount read out of its module
//! (`kustomize/base/flagger/{rbac,account}.yaml`), and `aviary agent` with the repository's
//! `deploy/rbac`; each with a ServiceAccount token (TokenRequest), never as admin.
//!
//! Both clusters get the same Canary CRDs: **Flagger's own** (`kustomize/base/flagger/crd.yaml`
//! of the Flagger module). The scenario's objects are then stored identically on both sides and
//! any difference comes from the controller; aviary's promise is to read Flagger's CRD unchanged
//! (its own `aviary crds` differs in integer types and the `local` provider, see
//! docs/compatibility.md).

use std::path::{Path, PathBuf};

use aviary_testkit::{Cluster, Supervised};
use serde_json::Value;

use crate::error::{Error, Result};

/// Which controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Flagger,
    Aviary,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Flagger, Side::Aviary];

    pub fn name(self) -> &'static str {
        match self {
            Side::Flagger => "flagger",
            Side::Aviary => "aviary",
        }
    }

    /// The namespace and name of the ServiceAccount the controller runs as.
    fn service_account(self) -> (&'static str, &'static str) {
        match self {
            Side::Flagger => ("flagger-system", "flagger"),
            Side::Aviary => ("aviary-system", "aviary-agent"),
        }
    }

    /// The audit log's user name of the controller.
    pub fn user(self) -> String {
        let (ns, name) = self.service_account();
        format!("system:serviceaccount:{ns}:{name}")
    }
}

/// Where Flagger comes from: `AVIARY_FLAGGER_DIR`, else `tests/flagger/build.sh` (which builds it
/// once into `~/.cache/aviary/flagger` and prints the directory).
pub const FLAGGER_DIR_ENV: &str = "AVIARY_FLAGGER_DIR";

/// The two programs and Flagger's manifests.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Holds `flagger` and `kustomize/{crd,rbac,account}.yaml`.
    pub flagger_dir: PathBuf,
    /// The `aviary` binary.
    pub aviary: PathBuf,
}

impl Programs {
    /// Builds Flagger when needed; `aviary` is the path of the aviary binary to run.
    pub fn locate(aviary: PathBuf) -> Result<Self> {
        let flagger_dir = match std::env::var_os(FLAGGER_DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => build_flagger()?,
        };
        for f in [
            "flagger",
            "kustomize/crd.yaml",
            "kustomize/rbac.yaml",
            "kustomize/account.yaml",
        ] {
            if !flagger_dir.join(f).is_file() {
                return Err(Error::Setup(format!(
                    "{} has no {f}: run tests/flagger/build.sh (it prints the right directory) or unset {FLAGGER_DIR_ENV}",
                    flagger_dir.display()
                )));
            }
        }
        if !aviary.is_file() {
            return Err(Error::Setup(format!(
                "no aviary binary at {} (cargo build -p aviary)",
                aviary.display()
            )));
        }
        Ok(Self { flagger_dir, aviary })
    }

    /// The aviary binary beside the running executable (`target/debug/aviary` for a test or a
    /// binary of this workspace), when it has been built.
    pub fn aviary_beside_me() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let mut dir = exe.parent()?;
        if dir.ends_with("deps") {
            dir = dir.parent()?;
        }
        let p = dir.join("aviary");
        p.is_file().then_some(p)
    }

    fn manifests(&self, file: &str) -> Result<Vec<Value>> {
        let path = self.flagger_dir.join("kustomize").join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        aviary_testkit::crds::documents(&text).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
    }

    /// Flagger's Canary, MetricTemplate and AlertProvider CRDs, from its module.
    pub fn canary_crds(&self) -> Result<Vec<Value>> {
        self.manifests("crd.yaml")
    }

    /// The controller's RBAC objects and ServiceAccount as shipped.
    pub fn rbac(&self, side: Side) -> Result<Vec<Value>> {
        match side {
            Side::Flagger => {
                let mut all = self.manifests("account.yaml")?;
                all.extend(self.manifests("rbac.yaml")?);
                Ok(all)
            }
            Side::Aviary => {
                let dir = repo().join("deploy/rbac");
                [
                    "service-account.yaml",
                    "cluster-role.yaml",
                    "cluster-role-binding.yaml",
                ]
                .iter()
                .map(|f| {
                    let path = dir.join(f);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                    serde_yaml_ng::from_str(&text)
                        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
                })
                .collect()
            }
        }
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds Flagger with `tests/flagger/build.sh` (the control plane's build-script runner).
fn build_flagger() -> Result<PathBuf> {
    let script = repo().join("tests/flagger/build.sh");
    aviary_testkit::control_plane::binaries::run_build_script(&script, FLAGGER_DIR_ENV)
        .map_err(|e| Error::Setup(format!("{e}: Flagger could not be built")))
}

/// Installs the Canary CRDs and the side's RBAC on `cluster`, and writes a kubeconfig with its
/// ServiceAccount's token to `dir/<side>.kubeconfig`.
pub async fn prepare(side: Side, cluster: &Cluster, programs: &Programs, dir: &Path) -> Result<PathBuf> {
    cluster.install_crds(&programs.canary_crds()?).await?;
    let (ns, name) = side.service_account();
    cluster.namespace_named(ns).await?;
    let objects = cluster.objects().await?;
    for obj in programs.rbac(side)? {
        objects.create(obj).await?;
    }
    let path = dir.join(format!("{}.kubeconfig", side.name()));
    cluster.service_account_kubeconfig(ns, name, &path).await?;
    Ok(path)
}

/// How one controller process is started for one scenario.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub kubeconfig: &'a Path,
    /// Only this namespace is watched (Flagger's `-namespace`, aviary's `--namespace`); `None`
    /// watches all.
    pub namespace: Option<&'a str>,
    /// Flagger's `-mesh-provider`, aviary's `--provider`; `None` = the default (istio).
    pub provider: Option<&'a str>,
    pub metrics_server: &'a str,
    /// The global event webhook (Flagger's `-event-webhook`).
    pub event_webhook: Option<&'a str>,
    /// Flagger's `-control-loop-interval` (how soon a new Canary gets its job); `None` = default.
    pub control_loop_interval: Option<&'a str>,
    pub log: PathBuf,
}

/// Starts the controller; it is killed when the handle drops.
pub fn start(side: Side, programs: &Programs, launch: &Launch<'_>) -> Result<Supervised> {
    let mut args: Vec<String> = Vec::new();
    let kubeconfig = launch.kubeconfig.display().to_string();
    let program = match side {
        Side::Flagger => {
            // Flagger binds `:port` itself; an ephemeral port could be taken before it does.
            let port = aviary_testkit::net::port_for_program();
            args.extend([
                format!("-kubeconfig={kubeconfig}"),
                format!("-metrics-server={}", launch.metrics_server),
                format!("-port={port}"),
                "-log-level=info".into(),
            ]);
            if let Some(p) = launch.provider {
                args.push(format!("-mesh-provider={p}"));
            }
            if let Some(ns) = launch.namespace {
                args.push(format!("-namespace={ns}"));
            }
            if let Some(url) = launch.event_webhook {
                args.push(format!("-event-webhook={url}"));
            }
            if let Some(i) = launch.control_loop_interval {
                args.push(format!("-control-loop-interval={i}"));
            }
            programs.flagger_dir.join("flagger")
        }
        Side::Aviary => {
            args.extend([
                "agent".into(),
                format!("--kubeconfig={kubeconfig}"),
                format!("--metrics-server={}", launch.metrics_server),
                "--admin-listen=127.0.0.1:0".into(),
                // AVIARY_CONTROLLER_LOG: another level or filter for the agent (debugging a run).
                format!(
                    "--log-level={}",
                    std::env::var("AVIARY_CONTROLLER_LOG").unwrap_or_else(|_| "info".into())
                ),
            ]);
            if let Some(p) = launch.provider {
                args.push(format!("--provider={p}"));
            }
            // AVIARY_AGENT_ARGS: more agent flags (e.g. --no-watch-cache for scripts/bench-kube).
            if let Ok(extra) = std::env::var("AVIARY_AGENT_ARGS") {
                args.extend(extra.split_whitespace().map(str::to_string));
            }
            if let Some(ns) = launch.namespace {
                args.push(format!("--namespace={ns}"));
            }
            if let Some(url) = launch.event_webhook {
                args.push(format!("--event-webhook={url}"));
            }
            programs.aviary.clone()
        }
    };
    Ok(Supervised::spawn(side.name(), &program, &args, &launch.log)?)
}
