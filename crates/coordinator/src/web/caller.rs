//! Who is calling the dashboard and what they may do: the one place HTTP requests get a role.
//!
//! Today the role comes from the dashboard's configuration (`--dashboard-read-only` makes every
//! caller a viewer; otherwise every caller is an admin, as on the unauthenticated gRPC API).
//! When the API gains client identities and roles, [`identify`] reads them from the request
//! (the client certificate of the connection) and nothing else changes: every handler asks
//! [`Caller::require`].

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;

use super::{WebError, WebState};

/// What a caller may do, each role including the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads rollouts and watches them.
    Viewer,
    /// Also approves, pauses, resumes, aborts, skips and retries.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// The caller of one request: the actor recorded in the rollout's history, and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// PERMISSION_DENIED (HTTP 403) unless the caller's role includes `needed`.
    pub(crate) fn require(&self, needed: Role, action: &str) -> Result<(), WebError> {
        if self.role >= needed {
            return Ok(());
        }
        Err(WebError::forbidden(format!(
            "{action}: {} is a {}; it needs the {} role (this dashboard is read-only)",
            self.name,
            self.role.as_str(),
            needed.as_str()
        )))
    }
}

/// The role of a request: from the dashboard's configuration until the API has identities.
fn identify(_parts: &Parts, state: &WebState) -> Caller {
    if state.config.read_only {
        Caller {
            name: "viewer".into(),
            role: Role::Viewer,
        }
    } else {
        Caller {
            name: "dashboard".into(),
            role: Role::Admin,
        }
    }
}

impl FromRequestParts<WebState> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        Ok(identify(parts, state))
    }
}
