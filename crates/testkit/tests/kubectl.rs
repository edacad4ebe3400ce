//! The fake API server against the real `kubectl` (spawned as a process with a generated
//! kubeconfig and its own cache directory).
//!
//! Without kubectl these tests fail when `CI=true` and print a skip notice otherwise. Set
//! `KUBECTL=/path/to/kubectl` to use another binary.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use aviary_testkit::FakeApiServer;
use aviary_testkit::apiserver::Options;
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn kubectl_binary() -> Option<PathBuf> {
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
                "kubectl is not installed but CI=true: the kubectl tests of aviary-testkit need it; install \
                 kubectl (v1.32) on the PATH or point KUBECTL at it"
            );
        }
        // Straight to stderr: the test harness would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: kubectl not found on PATH (set KUBECTL=/path/to/kubectl to run the kubectl tests)"
        );
    }
    found
}

/// One fake API server plus a kubectl configured for it.
struct Kubectl {
    bin: PathBuf,
    server: FakeApiServer,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn start(options: Options) -> Option<Self> {
        let bin = kubectl_binary()?;
        let server = FakeApiServer::start_with(options)
            .await
            .expect("fake API server starts");
        let dir = tempfile::tempdir().unwrap();
        server.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Some(Self { bin, server, dir })
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    async fn run_raw(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
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

    fn path(&self, file: &str) -> String {
        Self::fixture(file)
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
async fn crd_custom_resource_printer_columns_and_describe_events() {
    let Some(k) = Kubectl::start(Options::default()).await else {
        return;
    };
    assert_eq!(
        k.run(&["create", "namespace", "test"]).await.trim(),
        "namespace/test created"
    );
    let out = k.run(&["apply", "-f", &k.path("canary-crd.yaml")]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/canaries.flagger.app created"),
        "{out}"
    );
    let out = k.run(&["apply", "-f", &k.path("canary.yaml")]).await;
    assert!(out.contains("canary.flagger.app/podinfo created"), "{out}");
    // Applying again goes through the three-way merge patch path.
    let out = k.run(&["apply", "-f", &k.path("canary.yaml")]).await;
    assert!(out.contains("canary.flagger.app/podinfo unchanged"), "{out}");

    let store = k.server.store();
    store
        .set_status(
            "flagger.app/v1beta1",
            "Canary",
            Some("test"),
            "podinfo",
            json!({"phase": "Progressing", "canaryWeight": 10, "lastTransitionTime": "2026-01-02T03:04:05Z"}),
        )
        .unwrap();
    let table = k.run(&["get", "canaries", "-n", "test"]).await;
    assert_eq!(
        header(&table),
        ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"],
        "{table}"
    );
    assert_eq!(
        row(&table, "podinfo"),
        ["podinfo", "Progressing", "10", "2026-01-02T03:04:05Z"]
    );
    let wide = k
        .run(&["get", "canary", "podinfo", "-n", "test", "-o", "wide"])
        .await;
    assert_eq!(
        header(&wide),
        ["NAME", "STATUS", "WEIGHT", "STEPWEIGHT", "LASTTRANSITIONTIME"],
        "{wide}"
    );
    assert_eq!(row(&wide, "podinfo")[3], "10");

    // core/v1 Events about the Canary show up in describe (field selector on involvedObject).
    let canary = store
        .get("flagger.app/v1beta1", "Canary", Some("test"), "podinfo")
        .unwrap();
    let event = |name: &str, uid: &Value, reason: &str, message: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "test"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                               "namespace": "test", "uid": uid},
            "reason": reason, "message": message, "type": "Normal", "count": 1,
            "source": {"component": "aviary"},
            "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:05Z",
        })
    };
    store
        .create(event(
            "podinfo.1",
            &canary["metadata"]["uid"],
            "Synced",
            "Advance podinfo.test canary weight 10",
        ))
        .unwrap();
    store
        .create(event(
            "podinfo.2",
            &json!("another-uid"),
            "Synced",
            "From an older canary with this name",
        ))
        .unwrap();
    // Events recorded through events.k8s.io/v1 (kube-runtime's Recorder) show up too.
    let reference = {
        let gvk = kube::api::GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
        let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "canaries");
        let obj: kube::api::DynamicObject = serde_json::from_value(canary.clone()).unwrap();
        kube::Resource::object_ref(&obj, &ar)
    };
    let reporter = Reporter {
        controller: "aviary-agent".into(),
        instance: None,
    };
    let recorder = Recorder::new(k.server.client().unwrap(), reporter);
    let halted = RecordedEvent {
        type_: EventType::Warning,
        reason: "Halted".into(),
        note: Some("Canary analysis halted by the fleet gate".into()),
        action: "Analysis".into(),
        secondary: None,
    };
    recorder.publish(&halted, &reference).await.unwrap();
    let described = k.run(&["describe", "canary", "podinfo", "-n", "test"]).await;
    assert!(
        described.contains("Canary analysis halted by the fleet gate"),
        "{described}"
    );
    assert!(described.contains("aviary-agent"), "{described}");
    assert!(described.contains("Events:"), "{described}");
    assert!(
        described.contains("Advance podinfo.test canary weight 10"),
        "{described}"
    );
    assert!(!described.contains("From an older canary"), "{described}");
    assert!(described.contains("aviary"), "{described}");

    let out = k.run(&["delete", "canary", "podinfo", "-n", "test"]).await;
    assert!(out.contains("\"podinfo\" deleted"), "{out}");
    assert!(
        store
            .get("flagger.app/v1beta1", "Canary", Some("test"), "podinfo")
            .is_none()
    );
    k.run(&["delete", "-f", &k.path("canary-crd.yaml")]).await;
    let gone = k.run_raw(&["get", "canaries", "-n", "test"]).await;
    // kubectl's discovery cache may still know the type: then the list itself is a 404.
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success());
    assert!(
        stderr.contains("the server doesn't have a resource type \"canaries\"")
            || stderr.contains("the server could not find the requested resource"),
        "{stderr}"
    );
    k.server.shutdown().await;
}

