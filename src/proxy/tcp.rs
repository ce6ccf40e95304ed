//! TCP routing on an entrypoint (Traefik's TCP routers): which connections leave the HTTP path,
//! and how their bytes reach a server.
//!
//! An entrypoint with TCP routes looks at each connection before HTTP does. A TLS ClientHello
//! (first byte 0x16) is read without being consumed (`hello`) and matched against the routes
//! with TLS, by SNI, ALPN and client address: passthrough sends the untouched bytes to a server;
//! terminate completes the handshake with the router's certificates and sends the cleartext;
//! no match goes on to HTTPS (a TLS entrypoint) or is closed. A cleartext connection goes to the
//! first cleartext route that takes its client (``HostSNI(`*`)``), else to HTTP. With cleartext
//! routes only, on a cleartext entrypoint, the route is chosen at accept, so protocols where
//! the server speaks first (SSH, SMTP, MySQL) work.
//!
//! Invariants: the route is chosen on one table snapshot, and the connection keeps that route
//! and its server until it closes (a reload never moves it); a route removed by a reload keeps
//! its connections for the entrypoint's `tcp.removed-route-grace`, then closes them; a bad or
//! slow hello closes only its own connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{hello, proxy_protocol, Proxy, Tracker};
use crate::routing::l4::{self, ConnView, L4Table, TcpOnEntrypoint, TcpRoute, TcpTls};

/// Copy buffers per direction (HAProxy's and nginx's size). Measured (benches/load/tcp.py,
/// pinned): 64 KiB moved bulk data with less CPU per byte but cost every new connection the
/// zeroing of two larger buffers (connection rate ×0.89 of HAProxy against ×0.93 with 16 KiB;
/// throughput ×1.49 against ×1.28, both above the target).
const COPY_BUF: usize = 16 * 1024;

/// A server that refused a connection is skipped for a second (the next pick goes elsewhere).
const CONNECT_FAILURE: crate::balance::PassivePolicy = crate::balance::PassivePolicy {
    max_failures: 1,
    cooldown: Duration::from_secs(1),
};

/// What became of a connection the TCP routes looked at.
pub(super) enum Dispatch {
    /// Not theirs: serve it as HTTP (the socket still holds every byte the client sent).
    Http(TcpStream),
    /// Served (or refused) here.
    Done,
}

/// The connection's facts the TCP routes need.
pub(super) struct TcpConn<'a> {
    pub entrypoint: &'a str,
    pub client: SocketAddr,
    /// A TLS entrypoint: unmatched TLS goes on to HTTPS.
    pub https: bool,
    pub hello_wait: Duration,
    pub removed_grace: Duration,
    pub tcp_tls: &'a std::sync::OnceLock<Option<Arc<rustls::ServerConfig>>>,
}

impl Proxy {
    /// Routes `stream` by the TCP routes of `l4`, or hands it back for HTTP.
    pub(super) async fn tcp_dispatch(
        self: &Arc<Self>,
        stream: TcpStream,
        l4: Arc<L4Table>,
        on: TcpOnEntrypoint,
        c: TcpConn<'_>,
        tracker: Tracker,
    ) -> Dispatch {
        if on.plain && !on.tls && !c.https {
            // Chosen at accept: the server may speak first.
            return match l4.match_plain(c.entrypoint, c.client.ip()) {
                Some(route) => {
                    let route = route.clone();
                    self.tcp_forward(stream, None, &c, route, tracker).await;
                    Dispatch::Done
                }
                None => Dispatch::Http(stream),
            };
        }
        let Some(first) = hello::first_byte(&stream, c.hello_wait).await else {
            return Dispatch::Done;
        };
        if first != 0x16 {
            if on.plain {
                if let Some(route) = l4.match_plain(c.entrypoint, c.client.ip()) {
                    let route = route.clone();
                    self.tcp_forward(stream, None, &c, route, tracker).await;
                    return Dispatch::Done;
                }
            }
            return Dispatch::Http(stream);
        }
        if !on.tls {
            return Dispatch::Http(stream);
        }
        let hello = match hello::peek(&stream, c.hello_wait).await {
            Ok(h) => h,
            Err(e) => {
                debug!(entrypoint = c.entrypoint, client = %c.client, error = %e, "TLS connection refused before routing");
                return Dispatch::Done;
            }
        };
        let view = ConnView {
            sni: hello.sni.as_deref(),
            alpn: &hello.alpn,
            client_ip: c.client.ip(),
        };
        let Some(route) = l4.match_tls(c.entrypoint, &view).cloned() else {
            if c.https {
                return Dispatch::Http(stream);
            }
            debug!(entrypoint = c.entrypoint, client = %c.client, sni = ?hello.sni, "no TCP route for this TLS connection; closed");
            return Dispatch::Done;
        };
        self.tcp_forward(stream, hello.sni, &c, route, tracker)
            .await;
        Dispatch::Done
    }

