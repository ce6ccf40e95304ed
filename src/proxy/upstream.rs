//! The pooled upstream client and the classification of its failures.
//!
//! Owns the client (`UpstreamClient`, by the scheme of the request URI: `http` — a per-thread
//! pool of `hyper::client::conn::http1` connections, no lock, no hop through a pool task —;
//! `https` — the same over rustls (`tokio-rustls`, ALPN `http/1.1`, SNI and verification as the
//! pool's `routing::service::Transport` says), in a pool of its own keyed by server and
//! transport; `h2c` — one multiplexed `hyper::client::conn::http2` connection per server and
//! thread, its `SendRequest` cloned for each request, made again once closed; connect and TLS
//! handshake timeouts, TCP_NODELAY), the response body (`UpstreamBody`: frames pass as they
//! come, trailers included; an HTTP/1.1 connection goes back to its pool when the body ends, so
//! an idle connection is never one still streaming and a checkout never scans busy ones), the
//! request body type sent upstream (`UpBody`: the client's streamed body, or bytes in memory
//! that a retry can send again), and turning client errors into `ProxyError`s: connect and TLS
//! handshake timeouts are 504, refused or reset connections and failed handshakes (a
//! certificate that does not verify) 502, each marked with whether the request may have reached
//! the server. A streamed client body marks a `ClientFault` when the client's side of it fails,
//! so the proxy can tell a client's broken upload from a server's failure.
//! Must never: log or return the request body, or retry on its own beyond one retry of a request
//! that a closing pooled connection handed back unsent (retries are the `retry` middleware's
//! decision, in `proxy`); hand a connection still streaming a response to another request;
//! reuse a TLS connection made with other transport settings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::recording::recorder::BodyTap;
use crate::routing::service::Transport;

use super::error::ProxyError;

/// The client's side of a streamed request body: whether it failed (a malformed chunk, a body
/// shorter than announced, the client gone: the exchange failed because of the client, not the
/// server), whether it ended, and when it last moved. The response clock starts only once the
/// body is all sent, so a slow upload is never taken for a slow server.
#[derive(Debug, Clone)]
pub struct ClientFault(Arc<BodyState>);

#[derive(Debug)]
struct BodyState {
    epoch: Instant,
    failed: AtomicBool,
    /// 0 while streaming, else ms since `epoch` + 1 when it ended.
    done_ms: AtomicU64,
    /// ms since `epoch` of the last data frame.
    last_ms: AtomicU64,
}

impl Default for ClientFault {
    fn default() -> Self {
        ClientFault(Arc::new(BodyState {
            epoch: Instant::now(),
            failed: AtomicBool::new(false),
            done_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }))
    }
}

impl ClientFault {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self) {
        self.0.failed.store(true, Ordering::Release);
    }

    fn moved(&self) {
        self.0.last_ms.store(self.now_ms(), Ordering::Release);
    }

    fn ended(&self) {
        let _ = self.0.done_ms.compare_exchange(
            0,
            self.now_ms() + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Whether the client's body failed.
    pub fn is_set(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }

    /// How long ago the body ended, or `None` while the client is still sending.
    pub fn ended_ago(&self) -> Option<Duration> {
        match self.0.done_ms.load(Ordering::Acquire) {
            0 => None,
            d => Some(Duration::from_millis(self.now_ms().saturating_sub(d - 1))),
        }
    }

    /// How long the body has not moved.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.0.last_ms.load(Ordering::Acquire)),
        )
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
    /// Bytes already read from the client (looking for a body small enough to mirror), then
    /// the rest of its stream.
    Prefixed(Option<Bytes>, Box<UpBody>),
}

impl UpBody {
    pub fn empty() -> UpBody {
        UpBody::Full(None)
    }

