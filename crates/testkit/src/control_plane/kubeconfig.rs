//! kubeconfig files (v1 `Config`) for the test control plane: one cluster, one user, one context.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::pki::Credential;
use crate::error::{Error, Result};

/// How a kubeconfig's user authenticates.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A client certificate.
    Certificate(Credential),
    /// A bearer token (a ServiceAccount's TokenRequest token).
    Token(String),
    /// No credentials (a plain-HTTP proxy that adds its own).
    None,
}

/// Writes a kubeconfig for `server` (https with `ca_pem`, or a plain http URL) as `identity`, with
/// `namespace` as the context's default namespace.
pub fn write(
    path: &Path,
    server: &str,
    ca_pem: Option<&str>,
    identity: &Identity,
    namespace: &str,
) -> Result<()> {
    let mut cluster = json!({ "server": server });
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = json!(STANDARD.encode(ca));
    }
    let user = match identity {
        Identity::Certificate(c) => json!({
            "client-certificate-data": STANDARD.encode(&c.cert_pem),
            "client-key-data": STANDARD.encode(&c.key_pem),
        }),
        Identity::Token(t) => json!({ "token": t }),
        Identity::None => json!({}),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "aviary-test", "cluster": cluster }],
        "users": [{ "name": "aviary-test", "user": user }],
        "contexts": [{ "name": "aviary-test", "context": {
            "cluster": "aviary-test", "user": "aviary-test", "namespace": namespace,
        }}],
        "current-context": "aviary-test",
        "preferences": {},
    });
    let text = serde_yaml_ng::to_string(&config)
        .map_err(|e| Error::Setup(format!("serializing a kubeconfig: {e}")))?;
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A kube-rs client from a kubeconfig file.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Setup(format!("loading {}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(|e| Error::kube(format!("a client for {}", path.display()), e))
}
