//! Waiting for a condition in blocking tests.

use std::time::{Duration, Instant};

/// Polls `done` every 200 ms until it holds; panics after `limit`, naming `what`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
