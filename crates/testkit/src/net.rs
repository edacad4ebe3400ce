//! Loopback networking for tests: free ports, listeners and plain HTTP GETs.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on 127.0.0.1: {e}"))
}

/// A listener on 127.0.0.1 at a port the OS picks, and its address; `what` names the server
/// in the error.
pub async fn bind_loopback(what: &str) -> crate::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| crate::Error::io(format!("binding {what} to 127.0.0.1"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::Error::io(format!("reading the address of {what}"), e))?;
    Ok((listener, addr))
}

/// The body of `GET url` with the real `curl` (2 s at most, whatever the status), or `None`
/// when nothing answered: what a user would see from the shell.
pub fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `curl(url)` parsed as JSON (`Null` when it fails).
pub fn curl_json(url: &str) -> serde_json::Value {
    curl(url)
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}
