//! Mutual TLS, identities and roles over real gRPC (issue 15 items 7–10): certificates from
//! `security::certs` (what `aviary certs` writes), a coordinator with a client CA and a token
//! file, simulated agents with their own certificates.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aviary_coordinator::Coordinator;
use aviary_coordinator::client::{ClientTls, agent_link_client_with, fleet_client_with};
use aviary_coordinator::security::Role;
use aviary_coordinator::security::auth::token_hash;
use aviary_coordinator::security::certs::{self, DEFAULT_TRUST_DOMAIN as TD};
use aviary_coordinator::sim::SimAgent;
use aviary_proto::v1;
use aviary_testkit::manifests::fleet_rollout;
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn pki(dir: &Path) {
    certs::init(dir, &[]).unwrap();
    certs::issue_agent(dir, "us-1", TD).unwrap();
    for (name, role) in [
        ("alice", Role::Viewer),
        ("bob", Role::Operator),
        ("carol", Role::Admin),
    ] {
        certs::issue_user(dir, name, role, TD).unwrap();
    }
    std::fs::write(
        dir.join("tokens"),
        format!("# CI\n{} ci-deploy operator\n", token_hash("ci-s3cret")),
    )
    .unwrap();
}

/// A user certificate of `dir`'s CA, role admin, that expired in 2021.
fn expired_user(dir: &Path) -> ClientTls {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&read(certs::CA), KeyPair::from_pem(&read(certs::CA_KEY)).unwrap()).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "old");
    p.distinguished_name.push(DnType::OrganizationName, "admin");
    let uri = aviary_coordinator::security::identity::user_uri(TD, "old");
    p.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("old-key.pem"), key.serialize_pem()).unwrap();
    ClientTls::from_dir(dir, "old")
}

/// A coordinator with mutual TLS from [`pki`]'s certificates in a new directory.
async fn start() -> (tempfile::TempDir, Coordinator) {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let c = tls_coordinator(tmp.path()).await;
    (tmp, c)
}

/// The agent of us-1 with `dir`'s certificate, analyses of `steps` ticks, once connected.
async fn connected_us1(c: &Coordinator, dir: &Path, steps: u32) -> SimAgent {
    let mut cfg = agent_config(c, "us-1", "us-east-1");
    cfg.tls = ClientTls::from_dir(dir, "us-1");
    cfg.steps = steps;
    let agent = SimAgent::spawn(cfg);
    eventually("us-1 to connect", Duration::from_secs(20), || async {
        agent.is_connected().then_some(())
    })
    .await;
    agent
}

fn ca_only(dir: &Path) -> ClientTls {
    ClientTls {
        ca: Some(dir.join(certs::CA)),
        ..Default::default()
    }
}

