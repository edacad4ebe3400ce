//! Loopback networking for tests.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on 127.0.0.1: {e}"))
}
