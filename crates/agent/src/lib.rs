//! One cluster's agent: a platform (local processes or Kubernetes), the canary actors, the
//! providers, the admin endpoint, and the link to the fleet coordinator.
//!
//! - [`config`]: the agent's settings (the flags of `aviary agent`).
//! - `assemble`: the one assembly path: a platform supplies what differs (workloads, status
//!   persistence, metric sources, alert providers, secrets), the rest is shared.
//! - [`observe`]: Flagger's controller metrics and the event log, through a Recorder decorator.
//! - [`admin`]: `/healthz`, `/metrics`, `/canaries`, `/events`.
//! - [`link`]: the stream to the fleet coordinator, and the engine's Gate on it.
//! - [`local`]: the agent on aviary-local's platform (processes, routers, state and config dirs).
//! - [`kube`]: the agent on aviary-kube's platform (watchers, leader election).
//! - `error`: the crate's [`Error`].

pub mod admin;
mod assemble;
pub mod config;
mod error;
pub mod kube;
pub mod link;
pub mod local;
pub mod observe;

pub use error::{Error, Result};
