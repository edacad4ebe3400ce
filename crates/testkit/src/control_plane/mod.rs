//! The real Kubernetes control plane on loopback: etcd, kube-apiserver (secure port on
//! 127.0.0.1, client-certificate and ServiceAccount-token authentication, Node+RBAC
//! authorization, the default admission plugins, a ServiceAccount issuer) and
//! kube-controller-manager with the controllers aviary's tests rely on. Every program runs
//! supervised (see `supervised`), so nothing outlives the test process.
//!
//! Files under the control plane's directory: `admin.kubeconfig`, `pki/`, `etcd/`, `logs/*.log`.

pub mod binaries;
pub mod kubeconfig;
pub(crate) mod pki;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use parking::Mutex;

use crate::supervised::Supervised;
pub use binaries::Binaries;
pub use kubeconfig::Identity;
pub use pki::Credential;
use pki::Pki;

use crate::error::{Error, Result};

/// The controllers kube-controller-manager runs: the Deployment → ReplicaSet → Pod chain, the
/// DaemonSet → Pod one (with its ControllerRevisions),
/// cascading deletion, namespace deletion, Service endpoints, and the ServiceAccount machinery
/// the `ServiceAccount` admission plugin needs (a `default` ServiceAccount in every namespace).
pub const CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
];

/// The audit policy: metadata of every request made by a ServiceAccount (the identity tests give
/// the agent), so a test can count the agent's 403s as the API server saw them.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"system:serviceaccounts\"]
- level: None
";

/// How long the API server may take to answer `/readyz` (2 cores shared with cargo).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

