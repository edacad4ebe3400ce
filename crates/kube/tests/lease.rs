//! Leader election between two electors against the real kube-apiserver: one holds the Lease, the
//! other stands by; a clean stop hands over at once, a dead holder after the lease duration.

mod common;

use std::time::Duration;

use aviary_kube::{LeaderElector, LeaseEnd, LeaseSettings};
use tokio_util::sync::CancellationToken;

fn settings(ns: &str, identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "aviary-test".into(),
        namespace: ns.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    }
}

async fn holder(env: &common::Env) -> String {
    env.get("coordination.k8s.io/v1", "Lease", "aviary-test")
        .await
        .unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn one_holds_the_other_takes_over_after_release_or_expiry() {
    let env = common::start("lease").await;
    let kube = env.kube.clone();
    let a = LeaderElector::new(kube.clone(), settings(&env.ns, "a"));
    let b = LeaderElector::new(kube.clone(), settings(&env.ns, "b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b must not take a held lease"
    );
    assert_eq!(holder(&env).await, "a");

    // a renews while it holds; b keeps waiting.
    let stop_a = CancellationToken::new();
    let hold_a = {
        let stop = stop_a.clone();
        tokio::spawn(async move {
            let outcome = a.hold(&stop).await;
            a.release().await;
            outcome
        })
    };
    let stop_b = CancellationToken::new();
    let acquire_b = {
        let stop = stop_b.clone();
        tokio::spawn(async move {
            let got = b.acquire(&stop).await;
            (got, b)
        })
    };
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(holder(&env).await, "a", "a renewed past the lease duration");
    assert!(!acquire_b.is_finished());

    // A clean stop releases: b takes over within a retry period or two.
    let started = std::time::Instant::now();
    stop_a.cancel();
    assert_eq!(hold_a.await.unwrap(), LeaseEnd::Shutdown);
    let (got, b) = tokio::time::timeout(Duration::from_secs(5), acquire_b)
        .await
        .unwrap()
        .unwrap();
    assert!(got);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(holder(&env).await, "b");
    let lease = env.obj("coordination.k8s.io/v1", "Lease", "aviary-test").await;
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // b dies without releasing: a new candidate waits for the lease duration, then takes it.
    drop(b);
    let c = LeaderElector::new(kube.clone(), settings(&env.ns, "c"));
    let started = std::time::Instant::now();
    let stop = CancellationToken::new();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), c.acquire(&stop))
            .await
            .unwrap()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(holder(&env).await, "c");

    // Someone else taking the lease makes the holder lose it.
    let d = LeaderElector::new(kube.clone(), settings(&env.ns, "d"));
    let lost = tokio::spawn(async move { c.hold(&CancellationToken::new()).await });
    env.merge_patch(
        "coordination.k8s.io/v1",
        "Lease",
        "aviary-test",
        &serde_json::json!({"spec": {"holderIdentity": "d"}}),
    )
    .await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .unwrap()
            .unwrap(),
        LeaseEnd::Lost
    );
    assert!(d.try_acquire_or_renew().await.unwrap());
}