    /// The client side of a body still streaming from the client (`None` for bodies in memory
    /// or already complete).
    pub fn progress(&self) -> Option<ClientFault> {
        match self {
            UpBody::Incoming(b, f) | UpBody::Tapped(b, _, f) if !b.is_end_stream() => {
                Some(f.clone())
            }
            UpBody::Prefixed(_, rest) => rest.progress(),
            _ => None,
        }
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
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => fault.set(),
                    Poll::Ready(Some(Ok(_))) => {
                        fault.moved();
                        if b.is_end_stream() {
                            fault.ended();
                        }
                    }
                    Poll::Ready(None) => fault.ended(),
                    Poll::Pending => {}
                }
                polled
            }
            UpBody::Tapped(b, tap, fault) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => fault.set(),
                    Poll::Ready(Some(Ok(frame))) => {
                        fault.moved();
                        if let Some(d) = frame.data_ref() {
                            tap.data(d);
                        }
                        // The client may stop polling once the length is reached.
                        if b.is_end_stream() {
                            tap.end();
                            fault.ended();
                        }
                    }
                    Poll::Ready(None) => {
                        tap.end();
                        fault.ended();
                    }
                    Poll::Pending => {}
                }
                polled
            }
            UpBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            UpBody::Prefixed(prefix, rest) => match prefix.take().filter(|b| !b.is_empty()) {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Incoming(b, fault) => {
                let end = b.is_end_stream();
                if end {
                    fault.ended();
                }
                end
            }
            UpBody::Tapped(b, tap, fault) => {
                let end = b.is_end_stream();
                if end {
                    tap.end();
                    fault.ended();
                }
                end
            }
            UpBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            UpBody::Prefixed(prefix, rest) => {
                prefix.as_ref().is_none_or(Bytes::is_empty) && rest.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Incoming(b, _) | UpBody::Tapped(b, _, _) => b.size_hint(),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Prefixed(prefix, rest) => {
                let n = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(n));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(n));
                }
                hint
            }
        }
    }
}

/// A response body read from a server, frame by frame (data and trailers). From a pooled
/// HTTP/1.1 connection: when it ends, the connection returns to this thread's pool; dropped
/// before its end, the connection closes with it (hyper closes a connection whose response was
/// not read to the end). From an HTTP/2 connection: the stream ends with it.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    /// The connection to return once the body ends.
    conn: Option<(PoolKey, SendRequest<UpBody>)>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some((key, sender)) = self.conn.take() {
            checkin(key, sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken body: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A failed upstream exchange: the error the client sees, and whether the request certainly
/// never reached the server (a connect failure), which makes any method safe to retry.
#[derive(Debug)]
pub struct Failure {
    pub error: ProxyError,
    pub never_sent: bool,
}

/// The most a connection's read buffer grows to: the largest response head accepted, and the
/// largest single read of a body. hyper's default (~400 KiB) let every busy connection hold
/// that much under load (most of the router's memory with large responses); nginx reads
/// upstream bodies in 4–16 KiB buffers.
const READ_BUF_MAX: usize = 64 * 1024;

/// Idle connections kept per server and thread.
const MAX_IDLE_PER_SERVER: usize = 256;

/// How often an idle HTTP/2 connection is pinged (a dead server is noticed, NATs keep it).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A pooled HTTP/1.1 client on `hyper::client::conn::http1`. The pool is per thread: a proxy
/// worker (one thread, one current-thread runtime) owns its connections, so checking one out or
/// in takes no lock and no message to another task; the request goes straight to the
/// connection's dispatcher.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    connect_timeout: Duration,
    idle_timeout: Duration,
}

/// An idle connection of the pool.
struct Idle {
    sender: SendRequest<UpBody>,
    since: Instant,
}

/// One server's HTTP/2 connection on one thread. The lock is held only while a connection is
/// made, so requests that arrive during the handshake wait for it instead of each opening
/// their own connection.
type H2Slot = Arc<tokio::sync::Mutex<Option<hyper::client::conn::http2::SendRequest<UpBody>>>>;

/// Which pool an HTTP/1.1 connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PoolKey {
    /// `http://`: by server.
    Plain(Authority),
    /// `https://`: by server and transport (`Transport::id`), so connections made with other
    /// settings (CA, name, client certificate) are never shared.
    Tls(Authority, Arc<str>),
}

/// Idle connections by pool key.
type Idles<K> = RefCell<HashMap<K, Vec<Idle>>>;

thread_local! {
    /// This thread's idle cleartext HTTP/1.1 connections by server authority.
    static POOL: Idles<Authority> = RefCell::new(HashMap::new());
    /// This thread's idle HTTP/1.1-over-TLS connections by server authority and transport.
    static TLS_POOL: Idles<(Authority, Arc<str>)> = RefCell::new(HashMap::new());
    /// This thread's HTTP/2 (h2c) connections by server authority: one each, shared by every
    /// request (streams multiplex), replaced when it closes.
    static H2: RefCell<HashMap<Authority, H2Slot>> = RefCell::new(HashMap::new());
}

