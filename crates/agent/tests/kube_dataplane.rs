//! One data plane end to end: the `nginx` provider with **real nginx** (Debian's) routing real
//! HTTP traffic, and the **real Prometheus** (Debian's) behind the built-in success rate.
//!
//! - The agent (in-process) runs a canary against the real kube-apiserver; the canary Ingress it
//!   writes there is read back by aviary-testkit's ingress-nginx stand-in, which configures nginx
//!   from the annotations the way ingress-nginx does (weight, header) and turns nginx's access
//!   log into ingress-nginx's `nginx_ingress_controller_requests` series.
//! - Pods do not run on the test control plane: a test-side "kubelet" here runs one sample app
//!   (aviary's podinfo-like app) per Deployment with replicas, its version the image tag, failing
//!   every request when the tag ends in `-faulty`; a Service's endpoints are the app of the
//!   Deployment its selector matches.
//! - A load generator sends requests through nginx the whole time. At each weight the agent
//!   wrote, the share of answers from the canary's version is measured; a faulty revision is
//!   rolled back by Flagger's nginx success-rate query on the real Prometheus.
//!
//! Bounded (two minutes); every process dies with the test. Needs nginx and prometheus (apt:
//! nginx-light, prometheus; scripts/test installs them); without them it is skipped, or fails
//! with CI=true.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aviary_local::sample_app::{SampleApp, SampleAppArgs};
use aviary_testkit::IngressNginx;
use aviary_testkit::ingress_nginx::Endpoints;
use aviary_testkit::kube_env::canary;
use aviary_testkit::prometheus::{Job, Prometheus};
use kube_common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg =
            format!("`{name}` is not installed (Debian: nginx-light, prometheus); scripts/test installs it");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg} (CI=true)");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

type Apps = Arc<Mutex<HashMap<String, (String, SampleApp)>>>;

/// The test-side kubelet: a sample app per Deployment with replicas, and the Services'
/// endpoints (the app of the Deployment whose pod labels the selector matches).
async fn kubelet(
    env_objects: aviary_testkit::Objects,
    ns: String,
    apps: Apps,
    endpoints: Arc<Mutex<HashMap<String, SocketAddr>>>,
) {
    let deployments = env_objects
        .list("apps/v1", "Deployment", Some(&ns))
        .await
        .unwrap_or_default();
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let running = apps.lock().unwrap().get(&name).map(|(i, _)| i.clone());
        if replicas == 0 || running.as_deref() != Some(image.as_str()) {
            if let Some((_, app)) = apps.lock().unwrap().remove(&name) {
                tokio::spawn(app.stop());
            }
            if replicas > 0 {
                let version = image.rsplit(':').next().unwrap_or_default().to_string();
                let error_rate = if version.ends_with("-faulty") { 1.0 } else { 0.0 };
                let app = SampleApp::start(SampleAppArgs {
                    port: 0,
                    version,
                    error_rate,
                    ..Default::default()
                })
                .await
                .unwrap();
                apps.lock().unwrap().insert(name, (image, app));
            }
        }
    }
    let services = env_objects
        .list("v1", "Service", Some(&ns))
        .await
        .unwrap_or_default();
    let mut out = HashMap::new();
    for s in services {
        let selector = s["spec"]["selector"].as_object().cloned().unwrap_or_default();
        let matches = |d: &&Value| {
            !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| d["spec"]["template"]["metadata"]["labels"][k] == *v)
        };
        if let Some(d) = deployments.iter().find(matches)
            && let Some((_, app)) = apps
                .lock()
                .unwrap()
                .get(d["metadata"]["name"].as_str().unwrap_or_default())
        {
            out.insert(
                s["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                app.local_addr(),
            );
        }
    }
    *endpoints.lock().unwrap() = out;
}

/// Answers seen through nginx: (status, version, backend nginx chose).
type Seen = Arc<Mutex<Vec<(u16, String, String)>>>;

