//! The pooled upstream HTTP/1.1 client and the classification of its failures.
//!
//! Owns client construction (keep-alive pool, connect timeout, TCP_NODELAY) and turning client
//! errors into `ProxyError`s: connect timeouts are 504, refused or reset connections 502.
//! Must never: log or return the request body, or retry on its own beyond hyper's retry of
//! requests that never left on a pooled connection that had just closed.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ProxyError;

pub type UpstreamClient = Client<HttpConnector, Incoming>;

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
pub fn classify(err: &hyper_util::client::legacy::Error, server: &str) -> ProxyError {
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
