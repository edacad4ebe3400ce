//! The crate's error type.

/// Errors reading manifests or rendering CRDs. The messages carry the underlying error's text
/// (there is nothing to gain from walking a source chain here). Validation findings are not errors: they are
/// [`crate::validate::Diagnostic`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML.
    #[error("document {}: not valid YAML: {error}", document + 1)]
    Yaml {
        document: usize,
        error: serde_yaml_ng::Error,
    },
    /// YAML that has no JSON form (e.g. a non-string map key).
    #[error("document {}: cannot be read as a Kubernetes object: {error}", document + 1)]
    NotJson {
        document: usize,
        error: serde_json::Error,
    },
    /// The text's first document is not a usable Canary ([`crate::document::parse_canary`]).
    #[error("document 1: not a usable Canary: {0}")]
    NotACanary(String),
    /// Rendering YAML failed.
    #[error("cannot render YAML: {0}")]
    Serialize(serde_yaml_ng::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
