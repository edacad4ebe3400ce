//! The crate's error type.

/// Errors of the actor runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The supervisor could not be started.
    #[error("cannot start the canary supervisor: {0}")]
    Spawn(String),
    /// The supervisor is gone (the agent is stopping).
    #[error("the canary supervisor is not running: {0}")]
    Gone(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
