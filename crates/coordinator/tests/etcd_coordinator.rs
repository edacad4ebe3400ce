//! Two coordinator replicas on one real etcd with simulated agents (real gRPC on loopback):
//! the follower serves reads from etcd, redirects writes and agents to the leader, and reports
//! NOT_SERVING for the Fleet service; the leader loses its lease in the middle of a wave, its
//! next write (an operator's pause) is refused by the fence, it steps down, the other replica
//! takes over, the agents follow, and the rollout completes with every cluster started once.

mod common;

use std::time::Duration;

use aviary_coordinator::client::{LEADER_METADATA, call_leader_with};
use aviary_coordinator::sim::SimAgent;
use aviary_coordinator::{Coordinator, Leadership};
use aviary_proto::v1;
use aviary_testkit::manifests::fleet_rollout;
use common::{etcd_replica, fleet, poll, refused, rollout_verb, sim_config, start_etcd};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Waits until `leader` reports the Fleet service SERVING and `follower` NOT_SERVING. The
/// health follows leadership once the new term's state is loaded, so it can lag the leader
/// check by a moment.
async fn serving_is(leader: &Coordinator, follower: &Coordinator) {
    poll("the leader alone to serve", Duration::from_secs(10), || async {
        fleet_status(leader).await == ServingStatus::Serving
            && fleet_status(follower).await == ServingStatus::NotServing
    })
    .await;
}

async fn fleet_status(c: &Coordinator) -> ServingStatus {
    let mut h =
        HealthClient::new(aviary_coordinator::client::channel_with(&c.url(), &common::admin()).unwrap());
    let r = h
        .check(HealthCheckRequest {
            service: "aviary.v1.Fleet".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

async fn get(url: &str, name: &str) -> v1::Rollout {
    fleet(url)
        .get_rollout(v1::GetRolloutRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

fn started(r: &v1::Rollout, cluster: &str) -> usize {
    r.history
        .iter()
        .filter(|h| h.kind == "cluster-started" && h.cluster == cluster)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_is_fenced_and_the_other_replica_finishes_the_rollout() {
    aviary_testkit::logs::trace_to_test_output();
    let Some(etcd) = start_etcd("a_deposed_leader_is_fenced").await else {
        return;
    };
    // A's keep-alives are 10 s apart: only its refused write tells it that its lease is gone.
    let (a, la) = etcd_replica(&etcd, Some(Duration::from_secs(30))).await;
    poll("a to lead", Duration::from_secs(10), || async {
        la.check().is_ok()
    })
    .await;
    let (b, lb) = etcd_replica(&etcd, Some(Duration::from_secs(3))).await;
    poll("b to follow a", Duration::from_secs(10), || async {
        lb.check()
            .is_err_and(|e| e.to_string().contains(&a.local_addr().to_string()))
    })
    .await;
    serving_is(&a, &b).await;

    // Agents are pointed at the follower and follow it to the leader.
    let agents: Vec<SimAgent> = [
        ("us-1", "us-east-1"),
        ("us-2", "us-east-1"),
        ("eu-1", "eu-west-1"),
    ]
    .into_iter()
    .map(|(c, r)| {
        let mut cfg = sim_config(&b.url(), c, r);
        cfg.tick = Duration::from_millis(200);
        cfg.steps = 5;
        SimAgent::spawn(cfg)
    })
    .collect();
    poll(
        "the agents to connect to the leader",
        Duration::from_secs(10),
        || async {
            let list = fleet(&a.url())
                .list_clusters(v1::ListClustersRequest {})
                .await
                .unwrap()
                .into_inner();
            list.clusters.iter().filter(|c| c.connected).count() == 3
        },
    )
    .await;

    // A write on the follower is refused with the leader's address; the client follows it.
    let create = v1::CreateRolloutRequest {
        manifest: fleet_rollout("podinfo:6.0.1", &["us-east-1", "eu-west-1"]),
        actor: "test".into(),
        ..Default::default()
    };
    let e = refused(
        fleet(&b.url()).create_rollout(create.clone()).await,
        tonic::Code::Unavailable,
        "",
    );
    assert_eq!(
        e.metadata().get(LEADER_METADATA).unwrap().to_str().unwrap(),
        a.local_addr().to_string()
    );
    call_leader_with(&b.url(), &common::admin(), |mut c| {
        let create = create.clone();
        async move { c.create_rollout(create).await }
    })
    .await
    .unwrap();

    // The follower reads the rollout from etcd.
    poll("us-1 to run", Duration::from_secs(10), || async {
        started(&get(&b.url(), "podinfo-6-0-1").await, "us-1") == 1
    })
    .await;

    // A's lease ends behind its back; its next write (an operator's pause) is refused by the
    // fence in etcd and A steps down.
    // (A's connection is open before the lease goes: the pause must race only A's noticing,
    // not a connection setup.)
    let mut to_a = fleet(&a.url());
    to_a.get_rollout(v1::GetRolloutRequest {
        name: "podinfo-6-0-1".into(),
    })
    .await
    .unwrap();
    let lease = la.lease().unwrap();
    etcd.revoke_lease(lease).await;
    let e = refused(
        to_a.pause_rollout(rollout_verb("podinfo-6-0-1", "op", "must not happen"))
            .await,
        tonic::Code::Unavailable,
        "",
    );
    // Usually the fence in etcd refuses the write. When B wins the election fast enough, A
    // sees the new leader on its election watch first and refuses the write itself; either
    // way nothing is written (checked at the end). The fence alone is tested in etcd_store.rs.
    let fenced = e.message().contains("fencing token") && e.message().contains("stale");
    let stepped_down = e.message().contains("not the leader");
    assert!(fenced || stepped_down, "{}", e.message());
    assert!(la.check().is_err(), "a stepped down");

    // B takes over, the agents follow, the rollout completes there.
    poll("b to lead", Duration::from_secs(10), || async {
        lb.check().is_ok()
    })
    .await;
    serving_is(&b, &a).await;
    poll("the rollout to succeed", Duration::from_secs(60), || async {
        get(&b.url(), "podinfo-6-0-1").await.phase == "Succeeded"
    })
    .await;
    let r = get(&a.url(), "podinfo-6-0-1").await;
    assert_eq!(r.phase, "Succeeded", "a follower reads the same state");
    for c in ["us-1", "us-2", "eu-1"] {
        assert_eq!(started(&r, c), 1, "{c} started exactly once: {:?}", r.history);
    }
    assert!(
        !r.history.iter().any(|h| h.kind == "paused"),
        "the deposed leader's pause was not written"
    );
    for agent in agents {
        agent.stop().await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
