//! Shared by the kube_* tests: a fake API server with Flagger's CRDs, a scripted Prometheus, a
//! webhook receiver, and `aviary_agent::kube::run` started in-process against them.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aviary_agent::config::{AgentConfig, GlobalNotifier, PlatformConfig};
use aviary_testkit::{FakeApiServer, FakePrometheus, FakeWebhook, Options, SimulatorConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CANARY_API: &str = "flagger.app/v1beta1";

pub struct Env {
    pub server: FakeApiServer,
    pub prom: FakePrometheus,
    pub hooks: FakeWebhook,
    pub dir: tempfile::TempDir,
    /// The fleet coordinator the agent links to, if any.
    pub coordinator: Option<String>,
    agent: Option<(oneshot::Sender<()>, JoinHandle<aviary_agent::Result<()>>)>,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Like [`Env::start`], with the agent linked to a coordinator.
    pub async fn start_with(coordinator: Option<String>) -> Self {
        let options = Options {
            simulators: SimulatorConfig {
                delay: Duration::from_millis(30),
                ..SimulatorConfig::default()
            },
            ..Options::default()
        };
        let server = FakeApiServer::start_with(options)
            .await
            .expect("fake API server starts");
        for crd in aviary_api::crd::flagger_crds() {
            server.store().create(serde_json::to_value(crd).unwrap()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        server.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        let prom = FakePrometheus::start().await.unwrap();
        prom.set_default(Some(100.0));
        let hooks = FakeWebhook::start().await.unwrap();
        let mut env = Self {
            server,
            prom,
            hooks,
            dir,
            coordinator,
            agent: None,
        };
        env.start_agent();
        env
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            cluster: "test-cluster".into(),
            region: "local".into(),
            labels: Default::default(),
            coordinator: self.coordinator.clone(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            min_analysis_interval: Duration::from_secs(1),
            metrics_server: self.prom.url().to_string(),
            default_provider: "istio".into(),
            event_webhook: None,
            notifier: GlobalNotifier::default(),
            platform: PlatformConfig::Kube {
                kubeconfig: Some(self.dir.path().join("kubeconfig")),
                namespace: None,
                leader_election: false,
                leader_election_namespace: "kube-system".into(),
            },
        }
    }

    pub fn start_agent(&mut self) {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(aviary_agent::kube::run(self.config(), async move {
            let _ = rx.await;
        }));
        self.agent = Some((tx, task));
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

    pub fn create(&self, obj: Value) -> Value {
        self.server.store().create(obj).unwrap()
    }

    pub fn create_yaml(&self, yaml: &str) -> Value {
        self.create(serde_yaml_ng::from_str(yaml).unwrap())
    }

    pub fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.server.store().get(api_version, kind, Some("test"), name)
    }

    pub fn canary(&self, name: &str) -> Value {
        self.get(CANARY_API, "Canary", name).unwrap()
    }

    /// Waits for the canary's phase, failing with its status and recent events.
    pub async fn wait_phase(&self, name: &str, phase: &str, timeout: Duration) -> Value {
        match self
            .server
            .store()
            .wait_for(CANARY_API, "Canary", Some("test"), name, timeout, |c| {
                c["status"]["phase"] == phase
            })
            .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}\nevents:\n{}", self.event_messages(name).join("\n")),
        }
    }

    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.server
            .store()
            .wait_for(
                api_version,
                kind,
                Some("test"),
                name,
                Duration::from_secs(20),
                pred,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `Type: message` of the events about a canary, oldest first.
    pub fn event_messages(&self, canary: &str) -> Vec<String> {
        let mut events: Vec<Value> = self
            .server
            .store()
            .list("v1", "Event", Some("test"))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == canary && e["involvedObject"]["kind"] == "Canary")
            .collect();
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
        });
        events
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["type"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn has_event(&self, canary: &str, text: &str) -> bool {
        self.event_messages(canary).iter().any(|m| m.contains(text))
    }

    /// Waits (bounded) for an event containing `text`.
    pub async fn wait_event(&self, canary: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.has_event(canary, text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event {text:?} on {canary}; events:\n{}",
                self.event_messages(canary).join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn set_image(&self, name: &str, image: &str) {
        let mut d = self.get("apps/v1", "Deployment", name).unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        self.server.store().upsert(d).unwrap();
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
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "podinfo", "image": image, "ports": [{"containerPort": 9898}]}]},
            },
        },
    })
}
