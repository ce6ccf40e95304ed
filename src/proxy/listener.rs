//! Entrypoints and downstream connections: the accept loop (per-entrypoint connection cap), the
//! PROXY header of a trusted client, the hand-over to the TCP routes (`tcp.rs`) on an entrypoint
//! that has some, one HTTP/1.1 connection per client (exact head limit, header-read and idle timeouts watched
//! by a separate task, graceful shutdown), and the hand-over of each request to the phase list.
//!
//! Invariants: a connection over the entrypoint's `max-connections` is closed before a byte is
//! read; a connection's own task polls only the connection; every request gets a response (the
//! phase list's, or a 500 should the live exchange ever end without one).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, debug_span, error, warn, Instrument};

use super::body::ProxyBody;
use super::conn::{Activity, Expiry, TrackedIo};
use super::ctx::{Peer, RequestCtx, TlsInfo};
use super::error::ProxyError;
use super::exchange::Live;
use super::pipeline::Plan;
use super::{record, Proxy, Tracker};

/// HTTP/2 streams a client may have reset before they were served, at once, before the
/// connection is closed (hyper's default, named here as the rapid-reset guard).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the router itself may reset for a client's protocol errors before it closes the
/// connection (the MadeYouReset guard).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 200;

/// An HTTP version fixed before the first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpVersion {
    H1,
    H2,
}

/// A TLS entrypoint's handshake settings and the certificates they choose from.
struct TlsWire {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<crate::tls::Certificates>,
}

/// What every connection of one entrypoint shares: its name and metrics index, its TLS
/// settings (on a TLS entrypoint) and its HTTP/2 settings.
struct Wire {
    entrypoint: Arc<str>,
    ep: usize,
    tls: Option<TlsWire>,
    /// `tls=auto`: a client whose first byte does not start a TLS record speaks cleartext.
    tls_optional: bool,
    h2c: bool,
    h2_max_concurrent_streams: u32,
    h2_stream_window: Option<u32>,
    h2_connection_window: Option<u32>,
    h2_keep_alive: Option<Duration>,
    /// PROXY protocol headers accepted from these clients.
    proxy_protocol: crate::settings::ProxyProtocolIn,
    /// How long the TCP routes wait for a ClientHello.
    hello_wait: Duration,
    removed_grace: Duration,
    /// TLS termination settings of TCP routes, made on first use.
    tcp_tls: std::sync::OnceLock<Option<Arc<rustls::ServerConfig>>>,
}

/// A live connection: its peer (shared with its requests), its timeout clocks, and the tracker
/// that keeps shutdown waiting while it (or a tunnel it opened) lives.
#[derive(Clone)]
pub(super) struct Conn {
    pub peer: Arc<Peer>,
    pub activity: Arc<Activity>,
    pub tracker: Tracker,
}

