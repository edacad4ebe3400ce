//! The dashboard's listener: the coordinator's own accept loop (connection cap, handshake
//! timeouts, TLS with the gRPC listener's certificates, the peer's certificate identity) served
//! by axum, each request carrying the connection's [`PeerInfo`] as `ConnectInfo`.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::security::conn::{Conn, PeerInfo};

/// Accepted (and, with TLS, handshaken) connections.
pub(crate) struct Accepted {
    conns: ReceiverStream<io::Result<Conn>>,
    local: SocketAddr,
}

impl Listener for Accepted {
    type Io = Conn;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Conn, PeerInfo) {
        loop {
            match self.conns.next().await {
                Some(Ok(c)) => {
                    let peer = c.peer().clone();
                    return (c, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "dashboard connection dropped"),
                // The accept loop stopped (shutdown): the server's graceful shutdown ends it.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            remote: Some(self.local),
            ..PeerInfo::default()
        })
    }
}

impl Connected<IncomingStream<'_, Accepted>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, Accepted>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Serves `app` on `conns` until `stop` (open event streams end on `stop` too).
pub(crate) async fn serve(
    conns: ReceiverStream<io::Result<Conn>>,
    local: SocketAddr,
    app: axum::Router,
    stop: CancellationToken,
) {
    let listener = Accepted { conns, local };
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<PeerInfo>())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the dashboard stopped");
    }
}
