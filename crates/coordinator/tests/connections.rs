//! Connection bounds (issue 15 item 5): a connection over the cap is closed at once, a client
//! that connects and sends no HTTP/2 preface is dropped after the handshake timeout, and
//! gRPC keeps working for everyone else.

mod common;

use std::time::Duration;

use aviary_coordinator::Coordinator;
use aviary_coordinator::security::ConnLimits;
use aviary_proto::v1;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn start(limits: ConnLimits) -> Coordinator {
    let mut config = common::config();
    config.limits = limits;
    Coordinator::start(config).await.unwrap()
}

/// True if the server closed `s` within `within` (EOF or reset; what it sends before, its
/// HTTP/2 SETTINGS, is skipped).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed() {
    let c = start(ConnLimits {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let mut a = TcpStream::connect(c.local_addr()).await.unwrap();
    let mut b = TcpStream::connect(c.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(c.local_addr()).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "the third is closed"
    );
    assert!(
        !closed_within(&mut a, Duration::from_millis(300)).await,
        "the first stays open"
    );
    assert!(!closed_within(&mut b, Duration::from_millis(10)).await);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A slot is free again: a real client gets through.
    let r = common::fleet(&c.url())
        .list_rollouts(v1::ListRolloutsRequest::default())
        .await;
    assert!(r.is_ok(), "{r:?}");
    drop(b);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_dropped_after_the_handshake_timeout() {
    let c = start(ConnLimits {
        handshake_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut silent = TcpStream::connect(c.local_addr()).await.unwrap();
    let t = std::time::Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a silent client is dropped"
    );
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    // Real clients are not affected (their preface comes at once).
    let mut cl = common::fleet(&c.url());
    for _ in 0..3 {
        cl.list_rollouts(v1::ListRolloutsRequest::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    c.shutdown().await.unwrap();
}
