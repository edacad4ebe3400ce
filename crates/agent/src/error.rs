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
    /// The actor runtime could not start.
    #[error(transparent)]
    Actors(#[from] aviary_actors::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
