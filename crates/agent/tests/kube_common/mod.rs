//! Shared by the kube_* tests: the test binary's real control plane (with Flagger's CRDs), a
//! namespace per test, a scripted Prometheus, a webhook receiver, and `aviary_agent::kube::run`
//! started in-process, watching only the test's namespace.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use aviary_agent::config::{AgentConfig, CoordinatorTls, GlobalNotifier, PlatformConfig};
use aviary_testkit::kube_env::{self, TestNamespace, analysis_doubles, canary, to_values};
use aviary_testkit::{Cluster, FakePrometheus, FakeWebhook};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CANARY_API: &str = "flagger.app/v1beta1";

/// One test's namespace and objects (through `Deref`), the analysis doubles, and the agent.
pub struct Env {
    pub cluster: &'static Cluster,
    namespace: TestNamespace,
    pub prom: FakePrometheus,
    pub hooks: FakeWebhook,
    pub dir: tempfile::TempDir,
    /// The kubeconfig the agent uses (admin unless a test says otherwise).
    pub kubeconfig: PathBuf,
    /// The fleet coordinator the agent links to, if any.
    pub coordinator: Option<String>,
    agent: Option<(oneshot::Sender<()>, JoinHandle<aviary_agent::Result<()>>)>,
}

impl std::ops::Deref for Env {
    type Target = TestNamespace;

    fn deref(&self) -> &TestNamespace {
        &self.namespace
    }
}

/// The fleet certificates of the test binary (the product's `security::certs`): a CA, the
/// coordinator's serving certificate, the agent of `test-cluster` and an `admin` user.
pub fn fleet_pki() -> &'static Path {
    use aviary_coordinator::security::Role;
    use aviary_coordinator::security::certs::{self, DEFAULT_TRUST_DOMAIN as TD};
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("aviary-pki-")
            .tempdir()
            .unwrap()
            .keep();
        certs::init(&dir, &[]).unwrap();
        certs::issue_agent(&dir, "test-cluster", TD).unwrap();
        certs::issue_user(&dir, "admin", Role::Admin, TD).unwrap();
        dir
    })
}

impl Env {
    /// The shared cluster, namespace `name`, and an agent running as admin.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    /// Like [`Env::start`], with the agent linked to a coordinator.
    pub async fn start_with(name: &str, coordinator: Option<String>) -> Self {
        let mut env = Self::without_agent(name, coordinator).await;
        env.start_agent();
        env
    }

    /// The shared cluster and namespace `name`; no agent yet.
    pub async fn without_agent(name: &str, coordinator: Option<String>) -> Self {
        let cluster = Cluster::shared().await;
        Self::on(cluster, name, coordinator).await
    }

