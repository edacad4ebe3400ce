//! The crate's error type, and how it maps to gRPC status codes.

use tonic::{Code, Status};

/// The metadata key carrying the leader's address on `UNAVAILABLE`.
pub const LEADER_METADATA: &str = "aviary-leader";

/// Errors of the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A write on a replica that is not the leader. `leader` is the leader's address if known.
    #[error("this coordinator is not the leader{}", leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// The store refused a write: the fencing token is stale (a newer leader exists).
    #[error("write rejected: fencing token {token} is stale; this replica is no longer the leader")]
    Fenced { token: u64 },
    /// The stored record changed since it was read (compare-and-swap failed).
    #[error("rollout {name} changed concurrently (expected revision {expected}, found {actual})")]
    Conflict {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A bad request; the message starts with the field path.
    #[error("{0}")]
    InvalidArgument(String),
    /// A verb or request that does not apply to the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The store failed (etcd unreachable, I/O, encoding): worth retrying.
    #[error("store: {0}")]
    Store(String),
    /// The replica cannot answer yet (a new leader loading its state, a watch ended because
    /// leadership moved): retry, following `aviary-leader` when present.
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("invalid coordinator URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The management cluster's API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<aviary_core::Error> for Error {
    fn from(e: aviary_core::Error) -> Self {
        Error::FailedPrecondition(e.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotLeader { leader } => {
                let mut s = Status::unavailable(msg);
                if let Some(l) = leader
                    && let Ok(v) = l.parse()
                {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
                s
            }
            Error::Fenced { .. } => Status::unavailable(msg),
            Error::Conflict { .. } => Status::aborted(msg),
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::InvalidArgument(_) | Error::Url { .. } => Status::invalid_argument(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::DeadlineExceeded(_) => Status::new(Code::DeadlineExceeded, msg),
            Error::Store(_) | Error::Unavailable(_) | Error::Kube(_) => Status::unavailable(msg),
            Error::Bind { .. } | Error::Transport(_) => Status::internal(msg),
        }
    }
}
