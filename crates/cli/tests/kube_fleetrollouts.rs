//! FleetRollouts as Kubernetes objects, on the real kube-apiserver (testkit's control plane)
//! with the real `kubectl`: `aviary coordinator --kubeconfig … --namespace …` with simulated
//! agents on loopback.
//!
//! - `kubectl apply` of a FleetRollout creates the rollout; `kubectl wait
//!   --for=condition=Succeeded` returns once it succeeded; `kubectl get fleetrollouts` shows
//!   the phase and `done/planned` clusters; the status carries every wave and cluster;
//! - a spec the coordinator refuses is `Rejected` with condition Stalled and the field path;
//! - verbs as annotations (pause), seen through the gRPC API too; a verb through the CLI
//!   (resume) reaches the object's status; deleting the object aborts the rollout, deletes it
//!   once the rollback ended, and the same name applied again is a fresh rollout.
//!
//! The coordinator runs as the ServiceAccount of deploy/coordinator/rbac.yaml, and the API
//! server's audit log has no 403 for it. Without kubectl the test fails when `CI=true` and
//! prints a skip notice otherwise.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use aviary_coordinator::client::ClientTls;
use aviary_coordinator::sim::{SimAgent, SimCanary, SimConfig};
use aviary_core::fleet::Revision;
use aviary_testkit::Cluster;
use aviary_testkit::aviary::Pki;
use aviary_testkit::kube_env::to_values;
use aviary_testkit::process::{Log, spawn_with_input};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .env("HOME", self.home.path());
        spawn_with_input(&mut cmd, stdin.map(str::as_bytes))
            .wait_with_output()
            .unwrap()
    }

    /// Runs and asserts success; stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`.
    fn apply(&self, yaml: &str) {
        self.ok(&["apply", "-f", "-"], Some(yaml));
    }

    /// `kubectl wait --for=CONDITION OBJECT --timeout=TIMEOUT`; stdout.
    fn wait(&self, condition: &str, object: &str, timeout: &str) -> String {
        let (condition, timeout) = (format!("--for={condition}"), format!("--timeout={timeout}"));
        self.ok(&["wait", &condition, object, &timeout], None)
    }

    fn json(&self, kind_name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", kind_name, "-o", "json"], None)).unwrap()
    }
}

fn rollout(name: &str, version: &str, extra: &str) -> String {
    format!(
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: {name}}}\nspec:\n  \
         canary: {{namespace: test, name: podinfo}}\n  revision: {{containerImages: {{podinfod: 'podinfo:{version}'}}}}\n{extra}"
    )
}

/// The FleetRollouts' waves: one region after the other.
const BOTH_REGIONS: &str = "  byRegion: [us-east-1, eu-west-1]\n";

fn sim(url: &str, cluster: &str, region: &str) -> SimAgent {
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let mut cfg = SimConfig::new(url, cluster, region, vec![SimCanary::new("test", "podinfo", rev)]);
    cfg.tls = ClientTls::from_dir(Pki::get(BIN).agent(cluster), cluster);
    cfg.tick = Duration::from_millis(100);
    SimAgent::spawn(cfg)
}

/// The entries of a JSON list.
fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().expect("a list").iter()
}

/// The condition of type `name` in an object's `status`.
fn condition<'a>(status: &'a Value, name: &str) -> &'a Value {
    let mut conditions = items(&status["conditions"]);
    conditions
        .find(|c| c["type"] == name)
        .unwrap_or_else(|| panic!("no condition {name} in {status}"))
}

