//! The proxy's settings as plain data: timeouts, the header limit, trusted forwarders and the
//! per-entrypoint options (`--entrypoint.NAME.KEY=VALUE`). `config` fills them from flags, env
//! and TOML; replay sessions and tests build them directly; the proxy workers only read them.
//!
//! A leaf (it names only `canonical` and `tls`, itself a leaf), so neither side depends on the other. Invariant: values
//! here do not change while a router runs; the only shared state is an entrypoint's open
//! connection count, one atomic shared by the clones of its options (every worker).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::canonical::PathOptions;
use crate::tls::TlsOptions;

/// Proxy settings that do not change on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub trusted_ips: Vec<IpNet>,
    /// Per-entrypoint options (`--entrypoint.NAME.KEY=VALUE`); an entrypoint not listed gets
    /// `EntrypointOptions::default()`.
    pub entrypoint_options: BTreeMap<String, EntrypointOptions>,
}

/// Options of one entrypoint.
#[derive(Debug, Clone)]
pub struct EntrypointOptions {
    /// How request paths are canonicalised (`path.*` keys).
    pub path: PathOptions,
    /// Open connections above this are closed at accept (`max-connections`).
    pub max_connections: usize,
    /// TLS termination (`tls`, `tls.*` keys): `None` serves cleartext.
    pub tls: Option<TlsOptions>,
    /// `tls=auto`: TLS and cleartext on the same port, told apart by the client's first byte
    /// (a TLS record starts with 0x16), as every Traefik entrypoint does.
    pub tls_optional: bool,
    /// Cleartext HTTP/2 with prior knowledge beside HTTP/1.1 (`h2c`).
    pub h2c: bool,
    /// Streams one HTTP/2 connection may have open at once (`http2.max-concurrent-streams`).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows in bytes (`http2.initial-stream-window`,
    /// `http2.initial-connection-window`; `None`: hyper's defaults, 1 MiB and 1 MiB).
    pub h2_stream_window: Option<u32>,
    pub h2_connection_window: Option<u32>,
    /// PING an idle HTTP/2 client this often and close the connection when it does not answer
    /// within the same time (`http2.keep-alive-interval`; `None`: no pings).
    pub h2_keep_alive: Option<std::time::Duration>,
    /// Every request redirected to another entrypoint (`redirect-to`, Traefik's
    /// `http.redirections.entryPoint`).
    pub redirect: Option<EntrypointRedirect>,
    /// A UDP entrypoint (address written `:53/udp`): datagrams go to its UDP route.
    pub udp: bool,
    /// A UDP client session without a datagram either way this long ends (`udp.timeout`,
    /// Traefik's default 3 s).
    pub udp_timeout: Duration,
    /// Which clients may send a PROXY protocol header first (`proxy-protocol.*`).
    pub proxy_protocol: ProxyProtocolIn,
    /// How long a TCP route's entrypoint waits for a TLS ClientHello to choose a route
    /// (`tcp.hello-timeout`; `None`: the header-read timeout).
    pub hello_timeout: Option<Duration>,
    /// How long the connections of a TCP route a reload removed may go on
    /// (`tcp.removed-route-grace`, default 30 s).
    pub removed_route_grace: Duration,
    /// Connections open now, over every worker (shared by the clones of these options).
    open: Arc<AtomicUsize>,
}

/// Accepting PROXY protocol v1/v2 headers on an entrypoint: from `trusted` client addresses,
/// or from every client with `insecure`. A trusted client may also send none.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocolIn {
    pub trusted: Vec<IpNet>,
    pub insecure: bool,
}

impl ProxyProtocolIn {
    /// Whether a connection from `peer` is read for a PROXY header.
    pub fn accepts(&self, peer: std::net::IpAddr) -> bool {
        let peer = match peer {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.insecure || self.trusted.iter().any(|n| n.contains(&peer))
    }

    pub fn enabled(&self) -> bool {
        self.insecure || !self.trusted.is_empty()
    }
}

/// Traefik's default UDP session timeout.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where an entrypoint redirects every request: the target entrypoint's name and port, the
/// scheme (default `https`) and whether permanently (default true, as Traefik).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointRedirect {
    pub to: String,
    /// Filled from the target entrypoint's address when the config is resolved.
    pub port: u16,
    pub scheme: String,
    pub permanent: bool,
}

/// Traefik's default for `http2.maxConcurrentStreams`.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 250;

/// The default cap on an entrypoint's open connections: generous, a guard against descriptor
/// exhaustion rather than a tuning knob.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

impl Default for EntrypointOptions {
    fn default() -> Self {
        EntrypointOptions {
            path: PathOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            tls_optional: false,
            h2c: false,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_stream_window: None,
            h2_connection_window: None,
            h2_keep_alive: None,
            redirect: None,
            udp: false,
            udp_timeout: DEFAULT_UDP_TIMEOUT,
            proxy_protocol: ProxyProtocolIn::default(),
            hello_timeout: None,
            removed_route_grace: Duration::from_secs(30),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl EntrypointOptions {
    /// Counts one more open connection, or `None` when the entrypoint is at its cap.
    pub fn admit(&self) -> Option<OpenConnection> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let conn = OpenConnection(self.open.clone());
        (n < self.max_connections).then_some(conn)
    }
}

/// One admitted connection; uncounted when dropped.
pub struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Settings {
    /// The options of entrypoint `name`.
    pub fn entrypoint(&self, name: &str) -> Option<&EntrypointOptions> {
        self.entrypoint_options.get(name)
    }

    /// Whether entrypoint `name` terminates TLS.
    pub fn is_tls(&self, name: &str) -> bool {
        self.entrypoint(name).is_some_and(|o| o.tls.is_some())
    }

    /// How entrypoint `name` canonicalises paths.
    pub fn path_options(&self, name: &str) -> PathOptions {
        self.entrypoint(name)
            .map_or_else(PathOptions::default, |o| o.path)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            trusted_ips: Vec::new(),
            entrypoint_options: BTreeMap::new(),
        }
    }
}
