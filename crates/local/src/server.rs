//! Serving HTTP/1.1 and h2c (prior knowledge) on one port, with graceful shutdown bounded by a
//! grace period. Two ways: [`Connections::run`] on the caller's runtime (the sample app), and
//! [`serve_on_workers`] on dedicated single-threaded runtimes (the router's hot path).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Binds `addr`, naming `what` in the error (the user sees it).
pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        what: what.to_owned(),
        addr,
        source,
    })
}

/// The connections of one runtime; `make_service` makes the service of each new connection.
pub(crate) struct Connections<M> {
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    tasks: JoinSet<()>,
    make_service: M,
}

impl<M, S, B> Connections<M>
where
    M: Fn() -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new(make_service: M) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No per-request header-read timer: it costs a timer registration per request on the
        // hot path, and the router only serves loopback clients.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        Connections {
            builder,
            graceful: GracefulShutdown::new(),
            tasks: JoinSet::new(),
            make_service,
        }
    }

    fn serve(&mut self, stream: TcpStream) {
        // Small request/response exchanges: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), (self.make_service)())
            .into_owned();
        let conn = self.graceful.watch(conn);
        self.tasks.spawn(async move {
            if let Err(error) = conn.await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
        while self.tasks.try_join_next().is_some() {}
    }

    /// Serves `listener` on the current runtime until `shutdown` fires.
    pub(crate) async fn run(mut self, listener: TcpListener, shutdown: CancellationToken, grace: Duration) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => self.serve(stream),
                    Err(error) => accept_failed(error).await,
                }
            }
        }
        drop(listener);
        self.shutdown(grace).await;
    }

    /// Lets open connections finish their in-flight requests for at most `grace`, then drops the
    /// rest.
    async fn shutdown(mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("connections still open after the grace period; closing them");
        }
        self.tasks.shutdown().await;
    }
}

async fn accept_failed(error: std::io::Error) {
    // EMFILE and friends: back off instead of spinning.
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Accepts on the current runtime and hands connections round robin to `workers` threads, each
/// running a single-threaded runtime, like nginx workers: a connection is then served start to
/// end on one thread, with no cross-thread wake-ups on the hot path. `make_worker` runs on each
/// worker thread and returns that worker's connection handler, so per-worker state (a connection
/// pool) stays local. The handler gets the shutdown token: it should finish the request in flight
/// and close; connections still open after the grace period are dropped. The returned task ends
/// when every worker has shut down.
pub(crate) fn serve_on_workers<W, H, F>(
    name: &str,
    listener: TcpListener,
    workers: usize,
    make_worker: W,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<JoinHandle<()>>
where
    W: Fn() -> H + Send + Sync + 'static,
    H: Fn(TcpStream, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let make_worker = Arc::new(make_worker);
    let mut queues = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers.max(1) {
        let (queue, mut incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, done_rx) = oneshot::channel::<()>();
        let make_worker = Arc::clone(&make_worker);
        let shutdown = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("{name}: cannot start a worker runtime"), e))?;
        std::thread::Builder::new()
            .name(format!("aviary-router-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let handle = make_worker();
                    let mut connections = JoinSet::new();
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => break,
                            stream = incoming.recv() => match stream.map(TcpStream::from_std) {
                                Some(Ok(stream)) => {
                                    let _ = stream.set_nodelay(true);
                                    connections.spawn(handle(stream, shutdown.clone()));
                                    while connections.try_join_next().is_some() {}
                                }
                                Some(Err(error)) => tracing::warn!(%error, "cannot adopt a connection"),
                                None => break,
                            }
                        }
                    }
                    let drained = async { while connections.join_next().await.is_some() {} };
                    if tokio::time::timeout(grace, drained).await.is_err() {
                        tracing::debug!("connections still open after the grace period; closing them");
                    }
                    connections.shutdown().await;
                });
                let _ = done.send(());
            })
            .map_err(|e| Error::io(format!("{name}: cannot start a worker thread"), e))?;
        queues.push(queue);
        finished.push(done_rx);
    }
    Ok(tokio::spawn(async move {
        let mut next = 0;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                    Ok(stream) => {
                        let _ = queues[next].send(stream);
                        next = (next + 1) % queues.len();
                    }
                    Err(error) => accept_failed(error).await,
                }
            }
        }
        drop(listener);
        drop(queues);
        for done in finished {
            let _ = done.await;
        }
    }))
}
