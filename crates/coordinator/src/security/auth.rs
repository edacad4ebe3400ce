//! Roles, principals, the token file and the check every call makes.
//!
//! - `viewer`: get, list, watch, wait (and the cluster and canary lists).
//! - `operator`: + pause, resume, approve, skip, retry.
//! - `admin`: + create, abort.
//!
//! A call is authenticated by a bearer token (`authorization: Bearer …`, checked against the
//! token file of sha256 hashes) or by the client certificate of its connection. Agent
//! certificates open AgentLink only. Without TLS (`--insecure`) every caller is the anonymous
//! admin, as before mutual TLS. Every refusal, and every call that changes something, is
//! logged with target `aviary::audit`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use super::conn::PeerInfo;
use super::identity::CertIdentity;
use crate::error::{Error, Result};

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What the audit history records: `user:alice`, `token:ci-deploy`, `agent:us-1`, or
    /// `anonymous` without TLS.
    pub subject: String,
    /// The role for Fleet calls (`None`: an agent).
    pub role: Option<Role>,
    /// The cluster, for an agent.
    pub cluster: Option<String>,
    /// Without TLS: nobody is authenticated, the request's free-text actor stays the actor.
    pub anonymous: bool,
}

impl Principal {
    fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            role: Some(Role::Admin),
            cluster: None,
            anonymous: true,
        }
    }

    /// The actor and comment a history record gets for a request that says `actor`.
    pub fn actor_and_comment<'a>(&'a self, actor: &'a str) -> (&'a str, &'a str) {
        if self.anonymous {
            (actor, "")
        } else {
            (&self.subject, actor)
        }
    }
}

/// The token file: `SHA256-HEX SUBJECT ROLE` a line (`#` comments). Make a hash with
/// `printf %s "$TOKEN" | sha256sum`.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], (String, Role)>,
}

impl Tokens {
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut by_hash = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let f: Vec<&str> = line.split_whitespace().collect();
            let [hash, subject, role] = f[..] else {
                return Err(Error::Tls(format!(
                    "{}: expected `SHA256-HEX SUBJECT ROLE`",
                    at()
                )));
            };
            let mut h = [0u8; 32];
            hex::decode_to_slice(hash, &mut h).map_err(|_| {
                Error::Tls(format!(
                    "{}: the first field must be a sha256 in hex (printf %s \"$TOKEN\" | sha256sum)",
                    at()
                ))
            })?;
            let role = Role::parse(role).ok_or_else(|| {
                Error::Tls(format!("{}: role {role:?}: use viewer, operator or admin", at()))
            })?;
            by_hash.insert(h, (subject.to_string(), role));
        }
        Ok(Self { by_hash })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Tls(format!("cannot read the token file {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    fn lookup(&self, token: &str) -> Option<&(String, Role)> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&h)
    }
}

/// A new random bearer token (256 bits, hex): what `aviary demo` signs its dashboard in with.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The sha256 of a token in hex, as the token file wants it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The check every call makes.
pub struct Auth {
    /// False with `--insecure`.
    secure: bool,
    tokens: Arc<RwLock<Tokens>>,
    pub(crate) token_file: Option<PathBuf>,
}

impl Auth {
    /// No TLS: everyone is the anonymous admin.
    pub fn insecure() -> Self {
        Self {
            secure: false,
            tokens: Arc::default(),
            token_file: None,
        }
    }

    /// TLS, with the tokens of `token_file` if given (reloaded when it changes).
    pub fn secure(token_file: Option<PathBuf>) -> Result<Self> {
        let tokens = match &token_file {
            Some(p) => Tokens::load(p)?,
            None => Tokens::default(),
        };
        Ok(Self {
            secure: true,
            tokens: Arc::new(RwLock::new(tokens)),
            token_file,
        })
    }

    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Replaces the tokens (the file changed).
    pub(crate) fn set_tokens(&self, t: Tokens) {
        *self.tokens.write() = t;
    }

    /// Who sent `req`.
    pub fn principal<T>(&self, req: &Request<T>) -> std::result::Result<Principal, Status> {
        if !self.secure {
            return Ok(Principal::anonymous());
        }
        if let Some(v) = req.metadata().get("authorization") {
            let v = v.to_str().unwrap_or_default();
            let Some(token) = v.strip_prefix("Bearer ").map(str::trim) else {
                return Err(refuse_unauthenticated(
                    req,
                    "the authorization header must be `Bearer TOKEN`",
                ));
            };
            return match self.tokens.read().lookup(token) {
                Some((subject, role)) => Ok(Principal {
                    subject: format!("token:{subject}"),
                    role: Some(*role),
                    cluster: None,
                    anonymous: false,
                }),
                None => Err(refuse_unauthenticated(req, "unknown bearer token")),
            };
        }
        let peer = req.extensions().get::<PeerInfo>();
        match peer.and_then(|p| p.identity.clone()) {
            Some(CertIdentity::Agent { cluster }) => Ok(Principal {
                subject: format!("agent:{cluster}"),
                role: None,
                cluster: Some(cluster),
                anonymous: false,
            }),
            Some(CertIdentity::User { name, role }) => Ok(Principal {
                subject: format!("user:{name}"),
                role: Some(role),
                cluster: None,
                anonymous: false,
            }),
            Some(CertIdentity::None(why)) => Err(refuse_unauthenticated(req, &why)),
            None => Err(refuse_unauthenticated(
                req,
                "no client certificate and no bearer token: use --cert/--key or --token",
            )),
        }
    }

    /// The caller of a Fleet call `method`, if its role is at least `need`.
    pub fn require<T>(
        &self,
        req: &Request<T>,
        method: &str,
        need: Role,
    ) -> std::result::Result<Principal, Status> {
        let p = self.principal(req)?;
        let ok = p.role.is_some_and(|r| r >= need);
        if !ok {
            let has = p
                .role
                .map_or("an agent certificate (AgentLink only)".to_string(), |r| {
                    format!("role {r}")
                });
            tracing::warn!(target: "aviary::audit", subject = %p.subject, method, need = %need, "refused");
            return Err(Status::permission_denied(format!(
                "{method} needs role {need} or higher; {} has {has}",
                p.subject
            )));
        }
        if need > Role::Viewer {
            tracing::info!(target: "aviary::audit", subject = %p.subject, method, "allowed");
        }
        Ok(p)
    }
}

fn refuse_unauthenticated<T>(req: &Request<T>, why: &str) -> Status {
    let remote = req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.remote)
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::warn!(target: "aviary::audit", remote, reason = why, "unauthenticated");
    Status::unauthenticated(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_read_and_checked() {
        let text = format!(
            "# CI\n{} ci-deploy operator\n\n{} dash viewer\n",
            token_hash("s3cret-ci"),
            token_hash("dash-token")
        );
        let t = Tokens::parse(&text, Path::new("tokens")).unwrap();
        assert_eq!(
            t.lookup("s3cret-ci"),
            Some(&("ci-deploy".to_string(), Role::Operator))
        );
        assert_eq!(t.lookup("dash-token").unwrap().1, Role::Viewer);
        assert_eq!(t.lookup("guess"), None);
        for bad in [
            "abc ci operator",
            &format!("{} ci root", token_hash("x")),
            "onlyone",
        ] {
            let e = Tokens::parse(bad, Path::new("tokens")).unwrap_err().to_string();
            assert!(e.starts_with("tokens:1:"), "{e}");
        }
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