mod parking {
    /// A std mutex that ignores poisoning (a panicking test must not wedge the teardown).
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(std::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// A running etcd + kube-apiserver + kube-controller-manager. Dropping it kills them all.
pub struct ControlPlane {
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    bins: Binaries,
    pki: Pki,
    // Chosen again when another process takes it between `free_port` and the bind.
    port: AtomicU16,
    etcd_port: u16,
    audit_policy: PathBuf,
    admin: Credential,
    // Field order is teardown order: the controller manager, the API server, then etcd.
    kcm: Mutex<Option<Supervised>>,
    apiserver: Mutex<Option<Supervised>>,
    etcd: Mutex<Option<Supervised>>,
    _janitor: Option<Supervised>,
}

/// A free TCP port on 127.0.0.1 (the OS picks; released before the program binds it).
pub fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::io("finding a free port on 127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

impl ControlPlane {
    /// Starts the control plane in `dir` (a fresh temporary directory when `None`) and waits until
    /// the API server is ready.
    pub async fn start(dir: Option<&Path>) -> Result<Self> {
        let bins = Binaries::locate()?;
        let (dir, tmp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("aviary-control-plane-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a temporary directory", e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        for sub in ["logs", "etcd"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let pki = Pki::generate(&dir.join("pki"))?;
        let admin = pki.client("aviary-admin", Some("system:masters"))?;
        let janitor = tmp.as_ref().map(|t| Supervised::janitor(t.path())).transpose()?;
        let etcd = Self::start_etcd(&bins, &dir)?;
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)
            .map_err(|e| Error::io(format!("writing {}", audit_policy.display()), e))?;
        let plane = Self {
            _tmp: tmp,
            bins,
            port: AtomicU16::new(free_port()?),
            etcd_port: etcd.0,
            audit_policy,
            admin,
            kcm: Mutex::new(None),
            apiserver: Mutex::new(None),
            etcd: Mutex::new(Some(etcd.1)),
            _janitor: janitor,
            dir,
            pki,
        };
        plane.start_apiserver_first().await?;
        plane.start_controller_manager()?;
        plane.check_running()?;
        Ok(plane)
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port.load(Ordering::Relaxed))
    }

    /// etcd on free ports (chosen again if another process takes one first). Returns its port.
    fn start_etcd(bins: &Binaries, dir: &Path) -> Result<(u16, Supervised)> {
        for _ in 0..5 {
            let (port, peer) = (free_port()?, free_port()?);
            let _ = std::fs::remove_dir_all(dir.join("etcd"));
            let mut etcd = bins.spawn("etcd", &etcd_args(dir, port, peer), dir)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok((port, etcd));
                }
                if etcd.lost_port_race() {
                    break;
                }
                etcd.check_running()?;
                if std::time::Instant::now() > deadline {
                    return Err(Error::Setup(format!(
                        "etcd did not listen on 127.0.0.1:{port} within 30 s"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(Error::Setup(
            "etcd: five free ports in a row were taken before it could bind them".into(),
        ))
    }

    /// The first start: a port taken by another process meanwhile means another port.
    async fn start_apiserver_first(&self) -> Result<()> {
        for _ in 0..5 {
            kubeconfig::write(
                &self.admin_kubeconfig(),
                &self.url(),
                Some(&self.pki.ca_pem),
                &Identity::Certificate(self.admin.clone()),
                "default",
            )?;
            match self.start_apiserver().await {
                Err(e) if self.apiserver.lock().as_mut().is_some_and(|p| p.lost_port_race()) => {
                    tracing::debug!("kube-apiserver lost its port: {e}");
                    self.apiserver.lock().take();
                    self.port.store(free_port()?, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        Err(Error::Setup(
            "kube-apiserver: five free ports in a row were taken before it could bind them".into(),
        ))
    }

    /// The control plane's directory (kubeconfigs, pki, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) the API server's serving certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// `DIR/admin.kubeconfig`: a `system:masters` client certificate.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The programs this control plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// A new client certificate for `user` (in `group`, if given), signed by the cluster CA.
    pub fn client_certificate(&self, user: &str, group: Option<&str>) -> Result<Credential> {
        self.pki.client(user, group)
    }

    /// Writes a kubeconfig for this API server as `identity`.
    pub fn write_kubeconfig(&self, path: &Path, identity: &Identity, namespace: &str) -> Result<()> {
        kubeconfig::write(path, &self.url(), Some(&self.pki.ca_pem), identity, namespace)
    }

    /// Kills kube-apiserver (SIGKILL, like a crashed or OOM-killed server).
    pub fn kill_apiserver(&self) {
        if let Some(p) = self.apiserver.lock().take() {
            p.kill();
        }
    }

    /// Starts kube-apiserver (again) on the same port with the same storage and waits until ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        let mut args = apiserver_args(&self.pki, self.etcd_port, self.port.load(Ordering::Relaxed));
        args.push(format!("--audit-policy-file={}", self.audit_policy.display()));
        args.push(format!(
            "--audit-log-path={}",
            self.dir.join("logs/audit.log").display()
        ));
        // Never rotated: a rotation (100 MB by default, reached by a 1,000-canary benchmark)
        // would move what a reader measuring by file offsets is counting.
        args.push("--audit-log-maxsize=0".into());
        let p = self.bins.spawn("kube-apiserver", &args, &self.dir)?;
        *self.apiserver.lock() = Some(p);
        self.wait_ready().await
    }

    /// The audit events of requests made by `user` (e.g. `system:serviceaccount:NS:NAME`), oldest
    /// first: `verb`, `objectRef`, `responseStatus.code`, ….
    pub fn audit_events(&self, user: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("logs/audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .collect()
    }

    /// The process id of `program` (`etcd`, `kube-apiserver` or `kube-controller-manager`) while
    /// it runs, for `/proc` measurements.
    pub fn pid(&self, program: &str) -> Option<u32> {
        let slot = match program {
            "etcd" => &self.etcd,
            "kube-apiserver" => &self.apiserver,
            "kube-controller-manager" => &self.kcm,
            _ => return None,
        };
        slot.lock().as_ref().and_then(Supervised::pid)
    }

    /// The API server's audit log (JSON lines; every request of a ServiceAccount).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// An error naming the program when one of them has exited.
    pub fn check_running(&self) -> Result<()> {
        for slot in [&self.etcd, &self.apiserver, &self.kcm] {
            if let Some(p) = slot.lock().as_mut() {
                p.check_running()?;
            }
        }
        Ok(())
    }

    fn start_controller_manager(&self) -> Result<()> {
        let kubeconfig = self.dir.join("controller-manager.kubeconfig");
        kubeconfig::write(
            &kubeconfig,
            &self.url(),
            Some(&self.pki.ca_pem),
            &Identity::Certificate(self.admin.clone()),
            "default",
        )?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            format!("--controllers={}", CONTROLLERS.join(",")),
            format!("--service-account-private-key-file={}", self.pki.path("sa.key")),
            format!("--root-ca-file={}", self.pki.path("ca.crt")),
            "--use-service-account-credentials=false".into(),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ];
        let p = self.bins.spawn("kube-controller-manager", &args, &self.dir)?;
        *self.kcm.lock() = Some(p);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = kubeconfig::client(&self.admin_kubeconfig()).await?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Setup(e.to_string()))?;
            let last = match client.request_text(req).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                Ok(text) => text,
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("kube-apiserver at {} answering /readyz", self.url()),
                    timeout: READY_TIMEOUT,
                    last: format!("; last answer: {last}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn etcd_args(dir: &Path, port: u16, peer: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        // Test data: durability across a power cut is not needed, and fsync costs seconds on CI disks.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(pki: &Pki, etcd_port: u16, port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        // Loopback is not a valid address for the `kubernetes` Endpoints: no endpoint reconciler.
        "--advertise-address=127.0.0.1".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--cert-dir={}", pki.path("")),
        format!("--tls-cert-file={}", pki.path("apiserver.crt")),
        format!("--tls-private-key-file={}", pki.path("apiserver.key")),
        format!("--client-ca-file={}", pki.path("ca.crt")),
        format!("--service-account-issuer=https://127.0.0.1:{port}"),
        format!("--service-account-key-file={}", pki.path("sa.pub")),
        format!("--service-account-signing-key-file={}", pki.path("sa.key")),
        "--authorization-mode=Node,RBAC".into(),
        // On top of the default plugins (NamespaceLifecycle, ServiceAccount, ResourceQuota, …).
        "--enable-admission-plugins=NodeRestriction".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ]
}