impl Proxy {
    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve_entrypoint(
        self: Arc<Self>,
        name: String,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        tracker: Tracker,
    ) {
        let ep = self.metrics.entrypoint_index(&name);
        let options = self.settings.entrypoint(&name).cloned().unwrap_or_default();
        let entrypoint: Arc<str> = name.into();
        let tls = match &options.tls {
            None => None,
            Some(t) => match self
                .certificates()
                .and_then(|c| Ok((t.server_config(c.clone())?, c)))
            {
                Ok((config, certs)) => Some(TlsWire { config, certs }),
                Err(e) => {
                    error!(entrypoint = %entrypoint, error = %e, "cannot serve TLS; the entrypoint stays closed");
                    return;
                }
            },
        };
        let wire = Arc::new(Wire {
            entrypoint: entrypoint.clone(),
            ep,
            tls,
            tls_optional: options.tls_optional,
            h2c: options.h2c,
            h2_max_concurrent_streams: options.h2_max_concurrent_streams,
            h2_stream_window: options.h2_stream_window,
            h2_connection_window: options.h2_connection_window,
            h2_keep_alive: options.h2_keep_alive,
            proxy_protocol: options.proxy_protocol.clone(),
            hello_wait: options
                .hello_timeout
                .unwrap_or(self.settings.header_read_timeout),
            removed_grace: options.removed_route_grace,
            tcp_tls: std::sync::OnceLock::new(),
        });
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(entrypoint = %entrypoint, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(admitted) = options.admit() else {
                // Over the cap: closed before a byte is read (the kernel's backlog is not grown).
                debug!(entrypoint = %entrypoint, %peer, max = options.max_connections, "connection refused: entrypoint at max-connections");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let span = debug_span!("conn", %peer, entrypoint = %entrypoint);
            let conn = self.clone().serve_connection(
                stream,
                peer,
                wire.clone(),
                tracker.clone(),
                shutdown.clone(),
            );
            tokio::spawn(
                async move {
                    conn.await;
                    drop(admitted);
                }
                .instrument(span),
            );
        }
        debug!(entrypoint = %entrypoint, "stopped accepting");
    }

    /// One downstream connection: the TLS handshake on a TLS entrypoint, then HTTP/1.1 or
    /// HTTP/2 (by ALPN; in cleartext by the client's preface where `h2c` is on).
    async fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        addr: std::net::SocketAddr,
        wire: Arc<Wire>,
        tracker: Tracker,
        shutdown: watch::Receiver<bool>,
    ) {
        let _open = self.metrics.connection(wire.ep);
        let (mut stream, mut addr) = (stream, addr);
        if wire.proxy_protocol.accepts(addr.ip()) {
            // The header names the client for everything after it: TCP routes, HTTP, logs.
            match super::proxy_protocol::read(&mut stream, self.settings.header_read_timeout).await
            {
                Ok(Some(client)) => addr = client,
                Ok(None) => {}
                Err(e) => {
                    debug!(peer = %addr, error = %e, "connection closed: bad PROXY protocol header");
                    return;
                }
            }
        }
        // Only an entrypoint some TCP route listens on looks at connections before HTTP (the
        // others pay no peek).
        let tcp = {
            let table = self.table.load();
            let on = table.l4().tcp_on(&wire.entrypoint);
            on.any().then(|| (table.l4().clone(), on))
        };
        if let Some((l4, on)) = tcp {
            let c = super::tcp::TcpConn {
                entrypoint: &wire.entrypoint,
                client: addr,
                https: wire.tls.is_some(),
                hello_wait: wire.hello_wait,
                removed_grace: wire.removed_grace,
                tcp_tls: &wire.tcp_tls,
            };
            match self.tcp_dispatch(stream, l4, on, c, tracker.clone()).await {
                super::tcp::Dispatch::Http(s) => stream = s,
                super::tcp::Dispatch::Done => return,
            }
        }
        let activity = Activity::new();
        let mut peer = Peer::new(wire.entrypoint.clone(), addr, &self.settings, wire.ep);
        let io = TrackedIo::new(stream, activity.clone());
        let cleartext = match &wire.tls {
            None => true,
            Some(_) if wire.tls_optional => {
                match starts_tls(&io, self.settings.header_read_timeout).await {
                    Some(tls) => !tls,
                    None => return,
                }
            }
            Some(_) => false,
        };
        let tls = match &wire.tls {
            Some(t) if !cleartext => Some(t),
            _ => None,
        };
        let Some(tls) = tls else {
            let version = if wire.h2c {
                match sniff_h2_preface(&io, self.settings.header_read_timeout).await {
                    Some(v) => v,
                    None => return,
                }
            } else {
                HttpVersion::H1
            };
            let info = Conn {
                peer: Arc::new(peer),
                activity,
                tracker,
            };
            return self.serve_http(io, info, version, &wire, shutdown).await;
        };
        // The handshake counts against the header-read timeout, as a request head would; an
        // on-demand certificate order in between has its own bound.
        let handshake = async {
            let hello = tokio::time::timeout(
                self.settings.header_read_timeout,
                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io),
            )
            .await
            .map_err(|_| "the ClientHello did not come within the header-read timeout".to_string())?
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
            let acme = hello
                .client_hello()
                .alpn()
                .is_some_and(|mut p| p.any(|p| p == crate::tls::store::ACME_TLS_ALPN));
            let sni = hello.client_hello().server_name().map(str::to_string);
            if let (Some(name), false) = (&sni, acme) {
                tls.certs.on_demand(name).await;
            }
            // Named TLS options (a route's `tls.options`) for this name, else the entrypoint's.
            let chosen = tls.certs.options_for(sni.as_deref());
            let config = chosen
                .as_ref()
                .map_or_else(|| tls.config.clone(), |c| c.config.clone());
            let stream =
                tokio::time::timeout(self.settings.header_read_timeout, hello.into_stream(config))
                    .await
                    .map_err(|_| {
                        "the TLS handshake did not finish within the header-read timeout"
                            .to_string()
                    })?
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>((stream, chosen.map(|c| c.name)))
        };
        let (stream, options) = match handshake.await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.tls_handshake(wire.ep, false);
                debug!(peer = %addr, error = %e, "TLS handshake failed");
                return;
            }
        };
        self.metrics.tls_handshake(wire.ep, true);
        let (_, conn) = stream.get_ref();
        if conn.alpn_protocol() == Some(crate::tls::store::ACME_TLS_ALPN) {
            // A TLS-ALPN-01 validation: the handshake was the answer; no HTTP follows.
            debug!(peer = %addr, sni = ?conn.server_name(), "ACME TLS-ALPN-01 validation answered");
            return;
        }
        let version = if conn.alpn_protocol() == Some(b"h2") {
            HttpVersion::H2
        } else {
            HttpVersion::H1
        };
        let mut tls = TlsInfo::of(conn);
        tls.options = options;
        debug!(version = tls.version, sni = ?tls.sni, ?version, client_cert = tls.client_certs.is_some(), "TLS handshake done");
        peer.tls = Some(tls);
        let info = Conn {
            peer: Arc::new(peer),
            activity,
            tracker,
        };
        self.serve_http(stream, info, version, &wire, shutdown)
            .await;
    }

    /// HTTP over `io` in `version` until the client leaves, a timeout fires or shutdown asks
    /// to close.
    async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        info: Conn,
        version: HttpVersion,
        wire: &Wire,
        shutdown: watch::Receiver<bool>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let svc_info = info.clone();
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let info = svc_info.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
        });
        let io = TokioIo::new(io);
        let (header_read, idle) = (
            self.settings.header_read_timeout,
            self.settings.idle_timeout,
        );
        match version {
            HttpVersion::H1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    // Header and idle timeouts are enforced by `Activity`, which can tell
                    // them apart.
                    .header_read_timeout(None)
                    // The head limit is exact (request line and headers as received, whatever
                    // the read sizes); the buffer has room for it plus the start of a body.
                    .max_header_size(self.settings.max_header_bytes)
                    .max_buf_size(
                        self.settings
                            .max_header_bytes
                            .saturating_add(8192)
                            .max(16384),
                    )
                    .keep_alive(true);
                let conn = builder.serve_connection(io, svc).with_upgrades();
                let graceful = |c: std::pin::Pin<&mut _>| {
                    hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(c)
                };
                drive(conn, graceful, info, header_read, idle, shutdown).await;
            }
            HttpVersion::H2 => {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(wire.h2_max_concurrent_streams)
                    .max_header_list_size(
                        u32::try_from(self.settings.max_header_bytes).unwrap_or(u32::MAX),
                    )
                    // Rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671): a client
                    // whose streams keep being reset before they are served loses the
                    // connection.
                    .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_RESETS))
                    .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
                    .initial_stream_window_size(wire.h2_stream_window)
                    .initial_connection_window_size(wire.h2_connection_window)
                    .keep_alive_interval(wire.h2_keep_alive)
                    .keep_alive_timeout(wire.h2_keep_alive.unwrap_or(Duration::from_secs(20)));
                let conn = builder.serve_connection(io, svc);
                // Frames arrive between requests (pings, settings), so only the idle clock
                // applies to an HTTP/2 connection.
                let graceful = |c: std::pin::Pin<&mut _>| {
                    hyper::server::conn::http2::Connection::graceful_shutdown(c)
                };
                drive(conn, graceful, info, header_read.max(idle), idle, shutdown).await;
            }
        }
    }

    /// One request on a live connection: the phase list with the live exchange, then the log
    /// phase.
    async fn handle(&self, mut req: Request<Incoming>, info: &Conn) -> Response<ProxyBody> {
        let guard = info.activity.begin();
        if let Some(chain) = info.peer.tls.as_ref().and_then(|t| t.client_certs.clone()) {
            // For `pass_tls_client_cert`: one Arc clone, only on connections that sent one.
            req.extensions_mut().insert(chain);
        }
        let span = debug_span!("request", method = %req.method(), path = req.uri().path());
        let plan = Plan {
            path: info.peer.path,
            ..Default::default()
        };
        let mut ctx = RequestCtx::new(
            info.peer.clone(),
            req.method().clone(),
            req.uri().clone(),
            self.table.load_full(),
            plan,
        );
        // One atomic load when recording is off.
        if self.recorder.is_on() {
            ctx.observers.rec = Some(Box::new(record::begin(&req, &info.peer, &self.recorder)));
        }
        if let Some(l) = &self.access_log {
            let mut entry = l.begin(&req, info.peer.addr, &info.peer.entrypoint);
            if info.peer.tls.is_some() {
                entry.over_tls();
            }
            ctx.observers.alog = Some(Box::new(entry));
        }
        ctx.protocol = crate::metrics::Protocol::of(req.headers());
        ctx.version = req.version();
        let mut live = Live {
            tracker: info.tracker.clone(),
        };
        let resp = self
            .run_phases(&mut ctx, req, &mut live)
            .instrument(span)
            .await
            .unwrap_or_else(|| {
                ProxyError::Hook {
                    route: String::new(),
                    message: "the live exchange ended without a response".into(),
                }
                .into_response()
            });
        let mut resp = resp;
        ctx.finish(self, &mut resp);
        resp.map(|b| b.guarded(guard))
    }
}