async fn create(c: &Coordinator, tls: &ClientTls, actor: &str) -> Result<v1::Rollout, tonic::Status> {
    fleet_client_with(&c.url(), tls)
        .unwrap()
        .create_rollout(v1::CreateRolloutRequest {
            manifest: fleet_rollout("ghcr.io/stefanprodan/podinfo:6.0.1", &["us-east-1"]),
            actor: actor.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn pause(c: &Coordinator, tls: &ClientTls) -> Result<v1::Rollout, tonic::Status> {
    fleet_client_with(&c.url(), tls)
        .unwrap()
        .pause_rollout(rollout_verb("podinfo-6-0-1", "from the runbook", "check"))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_come_from_certificates_and_roles_gate_the_verbs() {
    let (tmp, c) = start().await;
    let dir = tmp.path();
    assert!(c.url().starts_with("https://"));

    // Health answers without a client certificate; nothing else does.
    let mut h = HealthClient::new(aviary_coordinator::client::channel_with(&c.url(), &ca_only(dir)).unwrap());
    h.check(HealthCheckRequest::default()).await.unwrap();
    refused(
        fleet_client_with(&c.url(), &ca_only(dir))
            .unwrap()
            .list_rollouts(v1::ListRolloutsRequest::default())
            .await,
        Code::Unauthenticated,
        "",
    );

    // An untrusted certificate fails the handshake.
    let other = tempfile::tempdir().unwrap();
    certs::init(other.path(), &[]).unwrap();
    certs::issue_user(other.path(), "carol", Role::Admin, TD).unwrap();
    let forged = ClientTls {
        ca: Some(dir.join(certs::CA)),
        ..ClientTls::from_dir(other.path(), "carol")
    };
    let e = create(&c, &forged, "x").await.unwrap_err();
    // (With TLS 1.3 the client learns it when the server closes the connection.)
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Cancelled | Code::Unknown),
        "the handshake fails: {e:?}"
    );
    // So does an expired one of the right CA.
    let e = create(&c, &expired_user(dir), "x").await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Cancelled | Code::Unknown),
        "the handshake fails: {e:?}"
    );

    // The agent of us-1 connects with its certificate.
    let agent = connected_us1(&c, dir, 30).await;

    // Another cluster's name with us-1's certificate is refused.
    let (tx, rx) = mpsc::channel(4);
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            cluster: "eu-1".into(),
            region: "eu-west-1".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    refused(
        agent_link_client_with(&c.url(), &ClientTls::from_dir(dir, "us-1"))
            .unwrap()
            .connect(ReceiverStream::new(rx))
            .await,
        Code::PermissionDenied,
        "",
    );
    // A user certificate cannot open AgentLink, an agent certificate cannot use Fleet.
    refused(
        fleet_client_with(&c.url(), &ClientTls::from_dir(dir, "us-1"))
            .unwrap()
            .list_rollouts(v1::ListRolloutsRequest::default())
            .await,
        Code::PermissionDenied,
        "",
    );

    let alice = ClientTls::from_dir(dir, "alice");
    let bob = ClientTls::from_dir(dir, "bob");
    let carol = ClientTls::from_dir(dir, "carol");
    refused(
        create(&c, &alice, "alice").await,
        Code::PermissionDenied,
        "CreateRollout needs role admin",
    );
    refused(create(&c, &bob, "bob").await, Code::PermissionDenied, "");
    let r = create(&c, &carol, "deploy job 7").await.unwrap();
    assert_eq!(r.history[0].actor, "user:carol");
    assert_eq!(r.history[0].comment, "deploy job 7");

    let e = pause(&c, &alice).await.unwrap_err();
    assert!(e.message().contains("needs role operator"), "{}", e.message());
    // Deleting is admin's, like creating.
    refused(
        fleet_client_with(&c.url(), &bob)
            .unwrap()
            .delete_rollout(v1::DeleteRolloutRequest {
                name: "podinfo-6-0-1".into(),
                force: true,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "DeleteRollout needs role admin",
    );
    let r = pause(&c, &bob).await.unwrap();
    let last = r.history.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.comment.as_str()),
        ("user:bob", "from the runbook")
    );

    // A bearer token with CA-only TLS.
    let ci = ClientTls {
        token: Some("ci-s3cret".into()),
        ..ca_only(dir)
    };
    let r = fleet_client_with(&c.url(), &ci)
        .unwrap()
        .resume_rollout(rollout_verb("podinfo-6-0-1", "pipeline 42", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.history.last().unwrap().actor, "token:ci-deploy");
    let wrong = ClientTls {
        token: Some("guess".into()),
        ..ca_only(dir)
    };
    refused(pause(&c, &wrong).await, Code::Unauthenticated, "");
    // Viewers read.
    fleet_client_with(&c.url(), &alice)
        .unwrap()
        .get_rollout(v1::GetRolloutRequest {
            name: "podinfo-6-0-1".into(),
        })
        .await
        .unwrap();
    agent.stop().await;
    c.shutdown().await.unwrap();
}

/// The DER of the certificate the server at `addr` presents now.
async fn served_cert(addr: std::net::SocketAddr, ca: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_in_the_middle_of_a_rollout_without_a_restart() {
    let (tmp, c) = start().await;
    let dir = tmp.path();
    let agent = connected_us1(&c, dir, 6).await;
    let carol = ClientTls::from_dir(dir, "carol");
    create(&c, &carol, "ci").await.unwrap();
    let before = served_cert(c.local_addr(), &dir.join(certs::CA)).await;
    assert_eq!(before, pem_der(&dir.join(certs::SERVER)));

    // New server and agent certificates from the same CA, written over the old files.
    std::thread::sleep(Duration::from_millis(1100));
    certs::issue_server(dir, &[]).unwrap();
    certs::issue_agent(dir, "us-1", TD).unwrap();
    let new_server = pem_der(&dir.join(certs::SERVER));
    assert_ne!(new_server, before);
    eventually("the new server certificate", Duration::from_secs(10), || async {
        (served_cert(c.local_addr(), &dir.join(certs::CA)).await == new_server).then_some(())
    })
    .await;
    // The agent reconnects (with its new certificate) and the rollout finishes.
    let connects = agent.connects();
    agent.restart();
    eventually("the agent to reconnect", Duration::from_secs(20), || async {
        (agent.connects() > connects && agent.is_connected()).then_some(())
    })
    .await;
    let done = eventually("the rollout to succeed", Duration::from_secs(60), || async {
        let r = fleet_client_with(&c.url(), &carol)
            .unwrap()
            .get_rollout(v1::GetRolloutRequest {
                name: "podinfo-6-0-1".into(),
            })
            .await
            .ok()?
            .into_inner();
        matches!(r.phase.as_str(), "Succeeded" | "Failed").then_some(r)
    })
    .await;
    assert_eq!(done.phase, "Succeeded", "{done:?}");
    assert!(agent.is_connected());
    agent.stop().await;
    c.shutdown().await.unwrap();
}
