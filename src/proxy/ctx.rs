//! The per-request context: what one request carries through the phase list, made once and
//! passed by `&mut` (no phase takes more than the context, the request and what it produces).
//!
//! Owns `Peer` (what a request knows of its connection: entrypoint, client address, trust,
//! path rules; one `Arc` per connection, shared by its requests and by dry runs, which make one
//! from a recorded client), `RequestCtx` (the peer, the canonical host, the table snapshot, the
//! matched route, the middleware plan, the observers) and `Observers` — the one place metrics,
//! the access log and the recorder learn what happened (`Observe`).
//!
//! Invariants: a context holds exactly one table snapshot for its whole life (invariant 2); the
//! observers are told each fact once, in phase order (routed, forwarded per attempt, origin,
//! finished); observers that are off cost one branch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use super::body::ProxyBody;
use super::pipeline::Plan;
use super::record;
use crate::access_log;
use crate::canonical::PathOptions;
use crate::middleware::client_cert::ClientChain;
use crate::middleware::redirect::RedirectScheme;
use crate::routing::matcher::canonical_ip;
use crate::routing::{RequestView, Server};
use crate::table::{Route, RouteTable};

/// What a request knows of the connection it came on.
#[derive(Debug)]
pub(super) struct Peer {
    pub entrypoint: Arc<str>,
    pub addr: SocketAddr,
    /// The client's address (IPv4-mapped shown as IPv4), ready for `X-Forwarded-For`/`X-Real-Ip`.
    pub client_ip: HeaderValue,
    /// Whether the client is in `--trusted-ips` (its forwarding headers are kept).
    pub trusted: bool,
    /// The entrypoint's index in the metrics registry.
    pub ep: usize,
    /// The entrypoint's path rules.
    pub path: PathOptions,
    /// What the TLS handshake settled, on a TLS entrypoint.
    pub tls: Option<TlsInfo>,
    /// The entrypoint's `redirect-to`: every request is answered with this redirect.
    pub redirect: Option<Arc<RedirectScheme>>,
}

/// What a TLS connection's handshake settled.
#[derive(Debug, Default, Clone)]
pub(super) struct TlsInfo {
    /// The SNI name the client sent (lowercase).
    pub sni: Option<String>,
    /// `TLSv1.2` / `TLSv1.3`.
    pub version: &'static str,
    /// The client's certificate chain (DER, leaf first), when it presented one.
    pub client_certs: Option<ClientChain>,
    /// The named TLS options the handshake was set up with (`None`: the entrypoint's).
    pub options: Option<Arc<str>>,
}

impl TlsInfo {
    /// The state of a finished server handshake.
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            sni: conn.server_name().map(|s| s.to_ascii_lowercase()),
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            },
            client_certs: conn
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| ClientChain(Arc::new(c.iter().map(|c| c.to_vec()).collect()))),
            options: None,
        }
    }
}

impl Peer {
    pub fn new(
        entrypoint: Arc<str>,
        addr: SocketAddr,
        settings: &super::Settings,
        ep: usize,
    ) -> Peer {
        let ip = canonical_ip(addr.ip());
        Peer {
            path: settings.path_options(&entrypoint),
            // A `tls=auto` entrypoint's requests are cleartext until a handshake says otherwise.
            tls: (settings.is_tls(&entrypoint)
                && !settings
                    .entrypoint(&entrypoint)
                    .is_some_and(|o| o.tls_optional))
            .then(TlsInfo::default),
            redirect: settings
                .entrypoint(&entrypoint)
                .and_then(|o| o.redirect.as_ref())
                .and_then(|r| {
                    RedirectScheme::new(&r.scheme, (r.port != 0).then_some(r.port), r.permanent)
                        .ok()
                })
                .map(Arc::new),
            entrypoint,
            addr,
            client_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            trusted: settings.trusted_ips.iter().any(|n| n.contains(&ip)),
            ep,
        }
    }
}

/// What watches a request: told each fact as a phase learns it.
pub(super) trait Observe {
    /// The request matched `route`.
    fn routed(&mut self, _route: &Route) {}
    /// An attempt leaves for `server` of `service` with `uri`.
    fn forwarded(&mut self, _service: &str, _server: &Server, _uri: &Uri) {}
    /// The server's response head arrived.
    fn origin(&mut self, _status: StatusCode, _headers: &HeaderMap) {}
    /// A middleware authenticated `user`.
    fn user(&mut self, _user: &str) {}
}

impl Observe for access_log::Entry {
    fn routed(&mut self, route: &Route) {
        self.route(&route.name);
    }
    fn forwarded(&mut self, service: &str, server: &Server, _uri: &Uri) {
        self.forward(service, server);
    }
    fn origin(&mut self, status: StatusCode, headers: &HeaderMap) {
        access_log::Entry::origin(self, status, headers);
    }
    fn user(&mut self, user: &str) {
        access_log::Entry::user(self, Some(user.to_string()));
    }
}

