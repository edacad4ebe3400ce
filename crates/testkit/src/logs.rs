//! Logs of the code under test in the test's own output.

/// Sends `tracing` events (filtered by `RUST_LOG`) to the test's captured output; once per test
/// binary, later calls do nothing.
pub fn trace_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
