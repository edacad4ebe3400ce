//! Who is calling the dashboard and what they may do: the one place HTTP requests get an
//! identity.
//!
//! A request carries the same credentials as a gRPC call: the client certificate of its
//! connection (checked against the client CA in the TLS handshake), or a bearer token of the
//! token file, from an `Authorization: Bearer` header or from the page's sign-in cookie.
//! [`Caller::request`] puts them on the Fleet service's request, so the service's own check
//! (`Auth::require`) decides, refuses and audits exactly as for `aviary rollout ...`. Without
//! TLS (`--insecure`) every caller is the anonymous admin, as on the gRPC API.
//! `--dashboard-read-only` caps every caller at viewer.

use axum::extract::{ConnectInfo, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;
use tonic::Request;
use tonic::metadata::MetadataValue;

use super::{WebError, WebState};
use crate::security::conn::PeerInfo;
use crate::security::{Principal, Role};

/// The cookie the sign-in form sets (HttpOnly, Secure, SameSite=Strict).
pub(crate) const TOKEN_COOKIE: &str = "aviary_token";

/// The credentials of one HTTP request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    /// `Bearer TOKEN`, from the header or the cookie.
    authorization: Option<String>,
    peer: Option<PeerInfo>,
    /// The token came from the sign-in cookie (the page offers to sign out).
    pub(crate) cookie: bool,
}

impl Credentials {
    fn of(parts: &Parts) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerInfo>>()
            .map(|c| c.0.clone());
        if let Some(v) = parts.headers.get(http::header::AUTHORIZATION) {
            return Self {
                authorization: Some(v.to_str().unwrap_or_default().to_string()),
                peer,
                cookie: false,
            };
        }
        let token = cookie(&parts.headers, TOKEN_COOKIE);
        Self {
            cookie: token.is_some(),
            authorization: token.map(|t| format!("Bearer {t}")),
            peer,
        }
    }

    /// A bearer token alone (the sign-in form's).
    pub(crate) fn token(token: &str) -> Self {
        Self {
            authorization: Some(format!("Bearer {token}")),
            peer: None,
            cookie: true,
        }
    }

    /// `msg` as a Fleet service request carrying these credentials.
    pub(crate) fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.authorization {
            // A value that is no valid header stays out: the call is then unauthenticated.
            if let Ok(v) = MetadataValue::try_from(a.as_str()) {
                r.metadata_mut().insert("authorization", v);
            }
        }
        if let Some(p) = &self.peer {
            r.extensions_mut().insert(p.clone());
        }
        r
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The caller of one request: who (as the audit history records it) and their role.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `user:alice`, `token:ci-deploy`, or `anonymous` without TLS.
    pub name: String,
    /// After `--dashboard-read-only`'s cap.
    pub role: Role,
    pub(crate) credentials: Credentials,
    /// `--dashboard-read-only` lowered the role.
    pub(crate) capped: bool,
}

impl Caller {
    /// Who `credentials` are, as the Fleet service sees them; 401 when they name nobody, 403
    /// for an agent's certificate (agents only open AgentLink).
    pub(crate) fn identify(credentials: Credentials, state: &WebState) -> Result<Self, WebError> {
        let p: Principal = state
            .auth
            .principal(&credentials.request(()))
            .map_err(WebError::from)?;
        let Some(role) = p.role else {
            return Err(WebError::forbidden(format!(
                "{} is an agent's certificate: agents open AgentLink only; use a user certificate or a token",
                p.subject
            )));
        };
        let capped = state.config.read_only && role > Role::Viewer;
        Ok(Self {
            name: p.subject,
            role: if capped { Role::Viewer } else { role },
            credentials,
            capped,
        })
    }

    /// `msg` as the Fleet service request of this caller.
    pub(crate) fn request<T>(&self, msg: T) -> Request<T> {
        self.credentials.request(msg)
    }

    /// Refuses an action (403) when `--dashboard-read-only` capped this caller below `needed`.
    /// Every other check is the Fleet service's.
    pub(crate) fn check_cap(&self, needed: Role, action: &str) -> Result<(), WebError> {
        if self.role >= needed || !self.capped {
            return Ok(());
        }
        tracing::warn!(target: "aviary::audit", subject = %self.name, action, "refused: the dashboard is read-only");
        Err(WebError::forbidden(format!(
            "{action}: the dashboard is read-only (--dashboard-read-only): {} may only view here; use `aviary rollout ...` with their own credentials",
            self.name
        )))
    }
}

impl FromRequestParts<WebState> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        Self::identify(Credentials::of(parts), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; aviary_token=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, TOKEN_COOKIE).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "x=1".parse().unwrap());
        h.append(http::header::COOKIE, "aviary_token=\"q\"".parse().unwrap());
        assert_eq!(cookie(&h, TOKEN_COOKIE).as_deref(), Some("q"));
        h.clear();
        h.append(http::header::COOKIE, "aviary_token=".parse().unwrap());
        assert_eq!(cookie(&h, TOKEN_COOKIE), None);
    }
}
