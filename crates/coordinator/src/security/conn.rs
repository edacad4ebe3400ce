//! The coordinator's accept loop. Each connection takes one of `max_connections` permits (a
//! connection over the cap is closed at once), gets `handshake_timeout` for its TLS handshake
//! and again for the first bytes of its HTTP/2 preface (a client that connects and stays
//! silent is dropped), and carries a [`PeerInfo`] (address, TLS, certificate identity) into
//! every request's extensions. HTTP/2 keep-alive pings are the server builder's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::identity::CertIdentity;
use super::tls::{Protocols, ServerTls};

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// For the TLS handshake, and again for the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// HTTP/2 pings on idle connections, and how long a ping may go unanswered.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// The peer of a connection, in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    pub tls: bool,
    /// The verified client certificate's identity (`None`: no certificate).
    pub identity: Option<CertIdentity>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection.
pub struct Conn {
    io: Io,
    info: PeerInfo,
    _permit: OwnedSemaphorePermit,
    /// Bytes of the HTTP/2 preface still expected, and until when.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
}

/// The HTTP/2 client preface's length.
const PREFACE: usize = 24;

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Some((left, deadline)) = &mut this.preface {
            match &r {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len() - before;
                    if n == 0 || n >= *left {
                        this.preface = None;
                    } else {
                        *left -= n;
                    }
                }
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface in time",
                        )));
                    }
                }
                Poll::Ready(Err(_)) => {}
            }
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Conn {
    /// The peer of this connection.
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }
}

/// Accepts connections until `stop`: the stream to serve. With `tls`, each connection is a
/// TLS one offering the ALPN protocols of `protocols`.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    tls: Option<(Arc<ServerTls>, Protocols)>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let (sock, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(%remote, refused, max = limits.max_connections, "connection limit reached: closing new connections");
                }
                drop(sock);
                continue;
            };
            let _ = sock.set_nodelay(true);
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Some(conn) = handshake(sock, remote, permit, limits, tls).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    sock: TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    limits: ConnLimits,
    tls: Option<(Arc<ServerTls>, Protocols)>,
) -> Option<Conn> {
    let (io, info) = match tls {
        None => (
            Io::Plain(sock),
            PeerInfo {
                remote: Some(remote),
                tls: false,
                identity: None,
            },
        ),
        Some((tls, protocols)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config_for(protocols));
            let s = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(sock)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(target: "aviary::audit", %remote, error = %e, "TLS handshake refused");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return None;
                }
            };
            let identity = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| CertIdentity::from_der(c.as_ref()));
            (
                Io::Tls(Box::new(s)),
                PeerInfo {
                    remote: Some(remote),
                    tls: true,
                    identity,
                },
            )
        }
    };
    Some(Conn {
        io,
        info,
        _permit: permit,
        preface: Some((PREFACE, Box::pin(tokio::time::sleep(limits.handshake_timeout)))),
    })
}
