//! The crate's one error type.
//!
//! API-level variants (`NotFound`, `Conflict`, …) double as the `metav1.Status` answers of the fake
//! API server, so the store used directly by a test fails exactly like the HTTP API does.

use http::StatusCode;
use serde_json::{Value, json};

/// Errors of the fake API server: request failures (mapped to `metav1.Status`) and setup failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the resource type or the object does not exist.
    #[error("{message}")]
    NotFound {
        /// Full message, e.g. `deployments.apps "podinfo" not found`.
        message: String,
        /// Object name, empty for unknown resource types or paths.
        name: String,
        /// Group of the resource (empty for core).
        group: String,
        /// Resource (plural) or kind the name refers to.
        kind: String,
    },
    /// 409 AlreadyExists: POST of a name that is taken.
    #[error("{message}")]
    AlreadyExists {
        /// Full message, e.g. `canaries.flagger.app "podinfo" already exists`.
        message: String,
        /// Object name.
        name: String,
        /// Group of the resource.
        group: String,
        /// Resource (plural).
        kind: String,
    },
    /// 409 Conflict: stale `metadata.resourceVersion`, or a failed delete precondition.
    #[error("{message}")]
    Conflict {
        /// Full message.
        message: String,
        /// Object name.
        name: String,
        /// Group of the resource.
        group: String,
        /// Resource (plural).
        kind: String,
    },
    /// 422 Invalid: the object (or the patched object) is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// 400 BadRequest: malformed body, selector or parameters.
    #[error("{0}")]
    BadRequest(String),
    /// 405 MethodNotAllowed.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406 NotAcceptable: an Accept header the fake cannot serve.
    #[error("{0}")]
    NotAcceptable(String),
    /// 415 UnsupportedMediaType: e.g. server-side apply or strategic merge on a custom resource.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410 Gone (reason Expired): a watch or list continue token refers to a compacted version.
    #[error("{0}")]
    Gone(String),
    /// 500: an invariant of the fake itself broke.
    #[error("internal error: {0}")]
    Internal(String),
    /// Binding the listener or writing a kubeconfig failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the address or file.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Building a kube-rs client for the fake failed.
    #[error("building a kube client for the fake API server: {0}")]
    Kube(#[source] Box<kube::Error>),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// HTTP status code the API server answers with.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Gone(_) => StatusCode::GONE,
            Error::Internal(_) | Error::Io { .. } | Error::Kube(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `metav1.StatusReason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::Invalid(_) => "Invalid",
            Error::BadRequest(_) => "BadRequest",
            Error::MethodNotAllowed(_) => "MethodNotAllowed",
            Error::NotAcceptable(_) => "NotAcceptable",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::Gone(_) => "Expired",
            _ => "InternalError",
        }
    }

    /// The `metav1.Status` object the API server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        match self {
            Error::NotFound {
                name, group, kind, ..
            }
            | Error::AlreadyExists {
                name, group, kind, ..
            }
            | Error::Conflict {
                name, group, kind, ..
            } => {
                let mut details = json!({ "name": name, "kind": kind });
                if !group.is_empty() {
                    details["group"] = json!(group);
                }
                status["details"] = details;
            }
            _ => {}
        }
        status
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
