//! The etcd store against a real etcd (Debian's `etcd-server`): create, read, list,
//! compare-and-swap updates and deletes; a retried write whose answer was lost; and fencing: a leader whose
//! lease is gone (revoked behind its back, as if it had expired while the process was paused)
//! has its next write refused by etcd and steps down, while the new leader writes. Without etcd
//! the tests print a skip notice (and fail under `CI=true`).

use std::sync::Arc;
use std::time::Duration;

use aviary_api::document::{Resource, parse_documents};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::{ClusterRecord, Error, Fence, LeaderState, Leadership, RolloutRecord, Store};
use aviary_core::fleet::{CanaryKey, CanaryObs, ClusterInfo, Revision, RolloutState, resolve_plan};
use aviary_testkit::etcd::LocalEtcd;

async fn local_etcd(what: &str) -> Option<LocalEtcd> {
    aviary_testkit::logs::trace_to_test_output();
    LocalEtcd::start_for(what, 1).await
}

/// A replica: its leadership (campaigning as `advertise`) and its store.
async fn replica(etcd: &LocalEtcd, advertise: &str, ttl_secs: u64) -> (Arc<EtcdLeadership>, EtcdStore) {
    let mut cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    cfg.lease_ttl = Duration::from_secs(ttl_secs);
    let l = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    let store = EtcdStore::new(&cfg, &l);
    l.start(advertise);
    (l, store)
}

/// A replica (as [`replica`]) once it leads, and its fence.
async fn leader(etcd: &LocalEtcd, advertise: &str, ttl_secs: u64) -> (Arc<EtcdLeadership>, EtcdStore, Fence) {
    let (l, store) = replica(etcd, advertise, ttl_secs).await;
    let fence = leading(&l).await;
    (l, store, fence)
}

