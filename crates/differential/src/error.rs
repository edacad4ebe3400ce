//! The crate's one error type.

/// Errors of a differential run or a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The test control plane, an object or a test double failed; also a file or process
    /// operation (the testkit's `Io` names the file or program).
    #[error(transparent)]
    Testkit(#[from] aviary_testkit::Error),
    /// Something needed to run is missing or wrong (a program, a manifest, a scenario).
    #[error("{0}")]
    Setup(String),
    /// A benchmark or soak could not measure (its processes did not come up, a plot failed).
    #[error("{0}")]
    Bench(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        aviary_testkit::Error::io(context, source).into()
    }
}
