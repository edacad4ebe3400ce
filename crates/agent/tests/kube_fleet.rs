//! Push mode on Kubernetes: the coordinator's StartRevision sets the image of the target
//! Deployment's container (by name), the canary is analysed and promoted, and the rollout
//! succeeds; a revision naming a container the target lacks is refused.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use aviary_coordinator::client::{ClientTls, FleetConn, fleet_client_with};
use aviary_coordinator::security::tls::ServerTlsFiles;
use aviary_coordinator::{Coordinator, CoordinatorConfig};
use aviary_proto::v1;
use aviary_testkit::kube_env::canary;
use kube_common::*;

fn canary_yaml() -> String {
    canary(
        "kubernetes",
        r#"
  service: {port: 9898}
  analysis:
    interval: 1s
    threshold: 2
    iterations: 2
"#,
    )
}

/// Creates FleetRollout `name` of `container`'s `image` on this cluster's canary
/// (`ns/podinfo`) and waits up to `timeout_seconds` for it to end.
async fn run_rollout(
    client: &mut FleetConn,
    ns: &str,
    name: &str,
    (container, image): (&str, &str),
    timeout_seconds: u32,
) -> v1::Rollout {
    let manifest = format!(
        "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: {name}}}\nspec:\n  canary: {{namespace: {ns}, name: podinfo}}\n  revision: {{containerImages: {{{container}: \"{image}\"}}}}\n  byRegion: [local]\n  clusterDeadline: 2m\n"
    );
    let create = v1::CreateRolloutRequest {
        manifest,
        ..Default::default()
    };
    client.create_rollout(create).await.unwrap();
    let wait = v1::WaitRolloutRequest {
        name: name.into(),
        timeout_seconds,
    };
    client.wait_rollout(wait).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_pushes_an_image_to_a_deployment_canary() {
    let mut config = CoordinatorConfig::in_memory("127.0.0.1:0".parse().unwrap());
    config.tls = Some(ServerTlsFiles {
        cert: fleet_pki().join("server.pem"),
        key: fleet_pki().join("server-key.pem"),
        client_ca: fleet_pki().join("ca.pem"),
    });
    let coordinator = Coordinator::start(config).await.unwrap();
    let env = Env::start_with(
        "the-coordinator-pushes-an-image-to-a-dep",
        Some(coordinator.url()),
    )
    .await;
    env.create(deployment("podinfo", "podinfo:6.0.0")).await;
    env.create_yaml(&canary_yaml()).await;
    env.wait_phase("podinfo", "Initialized", Duration::from_secs(40))
        .await;

    let mut client =
        fleet_client_with(&coordinator.url(), &ClientTls::from_dir(fleet_pki(), "admin")).unwrap();
    // the cluster registers with its canary
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = client
            .list_canaries(v1::ListCanariesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .canaries;
        if c.iter()
            .any(|c| c.canary.as_ref().is_some_and(|k| k.phase == "Initialized"))
        {
            let snap = c[0].canary.clone().unwrap();
            assert_eq!(
                snap.target_revision.unwrap().container_images["podinfo"],
                "podinfo:6.0.0"
            );
            assert_eq!(
                snap.primary_revision.unwrap().container_images["podinfo"],
                "podinfo:6.0.0"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not register its canary"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let r = run_rollout(
        &mut client,
        &env.ns,
        "podinfo-6-0-1",
        ("podinfo", "podinfo:6.0.1"),
        90,
    )
    .await;
    assert_eq!(r.phase, "Succeeded", "{r:#?}");
    let target = env.obj("apps/v1", "Deployment", "podinfo").await;
    assert_eq!(image(&target), "podinfo:6.0.1");
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    assert!(
        env.has_event("podinfo", "Confirm-rollout check aviary-coordinator passed")
            .await,
        "{:#?}",
        env.event_messages("podinfo").await
    );

    // a container the target does not have: the agent refuses, the cluster fails
    let r = run_rollout(&mut client, &env.ns, "podinfo-bad", ("sidecar", "x:1"), 60).await;
    assert_eq!(r.phase, "Failed", "{r:#?}");
    let verdict = &r.waves[0].clusters[0].verdict;
    assert!(verdict.contains("no container named [\"sidecar\"]"), "{verdict}");
    coordinator.shutdown().await.unwrap();
}
