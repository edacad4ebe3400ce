//! Stored records always decode, on real etcd: a rollout whose metrics hold `+Inf` (what
//! Prometheus answers for `histogram_quantile` over an empty bucket) is read back by the next
//! leader after a restart; a record that cannot be decoded is quarantined (skipped, logged and
//! reported) instead of keeping every leader from loading.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership, EtcdStore};
use aviary_coordinator::sim::{Outcome, SimAgent, SimCanary, SimConfig};
use aviary_coordinator::{Coordinator, Leadership};
use aviary_core::fleet::Revision;
use aviary_proto::v1;
use aviary_testkit::etcd::LocalEtcd;
use common::fleet;

async fn replica(etcd: &LocalEtcd) -> (Coordinator, Arc<EtcdLeadership>) {
    let cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    let leadership = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    let store = Arc::new(EtcdStore::new(&cfg, &leadership));
    let mut config = common::config();
    config.heartbeat = Duration::from_secs(1);
    config.store = store;
    config.leadership = leadership.clone();
    (Coordinator::start(config).await.unwrap(), leadership)
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

async fn get(url: &str, name: &str) -> Result<v1::Rollout, tonic::Status> {
    fleet(url)
        .get_rollout(v1::GetRolloutRequest { name: name.into() })
        .await
        .map(|r| r.into_inner())
}

async fn start_etcd(test: &str) -> Option<LocalEtcd> {
    let bin = LocalEtcd::binary_or_skip(test)?;
    Some(
        tokio::task::spawn_blocking(move || LocalEtcd::start(&bin, 1))
            .await
            .unwrap()
            .unwrap(),
    )
}

const ROLLOUT: &str = "apiVersion: aviary.dev/v1alpha1
kind: FleetRollout
metadata: {name: podinfo-6-0-1}
spec:
  canary: {namespace: test, name: podinfo}
  revision: {containerImages: {podinfod: 'podinfo:6.0.1'}}
  byRegion: [us-east-1]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_metric_is_read_back_after_a_restart() {
    aviary_testkit::logs::trace_to_test_output();
    let Some(etcd) = start_etcd("an_infinite_metric_is_read_back_after_a_restart").await else {
        return;
    };
    let (a, la) = replica(&etcd).await;
    until("a to lead", Duration::from_secs(10), || async {
        la.check().is_ok()
    })
    .await;

    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let mut cfg = SimConfig::new(
        &a.url(),
        "us-1",
        "us-east-1",
        vec![SimCanary::new("test", "podinfo", rev)],
    );
    cfg.tick = Duration::from_millis(200);
    cfg.tls = common::agent_tls("us-1");
    let agent = SimAgent::spawn(cfg);
    agent.set_outcome("test", "podinfo", Outcome::Fail);
    agent.set_metric("test", "podinfo", "request-duration-p99", f64::INFINITY);
    agent.set_metric("test", "podinfo", "error-ratio", f64::NAN);
    until("the agent to connect", Duration::from_secs(10), || async {
        agent.is_connected()
    })
    .await;
    fleet(&a.url())
        .create_rollout(v1::CreateRolloutRequest {
            manifest: ROLLOUT.into(),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    until(
        "the rollout to fail on its metrics",
        Duration::from_secs(30),
        || async {
            get(&a.url(), "podinfo-6-0-1")
                .await
                .is_ok_and(|r| r.phase == "Failed")
        },
    )
    .await;
    agent.stop().await;
    a.shutdown().await.unwrap();

    // The next leader loads the record that holds +Inf and NaN.
    let (b, lb) = replica(&etcd).await;
    until("b to lead", Duration::from_secs(10), || async {
        lb.check().is_ok()
    })
    .await;
    let r = get(&b.url(), "podinfo-6-0-1")
        .await
        .expect("the new leader reads the rollout back");
    assert_eq!(r.phase, "Failed");
    let us1 = r.waves[0].clusters.iter().find(|c| c.cluster == "us-1").unwrap();
    assert_eq!(
        us1.metrics.get("request-duration-p99"),
        Some(&f64::INFINITY),
        "{us1:?}"
    );
    assert!(
        us1.metrics.get("error-ratio").is_some_and(|v| v.is_nan()),
        "{us1:?}"
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_quarantined_and_the_rest_loads() {
    aviary_testkit::logs::trace_to_test_output();
    let Some(etcd) = start_etcd("an_undecodable_record_is_quarantined_and_the_rest_loads").await else {
        return;
    };
    // Written by hand (or by a broken writer) before any coordinator runs.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.put(
        "/aviary/rollouts/broken",
        "{\"fence\": 1, \"record\": {\"name\": ",
        None,
    )
    .await
    .unwrap();
    raw.put("/aviary/clusters/eu-9", "not json", None).await.unwrap();

    let (a, la) = replica(&etcd).await;
    until("a to lead", Duration::from_secs(10), || async {
        la.check().is_ok()
    })
    .await;
    let rev = Revision {
        container_images: [("podinfod".to_string(), "podinfo:6.0.0".to_string())].into(),
        version: String::new(),
    };
    let mut cfg = SimConfig::new(
        &a.url(),
        "us-1",
        "us-east-1",
        vec![SimCanary::new("test", "podinfo", rev)],
    );
    cfg.tls = common::agent_tls("us-1");
    let agent = SimAgent::spawn(cfg);
    until("the agent to connect", Duration::from_secs(10), || async {
        agent.is_connected()
    })
    .await;
    let mut fleet = fleet(&a.url());
    // The leader serves: the bad keys did not keep it from loading.
    fleet
        .create_rollout(v1::CreateRolloutRequest {
            manifest: ROLLOUT.into(),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .expect("the leader loaded the rest and serves");
    let list = fleet
        .list_rollouts(v1::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = list.rollouts.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["podinfo-6-0-1"]);
    let mut bad: Vec<(&str, &str)> = list
        .unreadable
        .iter()
        .map(|u| (u.key.as_str(), u.name.as_str()))
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [
            ("/aviary/clusters/eu-9", "eu-9"),
            ("/aviary/rollouts/broken", "broken")
        ]
    );
    let e = get(&a.url(), "broken").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DataLoss, "{e:?}");
    assert!(
        e.message().contains("etcdctl del /aviary/rollouts/broken"),
        "{}",
        e.message()
    );
    // The name stays taken until someone deletes the key.
    let e = fleet
        .create_rollout(v1::CreateRolloutRequest {
            manifest: ROLLOUT.replace("podinfo-6-0-1", "broken"),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    agent.stop().await;
    a.shutdown().await.unwrap();
}
