//! helm for the chart tests: `AVIARY_HELM`, or `tests/helm/build.sh`, which builds helm v4 from
//! the Go module proxy into a cache outside the repository (once) and prints its path. Run it
//! with [`Tool`](crate::tool::Tool).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::control_plane::binaries::run_build_script;
use crate::tool::skip_or_fail;

/// Names a helm binary to use instead of building one.
pub const HELM_ENV: &str = "AVIARY_HELM";

/// The helm binary (built once per process when `AVIARY_HELM` is unset; `scripts/test` builds
/// first and sets it), or `None` after a skip notice when it cannot be had (no Go); with
/// `CI=true` that fails the test.
pub fn binary(needed_by: &str) -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| match std::env::var_os(HELM_ENV) {
        Some(p) => Ok(PathBuf::from(p)),
        None => run_build_script(&go_module_dir().join("build.sh"), HELM_ENV).map_err(|e| e.to_string()),
    });
    match found {
        Ok(p) if p.is_file() => Some(p.clone()),
        Ok(p) => {
            skip_or_fail(&format!(
                "{} is not a file ({HELM_ENV}); {needed_by} need helm",
                p.display()
            ));
            None
        }
        Err(e) => {
            skip_or_fail(&format!("{needed_by} need helm: {e}"));
            None
        }
    }
}

/// The repository's `tests/helm` (the Go module that pins helm).
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/helm")
}
