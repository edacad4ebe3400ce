//! aviary's manifests against the real kube-apiserver, through the real `kubectl`:
//!
//! - `aviary crds` is accepted with server-side field validation on (`--validate=strict`, no
//!   warning), `kubectl get canaries` shows Flagger's columns, `kubectl wait
//!   --for=condition=promoted` reads the Canary's status;
//! - every Flagger document of the examples (the seed tutorial and the Flagger guide) passes
//!   `kubectl apply --dry-run=server`; where `aviary validate` warns of an unknown field, the API
//!   server's field validation names the same field;
//! - every kustomization under deploy/ passes `kubectl apply -k … --dry-run=server`.
//!
//! Without kubectl these tests fail when `CI=true` and print a skip notice otherwise.

use aviary_testkit::Cluster;
use aviary_testkit::kubectl::ensure_namespace;
use aviary_testkit::tool::Tool;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn kubectl_binary() -> Option<PathBuf> {
    aviary_testkit::kubectl::binary("the manifest tests")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The real kubectl with the shared cluster's admin kubeconfig.
async fn kubectl() -> Option<(Tool, &'static Cluster)> {
    let bin = kubectl_binary()?;
    let cluster = Cluster::shared().await;
    Some((Tool::new(bin, Some(&cluster.admin_kubeconfig())), cluster))
}

fn aviary(args: &[&str]) -> (String, String, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// `aviary crds | kubectl apply`, once per test binary (the tests run side by side: concurrent
/// first applies would race to create the same CRDs).
async fn install_crds(k: &Tool) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| apply_crds(k)).await;
}

async fn apply_crds(k: &Tool) {
    let (crds, _, code) = aviary(&["crds"]);
    assert_eq!(code, 0);
    // Server-side field validation, strict: an unknown or duplicate field would fail the apply.
    let (out, err) = k
        .run(&["apply", "--validate=strict", "-f", "-"], Some(crds.as_bytes()))
        .await;
    assert!(out.contains("canaries.flagger.app"), "{out}");
    // Like Flagger's CRD, the webhook URL is `format: url`, which the API server does not know
    // (it accepts it and says so); nothing else may be warned about.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        assert_eq!(line.trim(), r#"Warning: unrecognized format "url""#, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aviary_crds_validate_strictly_and_print_flaggers_columns() {
    let Some((k, cluster)) = kubectl().await else {
        return;
    };
    install_crds(&k).await;
    let ns = cluster.namespace("columns").await.unwrap();
    let canary = std::fs::read_to_string(repo("examples/knative/podinfo-canary.yaml"))
        .unwrap()
        .replace("namespace: test", &format!("namespace: {ns}"));
    k.run(
        &["apply", "--validate=strict", "-f", "-"],
        Some(canary.as_bytes()),
    )
    .await;

    // The status as the agent writes it (status subresource), read back by kubectl.
    let objects = cluster.objects().await.unwrap();
    objects
        .patch_status(
            "flagger.app/v1beta1",
            "Canary",
            Some(&ns),
            "podinfo",
            &json!({"status": {
                "phase": "Succeeded", "canaryWeight": 0, "lastTransitionTime": "2026-01-02T03:04:05Z",
                "conditions": [{"type": "Promoted", "status": "True", "reason": "Succeeded",
                    "message": "Canary analysis completed successfully, promotion finished.",
                    "lastUpdateTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z"}],
            }}),
        )
        .await
        .unwrap();
    let (table, _) = k.run(&["get", "canaries", "-n", &ns], None).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["podinfo", "Succeeded", "0", "2026-01-02T03:04:05Z"],
        "{table}"
    );
    let (wide, _) = k
        .run(&["get", "canary", "podinfo", "-n", &ns, "-o", "wide"], None)
        .await;
    assert!(wide.lines().next().unwrap().contains("STEPWEIGHT"), "{wide}");
    let (out, _) = k
        .run(
            &[
                "wait",
                "--for=condition=promoted",
                "canary/podinfo",
                "-n",
                &ns,
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert!(out.contains("condition met"), "{out}");
}

/// The Flagger documents (flagger.app kinds) of a YAML file.
fn flagger_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    aviary_testkit::crds::documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("flagger.app/"))
        })
        .collect()
}

/// `(kind, name, field path)` of every unknown-field warning `aviary validate` prints for a file
/// (lines like `warning  Canary ns/name: spec.x: unknown field; …`).
fn unknown_fields(file: &str) -> BTreeSet<(String, String, String)> {
    let (out, _, _) = aviary(&["validate", "-f", file]);
    out.lines()
        .filter(|l| l.starts_with("warning") && l.contains(": unknown field"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_, kind, name) = (words.next()?, words.next()?, words.next()?);
            let name = name.trim_end_matches(':').rsplit('/').next()?.to_string();
            let path = l.split(": ").nth(1)?.to_string();
            Some((kind.to_string(), name, path))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flagger_example_passes_a_server_side_dry_run() {
    let Some((k, _cluster)) = kubectl().await else {
        return;
    };
    install_crds(&k).await;
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["examples/knative", "examples/flagger-guide"] {
        for e in std::fs::read_dir(repo(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(repo("")).unwrap_or(file).display().to_string();
        let (_, _, code) = aviary(&["validate", "-f", &rel]);
        assert_eq!(code, 0, "{rel} is an example aviary accepts");
        let unknown = unknown_fields(&rel);
        for doc in flagger_documents(file) {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            ensure_namespace(&k, &ns).await;
            let text = serde_json::to_string(&doc).unwrap();
            let (out, err) = k
                .run(
                    &[
                        "apply",
                        "--dry-run=server",
                        "--validate=warn",
                        "-n",
                        &ns,
                        "-f",
                        "-",
                    ],
                    Some(text.as_bytes()),
                )
                .await;
            assert!(out.contains("(server dry run)"), "{rel}: {out}");
            // The server warns of exactly the fields aviary calls unknown (and drops them).
            let (kind, name) = (
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default(),
            );
            let warned: BTreeSet<String> = err
                .lines()
                .filter_map(|l| l.split("unknown field \"").nth(1))
                .filter_map(|r| r.split('"').next())
                .map(str::to_string)
                .collect();
            let expected: BTreeSet<String> = unknown
                .iter()
                .filter(|(k, n, _)| k == kind && n == name)
                .map(|(_, _, p)| p.clone())
                .collect();
            assert_eq!(
                warned, expected,
                "{rel}: {kind} {name}: the API server's unknown fields vs aviary validate's\n{err}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} Flagger documents were checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kustomization_in_deploy_passes_a_server_side_dry_run() {
    let Some((k, _cluster)) = kubectl().await else {
        return;
    };
    install_crds(&k).await;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in &dirs {
        let (rendered, _) = k.run(&["kustomize", dir.to_str().unwrap()], None).await;
        // Objects go into namespaces the kustomizations create: those must exist first.
        for doc in aviary_testkit::crds::documents(&rendered).unwrap() {
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                ensure_namespace(&k, ns).await;
            }
        }
        let (out, err) = k
            .run(
                &[
                    "apply",
                    "-k",
                    dir.to_str().unwrap(),
                    "--dry-run=server",
                    "--validate=strict",
                ],
                None,
            )
            .await;
        assert!(out.contains("(server dry run)"), "{}: {out}", dir.display());
        assert!(
            !err.to_lowercase().contains("warning"),
            "{}: {err}",
            dir.display()
        );
    }
}
