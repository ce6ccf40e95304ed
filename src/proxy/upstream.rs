//! The pooled upstream HTTP/1.1 client and the classification of its failures.
//!
//! Owns client construction (keep-alive pool, connect timeout, TCP_NODELAY), the request body
//! type sent upstream (`UpBody`: the client's streamed body, or bytes in memory that a retry can
//! send again), and turning client errors into `ProxyError`s: connect timeouts are 504, refused
//! or reset connections 502, each marked with whether the request may have reached the server.
//! A streamed client body marks a `ClientFault` when the client's side of it fails, so the proxy
//! can tell a client's broken upload from a server's failure.
//! Must never: log or return the request body, or retry on its own beyond hyper's retry of
//! requests that never left on a pooled connection that had just closed (retries are the
//! `retry` middleware's decision, in `proxy`).

use std::error::Error as _;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::replay::recorder::BodyTap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ProxyError;

pub type UpstreamClient = Client<HttpConnector, UpBody>;

/// Set when the client's side of a streamed body failed (a malformed chunk, a body shorter than
/// announced, the client gone): the exchange failed because of the client, not the server.
#[derive(Debug, Clone, Default)]
pub struct ClientFault(Arc<AtomicBool>);

impl ClientFault {
    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the client's body failed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A request body on its way to a server.
#[derive(Debug)]
pub enum UpBody {
    /// Streamed from the client as it arrives; a failure of the client's stream sets the fault.
    Incoming(Incoming, ClientFault),
    /// Streamed from the client, its first bytes copied for a recording.
    Tapped(Incoming, Arc<BodyTap>, ClientFault),
    /// Held in memory (empty bodies, buffered or replayable ones, auth and error-page requests).
    Full(Option<Bytes>),
}

impl UpBody {
    pub fn empty() -> UpBody {
        UpBody::Full(None)
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Incoming(b, fault) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    fault.set();
                }
                polled
            }
            UpBody::Tapped(b, tap, fault) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => fault.set(),
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            tap.data(d);
                        }
                        // The client may stop polling once the length is reached.
                        if b.is_end_stream() {
                            tap.end();
                        }
                    }
                    Poll::Ready(None) => tap.end(),
                    _ => {}
                }
                polled
            }
            UpBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Incoming(b, _) => b.is_end_stream(),
            UpBody::Tapped(b, tap, _) => {
                let end = b.is_end_stream();
                if end {
                    tap.end();
                }
                end
            }
            UpBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Incoming(b, _) | UpBody::Tapped(b, _, _) => b.size_hint(),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A failed upstream exchange: the error the client sees, and whether the request certainly
/// never reached the server (a connect failure), which makes any method safe to retry.
#[derive(Debug)]
pub struct Failure {
    pub error: ProxyError,
    pub never_sent: bool,
}

/// Builds the shared client.
pub fn client(connect_timeout: Duration, pool_idle_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle_timeout)
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Maps a client error to the error the downstream sees, keeping its cause chain.
pub fn classify(err: hyper_util::client::legacy::Error, server: &str) -> Failure {
    let connect = err.is_connect();
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = cur {
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            timed_out |= ioe.kind() == io::ErrorKind::TimedOut;
        }
        cur = e.source();
    }
    let error = if connect && timed_out {
        ProxyError::UpstreamTimeout {
            server: server.to_string(),
            phase: "connect",
        }
    } else {
        ProxyError::Upstream {
            server: server.to_string(),
            what: if connect { "connect" } else { "exchange" },
            source: Some(Box::new(err)),
        }
    };
    Failure {
        error,
        never_sent: connect,
    }
}
