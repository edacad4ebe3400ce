//! Dev-only: Flagger itself next to the aviary agent on real API servers — the differential
//! harness and the Kubernetes scale benchmark — and the bounded soak of the local fleet.
//!
//! The differential harness (`scripts/differential`, and its CI subset in the test suite) runs
//! every scenario twice, once with Flagger v1.44 (built from the Go module proxy by
//! `tests/flagger/build.sh`) and once with `aviary agent`, each on its own fresh control plane
//! with the same CRDs, stand-ins, scripted Prometheus and webhook answers, and compares the
//! Events, the Canary status after every write, the webhook calls, the Prometheus queries and the
//! objects the routers wrote. Every difference is normalised noise, a documented deliberate
//! difference (docs/compatibility.md), or undocumented — which fails the run.
//!
//! Module map:
//! - [`scenario`]: what a scenario is (objects, scripted answers, driver steps).
//! - [`catalogue`]: the scenarios.
//! - [`sides`]: the two controllers: building/locating them, their RBAC and CRDs, starting them.
//! - [`record`]: watching one side's namespace on the API server.
//! - [`trace`]: normalising a recording into comparable channels.
//! - [`compare`]: channel-by-channel differences.
//! - [`documented`]: the deliberate differences, each tied to its docs/compatibility.md row.
//! - [`runner`]: running scenarios on both sides at once.
//! - [`report`]: the printed report and its summary line.
//! - [`bench`]: the Kubernetes scale benchmark (`scripts/bench-kube`): N canaries per
//!   cluster, both controllers, requests, CPU, memory and analysis lateness.
//! - [`soak`]: the bounded soak (`scripts/soak`): a local agent with many canaries and a
//!   coordinator rolling releases; resident memory and file descriptors must not grow.
//! - [`error`]: the crate's [`Error`].

pub mod bench;
pub mod catalogue;
pub mod compare;
pub mod documented;
pub mod error;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sides;
pub mod soak;
pub mod trace;

pub use error::{Error, Result};
