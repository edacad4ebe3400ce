//! The local platform's data plane: what `aviary agent --local` runs on one machine.
//!
//! - [`sample_app`]: the podinfo-like workload behind `aviary sample-app`.
//! - [`router`]: the per-service HTTP router (weights, A/B matches, mirroring, session affinity)
//!   with per-backend statistics and Prometheus metrics; `router::router_request` (feature
//!   `fuzzing`) is its fuzz target (`fuzz/`).
//! - [`process`]: the supervisor that runs each version as replicas on free loopback ports.
//! - [`platform`]: the local platform on top of them: LocalServices from a config directory,
//!   the engine's ports (Target, Router, built-in metrics, Recorder), the state directory, and
//!   what the coordinator link asks of a cluster (versions, pushes, retries).
//! - [`error`]: the crate's error type.
//! - `server`: serving HTTP/1.1 and h2c with a bounded graceful shutdown (router, sample app).
//!
//! The data plane knows nothing about Canary resources; only [`platform`] does.

pub mod error;
pub mod platform;
pub mod process;
pub mod router;
pub mod sample_app;
mod server;

pub use error::{Error, Result};
