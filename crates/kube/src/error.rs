//! The crate's error type.

/// Errors of the Kubernetes adapters. Ports turn them into the texts the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be configured (kubeconfig, in-cluster settings).
    #[error("{0}")]
    Config(String),
    /// A call to the API server failed.
    #[error("{action}: {}", crate::client::describe(source))]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A write kept conflicting with other writers.
    #[error(
        "{0} kept changing while it was being updated (409 Conflict); it will be retried on the next tick"
    )]
    Conflict(String),
    /// An object does not have the shape the adapter needs.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
