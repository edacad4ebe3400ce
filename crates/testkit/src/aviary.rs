//! The aviary binary in system tests. Its path comes from the caller
//! (`env!("CARGO_BIN_EXE_aviary")` in the CLI's tests), so this crate does not build it.
//!
//! Coordinators serve mutual TLS, as in production: [`Pki`] is one CA per test binary (written
//! by the binary's own `aviary certs`), [`start_coordinator`] serves with its certificate,
//! [`cli`] calls as its admin, and agents connect with [`Pki::agent_args`]. A test of the
//! plaintext path passes `--insecure` itself (then no TLS flag is added). [`LocalCluster`] is one
//! `aviary agent --local` cluster with its sample app.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::manifests::LocalCanary;
use crate::net::{curl_json, free_port};
use crate::netns::Host;
use crate::process::{Log, Process, announced};

/// The user every [`cli`] call is (role admin).
pub const ADMIN: &str = "admin";

/// The test binary's certificates: a CA, the coordinator's serving certificate (localhost and
/// 127.0.0.1), [`ADMIN`]'s client certificate, and an agent certificate per cluster on demand.
pub struct Pki {
    dir: PathBuf,
    bin: String,
    agents: Mutex<BTreeSet<String>>,
}

static PKI: OnceLock<Pki> = OnceLock::new();

