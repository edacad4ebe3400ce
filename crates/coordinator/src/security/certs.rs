//! Issuing certificates for a fleet (`aviary certs`): a CA, the coordinator's serving
//! certificate, agent certificates (identity: the cluster, in a URI SAN) and user certificates
//! (a name in a URI SAN and the role in O). ECDSA P-256 keys, PEM files, keys mode 0600.
//! For production, cert-manager issues the same shapes (docs/operations.md, Certificates).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::auth::Role;
use super::identity::{agent_uri, user_uri};
use crate::error::{Error, Result};

/// The trust domain `aviary certs` writes (the Helm chart's default too).
pub const DEFAULT_TRUST_DOMAIN: &str = "aviary.local";

/// The files of a certificate directory.
pub const CA: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

fn pki_error(what: &str, e: rcgen::Error) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

fn write(dir: &Path, file: &str, pem: &str, secret: bool) -> Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, pem).map_err(|e| Error::Tls(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(path)
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| {
        Error::Tls(format!(
            "cannot read {}: {e}; run `aviary certs init {}` first",
            path.display(),
            dir.display()
        ))
    })
}

fn subject(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// The CA of `dir`, to sign with.
fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&read(dir, CA_KEY)?).map_err(|e| pki_error("ca-key.pem", e))?;
    Issuer::from_ca_cert_pem(&read(dir, CA)?, key).map_err(|e| pki_error("ca.pem", e))
}

/// `aviary certs init DIR`: a CA and a serving certificate for `hosts` (DNS names or IPs;
/// localhost and 127.0.0.1 when empty). Refuses to overwrite an existing CA.
pub fn init(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Tls(format!("cannot create {}: {e}", dir.display())))?;
    if dir.join(CA).exists() {
        return Err(Error::Tls(format!(
            "{} exists; issue certificates from it with `aviary certs issue {}` or pick another directory",
            dir.join(CA).display(),
            dir.display()
        )));
    }
    let key = KeyPair::generate().map_err(|e| pki_error("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("CA", e))?;
    ca.distinguished_name = subject("aviary fleet CA", None);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = ca.self_signed(&key).map_err(|e| pki_error("CA", e))?;
    let mut out = vec![
        write(dir, CA, &cert.pem(), false)?,
        write(dir, CA_KEY, &key.serialize_pem(), true)?,
    ];
    out.extend(issue_server(dir, hosts)?);
    Ok(out)
}

/// A serving certificate for the coordinator (`server.pem`, `server-key.pem`).
pub fn issue_server(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>> {
    let hosts: Vec<String> = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        hosts.to_vec()
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("server", e))?;
    for h in &hosts {
        p.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.clone()
                    .try_into()
                    .map_err(|e| pki_error(&format!("host {h}"), e))?,
            ),
        });
    }
    p.distinguished_name = subject("aviary coordinator", None);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(dir, p, SERVER, SERVER_KEY)
}

/// `aviary certs issue DIR --agent CLUSTER`: `CLUSTER.pem` and `CLUSTER-key.pem`.
pub fn issue_agent(dir: &Path, cluster: &str, trust_domain: &str) -> Result<Vec<PathBuf>> {
    if !aviary_api::validate::is_dns_label(cluster) {
        return Err(Error::InvalidArgument(format!(
            "--agent {cluster:?}: a cluster name is a DNS label (1-63 lowercase letters, digits and '-')"
        )));
    }
    issue_client(dir, "agent", cluster, None, agent_uri(trust_domain, cluster))
}

/// `aviary certs issue DIR --user NAME --role ROLE`: `NAME.pem` and `NAME-key.pem`; the role
/// travels in the subject's O.
pub fn issue_user(dir: &Path, name: &str, role: Role, trust_domain: &str) -> Result<Vec<PathBuf>> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(Error::InvalidArgument(format!(
            "--user {name:?}: use 1-128 letters, digits and '.', '_', '-', '@'"
        )));
    }
    issue_client(
        dir,
        "user",
        name,
        Some(role.as_str()),
        user_uri(trust_domain, name),
    )
}

/// A client certificate (`NAME.pem`, `NAME-key.pem`) with CN `name`, O `org` and the identity
/// `uri` as its subject alternative name; `what` (agent, user) names it in errors.
fn issue_client(dir: &Path, what: &str, name: &str, org: Option<&str>, uri: String) -> Result<Vec<PathBuf>> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error(what, e))?;
    p.distinguished_name = subject(name, org);
    let uri = uri.try_into().map_err(|e| pki_error(&format!("{what} URI"), e))?;
    p.subject_alt_names.push(SanType::URI(uri));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(dir, p, &format!("{name}.pem"), &format!("{name}-key.pem"))
}

fn sign(dir: &Path, params: CertificateParams, cert_file: &str, key_file: &str) -> Result<Vec<PathBuf>> {
    let issuer = issuer(dir)?;
    let key = KeyPair::generate().map_err(|e| pki_error("key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| pki_error(cert_file, e))?;
    Ok(vec![
        write(dir, cert_file, &cert.pem(), false)?,
        write(dir, key_file, &key.serialize_pem(), true)?,
    ])
}
