//! The listeners' accept loops. A connection is accepted, counted
//! ([`crate::metrics::connections`]) and, on a TLS listener, handshaken in
//! a task of its own with a deadline, so that a client that connects and
//! sends nothing holds up no one else. What the handshake found out goes
//! into every request of the connection as [`ConnInfo`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::debug;

use super::tls::{Acceptor, common_name};
use crate::metrics::connections::Counted;

/// Longest a TLS handshake may take.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the gRPC server to take them.
const BACKLOG: usize = 128;

/// What a request knows of its connection (in its extensions).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The common name of the client certificate's subject, when the client
    /// showed one that the listener's CA verified.
    pub cert_cn: Option<Arc<str>>,
}

enum Io {
    Plain(Counted),
    Tls(Box<tokio_rustls::server::TlsStream<Counted>>),
}

/// One accepted connection, plain or TLS.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    _slot: Option<Slot>,
}

/// Open connections per client address, for `max_connections_per_ip`.
#[derive(Clone, Default)]
pub struct PerIp {
    limit: u32,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One connection counted against its address until dropped.
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("per-ip lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    /// At most `limit` connections per address (0: no limit).
    pub fn new(limit: u32) -> PerIp {
        PerIp { limit, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, unless it has `limit`.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<Option<Slot>, ()> {
        if self.limit == 0 {
            return Ok(None);
        }
        let mut open = self.open.lock().expect("per-ip lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return Err(());
        }
        *n += 1;
        Ok(Some(Slot { ip, open: self.open.clone() }))
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Accepts on `listener` until the returned stream is dropped; with an
/// acceptor, only connections that complete a TLS handshake come out.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Acceptor>>,
    per_ip: PerIp,
    metrics: &crate::metrics::Metrics,
) -> ReceiverStream<io::Result<Conn>> {
    let (open, accepted, refused) =
        (metrics.connections.clone(), metrics.connections_accepted.clone(), metrics.connections_refused.clone());
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors, usually: let some close.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            accepted.inc();
            // Over the cap: closed before any byte is read or any TLS work done.
            let Ok(slot) = per_ip.take(remote.ip()) else {
                refused.inc();
                debug!(%remote, "connection refused: its address has max-connections-per-ip open");
                continue;
            };
            let counted = Counted::new(stream, open.clone());
            let info = ConnInfo { remote: Some(remote), cert_cn: None };
            match &tls {
                None => {
                    if tx.send(Ok(Conn { io: Io::Plain(counted), info, _slot: slot })).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(acceptor.config());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(counted)).await {
                            Ok(Ok(s)) => {
                                let cert_cn = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| common_name(c))
                                    .map(Arc::from);
                                let info = ConnInfo { cert_cn, ..info };
                                let conn = Conn { io: Io::Tls(Box::new(s)), info, _slot: slot };
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%remote, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}
