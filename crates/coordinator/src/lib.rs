//! aviary's fleet coordinator: sequences a release across clusters and answers for the fleet.
//!
//! - [`server`]: [`Coordinator::start`] (gRPC `aviary.v1.Fleet`, `aviary.v1.AgentLink`,
//!   `grpc.health.v1`, reflection v1 and v1alpha), graceful [`Coordinator::shutdown`].
//! - [`store`]: the [`Store`] trait (fenced, compare-and-swap writes) and [`MemoryStore`].
//! - [`leader`]: the [`Leadership`] trait (a watch of leader state, fencing tokens) and
//!   [`AlwaysLeader`].
//! - [`etcd`]: several replicas on etcd: [`EtcdStore`](etcd::EtcdStore) and
//!   [`EtcdLeadership`](etcd::EtcdLeadership) (election on a lease, fenced writes).
//! - `rollouts`: one reconcile loop per rollout over aviary-core's sequencer, in domain types;
//!   commands leave through a `CommandSink`. `fleet`: the in-memory fleet view (what the agents
//!   report). The gRPC edge: `api` (the Fleet service), `agent_link` (agent sessions, the
//!   `CommandSink`), `convert` (wire ↔ domain).
//! - [`management`]: FleetRollout objects in a management cluster (kube-runtime) as rollouts,
//!   their status written back; verbs as annotations, delete aborts.
//! - `metrics`: `/metrics` of [`Coordinator::serve_metrics`] (calls counted by a gRPC layer,
//!   fleet gauges read at scrape time).
//! - [`limits`]: bounds on every field a client or agent sends; agent reports checked.
//! - [`security`]: mutual TLS (rustls), identities from certificates, roles, bearer tokens,
//!   the audit log, the connection cap and timeouts, issuing certificates (`aviary certs`).
//! - `web`: the web dashboard of [`Coordinator::serve_dashboard`] (the embedded page, its JSON
//!   API over the Fleet service, Server-Sent Events fed by the rollout watch), with the gRPC
//!   API's TLS and roles; the [`Caller`] of each HTTP request.
//! - [`client`]: connecting (TLS, tokens), following the leader.
//! - `sim` (feature `test-util`): the simulated agent used by the tests and the fan-in and
//!   failover benchmarks.
//! - `fuzz` (feature `fuzzing`): the agent link's fuzz target of `fuzz/`.
//! - `error`: the crate's [`Error`]; gRPC statuses with the leader's address.

mod agent_link;
mod api;
pub mod client;
mod convert;
mod error;
pub mod etcd;
mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod leader;
pub mod limits;
pub mod management;
mod metrics;
mod rollouts;
pub mod security;
pub mod server;
#[cfg(feature = "test-util")]
pub mod sim;
pub mod store;
mod web;

pub use error::{Error, Result};
pub use leader::{AlwaysLeader, Fence, LeaderState, Leadership};
pub use security::Role;
pub use server::{Coordinator, CoordinatorConfig};
pub use store::{ClusterRecord, Listing, MemoryStore, RolloutRecord, Store, Unreadable, Versioned};
pub use web::{Caller, DashboardConfig};
