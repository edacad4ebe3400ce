//! Rollouts over real gRPC on loopback with simulated agents, on tokio's paused clock (bakes,
//! deadlines and analyses pass in virtual time).

mod common;

use common::*;

#[tokio::test(start_paused = true)]
async fn rollout_runs_wave_by_wave_and_succeeds() {
    let (c, agents) = start_fleet([
        Sim::plain("us-1", "us-east-1"),
        Sim::plain("us-2", "us-east-1"),
        Sim::plain("eu-1", "eu-west-1"),
    ])
    .await;
    let created = create(
        &c,
        &manifest(
            "r1",
            "  byRegion: [us-east-1, eu-west-1]\n  waveDefaults: {maxConcurrent: 1}\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(created.waves.len(), 2);
    let done = ended(&c, "r1", "Succeeded").await;
    assert!(
        phases(&done).iter().all(|(_, p)| p == "Succeeded"),
        "{:?}",
        phases(&done)
    );
    // Order: every us-east-1 cluster finished before eu-1 started.
    let idx = |kind: &str, cluster: &str| {
        done.history
            .iter()
            .position(|h| h.kind == kind && h.cluster == cluster)
            .unwrap_or_else(|| panic!("no {kind} for {cluster}"))
    };
    assert!(idx("cluster-succeeded", "us-1") < idx("cluster-started", "us-2"));
    assert!(idx("cluster-succeeded", "us-2") < idx("cluster-started", "eu-1"));
    for a in &agents {
        assert_eq!(a.analyses(NS, NAME), 1, "{}", a.cluster());
        assert_eq!(a.commands(), vec![format!("r1/{}/1", a.cluster())]);
        let snap = a.snapshot(NS, NAME).unwrap();
        assert_eq!(snap.rollout, "r1");
        assert!(snap.primary_revision.unwrap().container_images["podinfod"].ends_with(":6.0.1"));
    }
    let verdict = &cluster(&done, "eu-1").verdict;
    assert!(verdict.starts_with("promoted "), "{verdict}");
    assert_eq!(cluster(&done, "eu-1").metrics["request-success-rate"], 99.9);
    c.shutdown().await.unwrap();
}

/// us-1 succeeds and us-2 fails in wave `first`; eu-1 (wave `second`) would run after.
async fn failing_first_wave(
    scope: &str,
) -> (
    aviary_coordinator::Coordinator,
    [aviary_coordinator::sim::SimAgent; 3],
    aviary_proto::v1::Rollout,
) {
    let (c, agents) = start_fleet([
        Sim::plain("us-1", "us-east-1"),
        Sim::failing("us-2", "us-east-1"),
        Sim::plain("eu-1", "eu-west-1"),
    ])
    .await;
    let spec = format!(
        "  waves:
    - name: first
      regions: [us-east-1]
    - name: second
  failurePolicy: {{mandatoryWaves: [first], rollback: {scope}}}
"
    );
    create_r1(&c, &spec).await;
    let done = wait(&c, "r1").await;
    (c, agents, done)
}

#[tokio::test(start_paused = true)]
async fn failing_revision_in_the_first_wave_scope_cluster() {
    let (c, agents, done) = failing_first_wave("cluster").await;
    assert_eq!(done.phase, "Failed");
    assert!(
        done.message.contains("us-2 failed in mandatory wave first"),
        "{}",
        done.message
    );
    assert_eq!(
        phases(&done),
        [("us-1", "Succeeded"), ("us-2", "Failed"), ("eu-1", "Pending")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let v = cluster(&done, "us-2");
    assert!(
        v.verdict.starts_with(
            "canary analysis of podinfod=ghcr.io/stefanprodan/podinfo:6.0.1 failed at weight 40"
        ),
        "{}",
        v.verdict
    );
    assert_eq!(v.metrics["request-success-rate"], 42.0);
    assert_eq!(v.failed_checks, 5);
    assert_eq!(done.waves[1].phase, "Cancelled");
    assert!(agents[2].commands().is_empty(), "eu-1 never started");
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failing_revision_in_the_first_wave_scope_wave() {
    let (c, agents, done) = failing_first_wave("wave").await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(
        phases(&done),
        [("us-1", "Reverted"), ("us-2", "Failed"), ("eu-1", "Pending")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(agents[0].commands(), ["r1/us-1/1", "r1/us-1/1/revert"]);
    assert!(primary_image(&agents[0]).ends_with(":6.0.0"));
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rollback_scope_all_reverts_every_promoted_cluster_newest_wave_first() {
    let (c, agents) = start_fleet([
        Sim::plain("eu-1", "eu-west-1"),
        Sim::plain("us-1", "us-east-1"),
        Sim::failing("us-2", "us-east-1"),
    ])
    .await;
    let spec = "  waves:
    - name: canary
      regions: [eu-west-1]
    - name: main
  failurePolicy: {rollback: all}
";
    create_r1(&c, spec).await;
    let done = ended(&c, "r1", "Failed").await;
    assert_eq!(
        phases(&done),
        [("eu-1", "Reverted"), ("us-1", "Reverted"), ("us-2", "Failed")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let pos = |cl: &str| {
        done.history
            .iter()
            .position(|h| h.kind == "cluster-revert" && h.cluster == cl)
            .unwrap()
    };
    assert!(pos("us-1") < pos("eu-1"), "newest wave first");
    assert_eq!(agents[0].commands(), ["r1/eu-1/1", "r1/eu-1/1/revert"]);
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failure_budget() {
    let (c, _agents) = start_fleet([
        Sim::plain("a", "r"),
        Sim::failing("b", "r"),
        Sim::plain("c", "r"),
        Sim::failing("d", "r"),
    ])
    .await;
    // 25% of 4 = one failure tolerated; the second fails the rollout.
    let spec = "  waves: [{name: all, maxConcurrent: 1}]\n  failurePolicy: {maxFailedClusters: \"25%\"}\n";
    create_r1(&c, spec).await;
    let done = wait(&c, "r1").await;
    let counts = (done.max_failed_clusters, done.failed_clusters);
    assert_eq!((done.phase.as_str(), counts), ("Failed", (1, 2)));
    assert!(
        done.message
            .contains("2 failed (budget 1, failurePolicy.maxFailedClusters)"),
        "{}",
        done.message
    );
    assert_eq!(
        cluster(&done, "c").phase,
        "Succeeded",
        "c ran after b failed within the budget"
    );

    // With 2 tolerated the same fleet completes.
    let spec = "  waves: [{name: all, maxConcurrent: 2}]\n  failurePolicy: {maxFailedClusters: 2}\n";
    let m = manifest("r2", spec).replace("6.0.1", "6.0.2");
    create(&c, &m).await.unwrap();
    let done = ended(&c, "r2", "Succeeded").await;
    assert_eq!(done.failed_clusters, 2);
    assert!(
        done.message.starts_with(
            "2 clusters succeeded, 2 failed, 0 skipped (budget 2); still on their previous revision: b ("
        ),
        "{}",
        done.message
    );
    // The verdict names the version and the weight the analysis reached (Flagger reports 0
    // once it failed), numbers with at most two decimals.
    let b = cluster(&done, "b");
    assert!(b.verdict.starts_with("canary analysis of podinfod=ghcr.io/stefanprodan/podinfo:6.0.2 failed at weight 40 with 5 failed checks"), "{}", b.verdict);
    assert!(b.verdict.contains("request-success-rate=42)"), "{}", b.verdict);
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bake_waits_for_time_and_requests() {
    let (c, [us, _eu]) =
        start_fleet([Sim::plain("us-1", "us-east-1"), Sim::plain("eu-1", "eu-west-1")]).await;
    us.set_requests_per_tick(0);
    let spec = "  waves:
    - {name: first, regions: [us-east-1], bake: {duration: 2m, minRequests: 3000}}
    - {name: rest}
";
    create_r1(&c, spec).await;
    let baking = until_baking(&c, "r1").await;
    assert_eq!(baking.waves[0].bake_min_requests, 3000);
    assert_eq!(baking.waves[0].bake_duration, "2m0s");
    // The duration passes, but the new revision has served nothing: the wave keeps baking.
    tokio::time::sleep(std::time::Duration::from_secs(150)).await;
    let r = get(&c, "r1").await;
    assert_eq!(
        (r.waves[0].phase.as_str(), r.waves[0].bake_requests),
        ("Baking", 0)
    );
    assert_eq!(cluster(&r, "eu-1").phase, "Pending");
    us.set_requests_per_tick(100);
    let done = ended(&c, "r1", "Succeeded").await;
    let bake = record(&done, "wave-succeeded", "first");
    assert!(bake.metrics["bakeRequests"] >= 3000.0, "{:?}", bake.metrics);
    assert!(bake.metrics["bakeSeconds"] >= 150.0, "{:?}", bake.metrics);
    assert!(
        bake.message.contains("(≥ 2m0s)") && bake.message.contains("(≥ 3000)"),
        "{}",
        bake.message
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bake_min_success_rate_fails_a_regressing_cluster() {
    let (c, [a, _b]) = start_fleet([Sim::plain("us-1", "us-east-1"), Sim::plain("eu-1", "eu-west-1")]).await;
    let spec = "  waves:
    - {name: first, regions: [us-east-1], bake: {duration: 10m, minSuccessRate: 99}}
    - {name: rest}
  failurePolicy: {mandatoryWaves: [first], rollback: wave}
";
    create_r1(&c, spec).await;
    until_baking(&c, "r1").await;
    a.set_success_rate(NS, NAME, Some(97.0));
    let done = ended(&c, "r1", "Failed").await;
    let reg = record(&done, "bake-regression", "");
    assert!(
        reg.message.contains("97% < bake.minSuccessRate 99%"),
        "{}",
        reg.message
    );
    assert_eq!(reg.metrics["primarySuccessRate"], 97.0);
    // The regressed cluster itself counts as failed; eu-1 never started.
    assert_eq!(cluster(&done, "us-1").phase, "Failed");
    assert_eq!(cluster(&done, "eu-1").phase, "Pending");
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn manual_approval() {
    let (c, _agents) = start_fleet([Sim::plain("us-1", "us-east-1"), Sim::plain("eu-1", "eu-west-1")]).await;
    let spec = "  waves:
    - {name: first, regions: [us-east-1]}
    - {name: rest, approval: manual}
";
    create_r1(&c, spec).await;
    let r = until(&c, "r1", "approval", |r| r.waves[1].phase == "WaitingApproval").await;
    assert_eq!(cluster(&r, "eu-1").phase, "Pending");
    let mut cl = client(&c);
    refused(
        cl.approve_wave(wave_verb("nope", "bob")).await,
        tonic::Code::NotFound,
        "",
    );
    refused(
        cl.approve_wave(wave_verb("first", "bob")).await,
        tonic::Code::FailedPrecondition,
        "does not need approval",
    );
    let r = cl
        .approve_wave(wave_verb("rest", "bob"))
        .await
        .unwrap()
        .into_inner();
    // The authenticated identity; the free-text actor is the comment beside it.
    assert_eq!(r.waves[1].approved_by, "user:admin");
    let done = ended(&c, "r1", "Succeeded").await;
    let h = record(&done, "wave-approved", "");
    assert_eq!(
        (h.actor.as_str(), h.comment.as_str(), h.wave.as_str()),
        ("user:admin", "bob", "rest")
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume() {
    let (c, [a, _b]) = start_fleet([Sim::held("a", "r"), Sim::plain("b", "r")]).await;
    create_r1(&c, "  waves: [{name: all}]\n").await;
    until_progressing(&c, "a").await;
    let mut cl = client(&c);
    let verb = |actor: &str| rollout_verb("r1", actor, "incident 42");
    let r = cl.pause_rollout(verb("alice")).await.unwrap().into_inner();
    assert_eq!(r.phase, "Paused");
    cl.pause_rollout(verb("alice")).await.unwrap(); // idempotent
    // The running canary finishes; nothing new starts.
    a.hold(NS, NAME, false);
    until(&c, "r1", "a to finish", |r| cluster(r, "a").phase == "Succeeded").await;
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    let r = get(&c, "r1").await;
    assert_eq!(
        (r.phase.as_str(), cluster(&r, "b").phase.as_str()),
        ("Paused", "Pending")
    );
    cl.resume_rollout(verb("alice")).await.unwrap();
    let done = ended(&c, "r1", "Succeeded").await;
    let kinds: Vec<&str> = done.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "paused").count(), 1);
    let p = record(&done, "paused", "");
    assert_eq!(
        (p.actor.as_str(), p.comment.as_str(), p.message.as_str()),
        ("user:admin", "alice", "incident 42")
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn skip_a_cluster() {
    let (c, agents) = start_fleet([Sim::held("a", "r"), Sim::plain("b", "r")]).await;
    create_r1(&c, "  waves: [{name: all}]\n").await;
    until_progressing(&c, "a").await;
    let mut cl = client(&c);
    let req = |cluster: &str| cluster_verb(cluster, "carol");
    cl.skip_cluster(req("b")).await.unwrap();
    refused(
        cl.skip_cluster(req("a")).await,
        tonic::Code::FailedPrecondition,
        "its canary is running",
    );
    refused(cl.skip_cluster(req("zz")).await, tonic::Code::NotFound, "");
    agents[0].hold(NS, NAME, false);
    let done = ended(&c, "r1", "Succeeded").await;
    assert_eq!(cluster(&done, "b").phase, "Skipped");
    // The authenticated identity (carol is the comment of the history record).
    assert_eq!(cluster(&done, "b").verdict, "skipped by user:admin");
    assert!(agents[1].commands().is_empty());
    // Says who stays behind, on what.
    assert!(
        done.message.ends_with(
            "1 clusters succeeded, 0 failed, 1 skipped; still on their previous revision: b (podinfod=ghcr.io/stefanprodan/podinfo:6.0.0)"
        ),
        "{}",
        done.message
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_a_failed_cluster() {
    let (c, [a, b]) = start_fleet([Sim::failing("a", "r"), Sim::held("b", "r")]).await;
    let spec = "  waves: [{name: all, maxConcurrent: 2}]\n  failurePolicy: {maxFailedClusters: 1}\n";
    create_r1(&c, spec).await;
    until(&c, "r1", "a to fail", |r| cluster(r, "a").phase == "Failed").await;
    a.set_outcome(NS, NAME, aviary_coordinator::sim::Outcome::Succeed);
    let mut cl = client(&c);
    let req = cluster_verb("a", "dave");
    refused(
        cl.retry_cluster(cluster_verb("b", "dave")).await,
        tonic::Code::FailedPrecondition,
        "",
    );
    cl.retry_cluster(req).await.unwrap();
    b.hold(NS, NAME, false);
    let done = ended(&c, "r1", "Succeeded").await;
    let ca = cluster(&done, "a");
    assert_eq!((ca.phase.as_str(), ca.attempts), ("Succeeded", 2));
    assert_eq!(a.commands(), ["r1/a/1", "r1/a/2"]);
    assert_eq!(a.analyses(NS, NAME), 2);
    assert_eq!(done.failed_clusters, 0);
    assert_eq!(
        history_kinds(&done, "a"),
        [
            "cluster-started",
            "cluster-failed",
            "cluster-retried",
            "cluster-started",
            "cluster-succeeded"
        ]
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn abort_rolls_back_and_ends_aborted() {
    let (c, [a, _b]) = start_fleet([Sim::held("a", "r"), Sim::plain("b", "r2")]).await;
    create_r1(&c, "  byRegion: [r, r2]\n").await;
    until(&c, "r1", "a to progress", |r| cluster(r, "a").canary_weight > 0).await;
    let mut cl = client(&c);
    let verb = rollout_verb("r1", "erin", "wrong image");
    cl.abort_rollout(verb.clone()).await.unwrap();
    let done = ended(&c, "r1", "Aborted").await;
    assert_eq!(cluster(&done, "a").phase, "Reverted");
    assert_eq!(a.commands(), ["r1/a/1", "r1/a/1/rollback"]);
    assert_eq!(a.snapshot(NS, NAME).unwrap().phase, "Failed");
    cl.abort_rollout(verb.clone()).await.unwrap(); // idempotent
    refused(
        cl.pause_rollout(verb).await,
        tonic::Code::FailedPrecondition,
        "already ended Aborted",
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn partitioned_agent_finishes_and_reports_after_the_heal() {
    let (c, [a]) = start_fleet([Sim::held("a", "r")]).await;
    create_r1(&c, "  waves: [{name: all}]\n").await;
    until_progressing(&c, "a").await;
    a.partition();
    let r = until(&c, "r1", "a to be seen disconnected", |r| {
        !cluster(r, "a").connected
    })
    .await;
    assert_eq!(r.phase, "Running");
    // The analysis finishes on its own while the link is down.
    a.hold(NS, NAME, false);
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(a.snapshot(NS, NAME).unwrap().phase, "Succeeded");
    let r = get(&c, "r1").await;
    assert_eq!(
        cluster(&r, "a").phase,
        "Progressing",
        "nothing known before the heal"
    );
    a.heal();
    let done = ended(&c, "r1", "Succeeded").await;
    assert!(cluster(&done, "a").connected);
    assert_eq!(a.connects(), 2);
    assert_eq!(a.analyses(NS, NAME), 1);
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn restarted_agent_rejoins_without_a_second_start() {
    let (c, [a]) = start_fleet([Sim::held("a", "r")]).await;
    // Away when its cluster is started: the StartRevision waits for the reconnect.
    a.partition();
    until_disconnected(&c).await;
    create_r1(&c, "  waves: [{name: all}]\n").await;
    until(&c, "r1", "a to be started", |r| {
        cluster(r, "a").phase == "Starting"
    })
    .await;
    assert!(a.commands().is_empty());
    a.heal();
    until_progressing(&c, "a").await;
    // Restart mid-analysis: a new Hello; the acked start is not sent again.
    a.restart();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    a.restart();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    a.hold(NS, NAME, false);
    let done = ended(&c, "r1", "Succeeded").await;
    assert_eq!(a.commands(), ["r1/a/1"]);
    assert_eq!(a.analyses(NS, NAME), 1);
    assert!(a.connects() >= 3);
    assert_eq!(
        history_kinds(&done, "a")
            .iter()
            .filter(|k| *k == "cluster-started")
            .count(),
        1
    );
    c.shutdown().await.unwrap();
}

async fn until_disconnected(c: &aviary_coordinator::Coordinator) {
    eventually(
        "the agent to be disconnected",
        std::time::Duration::from_secs(60),
        || {
            let mut cl = client(c);
            async move {
                let l = cl
                    .list_clusters(aviary_proto::v1::ListClustersRequest {})
                    .await
                    .ok()?
                    .into_inner();
                l.clusters.iter().all(|c| !c.connected).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn unreachable_cluster_fails_after_the_deadline() {
    let (c, [a]) = start_fleet([Sim::plain("a", "r")]).await;
    a.partition();
    until_disconnected(&c).await;
    create(
        &c,
        &manifest("r1", "  waves: [{name: all}]\n  clusterDeadline: 10m\n"),
    )
    .await
    .unwrap();
    // While it waits, the status says why (CONNECTED no, and in words).
    let started = until(&c, "r1", "a to start", |r| cluster(r, "a").phase == "Starting").await;
    let a_status = cluster(&started, "a");
    assert!(!a_status.connected);
    assert_eq!(
        a_status.verdict,
        "waiting: its agent is not connected; the command goes out when it reconnects"
    );
    let done = ended(&c, "r1", "Failed").await;
    let v = &cluster(&done, "a").verdict;
    assert!(
        v.contains("clusterDeadline 10m") && v.contains("agent not connected"),
        "{v}"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn gate_mode_opens_cluster_by_cluster() {
    let (c, agents) = start_fleet([Sim::plain("us-1", "us-east-1"), Sim::plain("eu-1", "eu-west-1")]).await;
    // Gate mode: create the rollout first, then GitOps applies the revision everywhere.
    let m = manifest(
        "r1",
        "  mode: gate\n  byRegion: [us-east-1, eu-west-1]\n  waveDefaults: {approval: manual}\n",
    );
    create(&c, &m).await.unwrap();
    for a in &agents {
        a.apply(NS, NAME, rev("6.0.1"));
    }
    let r = until(&c, "r1", "wave 1 to wait", |r| {
        r.waves[0].phase == "WaitingApproval"
    })
    .await;
    assert_eq!(r.mode, "gate");
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    for a in &agents {
        assert_eq!(a.analyses(NS, NAME), 0, "held at the gate");
        assert_eq!(a.snapshot(NS, NAME).unwrap().phase, "Waiting");
    }
    let mut cl = client(&c);
    cl.approve_wave(wave_verb("us-east-1", "op")).await.unwrap();
    until(&c, "r1", "us-1 to succeed", |r| {
        cluster(r, "us-1").phase == "Succeeded"
    })
    .await;
    assert_eq!(agents[1].analyses(NS, NAME), 0, "eu-1 still held");
    cl.approve_wave(wave_verb("eu-west-1", "op")).await.unwrap();
    let done = ended(&c, "r1", "Succeeded").await;
    for a in &agents {
        assert_eq!(a.analyses(NS, NAME), 1);
        assert!(a.commands().is_empty(), "no StartRevision in gate mode");
    }
    assert!(
        done.history
            .iter()
            .any(|h| h.kind == "gate-opened" && h.cluster == "eu-1")
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn watch_streams_progress_until_the_end() {
    use tokio_stream::StreamExt;
    let (c, _agents) = start_fleet([Sim::slow("a", "r", 100), Sim::slow("b", "r", 100)]).await;
    create_r1(&c, "  waves: [{name: all}]\n").await;
    let mut s = client(&c)
        .watch_rollout(aviary_proto::v1::GetRolloutRequest { name: "r1".into() })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(r) = s.next().await {
        let r = r.unwrap();
        seen.push((
            r.phase.clone(),
            r.waves[0]
                .clusters
                .iter()
                .map(|c| c.canary_weight)
                .max()
                .unwrap_or(0),
        ));
    }
    assert_eq!(seen.last().unwrap().0, "Succeeded");
    assert!(
        seen.iter().any(|(_, w)| *w > 0),
        "live weights are streamed: {seen:?}"
    );
    c.shutdown().await.unwrap();
}

/// Clusters whose canaries fail 0.5% of requests against their primaries' 0.1%, which none of
/// their own analyses fails on (every simulated analysis succeeds): the pooled
/// evidence stops the rollout before its last wave, and GetRollout shows why.
#[tokio::test(start_paused = true)]
async fn pooled_evidence_stops_a_rollout_no_cluster_failed() {
    let worse = (0.005, 0.001);
    let (c, _agents) = start_fleet([
        Sim::judged("us-1", "us-east-1", worse),
        Sim::judged("us-2", "us-east-1", worse),
        Sim::judged("eu-1", "eu-west-1", worse),
        Sim::judged("ap-1", "ap-south-1", worse),
    ])
    .await;
    let spec = "  byRegion: [us-east-1, eu-west-1, ap-south-1]\n  evidence: {pooled: true}\n";
    let created = create_r1(&c, spec).await;
    let e = created.evidence.expect("the rollout pools evidence");
    assert_eq!((e.decision.as_str(), e.clusters_planned), ("continue", 4));
    let done = ended(&c, "r1", "Failed").await;
    assert!(
        done.message.contains("pooled evidence: rollback"),
        "{}",
        done.message
    );
    assert!(
        phases(&done).iter().all(|(c, p)| p != "Failed" || c == "none"),
        "no cluster failed on its own: {:?}",
        phases(&done)
    );
    assert_eq!(
        cluster(&done, "ap-1").phase,
        "Pending",
        "the last wave never started"
    );
    let e = done.evidence.unwrap();
    assert_eq!(e.decision, "rollback");
    assert!(e.evidence >= e.threshold, "{e:?}");
    assert!(e.ratio_low.unwrap() > 1.0, "{e:?}");
    assert!(
        e.explanation.contains("error ratio canary/primary"),
        "{}",
        e.explanation
    );
    c.shutdown().await.unwrap();
}

/// Issue 19: a rollout created while the cluster's canary is still initializing. Pushed then,
/// the revision is swallowed by the initialization (Flagger records the target's fingerprint as
/// applied and promoted, the primary keeps the old revision, no analysis ever starts) and the
/// cluster used to stay Starting until its deadline. The coordinator holds the push, says why,
/// and pushes once the canary is Initialized.
#[tokio::test(start_paused = true)]
async fn a_canary_still_initializing_gets_the_revision_once_initialized() {
    let c = coordinator().await;
    let mut cfg = agent_config(&c, "a", "r");
    cfg.canaries[0].initializing = 5;
    let a = aviary_coordinator::sim::SimAgent::spawn(cfg);
    wait_connected(&c, 1).await;
    create_r1(&c, "  byRegion: [r]\n  clusterDeadline: 10m\n").await;
    let held = until(&c, "r1", "the push to be held", |r| {
        !cluster(r, "a").verdict.is_empty()
    })
    .await;
    let a_status = cluster(&held, "a");
    assert_eq!(a_status.phase, "Starting", "{}", a_status.verdict);
    assert!(
        a_status.verdict.contains("test/podinfo is still Initializing"),
        "{}",
        a_status.verdict
    );
    assert!(a.commands().is_empty(), "{:?}", a.commands());
    let done = ended(&c, "r1", "Succeeded").await;
    assert_eq!(a.commands(), ["r1/a/1"]);
    assert_eq!(a.analyses(NS, NAME), 1);
    assert!(primary_image(&a).ends_with(":6.0.1"));
    assert!(history_kinds(&done, "a").contains(&"cluster-waiting".to_string()));
    c.shutdown().await.unwrap();
}

/// Issue 19: `rollout delete`. An active rollout is refused; `force` aborts it and deletes it
/// once the rollback ended; the name then starts afresh (the cluster whose analysis was
/// rolled back analyses the revision again, though the command ids repeat); an ended rollout
/// is deleted without `force`.
#[tokio::test(start_paused = true)]
async fn delete_refuses_an_active_rollout_force_aborts_and_the_name_starts_afresh() {
    use aviary_proto::v1;
    let (c, [a]) = start_fleet([Sim::held("a", "r")]).await;
    create_r1(&c, "  byRegion: [r]\n").await;
    until(&c, "r1", "a to progress", |r| cluster(r, "a").canary_weight > 0).await;
    let mut cl = client(&c);
    let req = |force| v1::DeleteRolloutRequest {
        name: "r1".into(),
        actor: "erin".into(),
        reason: "wrong image".into(),
        force,
        timeout_seconds: 0,
    };
    refused(
        cl.delete_rollout(req(false)).await,
        tonic::Code::FailedPrecondition,
        "abort it first",
    );
    let gone = cl.delete_rollout(req(true)).await.unwrap().into_inner();
    let gone = gone.rollout.unwrap();
    assert_eq!(gone.phase, "Aborted", "{}", gone.message);
    assert!(gone.message.contains("wrong image"), "{}", gone.message);
    refused(
        cl.get_rollout(v1::GetRolloutRequest { name: "r1".into() }).await,
        tonic::Code::NotFound,
        "",
    );

    a.hold(NS, NAME, false);
    let again = create_r1(&c, "  byRegion: [r]\n").await;
    assert_eq!(again.phase, "Pending");
    assert!(again.history.iter().all(|h| h.kind != "aborted"));
    ended(&c, "r1", "Succeeded").await;
    assert_eq!(a.commands(), ["r1/a/1", "r1/a/1/rollback", "r1/a/1"]);
    assert_eq!(a.analyses(NS, NAME), 2);

    let gone = cl.delete_rollout(req(false)).await.unwrap().into_inner();
    assert_eq!(gone.rollout.unwrap().phase, "Succeeded");
    refused(cl.delete_rollout(req(false)).await, tonic::Code::NotFound, "");
    c.shutdown().await.unwrap();
}

/// `advance`: the first wave's canaries are exactly as good as their primaries; once
/// `bake.duration` passed, the pooled non-inferiority (PROMOTE) evidence ends the bake without
/// `bake.minRequests` (out of reach here), and GetRollout shows the pooled PROMOTE and its
/// interval. Without `advance` the same bake waits for its requests.
#[tokio::test(start_paused = true)]
async fn pooled_promote_advances_a_baking_wave_over_grpc() {
    let as_good = (0.01, 0.01);
    let (c, _agents) = start_fleet([
        Sim::judged("us-1", "us-east-1", as_good),
        Sim::judged("us-2", "us-east-1", as_good),
        Sim::judged("eu-1", "eu-west-1", as_good),
    ])
    .await;
    let waves = "  waves:
    - {name: first, regions: [us-east-1], bake: {duration: 2m, minRequests: 100000000}}
    - {name: rest}
";
    let spec = format!("{waves}  evidence: {{pooled: true, advance: true}}\n");
    create_r1(&c, &spec).await;
    let done = ended(&c, "r1", "Succeeded").await;
    let bake = record(&done, "wave-succeeded", "first");
    assert!(
        bake.message
            .contains("waived: the pooled evidence shows the canary non-inferior"),
        "{}",
        bake.message
    );
    assert!(bake.metrics["bakeSeconds"] >= 120.0, "{:?}", bake.metrics);
    assert!(bake.metrics["bakeRequests"] < 1e8, "{:?}", bake.metrics);
    let e = done.evidence.expect("pooled evidence");
    assert_eq!(e.decision, "promote", "{e:?}");
    let (lo, hi) = (e.ratio_low.unwrap(), e.ratio_high.unwrap());
    assert!(
        lo < 1.0 && 1.0 < hi && hi < 2.0,
        "the interval {lo}..{hi} excludes the margin 2"
    );
    assert!(
        e.explanation.starts_with("promote: fleet evidence"),
        "{}",
        e.explanation
    );

    // The same fleet and bake without `advance`: the wave keeps baking for its requests.
    let spec = format!("{waves}  evidence: {{pooled: true}}\n");
    let m = manifest("r2", &spec).replace("6.0.1", "6.0.2");
    create(&c, &m).await.unwrap();
    until_baking(&c, "r2").await;
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    let r = get(&c, "r2").await;
    assert_eq!(r.waves[0].phase, "Baking", "{}", r.message);
    assert_eq!(r.evidence.unwrap().decision, "promote");
    c.shutdown().await.unwrap();
}
