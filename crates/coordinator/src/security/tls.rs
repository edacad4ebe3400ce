//! rustls configurations. The server's is rebuilt when its files change (checked every 2 s), so
//! certificates rotate without a restart: new connections get the new ones, open connections
//! keep theirs. A broken new file is logged and the previous configuration kept. Clients read
//! their files each time they connect, so a reconnect picks up a rotated certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::auth::{Auth, Tokens};
use crate::error::{Error, Result};

/// How often certificate and token files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("cannot read {}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: not a PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate in it", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Tls(format!("{}: not a PEM private key: {e}", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| Error::Tls(format!("{}: not a CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The coordinator's certificate, key and the CA its clients' certificates are checked against.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// What a listener speaks, which decides the ALPN protocols it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The web dashboard: HTTP/2 or HTTP/1.1 (browsers choose).
    Web,
}

/// The server configurations in use (one per [`Protocols`], same certificates and client
/// CA), reloaded when their files change.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>,
    stamps: Mutex<Vec<Stamp>>,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ServerTls {
    pub fn load(files: ServerTlsFiles) -> Result<Arc<Self>> {
        let config = Self::build(&files)?;
        let stamps = Self::stamps_of(&files);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(config),
            stamps: Mutex::new(stamps),
        }))
    }

    fn stamps_of(f: &ServerTlsFiles) -> Vec<Stamp> {
        [&f.cert, &f.key, &f.client_ca].iter().map(|p| stamp(p)).collect()
    }

    /// The gRPC and the web configurations.
    fn build(f: &ServerTlsFiles) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&f.client_ca)?), provider())
                // Health answers without a client certificate; every other call needs one (or a
                // token), which `Auth` checks. A certificate that is presented must verify.
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::Tls(format!("{}: {e}", f.client_ca.display())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&f.cert)?, key(&f.key)?)
            .map_err(|e| Error::Tls(format!("{} and {}: {e}", f.cert.display(), f.key.display())))?;
        let mut web = config.clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        web.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(config), Arc::new(web)))
    }

    /// The gRPC configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config_for(Protocols::Grpc)
    }

    /// The configuration for a new connection of a listener speaking `protocols`.
    pub fn config_for(&self, protocols: Protocols) -> Arc<rustls::ServerConfig> {
        let current = self.current.read();
        match protocols {
            Protocols::Grpc => current.0.clone(),
            Protocols::Web => current.1.clone(),
        }
    }

    /// Rebuilds the configuration if a file changed. True when it was replaced.
    pub fn reload_if_changed(&self) -> bool {
        let now = Self::stamps_of(&self.files);
        let mut stamps = self.stamps.lock();
        if *stamps == now {
            return false;
        }
        *stamps = now;
        match Self::build(&self.files) {
            Ok(c) => {
                *self.current.write() = c;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate files changed: reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate files changed but cannot be used; keeping the previous ones");
                false
            }
        }
    }
}

/// Reloads the server's certificates and the token file when they change, until `stop`.
pub(crate) async fn watch_files(tls: Option<Arc<ServerTls>>, auth: Arc<Auth>, stop: CancellationToken) {
    let mut token_stamp = auth.token_file.as_deref().and_then(stamp);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Some(t) = &tls {
            t.reload_if_changed();
        }
        if let Some(p) = &auth.token_file {
            let s = stamp(p);
            if s != token_stamp {
                token_stamp = s;
                match Tokens::load(p) {
                    Ok(t) => {
                        auth.set_tokens(t);
                        tracing::info!(file = %p.display(), "token file changed: reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "token file changed but cannot be read; keeping the previous tokens")
                    }
                }
            }
        }
    }
}

/// What a client presents: the CA it trusts, and its certificate and key (optional when it
/// authenticates with a token).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A bearer token sent on every call.
    pub token: Option<String>,
}

impl ClientTls {
    /// True when nothing is set (plaintext, no token).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none() && self.token.is_none()
    }

    /// A certificate directory from `aviary certs`: its CA and `NAME.pem`/`NAME-key.pem`.
    pub fn from_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: Some(dir.join(super::certs::CA)),
            cert: Some(dir.join(format!("{name}.pem"))),
            key: Some(dir.join(format!("{name}-key.pem"))),
            token: None,
        }
    }

    /// tonic's client TLS configuration, read from the files now.
    pub fn tonic_config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| Error::Tls(format!("cannot read {}: {e}", p.display())));
        let mut c = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            c = c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        } else {
            c = c.with_enabled_roots();
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Tls(
                    "--cert and --key go together: give both (or neither, with --token)".into(),
                ));
            }
        }
        Ok(c)
    }
}