/// Why an exchange failed, with whether the request certainly never left.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake timed out")]
    TlsTimeout,
    /// The TLS handshake failed: the certificate did not verify, the server wants a client
    /// certificate, no common version or suite...
    #[error("TLS handshake: {0}")]
    Tls(#[source] io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request target has no authority")]
    NoAuthority,
    /// An `https://` server whose name cannot be a TLS server name and no `server_name` set.
    #[error("{0:?} is not a TLS server name (set the transport's server_name)")]
    ServerName(String),
    /// An `https://` request without the pool's transport (a bug: every such pool has one).
    #[error("no TLS transport for an https:// server")]
    NoTransport,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// A failure before any byte of the request was written: safe to retry for any method.
    pub fn is_connect(&self) -> bool {
        !matches!(self, UpstreamError::Http(_))
    }
}

/// Builds a client.
pub fn client(connect_timeout: Duration, idle_timeout: Duration) -> UpstreamClient {
    UpstreamClient {
        connect_timeout,
        idle_timeout,
    }
}

impl UpstreamClient {
    /// `request_via` for `http://` and `h2c://` targets (no TLS transport).
    pub async fn request(
        &self,
        req: Request<UpBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.request_via(req, None).await
    }

    /// Sends `req` (absolute-form URI naming the server; `Host` is set from it when missing) by
    /// the URI's scheme: `h2c` over this thread's HTTP/2 connection to the server; `https` (with
    /// `transport`) or `http` on an idle HTTP/1.1 connection of that scheme's pool, or a new
    /// one. A request that a closing idle connection handed back unsent goes once more on a
    /// fresh connection.
    pub async fn request_via(
        &self,
        mut req: Request<UpBody>,
        transport: Option<&Arc<Transport>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let authority = req
            .uri()
            .authority()
            .cloned()
            .ok_or(UpstreamError::NoAuthority)?;
        let (key, tls) = match req.uri().scheme_str() {
            Some("h2c") => return self.request_h2(req, authority).await,
            Some("https") => {
                let t = transport.ok_or(UpstreamError::NoTransport)?;
                (PoolKey::Tls(authority.clone(), t.id.clone()), Some(t))
            }
            _ => (PoolKey::Plain(authority.clone()), None),
        };
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin);
        let mut req = req;
        let mut fresh = false;
        loop {
            let mut sender = match self.checkout(&key) {
                Some(s) => s,
                None => {
                    fresh = true;
                    self.connect(&authority, tls).await?
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let upgrading = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    let (parts, inner) = resp.into_parts();
                    let mut body = UpstreamBody {
                        inner,
                        conn: (!upgrading).then_some((key, sender)),
                    };
                    if body.inner.is_end_stream() {
                        body.release();
                    }
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the pooled connection was closing. Once more, fresh.
                    Some(back) if !fresh => req = back,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// An idle connection to `authority` that can take a request now (newest first: the least
    /// likely to have been closed by the server). Pooled connections have read their last
    /// response to the end; one not ready yet is still sending an earlier request's body (a
    /// server may answer before reading it all) and stays pooled for later, never waited on.
    fn checkout(&self, key: &PoolKey) -> Option<SendRequest<UpBody>> {
        let now = Instant::now();
        match key {
            PoolKey::Plain(a) => {
                POOL.with(|p| take_idle(p.borrow_mut().get_mut(a)?, now, self.idle_timeout))
            }
            PoolKey::Tls(a, t) => TLS_POOL.with(|p| {
                let key = (a.clone(), t.clone());
                take_idle(p.borrow_mut().get_mut(&key)?, now, self.idle_timeout)
            }),
        }
    }

    /// Sends `req` over this thread's HTTP/2 connection to `authority` (made when missing or
    /// closed), as an HTTP/2 request. The `Host` the request carries becomes `:authority`;
    /// headers pass as the proxy prepared them (`te: trailers`, which gRPC servers require, is
    /// kept by `forward`).
    async fn request_h2(
        &self,
        mut req: Request<UpBody>,
        authority: Authority,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let host = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| h.to_str().ok().and_then(|h| h.parse::<Authority>().ok()))
            .unwrap_or_else(|| authority.clone());
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(pq)
            .build()
            .map_err(|_| UpstreamError::NoAuthority)?;
        *req.version_mut() = http::Version::HTTP_2;
        let slot = H2.with(|p| p.borrow_mut().entry(authority.clone()).or_default().clone());
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                None => {
                    *guard = None;
                    let sender = self.h2_connect(&authority).await?;
                    *guard = Some(sender.clone());
                    sender
                }
            }
        };
        if let Err(e) = sender.ready().await {
            // The connection died under us: the next request makes a new one (`is_closed`).
            return Err(UpstreamError::Http(e));
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http)?;
        Ok(resp.map(|inner| UpstreamBody { inner, conn: None }))
    }

