//! The pooled upstream HTTP/1.1 client and the classification of its failures.
//!
//! Owns client construction (keep-alive pool, connect timeout, TCP_NODELAY), the request body
//! type sent upstream (`UpBody`: the client's streamed body, or bytes in memory that a retry can
//! send again), and turning client errors into `ProxyError`s: connect timeouts are 504, refused
//! or reset connections 502, each marked with whether the request may have reached the server.
//! Must never: log or return the request body, or retry on its own beyond hyper's retry of
//! requests that never left on a pooled connection that had just closed (retries are the
//! `retry` middleware's decision, in `proxy`).

use std::error::Error as _;
use std::io;
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

/// A request body on its way to a server.
#[derive(Debug)]
pub enum UpBody {
    /// Streamed from the client as it arrives.
    Incoming(Incoming),
    /// Streamed from the client, its first bytes copied for a recording.
    Tapped(Incoming, Arc<BodyTap>),
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
            UpBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            UpBody::Tapped(b, tap) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
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
            UpBody::Incoming(b) => b.is_end_stream(),
            UpBody::Tapped(b, tap) => {
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
            UpBody::Incoming(b) | UpBody::Tapped(b, _) => b.size_hint(),
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

/// Maps a client error to the error the downstream sees.
pub fn classify(err: &hyper_util::client::legacy::Error, server: &str) -> Failure {
    Failure {
        error: classify_error(err, server),
        never_sent: err.is_connect(),
    }
}

fn classify_error(err: &hyper_util::client::legacy::Error, server: &str) -> ProxyError {
    let mut timed_out = false;
    let mut reason = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = cur {
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            timed_out |= ioe.kind() == io::ErrorKind::TimedOut;
        }
        reason = e.to_string();
        cur = e.source();
    }
    if reason.is_empty() {
        reason = err.to_string();
    }
    if err.is_connect() && timed_out {
        return ProxyError::UpstreamTimeout {
            server: server.to_string(),
            phase: "connect",
        };
    }
    let reason = if err.is_connect() {
        format!("connect: {reason}")
    } else {
        reason
    };
    ProxyError::Upstream {
        server: server.to_string(),
        reason,
    }
}
