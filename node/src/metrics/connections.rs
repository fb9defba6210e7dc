//! Counting the connections of the gRPC port: each accepted stream carries
//! a guard that takes it off `replog_node_connections` when it closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP stream counted as open until dropped.
pub struct Counted {
    inner: TcpStream,
    open: IntGauge,
}

impl Counted {
    /// Counts `inner` as open until the result is dropped (the caller
    /// counts it as accepted).
    pub fn new(inner: TcpStream, open: IntGauge) -> Counted {
        open.inc();
        Counted { inner, open }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// `incoming` with every stream counted (and Nagle off, as the server
/// would set it on a listener it bound itself).
pub fn counted(
    incoming: impl Stream<Item = io::Result<TcpStream>>,
    open: IntGauge,
    accepted: IntCounter,
) -> impl Stream<Item = io::Result<Counted>> {
    incoming.map(move |r| {
        r.map(|s| {
            let _ = s.set_nodelay(true);
            accepted.inc();
            open.inc();
            Counted { inner: s, open: open.clone() }
        })
    })
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_connections_that_open_and_close_then_the_gauge_follows() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, accepted) = (IntGauge::new("o", "o").unwrap(), IntCounter::new("a", "a").unwrap());
        let mut s =
            Box::pin(counted(tokio_stream::wrappers::TcpListenerStream::new(listener), open.clone(), accepted.clone()));
        let c1 = TcpStream::connect(addr).await.unwrap();
        let a1 = s.next().await.unwrap().unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let a2 = s.next().await.unwrap().unwrap();
        assert_eq!((open.get(), accepted.get()), (2, 2));
        drop((c1, a1));
        assert_eq!(open.get(), 1);
        drop(a2);
        assert_eq!((open.get(), accepted.get()), (0, 2));
    }
}
