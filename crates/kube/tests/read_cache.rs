//! The agent's watch-backed reads (`Kube::with_read_cache`) against the real API server, as a
//! ServiceAccount so the audit log shows its requests: once the watch is in step, reads make no
//! request (also for objects that do not exist); a read right after a write of ours always sees
//! that write; a change by someone else shows up; and a client without a cache still GETs.

mod common;

use std::time::{Duration, Instant};

use aviary_kube::client::{DEPLOYMENT, connect};
use aviary_kube::{ClientSettings, Kube};
use aviary_testkit::kube_env::WAIT;
use common::*;
use serde_json::{Value, json};

/// A client with the read cache, as ServiceAccount `reader` (cluster-admin in the namespace).
async fn reader(env: &Env) -> (Kube, String) {
    env.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": env.ns}],
    }))
    .await;
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-reader.kubeconfig", env.ns));
    env.cluster
        .service_account_kubeconfig(&env.ns, "reader", &path)
        .await
        .unwrap();
    let client = connect(Some(&path), ClientSettings::default()).await.unwrap();
    (
        Kube::new(client).with_read_cache(),
        format!("system:serviceaccount:{}:reader", env.ns),
    )
}

/// The user's GETs of deployments so far.
fn gets(env: &Env, user: &str) -> usize {
    env.cluster
        .control_plane()
        .audit_events(user)
        .iter()
        .filter(|e| {
            e["verb"] == "get"
                && e["objectRef"]["resource"] == "deployments"
                && e["stage"] == "ResponseComplete"
        })
        .count()
}

fn label(d: &Option<Value>) -> Value {
    d.as_ref()
        .map(|d| d["metadata"]["labels"]["n"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_come_from_the_watch_and_see_every_write() {
    let env = start("read-cache").await;
    env.create(deployment(&env.ns, "app", "app:1")).await;
    let (kube, user) = reader(&env).await;

    // The first read starts the watch; reads GET until it has listed.
    let deadline = Instant::now() + WAIT;
    loop {
        let before = gets(&env, &user);
        let d = kube.get(DEPLOYMENT, &env.ns, "app").await.unwrap();
        assert!(d.is_some());
        if gets(&env, &user) == before {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never took over the reads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // In step: no request, for an existing object and for a missing one.
    let before = gets(&env, &user);
    for _ in 0..50 {
        assert!(kube.get(DEPLOYMENT, &env.ns, "app").await.unwrap().is_some());
        assert!(kube.get(DEPLOYMENT, &env.ns, "missing").await.unwrap().is_none());
    }
    assert_eq!(gets(&env, &user), before, "reads in step make no request");

    // Our own writes are read back at once, never an older copy.
    for i in 0..20 {
        kube.modify(DEPLOYMENT, &env.ns, "app", |d| {
            d["metadata"]["labels"]["n"] = json!(i.to_string());
            Ok(())
        })
        .await
        .unwrap();
        let read = kube.get(DEPLOYMENT, &env.ns, "app").await.unwrap();
        assert_eq!(label(&read), json!(i.to_string()), "read after write {i}");
    }
    let created = kube
        .create(DEPLOYMENT, &env.ns, deployment(&env.ns, "fresh", "app:1"))
        .await
        .unwrap();
    assert_eq!(
        kube.get(DEPLOYMENT, &env.ns, "fresh").await.unwrap().unwrap()["metadata"]["uid"],
        created["metadata"]["uid"]
    );

    // Someone else's change is seen (through the watch).
    env.merge_patch(
        "apps/v1",
        "Deployment",
        "app",
        &json!({"metadata": {"labels": {"n": "external"}}}),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while label(&kube.get(DEPLOYMENT, &env.ns, "app").await.unwrap()) != json!("external") {
        assert!(Instant::now() < deadline, "an external change never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without the cache every read is a GET.
    let plain = Kube::new(kube.client().clone());
    let before = gets(&env, &user);
    for _ in 0..5 {
        plain.get(DEPLOYMENT, &env.ns, "app").await.unwrap();
    }
    assert_eq!(gets(&env, &user), before + 5);
}