/// `aviary rollout get NAME -o json`, which must succeed.
fn rollout_json(url: &str, name: &str) -> Value {
    let (code, out, err) = aviary(url, &["rollout", "get", name, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn aviary(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "ci-bot", args)
}

#[test]
fn fleetrollout_objects_are_rollouts_with_status_verbs_and_delete() {
    let Some(bin) = aviary_testkit::kubectl::binary("the FleetRollout test") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, ns) = rt.block_on(async {
        let cluster = Cluster::shared().await;
        let ns = cluster.namespace("fleetrollouts").await.unwrap();
        let crds = to_values(aviary_api::crd::aviary_crds());
        cluster.install_crds(&crds).await.unwrap();
        (cluster, ns)
    });
    let k = Kubectl {
        bin,
        kubeconfig: cluster.admin_kubeconfig(),
        ns: ns.clone(),
        home: tempfile::tempdir().unwrap(),
    };
    // The coordinator runs as the ServiceAccount deploy/coordinator/rbac.yaml binds, with
    // exactly those rules (in this test's namespace).
    let rbac = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/coordinator/rbac.yaml"
    ))
    .unwrap()
    .replace("aviary-fleet", &ns);
    k.apply(&rbac);
    let kubeconfig = k.home.path().join("coordinator.kubeconfig");
    rt.block_on(cluster.service_account_kubeconfig(&ns, "aviary-coordinator", &kubeconfig))
        .unwrap();
    let user = format!("system:serviceaccount:{ns}:aviary-coordinator");
    let log = Log::default();
    let (_coord, url) = aviary_testkit::aviary::start_coordinator(
        &aviary_testkit::netns::Host::loopback(),
        BIN,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            &ns,
            "--log-level",
            "info",
        ],
        "coordinator",
        &log,
        |l| l.contains("WARN") || l.contains("ERROR"),
    );
    let agents = rt.block_on(async { [sim(&url, "us-1", "us-east-1"), sim(&url, "eu-1", "eu-west-1")] });
    for _ in 0..100 {
        if aviary(&url, &["clusters"]).1.matches(" yes ").count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // apply → rollout → Succeeded, visible to kubectl wait and kubectl get.
    k.apply(&rollout("podinfo-6-0-1", "6.0.1", BOTH_REGIONS));
    let out = k.wait("condition=Succeeded", "fleetrollout/podinfo-6-0-1", "60s");
    assert!(out.contains("condition met"), "{out}");
    let table = k.ok(&["get", "fleetrollouts"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "CANARY", "CLUSTERS", "FAILED", "MESSAGE", "AGE"],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("podinfo-6-0-1")
            && row.contains(" Succeeded ")
            && row.contains(" test/podinfo ")
            && row.contains(" 2/2 "),
        "{table}"
    );
    let obj = k.json("fleetrollout/podinfo-6-0-1");
    let status = &obj["status"];
    assert_eq!(status["waves"][0]["name"], "us-east-1", "{status}");
    assert_eq!(status["waves"][1]["clusters"][0]["name"], "eu-1", "{status}");
    assert_eq!(
        status["waves"][1]["clusters"][0]["phase"], "Succeeded",
        "{status}"
    );
    assert_eq!(status["observedGeneration"], obj["metadata"]["generation"]);
    assert_eq!(condition(status, "Ready")["status"], "True", "{status}");
    // The same rollout through the gRPC API.
    let grpc = rollout_json(&url, "podinfo-6-0-1");
    assert_eq!(grpc["phase"], "Succeeded");
    assert_eq!(grpc["history"][0]["actor"], "kubernetes");

    // A spec the coordinator refuses: Rejected, Stalled, with the field path.
    k.apply(&rollout("to-mars", "6.0.9", "  byRegion: [mars]\n"));
    k.wait("condition=Stalled", "fleetrollout/to-mars", "30s");
    let bad = k.json("fleetrollout/to-mars");
    assert_eq!(bad["status"]["phase"], "Rejected", "{bad}");
    assert!(
        bad["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.byRegion[0]"),
        "{bad}"
    );
    k.ok(&["delete", "fleetrollout/to-mars", "--timeout=30s"], None);

    // Verbs: pause as an annotation (seen over gRPC), resume over gRPC (seen in the status).
    agents[0].hold("test", "podinfo", true);
    k.apply(&rollout("podinfo-6-0-2", "6.0.2", BOTH_REGIONS));
    k.wait(
        "jsonpath={.status.phase}=Running",
        "fleetrollout/podinfo-6-0-2",
        "30s",
    );
    k.ok(
        &[
            "annotate",
            "fleetrollout/podinfo-6-0-2",
            "aviary.dev/pause=maintenance window",
        ],
        None,
    );
    k.wait(
        "jsonpath={.status.phase}=Paused",
        "fleetrollout/podinfo-6-0-2",
        "30s",
    );
    let paused = k.json("fleetrollout/podinfo-6-0-2");
    assert!(
        paused["metadata"]["annotations"]
            .get("aviary.dev/pause")
            .is_none(),
        "the verb annotation is removed once applied: {paused}"
    );
    assert_eq!(
        paused["status"]["lastVerb"], "pause maintenance window by kubernetes: done",
        "{paused}"
    );
    let grpc = rollout_json(&url, "podinfo-6-0-2");
    assert_eq!(grpc["phase"], "Paused");
    assert_eq!(aviary(&url, &["rollout", "resume", "podinfo-6-0-2"]).0, 0);
    k.wait(
        "jsonpath={.status.phase}=Running",
        "fleetrollout/podinfo-6-0-2",
        "30s",
    );

    // Deleting the object aborts the rollout (rolling back the running cluster); the object
    // stays Terminating until the rollback ended, then the rollout is deleted with it.
    k.ok(&["delete", "fleetrollout/podinfo-6-0-2", "--timeout=30s"], None);
    let (code, _, err) = aviary(&url, &["rollout", "get", "podinfo-6-0-2", "-o", "json"]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");
    let audit = log.grep("rollout deleted with its FleetRollout object");
    assert!(audit.iter().any(|l| l.contains("Aborted")), "{audit:?}");

    // The same name again is a fresh rollout: us-1, whose analysis of 6.0.2 was rolled back,
    // analyses it again.
    agents[0].hold("test", "podinfo", false);
    k.apply(&rollout("podinfo-6-0-2", "6.0.2", BOTH_REGIONS));
    k.wait("condition=Succeeded", "fleetrollout/podinfo-6-0-2", "60s");
    let grpc = rollout_json(&url, "podinfo-6-0-2");
    assert_eq!(grpc["phase"], "Succeeded", "{grpc}");
    let kinds: Vec<&str> = items(&grpc["history"])
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"aborted"), "a fresh history: {kinds:?}");
    assert_eq!(
        agents[0].analyses("test", "podinfo"),
        3,
        "6.0.1, 6.0.2 rolled back, 6.0.2 again"
    );

    // deploy/coordinator/rbac.yaml grants every call the controller made.
    let denied: Vec<String> = cluster
        .control_plane()
        .audit_events(&user)
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["objectRef"]))
        .collect();
    assert!(denied.is_empty(), "403s for {user}: {denied:?}");
    drop(agents);
}
