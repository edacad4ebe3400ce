//! One cluster's agent: a platform (local processes or Kubernetes), the canary actors, the
//! providers, the admin endpoint, and the link to the fleet coordinator.
//!
//! - [`config`]: the agent's settings (the flags of `aviary agent`).
//! - [`observe`]: Flagger's controller metrics and the event log, through a Recorder decorator.
//! - [`admin`]: `/healthz`, `/metrics`, `/canaries`, `/events`.
//! - [`link`]: the stream to the fleet coordinator, and the engine's Gate on it.
//! - [`local`]: the agent on aviary-local's platform (processes, routers, state and config dirs).
//! - [`kube`]: the agent on Kubernetes (watchers, actors, providers, leader election, admin).

pub mod admin;
pub mod config;
mod error;
pub mod kube;
pub mod link;
pub mod local;
pub mod observe;

pub use error::{Error, Result};
