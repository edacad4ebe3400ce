//! The crate's error type.

/// Errors starting or running an agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin (or another) address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another address with --admin-listen")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be used (the message says what to change).
    #[error("{0}")]
    Config(String),
    /// The actor runtime could not start.
    #[error(transparent)]
    Actors(#[from] aviary_actors::Error),
    /// The Kubernetes platform could not start (client configuration).
    #[error(transparent)]
    Kube(#[from] aviary_kube::Error),
    /// The local platform could not start (its state directory).
    #[error(transparent)]
    Local(#[from] aviary_local::Error),
    /// The providers could not be built (metrics server URL, notifier URLs).
    #[error(transparent)]
    Providers(#[from] aviary_providers::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
