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

/// What a response body is made of.
#[derive(Debug)]
pub enum BodyKind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// A downstream response body plus the guard marking the connection busy while it is sent.
#[derive(Debug)]
pub struct ProxyBody {
    pub kind: BodyKind,
    guard: Option<BusyGuard>,
}

impl ProxyBody {
    pub fn upstream(b: Incoming) -> Self {
        ProxyBody {
            kind: BodyKind::Upstream(b),
            guard: None,
        }
    }

    pub fn full(b: Bytes) -> Self {
        ProxyBody {
            kind: BodyKind::Full(Some(b)),
            guard: None,
        }
    }

    pub fn empty() -> Self {
        ProxyBody {
            kind: BodyKind::Full(None),
            guard: None,
        }
    }

    pub fn guarded(mut self, guard: BusyGuard) -> Self {
        self.guard = Some(guard);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.kind {
            BodyKind::Upstream(b) => Pin::new(b).poll_frame(cx),
            BodyKind::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Upstream(b) => b.is_end_stream(),
            BodyKind::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Upstream(b) => b.size_hint(),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
