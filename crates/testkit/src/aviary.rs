//! The aviary binary in system tests. Its path comes from the caller
//! (`env!("CARGO_BIN_EXE_aviary")` in the CLI's tests), so this crate does not build it.

use std::process::{Command, Stdio};

use crate::process::{Log, Process, announced};

/// `aviary coordinator --listen 127.0.0.1:0 ARGS`: the process, its stderr in `log` (echoed
/// where `echo` says, prefixed with `name`), and its URL (`http://ADDR` from its first line).
pub fn start_coordinator(
    bin: &str,
    args: &[&str],
    name: &str,
    log: &Log,
    echo: fn(&str) -> bool,
) -> (Process, String) {
    let mut child = Command::new(bin)
        .args(["coordinator", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aviary coordinator");
    log.capture(name, child.stderr.take().expect("piped stderr"), echo);
    let addr = announced(
        child.stdout.take().expect("piped stdout"),
        "aviary coordinator listening on ",
    );
    (Process::new(child), format!("http://{addr}"))
}

/// Runs `aviary ARGS` against the coordinator at `url` as `user`: (exit code, stdout, stderr).
pub fn cli(bin: &str, url: &str, user: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin)
        .args(args)
        .env("AVIARY_COORDINATOR", url)
        .env("USER", user)
        .output()
        .expect("run aviary");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
