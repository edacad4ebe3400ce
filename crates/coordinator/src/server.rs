//! Starting and stopping a coordinator: the gRPC server with both services, health and
//! reflection, the leadership follower, graceful shutdown.
//!
//! Health: the overall status (`""`) is SERVING while the process serves, on every replica.
//! `aviary.v1.Fleet` and `aviary.v1.AgentLink` are SERVING on the leader only, once it has
//! loaded its state from the store (NOT_SERVING while it loads): a follower
//! answers rollout reads from the store but refuses writes, watches, the live cluster and
//! canary lists and agent streams (UNAVAILABLE with the leader's address), so a load balancer checking `aviary.v1.Fleet` sends clients straight to the
//! leader, and `grpcurl … grpc.health.v1.Health/Check` shows who leads. (Readiness probes of a
//! StatefulSet belong on the overall status: no pod would be ready during an election.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aviary_proto::v1::agent_link_server::AgentLinkServer;
use aviary_proto::v1::fleet_server::FleetServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::agent_link::{AgentLinkHandler, AgentLinkService, Sessions};
use crate::api::FleetService;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::leader::{AlwaysLeader, LeaderState, Leadership};
use crate::metrics::{CoordinatorMetrics, CountCalls, Sources};
use crate::rollouts::Rollouts;
use crate::security::conn::incoming;
use crate::security::tls::{Protocols, ServerTlsFiles, watch_files};
use crate::security::{Auth, ConnLimits, ServerTls};
use crate::store::{MemoryStore, Store};
use crate::web::{DashboardConfig, WebState};

/// Fully-qualified service names (for health checks).
pub const FLEET_SERVICE: &str = "aviary.v1.Fleet";
pub const AGENT_LINK_SERVICE: &str = "aviary.v1.AgentLink";

/// How to run a coordinator.
pub struct CoordinatorConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The address other replicas, clients and agents reach this one at (defaults to the
    /// listen address; sent in Welcome and in `aviary-leader`).
    pub advertise: Option<String>,
    /// Seconds between heartbeats on agent streams (3 silent periods close a stream).
    pub heartbeat: Duration,
    pub store: Arc<dyn Store>,
    pub leadership: Arc<dyn Leadership>,
    /// Watch FleetRollout objects in a management cluster's namespace (None: gRPC only).
    pub management: Option<crate::management::ManagementCluster>,
    /// Mutual TLS: the serving certificate and the CA of client certificates (`None`: plaintext,
    /// every caller the anonymous admin; the binary only allows that with `--insecure`).
    pub tls: Option<ServerTlsFiles>,
    /// The bearer tokens (sha256, subject, role), with TLS only.
    pub token_file: Option<PathBuf>,
    /// Connection cap, handshake and preface timeouts, HTTP/2 keep-alive.
    pub limits: ConnLimits,
    /// How long a cluster's registration outlives its agent's last contact (then it is
    /// forgotten, as by DeregisterCluster; its agent registers again when it comes back).
    pub cluster_ttl: Duration,
}

impl CoordinatorConfig {
    /// One replica with the in-memory store (tests, `aviary demo`, `aviary coordinator`).
    pub fn in_memory(listen: SocketAddr) -> Self {
        Self {
            listen,
            advertise: None,
            heartbeat: Duration::from_secs(5),
            store: Arc::new(MemoryStore::new()),
            leadership: Arc::new(AlwaysLeader::new()),
            management: None,
            tls: None,
            token_file: None,
            limits: ConnLimits::default(),
            cluster_ttl: crate::limits::CLUSTER_TTL,
        }
    }
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    /// The serving certificates (None: plaintext, `--insecure`); the dashboard serves them too.
    tls: Option<Arc<ServerTls>>,
    /// The check every call makes; the dashboard's calls make it too.
    auth: Arc<Auth>,
    limits: ConnLimits,
    shutdown: CancellationToken,
    /// Cancelled once the gRPC server has ended.
    stopped: CancellationToken,
    sessions: Arc<Sessions>,
    leadership: Arc<dyn Leadership>,
    server: JoinHandle<Result<()>>,
    metrics: Arc<CoordinatorMetrics>,
    sources: Arc<Sources>,
}

