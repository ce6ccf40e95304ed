//! Response bodies the proxy sends downstream: streamed from upstream (optionally compressed on
//! the way), or small and in memory.
//!
//! Owns `ProxyBody` and what it keeps alive until the last byte is sent: the activity guard (so
//! the idle timer never fires mid-stream), the server's in-flight guard (least_conn and p2c count
//! a request until its response ends) and middleware permits (in_flight_limit). Never buffers an
//! upstream body: frames pass through one by one, trailers included (gRPC's status travels in
//! them; compression queues them after its tail); the `buffering` middleware collects a body —
//! data only — before it becomes a `ProxyBody`.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::upstream::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::compress::CompressBody;
use super::conn::BusyGuard;
use crate::balance::InFlight;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a response body is made of.
#[derive(Debug)]
pub enum BodyKind {
    Upstream(UpstreamBody),
    Compressed(Box<CompressBody<UpstreamBody>>),
    Full(Option<Bytes>),
}

/// A downstream response body plus the guards that must live as long as it is being sent.
pub struct ProxyBody {
    pub kind: BodyKind,
    guard: Option<BusyGuard>,
    server: Option<InFlight>,
    held: Vec<Box<dyn Any + Send + Sync>>,
    /// Called once when the body ends: with its trailers, or `None` (no trailers, or dropped
    /// before the end). The log phase of gRPC responses, whose status is in the trailers.
    on_end: Option<OnEnd>,
}

/// See `ProxyBody::on_end`.
pub type OnEnd = Box<dyn FnOnce(Option<&http::HeaderMap>) + Send + Sync>;

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ProxyBody {
    fn of(kind: BodyKind) -> Self {
        ProxyBody {
            kind,
            guard: None,
            server: None,
            held: Vec::new(),
            on_end: None,
        }
    }

    /// Calls `f` once when the body ends, with its trailers (`None`: it ended without, or was
    /// dropped before its end).
    pub fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    fn ended(&mut self, trailers: Option<&http::HeaderMap>) {
        if let Some(f) = self.on_end.take() {
            f(trailers);
        }
    }

    pub fn upstream(b: UpstreamBody) -> Self {
        ProxyBody::of(BodyKind::Upstream(b))
    }

    pub fn full(b: Bytes) -> Self {
        ProxyBody::of(BodyKind::Full(Some(b)))
    }

    pub fn empty() -> Self {
        ProxyBody::of(BodyKind::Full(None))
    }

    pub fn guarded(mut self, guard: BusyGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Keeps the server counted as busy until this body is done.
    pub fn with_server(mut self, server: Option<InFlight>) -> Self {
        self.server = server;
        self
    }

    /// Keeps `items` (limiter permits) alive until this body is done.
    pub fn holding(mut self, items: Vec<Box<dyn Any + Send + Sync>>) -> Self {
        if self.held.is_empty() {
            self.held = items;
        } else {
            self.held.extend(items);
        }
        self
    }

    /// Moves the guards of `other` onto this body (when a body is replaced by another).
    pub fn take_guards_from(mut self, other: &mut ProxyBody) -> Self {
        self.guard = self.guard.take().or_else(|| other.guard.take());
        self.server = self.server.take().or_else(|| other.server.take());
        self.held.append(&mut other.held);
        self.on_end = self.on_end.take().or_else(|| other.on_end.take());
        self
    }

    /// Turns a streamed upstream body into a compressed one; other bodies stay as they are.
    pub fn compress(mut self, enc: super::compress::Encoding) -> Self {
        let kind = std::mem::replace(&mut self.kind, BodyKind::Full(None));
        self.kind = match kind {
            BodyKind::Upstream(b) => BodyKind::Compressed(Box::new(CompressBody::new(b, enc))),
            other => other,
        };
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.ended(None);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.kind {
            BodyKind::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            BodyKind::Compressed(b) => Pin::new(b.as_mut()).poll_frame(cx),
            BodyKind::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        };
        if self.on_end.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(f))) if f.is_trailers() => self.ended(f.trailers_ref()),
                Poll::Ready(None | Some(Err(_))) => self.ended(None),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Upstream(b) => b.is_end_stream(),
            BodyKind::Compressed(b) => b.is_end_stream(),
            BodyKind::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Upstream(b) => b.size_hint(),
            BodyKind::Compressed(b) => b.size_hint(),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
