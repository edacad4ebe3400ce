//! The local platform's data plane: what `aviary agent --local` runs on one machine.
//!
//! - [`sample_app`]: the podinfo-like workload behind `aviary sample-app`.
//! - [`router`]: the per-service HTTP router (weights, A/B matches, mirroring, session affinity)
//!   with per-backend statistics and Prometheus metrics.
//! - [`process`]: the supervisor that runs each version as replicas on free loopback ports.
//! - [`error`]: the crate's error type.
//!
//! The engine's ports (Target, Router, Metrics) are implemented on top of these APIs elsewhere;
//! nothing here knows about Canary resources.

pub mod error;
pub mod process;
pub mod router;
pub mod sample_app;
mod server;

pub use error::{Error, Result};