impl Observe for record::Pending {
    fn routed(&mut self, route: &Route) {
        record::route(self, route);
    }
    fn forwarded(&mut self, service: &str, server: &Server, uri: &Uri) {
        record::forward(self, service, server, uri);
    }
}

/// The observers of one request: the recorder's pending record and the access-log entry when
/// they are on. Metrics are counted at `finish` from the context.
#[derive(Default)]
pub(super) struct Observers {
    pub rec: Option<Box<record::Pending>>,
    pub alog: Option<Box<access_log::Entry>>,
}

impl Observers {
    fn each(&mut self, mut f: impl FnMut(&mut dyn Observe)) {
        if let Some(r) = self.rec.as_deref_mut() {
            f(r);
        }
        if let Some(l) = self.alog.as_deref_mut() {
            f(l);
        }
    }

    pub fn routed(&mut self, route: &Route) {
        self.each(|o| o.routed(route));
    }

    pub fn forwarded(&mut self, service: &str, server: &Server, uri: &Uri) {
        self.each(|o| o.forwarded(service, server, uri));
    }

    pub fn origin(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.each(|o| o.origin(status, headers));
    }

    pub fn user(&mut self, user: &str) {
        self.each(|o| o.user(user));
    }
}

/// One request's context.
pub(super) struct RequestCtx {
    pub peer: Arc<Peer>,
    pub started: Instant,
    /// As received (cheap clones), for the log line of a failed request.
    pub method: Method,
    pub uri: Uri,
    /// The canonical host (set by the canonicalise phase).
    pub host: String,
    /// The table snapshot this request is decided on.
    pub table: Arc<RouteTable>,
    pub route: Option<Arc<Route>>,
    pub plan: Plan,
    pub observers: Observers,
    /// What the request carries (`protocol` metrics label). For gRPC (`content-type:
    /// application/grpc…`) the router's own errors are answered the gRPC way (status 200,
    /// `grpc-status` in the headers) and the `grpc-status` the response ends with is counted.
    pub protocol: crate::metrics::Protocol,
    pub version: http::Version,
}

impl RequestCtx {
    pub fn new(
        peer: Arc<Peer>,
        method: Method,
        uri: Uri,
        table: Arc<RouteTable>,
        mut plan: Plan,
    ) -> RequestCtx {
        plan.scheme = if peer.tls.is_some() { "https" } else { "http" };
        RequestCtx {
            peer,
            started: Instant::now(),
            method,
            uri,
            host: String::new(),
            table,
            route: None,
            plan,
            observers: Observers::default(),
            protocol: crate::metrics::Protocol::Http,
            version: http::Version::HTTP_11,
        }
    }

    /// What matchers, balancers and `pick` hooks read of the request head `parts`.
    pub fn view<'a>(&'a self, parts: &'a http::request::Parts) -> RequestView<'a> {
        RequestView {
            method: &parts.method,
            host: &self.host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            client_ip: self.peer.addr.ip(),
        }
    }

    /// The log phase for the response about to go out: metrics, recorder, access log. A gRPC
    /// response's status is counted and logged from its head (the router's own errors, a
    /// server's trailers-only answer) or else when its body ends, from its trailers.
    pub fn finish(&mut self, proxy: &super::Proxy, resp: &mut Response<ProxyBody>) {
        let kind = crate::metrics::RequestKind {
            method: &self.method,
            protocol: self.protocol,
            version: self.version,
        };
        proxy.metrics.request(
            self.peer.ep,
            self.route.as_deref(),
            &kind,
            resp.status(),
            self.started.elapsed(),
        );
        if let Some(rec) = self.observers.rec.take() {
            record::finish(*rec, resp.status(), &proxy.recorder);
        }
        let entry = match (&proxy.access_log, self.observers.alog.take()) {
            (Some(log), Some(entry)) => log.complete(entry, resp),
            _ => None,
        };
        if !self.protocol.is_grpc() {
            if let (Some(log), Some(entry)) = (&proxy.access_log, entry) {
                log.send(entry);
            }
            return;
        }
        let metrics = proxy.metrics.clone();
        let route = self.route.clone();
        let log = proxy.access_log.clone();
        let mut entry = entry;
        let done = move |status: Option<u8>| {
            metrics.grpc_status(route.as_deref(), status);
            if let (Some(log), Some(mut entry)) = (log, entry.take()) {
                entry.grpc_status(status);
                log.send(entry);
            }
        };
        if let Some(v) = resp.headers().get("grpc-status") {
            done(grpc_code(v));
        } else {
            resp.body_mut().on_end(Box::new(move |trailers| {
                done(
                    trailers
                        .and_then(|t| t.get("grpc-status"))
                        .and_then(grpc_code),
                );
            }));
        }
    }
}

/// A `grpc-status` value: a decimal code.
fn grpc_code(v: &http::HeaderValue) -> Option<u8> {
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}
