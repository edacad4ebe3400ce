//! The web dashboard of [`Coordinator::serve_dashboard`] (`aviary coordinator --http-listen`):
//! the page (HTML, CSS and our own JavaScript, embedded in the binary) and its JSON API.
//!
//! Reads and actions go through the Fleet service itself (`api::FleetService`, the gRPC API's
//! implementation), so the dashboard refuses and records exactly what `aviary rollout ...` does.
//! The live view is Server-Sent Events fed by the same watch as `aviary rollout watch`.
//!
//! It has the gRPC API's TLS and roles: the same certificates, client CA and token file, and
//! every call goes through the Fleet service's own check and audit log.
//!
//! - `caller`: [`Caller`], the one place a request gets its identity (client certificate,
//!   bearer token header or the sign-in cookie).
//! - `listen`: the listener (the coordinator's accept loop and TLS) under axum.
//! - `routes`: the handlers (`/api/...`, sign-in, the event stream, the assets).
//!
//! [`Coordinator::serve_dashboard`]: crate::Coordinator::serve_dashboard

mod caller;
mod listen;
mod routes;

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use caller::Caller;
pub(crate) use listen::serve;

use crate::api::FleetService;
use crate::error::LEADER_METADATA;
use crate::leader::Leadership;
use crate::security::Auth;

/// How the dashboard serves.
#[derive(Clone, Debug, Default)]
pub struct DashboardConfig {
    /// Every caller is at most a viewer: no action buttons, actions refused (403).
    pub read_only: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct WebState {
    pub(crate) api: Arc<FleetService>,
    /// The coordinator's (the Fleet service's) check: who a request's credentials name.
    pub(crate) auth: Arc<Auth>,
    pub(crate) leadership: Arc<dyn Leadership>,
    pub(crate) config: DashboardConfig,
    /// Served over TLS (the sign-in cookie is `Secure`).
    pub(crate) secure: bool,
    /// Ends the event streams when the coordinator shuts down (graceful shutdown waits for them).
    pub(crate) shutdown: CancellationToken,
}

/// The router of the page and its API.
pub(crate) fn router(state: WebState) -> axum::Router {
    routes::router().with_state(state)
}

/// An error as the page shows it: `{"error": "...", "code": "NOT_FOUND", "leader": "..."}`.
#[derive(Debug)]
pub(crate) struct WebError {
    status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<String>,
}

impl WebError {
    pub(crate) fn forbidden(message: String) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            body: ErrorBody {
                error: message,
                code: "PERMISSION_DENIED",
                leader: None,
            },
        }
    }

    pub(crate) fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: message,
                code: "INVALID_ARGUMENT",
                leader: None,
            },
        }
    }
}

/// The Fleet service's statuses as HTTP statuses (the gRPC code is kept in `code`).
impl From<tonic::Status> for WebError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let (status, code) = match s.code() {
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let leader = s
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Self {
            status,
            body: ErrorBody {
                error: s.message().to_string(),
                code,
                leader,
            },
        }
    }
}

impl WebError {
    /// The body as JSON (the event stream's `problem`).
    pub(crate) fn body_json(&self) -> String {
        serde_json::to_string(&self.body).unwrap_or_default()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
