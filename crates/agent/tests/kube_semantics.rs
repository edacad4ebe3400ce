//! Real API server semantics the agent must live with:
//!
//! - another writer keeps changing the canary's Deployments mid-analysis: the agent's writes get
//!   409 Conflicts (real ones, from resourceVersion preconditions), retries them, promotes, and
//!   the other writer's changes are kept;
//! - an unknown field in a Canary is pruned by the API server (structural schema); the agent
//!   runs the canary it was given and its events show the defaults it used;
//! - a dropped watch and a 500 on a status write (from the fault proxy in front of the real API
//!   server) do not stop a canary.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aviary_testkit::Matcher;
use http::Method;
use kube_common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);
const WRITER: &str = "example.com/other-writer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_with_another_writer_are_retried_and_nothing_is_lost() {
    let mut env = Env::without_agent("conflicts", None).await;
    env.run_agent_as_service_account().await;
    let proxy = env.run_agent_through_proxy().await;
    env.create_podinfo_canary(&weighted_analysis(20, 10, false)).await;
    env.start_agent();
    env.wait_phase("podinfo", "Initialized", LIMIT).await;

    // Another writer (think: a GitOps tool stamping annotations) updates both Deployments every
    // 50 ms with resourceVersion-guarded PUTs; the agent's first three Deployment patches reach
    // the server 400 ms late, so their resourceVersion is stale by then.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (objects, ns, stop, written) =
            (env.objects.clone(), env.ns.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LIMIT;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                n += 1;
                for name in ["podinfo", "podinfo-primary"] {
                    objects
                        .update("apps/v1", "Deployment", Some(&ns), name, |d| {
                            d["metadata"]["annotations"][WRITER] = json!(n.to_string());
                        })
                        .await
                        .unwrap();
                }
                written.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    proxy.delay(
        Matcher::method(Method::PATCH, "/deployments/"),
        Duration::from_millis(400),
        3,
    );
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    env.wait_event("podinfo", "Promotion completed! Scaling down podinfo.test")
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let conflicts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| {
            s.method == Method::PATCH && s.path.contains("/deployments/") && s.status == 409 && !s.injected
        })
        .collect();
    assert!(
        !conflicts.is_empty(),
        "the API server answered no 409: {:?}",
        proxy.seen()
    );
    // Nothing lost: the agent's promotion and scale-down, and the other writer's last change.
    let last = written.load(Ordering::Relaxed).to_string();
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    assert_eq!(primary["metadata"]["annotations"][WRITER], last.as_str());
    let target = env.obj("apps/v1", "Deployment", "podinfo").await;
    assert_eq!(target["spec"]["replicas"], 0);
    assert_eq!(target["metadata"]["annotations"][WRITER], last.as_str());
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_canary_fields_are_pruned_and_the_agent_runs_what_it_got() {
    let mut env = Env::start("pruning").await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    // `maxWieght` is a typo: the structural schema has no such field, so the server drops it
    // (a Warning to the client, not an error) and the canary runs to the default maxWeight, 50.
    let created = env
        .create_yaml(&gatewayapi_canary(
            env.hooks.url(),
            "    interval: 1s\n    threshold: 2\n    maxWieght: 20\n    stepWeight: 25",
        ))
        .await;
    assert!(
        created["spec"]["analysis"].get("maxWieght").is_none(),
        "{created}"
    );
    let stored = env.canary("podinfo").await;
    assert!(
        stored["spec"]["analysis"].get("maxWieght").is_none(),
        "pruned: {stored}"
    );
    assert_eq!(stored["spec"]["analysis"]["stepWeight"], 25);

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    // What the agent saw and did: steps of 25 up to 50, never stopping at the misspelled 20.
    env.assert_advanced("podinfo", &[25, 50]).await;
    assert!(!env.has_event("podinfo", "canary weight 20").await);
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_and_a_500_do_not_stop_a_canary() {
    let mut env = Env::without_agent("faults", None).await;
    let proxy = env.run_agent_through_proxy().await;
    env.create_podinfo_canary(&weighted_analysis(30, 10, false)).await;
    env.start_agent();
    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    let watches = |p: &aviary_testkit::FaultProxy| {
        p.seen()
            .iter()
            .filter(|s| s.path.contains("/canaries") && s.path.contains("watch=true"))
            .count()
    };
    let before = watches(&proxy);
    assert!(before >= 1, "the agent watches canaries: {:?}", proxy.seen());

    // The next two status writes fail with 500; every open watch is cut.
    proxy.fail(Matcher::method(Method::PATCH, "/canaries/podinfo/status"), 500, 2);
    proxy.drop_watches();
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let injected = proxy.seen().iter().filter(|s| s.injected).count();
    assert_eq!(injected, 2, "both injected 500s were answered");
    assert!(watches(&proxy) > before, "the canary watch was re-established");
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.stop_agent().await;
}
