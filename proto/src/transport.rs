//! Unary calls in fewer HTTP/2 frames.
//!
//! tonic sends a unary request as its HEADERS, one DATA frame with the
//! message, and then an empty DATA frame that only ends the stream: its
//! request body learns that it has ended only when polled once more. hyper
//! writes each frame as it comes, so a call cost three `writev`s on the
//! sender and as many wake-ups on the receiver, and a produced batch made
//! four such calls between the nodes (two Raft appends to each follower).
//! [`Unary`] wraps a channel so that each request body looks one frame
//! ahead: the message's DATA frame then carries END_STREAM itself.
//!
//! With that, the workspace's copy of hyper (third_party/hyper/PATCHED.md)
//! hands the ended body to HTTP/2 together with the HEADERS, so a unary
//! call leaves in a single write: upstream hyper waits for send capacity
//! that a new stream gets only once its HEADERS are written, and so wrote
//! the DATA frame in a second write.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// A request body that polls its inner body one frame ahead, so that it
/// can tell with its last frame that the stream ends
/// ([`Body::is_end_stream`]), and hyper can set END_STREAM on that frame.
pub struct EndStreamEarly<B: Body> {
    inner: B,
    ahead: Option<Result<Frame<B::Data>, B::Error>>,
    ended: bool,
}

impl<B: Body> EndStreamEarly<B> {
    pub fn new(inner: B) -> Self {
        EndStreamEarly { inner, ahead: None, ended: false }
    }
}

// Nothing is pinned in place: the inner body is Unpin, and a frame held
// ahead is only ever moved out whole.
impl<B: Body + Unpin> Unpin for EndStreamEarly<B> {}

impl<B: Body + Unpin> Body for EndStreamEarly<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = match this.ahead.take() {
            Some(f) => f,
            None if this.ended => return Poll::Ready(None),
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(f)) => f,
            },
        };
        // The next frame, or the end, if either is known now. (If not, the
        // inner body has registered the waker and the caller polls again.)
        if frame.is_ok() && !this.ended {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(next)) => this.ahead = Some(next),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // A frame held ahead is no longer in the inner body's hint.
        if self.ahead.is_some() { SizeHint::default() } else { self.inner.size_hint() }
    }
}

