//! Stored records always decode, on real etcd: a rollout whose metrics hold `+Inf` (what
//! Prometheus answers for `histogram_quantile` over an empty bucket) is read back by the next
//! leader after a restart; a record that cannot be decoded is quarantined (skipped, logged and
//! reported) instead of keeping every leader from loading.

mod common;

use std::time::Duration;

use aviary_coordinator::sim::{Outcome, SimAgent};
use aviary_coordinator::{Coordinator, Leadership};
use aviary_proto::v1;
use aviary_testkit::etcd::LocalEtcd;
use common::{NAME, NS, create, etcd_replica, fleet, list_rollouts, poll, refused, sim_config, start_etcd};

/// The rollout of the tests: podinfo 6.0.1 to us-east-1.
fn rollout() -> String {
    aviary_testkit::manifests::fleet_rollout("podinfo:6.0.1", &["us-east-1"])
}

async fn get(url: &str, name: &str) -> Result<v1::Rollout, tonic::Status> {
    fleet(url)
        .get_rollout(v1::GetRolloutRequest { name: name.into() })
        .await
        .map(|r| r.into_inner())
}

/// A replica on `etcd`, once it leads.
async fn leader(etcd: &LocalEtcd, name: &str) -> Coordinator {
    let (c, leadership) = etcd_replica(etcd, None).await;
    poll(&format!("{name} to lead"), Duration::from_secs(10), || async {
        leadership.check().is_ok()
    })
    .await;
    c
}

/// The simulated agent of us-1 at `c`, once connected.
async fn connected_agent(c: &Coordinator, tick: Option<Duration>) -> SimAgent {
    let mut cfg = sim_config(&c.url(), "us-1", "us-east-1");
    if let Some(tick) = tick {
        cfg.tick = tick;
    }
    let agent = SimAgent::spawn(cfg);
    poll("the agent to connect", Duration::from_secs(10), || async {
        agent.is_connected()
    })
    .await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_metric_is_read_back_after_a_restart() {
    aviary_testkit::logs::trace_to_test_output();
    let Some(etcd) = start_etcd("an_infinite_metric_is_read_back_after_a_restart").await else {
        return;
    };
    let a = leader(&etcd, "a").await;
    let agent = connected_agent(&a, Some(Duration::from_millis(200))).await;
    agent.set_outcome(NS, NAME, Outcome::Fail);
    agent.set_metric(NS, NAME, "request-duration-p99", f64::INFINITY);
    agent.set_metric(NS, NAME, "error-ratio", f64::NAN);
    create(&a, &rollout()).await.unwrap();
    poll(
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
    let b = leader(&etcd, "b").await;
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

    let a = leader(&etcd, "a").await;
    let agent = connected_agent(&a, None).await;
    // The leader serves: the bad keys did not keep it from loading.
    create(&a, &rollout())
        .await
        .expect("the leader loaded the rest and serves");
    let (list, names) = list_rollouts(&a).await;
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
    refused(
        get(&a.url(), "broken").await,
        tonic::Code::DataLoss,
        "etcdctl del /aviary/rollouts/broken",
    );
    // The name stays taken until someone deletes the key.
    refused(
        create(&a, &rollout().replace("podinfo-6-0-1", "broken")).await,
        tonic::Code::AlreadyExists,
        "",
    );
    agent.stop().await;
    a.shutdown().await.unwrap();
}
