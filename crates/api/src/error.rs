//! The crate's error type.

/// Errors reading manifests or rendering CRDs. Validation findings are not errors: they are
/// [`crate::validate::Diagnostic`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML.
    #[error("document {}: not valid YAML: {source}", document + 1)]
    Yaml {
        document: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// YAML that has no JSON form (e.g. a non-string map key).
    #[error("document {}: cannot be read as a Kubernetes object: {source}", document + 1)]
    NotJson {
        document: usize,
        #[source]
        source: serde_json::Error,
    },
    /// Rendering YAML failed.
    #[error("cannot render YAML: {0}")]
    Serialize(#[source] serde_yaml_ng::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
