//! The real `kubectl` for tests: `KUBECTL`, else the PATH; run it with [`Tool`](crate::tool::Tool).

use std::path::PathBuf;

use crate::tool::{Tool, find};

/// The kubectl binary, or `None` after printing a skip notice; with `CI=true` a missing kubectl
/// fails the test (`needed_by` says which tests need it).
pub fn binary(needed_by: &str) -> Option<PathBuf> {
    find(
        "kubectl",
        "KUBECTL",
        needed_by,
        "install kubectl: https://kubernetes.io/docs/tasks/tools/",
    )
}

/// Creates namespace `ns` unless it exists (`--save-config`: a later `kubectl apply` of the
/// same Namespace is a clean update).
pub async fn ensure_namespace(kubectl: &Tool, ns: &str) {
    let out = kubectl
        .output(&["create", "namespace", ns, "--save-config"], None)
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("AlreadyExists"),
        "creating namespace {ns}: {stderr}"
    );
}
