//! A new leader says NOT_SERVING for `aviary.v1.Fleet` and `aviary.v1.AgentLink` until its
//! state is loaded from the store (a load balancer must not send it requests it would answer
//! from an empty state).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aviary_coordinator::{
    ClusterRecord, Coordinator, Fence, LeaderState, Leadership, Listing, MemoryStore, Result, RolloutRecord,
    Store, Versioned,
};
use tokio::sync::{Semaphore, watch};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Leadership flipped by the test.
struct Switch(watch::Sender<LeaderState>);

#[async_trait]
impl Leadership for Switch {
    fn watch(&self) -> watch::Receiver<LeaderState> {
        self.0.subscribe()
    }
}

/// A memory store whose listing of rollouts waits until the test opens the gate.
struct SlowStore {
    inner: MemoryStore,
    gate: Semaphore,
}

#[async_trait]
impl Store for SlowStore {
    async fn list_rollouts(&self) -> Result<Listing<Versioned<RolloutRecord>>> {
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.list_rollouts().await
    }
    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>> {
        self.inner.get_rollout(name).await
    }
    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64> {
        self.inner.create_rollout(fence, record).await
    }
    async fn update_rollout(&self, fence: Fence, record: &RolloutRecord, expected: u64) -> Result<u64> {
        self.inner.update_rollout(fence, record, expected).await
    }
    async fn delete_rollout(&self, fence: Fence, name: &str, expected: Option<u64>) -> Result<()> {
        self.inner.delete_rollout(fence, name, expected).await
    }
    async fn list_clusters(&self) -> Result<Listing<ClusterRecord>> {
        self.inner.list_clusters().await
    }
    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()> {
        self.inner.put_cluster(fence, record).await
    }
    async fn delete_cluster(&self, fence: Fence, name: &str) -> Result<()> {
        self.inner.delete_cluster(fence, name).await
    }
}

async fn status(c: &Coordinator, service: &str) -> ServingStatus {
    let mut h =
        HealthClient::new(aviary_coordinator::client::channel_with(&c.url(), &common::admin()).unwrap());
    let r = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

async fn until_status(c: &Coordinator, service: &str, want: ServingStatus) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while status(c, service).await != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{service} never became {want:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_not_serving_until_its_state_is_loaded() {
    let switch = Arc::new(Switch(watch::Sender::new(LeaderState::Follower { leader: None })));
    let store = Arc::new(SlowStore {
        inner: MemoryStore::new(),
        gate: Semaphore::new(0),
    });
    let mut config = common::config();
    config.store = store.clone();
    config.leadership = switch.clone();
    let c = Coordinator::start(config).await.unwrap();
    assert_eq!(status(&c, "aviary.v1.Fleet").await, ServingStatus::NotServing);

    // Elected, but the store has not answered yet.
    switch.0.send_replace(LeaderState::Leader { fence: Fence(7) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for service in ["aviary.v1.Fleet", "aviary.v1.AgentLink"] {
        assert_eq!(
            status(&c, service).await,
            ServingStatus::NotServing,
            "{service} while loading"
        );
    }
    assert_eq!(status(&c, "").await, ServingStatus::Serving, "the process serves");

    store.gate.add_permits(1000);
    until_status(&c, "aviary.v1.Fleet", ServingStatus::Serving).await;
    until_status(&c, "aviary.v1.AgentLink", ServingStatus::Serving).await;

    switch.0.send_replace(LeaderState::Follower { leader: None });
    until_status(&c, "aviary.v1.Fleet", ServingStatus::NotServing).await;
    c.shutdown().await.unwrap();
}
