//! The control plane's certificates, made fresh for each control plane: a CA, the API server's
//! serving certificate (127.0.0.1 and localhost), client certificates (CN = user, O = groups)
//! and the ECDSA key pair that signs and verifies ServiceAccount tokens.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// The CA and the files the API server and controller manager read.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub(crate) dir: PathBuf,
}

impl Pki {
    /// Generates the CA, the serving certificate and the ServiceAccount keys into `dir`.
    pub(crate) fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("aviary-test-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let pki = Self {
            ca_pem,
            issuer: Issuer::new(ca, ca_key),
            dir: dir.to_path_buf(),
        };
        pki.write("ca.crt", &pki.ca_pem)?;

        let key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec!["localhost".to_string()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = serving.signed_by(&key, &pki.issuer)?;
        pki.write("apiserver.crt", &cert.pem())?;
        pki.write("apiserver.key", &key.serialize_pem())?;

        let sa = KeyPair::generate()?;
        pki.write("sa.key", &sa.serialize_pem())?;
        pki.write("sa.pub", &sa.public_key_pem())?;
        Ok(pki)
    }

    /// A client certificate for `user`, in `group` (e.g. `system:masters`) if given.
    pub(crate) fn client(&self, user: &str, group: Option<&str>) -> Result<Credential> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(user, group);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn write(&self, file: &str, pem: &str) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, pem).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// A subject; Kubernetes reads the user from CN and a group from O.
fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}