/// Runs `aviary certs ARGS` (panics with its stderr when it fails).
fn certs(bin: &str, args: &[&str]) {
    let o = Command::new(bin)
        .arg("certs")
        .args(args)
        .output()
        .expect("run aviary certs");
    assert!(
        o.status.success(),
        "aviary certs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Pki {
    /// The test binary's PKI (written on first use, into a directory kept until the process
    /// exits).
    pub fn get(bin: &str) -> &'static Pki {
        PKI.get_or_init(|| {
            let dir = pki_dir();
            let d = dir.to_str().expect("a UTF-8 temporary path");
            certs(bin, &["init", d]);
            certs(bin, &["issue", d, "--user", ADMIN, "--role", "admin"]);
            Pki {
                dir,
                bin: bin.to_string(),
                agents: Mutex::new(BTreeSet::new()),
            }
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `--tls-cert --tls-key --client-ca` of a coordinator.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.file("server.pem"),
            "--tls-key".into(),
            self.file("server-key.pem"),
            "--client-ca".into(),
            self.file("ca.pem"),
        ]
    }

    /// `AVIARY_CA`, `AVIARY_CERT`, `AVIARY_KEY` of a client (issued for `user` with `role` the
    /// first time; [`ADMIN`] exists already).
    pub fn client_env(&self, user: &str, role: &str) -> [(&'static str, String); 3] {
        self.issue(user, &["--user", user, "--role", role]);
        [
            ("AVIARY_CA", self.file("ca.pem")),
            ("AVIARY_CERT", self.file(&format!("{user}.pem"))),
            ("AVIARY_KEY", self.file(&format!("{user}-key.pem"))),
        ]
    }

    /// Issues the agent certificate of `cluster` (`CLUSTER.pem`, `CLUSTER-key.pem` in
    /// [`Pki::dir`]) the first time; returns the directory.
    pub fn agent(&self, cluster: &str) -> &Path {
        self.issue(cluster, &["--agent", cluster]);
        &self.dir
    }

    /// `--ca --cert --key` of the agent of `cluster` (its certificate issued the first time).
    pub fn agent_args(&self, cluster: &str) -> Vec<String> {
        self.agent(cluster);
        vec![
            "--ca".into(),
            self.file("ca.pem"),
            "--cert".into(),
            self.file(&format!("{cluster}.pem")),
            "--key".into(),
            self.file(&format!("{cluster}-key.pem")),
        ]
    }

    /// Re-issues the coordinator's serving certificate for `hosts` as well as localhost and
    /// 127.0.0.1 (coordinators on the hosts of a network-namespace lab).
    pub fn serve_hosts(&self, hosts: &[Host]) {
        let d = self.dir.to_string_lossy().into_owned();
        let mut args = vec![
            "issue",
            d.as_str(),
            "--server",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ];
        for h in hosts {
            args.extend(["--host", h.ip.as_str()]);
        }
        certs(&self.bin, &args);
    }

    /// Issues `name`'s certificate once (agents and users share the file namespace).
    fn issue(&self, name: &str, how: &[&str]) {
        let mut done = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if name == ADMIN || done.contains(name) {
            return;
        }
        let d = self.dir.to_string_lossy().into_owned();
        let mut args = vec!["issue", d.as_str()];
        args.extend_from_slice(how);
        certs(&self.bin, &args);
        done.insert(name.to_string());
    }
}

/// `aviary coordinator --listen IP:0 ARGS` on `host` (its address, in its namespace; most
/// tests pass [`Host::loopback`]) with mutual TLS from [`Pki`] (plaintext when ARGS has
/// `--insecure`): the process, its stderr in `log` (echoed where `echo` says, prefixed with
/// `name`), and its URL (`https://ADDR`, or `http://ADDR` when insecure).
pub fn start_coordinator(
    host: &Host,
    bin: &str,
    args: &[&str],
    name: &str,
    log: &Log,
    echo: fn(&str) -> bool,
) -> (Process, String) {
    let insecure = args.contains(&"--insecure");
    let tls = if insecure {
        Vec::new()
    } else {
        Pki::get(bin).server_args()
    };
    let mut child = host
        .command(bin)
        .args(["coordinator", "--listen", &format!("{}:0", host.ip)])
        .args(&tls)
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
    let scheme = if insecure { "http" } else { "https" };
    (Process::new(child), format!("{scheme}://{addr}"))
}

/// [`start_coordinator`] named `coordinator`, its log kept only where `echo` says.
pub fn coordinator(bin: &str, args: &[&str], echo: fn(&str) -> bool) -> (Process, String) {
    start_coordinator(&Host::loopback(), bin, args, "coordinator", &Log::default(), echo)
}

/// Runs `aviary ARGS` against the coordinator at `url` as `user` (`$USER`; the free-text actor)
/// with [`ADMIN`]'s certificate for an `https://` URL: (exit code, stdout, stderr).
pub fn cli(bin: &str, url: &str, user: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("AVIARY_COORDINATOR", url).env("USER", user);
    if url.starts_with("https://") {
        cmd.envs(Pki::get(bin).client_env(ADMIN, "admin"));
    }
    let o = cmd.output().expect("run aviary");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One cluster of the local platform in a system test: `ROOT/NAME/config` (holding the
/// `podinfo.yaml` a [`LocalCanary`] wrote), `ROOT/NAME/state`, the service's port and the
/// agent's admin port.
pub struct LocalCluster {
    pub name: String,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub port: u16,
    pub admin: u16,
}

impl LocalCluster {
    /// Writes the manifests of `canary(port)` (the service's port, free) for cluster `name`.
    pub fn new(root: &Path, name: &str, canary: impl FnOnce(u16) -> LocalCanary) -> Self {
        let dir = root.join(name).join("config");
        std::fs::create_dir_all(&dir).expect("create the config dir");
        let port = free_port();
        std::fs::write(dir.join("podinfo.yaml"), canary(port).yaml()).expect("write podinfo.yaml");
        Self {
            name: name.to_string(),
            state: root.join(name).join("state"),
            dir,
            port,
            admin: free_port(),
        }
    }

    /// `aviary agent --local` on the cluster: its dirs, the admin port, analyses at most once a
    /// second, `--cluster NAME`; the caller adds the rest.
    pub fn command(&self, bin: &str) -> Command {
        local_agent(bin, &self.dir, &self.state, self.admin, &self.name)
    }

    /// Starts [`LocalCluster::command`] with `args`: stdout dropped, stderr echoed where `echo`
    /// says (prefixed with the cluster's name), 5 s to stop on SIGTERM when dropped.
    pub fn start(&self, bin: &str, args: &[&str], echo: fn(&str) -> bool) -> Process {
        self.spawn(self.command(bin).args(args), echo)
    }

    /// Spawns `cmd` (a [`LocalCluster::command`] the caller extended) as [`LocalCluster::start`] does.
    pub fn spawn(&self, cmd: &mut Command, echo: fn(&str) -> bool) -> Process {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aviary agent --local");
        Log::default().capture(
            self.name.clone(),
            child.stderr.take().expect("piped stderr"),
            echo,
        );
        Process::new(child).graceful(Duration::from_secs(5))
    }

    /// The agent's view of test/podinfo (`GET /canaries`' first item; `Null` when unreachable).
    pub fn canary(&self) -> serde_json::Value {
        curl_json(&format!("http://127.0.0.1:{}/canaries", self.admin))["items"][0].clone()
    }

    /// The canary's phase (empty when unknown).
    pub fn phase(&self) -> String {
        self.canary()["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Waits until `n` canaries report `Initialized` to the coordinator (`aviary canaries`
/// through `cli`).
pub fn wait_initialized(cli: impl Fn(&[&str]) -> (i32, String, String), n: usize, limit: Duration) {
    crate::wait::wait_until(&format!("{n} initialized canaries"), limit, || {
        let (code, out, _) = cli(&["canaries", "-o", "json"]);
        code == 0 && out.matches("\"Initialized\"").count() == n
    });
}

/// Writes `yaml` to `DIR/rollout.yaml` and runs `aviary rollout apply -f` on it through `cli`;
/// panics when that fails.
pub fn apply(cli: impl Fn(&[&str]) -> (i32, String, String), dir: &Path, yaml: &str) {
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, yaml).expect("write rollout.yaml");
    let path = file.to_str().expect("a UTF-8 path");
    let (code, out, err) = cli(&["rollout", "apply", "-f", path]);
    assert_eq!(code, 0, "aviary rollout apply: {out}{err}");
}

/// A new directory for a test binary's certificates (`aviary-pki-*` in the temporary
/// directory), kept when the test ends: processes started with them may outlive the test's
/// handles.
pub fn pki_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("aviary-pki-")
        .tempdir()
        .expect("a temporary directory")
        .keep()
}

/// `aviary agent --local DIR` of `cluster`: its state in `state`, the admin API on
/// `admin_port`, analyses at most once a second; the caller adds the rest.
pub fn local_agent(bin: &str, dir: &Path, state: &Path, admin_port: u16, cluster: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "--local"])
        .arg(dir)
        .arg("--state-dir")
        .arg(state)
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--min-analysis-interval", "1s", "--cluster", cluster]);
    cmd
}
