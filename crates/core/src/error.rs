//! The crate's error type.

/// Errors of the pure logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A query template could not be rendered (Go's wording).
    #[error("{0}")]
    Template(String),
    /// A simulation script is not usable.
    #[error("simulation script: {0}")]
    Script(String),
    /// A fleet rollout cannot be planned or a verb does not apply (field path included).
    #[error("{0}")]
    Fleet(String),
    /// The statistical judge cannot use its input or configuration (field path included).
    #[error("{0}")]
    Judge(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