impl Coordinator {
    /// Binds the listen address and serves in the background.
    pub async fn start(config: CoordinatorConfig) -> Result<Self> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| Error::Bind {
            addr: config.listen.to_string(),
            source: e,
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Bind {
            addr: config.listen.to_string(),
            source: e,
        })?;
        let tls = config.tls.clone().map(ServerTls::load).transpose()?;
        let auth = Arc::new(match &tls {
            Some(_) => Auth::secure(config.token_file.clone())?,
            None => Auth::insecure(),
        });
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        config.leadership.start(&advertise);
        let shutdown = CancellationToken::new();
        let fleet = Arc::new(Fleet::default());
        let sessions = Arc::new(Sessions::default());
        let rollouts = Rollouts::new(
            config.store.clone(),
            config.leadership.clone(),
            fleet.clone(),
            sessions.clone(),
            shutdown.clone(),
        );
        // A leader loads its state before it serves, so no request sees an empty coordinator.
        let leading = config.leadership.check().is_ok();
        if leading {
            rollouts.load().await?;
        }
        tokio::spawn(rollouts.clone().lead());
        if let Some(m) = config.management.clone() {
            tokio::spawn(crate::management::run(rollouts.clone(), m, shutdown.clone()));
        }
        tokio::spawn(expire(rollouts.clone(), config.cluster_ttl, shutdown.clone()));

        let link = Arc::new(AgentLinkService {
            rollouts: rollouts.clone(),
            fleet,
            sessions: sessions.clone(),
            store: config.store.clone(),
            heartbeat: config.heartbeat,
            advertise,
            auth: auth.clone(),
        });
        let metrics = Arc::new(CoordinatorMetrics::new());
        let sources = Arc::new(Sources {
            rollouts: rollouts.clone(),
            sessions: sessions.clone(),
            leadership: config.leadership.clone(),
        });
        let api = FleetService {
            rollouts: rollouts.clone(),
            auth: auth.clone(),
            watches: Arc::new(tokio::sync::Semaphore::new(crate::limits::MAX_WATCHES)),
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, leading).await;
        tokio::spawn(follow_leadership(
            config.leadership.watch(),
            rollouts.loaded(),
            health.clone(),
            sessions.clone(),
            shutdown.clone(),
        ));
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aviary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Store(format!("reflection: {e}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aviary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| Error::Store(format!("reflection: {e}")))?;

        tokio::spawn(watch_files(tls.clone(), auth.clone(), shutdown.clone()));
        let incoming = incoming(
            listener,
            config.limits,
            tls.clone().map(|t| (t, Protocols::Grpc)),
            shutdown.clone(),
        );
        let limits = config.limits;
        let stop = shutdown.clone();
        let count_calls = CountCalls(metrics.clone());
        // Cancelled when the gRPC server ends, however it ends (`/healthz` says so).
        let stopped = CancellationToken::new();
        let stopped_guard = stopped.clone().drop_guard();
        let server = tokio::spawn(async move {
            let _stopped = stopped_guard;
            Server::builder()
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(limits.keepalive_interval))
                .http2_keepalive_timeout(Some(limits.keepalive_timeout))
                .layer(count_calls)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(FleetServer::new(api).max_decoding_message_size(16 * 1024 * 1024))
                .add_service(
                    AgentLinkServer::new(AgentLinkHandler(link)).max_decoding_message_size(16 * 1024 * 1024),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    stop.cancelled().await;
                    health.set_not_serving::<FleetServer<FleetService>>().await;
                })
                .await
                .map_err(Error::from)
        });
        tracing::info!(%addr, "coordinator listening");
        Ok(Self {
            addr,
            tls,
            auth,
            limits,
            shutdown,
            stopped,
            sessions,
            leadership: config.leadership,
            server,
            metrics,
            sources,
        })
    }

    /// Serves `/metrics` (Prometheus text; the metrics are listed in docs/operations.md) and
    /// `/healthz` over plain HTTP on `addr` until the coordinator shuts down. Returns the bound
    /// address. `/healthz` answers 200 while the gRPC server serves and 503 once it stopped or
    /// is shutting down: what the gRPC health check's overall status says, for Kubernetes
    /// probes, which cannot speak TLS to the gRPC port.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let bind_error = |e| Error::Bind {
            addr: addr.to_string(),
            source: e,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let (metrics, sources) = (self.metrics.clone(), self.sources.clone());
        let (stopped, shutdown) = (self.stopped.clone(), self.shutdown.clone());
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(&sources),
                    )
                }),
            )
            .route(
                "/healthz",
                axum::routing::get(move || async move {
                    if stopped.is_cancelled() || shutdown.is_cancelled() {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                    } else {
                        (http::StatusCode::OK, "ok\n")
                    }
                }),
            );
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
        tracing::info!(addr = %bound, "metrics endpoint listening");
        Ok(bound)
    }

    /// Serves the web dashboard (the page and its API, see docs/operations.md "Web
    /// dashboard") on `addr` until the coordinator shuts down, with the gRPC API's TLS and
    /// roles: HTTPS with the same serving certificate, callers identified by a client
    /// certificate signed by the same CA or a bearer token of the same token file (a header or
    /// the page's sign-in cookie), every call checked and audited by the same code. Plain HTTP
    /// only when the coordinator itself is plaintext (`--insecure`). Returns the bound address.
    pub async fn serve_dashboard(&self, addr: SocketAddr, config: DashboardConfig) -> Result<SocketAddr> {
        let bind_error = |e| Error::Bind {
            addr: addr.to_string(),
            source: e,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let app = crate::web::router(WebState {
            api: Arc::new(FleetService {
                rollouts: self.sources.rollouts.clone(),
                auth: self.auth.clone(),
                watches: Arc::new(tokio::sync::Semaphore::new(crate::limits::MAX_WATCHES)),
            }),
            auth: self.auth.clone(),
            leadership: self.leadership.clone(),
            config,
            secure: self.tls.is_some(),
            shutdown: self.shutdown.clone(),
        });
        let incoming = incoming(
            listener,
            self.limits,
            self.tls.clone().map(|t| (t, Protocols::Web)),
            self.shutdown.clone(),
        );
        let stop = self.shutdown.clone();
        tokio::spawn(crate::web::serve(incoming, bound, app, stop));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{bound}/"), "dashboard listening");
        Ok(bound)
    }

    /// `https://ADDR/` (or `http://ADDR/` without TLS): the dashboard served on `addr`.
    pub fn dashboard_url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}/")
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` (or `http://ADDR` without TLS), for clients and agents.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops gracefully: resigns leadership (a successor is elected while this replica closes
    /// its streams), closes agent streams and watches, waits up to 5 s for calls in flight.
    pub async fn shutdown(self) -> Result<()> {
        self.leadership.resign().await;
        self.shutdown.cancel();
        self.sessions.close_all();
        let mut server = self.server;
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Store(format!("server task: {e}"))),
            Err(_) => {
                server.abort();
                tracing::warn!("calls still in flight after 5 s; stopped");
                Ok(())
            }
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<()> {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        self.shutdown().await
    }
}

