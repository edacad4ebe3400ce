//! The real `kubectl` (spawned with the admin kubeconfig and its own cache directory) against the
//! test cluster: the upstream Knative CRDs' columns with the revision stand-in, and Deployments
//! rolled out by the real controllers with the kubelet stand-in.
//!
//! Without kubectl these tests fail when `CI=true` and print a skip notice otherwise. Set
//! `KUBECTL=/path/to/kubectl` to use another binary.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use aviary_testkit::{Cluster, Objects};

const WAIT: Duration = Duration::from_secs(60);

fn kubectl_binary() -> Option<PathBuf> {
    aviary_testkit::kubectl::binary("the kubectl tests of aviary-testkit")
}

/// A kubectl for the shared test cluster, a namespace of its own, and admin objects.
struct Kubectl {
    bin: PathBuf,
    ns: String,
    objects: Objects,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn start(name: &str) -> Option<Self> {
        let bin = kubectl_binary()?;
        let cluster = Cluster::shared().await;
        Some(Self {
            bin,
            ns: cluster.namespace(name).await.unwrap(),
            objects: cluster.objects().await.unwrap(),
            kubeconfig: cluster.admin_kubeconfig(),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    async fn run_raw(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60s"))
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// Runs kubectl and returns stdout; fails the test with kubectl's stderr otherwise.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.run_raw(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        assert!(!stderr.contains("warning"), "kubectl {args:?} warned:\n{stderr}");
        stdout
    }

    /// A fixture with its namespace set to this test's, written to a temporary file.
    /// Waits until the latest ready revision of the Knative Service `podinfo` is `revision`.
    async fn until_latest_ready(&self, revision: &str) {
        self.objects
            .wait_for(
                "serving.knative.dev/v1",
                "Service",
                Some(&self.ns),
                "podinfo",
                WAIT,
                |s| s["status"]["latestReadyRevisionName"] == revision,
            )
            .await
            .unwrap();
    }

    fn path(&self, file: &str) -> String {
        let text = std::fs::read_to_string(Self::fixture(file))
            .unwrap()
            .replace("namespace: test", &format!("namespace: {}", self.ns));
        let out = self.dir.path().join(file);
        std::fs::write(&out, text).unwrap();
        out.display().to_string()
    }
}

/// The whitespace-separated fields of the table row that starts with `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn knative_patch_creates_a_new_revision() {
    let Some(k) = Kubectl::start("kubectl-knative").await else {
        return;
    };
    let out = k.run(&["apply", "-f", &k.path("podinfo-ksvc.yaml")]).await;
    assert!(
        out.contains("service.serving.knative.dev/podinfo created"),
        "{out}"
    );
    k.until_latest_ready("podinfo-00001").await;

    // The command from the Flagger Knative tutorial, verbatim.
    let out = k
        .run(&[
            "-n",
            &k.ns,
            "patch",
            "services.serving",
            "podinfo",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"ghcr.io/stefanprodan/podinfo:6.0.1"}]"#,
        ])
        .await;
    assert!(
        out.contains("service.serving.knative.dev/podinfo patched"),
        "{out}"
    );
    let rev = k
        .objects
        .wait_for(
            "serving.knative.dev/v1",
            "Revision",
            Some(&k.ns),
            "podinfo-00002",
            WAIT,
            |_| true,
        )
        .await
        .unwrap();
    assert_eq!(
        rev["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    k.until_latest_ready("podinfo-00002").await;

    let revisions = k.run(&["get", "revisions", "-n", &k.ns]).await;
    assert_eq!(
        row(&revisions, "podinfo-00002")[..4],
        ["podinfo-00002", "podinfo", "2", "True"],
        "{revisions}"
    );
    let ksvc = k.run(&["get", "ksvc", "podinfo", "-n", &k.ns]).await;
    assert_eq!(
        header(&ksvc),
        ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"],
        "{ksvc}"
    );
    assert_eq!(row(&ksvc, "podinfo")[3], "podinfo-00002");
    // The core Service with the same plural is still the default for `services`.
    let core = k.run(&["get", "services", "-n", &k.ns]).await;
    assert!(!core.contains("podinfo"), "{core}");
}

#[tokio::test]
async fn deployments_roll_out_scale_and_delete() {
    let Some(k) = Kubectl::start("kubectl-deployments").await else {
        return;
    };
    k.run(&["apply", "-f", &k.path("podinfo-deploy.yaml")]).await;
    k.objects
        .wait_for("apps/v1", "Deployment", Some(&k.ns), "podinfo", WAIT, |d| {
            d["status"]["readyReplicas"] == 2
        })
        .await
        .unwrap();
    let table = k.run(&["get", "deploy", "-n", &k.ns]).await;
    assert_eq!(
        header(&table),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert_eq!(row(&table, "podinfo")[..4], ["podinfo", "2/2", "2", "2"]);

    // Re-apply with a new image: a strategic merge patch computed by kubectl.
    let manifest = std::fs::read_to_string(k.path("podinfo-deploy.yaml"))
        .unwrap()
        .replace("6.0.0", "6.0.1");
    let changed = k.dir.path().join("podinfo-deploy.yaml");
    std::fs::write(&changed, manifest).unwrap();
    let out = k.run(&["apply", "-f", changed.to_str().unwrap()]).await;
    assert!(out.contains("deployment.apps/podinfo configured"), "{out}");
    let d = k
        .objects
        .get("apps/v1", "Deployment", Some(&k.ns), "podinfo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    k.run(&["scale", "deploy/podinfo", "-n", &k.ns, "--replicas=3"])
        .await;
    let waits = [
        (["rollout", "status", "deploy/podinfo"], "successfully rolled out"),
        (
            ["wait", "--for=condition=Available", "deploy/podinfo"],
            "condition met",
        ),
    ];
    for (wait, says) in waits {
        let args = [&wait[..], &["-n", k.ns.as_str(), "--timeout=10s"][..]].concat();
        let out = k.run(&args).await;
        assert!(out.contains(says), "{out}");
    }

    let out = k.run(&["delete", "deploy", "podinfo", "-n", &k.ns]).await;
    assert!(out.contains("deployment.apps \"podinfo\" deleted"), "{out}");
    assert!(
        k.objects
            .get("apps/v1", "Deployment", Some(&k.ns), "podinfo")
            .await
            .unwrap()
            .is_none()
    );
    let out = k.run(&["get", "deploy", "-n", &k.ns, "-o", "name"]).await;
    assert!(out.trim().is_empty(), "{out}");
}
