//! Dev-only test helpers and doubles for aviary, written once for every crate's tests. Nothing
//! here runs in production.
//!
//! Module map:
//! - [`apiserver`]: a fake Kubernetes API server (a test double, not a cluster) that kube-rs and
//!   the real `kubectl` talk to over plain HTTP; also the `fake-apiserver` binary.
//!   - `store`: objects, resourceVersions, watch history, write semantics;
//!   - `resources`: built-in kinds and CRD → resource type conversion;
//!   - `http`: REST routing, content negotiation, lists and watch streams;
//!   - `discovery`: `/version`, `/api`, `/apis`, OpenAPI stubs;
//!   - `table`: server-side tables for `kubectl get` (printer columns, JSONPath);
//!   - `patch`: merge, JSON and strategic merge patches;
//!   - `selector`: label and field selectors;
//!   - `proto`: the few protobuf request bodies kubectl sends (`kubectl create namespace`);
//!   - `simulators`: Deployment, Knative and HTTPRoute controllers.
//! - [`backends`]: scriptable HTTP doubles for the analysis: a Prometheus-compatible query
//!   endpoint ([`FakePrometheus`]) and a webhook receiver ([`FakeWebhook`]).
//! - [`etcd`]: real etcd processes on loopback ports ([`LocalEtcd`](etcd::LocalEtcd)), one or
//!   several members, killed on drop.
//! - [`net`]: loopback ports, `curl`; [`wait`]: polling a condition; [`logs`]: tracing in the
//!   test output.
//! - [`process`]: child processes killed on drop, captured logs, process trees (orphans).
//! - [`traffic`]: steady HTTP traffic to a service.
//! - [`aviary`]: the aviary binary as a process (coordinator, CLI commands).
//! - [`manifests`]: LocalService and Canary manifests for local agents.
//! - [`bench`]: command-line flags of the benchmark harnesses.
//! - [`error`]: the crate's [`Error`].

pub mod apiserver;
pub mod aviary;
pub mod backends;
pub mod bench;
pub mod error;
pub mod etcd;
pub mod logs;
pub mod manifests;
pub mod net;
pub mod process;
pub mod traffic;
pub mod wait;

pub use apiserver::{FakeApiServer, NEVER_READY_ANNOTATION, Options, SimulatorConfig, Store};
pub use backends::{FakePrometheus, FakeWebhook, WebhookCall};
pub use error::{Error, Result};
