//! The proxy: the only code that touches client and backend sockets.
//!
//! Owns entrypoint accept loops, downstream HTTP/1.1 connections (timeouts, graceful shutdown),
//! the per-request pipeline (route lookup → handler or balancer → upstream) and websocket
//! tunnels. Phase order for one request:
//!
//! ```text
//! accept ─► read head ─► CONNECT? 405 ─► host ─► table.lookup ─┬─► handler answer
//!                                                             └─► service.pick ─► headers ─► upstream ─► response
//! ```
//!
//! Invariants: each request reads exactly one table snapshot (`ArcSwap::load_full`) and keeps it
//! until it finishes, so a reload never changes a request mid-way; bodies stream through and are
//! never buffered whole; every failure becomes a response in `error` (no panics, no hangs).

pub mod body;
pub mod conn;
pub mod error;
pub mod forward;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::middleware::{HookOutcome, HookRequest, Middleware, RequestHook};
use crate::routing::matcher::{canonical_ip, normalize_host};
use crate::routing::{Handler, RequestView, Route, RouteTable, Server, Service, Target};
use body::ProxyBody;
use conn::{Activity, Expiry, TrackedIo};
use error::ProxyError;

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
        }
    }
}

/// Keeps a count of live connections and tunnels: `wait` returns when every clone is gone.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Never sent on: only its drop matters (the channel closes when the last clone is gone).
    _held: mpsc::Sender<()>,
}

impl Tracker {
    pub fn new() -> (Tracker, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (Tracker { _held: tx }, rx)
    }
}

/// Waits until every `Tracker` clone was dropped.
pub async fn wait_for_drain(mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {}
}

/// Shared state of all entrypoints.
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    client: upstream::UpstreamClient,
    settings: Settings,
    server_name: HeaderValue,
}

/// What a request knows of its connection.
#[derive(Clone)]
struct ConnInfo {
    entrypoint: Arc<str>,
    peer: SocketAddr,
    /// The peer's address (IPv4-mapped shown as IPv4), ready for `X-Forwarded-For`/`X-Real-Ip`.
    client_ip: HeaderValue,
    /// Whether the peer is in `--trusted-ips` (its forwarding headers are kept).
    trusted: bool,
    activity: Arc<Activity>,
    tracker: Tracker,
}

