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
    use bytes::Bytes;

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
