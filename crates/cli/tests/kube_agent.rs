//! `aviary agent` as a real process against the real kube-apiserver (testkit's control plane,
//! with the Knative revision stand-in), driven with the real `kubectl`, with built-in metrics
//! from a scripted Prometheus-compatible endpoint:
//!
//! - the seed's Knative tutorial end to end (promotion of 6.0.1, rollback of 6.0.2);
//! - an agent killed (SIGKILL) mid-analysis resumes from the Canary's status;
//! - two agents with `--leader-election`: one active, the other takes over when it stops.
//!
//! Each test has its own namespace on the test binary's shared control plane, and its agents
//! watch only that namespace. Without kubectl the kubectl test fails when `CI=true` and prints a
//! skip notice otherwise (`KUBECTL=/path/to/kubectl` picks another binary).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aviary_testkit::kube_env::{analysis_doubles, in_namespace, message_in, to_values};
use aviary_testkit::tool::Tool;
use aviary_testkit::{Cluster, FakePrometheus, FakeWebhook, Objects};
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const KNATIVE: &str = "serving.knative.dev/v1";
const CANARY: &str = "flagger.app/v1beta1";
const LEASE_API: &str = "coordination.k8s.io/v1";
/// The agents' leader-election Lease.
const LEASE: &str = "flagger-leader-election";
const LIMIT: Duration = Duration::from_secs(90);