    /// Serves one connection on `route`, then logs and counts it.
    async fn tcp_forward(
        self: &Arc<Self>,
        stream: TcpStream,
        sni: Option<String>,
        c: &TcpConn<'_>,
        route: Arc<TcpRoute>,
        tracker: Tracker,
    ) {
        let _tracked = tracker;
        let started = Instant::now();
        let start = std::time::SystemTime::now();
        let _open = self.metrics.tcp_open(&route.metrics);
        let mut rec = ConnRecord::default();
        self.tcp_serve(stream, c, &route, &mut rec).await;
        let duration = started.elapsed();
        debug!(route = %route.name, server = ?rec.server, client = %c.client, sni = ?sni, outcome = rec.outcome, bytes_in = rec.bytes_in, bytes_out = rec.bytes_out, duration_ms = duration.as_millis() as u64, "TCP connection ended");
        self.metrics.tcp_done(
            &route.metrics,
            rec.outcome,
            rec.bytes_in,
            rec.bytes_out,
            duration,
        );
        if let Some(log) = &self.access_log {
            log.send_conn(crate::access_log::ConnEntry {
                start,
                client: c.client,
                entrypoint: c.entrypoint.into(),
                protocol: "tcp",
                route: route.name.clone(),
                service: route.service.name.clone(),
                server: rec.server,
                sni,
                tls: match route.tls {
                    None => "none",
                    Some(TcpTls::Passthrough) => "passthrough",
                    Some(TcpTls::Terminate { .. }) => "terminate",
                },
                bytes_in: rec.bytes_in,
                bytes_out: rec.bytes_out,
                duration,
                outcome: rec.outcome,
            });
        }
    }