    /// Namespace `name` on `cluster` (with Flagger's CRDs); no agent yet.
    pub async fn on(cluster: &'static Cluster, name: &str, coordinator: Option<String>) -> Self {
        cluster
            .install_crds(&to_values(aviary_api::crd::flagger_crds()))
            .await
            .expect("Flagger's CRDs install");
        let namespace = TestNamespace::new(cluster, name).await;
        let dir = tempfile::tempdir().unwrap();
        let (prom, hooks) = analysis_doubles().await;
        Self {
            cluster,
            namespace,
            prom,
            hooks,
            kubeconfig: cluster.admin_kubeconfig(),
            dir,
            coordinator,
            agent: None,
        }
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            cluster: "test-cluster".into(),
            region: "local".into(),
            labels: Default::default(),
            coordinator: self.coordinator.clone(),
            // Mutual TLS with the test-cluster certificate when the coordinator serves it.
            coordinator_tls: match &self.coordinator {
                Some(url) if url.starts_with("https://") => CoordinatorTls {
                    ca: Some(fleet_pki().join("ca.pem")),
                    cert: Some(fleet_pki().join("test-cluster.pem")),
                    key: Some(fleet_pki().join("test-cluster-key.pem")),
                },
                _ => Default::default(),
            },
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            min_analysis_interval: Duration::from_secs(1),
            metrics_server: self.prom.url().to_string(),
            default_provider: "istio".into(),
            event_webhook: None,
            notifier: GlobalNotifier::default(),
            platform: PlatformConfig::Kube {
                kubeconfig: Some(self.kubeconfig.clone()),
                namespace: Some(self.ns.clone()),
                leader_election: false,
                leader_election_namespace: self.ns.clone(),
                client: Default::default(),
            },
        }
    }

    pub fn start_agent(&mut self) {
        self.start_agent_with(self.config());
    }

    /// Starts the agent with `config` (another metrics server, provider, …).
    pub fn start_agent_with(&mut self, config: AgentConfig) {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(aviary_agent::kube::run(config, async move {
            let _ = rx.await;
        }));
        self.agent = Some((tx, task));
    }

    /// True while the agent task runs (it has not returned or panicked).
    pub fn agent_running(&self) -> bool {
        self.agent.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    pub async fn stop_agent(&mut self) {
        if let Some((tx, task)) = self.agent.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the agent stops within 10s")
                .unwrap()
                .expect("the agent ran without error");
        }
    }

    /// Deployment `podinfo` (6.0.0) and its [`gatewayapi_canary`] with `analysis`.
    pub async fn create_podinfo_canary(&self, analysis: &str) {
        self.create(deployment("podinfo", "podinfo:6.0.0")).await;
        self.create_yaml(&gatewayapi_canary(self.hooks.url(), analysis))
            .await;
    }

    /// The annotations of Ingress `podinfo-canary` once `pred` holds for them.
    pub async fn wait_canary_ingress(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let ing = self
            .wait_for("networking.k8s.io/v1", "Ingress", "podinfo-canary", |i| {
                pred(&i["metadata"]["annotations"])
            })
            .await;
        ing["metadata"]["annotations"].clone()
    }

    /// `spec.replicas` of Deployment `name`.
    pub async fn replicas(&self, name: &str) -> Value {
        self.obj("apps/v1", "Deployment", name).await["spec"]["replicas"].clone()
    }

    /// Asserts that Service `service` selects exactly the pods labelled `app: <app>`.
    pub async fn assert_selects(&self, service: &str, app: &str) {
        let svc = self.get("v1", "Service", service).await;
        let svc = svc.unwrap_or_else(|| panic!("Service {service} exists"));
        assert_eq!(svc["spec"]["selector"], json!({"app": app}), "Service {service}");
    }

    /// Asserts that the canary advanced through each of `weights` (its events say so).
    pub async fn assert_advanced(&self, canary: &str, weights: &[u32]) {
        let texts = weights
            .iter()
            .map(|w| format!("Advance {canary}.test canary weight {w}"));
        self.assert_events(canary, texts).await;
    }

    /// Asserts that each of `texts` is in an event about the canary (`.test` naming this
    /// test's namespace).
    pub async fn assert_events(&self, canary: &str, texts: impl IntoIterator<Item = String>) {
        for text in texts {
            assert!(
                self.has_event(canary, &text).await,
                "no {text:?}: {:#?}",
                self.event_messages(canary).await
            );
        }
    }

    pub async fn canary(&self, name: &str) -> Value {
        self.get(CANARY_API, "Canary", name).await.unwrap()
    }

    /// Waits for the canary's phase, failing with its status and recent events.
    pub async fn wait_phase(&self, name: &str, phase: &str, timeout: Duration) -> Value {
        match self
            .objects
            .wait_for(CANARY_API, "Canary", Some(&self.ns), name, timeout, |c| {
                c["status"]["phase"] == phase
            })
            .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}\nevents:\n{}", self.event_messages(name).await.join("\n")),
        }
    }

    /// `Type: message` of the events about a canary, oldest first.
    pub async fn event_messages(&self, canary: &str) -> Vec<String> {
        self.objects
            .events(&self.ns)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == canary && e["involvedObject"]["kind"] == "Canary")
            .map(|e| {
                format!(
                    "{}: {}",
                    e["type"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub async fn has_event(&self, canary: &str, text: &str) -> bool {
        let text = self.msg(text);
        self.event_messages(canary)
            .await
            .iter()
            .any(|m| m.contains(&text))
    }

    /// Waits (bounded) for an event containing `text` (`.test` names this test's namespace).
    pub async fn wait_event(&self, canary: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.has_event(canary, text).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event {text:?} on {canary}; events:\n{}",
                self.event_messages(canary).await.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the image of the Deployment's first container (read-modify-write, like `kubectl set image`).
    pub async fn set_image(&self, name: &str, image: &str) {
        self.objects
            .update("apps/v1", "Deployment", Some(&self.ns), name, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            })
            .await
            .unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.agent.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

/// A podinfo Deployment with two replicas.
pub fn deployment(name: &str, image: &str) -> Value {
    kube_env::deployment(name, 2, "podinfo", image)
}

/// The image of the first container of a workload's pod template.
pub fn image(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]["image"]
}

/// The repository's deploy/rbac manifests, as one agent in namespace `ns` gets them: the
/// ServiceAccount `aviary-agent` in `ns`, the ClusterRole (renamed `aviary-agent-NS`, so tests do
/// not share it) and its binding. Rules are exactly the committed ones.
pub fn agent_rbac(ns: &str) -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac");
    let read = |f: &str| -> Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let role_name = format!("aviary-agent-{ns}");
    let mut sa = read("service-account.yaml");
    sa["metadata"]["namespace"] = json!(ns);
    let mut role = read("cluster-role.yaml");
    role["metadata"]["name"] = json!(role_name);
    let mut binding = read("cluster-role-binding.yaml");
    binding["metadata"]["name"] = json!(role_name);
    binding["roleRef"]["name"] = json!(role_name);
    binding["subjects"][0]["namespace"] = json!(ns);
    vec![sa, role, binding]
}

impl Env {
    /// Binds deploy/rbac to ServiceAccount `aviary-agent` in this namespace and points the agent
    /// (started later) at a kubeconfig with that ServiceAccount's token. Returns the user name
    /// the API server's audit log records for it.
    pub async fn run_agent_as_service_account(&mut self) -> String {
        for obj in agent_rbac(&self.ns) {
            self.objects.create(obj).await.unwrap();
        }
        let path = self.dir.path().join("agent.kubeconfig");
        self.cluster
            .service_account_kubeconfig(&self.ns, "aviary-agent", &path)
            .await
            .unwrap();
        self.kubeconfig = path;
        format!("system:serviceaccount:{}:aviary-agent", self.ns)
    }

    /// Changes the agent's ClusterRole (from [`Env::run_agent_as_service_account`]).
    pub async fn edit_agent_role(&self, change: impl FnMut(&mut Value)) {
        self.objects
            .update(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                &format!("aviary-agent-{}", self.ns),
                change,
            )
            .await
            .unwrap();
    }

    /// The audit events (verb, resource, code) of `user`'s requests, as the API server logged them.
    pub fn audit(&self, user: &str) -> Vec<Value> {
        self.cluster.control_plane().audit_events(user)
    }
}

/// `verb resource[/subresource] -> code` of an audit event, for messages.
pub fn audit_line(e: &Value) -> String {
    let o = &e["objectRef"];
    let sub = o["subresource"]
        .as_str()
        .map(|s| format!("/{s}"))
        .unwrap_or_default();
    format!(
        "{} {}{sub} {} -> {}",
        e["verb"].as_str().unwrap_or(""),
        o["resource"].as_str().unwrap_or(""),
        o["name"].as_str().unwrap_or(""),
        e["responseStatus"]["code"]
    )
}

impl Env {
    /// Puts a fault-injecting proxy between the agent (started later) and the API server; the
    /// proxy forwards with the identity of the agent's current kubeconfig.
    pub async fn run_agent_through_proxy(&mut self) -> aviary_testkit::FaultProxy {
        let upstream = aviary_testkit::control_plane::kubeconfig::client(&self.kubeconfig)
            .await
            .unwrap();
        let proxy = aviary_testkit::FaultProxy::start(upstream).await.unwrap();
        let path = self.dir.path().join("proxy.kubeconfig");
        proxy.write_kubeconfig(&path, &self.ns).unwrap();
        self.kubeconfig = path;
        proxy
    }
}

/// A gatewayapi:v1 Canary `test/podinfo` for Deployment `podinfo` whose analysis is `analysis`
/// (YAML lines indented by four spaces) plus a load-test webhook to `hooks`.
pub fn gatewayapi_canary(hooks: &str, analysis: &str) -> String {
    let spec = format!(
        r#"
  progressDeadlineSeconds: 120
  service:
    port: 9898
    gatewayRefs: [{{name: gw, namespace: gateways}}]
  analysis:
{analysis}
    webhooks:
    - name: load-test
      url: {hooks}/load
      timeout: 5s
      metadata: {{type: cmd, cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"}}
"#
    );
    canary("gatewayapi:v1", &spec)
}

/// The analysis' `metrics`: Flagger's built-in request success rate, at least 99% over 1m
/// (analysis lines, indented 4 spaces, ending in a newline).
pub const SUCCESS_RATE_METRIC: &str =
    "    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n      interval: 1m\n";

/// Analysis lines for [`gatewayapi_canary`]: every second, two failed checks roll back, weight
/// steps of `step` up to `max`, and [`SUCCESS_RATE_METRIC`] when `success_rate`.
pub fn weighted_analysis(max: u32, step: u32, success_rate: bool) -> String {
    let mut a = format!("    interval: 1s\n    threshold: 2\n    maxWeight: {max}\n    stepWeight: {step}");
    if success_rate {
        a.push('\n');
        a.push_str(SUCCESS_RATE_METRIC.trim_end());
    }
    a
}