impl Proxy {
    pub fn new(table: Arc<ArcSwap<RouteTable>>, settings: Settings) -> Arc<Self> {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let server_name =
            HeaderValue::from_str(&host).unwrap_or_else(|_| HeaderValue::from_static("switchyard"));
        Arc::new(Proxy {
            client: upstream::client(
                settings.upstream_connect_timeout,
                settings.upstream_idle_timeout,
            ),
            table,
            settings,
            server_name,
        })
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve_entrypoint(
        self: Arc<Self>,
        name: String,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        tracker: Tracker,
    ) {
        let entrypoint: Arc<str> = name.into();
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
            let _ = stream.set_nodelay(true);
            let ip = canonical_ip(peer.ip());
            let info = ConnInfo {
                entrypoint: entrypoint.clone(),
                peer,
                client_ip: HeaderValue::from_str(&ip.to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                trusted: self.settings.trusted_ips.iter().any(|n| n.contains(&ip)),
                activity: Activity::new(),
                tracker: tracker.clone(),
            };
            let span = debug_span!("conn", %peer, entrypoint = %entrypoint);
            tokio::spawn(
                self.clone()
                    .serve_connection(stream, info, shutdown.clone())
                    .instrument(span),
            );
        }
        debug!(entrypoint = %entrypoint, "stopped accepting");
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        info: ConnInfo,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let activity = info.activity.clone();
        let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
        let proxy = self.clone();
        let svc_info = info.clone();
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let info = svc_info.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // Header and idle timeouts are enforced by `Activity`, which can tell them apart.
            .header_read_timeout(None)
            .max_buf_size(self.settings.max_header_bytes.max(8192))
            .keep_alive(true);
        let conn = builder.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        // Timeouts and the shutdown signal are watched by a separate task, so a wake-up of the
        // connection (every read and write) polls only the connection and one oneshot.
        let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<Expiry>();
        let (header_read, idle) = (
            self.settings.header_read_timeout,
            self.settings.idle_timeout,
        );
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
                        debug!(peer = %info.peer, error = %e, "downstream connection ended with an error");
                    }
                    break;
                }
                why = &mut close_rx, if !closing => {
                    closing = true;
                    match why {
                        Ok(Expiry::HeaderRead) => {
                            debug!(peer = %info.peer, "request head not received in time; closing");
                            break;
                        }
                        // Idle, or shutting down: finish what is in flight, then close.
                        Ok(Expiry::Idle) | Err(_) => conn.as_mut().graceful_shutdown(),
                    }
                }
            }
        }
        watchdog.abort();
        drop(info);
    }

    async fn handle(&self, req: Request<Incoming>, info: &ConnInfo) -> Response<ProxyBody> {
        let guard = info.activity.begin();
        // Cheap clones (shared bytes), kept for the log line of a failed request.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let span = debug_span!("request", %method, path = uri.path());
        let resp = match self.route_request(req, info).instrument(span).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    ProxyError::NoRoute
                    | ProxyError::BadRequest(_)
                    | ProxyError::ConnectNotAllowed => {
                        debug!(peer = %info.peer, %method, path = uri.path(), error = %e, "request refused")
                    }
                    _ => {
                        warn!(peer = %info.peer, %method, path = uri.path(), error = %e, "request failed")
                    }
                }
                e.into_response()
            }
        };
        resp.map(|b| b.guarded(guard))
    }

    async fn route_request(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::ConnectNotAllowed);
        }
        let host = request_host(&req)?;
        let table = self.table.load_full();
        let route = {
            let view = RequestView {
                method: req.method(),
                host: &host,
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
                client_ip: info.peer.ip(),
            };
            match table.lookup(&info.entrypoint, &view) {
                Ok(Some(route)) => route.clone(),
                Ok(None) => return Err(ProxyError::NoRoute),
                Err(e) => {
                    return Err(ProxyError::Hook {
                        route: e.route,
                        message: e.message,
                    })
                }
            }
        };
        // Forwarding headers are settled before the middlewares run (as at a Traefik
        // entrypoint): hooks see what the backend will see, and headers middlewares set
        // (X-Forwarded-Prefix) are not taken for client spoofing.
        let websocket = forward::is_websocket_upgrade(req.headers());
        let down = forward::Downstream {
            client_ip: &info.client_ip,
            trusted: info.trusted,
            proto: if websocket { "ws" } else { "http" },
            server_name: &self.server_name,
        };
        forward::prepare_request(req.headers_mut(), &down);
        if !route.middlewares.is_empty() {
            if let Some(answer) = request_phase(&route, &mut req, &host, info.peer.ip())? {
                return Ok(answer);
            }
        }
        match &route.target {
            Target::Handler(h) => Ok(handler_response(h)),
            Target::Service(svc) => {
                let server = svc.pick().ok_or_else(|| ProxyError::NoServer {
                    service: svc.name.clone(),
                })?;
                let downstream_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
                self.forward(req, info, &route, svc, server, downstream_upgrade)
                    .await
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
        route: &Route,
        svc: &Service,
        server: &Server,
        downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if downstream_upgrade.is_some() {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            parts
                .headers
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        if !svc.pass_host_header {
            parts.headers.remove(header::HOST);
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(server.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        parts.version = Version::HTTP_11;
        let server_name = server.authority.as_str();
        debug!(route = %route.name, service = %svc.name, server = server_name, "forwarding");

        let sent = self.client.request(Request::from_parts(parts, body));
        let mut resp =
            match tokio::time::timeout(self.settings.upstream_response_timeout, sent).await {
                Err(_) => {
                    return Err(ProxyError::UpstreamTimeout {
                        server: server_name.to_string(),
                        phase: "response header",
                    })
                }
                Ok(Err(e)) => return Err(upstream::classify(&e, server_name)),
                Ok(Ok(resp)) => resp,
            };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = downstream_upgrade else {
                return Err(ProxyError::Upstream {
                    server: server_name.to_string(),
                    reason: "101 to a request that did not ask to upgrade".into(),
                });
            };
            let upstream = hyper::upgrade::on(&mut resp);
            let (parts, _) = resp.into_parts();
            tokio::spawn(tunnel(
                downstream,
                upstream,
                info.tracker.clone(),
                route.name.clone(),
            ));
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
        let (mut parts, body) = resp.into_parts();
        forward::clean_response(&mut parts.headers);
        Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
    }
}

/// Copies bytes both ways between an upgraded client and backend until either side closes.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    tracker: Tracker,
    route: String,
) {
    let (down, up) = tokio::join!(downstream, upstream);
    match (down, up) {
        (Ok(down), Ok(up)) => {
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                Ok((from_client, from_server)) => {
                    debug!(%route, from_client, from_server, "websocket closed")
                }
                Err(e) => debug!(%route, error = %e, "websocket ended with an error"),
            }
        }
        (Err(e), _) | (_, Err(e)) => info!(%route, error = %e, "websocket upgrade failed"),
    }
    drop(tracker);
}

/// Runs the route's request-phase middlewares in order on `req`. `Some` is a direct answer.
fn request_phase(
    route: &Route,
    req: &mut Request<Incoming>,
    host: &str,
    peer: std::net::IpAddr,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let hook_error = |message: String| ProxyError::Hook {
        route: route.name.clone(),
        message,
    };
    for m in &route.middlewares {
        match m {
            Middleware::OnRequest(h) => {
                if let Some(answer) = run_hook(h.as_ref(), req, host, peer).map_err(hook_error)? {
                    return Ok(Some(answer));
                }
            }
            native => {
                if let Some(edit) = native.rewrite_path(req.uri().path()) {
                    let query = req.uri().query().map(str::to_string);
                    set_path_and_query(req, edit.path, query.as_deref()).map_err(|()| {
                        hook_error(format!("{} produced an invalid path", native.describe()))
                    })?;
                    if let Some((name, value)) = edit.header {
                        if let Ok(v) = HeaderValue::from_str(&value) {
                            req.headers_mut().insert(name, v);
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Runs one script hook on `req` (headers are moved in and out, not copied) and writes its edits
/// back. `Some` is a direct answer.
fn run_hook(
    hook: &dyn RequestHook,
    req: &mut Request<Incoming>,
    host: &str,
    peer: std::net::IpAddr,
) -> Result<Option<Response<ProxyBody>>, String> {
    let mut hr = HookRequest {
        method: req.method().clone(),
        host: host.to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers: std::mem::take(req.headers_mut()),
        client_ip: canonical_ip(peer),
    };
    let outcome = hook.on_request(&mut hr);
    *req.headers_mut() = std::mem::take(&mut hr.headers);
    let outcome = outcome?;
    *req.method_mut() = hr.method;
    if req.uri().path() != hr.path || req.uri().query().unwrap_or("") != hr.query {
        let query = (!hr.query.is_empty()).then_some(hr.query.as_str());
        set_path_and_query(req, hr.path.clone(), query)
            .map_err(|()| "hook produced an invalid path".to_string())?;
    }
    Ok(match outcome {
        HookOutcome::Continue => None,
        HookOutcome::Respond(h) => Some(handler_response(&h)),
    })
}

fn set_path_and_query(
    req: &mut Request<Incoming>,
    path: String,
    query: Option<&str>,
) -> Result<(), ()> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).map_err(|_| ())?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ())?;
    Ok(())
}

/// The host a request names: the absolute-form URI's authority, else the `Host` header;
/// lowercase, without port or trailing dot.
fn request_host(req: &Request<Incoming>) -> Result<String, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(normalize_host(a.host()));
    }
    let mut values = req.headers().get_all(header::HOST).iter();
    let Some(value) = values.next() else {
        if req.version() == Version::HTTP_11 {
            return Err(ProxyError::BadRequest("missing Host header"));
        }
        return Ok(String::new());
    };
    if values.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let raw = value.as_bytes();
    if raw.is_empty() || !raw.iter().all(|b| is_host_byte(*b)) {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    let text =
        std::str::from_utf8(raw).map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
    Ok(normalize_host(strip_port(text)))
}

/// Bytes allowed in a Host header: RFC 3986 reg-name / IP literal characters plus `:`.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').and_then(|i| host.get(..=i)).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn handler_response(h: &Handler) -> Response<ProxyBody> {
    match h {
        Handler::Respond { status, body } => {
            let mut resp = error::plain(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                String::new(),
            );
            *resp.body_mut() = ProxyBody::full(Bytes::from(body.clone()));
            resp
        }
        Handler::Redirect {
            location,
            permanent,
        } => {
            let status = if *permanent {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::FOUND
            };
            let mut resp = error::plain(status, String::new());
            if let Ok(v) = HeaderValue::from_str(location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_parsing() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert!(!b"a b".iter().all(|b| is_host_byte(*b)));
        assert!(b"API.Example.com:80".iter().all(|b| is_host_byte(*b)));
    }
}