    /// One connection on `route`: its middlewares, TLS termination when asked, a server, the
    /// PROXY header when asked, then bytes both ways until both sides are done.
    async fn tcp_serve(
        self: &Arc<Self>,
        stream: TcpStream,
        c: &TcpConn<'_>,
        route: &TcpRoute,
        rec: &mut ConnRecord,
    ) {
        let _permits = match l4::admit(&route.middlewares, c.client.ip()) {
            Ok(p) => p,
            Err(why) => {
                debug!(route = %route.name, client = %c.client, "TCP connection refused: {why}");
                rec.outcome = "refused";
                return;
            }
        };
        // The entrypoint's address, for a PROXY header only (a syscall otherwise saved).
        let local = route
            .service
            .proxy_protocol
            .and_then(|_| stream.local_addr().ok());
        let terminate = matches!(route.tls, Some(TcpTls::Terminate { .. }));
        // The handshake comes before the server is chosen: a client that fails it costs no
        // server a connection.
        let client: Box<dyn Io> = if terminate {
            let Some(config) = self.tcp_tls_config(c.tcp_tls) else {
                debug!(route = %route.name, "no TLS configuration for TCP termination; closed");
                rec.outcome = "handshake_failed";
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(c.hello_wait, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    debug!(route = %route.name, client = %c.client, error = %e, "TLS handshake failed");
                    rec.outcome = "handshake_failed";
                    return;
                }
                Err(_) => {
                    debug!(route = %route.name, client = %c.client, "TLS handshake timed out");
                    rec.outcome = "handshake_failed";
                    return;
                }
            }
        } else {
            Box::new(stream)
        };
        let Some((server, mut upstream)) = self.tcp_connect(route).await else {
            rec.outcome = "no_server";
            return;
        };
        rec.server = Some(server);
        if let Some(v) = route.service.proxy_protocol {
            let header = proxy_protocol::encode(v, c.client, local.unwrap_or(c.client));
            if let Err(e) = upstream.write_all(&header).await {
                debug!(route = %route.name, error = %e, "writing the PROXY header failed");
                rec.outcome = "error";
                return;
            }
        }
        let mut client = Counted::new(client);
        let copy = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            COPY_BUF,
            COPY_BUF,
        );
        let result = tokio::select! {
            r = copy => r.map(|_| ()).map_err(|e| e.to_string()),
            () = self.route_gone(&route.name, c.removed_grace) => {
                rec.outcome = "route_removed";
                Ok(())
            }
        };
        if let Err(e) = result {
            debug!(route = %route.name, error = %e, "TCP connection broken");
            rec.outcome = "error";
        }
        rec.bytes_in = client.read;
        rec.bytes_out = client.written;
    }

    /// A connection to one of the route's servers: each available server is tried once, in
    /// balancer order.
    async fn tcp_connect(&self, route: &TcpRoute) -> Option<(String, TcpStream)> {
        let pool = &route.service.pool;
        for _ in 0..pool.servers.len().max(1) {
            let (i, server) = pool.pick(Instant::now())?;
            let attempt = tokio::time::timeout(
                self.settings.upstream_connect_timeout,
                TcpStream::connect(server.address.as_str()),
            )
            .await;
            match attempt {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    if let Some(state) = pool.states.get(i) {
                        state.record_success();
                    }
                    return Some((server.address.clone(), s));
                }
                Ok(Err(e)) => {
                    debug!(route = %route.name, server = %server.address, error = %e, "TCP server refused the connection")
                }
                Err(_) => {
                    debug!(route = %route.name, server = %server.address, "TCP server connect timed out")
                }
            }
            if let Some(state) = pool.states.get(i) {
                // Passive health: a refused connect takes the server out for a moment, so the
                // next pick goes elsewhere.
                state.record_failure(&CONNECT_FAILURE, Instant::now());
            }
        }
        None
    }

    /// Resolves when `route` has been absent from the live table for `grace`.
    async fn route_gone(&self, route: &str, grace: Duration) {
        let mut seen: Option<usize> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let table = self.table.load();
            let l4 = table.l4();
            let ptr = Arc::as_ptr(l4) as usize;
            if seen == Some(ptr) {
                continue;
            }
            seen = Some(ptr);
            if !l4.tcp_routes().iter().any(|r| r.name == route) {
                tokio::time::sleep(grace).await;
                return;
            }
        }
    }

    /// The handshake settings of TCP routes that terminate TLS: the router's certificates, no
    /// HTTP ALPN protocols. Made once per entrypoint.
    fn tcp_tls_config(
        &self,
        cell: &std::sync::OnceLock<Option<Arc<rustls::ServerConfig>>>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        cell.get_or_init(|| {
            let certs = self.certificates().ok()?;
            let options = crate::tls::TlsOptions {
                alpn: Vec::new(),
                ..crate::tls::TlsOptions::default()
            };
            options.server_config(certs).ok()
        })
        .clone()
    }
}

/// How a connection went, for the log and the metrics.
struct ConnRecord {
    server: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    outcome: &'static str,
}

impl Default for ConnRecord {
    fn default() -> Self {
        ConnRecord {
            server: None,
            bytes_in: 0,
            bytes_out: 0,
            outcome: "ok",
        }
    }
}

/// The client side, counting the bytes read from it and written to it.
struct Counted<T> {
    inner: T,
    read: u64,
    written: u64,
}

impl<T> Counted<T> {
    fn new(inner: T) -> Self {
        Counted {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.read += n;
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.written += *n as u64;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client side of a TCP connection: the socket or its TLS session.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
