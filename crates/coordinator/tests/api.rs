//! API errors, listing, leadership redirects and fencing, over real gRPC on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aviary_coordinator::client::{LEADER_METADATA, call_leader_with, leader_from_status};
use aviary_coordinator::{
    Coordinator, CoordinatorConfig, Fence, LeaderState, Leadership, MemoryStore, Store,
};
use aviary_proto::v1;
use common::*;
use tokio::sync::watch;
use tonic::Code;

#[tokio::test(start_paused = true)]
async fn bad_rollouts_are_invalid_argument_with_the_field_path() {
    let (c, _agents) = start_fleet([Sim::plain("us-1", "us-east-1"), Sim::plain("eu-1", "eu-west-1")]).await;
    let cases = [
        (
            manifest("r1", "  waves: [{name: w, maxConcurrent: \"150%\"}]\n"),
            "spec.waves[0].maxConcurrent: a percent must be between 0% and 100%",
        ),
        (
            manifest(
                "r1",
                "  waves: [{name: w, clusters: {matchLabels: {region: mars}}}]\n",
            ),
            "spec.waves[0].clusters: selects no cluster",
        ),
        (
            manifest(
                "r1",
                "  waves: [{name: w}]\n  failurePolicy: {mandatoryWaves: [first]}\n",
            ),
            "spec.failurePolicy.mandatoryWaves[0]: \"first\" is not a wave",
        ),
        (
            manifest("r1", "  waves: [{name: w}]\n").replace("name: podinfo}", "name: nope}"),
            "spec.canary: no selected cluster reports canary test/nope",
        ),
        (
            manifest("r1", "  byRegion: [ap-south-1]\n"),
            "spec.byRegion[0]: no selected cluster",
        ),
        (
            "kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n".to_string(),
            "not a FleetRollout",
        ),
    ];
    for (m, want) in cases {
        refused(create(&c, &m).await, Code::InvalidArgument, want);
    }
    // name + spec instead of a manifest, same checks.
    refused(
        client(&c)
            .create_rollout(v1::CreateRolloutRequest {
                name: "r2".into(),
                spec: Some(v1::RolloutSpec {
                    canary: Some(v1::CanaryRef {
                        namespace: NS.into(),
                        name: NAME.into(),
                    }),
                    revision: Some(v1::Revision {
                        version: "2".into(),
                        ..Default::default()
                    }),
                    waves: vec![v1::WaveSpec {
                        name: "w".into(),
                        settings: Some(v1::WaveSettings {
                            max_concurrent: "x%".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "spec.waves[0].maxConcurrent",
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn not_found_already_exists_and_failed_precondition() {
    let (c, _a) = start_fleet([Sim::plain("a", "r")]).await;
    let mut cl = client(&c);
    refused(
        cl.get_rollout(v1::GetRolloutRequest { name: "nope".into() })
            .await,
        Code::NotFound,
        "",
    );
    refused(
        cl.pause_rollout(v1::RolloutVerbRequest {
            name: "nope".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "",
    );
    // Held at a manual approval: active until approved.
    create(&c, &manifest("r1", "  waves: [{name: all, approval: manual}]\n"))
        .await
        .unwrap();
    // The same spec again (a CI retry) is a no-op; another spec says what differs.
    let again = create(&c, &manifest("r1", "  waves: [{name: all, approval: manual}]\n"))
        .await
        .unwrap();
    assert_eq!(again.name, "r1");
    assert_eq!(
        again.history.len(),
        cl.get_rollout(v1::GetRolloutRequest { name: "r1".into() })
            .await
            .unwrap()
            .into_inner()
            .history
            .len()
    );
    refused(
        create(&c, &manifest("r1", "  waves: [{name: all}]\n")).await,
        Code::AlreadyExists,
        r#"spec.waves: [{"approval":"manual","name":"all"}] → [{"name":"all"}]"#,
    );
    // Strict: an unknown field is refused with its path and the closest field.
    refused(
        create(&c, &manifest("r9", "  waves: [{name: all, aproval: manual}]\n")).await,
        Code::InvalidArgument,
        "spec.waves[0].aproval: unknown field (did you mean approval?)",
    );
    refused(
        create(&c, &manifest("r2", "  waves: [{name: all}]\n")).await,
        Code::FailedPrecondition,
        "rollout r1 is still",
    );
    refused(
        cl.wait_rollout(v1::WaitRolloutRequest {
            name: "r1".into(),
            timeout_seconds: 1,
        })
        .await,
        Code::DeadlineExceeded,
        "still Running",
    );
    cl.approve_wave(wave_verb("all", "x")).await.unwrap();
    let done = wait(&c, "r1").await;
    assert_eq!(done.phase, "Succeeded");
    refused(
        cl.retry_cluster(cluster_verb("a", "x")).await,
        Code::FailedPrecondition,
        "already ended Succeeded",
    );
    // Listing: newest first, no history.
    let m = manifest("r2", "  waves: [{name: all}]\n").replace("6.0.1", "6.0.2");
    create(&c, &m).await.unwrap();
    let (list, names) = list_rollouts(&c).await;
    assert_eq!(names, ["r2", "r1"]);
    assert!(list.rollouts.iter().all(|r| r.history.is_empty()));
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn list_clusters_and_canaries_with_filters() {
    let c = coordinator().await;
    let mut cfg = agent_config(&c, "us-1", "us-east-1");
    cfg.canaries.push(aviary_coordinator::sim::SimCanary::new(
        "prod",
        "frontend",
        rev("1"),
    ));
    let _a = aviary_coordinator::sim::SimAgent::spawn(cfg);
    let _b = agent(&c, "eu-1", "eu-west-1");
    wait_connected(&c, 2).await;
    let mut cl = client(&c);
    let clusters = cl
        .list_clusters(v1::ListClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters;
    let summary: Vec<(&str, &str, u32, bool)> = clusters
        .iter()
        .map(|c| (c.name.as_str(), c.region.as_str(), c.canaries, c.connected))
        .collect();
    assert_eq!(
        summary,
        [("eu-1", "eu-west-1", 1, true), ("us-1", "us-east-1", 2, true)]
    );
    assert_eq!(clusters[0].labels["env"], "prod");
    let list = |f: v1::ListCanariesRequest| {
        let mut cl = cl.clone();
        async move {
            cl.list_canaries(f)
                .await
                .unwrap()
                .into_inner()
                .canaries
                .into_iter()
                .map(|c| format!("{}:{}", c.cluster, c.canary.unwrap().name))
                .collect::<Vec<_>>()
        }
    };
    // (cluster, region, namespace, phase) → the canaries listed.
    let filter = |cluster: &str, region: &str, namespace: &str, phase: &str| v1::ListCanariesRequest {
        cluster: cluster.into(),
        region: region.into(),
        namespace: namespace.into(),
        phase: phase.into(),
        ..Default::default()
    };
    for (f, want) in [
        (
            filter("", "", "", ""),
            vec!["eu-1:podinfo", "us-1:frontend", "us-1:podinfo"],
        ),
        (
            filter("", "us-east-1", "", ""),
            vec!["us-1:frontend", "us-1:podinfo"],
        ),
        (filter("", "", "prod", ""), vec!["us-1:frontend"]),
        (filter("eu-1", "", "", "succeeded"), vec!["eu-1:podinfo"]),
        (filter("", "", "", "Progressing"), vec![]),
    ] {
        assert_eq!(list(f.clone()).await, want, "{f:?}");
    }
    c.shutdown().await.unwrap();
}

/// Leadership the test sets by hand: a follower that names a leader, a leader that steps down.
struct Switch(watch::Sender<LeaderState>);

#[async_trait::async_trait]
impl Leadership for Switch {
    fn watch(&self) -> watch::Receiver<LeaderState> {
        self.0.subscribe()
    }
}

#[tokio::test(start_paused = true)]
async fn followers_answer_writes_with_the_leader_address_and_clients_follow() {
    let leader = coordinator().await;
    let _a = agent(&leader, "a", "r");
    wait_connected(&leader, 1).await;
    let follower = Coordinator::start(CoordinatorConfig {
        leadership: Arc::new(Switch(watch::Sender::new(LeaderState::Follower {
            leader: Some(leader.url()),
        }))),
        ..config()
    })
    .await
    .unwrap();
    let e = refused(
        create(&follower, &manifest("r1", "  waves: [{name: all}]\n")).await,
        Code::Unavailable,
        "",
    );
    assert_eq!(
        e.metadata().get(LEADER_METADATA).unwrap().to_str().unwrap(),
        leader.url()
    );
    assert_eq!(leader_from_status(&e), Some(leader.url()));
    // One redirect hop.
    let m = manifest("r1", "  waves: [{name: all}]\n");
    let r = call_leader_with(&follower.url(), &admin(), |mut cl| {
        let m = m.clone();
        async move {
            cl.create_rollout(v1::CreateRolloutRequest {
                manifest: m,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
        }
    })
    .await
    .unwrap();
    assert_eq!(r.name, "r1");
    assert_eq!(get(&leader, "r1").await.name, "r1");
    follower.shutdown().await.unwrap();
    leader.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_store_fences_a_deposed_leader() {
    let store = MemoryStore::new();
    let c = aviary_coordinator::ClusterRecord {
        name: "a".into(),
        region: "r".into(),
        labels: Default::default(),
        agent_version: "1".into(),
        registered: jiff::Timestamp::UNIX_EPOCH,
    };
    store.put_cluster(Fence(2), &c).await.unwrap();
    let e = store.put_cluster(Fence(1), &c).await.unwrap_err();
    assert!(matches!(e, aviary_coordinator::Error::Fenced { token: 1 }), "{e}");
    assert_eq!(tonic::Status::from(e).code(), Code::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn stepping_down_ends_watches_and_waits_and_redirects_live_views_until_a_new_term_reloads() {
    let tx = watch::Sender::new(LeaderState::Leader { fence: Fence(1) });
    let c = Coordinator::start(CoordinatorConfig {
        leadership: Arc::new(Switch(tx.clone())),
        ..config()
    })
    .await
    .unwrap();
    let a = held_agent(&c, "a", "r");
    wait_connected(&c, 1).await;
    create(&c, &manifest("r1", "  waves: [{name: all}]\n"))
        .await
        .unwrap();
    let mut watch_stream = client(&c)
        .watch_rollout(v1::GetRolloutRequest { name: "r1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(watch_stream.message().await.unwrap().is_some());
    let mut cl = client(&c);
    let waiting = tokio::spawn(async move {
        cl.wait_rollout(v1::WaitRolloutRequest {
            name: "r1".into(),
            timeout_seconds: 3600,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    tx.send_replace(LeaderState::Follower {
        leader: Some("http://127.0.0.1:9".into()),
    });
    // The watch ends with UNAVAILABLE naming the new leader, and so does the wait.
    let e = loop {
        match watch_stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(leader_from_status(&e).as_deref(), Some("http://127.0.0.1:9"));
    refused(waiting.await.unwrap(), Code::Unavailable, "");
    assert_eq!(leader_from_status(&e).as_deref(), Some("http://127.0.0.1:9"));
    // The live lists are the leader's: a follower redirects them.
    let e = client(&c)
        .list_clusters(v1::ListClustersRequest {})
        .await
        .unwrap_err();
    assert_eq!(leader_from_status(&e).as_deref(), Some("http://127.0.0.1:9"));
    refused(
        client(&c).list_canaries(v1::ListCanariesRequest::default()).await,
        Code::Unavailable,
        "",
    );
    // Rollouts are read from the store.
    assert_eq!(get(&c, "r1").await.phase, "Running");

    // A new term: the state is reloaded, the agent reconnects, the rollout completes.
    tx.send_replace(LeaderState::Leader { fence: Fence(2) });
    wait_connected(&c, 1).await;
    a.hold(NS, NAME, false);
    let done = wait(&c, "r1").await;
    assert_eq!(done.phase, "Succeeded", "{done:?}");
    c.shutdown().await.unwrap();
}
