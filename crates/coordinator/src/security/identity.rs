//! Identities in client certificates.
//!
//! An agent's identity is its cluster name, in a URI SAN `spiffe://<trust-domain>/cluster/<name>`
//! (the Helm chart's cert-manager Certificate writes the same). A person's or CI's is
//! `spiffe://<trust-domain>/user/<name>`, and its role travels in the subject's organization
//! (`O=viewer`, `O=operator` or `O=admin`), as Kubernetes reads groups from O. The trust domain
//! is not compared: the client CA is the trust root.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::auth::Role;

/// What a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// An agent of this cluster.
    Agent { cluster: String },
    /// A person or CI job with a role.
    User { name: String, role: Role },
    /// Signed by the CA but naming no aviary identity (why).
    None(String),
}

impl CertIdentity {
    /// Reads the identity of a DER certificate (already verified by the TLS handshake).
    pub fn from_der(der: &[u8]) -> Self {
        let cert = match X509Certificate::from_der(der) {
            Ok((_, c)) => c,
            Err(e) => return Self::None(format!("cannot parse the certificate: {e}")),
        };
        let uris: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let orgs: Vec<String> = cert
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Self::from_parts(&uris, &orgs)
    }

    /// The identity from URI SANs and subject organizations.
    pub fn from_parts(uris: &[String], orgs: &[String]) -> Self {
        for uri in uris {
            let Some(rest) = uri.strip_prefix("spiffe://") else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (_domain, kind, name) = (parts.next(), parts.next(), parts.next());
            match (kind, name) {
                (Some("cluster"), Some(name)) if aviary_api::validate::is_dns_label(name) => {
                    return Self::Agent {
                        cluster: name.to_string(),
                    };
                }
                (Some("user"), Some(name)) if !name.is_empty() && name.len() <= 128 => {
                    let role = orgs.iter().find_map(|o| Role::parse(o));
                    return match role {
                        Some(role) => Self::User {
                            name: name.to_string(),
                            role,
                        },
                        None => Self::None(format!(
                            "user {name}'s certificate has no role: its subject's O must be viewer, operator or admin"
                        )),
                    };
                }
                _ => {}
            }
        }
        Self::None(
            "the certificate has no spiffe://<trust-domain>/cluster/<name> or /user/<name> URI SAN".into(),
        )
    }
}

/// The URI SAN of an agent of `cluster`.
pub fn agent_uri(trust_domain: &str, cluster: &str) -> String {
    format!("spiffe://{trust_domain}/cluster/{cluster}")
}

/// The URI SAN of user `name`.
pub fn user_uri(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/user/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_from_sans_and_organizations() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            CertIdentity::from_parts(&s(&["spiffe://aviary.local/cluster/us-1"]), &[]),
            CertIdentity::Agent {
                cluster: "us-1".into()
            }
        );
        assert_eq!(
            CertIdentity::from_parts(&s(&["spiffe://x/user/alice"]), &s(&["operator"])),
            CertIdentity::User {
                name: "alice".into(),
                role: Role::Operator
            }
        );
        for (uris, orgs) in [
            (s(&["spiffe://x/user/alice"]), s(&["root"])),
            (s(&["https://x/cluster/us-1"]), vec![]),
            (s(&["spiffe://x/cluster/US_1"]), vec![]),
            (vec![], s(&["admin"])),
        ] {
            assert!(
                matches!(CertIdentity::from_parts(&uris, &orgs), CertIdentity::None(_)),
                "{uris:?} {orgs:?}"
            );
        }
    }
}
