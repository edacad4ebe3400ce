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

/// Where the search of [`port_for_program`] starts: above the well-known and common service
/// ports.
const LOW_PORTS_FROM: u16 = 10_000;

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a program that binds it
/// itself later (and binds every interface, as Flagger's `-port` does). A port from
/// [`free_port`] is inside that range, so another test's `bind(0)` or any outgoing connection
/// can take it before the program binds it; one below the range is taken only by a program that
/// asks for it by number. Falls back to [`free_port`] when the range leaves no room below it.
pub fn port_for_program() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some(room) = ephemeral_start().and_then(|start| start.checked_sub(LOW_PORTS_FROM)) else {
        return free_port();
    };
    if room < 100 {
        return free_port();
    }
    // Processes start at different places, so two test binaries seldom try the same ports.
    let offset = std::process::id() * 7_919;
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = LOW_PORTS_FROM + (offset.wrapping_add(n) % u32::from(room)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_for_a_program_is_free_and_below_the_ephemeral_range() {
        let start = ephemeral_start().expect("Linux has net.ipv4.ip_local_port_range");
        let a = port_for_program();
        let b = port_for_program();
        assert_ne!(a, b, "each call moves on");
        for p in [a, b] {
            if start > LOW_PORTS_FROM + 100 {
                assert!((LOW_PORTS_FROM..start).contains(&p), "{p} not below {start}");
            }
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
