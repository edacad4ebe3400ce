//! kube-apiserver killed (SIGKILL) and restarted mid-canary: the agent's watches resume and the
//! canary finishes with exactly one promotion. This test binary has its own control plane (the
//! API server goes away for everyone on it).

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use kube_common::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_restarts_mid_canary_and_the_canary_promotes_once() {
    let mut env = Env::start("restart").await;
    env.create_podinfo_canary("    interval: 2s\n    threshold: 5\n    maxWeight: 50\n    stepWeight: 10")
        .await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_for(CANARY_API, "Canary", "podinfo", |c| {
        c["status"]["canaryWeight"] == 20
    })
    .await;

    let plane = env.cluster.control_plane();
    plane.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.agent_running(), "the agent outlives the API server");
    plane.start_apiserver().await.unwrap();

    let c = env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    assert_eq!(c["status"]["canaryWeight"], 0);
    let events = env.objects.events(&env.ns).await.unwrap();
    let count = |text: &str| -> i64 {
        let text = env.msg(text);
        events
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(&text)))
            .map(|e| e["count"].as_i64().unwrap_or(1))
            .sum()
    };
    assert_eq!(
        count("Copying podinfo.test template spec to podinfo-primary.test"),
        1,
        "exactly one promotion: {:#?}",
        env.event_messages("podinfo").await
    );
    env.wait_event("podinfo", "Promotion completed! Scaling down podinfo.test")
        .await;
    assert_eq!(
        count("New revision detected"),
        1,
        "the analysis was not restarted"
    );
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.stop_agent().await;
}
