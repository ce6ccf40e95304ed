//! Response bodies the proxy sends downstream: streamed from upstream, or small and in memory.
//!
//! Owns `ProxyBody` and the activity guard it carries, so a connection counts as busy until the
//! last byte of the response body was handed to hyper (the idle timer must not fire mid-stream).
//! Never buffers an upstream body: frames pass through one by one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::BusyGuard;

#[derive(Debug)]
pub enum ProxyBody {
    Upstream(Incoming),
    Full(Option<Bytes>),
    /// Any body, plus the guard marking the connection busy while it is sent.
    Guarded(Box<ProxyBody>, BusyGuard),
}

impl ProxyBody {
    pub fn full(b: Bytes) -> Self {
        ProxyBody::Full(Some(b))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn guarded(self, guard: BusyGuard) -> Self {
        ProxyBody::Guarded(Box::new(self), guard)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ProxyBody::Guarded(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            ProxyBody::Guarded(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Guarded(inner, _) => inner.size_hint(),
        }
    }
}
