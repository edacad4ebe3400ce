//! Two coordinator replicas on one real etcd with simulated agents (real gRPC on loopback):
//! the follower serves reads from etcd, redirects writes and agents to the leader, and reports
//! NOT_SERVING for the Fleet service; the leader loses its lease in the middle of a wave, its
//! next write (an operator's pause) is refused by the fence, it steps down, the other replica
//! takes over, the agents follow, and the rollout completes with every cluster started once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aviary_coordinator::client::{LEADER_METADATA, call_leader_with};
use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::sim::{SimAgent, SimCanary, SimConfig};
use aviary_coordinator::{Coordinator, CoordinatorConfig, Leadership};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use aviary_testkit::etcd::LocalEtcd;
use common::fleet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn replica(etcd: &LocalEtcd, ttl_secs: u64) -> (Coordinator, Arc<EtcdLeadership>) {
    let mut cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    cfg.lease_ttl = Duration::from_secs(ttl_secs);
    let leadership = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    let store = Arc::new(EtcdStore::new(&cfg, &leadership));
    let c = Coordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        heartbeat: Duration::from_secs(1),
        store,
        leadership: leadership.clone(),
        management: None,
        tls: common::config().tls,
        token_file: None,
        limits: Default::default(),
        cluster_ttl: aviary_coordinator::limits::CLUSTER_TTL,
    })
    .await
    .unwrap();
    (c, leadership)
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

async fn until<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, limit: Duration, f: F) {
    tokio::time::timeout(limit, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"));
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

const ROLLOUT: &str = "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: podinfo-6-0-1}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {containerImages: {podinfod: 'podinfo:6.0.1'}}
  byRegion: [us-east-1, eu-west-1]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_is_fenced_and_the_other_replica_finishes_the_rollout() {
    aviary_testkit::logs::trace_to_test_output();
    let Some(bin) = LocalEtcd::binary_or_skip("a_deposed_leader_is_fenced") else {
        return;
    };
    let etcd = tokio::task::spawn_blocking(move || LocalEtcd::start(&bin, 1))
        .await
        .unwrap()
        .unwrap();
    // A's keep-alives are 10 s apart: only its refused write tells it that its lease is gone.
    let (a, la) = replica(&etcd, 30).await;
    until("a to lead", Duration::from_secs(10), || async {
        la.check().is_ok()
    })
    .await;
    let (b, lb) = replica(&etcd, 3).await;
    until("b to follow a", Duration::from_secs(10), || async {
        lb.check()
            .is_err_and(|e| e.to_string().contains(&a.local_addr().to_string()))
    })
    .await;
    assert_eq!(fleet_status(&a).await, ServingStatus::Serving);
    assert_eq!(fleet_status(&b).await, ServingStatus::NotServing);

    // Agents are pointed at the follower and follow it to the leader.
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let agents: Vec<SimAgent> = [
        ("us-1", "us-east-1"),
        ("us-2", "us-east-1"),
        ("eu-1", "eu-west-1"),
    ]
    .into_iter()
    .map(|(c, r)| {
        let mut cfg = SimConfig::new(
            &b.url(),
            c,
            r,
            vec![SimCanary::new("test", "podinfo", rev.clone())],
        );
        cfg.tick = Duration::from_millis(200);
        cfg.steps = 5;
        cfg.tls = common::agent_tls(c);
        SimAgent::spawn(cfg)
    })
    .collect();
    until(
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
        manifest: ROLLOUT.into(),
        actor: "test".into(),
        ..Default::default()
    };
    let e = fleet(&b.url()).create_rollout(create.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
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
    until("us-1 to run", Duration::from_secs(10), || async {
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
    let e = to_a
        .pause_rollout(v1::RolloutVerbRequest {
            name: "podinfo-6-0-1".into(),
            actor: "op".into(),
            reason: "must not happen".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    // Usually the fence in etcd refuses the write. When B wins the election fast enough, A
    // sees the new leader on its election watch first and refuses the write itself; either
    // way nothing is written (checked at the end). The fence alone is tested in etcd_store.rs.
    let fenced = e.message().contains("fencing token") && e.message().contains("stale");
    let stepped_down = e.message().contains("not the leader");
    assert!(fenced || stepped_down, "{}", e.message());
    assert!(la.check().is_err(), "a stepped down");

    // B takes over, the agents follow, the rollout completes there.
    until("b to lead", Duration::from_secs(10), || async {
        lb.check().is_ok()
    })
    .await;
    assert_eq!(fleet_status(&a).await, ServingStatus::NotServing);
    assert_eq!(fleet_status(&b).await, ServingStatus::Serving);
    until("the rollout to succeed", Duration::from_secs(60), || async {
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