    /// A new HTTP/2 connection (prior knowledge) to `authority`, its driver spawned.
    async fn h2_connect(
        &self,
        authority: &Authority,
    ) -> Result<hyper::client::conn::http2::SendRequest<UpBody>, UpstreamError> {
        let stream = self.tcp(authority).await?;
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(H2_KEEP_ALIVE)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A TCP connection to `authority` (connect timeout, no Nagle, keep-alive probes).
    async fn tcp(&self, authority: &Authority) -> Result<TcpStream, UpstreamError> {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((host, port)),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        let _ = sock
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        Ok(stream)
    }

    /// A new HTTP/1.1 connection to `authority`: cleartext, or over TLS when `tls` is given
    /// (SNI and verification for the transport's `server_name`, else the server's host).
    async fn connect(
        &self,
        authority: &Authority,
        tls: Option<&Arc<Transport>>,
    ) -> Result<SendRequest<UpBody>, UpstreamError> {
        let stream = self.tcp(authority).await?;
        match tls {
            None => self.http1(stream).await,
            Some(t) => {
                let name = match &t.server_name {
                    Some(n) => n.clone(),
                    None => server_name_of(authority)?,
                };
                let connector = tokio_rustls::TlsConnector::from(t.tls.clone());
                let stream = match tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name, stream),
                )
                .await
                {
                    Err(_) => return Err(UpstreamError::TlsTimeout),
                    Ok(Err(e)) => return Err(UpstreamError::Tls(e)),
                    Ok(Ok(s)) => s,
                };
                self.http1(stream).await
            }
        }
    }

    /// An HTTP/1.1 client connection over `io`, its driver spawned on this thread's runtime
    /// (upgrades allowed: websocket tunnels, TLS ones included).
    async fn http1<T>(&self, io: T) -> Result<SendRequest<UpBody>, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUF_MAX)
            .handshake(TokioIo::new(io))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The TLS server name of a server's host (a DNS name or an IP address).
fn server_name_of(authority: &Authority) -> Result<ServerName<'static>, UpstreamError> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| UpstreamError::ServerName(host.to_string()))
}

/// The newest idle connection of `idle` that can take a request now; closed or expired ones
/// are dropped, busy ones (still sending an earlier request's body) kept for later.
fn take_idle(
    idle: &mut Vec<Idle>,
    now: Instant,
    idle_timeout: Duration,
) -> Option<SendRequest<UpBody>> {
    let mut busy = Vec::new();
    let found = loop {
        let Some(conn) = idle.pop() else { break None };
        if conn.sender.is_closed() || now.duration_since(conn.since) > idle_timeout {
            continue;
        }
        if conn.sender.is_ready() {
            break Some(conn.sender);
        }
        busy.push(conn);
    };
    for conn in busy.into_iter().rev() {
        idle.insert(0, conn);
    }
    found
}

/// Adds a free connection to `idle`, within the per-server cap.
fn put_idle(idle: &mut Vec<Idle>, sender: SendRequest<UpBody>) {
    if idle.len() >= MAX_IDLE_PER_SERVER {
        idle.retain(|c| !c.sender.is_closed());
    }
    if idle.len() < MAX_IDLE_PER_SERVER {
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

/// Returns a connection whose response was read to the end to this thread's pool of its scheme.
fn checkin(key: PoolKey, sender: SendRequest<UpBody>) {
    if sender.is_closed() {
        return;
    }
    match key {
        PoolKey::Plain(a) => POOL.with(|p| put_idle(p.borrow_mut().entry(a).or_default(), sender)),
        PoolKey::Tls(a, t) => {
            TLS_POOL.with(|p| put_idle(p.borrow_mut().entry((a, t)).or_default(), sender))
        }
    }
}

/// Maps a client error to the error the downstream sees, keeping its cause chain.
pub fn classify(err: UpstreamError, server: &str) -> Failure {
    let connect = err.is_connect();
    let error = match err {
        UpstreamError::ConnectTimeout => ProxyError::UpstreamTimeout {
            server: server.to_string(),
            phase: "connect",
        },
        UpstreamError::TlsTimeout => ProxyError::UpstreamTimeout {
            server: server.to_string(),
            phase: "TLS handshake",
        },
        err => ProxyError::Upstream {
            server: server.to_string(),
            what: if connect { "connect" } else { "exchange" },
            source: Some(Box::new(err)),
        },
    };
    Failure {
        error,
        never_sent: connect,
    }
}
