//! `aviary loadtester` as a real process: help, gates that survive a restart of the process,
//! a bash task, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state_file: &std::path::Path) -> Running {
    start_logging(state_file, Stdio::null())
}

/// Starts the load tester with its log (stderr) going to `stderr`.
fn start_logging(state_file: &std::path::Path, stderr: Stdio) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args([
            "loadtester",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--timeout",
            "30s",
        ])
        .arg("--state-file")
        .arg(state_file)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("aviary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the load tester reports its address");
    let addr = line
        .trim()
        .strip_prefix("aviary loadtester listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Running { child, addr }
}

/// A tiny HTTP/1.1 client (the CLI crate has no HTTP client dependency).
fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn terminate(mut r: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = r.child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the load tester did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const PAYLOAD: &str = r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"x"}"#;

#[test]
fn gates_survive_a_restart_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("gates.json");

    let lt = start(&state);
    assert_eq!(post(&lt.addr, "/gate/check", PAYLOAD), (403, "Forbidden".into()));
    assert_eq!(post(&lt.addr, "/gate/open", PAYLOAD).0, 202);
    assert_eq!(post(&lt.addr, "/gate/check", PAYLOAD), (200, "Approved".into()));
    let task = r#"{"name":"podinfo","namespace":"test","metadata":{"type":"bash","cmd":"echo ok","returnCmdOutput":"true"}}"#;
    assert_eq!(post(&lt.addr, "/", task), (200, "ok\n".into()));
    terminate(lt);

    let lt = start(&state);
    assert_eq!(post(&lt.addr, "/gate/check", PAYLOAD), (200, "Approved".into()));
    assert_eq!(post(&lt.addr, "/gate/close", PAYLOAD).0, 202);
    assert_eq!(post(&lt.addr, "/gate/check", PAYLOAD).0, 403);
    terminate(lt);
}

/// Issue 15: a command and its output are logged as escaped fields: a newline in either cannot
/// start a log line of its own.
#[test]
fn commands_and_output_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("loadtester.log");
    let file = std::fs::File::create(&log).unwrap();
    let lt = start_logging(&dir.path().join("gates.json"), Stdio::from(file));
    let task = r#"{"name":"podinfo","namespace":"test","metadata":{"type":"bash","logCmdOutput":"true","cmd":"printf 'ok\nERROR forged by the output\n' # \nWARN forged by the cmd"}}"#;
    let (status, body) = post(&lt.addr, "/", task);
    assert_eq!(status, 500, "{body}");
    terminate(lt);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("forged by the output"),
        "the output is logged: {text}"
    );
    for line in text.lines().filter(|l| l.contains("forged")) {
        assert!(
            line.contains(" aviary_providers::loadtester: command ") && line.contains("cmd=\""),
            "a forged log line: {line:?}\n{text}"
        );
    }
}

#[test]
fn help_explains_the_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["loadtester", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "flagger-loadtester",
        "/gate/check",
        "--port",
        "--timeout",
        "--namespace-regexp",
        "--anchor-namespace-regexp",
        "--state-file",
        "403",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}:\n{help}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["loadtester", "--timeout", "soon"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--timeout"));
}
