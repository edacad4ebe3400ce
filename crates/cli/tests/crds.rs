//! `aviary crds` end to end: the built binary prints exactly the committed
//! `deploy/crds/flagger-crds.yaml`, and that text is Flagger's three CRDs with its printer
//! columns, category and status subresource.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aviary_api::document::{Resource, parse_documents};
use aviary_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const COMMITTED: &str = "deploy/crds/flagger-crds.yaml";
const REGENERATE: &str = "cargo run -p aviary -- crds > deploy/crds/flagger-crds.yaml";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Runs `aviary crds` (bounded: it answers in milliseconds) and returns its stdout.
fn aviary_crds() -> String {
    aviary_crds_with(&[])
}

/// `aviary crds ARGS`.
fn aviary_crds_with(args: &[&str]) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .arg("crds")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aviary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for aviary"),
        Err(_) => {
            // Ends only the child this test started.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("aviary crds did not finish within 60s");
        }
    };
    assert!(
        out.status.success(),
        "aviary crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("aviary crds prints UTF-8")
}

#[test]
fn the_output_is_the_committed_file_byte_for_byte() {
    same_as_committed(&aviary_crds(), COMMITTED, REGENERATE);
}

#[test]
fn the_fleetrollout_crd_is_the_committed_file_byte_for_byte() {
    same_as_committed(
        &aviary_crds_with(&["--group", "aviary.dev"]),
        "deploy/crds/aviary-crds.yaml",
        "cargo run -p aviary -- crds --group aviary.dev > deploy/crds/aviary-crds.yaml",
    );
}

#[test]
fn the_fleetrollout_crd_is_namespaced_with_status_and_columns() {
    let crds = aviary_api::crd::aviary_crds();
    assert_eq!(crds.len(), 1);
    let crd = &crds[0];
    assert_eq!(crd.metadata.name.as_deref(), Some("fleetrollouts.aviary.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let names: Vec<String> = columns(crd).into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["Phase", "Canary", "Clusters", "Failed", "Message", "Age"]);
}

fn same_as_committed(printed: &str, committed_path: &str, regenerate: &str) {
    aviary_testkit::generated::assert_committed(
        printed,
        &repo_root(),
        committed_path,
        "aviary crds",
        regenerate,
    );
}

#[test]
fn the_output_reads_as_three_flagger_crds() {
    let printed = aviary_crds();
    let docs = parse_documents(&printed).expect("aviary crds prints YAML");
    let ids: Vec<(String, String, String)> = docs
        .into_iter()
        .map(|d| match d.expect("a CRD is an object").resource {
            Resource::Other(id) => (id.api_version, id.kind, id.name),
            other => panic!("not a CRD: {other:?}"),
        })
        .collect();
    let crd = |name: &str| {
        (
            "apiextensions.k8s.io/v1".to_string(),
            "CustomResourceDefinition".to_string(),
            name.to_string(),
        )
    };
    assert_eq!(
        ids,
        [
            crd("canaries.flagger.app"),
            crd("metrictemplates.flagger.app"),
            crd("alertproviders.flagger.app"),
        ]
    );
}

/// The printed text is the YAML serialization of these typed CRDs, so checking them checks the
/// output (the CLI has no YAML parser of its own to read the text back into the types).
fn typed_crds() -> Vec<CustomResourceDefinition> {
    let printed = aviary_crds();
    assert_eq!(
        printed,
        aviary_api::crd::flagger_crds_yaml().expect("the CRDs serialize"),
        "aviary crds prints aviary_api::crd::flagger_crds_yaml()"
    );
    aviary_api::crd::flagger_crds()
}

/// `(name, jsonPath, type, priority)` of each printer column, in order.
fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String, Option<i32>)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.json_path.clone(), c.type_.clone(), c.priority))
        .collect()
}

fn col(name: &str, path: &str, ty: &str, priority: Option<i32>) -> (String, String, String, Option<i32>) {
    (name.into(), path.into(), ty.into(), priority)
}

#[test]
fn every_crd_is_namespaced_v1beta1_in_category_all_with_a_status_subresource() {
    let crds = typed_crds();
    let kinds: Vec<(&str, &str)> = crds
        .iter()
        .map(|c| (c.spec.names.kind.as_str(), c.spec.names.plural.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Canary", "canaries"),
            ("MetricTemplate", "metrictemplates"),
            ("AlertProvider", "alertproviders"),
        ]
    );
    for crd in &crds {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, "flagger.app", "{kind}");
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["all".to_string()][..]),
            "{kind}"
        );
        assert_eq!(
            crd.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("helm.sh/resource-policy"))
                .map(String::as_str),
            Some("keep"),
            "{kind}"
        );
        assert_eq!(crd.spec.versions.len(), 1, "{kind}: v1beta1 only");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1beta1", "{kind}");
        assert!(v.served && v.storage, "{kind}: served and stored");
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind}: status subresource"
        );
        assert!(v.schema.is_some(), "{kind}: has a schema");
    }
}

#[test]
fn the_printer_columns_are_flaggers() {
    let crds = typed_crds();
    assert_eq!(
        columns(&crds[0]),
        [
            col("Status", ".status.phase", "string", None),
            col("Weight", ".status.canaryWeight", "string", None),
            col("Suspended", ".spec.suspend", "boolean", Some(1)),
            col("FailedChecks", ".status.failedChecks", "string", Some(1)),
            col("Interval", ".spec.analysis.interval", "string", Some(1)),
            col("Mirror", ".spec.analysis.mirror", "boolean", Some(1)),
            col("StepWeight", ".spec.analysis.stepWeight", "string", Some(1)),
            col("StepWeights", ".spec.analysis.stepWeights", "string", Some(1)),
            col("MaxWeight", ".spec.analysis.maxWeight", "string", Some(1)),
            col("LastTransitionTime", ".status.lastTransitionTime", "string", None),
        ]
    );
    assert_eq!(
        columns(&crds[1]),
        [col("Provider", ".spec.provider.type", "string", None)]
    );
    assert_eq!(columns(&crds[2]), [col("Type", ".spec.type", "string", None)]);
}
