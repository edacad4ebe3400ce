//! The crate's error type: construction and start-up failures. Per-call failures (a query, a
//! webhook, an alert) are the engine ports' plain messages instead.

use std::path::PathBuf;

/// Errors of building adapters and of running the load tester.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable; the message names the flag or field and what to do.
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built (TLS backend, proxy URL).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// The load tester's gate state file cannot be read or written.
    #[error("load tester state file {path}: {message}")]
    State { path: PathBuf, message: String },
    /// An I/O operation failed (binding a port, reading a directory).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
