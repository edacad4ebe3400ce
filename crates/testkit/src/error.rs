//! The crate's one error type.

use std::time::Duration;

/// Errors of the test control plane and the analysis backends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file, address or program.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A call to the API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done, naming the resource.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The control plane could not be set up (binaries missing, a process exited, a bad CRD).
    #[error("{0}")]
    Setup(String),
    /// Something a test waited for did not happen in time.
    #[error("{what} did not happen within {timeout:?}{last}")]
    Timeout {
        /// What was awaited, naming the object.
        what: String,
        /// How long was waited.
        timeout: Duration,
        /// What was seen last (empty, or `"; last seen: …"`).
        last: String,
    },
    /// Generating the test PKI failed.
    #[error("generating the test certificates: {0}")]
    Pki(#[from] rcgen::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A file, socket or process operation that failed while `context` was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// The HTTP status code of an API error (404, 409, 403, …), if this is one.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            _ => None,
        }
    }
}
