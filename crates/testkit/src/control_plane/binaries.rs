//! Where the control plane's programs come from: `AVIARY_CONTROL_PLANE_BIN`, or
//! `tests/control-plane/build.sh`, which builds them from the Go module proxy into a cache outside
//! the repository (keyed on the Go module's go.sum) and prints their directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::supervised::Supervised;

/// Names the directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` and `crds/`.
pub const BIN_ENV: &str = "AVIARY_CONTROL_PLANE_BIN";

const PROGRAMS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// The built control plane programs and the upstream CRDs exported beside them.
#[derive(Clone, Debug)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the programs (building them once per process when `AVIARY_CONTROL_PLANE_BIN` is
    /// unset; `scripts/test` builds first and sets it).
    pub fn locate() -> Result<Self> {
        static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let dir = match std::env::var_os(BIN_ENV) {
                Some(dir) => PathBuf::from(dir),
                None => build().map_err(|e| e.to_string())?,
            };
            check(&dir).map_err(|e| e.to_string())?;
            Ok(dir)
        });
        match found {
            Ok(dir) => Ok(Self { dir: dir.clone() }),
            Err(e) => Err(Error::Setup(e.clone())),
        }
    }

    /// The path of one program (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts one program with `args`, its output appended to `dir/logs/<name>.log`.
    pub(crate) fn spawn(&self, name: &str, args: &[String], dir: &Path) -> Result<Supervised> {
        let log = dir.join("logs").join(format!("{name}.log"));
        Supervised::spawn(name, &self.program(name), args, &log)
    }

    /// Upstream CRD files (Knative Serving, Gateway API, Istio) copied out of their Go modules.
    pub fn crds_dir(&self) -> PathBuf {
        self.dir.join("crds")
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The repository's `tests/control-plane` (the Go module that pins the releases).
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/control-plane")
}

fn build() -> Result<PathBuf> {
    run_build_script(&go_module_dir().join("build.sh"), BIN_ENV).map_err(|e| {
        Error::Setup(format!(
            "{e}: the control plane programs could not be built, or set {BIN_ENV} to a directory holding {}",
            PROGRAMS.join(", ")
        ))
    })
}

/// Runs a build script of a Go module under tests/ (its progress on stderr) and returns the path
/// it prints last on stdout; `env` names the variable that skips the build.
pub fn run_build_script(script: &Path, env: &str) -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{} failed ({}; its output is above; {env} skips the build)",
            script.display(),
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(stdout.lines().last().unwrap_or_default().trim()))
}

fn check(dir: &Path) -> Result<()> {
    for p in PROGRAMS {
        if !dir.join(p).is_file() {
            return Err(Error::Setup(format!(
                "{} has no {p}: run tests/control-plane/build.sh (it prints the right directory) or unset {BIN_ENV}",
                dir.display()
            )));
        }
    }
    Ok(())
}