async fn load(url: String, seen: Seen, stop: CancellationToken) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while !stop.is_cancelled() {
        if let Ok(r) = client.get(&url).send().await {
            let status = r.status().as_u16();
            let backend = r
                .headers()
                .get("x-aviary-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let version = body["version"].as_str().unwrap_or_default().to_string();
            seen.lock().unwrap().push((status, version, backend));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// How many of the next `n` successful answers the canary backend gave (an nginx restart or an
/// app starting can cost a request or two), and how many of those were `version`.
async fn canary_answers(seen: &Seen, version: &str, n: usize) -> (usize, usize) {
    let start = seen.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counted = {
            let all = seen.lock().unwrap();
            let ok: Vec<&(u16, String, String)> = all[start..].iter().filter(|(s, _, _)| *s == 200).collect();
            (ok.len() >= n).then(|| {
                let canary: Vec<_> = ok[..n].iter().filter(|(_, _, b)| b == "canary").collect();
                (
                    canary.len(),
                    canary.iter().filter(|(_, v, _)| v == version).count(),
                )
            })
        };
        if let Some(c) = counted {
            return c;
        }
        assert!(tokio::time::Instant::now() < deadline, "no traffic through nginx");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until `n` answers in a row are 200s from `version`.
async fn settled(seen: &Seen, version: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let all = seen.lock().unwrap();
            if all.len() >= n
                && all[all.len() - n..]
                    .iter()
                    .all(|(s, v, _)| *s == 200 && v == version)
            {
                return;
            }
            let tail: Vec<_> = all.iter().rev().take(5).collect();
            assert!(
                tokio::time::Instant::now() < deadline,
                "traffic did not settle on {version}: last answers {tail:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_splits_real_traffic_and_prometheus_rolls_back_a_faulty_canary() {
    let (Some(nginx), Some(prometheus)) = (tool("nginx"), tool("prometheus")) else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), run(nginx, prometheus))
        .await
        .expect("the data-plane test finishes within two minutes");
}

async fn run(nginx_bin: PathBuf, prometheus_bin: PathBuf) {
    let mut env = Env::without_agent("dataplane-nginx", None).await;
    let apps: Apps = Arc::default();
    let endpoints: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    {
        let (objects, ns, apps, endpoints, stop) = (
            env.objects.clone(),
            env.ns.clone(),
            apps.clone(),
            endpoints.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                kubelet(objects.clone(), ns.clone(), apps.clone(), endpoints.clone()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for (_, (_, app)) in apps.lock().unwrap().drain() {
                tokio::spawn(app.stop());
            }
        });
    }
    let resolve: Endpoints = {
        let endpoints = endpoints.clone();
        Arc::new(move |svc: &str| endpoints.lock().unwrap().get(svc).copied())
    };
    let ingress = IngressNginx::start(&nginx_bin, env.objects.clone(), &env.ns, resolve)
        .await
        .unwrap();
    let job = Job {
        name: "ingress-nginx".into(),
        targets: vec![ingress.metrics_addr().to_string()],
    };
    let prom = tokio::task::spawn_blocking(move || Prometheus::start(&prometheus_bin, &[job]))
        .await
        .unwrap()
        .unwrap();

    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "podinfo"},
        "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}]}}]}}),
    )
    .await;
    let spec = r#"
  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: podinfo}
  progressDeadlineSeconds: 60
  service: {port: 80, targetPort: 9898}
  analysis:
    interval: 3s
    # One check may come before Prometheus has two samples of the canary's new series.
    threshold: 3
    maxWeight: 50
    stepWeight: 25
"#;
    env.create_yaml(&canary("nginx", &[spec, SUCCESS_RATE_METRIC].concat()))
        .await;
    let mut config = env.config();
    config.metrics_server = prom.url().to_string();
    env.start_agent_with(config);

    let seen: Seen = Arc::default();
    tokio::spawn(load(ingress.url(), seen.clone(), stop.clone()));
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    settled(&seen, "6.0.0", 50).await;

    // A healthy revision: at the weight the agent wrote on the canary Ingress, that share of
    // the real requests reaches the canary's version.
    env.set_image("podinfo", "podinfo:6.0.1").await;
    let annotations = env
        .wait_canary_ingress(|a| a["nginx.ingress.kubernetes.io/canary-weight"] == "50")
        .await;
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary"], "true");
    // nginx follows within a poll (100 ms) and a restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (canary, of_version) = canary_answers(&seen, "6.0.1", 100).await;
    eprintln!("canary weight 50 on the Ingress: {canary} of 100 requests went to the canary");
    // Binomial(100, 0.5): ±4 standard deviations.
    assert!(
        (30..=70).contains(&canary),
        "{canary} of 100 requests to the canary at weight 50"
    );
    assert_eq!(of_version, canary, "the canary backend runs 6.0.1");
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    // The promoted primary serves 6.0.1 (the weight is back to 0).
    settled(&seen, "6.0.1", 50).await;

    // A faulty revision: its 500s reach Prometheus through nginx's log; Flagger's nginx query
    // fails the check and the canary is rolled back.
    env.set_image("podinfo", "podinfo:6.0.2-faulty").await;
    let c = env.wait_phase("podinfo", "Failed", LIMIT).await;
    let events = env.event_messages("podinfo").await;
    let halt = events
        .iter()
        .find(|e| e.contains("advancement success rate"))
        .unwrap_or_else(|| panic!("no success-rate halt: {events:#?}"));
    assert!(halt.contains("< 99%"), "{halt}");
    eprintln!("faulty revision: {halt}");
    assert!(
        env.has_event(
            "podinfo",
            "Rolling back podinfo.test failed checks threshold reached 3"
        )
        .await
    );
    assert_eq!(c["status"]["canaryWeight"], 0);
    // After the rollback the primary (6.0.1) serves everything, without errors.
    settled(&seen, "6.0.1", 100).await;
    let errors = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _, b)| *s == 500 && b == "canary")
        .count();
    assert!(errors > 0, "the faulty canary's errors went through nginx");
    env.stop_agent().await;
}
