//! etcd on loopback for tests and benchmarks: one process per member on ephemeral ports, data in
//! a temporary directory, every process killed when the [`LocalEtcd`] is dropped. With
//! [`EtcdTls`] the client port serves TLS and asks for client certificates
//! (`--client-cert-auth`); health is then read from a plain metrics port. [`LocalEtcd::start_on`]
//! puts each member on a [`Host`] of a network-namespace lab instead of loopback.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::netns::Host;

/// A local etcd cluster (one or more members).
pub struct LocalEtcd {
    bin: PathBuf,
    dir: tempfile::TempDir,
    token: String,
    tls: Option<EtcdTls>,
    members: Vec<Member>,
}

/// TLS of etcd's client port: its serving certificate (for 127.0.0.1) and the CA client
/// certificates must chain to (`--client-cert-auth --trusted-ca-file`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

struct Member {
    name: String,
    host: Host,
    client: u16,
    peer: u16,
    /// Plain HTTP `/health` and `/metrics` (`--listen-metrics-urls`).
    metrics: u16,
    child: Option<Child>,
}

impl LocalEtcd {
    /// The etcd binary: `$AVIARY_ETCD`, else `etcd` on the PATH (Debian's `etcd-server` package
    /// installs `/usr/bin/etcd`).
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("AVIARY_ETCD") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    }

    /// The binary; without one, prints why the caller skips (and panics under `CI=true`, where a
    /// missing etcd is an error).
    pub fn binary_or_skip(what: &str) -> Option<PathBuf> {
        let found = Self::binary();
        if found.is_none() {
            let msg = format!(
                "{what}: etcd not found (install the Debian package etcd-server, or set AVIARY_ETCD)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}; CI=true: etcd is required");
            }
            eprintln!("SKIPPED {msg}");
        }
        found
    }

    /// [`LocalEtcd::start`] off the async runtime (for `#[tokio::test]`s), or `None` after the
    /// skip notice of [`LocalEtcd::binary_or_skip`].
    pub async fn start_for(test: &str, members: usize) -> Option<Self> {
        let bin = Self::binary_or_skip(test)?;
        Some(
            tokio::task::spawn_blocking(move || Self::start(&bin, members))
                .await
                .expect("the etcd start task")
                .expect("start etcd"),
        )
    }

    /// Starts `members` members on free loopback ports and waits (up to 30 s) until the cluster
    /// answers `/health`.
    pub fn start(bin: &Path, members: usize) -> io::Result<Self> {
        Self::start_with(bin, &vec![Host::loopback(); members.max(1)], None)
    }

    /// One member on each of `hosts` (serving on the host's address, run in its namespace).
    pub fn start_on(bin: &Path, hosts: &[Host]) -> io::Result<Self> {
        Self::start_with(bin, hosts, None)
    }

    /// [`LocalEtcd::start`] with TLS and client-certificate authentication on the client port
    /// (then [`LocalEtcd::endpoints`] are `https://`).
    pub fn start_tls(bin: &Path, members: usize, tls: EtcdTls) -> io::Result<Self> {
        Self::start_with(bin, &vec![Host::loopback(); members.max(1)], Some(tls))
    }

    fn start_with(bin: &Path, hosts: &[Host], tls: Option<EtcdTls>) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("aviary-etcd-").tempdir()?;
        let mut list = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            list.push(Member {
                name: format!("m{i}"),
                host: host.clone(),
                client: free_port(),
                peer: free_port(),
                metrics: free_port(),
                child: None,
            });
        }
        let mut etcd = Self {
            bin: bin.to_path_buf(),
            dir,
            token: format!("aviary-{}", rand::random::<u32>()),
            tls,
            members: list,
        };
        for i in 0..etcd.members.len() {
            etcd.spawn(i)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..etcd.members.len() {
            if !etcd.wait_healthy(i, deadline.saturating_duration_since(Instant::now())) {
                return Err(io::Error::other(format!(
                    "etcd member {i} did not become healthy in 30 s; its log: {}",
                    etcd.log_tail(i)
                )));
            }
        }
        Ok(etcd)
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.host.ip, m.peer))
            .collect();
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))?;
        let client = format!("{}://{}:{}", self.scheme(), m.host.ip, m.client);
        let peer = format!("http://{}:{}", m.host.ip, m.peer);
        let mut cmd = m.host.command(&self.bin);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.etcd", m.name)))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args([
                "--listen-metrics-urls",
                &format!("http://{}:{}", m.host.ip, m.metrics),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Client URLs of every member (`http://127.0.0.1:PORT`, `https://` with TLS).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}:{}", self.scheme(), m.host.ip, m.client))
            .collect()
    }

    /// The client URLs, comma-separated (`--etcd`).
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Where member `i` runs.
    pub fn host(&self, i: usize) -> &Host {
        &self.members[i].host
    }

    /// Member count.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data and ports.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// Whether member `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i]
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until member `i` answers `/health` with `true` (it has a raft leader).
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.healthy(i) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether member `i` answers `/health` with `true` now.
    pub fn healthy(&self, i: usize) -> bool {
        self.http_on(
            &self.members[i].host.ip,
            self.members[i].metrics,
            "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .is_ok_and(|b| b.contains("\"health\":\"true\""))
    }

    /// The member that leads etcd's raft now (each member's `/v3/maintenance/status`); panics
    /// when none does.
    pub fn raft_leader(&self) -> usize {
        let status = "POST /v3/maintenance/status HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        (0..self.members.len())
            .find(|&i| {
                let Ok(reply) = self.http(i, status) else {
                    return false;
                };
                let Some((_, body)) = reply.split_once("\r\n\r\n") else {
                    return false;
                };
                let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                !v["leader"].is_null() && v["leader"] == v["header"]["member_id"]
            })
            .unwrap_or_else(|| panic!("no member of the local etcd leads its raft"))
    }

    /// Revokes lease `id` on the cluster (what a leader paused past its TTL finds): etcd's
    /// `/v3/lease/revoke` on the first member that answers. Async, so the runtime of the code
    /// under test keeps running meanwhile.
    pub async fn revoke_lease(&self, id: i64) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = format!("{{\"ID\":{id}}}");
        let request = format!(
            "POST /v3/lease/revoke HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        for m in &self.members {
            let Ok(mut s) = tokio::net::TcpStream::connect((m.host.ip.as_str(), m.client)).await else {
                continue;
            };
            let mut reply = String::new();
            if s.write_all(request.as_bytes()).await.is_ok()
                && s.read_to_string(&mut reply).await.is_ok()
                && reply.split_whitespace().nth(1) == Some("200")
            {
                return;
            }
        }
        panic!("no etcd member revoked lease {id}");
    }

    /// One HTTP/1.0 exchange with member `i`'s client port: the whole reply.
    fn http(&self, i: usize, request: &str) -> io::Result<String> {
        self.http_on(&self.members[i].host.ip, self.members[i].client, request)
    }

    /// One HTTP/1.0 exchange with `ip:port`: the whole reply.
    fn http_on(&self, ip: &str, port: u16, request: &str) -> io::Result<String> {
        let addr = std::net::SocketAddr::new(ip.parse().map_err(io::Error::other)?, port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(request.as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let path = self.dir.path().join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