/// A gRPC channel whose request bodies end with their last DATA frame
/// ([`EndStreamEarly`]). Use it where a `tonic::transport::Channel` goes.
#[derive(Debug, Clone)]
pub struct Unary<S>(pub S);

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for Unary<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.call(req.map(|b| tonic::body::Body::new(EndStreamEarly::new(b))))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    /// Each data frame of a body whose frames are all ready, and whether the
    /// body said it had ended right after it.
    fn frames<B: Body<Data = Bytes> + Unpin>(mut b: B) -> Vec<(Bytes, bool)>
    where
        B::Error: std::fmt::Debug,
    {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(f)) = Pin::new(&mut b).poll_frame(&mut cx) {
            out.push((f.unwrap().into_data().unwrap_or_default(), b.is_end_stream()));
        }
        out
    }

    /// A body of ready data frames that learns it has ended only when
    /// polled past its last one, as tonic's request body does.
    struct Late(std::collections::VecDeque<Bytes>);

    impl Body for Late {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|d| Ok(Frame::data(d))))
        }
    }

    /// Frames as scripted: data, pending (not ready yet) or an error.
    struct Scripted(std::collections::VecDeque<Option<Result<&'static str, &'static str>>>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(r)) => Poll::Ready(Some(r.map(|d| Frame::data(Bytes::from_static(d.as_bytes()))))),
            }
        }
    }

    #[test]
    fn a_frame_not_ready_yet_and_an_error_pass_through_in_order() {
        let mut b = EndStreamEarly::new(Scripted(
            [Some(Ok("a")), None, Some(Ok("b")), Some(Err("broken")), Some(Ok("never"))].into_iter().collect(),
        ));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || match Pin::new(&mut b).poll_frame(&mut cx) {
            Poll::Pending => "pending".to_string(),
            Poll::Ready(None) => "end".to_string(),
            Poll::Ready(Some(Ok(f))) => String::from_utf8(f.into_data().unwrap().to_vec()).unwrap(),
            Poll::Ready(Some(Err(e))) => format!("error {e}"),
        };
        // "a" goes at once though the look-ahead found nothing ready; "b"
        // comes when polled again, and the error after it, not lost.
        let got: Vec<String> = (0..4).map(|_| poll()).collect();
        assert_eq!(got, ["a", "b", "error broken", "never"]);
        assert_eq!(poll(), "end");
        assert!(b.is_end_stream());
    }

    fn late(parts: &[&'static str]) -> Late {
        Late(parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect())
    }

    /// A TCP connection that counts the writes made to it.
    struct Counted {
        io: tokio::net::TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl Counted {
        fn count<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
            if let Poll::Ready(Ok(_)) = &r {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            r
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.io).poll_write(cx, buf);
            self.count(r)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            self.count(r)
        }
        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// Connects a channel to `addr` over a [`Counted`] connection.
    #[derive(Clone)]
    struct Connect {
        addr: std::net::SocketAddr,
        writes: Arc<AtomicUsize>,
    }

    impl tower_service::Service<http::Uri> for Connect {
        type Response = TokioIo<Counted>;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<Counted>>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Uri) -> Self::Future {
            let (addr, writes) = (self.addr, self.writes.clone());
            Box::pin(async move {
                let io = tokio::net::TcpStream::connect(addr).await?;
                io.set_nodelay(true)?;
                Ok(TokioIo::new(Counted { io, writes }))
            })
        }
    }

    /// Answers every call on the first connection to `listener`, once it
    /// has read the request, with status OK and a `ProduceResponse` whose
    /// `record_count` is how many bytes the request body held.
    /// `max_streams`: how many calls the server lets the client have open
    /// at once.
    async fn answer_calls(listener: tokio::net::TcpListener, max_streams: u32) {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut conn =
            h2::server::Builder::new().max_concurrent_streams(max_streams).handshake(tcp).await.expect("handshake");
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            tokio::spawn(async move {
                let mut body = req.into_body();
                let mut received = 0;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("request body");
                    received += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let msg = crate::pb::ProduceResponse { record_count: received as u32, ..Default::default() };
                let mut framed = vec![0u8];
                framed.extend_from_slice(&(prost::Message::encoded_len(&msg) as u32).to_be_bytes());
                framed.extend_from_slice(&prost::Message::encode_to_vec(&msg));
                let head = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
                let mut send = respond.send_response(head, false).expect("response headers");
                send.send_data(Bytes::from(framed), false).expect("response message");
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                send.send_trailers(trailers).expect("trailers");
            });
        }
    }

    /// Every produce from the SDK and every Raft append between nodes is
    /// a unary call: its HEADERS and its one DATA frame leave in a single
    /// write, so the receiver wakes once for it (the HTTP/2 client's
    /// patch, third_party/hyper/PATCHED.md, with [`EndStreamEarly`]).
    #[tokio::test]
    async fn a_unary_call_leaves_in_one_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(answer_calls(listener, 100));
        let writes = Arc::new(AtomicUsize::new(0));
        let channel = tonic::transport::Endpoint::from_static("http://replog.test")
            .connect_with_connector(Connect { addr, writes: writes.clone() })
            .await
            .expect("connect");
        let mut client = crate::pb::replog_client::ReplogClient::new(Unary(channel));
        let call = || crate::pb::ProduceRequest { topic: "orders".into(), ..Default::default() };
        // The first calls also settle the connection (its preface and
        // settings, and their acknowledgements).
        for _ in 0..3 {
            client.clone().produce(call()).await.expect("warm-up call");
        }
        const CALLS: usize = 20;
        let before = writes.load(Ordering::SeqCst);
        for _ in 0..CALLS {
            client.produce(call()).await.expect("call");
        }
        let per_call = (writes.load(Ordering::SeqCst) - before) as f64 / CALLS as f64;
        assert_eq!(per_call, 1.0, "writes per unary call: HEADERS and DATA must share one");
    }

    /// A body handed to HTTP/2 before its stream may send is held, not
    /// lost: calls beyond the peer's limit of open streams wait for a
    /// stream to close, and bodies larger than the peer's flow-control
    /// window (64 KiB at first) go as the peer reads them.
    #[tokio::test]
    async fn calls_past_the_stream_limit_and_the_window_all_arrive_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(answer_calls(listener, 1));
        let channel = tonic::transport::Endpoint::from_static("http://replog.test")
            .connect_with_connector(Connect { addr, writes: Arc::default() })
            .await
            .expect("connect");
        let client = crate::pb::replog_client::ReplogClient::new(Unary(channel));
        // One call first: until the client has the server's settings, it
        // does not know the limit, and the server refuses the streams past it.
        client.clone().produce(crate::pb::ProduceRequest::default()).await.expect("first call");
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..6u8 {
            let mut client = client.clone();
            let req = crate::pb::ProduceRequest {
                batch: Bytes::from(vec![i; (1 << 20) + usize::from(i)]),
                ..Default::default()
            };
            // The gRPC frame: a 5-byte prefix, then the message.
            let sent = 5 + prost::Message::encoded_len(&req);
            calls.spawn(
                async move { (sent, client.produce(req).await.expect("call").into_inner().record_count as usize) },
            );
        }
        let answers = tokio::time::timeout(std::time::Duration::from_secs(30), calls.join_all())
            .await
            .expect("every call answered");
        assert_eq!(answers.len(), 6);
        for (sent, received) in answers {
            assert_eq!(received, sent, "the server received each request body whole");
        }
    }

    #[test]
    fn the_last_data_frame_tells_that_the_stream_ends() {
        // Unwrapped, the end is known only after the last frame.
        let plain = frames(late(&["one"]));
        assert_eq!(plain, vec![(Bytes::from_static(b"one"), false)]);
        let early = frames(EndStreamEarly::new(late(&["one"])));
        assert_eq!(early, vec![(Bytes::from_static(b"one"), true)]);
        let three = frames(EndStreamEarly::new(late(&["a", "b", "c"])));
        let want: Vec<(Bytes, bool)> = [("a", false), ("b", false), ("c", true)]
            .iter()
            .map(|(d, e)| (Bytes::from_static(d.as_bytes()), *e))
            .collect();
        assert_eq!(three, want, "every frame, in order, and only the last one ends the stream");
        assert!(frames(EndStreamEarly::new(late(&[]))).is_empty());
    }
}
