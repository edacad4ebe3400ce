//! Finding the real `kubectl` for tests: `KUBECTL`, else the PATH.

use std::io::Write as _;
use std::path::PathBuf;

/// The kubectl binary, or `None` after printing a skip notice; with `CI=true` a missing kubectl
/// fails the test (`needed_by` says which tests need it).
pub fn binary(needed_by: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "kubectl is not installed but CI=true: {needed_by} need it; install kubectl on the PATH or point KUBECTL at it"
            );
        }
        // Straight to stderr: the test harness would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: kubectl not found on PATH (set KUBECTL=/path/to/kubectl to run {needed_by})"
        );
    }
    found
}
