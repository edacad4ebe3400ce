//! Hostile clients and agents over real gRPC (issue 15, items 2 and 3): a Hello naming no DNS
//! label is refused, reports outside their ranges never reach the fleet view, oversized
//! actors are refused, and the lists come in pages.

mod common;

use std::time::Duration;

use aviary_coordinator::client::{agent_link_client_with, list_all_canaries};
use aviary_coordinator::sim::{SimAgent, SimCanary};
use aviary_proto::v1;
use aviary_proto::v1::agent_message::Msg as In;
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn snapshot(name: &str, weight: i32) -> v1::CanarySnapshot {
    v1::CanarySnapshot {
        namespace: NS.into(),
        name: name.into(),
        phase: "Progressing".into(),
        canary_weight: weight,
        ..Default::default()
    }
}

fn hello(cluster: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(In::Hello(v1::Hello {
            cluster: cluster.into(),
            region: "us-east-1".into(),
            canaries: vec![snapshot("good", 10)],
            ..Default::default()
        })),
    }
}

/// A raw agent stream: the sender and the coordinator's answer (or refusal).
async fn raw_agent(
    url: &str,
    first: v1::AgentMessage,
) -> (
    mpsc::Sender<v1::AgentMessage>,
    Result<tonic::Streaming<v1::CoordinatorMessage>, tonic::Status>,
) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let r = agent_link_client_with(url, &agent_tls("us-1"))
        .unwrap()
        .connect(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, r)
}

async fn canaries(c: &aviary_coordinator::Coordinator) -> Vec<String> {
    let mut names: Vec<String> = client(c)
        .list_canaries(v1::ListCanariesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .canaries
        .into_iter()
        .map(|c| c.canary.unwrap().name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hellos_and_reports_are_refused() {
    let c = coordinator().await;
    for bad in ["US_1", "", "a.b", "x\n", &"a".repeat(64)] {
        let (_tx, r) = raw_agent(&c.url(), hello(bad)).await;
        let e = r.err().unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(e.message().contains("hello.cluster"), "{}", e.message());
    }

    let (tx, r) = raw_agent(&c.url(), hello("us-1")).await;
    let _stream = r.expect("a valid Hello is accepted");
    wait_connected(&c, 1).await;
    let bad_reports = [
        snapshot("weight", 500),
        v1::CanarySnapshot {
            failed_checks: -1,
            ..snapshot("negative", 10)
        },
        v1::CanarySnapshot {
            primary_success_rate: Some(f64::NAN),
            ..snapshot("nan-rate", 10)
        },
        v1::CanarySnapshot {
            metrics: (0..100).map(|i| (format!("m{i}"), 1.0)).collect(),
            ..snapshot("many-metrics", 10)
        },
        v1::CanarySnapshot {
            target_revision: Some(v1::Revision {
                version: "$(reboot)".into(),
                ..Default::default()
            }),
            ..snapshot("shell-version", 10)
        },
    ];
    let ok = v1::CanarySnapshot {
        message: "m".repeat(1 << 20),
        metrics: [("p99".to_string(), f64::INFINITY)].into(),
        ..snapshot("fine", 100)
    };
    tx.send(v1::AgentMessage {
        msg: Some(In::Status(v1::CanaryUpdate {
            canary: None,
            canaries: bad_reports.into_iter().chain([ok]).collect(),
        })),
    })
    .await
    .unwrap();
    eventually("the valid report", Duration::from_secs(10), || async {
        (canaries(&c).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(canaries(&c).await, ["fine", "good"]);
    let list = client(&c)
        .list_canaries(v1::ListCanariesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let fine = list
        .canaries
        .iter()
        .find(|x| x.canary.as_ref().unwrap().name == "fine")
        .unwrap();
    assert!(
        fine.canary.as_ref().unwrap().message.len() < 5000,
        "the message is cut"
    );
    drop(tx);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_actors_are_refused_and_lists_come_in_pages() {
    let c = coordinator().await;
    let mut cfg = agent_config(&c, "us-1", "us-east-1");
    cfg.canaries = (0..7)
        .map(|i| SimCanary::new(NS, &format!("app-{i}"), rev("6.0.0")))
        .collect();
    let agent = SimAgent::spawn(cfg);
    wait_connected(&c, 1).await;
    eventually("7 canaries", Duration::from_secs(10), || async {
        (canaries(&c).await.len() == 7).then_some(())
    })
    .await;

    let mut cl = client(&c);
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = cl
            .list_canaries(v1::ListCanariesRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.canaries.len() <= 3);
        pages += 1;
        seen.extend(page.canaries.into_iter().map(|c| c.canary.unwrap().name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("app-{i}")).collect();
    assert_eq!(seen, want);
    let all = list_all_canaries(&mut cl, v1::ListCanariesRequest::default())
        .await
        .unwrap();
    assert_eq!(all.canaries.len(), 7);
    use tonic::Code::InvalidArgument;
    let gone_page = v1::ListCanariesRequest {
        page_token: "us-1/test/gone".into(),
        ..Default::default()
    };
    refused(cl.list_canaries(gone_page).await, InvalidArgument, "");

    let long_actor = v1::CreateRolloutRequest {
        manifest: "x".into(),
        actor: "a".repeat(10_000),
        ..Default::default()
    };
    let over = "actor: 10000 bytes, over the limit of 256";
    refused(cl.create_rollout(long_actor).await, InvalidArgument, over);
    let long_reason = rollout_verb("any", "bob", &"r".repeat(1 << 20));
    refused(cl.pause_rollout(long_reason).await, InvalidArgument, "");
    agent.stop().await;
    c.shutdown().await.unwrap();
}
