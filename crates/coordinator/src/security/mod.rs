//! Who is calling, and may they: mutual TLS on every connection, identities from certificates
//! (or bearer tokens), roles, and the audit log.
//!
//! - `certs`: issuing the CA, the coordinator's serving certificate and agent and user
//!   certificates with rcgen (`aviary certs`).
//! - `identity`: what a client certificate says: `spiffe://<trust-domain>/cluster/<name>` is
//!   an agent, `spiffe://<trust-domain>/user/<name>` with the role in the subject's O is a
//!   person or CI.
//! - `tls`: the server's rustls configuration (client certificates verified against the client
//!   CA, optional so health answers without one) reloaded when its files change, and the
//!   clients' configuration.
//! - `conn`: the accept loop: a connection cap, TLS handshake and HTTP/2 preface timeouts, the
//!   peer's identity attached to every request.
//! - `auth`: roles (`viewer`, `operator`, `admin`), the token file, the check every call makes,
//!   and the audit log (target `aviary::audit`).

pub mod auth;
pub mod certs;
pub mod conn;
pub mod identity;
pub mod tls;

pub use auth::{Auth, Principal, Role};
pub use conn::ConnLimits;
pub use identity::CertIdentity;
pub use tls::{ClientTls, ServerTls};