#[tokio::test]
async fn knative_patch_creates_a_new_revision() {
    let Some(k) = Kubectl::start(Options::default()).await else {
        return;
    };
    k.run(&["create", "namespace", "test"]).await;
    let out = k.run(&["apply", "-f", &k.path("podinfo-ksvc.yaml")]).await;
    assert!(
        out.contains("service.serving.knative.dev/podinfo created"),
        "{out}"
    );
    let store = k.server.store().clone();
    store
        .wait_for(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            WAIT,
            |s| s["status"]["latestReadyRevisionName"] == "podinfo-00001",
        )
        .await
        .unwrap();

    // The command from the Flagger Knative tutorial, verbatim.
    let out = k
        .run(&[
            "-n",
            "test",
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
    let rev = store
        .wait_for(
            "serving.knative.dev/v1",
            "Revision",
            Some("test"),
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
    store
        .wait_for(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            WAIT,
            |s| s["status"]["latestReadyRevisionName"] == "podinfo-00002",
        )
        .await
        .unwrap();

    let revisions = k.run(&["get", "revisions", "-n", "test"]).await;
    assert_eq!(
        row(&revisions, "podinfo-00002")[..4],
        ["podinfo-00002", "podinfo", "2", "True"],
        "{revisions}"
    );
    let ksvc = k.run(&["get", "ksvc", "podinfo", "-n", "test"]).await;
    assert_eq!(
        header(&ksvc),
        ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"],
        "{ksvc}"
    );
    assert_eq!(row(&ksvc, "podinfo")[3], "podinfo-00002");
    // The core Service with the same plural is still the default for `services`.
    let core = k.run(&["get", "services", "-n", "test"]).await;
    assert!(!core.contains("podinfo"), "{core}");
    k.server.shutdown().await;
}

#[tokio::test]
async fn deployments_get_scale_delete_with_legacy_discovery() {
    // Legacy discovery only: kubectl asks for aggregated discovery and must fall back.
    let Some(k) = Kubectl::start(Options {
        aggregated_discovery: false,
        ..Options::default()
    })
    .await
    else {
        return;
    };
    k.run(&["create", "namespace", "test"]).await;
    k.run(&["apply", "-f", &k.path("podinfo-deploy.yaml")]).await;
    let store = k.server.store().clone();
    store
        .wait_for("apps/v1", "Deployment", Some("test"), "podinfo", WAIT, |d| {
            d["status"]["readyReplicas"] == 2
        })
        .await
        .unwrap();
    let table = k.run(&["get", "deploy", "-n", "test"]).await;
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
    let d = store
        .get("apps/v1", "Deployment", Some("test"), "podinfo")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    k.run(&["scale", "deploy/podinfo", "-n", "test", "--replicas=3"])
        .await;
    let out = k
        .run(&[
            "rollout",
            "status",
            "deploy/podinfo",
            "-n",
            "test",
            "--timeout=10s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = k
        .run(&[
            "wait",
            "--for=condition=Available",
            "deploy/podinfo",
            "-n",
            "test",
            "--timeout=10s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");

    let out = k.run(&["delete", "deploy", "podinfo", "-n", "test"]).await;
    assert!(out.contains("deployment.apps \"podinfo\" deleted"), "{out}");
    assert!(
        store
            .get("apps/v1", "Deployment", Some("test"), "podinfo")
            .is_none()
    );
    let out = k.run(&["get", "deploy", "-n", "test", "-o", "name"]).await;
    assert!(out.trim().is_empty(), "{out}");
    k.server.shutdown().await;
}

#[tokio::test]
async fn kubectl_get_watch_streams_changes() {
    let Some(k) = Kubectl::start(Options::default()).await else {
        return;
    };
    k.run(&["create", "namespace", "test"]).await;
    k.run(&["create", "configmap", "cfg", "-n", "test", "--from-literal=a=1"])
        .await;
    let mut cmd = tokio::process::Command::new(&k.bin);
    cmd.arg("--kubeconfig")
        .arg(k.dir.path().join("kubeconfig"))
        .arg("--cache-dir")
        .arg(k.dir.path().join("cache"))
        .args(["get", "configmaps", "-n", "test", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut next = async || {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("line in time")
            .unwrap()
            .unwrap();
        line.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(next().await, "EVENT NAME DATA");
    assert_eq!(next().await, "ADDED cfg 1");
    k.server
        .store()
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("test"),
            "cfg",
            &json!({"data": {"b": "2"}}),
        )
        .unwrap();
    assert_eq!(next().await, "MODIFIED cfg 2");
    k.server
        .store()
        .delete("v1", "ConfigMap", Some("test"), "cfg")
        .unwrap();
    assert_eq!(next().await, "DELETED cfg 2");
    child.kill().await.unwrap();
    k.server.shutdown().await;
}