fn kubectl_binary() -> Option<PathBuf> {
    aviary_testkit::kubectl::binary("the seed tutorial test")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// One test's namespace on the shared control plane, a scripted Prometheus, a webhook receiver.
struct Setup {
    cluster: &'static Cluster,
    ns: String,
    objects: Objects,
    prom: FakePrometheus,
    hooks: FakeWebhook,
    dir: tempfile::TempDir,
}

impl Setup {
    /// Namespace `name-…` is created (unless `create_namespace` is false: the test creates it).
    async fn start(name: &str, create_namespace: bool) -> Self {
        let cluster = Cluster::shared().await;
        let ns = if create_namespace {
            cluster.namespace(name).await.expect("a test namespace")
        } else {
            format!("{name}-{}", std::process::id())
        };
        let (prom, hooks) = analysis_doubles().await;
        Self {
            cluster,
            ns,
            objects: cluster.objects().await.unwrap(),
            prom,
            hooks,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.cluster.admin_kubeconfig()
    }

    /// `text` with the seed's namespace `test` replaced by this test's.
    fn in_namespace(&self, text: &str) -> String {
        message_in(&in_namespace(text, &self.ns), &self.ns)
    }

    /// Installs the CRDs and the seed's objects through the API (for tests that are not about
    /// kubectl).
    async fn install(&self, interval: &str) {
        let crds = to_values(aviary_api::crd::flagger_crds());
        self.cluster.install_crds(&crds).await.unwrap();
        let ksvc = std::fs::read_to_string(repo("examples/knative/podinfo-ksvc.yaml")).unwrap();
        self.objects.create_yaml(&self.in_namespace(&ksvc)).await.unwrap();
        self.objects
            .create_yaml(&self.canary_manifest(interval))
            .await
            .unwrap();
    }

    /// The seed's Canary with a shorter interval, this test's namespace, and the load tester URL
    /// pointing at the webhook receiver.
    fn canary_manifest(&self, interval: &str) -> String {
        let text = std::fs::read_to_string(repo("examples/knative/podinfo-canary.yaml")).unwrap();
        assert!(text.contains("interval: 15s") && text.contains("http://flagger-loadtester.test/"));
        let text = text
            .replace("interval: 15s", &format!("interval: {interval}"))
            .replace(
                "http://flagger-loadtester.test/",
                &format!("{}/", self.hooks.url()),
            );
        self.in_namespace(&text)
    }

    /// Starts `aviary agent` on this test's namespace, its log in `log`.
    fn agent(&self, log: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_aviary"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["--namespace", &self.ns])
            .args([
                "--metrics-server",
                self.prom.url(),
                "--min-analysis-interval",
                "1s",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--cluster", "kind-test", "--log-level", "info,aviary_kube=debug"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("aviary agent starts")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// An object of this test's namespace, which must exist.
    async fn obj(&self, api_version: &str, kind: &str, name: &str) -> Value {
        let obj = self.objects.get(api_version, kind, Some(&self.ns), name);
        obj.await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind} {name} exists"))
    }

    async fn ksvc(&self) -> Value {
        self.obj(KNATIVE, "Service", "podinfo").await
    }

    /// The Knative Service's primary is `revision`, with all the traffic (the canary's at 0).
    async fn assert_primary_revision(&self, revision: &str) {
        let svc = self.ksvc().await;
        assert_eq!(
            svc["metadata"]["annotations"]["flagger.app/primary-revision"],
            revision
        );
        assert_eq!(
            svc["spec"]["traffic"],
            json!([{"latestRevision": true, "percent": 0}, {"revisionName": revision, "percent": 100}])
        );
    }

    async fn canary(&self) -> Value {
        self.obj(CANARY, "Canary", "podinfo").await
    }

    async fn wait(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        match self
            .objects
            .wait_for(api_version, kind, Some(&self.ns), name, LIMIT, pred)
            .await
        {
            Ok(v) => v,
            Err(e) => panic!(
                "waiting for {what}: {e}\nevents:\n{}",
                self.events().await.join("\n")
            ),
        }
    }

    /// The agents' leader-election Lease once `holder` holds for its holder identity (waiting
    /// up to `timeout`).
    async fn wait_lease(&self, timeout: Duration, holder: impl Fn(&Value) -> bool) -> Value {
        self.objects
            .wait_for(LEASE_API, "Lease", Some(&self.ns), LEASE, timeout, |l| {
                holder(&l["spec"]["holderIdentity"])
            })
            .await
            .unwrap()
    }

    async fn wait_phase(&self, phase: &str) -> Value {
        self.wait(CANARY, "Canary", "podinfo", &format!("phase {phase}"), |c| {
            c["status"]["phase"] == phase
        })
        .await
    }

    async fn events(&self) -> Vec<String> {
        self.objects
            .events(&self.ns)
            .await
            .unwrap_or_default()
            .iter()
            .map(|e| {
                format!(
                    "{} x{} {}",
                    e["type"].as_str().unwrap_or(""),
                    e["count"],
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Sets the Knative Service's image (a new template, so a new revision).
    async fn set_image(&self, image: &str) {
        self.objects
            .update(KNATIVE, "Service", Some(&self.ns), "podinfo", |s| {
                s["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            })
            .await
            .unwrap();
    }
}

/// The canary's percent in `.spec.traffic` (the `latestRevision: true` entry).
fn canary_percent(ksvc: &Value) -> Option<i64> {
    ksvc["spec"]["traffic"]
        .as_array()?
        .iter()
        .find(|e| e["latestRevision"] == true)?["percent"]
        .as_i64()
}

/// Records every canary percent written to the Knative Service's `.spec.traffic`, in order, from
/// a watch on the API server (every write is an event: nothing is squashed).
async fn record_weights(setup: &Setup) -> Arc<Mutex<Vec<i64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
        "services",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(setup.objects.client().clone(), &setup.ns, &ar);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut last = None;
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(ev) = events.next().await {
            let objects = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            for o in objects {
                let now = canary_percent(&serde_json::to_value(&o).unwrap());
                if let Some(p) = now.filter(|_| now != last) {
                    out.lock().unwrap().push(p);
                }
                last = now;
            }
        }
    });
    ready_rx.await.expect("the weight recorder's watch starts");
    seen
}

/// SIGTERM, then the exit (within 15 s, or the test fails saying that `what` did not stop).
async fn stop(child: &mut Child, what: &str) -> std::io::Result<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} stops on SIGTERM"))
}

/// kubectl on the test's cluster; every call fails the test with kubectl's output on failure,
/// except `try_run_with_stdin`.
struct Kubectl(Tool);

impl Kubectl {
    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        self.0.run(args, stdin).await.0
    }

    async fn run(&self, args: &[&str]) -> String {
        self.run_with_stdin(args, None).await
    }

    /// stdout, or stderr when kubectl fails.
    async fn try_run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<String, String> {
        let out = self.0.output(args, Some(stdin)).await;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The seed tutorial's command for a new revision: a JSON patch of the Knative Service's image.
    async fn patch_image(&self, ns: &str, image: &str) {
        let patch = format!(
            r#"[{{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "{image}"}}]"#
        );
        self.run(&[
            "-n",
            ns,
            "patch",
            "services.serving",
            "podinfo",
            "--type=json",
            "-p",
            &patch,
        ])
        .await;
    }

    /// `kubectl describe canary/podinfo` shows `phase` and each of `events` (`.test` naming the
    /// test's namespace), the last one in kubectl's event table as aviary's `Synced` event of
    /// `event_type`.
    async fn assert_described(&self, cluster: &Setup, phase: &str, events: &[&str], event_type: &str) {
        let described = self.run(&["-n", &cluster.ns, "describe", "canary/podinfo"]).await;
        for text in events {
            let text = cluster.in_namespace(text);
            assert!(described.contains(&text), "missing {text:?} in:\n{described}");
        }
        assert!(has_line(&described, &["Phase:", phase]), "{described}");
        // kubectl's event table: Type, Reason, Age, From, Message.
        let last = cluster.in_namespace(&format!("aviary  {}", events[events.len() - 1]));
        assert!(
            described
                .lines()
                .any(|l| l.trim_start().starts_with(event_type) && l.contains("Synced") && l.contains(&last)),
            "{described}"
        );
    }
}

/// True when some line of `text` has exactly these whitespace-separated fields.
fn has_line(text: &str, fields: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == fields)
}

/// The fields of the table row starting with `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_knative_tutorial_promotes_then_rolls_back() {
    let Some(bin) = kubectl_binary() else { return };
    let cluster = Setup::start("seed-tutorial", false).await;
    let k = Kubectl(Tool::new(bin, Some(&cluster.kubeconfig())));

    // aviary crds | kubectl apply -f -
    let crds = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(crds.status.success());
    // The other tests of this binary create the same CRDs through the API at the same time;
    // kubectl apply reads, then creates, so it can lose that race with AlreadyExists. A second
    // apply then finds the CRD and patches it.
    let mut out = k.try_run_with_stdin(&["apply", "-f", "-"], &crds.stdout).await;
    if out.as_ref().is_err_and(|e| e.contains("AlreadyExists")) {
        out = k.try_run_with_stdin(&["apply", "-f", "-"], &crds.stdout).await;
    }
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("canaries.flagger.app"), "{out}");
    k.run(&["create", "namespace", &cluster.ns]).await;
    let ksvc = std::fs::read_to_string(repo("examples/knative/podinfo-ksvc.yaml")).unwrap();
    k.run_with_stdin(
        &["apply", "-f", "-"],
        Some(cluster.in_namespace(&ksvc).as_bytes()),
    )
    .await;
    let manifest = cluster.dir.path().join("podinfo-canary.yaml");
    std::fs::write(&manifest, cluster.canary_manifest("1s")).unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;

    let weights = record_weights(&cluster).await;
    let mut agent = cluster.agent("agent.log", &[]);

    // Initialization: the primary is revision 00001 and gets all the traffic.
    cluster.wait_phase("Initialized").await;
    cluster.assert_primary_revision("podinfo-00001").await;

    // Automated canary promotion, with the seed's exact command.
    k.patch_image(&cluster.ns, "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    cluster.wait_phase("Progressing").await;
    let c = cluster.wait_phase("Succeeded").await;
    assert_eq!(c["status"]["canaryWeight"], 0);
    assert_eq!(c["status"]["lastPromotedSpec"], "podinfo-00002");
    cluster.assert_primary_revision("podinfo-00002").await;
    // 0 at initialization, the five steps, 0 again once the primary serves everything.
    assert_eq!(
        *weights.lock().unwrap(),
        [0, 10, 20, 30, 40, 50, 0],
        "canary weights written to .spec.traffic"
    );
    // The built-in knative queries ran against the new revision.
    let queries = cluster.prom.queries();
    let ns = &cluster.ns;
    let success = format!(
        r#"envoy_cluster_upstream_rq{{ envoy_cluster_name=~"{ns}/podinfo-00002", envoy_response_code!~"5.*" }}[1m]"#
    );
    assert!(queries.iter().any(|q| q.contains(&success)), "{queries:#?}");
    let duration = format!(
        r#"envoy_cluster_upstream_rq_time_bucket{{ envoy_cluster_name=~"{ns}/podinfo-00002", }}[1m]"#
    );
    assert!(queries.iter().any(|q| q.contains(&duration)));
    // The load test webhook was called with Flagger's payload.
    assert!(
        cluster
            .hooks
            .calls()
            .iter()
            .any(|c| c.body["name"] == "podinfo" && c.body["metadata"]["type"] == "cmd")
    );

    let table = k.run(&["get", "canaries", "-n", &cluster.ns]).await;
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
    );
    assert_eq!(&row(&table, "podinfo")[1..3], ["Succeeded", "0"]);
    let events = [
        "New revision detected! Scaling up podinfo.test",
        "Advance podinfo.test canary weight 10",
        "Advance podinfo.test canary weight 50",
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Promotion completed! Scaling down podinfo.test",
    ];
    k.assert_described(&cluster, "Succeeded", &events, "Normal").await;

    // Automated rollback: the new revision answers with errors.
    cluster.prom.set(
        &[
            "envoy_cluster_upstream_rq{",
            &format!("{}/podinfo-00003", cluster.ns),
        ],
        61.39,
    );
    k.patch_image(&cluster.ns, "ghcr.io/stefanprodan/podinfo:6.0.2")
        .await;
    let c = cluster.wait_phase("Failed").await;
    assert_eq!(c["status"]["canaryWeight"], 0);
    assert_eq!(c["status"]["failedChecks"], 15);
    cluster.assert_primary_revision("podinfo-00002").await;
    let table = k.run(&["get", "canaries", "-n", &cluster.ns]).await;
    assert_eq!(&row(&table, "podinfo")[1..3], ["Failed", "0"]);
    let events = [
        "Halt podinfo.test advancement success rate 61.39% < 99%",
        "Rolling back podinfo.test failed checks threshold reached 15",
        "Canary failed! Scaling down podinfo.test",
    ];
    k.assert_described(&cluster, "Failed", &events, "Warning").await;

    let status = stop(&mut agent, "the agent").await.unwrap();
    assert!(status.success(), "{status}\n{}", cluster.log("agent.log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_analysis_resumes_from_the_status() {
    let cluster = Setup::start("agent-killed", true).await;
    cluster.install("2s").await;
    let weights = record_weights(&cluster).await;
    let mut agent = cluster.agent("agent-1.log", &[]);
    cluster.wait_phase("Initialized").await;
    cluster.set_image("ghcr.io/stefanprodan/podinfo:6.0.1").await;
    cluster
        .wait(CANARY, "Canary", "podinfo", "weight 20", |c| {
            c["status"]["canaryWeight"] == 20
        })
        .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let at_kill = cluster.canary().await;
    let before = weights.lock().unwrap().clone();

    let mut agent = cluster.agent("agent-2.log", &[]);
    let c = cluster.wait_phase("Succeeded").await;
    assert_eq!(c["status"]["lastPromotedSpec"], "podinfo-00002");
    let all = weights.lock().unwrap().clone();
    // The second agent went on from where the first stopped: no restart from 0, no repeated step.
    assert_eq!(
        all,
        [0, 10, 20, 30, 40, 50, 0],
        "before the kill: {before:?}; status then: {}",
        at_kill["status"]
    );
    let log = cluster.log("agent-2.log");
    assert!(
        !cluster
            .events()
            .await
            .iter()
            .any(|e| e.contains("Restarting analysis")),
        "{:#?}",
        cluster.events().await
    );
    assert!(
        !cluster
            .events()
            .await
            .iter()
            .any(|e| e.contains("Initialization done") && e.contains("x2")),
        "initialized once: {:#?}\n{log}",
        cluster.events().await
    );
    let _ = stop(&mut agent, "the agent").await;
}

/// The identity an agent logs when leader election is on.
fn identity(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split("this replica is ").nth(1))
        .map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_elect_one_and_fail_over() {
    let cluster = Setup::start("leader-election", true).await;
    cluster.install("1s").await;
    let args = [
        "--leader-election",
        "--leader-election-namespace",
        "aviary-system",
    ];
    let mut first = cluster.agent("first.log", &args);
    let lease = cluster
        .wait_lease(LIMIT, |holder| holder.as_str().is_some_and(|h| !h.is_empty()))
        .await;
    let mut second = cluster.agent("second.log", &args);
    cluster.wait_phase("Initialized").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (first_id, second_id) = loop {
        if let (Some(a), Some(b)) = (
            identity(&cluster.log("first.log")),
            identity(&cluster.log("second.log")),
        ) {
            break (a, b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no identity logged:\n{}\n{}",
            cluster.log("first.log"),
            cluster.log("second.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        lease["spec"]["holderIdentity"],
        first_id.as_str(),
        "the first agent leads"
    );
    // The standby waits and does not act.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lease = cluster.obj(LEASE_API, "Lease", LEASE).await;
    assert_eq!(lease["spec"]["holderIdentity"], first_id.as_str());
    assert!(
        cluster
            .log("second.log")
            .contains("another replica holds the lease; standing by"),
        "{}",
        cluster.log("second.log")
    );
    assert!(
        !cluster.log("second.log").contains("watching canaries"),
        "{}",
        cluster.log("second.log")
    );

    // The leader stops: it releases the lease and the standby takes over.
    let status = stop(&mut first, "the first agent").await.unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    cluster
        .wait_lease(Duration::from_secs(15), |holder| holder == second_id.as_str())
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        started.elapsed()
    );

    // The new leader drives the canaries: a new revision is analysed and promoted.
    cluster.set_image("ghcr.io/stefanprodan/podinfo:6.0.1").await;
    cluster.wait_phase("Succeeded").await;
    assert!(
        cluster.log("second.log").contains("watching canaries"),
        "{}",
        cluster.log("second.log")
    );
    let _ = stop(&mut second, "the second agent").await;
}
