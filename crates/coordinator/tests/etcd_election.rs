//! The etcd election against real etcd processes (Debian's `etcd-server`, `/usr/bin/etcd`):
//! one leader at a time with increasing fences, followers that know the leader's address,
//! a hand-over on resign, stepping down when keep-alives fail, and a three-member cluster
//! losing one member (nothing stops), then its quorum (everyone steps down), then getting it
//! back (a leader again, with a newer fence). Without etcd the tests print a skip notice (and
//! fail under `CI=true`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_coordinator::etcd::{Etcd, EtcdConfig, EtcdLeadership};
use aviary_coordinator::{Fence, LeaderState, Leadership};
use aviary_testkit::etcd::LocalEtcd;

async fn local_etcd(what: &str, members: usize) -> Option<LocalEtcd> {
    // RUST_LOG=aviary_coordinator=debug shows the replicas' view.
    aviary_testkit::logs::trace_to_test_output();
    LocalEtcd::start_for(what, members).await
}

async fn candidate(etcd: &LocalEtcd, advertise: &str, ttl_secs: u64) -> Arc<EtcdLeadership> {
    candidate_on(&etcd.endpoints_csv(), advertise, ttl_secs).await
}

/// A candidate talking to the members in the given order.
async fn candidate_on(endpoints: &str, advertise: &str, ttl_secs: u64) -> Arc<EtcdLeadership> {
    let mut cfg = EtcdConfig::new(endpoints).unwrap();
    cfg.lease_ttl = Duration::from_secs(ttl_secs);
    let l = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    l.start(advertise);
    l
}

/// A candidate on `endpoints` (3 s leases) once it leads (within 10 s), and its fence.
async fn leader_on(endpoints: &str, advertise: &str) -> (Arc<EtcdLeadership>, Fence) {
    let l = candidate_on(endpoints, advertise, 3).await;
    let what = format!("{advertise} to lead");
    let fence = fence_of(&until(&l, &what, Duration::from_secs(10), is_leader).await);
    (l, fence)
}

/// Waits (up to 10 s) until `l` follows the leader advertising `leader`.
async fn until_following(l: &EtcdLeadership, leader: &str) {
    let what = format!("the follower to know the leader {leader}");
    until(l, &what, Duration::from_secs(10), |s| {
        *s == LeaderState::Follower {
            leader: Some(leader.into()),
        }
    })
    .await;
}

