//! [`Cluster`]: the test control plane with the upstream test CRDs installed and the stand-ins
//! running, plus what tests do with it: namespaces, identities (admin, ServiceAccounts),
//! CRD installs and untyped objects.
//!
//! Tests in one binary share one cluster ([`Cluster::shared`]) and isolate themselves by
//! namespace ([`Cluster::namespace`]); a test that kills the API server or changes cluster-wide
//! objects starts its own ([`Cluster::start`]). The stand-ins run on the cluster's own runtime
//! thread, so a shared cluster outlives the tests' runtimes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::Value;

use crate::control_plane::{ControlPlane, Identity, kubeconfig};
use crate::error::{Error, Result};
use crate::objects::Objects;
use crate::standins::StandIns;

/// How long a new namespace may take to get its `default` ServiceAccount (pods need it).
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running test cluster. Dropping it stops everything it started.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    standins: StandIns,
    plane: Arc<ControlPlane>,
}

impl Cluster {
    /// The cluster shared by the tests of this test binary, started on first use.
    pub async fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        if let Some(c) = SHARED.get() {
            return c;
        }
        tokio::task::spawn_blocking(|| {
            SHARED.get_or_init(|| {
                Cluster::start_blocking(None).unwrap_or_else(|e| panic!("the shared test cluster: {e}"))
            })
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// A cluster of its own in a temporary directory.
    pub async fn start() -> Result<Cluster> {
        Self::spawn(None).await
    }

    /// A cluster of its own whose files (admin.kubeconfig, pki, logs) are kept in `dir`.
    pub async fn start_in(dir: &Path) -> Result<Cluster> {
        Self::spawn(Some(dir.to_path_buf())).await
    }

    async fn spawn(dir: Option<PathBuf>) -> Result<Cluster> {
        tokio::task::spawn_blocking(move || Cluster::start_blocking(dir.as_deref()))
            .await
            .map_err(|e| Error::Setup(format!("starting the test cluster: {e}")))?
    }

    fn start_blocking(dir: Option<&Path>) -> Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aviary-test-cluster")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the test cluster's runtime", e))?;
        let (plane, standins) = runtime.block_on(async {
            let plane = ControlPlane::start(dir).await?;
            let client = kubeconfig::client(&plane.admin_kubeconfig()).await?;
            let crds = crate::crds::upstream(&plane.binaries().crds_dir())?;
            crate::crds::install(&client, &crds).await?;
            Ok::<_, Error>((plane, StandIns::spawn(client)))
        })?;
        Ok(Cluster {
            runtime: Some(runtime),
            standins,
            plane: Arc::new(plane),
        })
    }

    /// The processes: URL, kubeconfigs, certificates, killing and restarting the API server.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.plane.admin_kubeconfig()
    }

    /// A new admin client (clients are bound to the runtime that uses them: make one per test).
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.admin_kubeconfig()).await
    }

    /// Untyped objects as admin.
    pub async fn objects(&self) -> Result<Objects> {
        Ok(Objects::new(self.client().await?))
    }

    /// The kubelet, Knative and gateway stand-ins.
    pub fn standins(&self) -> &StandIns {
        &self.standins
    }

    /// Creates namespace `{prefix}-{random}` and waits for its `default` ServiceAccount.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let name = format!(
            "{}-{:05x}",
            prefix.to_lowercase(),
            rand::random::<u32>() & 0xf_ffff
        );
        let client = self.client().await?;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::kube(format!("creating namespace {name}"), e))?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = tokio::time::Instant::now() + NAMESPACE_TIMEOUT;
        while sas.get_opt("default").await.ok().flatten().is_none() {
            if tokio::time::Instant::now() > deadline {
                self.plane.check_running()?;
                return Err(Error::Timeout {
                    what: format!("the default ServiceAccount of namespace {name}"),
                    timeout: NAMESPACE_TIMEOUT,
                    last: "; is kube-controller-manager's serviceaccount-controller running?".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(name)
    }

    /// Creates ServiceAccount `ns/name` if needed, asks for a token (TokenRequest, one hour) and
    /// writes a kubeconfig at `path` that authenticates with it. RBAC is the caller's business.
    pub async fn service_account_kubeconfig(&self, ns: &str, name: &str, path: &Path) -> Result<()> {
        let client = self.client().await?;
        let api: Api<ServiceAccount> = Api::namespaced(client, ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating ServiceAccount {ns}/{name}"), e)),
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::kube(format!("requesting a token for ServiceAccount {ns}/{name}"), e))?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Setup(format!("the TokenRequest for {ns}/{name} has no status")))?;
        self.plane.write_kubeconfig(path, &Identity::Token(token), ns)
    }

    /// Installs every traffic provider's CRDs ([`crate::crds::providers`]).
    pub async fn install_provider_crds(&self) -> Result<()> {
        let dir = self.plane.binaries().dir().join("provider-crds");
        self.install_crds(&crate::crds::providers(&dir)?).await
    }

    /// Installs CRDs (those that exist are kept) and waits until they are established.
    pub async fn install_crds(&self, crds: &[Value]) -> Result<()> {
        crate::crds::install(&self.client().await?, crds).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stand-ins first (without blocking: this may run inside a test's runtime), then the
        // processes when `plane` drops.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