/// Fleet and AgentLink are SERVING on the leader only, with its state loaded (see
/// docs/operations.md, Health).
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    if serving {
        health.set_serving::<FleetServer<FleetService>>().await;
        health.set_serving::<AgentLinkServer<AgentLinkHandler>>().await;
    } else {
        health.set_not_serving::<FleetServer<FleetService>>().await;
        health
            .set_not_serving::<AgentLinkServer<AgentLinkHandler>>()
            .await;
    }
}

/// Publishes leadership in the health service (SERVING once the term's state is loaded); on
/// losing it, closes the agent streams so the agents move to the new leader. A follower has no
/// agent streams: one that was accepted just before the replica stepped down is closed by the
/// next sweep (every second).
async fn follow_leadership(
    mut rx: tokio::sync::watch::Receiver<LeaderState>,
    mut loaded: tokio::sync::watch::Receiver<Option<crate::leader::Fence>>,
    health: tonic_health::server::HealthReporter,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
) {
    let mut was_leader: Option<bool> = None;
    let mut was_serving: Option<bool> = None;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let state = rx.borrow_and_update().clone();
        let leader = matches!(state, LeaderState::Leader { .. });
        let serving = match (state, *loaded.borrow_and_update()) {
            (LeaderState::Leader { fence }, Some(term)) => fence == term,
            _ => false,
        };
        if was_serving != Some(serving) {
            set_health(&health, serving).await;
            was_serving = Some(serving);
        }
        if was_leader != Some(leader) {
            if !leader && was_leader == Some(true) {
                tracing::info!("not the leader any more: closing the agent streams");
                sessions.close_all();
            }
            was_leader = Some(leader);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = loaded.changed() => if r.is_err() { return },
            _ = sweep.tick(), if was_leader == Some(false) => sessions.close_all(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Every 30 s (more often for a short `cluster_ttl`), drops the canaries of clusters gone for
/// longer than [`CANARY_TTL`](crate::limits::CANARY_TTL) and forgets the registrations of
/// clusters gone for longer than `cluster_ttl`: a fleet view never holds what nobody reports.
async fn expire(rollouts: Arc<Rollouts>, cluster_ttl: Duration, shutdown: CancellationToken) {
    let every = (cluster_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = rollouts.fleet.expire(rollouts.clock.now(), crate::limits::CANARY_TTL);
                if n > 0 {
                    tracing::info!(canaries = n, "dropped the canaries of clusters gone for longer than the TTL");
                }
                for cluster in rollouts.expire_clusters(cluster_ttl).await {
                    tracing::info!(target: "aviary::audit", cluster = %cluster, ttl = ?cluster_ttl, "cluster registration expired");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