/// Waits until the state satisfies `pred`; returns it.
async fn until(
    l: &EtcdLeadership,
    what: &str,
    limit: Duration,
    pred: impl Fn(&LeaderState) -> bool,
) -> LeaderState {
    let mut rx = l.watch();
    let r = tokio::time::timeout(limit, async {
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    r.unwrap_or_else(|_| {
        panic!(
            "timed out after {limit:?} waiting for {what}; state {:?}",
            l.watch().borrow().clone()
        )
    })
}

fn fence_of(s: &LeaderState) -> Fence {
    match s {
        LeaderState::Leader { fence } => *fence,
        other => panic!("not a leader: {other:?}"),
    }
}

fn is_leader(s: &LeaderState) -> bool {
    matches!(s, LeaderState::Leader { .. })
}

/// Records every state the replica publishes.
fn record(l: &EtcdLeadership) -> Arc<parking_lot::Mutex<Vec<LeaderState>>> {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut rx = l.watch();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            s.lock().push(rx.borrow_and_update().clone());
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_followers_know_it_and_resign_hands_over_at_once() {
    let Some(etcd) = local_etcd("one_leader_followers_know_it_and_resign_hands_over_at_once", 1).await else {
        return;
    };
    let (a, fa) = leader_on(&etcd.endpoints_csv(), "10.0.0.1:7400").await;
    let b = candidate(&etcd, "10.0.0.2:7400", 3).await;
    until_following(&b, "10.0.0.1:7400").await;
    assert_eq!(a.check().unwrap(), fa);
    let e = b.check().unwrap_err().to_string();
    assert!(e.contains("the leader is 10.0.0.1:7400"), "{e}");
    // No second leader while a holds its lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(b.check().is_err());
    assert_eq!(a.check().unwrap(), fa, "a's keep-alives hold the lease");

    let started = Instant::now();
    a.resign().await;
    let fb = fence_of(
        &until(
            &b,
            "b to lead after a resigned",
            Duration::from_secs(5),
            is_leader,
        )
        .await,
    );
    let handover = started.elapsed();
    println!("hand-over on resign: {handover:?}");
    assert!(
        handover < Duration::from_millis(500),
        "hand-over took {handover:?}"
    );
    assert!(fb > fa, "fences grow: {fa:?} then {fb:?}");
    assert!(a.check().is_err(), "a resigned");
    b.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_keep_alive_fails_steps_down_within_the_ttl_and_leads_again_later() {
    let Some(mut etcd) = local_etcd("keep_alive_failure", 1).await else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let (a, fa) = leader_on(&etcd.endpoints_csv(), "10.0.0.1:7400").await;
    // No keep-alive succeeds after the kill: the deadline read now is final. It is the last
    // successful keep-alive's send time + TTL − margin, and etcd renewed the lease after that
    // send: stepping down by then is stepping down before the lease can have expired.
    let killed = Instant::now();
    etcd.kill(0);
    let deadline = a.leading_until().expect("a leads");
    assert!(
        deadline > killed && deadline <= killed + ttl,
        "{:?}",
        deadline - killed
    );
    until(&a, "a to step down", ttl, |s| !is_leader(s)).await;
    let stepped = Instant::now();
    println!(
        "stepped down {:?} after etcd went away, {:?} after its deadline",
        stepped - killed,
        stepped.saturating_duration_since(deadline)
    );
    // The margin (TTL/10) is the slack left before the lease can expire.
    assert!(
        stepped < deadline + ttl / 10,
        "stepped down {:?} after the deadline",
        stepped - deadline
    );
    assert!(a.check().is_err());

    // etcd comes back (with a's old lease, which etcd extends on restart): a revokes it and
    // leads again with a newer fence.
    etcd.restart(0).unwrap();
    let back = Instant::now();
    let fa2 = fence_of(&until(&a, "a to lead again", Duration::from_secs(20), is_leader).await);
    println!("leading again {:?} after etcd restarted", back.elapsed());
    assert!(fa2 > fa);
    a.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_down_nothing_stops_no_quorum_no_leader_quorum_back_leads_again() {
    let Some(mut etcd) = local_etcd("three_members", 3).await else {
        return;
    };
    // The candidates talk to a member that does not lead etcd's raft first: killing it is
    // losing one member, not also the raft leader (that case: see the module docs of
    // `aviary_coordinator::etcd` and docs/operations.md).
    let raft_leader = etcd.raft_leader();
    let victim = (raft_leader + 1) % 3;
    let eps = etcd.endpoints();
    let order: Vec<String> = (0..3).map(|k| eps[(victim + k) % 3].clone()).collect();
    let order = order.join(",");
    let (a, fa) = leader_on(&order, "10.0.0.1:7400").await;
    let b = candidate_on(&order, "10.0.0.2:7400", 3).await;
    until_following(&b, "10.0.0.1:7400").await;
    let seen_a = record(&a);

    // The member both use: its loss moves them to another member.
    etcd.kill(victim);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(a.check().unwrap(), fa, "one member of three down: a still leads");
    assert!(
        seen_a.lock().iter().all(is_leader),
        "a never stepped down: {:?}",
        seen_a.lock()
    );
    assert!(b.check().is_err());

    // Quorum lost: nobody leads. The surviving member may still renew leases until it notices
    // (one etcd election timeout, 1 s); a steps down at most a TTL after the last renewal.
    let lost = Instant::now();
    let second = (victim + 1) % 3;
    etcd.kill(second);
    until(&a, "a to step down without quorum", Duration::from_secs(5), |s| {
        !is_leader(s)
    })
    .await;
    println!("stepped down {:?} after the quorum was lost", lost.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        a.check().is_err() && b.check().is_err(),
        "no leader without quorum"
    );

    // Quorum back: one of them leads, with a newer fence; the other follows it.
    let back = Instant::now();
    etcd.restart(second).unwrap();
    let (leader, follower) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if a.check().is_ok() {
                return (&a, &b);
            }
            if b.check().is_ok() {
                return (&b, &a);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a leader within 30 s of the quorum coming back");
    println!("a leader {:?} after the quorum came back", back.elapsed());
    let f = leader.check().unwrap();
    assert!(f > fa, "newer fence: {fa:?} then {f:?}");
    assert!(follower.check().is_err(), "one leader");
    a.resign().await;
    b.resign().await;
}

/// A loopback address nothing listens on (connections are refused).
fn closed_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_before_its_lease_expires() {
    let Some(etcd) = local_etcd("crashed_leader", 1).await else {
        return;
    };
    let mut cfg = EtcdConfig::new(&etcd.endpoints_csv()).unwrap();
    cfg.lease_ttl = Duration::from_secs(3);
    let b = EtcdLeadership::new(Etcd::connect(&cfg.endpoints).await.unwrap(), &cfg);
    // A leader that crashed right after it was elected: its lease (3 s) is never renewed and
    // its address refuses connections. Without the watch it would hold the election 3–3.5 s.
    let ghost = Etcd::connect(&cfg.endpoints).await.unwrap();
    let lease = ghost.client(0).lease_grant(3, None).await.unwrap().id();
    let granted = Instant::now();
    ghost
        .client(0)
        .election_client()
        .campaign(b.election_name(), closed_address(), lease)
        .await
        .unwrap();
    b.start("10.0.0.2:7400");
    until(&b, "b to lead", Duration::from_secs(5), is_leader).await;
    let took = granted.elapsed();
    println!("b leads {took:?} after the dead leader's last renewal");
    assert!(
        took < Duration::from_millis(2500),
        "b waited for the lease to expire: {took:?}"
    );
    b.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_with_a_wrong_address_is_not_deposed() {
    let Some(etcd) = local_etcd("live_leader_wrong_address", 1).await else {
        return;
    };
    // a renews its lease but its advertised address refuses connections (a wrong --advertise):
    // the followers must not take that for a crash.
    let (a, fa) = leader_on(&etcd.endpoints_csv(), &closed_address()).await;
    let b = candidate(&etcd, "10.0.0.2:7400", 3).await;
    until(&b, "b to know the leader", Duration::from_secs(10), |s| {
        matches!(s, LeaderState::Follower { leader: Some(_) })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(a.check().unwrap(), fa, "a still leads its term");
    assert!(b.check().is_err(), "b did not take over");
    a.resign().await;
    b.resign().await;
}