async fn leading(l: &EtcdLeadership) -> Fence {
    let mut rx = l.watch();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let LeaderState::Leader { fence } = *rx.borrow_and_update() {
                return fence;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("leads within 10 s")
}

fn record(name: &str) -> RolloutRecord {
    let manifest = format!(
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: {name}}}\nspec:\n  \
         canary: {{namespace: test, name: podinfo}}\n  revision: {{version: 6.0.1}}\n  byRegion: [us-east-1, eu-west-1]\n"
    );
    let rollout = match parse_documents(&manifest).unwrap().remove(0).unwrap().resource {
        Resource::FleetRollout(f) => *f,
        _ => panic!("not a FleetRollout"),
    };
    let clusters = ["us-1", "eu-1"].map(|c| ClusterInfo {
        name: c.into(),
        region: if c.starts_with("us") {
            "us-east-1"
        } else {
            "eu-west-1"
        }
        .into(),
        labels: Default::default(),
        canary: Some(CanaryObs {
            phase: "Succeeded".into(),
            primary_revision: Revision {
                version: "6.0.0".into(),
                ..Default::default()
            },
            ..Default::default()
        }),
    });
    let plan = resolve_plan(&rollout, &clusters).expect("plan");
    assert_eq!(plan.canary, CanaryKey::new("test", "podinfo"));
    RolloutRecord {
        name: name.into(),
        spec: rollout.spec.clone(),
        state: RolloutState::new(&plan, "test", jiff::Timestamp::now()),
        plan,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_compare_and_swap_and_a_retried_write_is_idempotent() {
    let Some(etcd) = local_etcd("writes_are_compare_and_swap").await else {
        return;
    };
    let (l, store, fence) = leader(&etcd, "127.0.0.1:7401", 3).await;

    let r1 = record("r1");
    let rev1 = store.create_rollout(fence, &r1).await.unwrap();
    assert!(rev1 > 0);
    // A retried create (its first answer lost) finds its own write.
    assert_eq!(store.create_rollout(fence, &r1).await.unwrap(), rev1);
    let mut other = r1.clone();
    other.state.message = "someone else".into();
    let e = store.create_rollout(fence, &other).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");

    let got = store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!((got.value.clone(), got.revision), (r1.clone(), rev1));
    assert!(store.get_rollout("nope").await.unwrap().is_none());

    let mut r1b = r1.clone();
    r1b.state.message = "second".into();
    let rev2 = store.update_rollout(fence, &r1b, rev1).await.unwrap();
    assert!(rev2 > rev1);
    // The same update again with the old expectation: it went through already.
    assert_eq!(store.update_rollout(fence, &r1b, rev1).await.unwrap(), rev2);
    // A different update from a stale read: conflict, with both revisions.
    let mut r1c = r1.clone();
    r1c.state.message = "stale".into();
    match store.update_rollout(fence, &r1c, rev1).await.unwrap_err() {
        Error::Conflict {
            name,
            expected,
            actual,
        } => {
            assert_eq!((name.as_str(), expected, actual), ("r1", rev1, rev2));
        }
        e => panic!("expected a conflict, got {e}"),
    }

    store.create_rollout(fence, &record("r2")).await.unwrap();
    let mut names: Vec<String> = store
        .list_rollouts()
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|v| v.value.name)
        .collect();
    names.sort();
    assert_eq!(names, ["r1", "r2"]);

    let cluster = ClusterRecord {
        name: "us-1".into(),
        region: "us-east-1".into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        agent_version: "0.1.0".into(),
        registered: jiff::Timestamp::now(),
    };
    store.put_cluster(fence, &cluster).await.unwrap();
    assert_eq!(store.list_clusters().await.unwrap().records, vec![cluster]);

    // The write history: every version with the term and replica that wrote it.
    let writes = store.rollout_writes("r1").await.unwrap();
    let msgs: Vec<&str> = writes.iter().map(|w| w.record.state.message.as_str()).collect();
    assert_eq!(msgs, [r1.state.message.as_str(), "second"]);
    assert!(
        writes
            .iter()
            .all(|w| w.fence == fence.0 && w.writer == "127.0.0.1:7401")
    );
    assert_eq!(
        writes.iter().map(|w| w.revision).collect::<Vec<_>>(),
        [rev1, rev2]
    );

    // A fence this replica never held is refused without asking etcd.
    let e = store
        .update_rollout(Fence(fence.0 + 1000), &r1b, rev2)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");

    // Delete (rollout delete): compare-and-swap on the revision, then the name is free again.
    match store.delete_rollout(fence, "r1", Some(rev1)).await.unwrap_err() {
        Error::Conflict { expected, actual, .. } => assert_eq!((expected, actual), (rev1, rev2)),
        e => panic!("expected a conflict, got {e}"),
    }
    store.delete_rollout(fence, "r1", Some(rev2)).await.unwrap();
    assert!(store.get_rollout("r1").await.unwrap().is_none());
    store.create_rollout(fence, &r1).await.unwrap();
    // Without an expected revision (an unreadable record) whatever is there goes.
    store.delete_rollout(fence, "r1", None).await.unwrap();
    store.delete_rollout(fence, "r1", None).await.unwrap();
    assert!(store.get_rollout("r1").await.unwrap().is_none());
    l.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write_and_steps_down() {
    let Some(etcd) = local_etcd("a_deposed_leader_cannot_write").await else {
        return;
    };
    // A long TTL: A's next keep-alive is 10 s away, so only its write can tell it that its
    // lease is gone.
    let (a, store_a, fa) = leader(&etcd, "127.0.0.1:7401", 30).await;
    let (b, store_b) = replica(&etcd, "127.0.0.1:7402", 3).await;
    let r = record("r1");
    let rev = store_a.create_rollout(fa, &r).await.unwrap();

    // A's lease ends behind its back (what a long pause past the TTL does).
    let lease = a.lease().expect("a leads");
    etcd.revoke_lease(lease).await;
    assert_eq!(a.check().unwrap(), fa, "a does not know yet");
    let mut stale = r.clone();
    stale.state.message = "written by a deposed leader".into();
    let e = store_a.update_rollout(fa, &stale, rev).await.unwrap_err();
    assert!(matches!(e, Error::Fenced { token } if token == fa.0), "{e}");
    assert!(e.to_string().contains("stale"), "{e}");
    // Refused by etcd, so it steps down at once.
    assert!(matches!(*a.watch().borrow(), LeaderState::Follower { .. }));
    assert!(a.check().is_err());

    // B leads with a newer fence and writes; A's fence stays refused.
    let fb = leading(&b).await;
    assert!(fb > fa);
    let mut next = r.clone();
    next.state.message = "written by the new leader".into();
    let rev2 = store_b.update_rollout(fb, &next, rev).await.unwrap();
    let e = store_a.update_rollout(fa, &stale, rev2).await.unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    let now = store_a.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(now.value.state.message, "written by the new leader");
    let writers: Vec<(u64, String)> = store_b
        .rollout_writes("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.fence, w.writer))
        .collect();
    assert_eq!(
        writers,
        [
            (fa.0, "127.0.0.1:7401".to_string()),
            (fb.0, "127.0.0.1:7402".to_string())
        ]
    );
    a.resign().await;
    b.resign().await;
}
