//! One cluster's agent: a platform (local processes or Kubernetes), the canary actors, the
//! providers, the admin endpoint, and the link to the fleet coordinator.
//!
//! - [`config`]: the agent's settings (the flags of `aviary agent`).
//! - [`observe`]: Flagger's controller metrics and the event log, through a Recorder decorator.
//! - [`admin`]: `/healthz`, `/metrics`, `/canaries`, `/events`.

pub mod admin;
pub mod config;
mod error;
pub mod observe;

pub use error::{Error, Result};