/// Whether a cleartext client opens with the HTTP/2 preface (prior knowledge) or speaks
/// HTTP/1.1, told from the bytes it sent without consuming them; `None` when it sent nothing
/// in time or left.
/// Whether the client opens with a TLS handshake record (first byte 0x16), told without
/// consuming it; `None` when it sent nothing in time or left.
async fn starts_tls(io: &TrackedIo<tokio::net::TcpStream>, wait: Duration) -> Option<bool> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(wait, io.get_ref().peek(&mut first))
        .await
        .ok()?
        .ok()?;
    (n == 1).then_some(first == [0x16])
}

async fn sniff_h2_preface(
    io: &TrackedIo<tokio::net::TcpStream>,
    wait: Duration,
) -> Option<HttpVersion> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 24];
    loop {
        let n = tokio::time::timeout_at(deadline, io.get_ref().peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf.get(..n) != PREFACE.get(..n) {
            return Some(HttpVersion::H1);
        }
        if n == PREFACE.len() {
            return Some(HttpVersion::H2);
        }
        // A prefix of the preface so far: wait for more bytes (peek returns at once while data
        // is queued, so give the client a moment, and check the deadline here: a client that
        // stops half-way must not stay forever).
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drives one connection to its end: closes it at once when a request head is too slow,
/// gracefully when idle or shutting down.
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    info: Conn,
    header_read: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    // Timeouts and the shutdown signal are watched by a separate task, so a wake-up of the
    // connection (every read and write) polls only the connection and one oneshot.
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<Expiry>();
    let activity = info.activity.clone();
    let watchdog = tokio::spawn(async move {
        let why = tokio::select! {
            why = activity.expired(header_read, idle) => why,
            _ = shutdown.wait_for(|s| *s) => Expiry::Idle,
        };
        let _ = close_tx.send(why);
    });
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(peer = %info.peer.addr, error = %e, "downstream connection ended with an error");
                }
                break;
            }
            why = &mut close_rx, if !closing => {
                closing = true;
                match why {
                    Ok(Expiry::HeaderRead) => {
                        debug!(peer = %info.peer.addr, "request head not received in time; closing");
                        break;
                    }
                    // Idle, or shutting down: finish what is in flight, then close.
                    Ok(Expiry::Idle) | Err(_) => graceful(conn.as_mut()),
                }
            }
        }
    }
    watchdog.abort();
    drop(info);
}
