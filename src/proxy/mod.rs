//! The proxy: the only code that touches client and backend sockets.
//!
//! Owns entrypoint accept loops, downstream HTTP/1.1 connections (timeouts, graceful shutdown),
//! the per-request pipeline (route lookup → handler or balancer → upstream) and websocket
//! tunnels. Phase order for one request:
//!
//! ```text
//! accept (max-connections) ─► read head (exact size limit) ─► canonicalize (CONNECT 405, one
//!   Host, canonical path; ambiguous → 400) ─► table.lookup ─► forwarding headers
//!   ─► request-phase middlewares (pipeline.rs; may answer) ─┬─► handler answer
//!                                                          └─► service.pick ─► upstream (retry)
//!   ─► response-phase middlewares (reverse order) ─► compress ─► downstream
//! ```
//!
//! Invariants: every decision is made on the request `canonicalize` made (the one the server
//! receives); each request reads exactly one table snapshot (`ArcSwap::load_full`) and keeps it
//! until it finishes, so a reload never changes a request mid-way; bodies stream through and are
//! never buffered whole; every failure becomes a response in `error` (no panics, no hangs).

pub mod access_log;
pub mod body;
pub mod compress;
pub mod conn;
pub mod dry;
pub mod error;
pub mod forward;
pub mod health;
mod pipeline;
mod record;
pub mod upstream;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::canonical;
use crate::canonical::PathOptions;
use crate::middleware::Store;
use crate::routing::matcher::canonical_ip;
use crate::routing::{Handler, RequestView, Route, RouteTable, Server, Service, Target};
use body::ProxyBody;
use conn::{Activity, Expiry, TrackedIo};
use error::ProxyError;
use upstream::{Failure, UpBody};

/// Bodies up to this size are kept in memory when a `retry` middleware may need to send them
/// again; larger (or unknown-length) bodies get one attempt.
const RETRY_BODY_LIMIT: u64 = 1 << 20;

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
    /// Connections open now, over every worker (shared by the clones of these options).
    open: Arc<AtomicUsize>,
}

/// The default cap on an entrypoint's open connections: generous, a guard against descriptor
/// exhaustion rather than a tuning knob.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

impl Default for EntrypointOptions {
    fn default() -> Self {
        EntrypointOptions {
            path: PathOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl EntrypointOptions {
    /// Counts one more open connection, or `None` when the entrypoint is at its cap.
    fn admit(&self) -> Option<OpenConnection> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let conn = OpenConnection(self.open.clone());
        (n < self.max_connections).then_some(conn)
    }
}

/// One admitted connection; uncounted when dropped.
struct OpenConnection(Arc<AtomicUsize>);

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
    store: Arc<Store>,
    recorder: Arc<crate::replay::recorder::Recorder>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The access log, when on (the one check per request).
    access_log: Option<Arc<access_log::AccessLog>>,
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
    /// The entrypoint's index in the metrics registry.
    ep: usize,
    /// The entrypoint's path rules.
    path: PathOptions,
}

impl Proxy {
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        settings: Settings,
        store: Arc<Store>,
    ) -> Arc<Self> {
        Proxy::with_recorder(
            table,
            settings,
            store,
            crate::replay::recorder::Recorder::off(),
        )
    }

    /// A proxy whose requests go to `recorder` while it records.
    pub fn with_recorder(
        table: Arc<ArcSwap<RouteTable>>,
        settings: Settings,
        store: Arc<Store>,
        recorder: Arc<crate::replay::recorder::Recorder>,
    ) -> Arc<Self> {
        let metrics = crate::metrics::Metrics::new(&[]);
        Proxy::with_observers(table, settings, store, recorder, metrics, None)
    }

    /// A proxy counting its traffic in `metrics` (the router's registry) and writing every
    /// request to `access_log`, when given.
    pub fn with_observers(
        table: Arc<ArcSwap<RouteTable>>,
        settings: Settings,
        store: Arc<Store>,
        recorder: Arc<crate::replay::recorder::Recorder>,
        metrics: Arc<crate::metrics::Metrics>,
        access_log: Option<Arc<access_log::AccessLog>>,
    ) -> Arc<Self> {
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
            store,
            recorder,
            metrics,
            access_log,
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
        let ep = self.metrics.entrypoint_index(&name);
        let options = self.settings.entrypoint(&name).cloned().unwrap_or_default();
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
            let Some(admitted) = options.admit() else {
                // Over the cap: closed before a byte is read (the kernel's backlog is not grown).
                debug!(entrypoint = %entrypoint, %peer, max = options.max_connections, "connection refused: entrypoint at max-connections");
                drop(stream);
                continue;
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
                ep,
                path: options.path,
            };
            let span = debug_span!("conn", %peer, entrypoint = %entrypoint);
            let conn = self
                .clone()
                .serve_connection(stream, info, shutdown.clone());
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

    async fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        info: ConnInfo,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _open = self.metrics.connection(info.ep);
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
            // The head limit is exact (request line and headers as received, whatever the read
            // sizes); the buffer has room for it plus the start of a body.
            .max_header_size(self.settings.max_header_bytes)
            .max_buf_size(
                self.settings
                    .max_header_bytes
                    .saturating_add(8192)
                    .max(16384),
            )
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
        let started = Instant::now();
        let mut matched = None;
        // One atomic load when recording is off.
        let mut rec = self
            .recorder
            .is_on()
            .then(|| Box::new(record::begin(&req, info, &self.recorder)));
        let mut alog = self
            .access_log
            .as_ref()
            .map(|l| Box::new(l.begin(&req, info.peer, &info.entrypoint)));
        let resp = match self
            .route_request(
                req,
                info,
                rec.as_deref_mut(),
                &mut matched,
                alog.as_deref_mut(),
            )
            .instrument(span)
            .await
        {
            Ok(resp) => resp,
            Err(e) => failed(e, info, &method, &uri),
        };
        self.metrics.request(
            info.ep,
            matched.as_deref(),
            &method,
            resp.status(),
            started.elapsed(),
        );
        if let Some(rec) = rec {
            record::finish(*rec, resp.status(), &self.recorder);
        }
        if let (Some(log), Some(entry)) = (&self.access_log, alog) {
            log.finish(entry, &resp);
        }
        resp.map(|b| b.guarded(guard))
    }

    async fn route_request(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
        mut rec: Option<&mut record::Pending>,
        matched: &mut Option<Arc<Route>>,
        mut alog: Option<&mut access_log::Entry>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let host = canonicalize(&mut req, &info.path)?;
        let table = self.table.load_full();
        let route = find_route(&table, &info.entrypoint, &req, &host, info.peer.ip())?;
        *matched = Some(route.clone());
        if let Some(r) = rec.as_deref_mut() {
            record::route(r, &route);
        }
        if let Some(l) = alog.as_deref_mut() {
            l.route(&route.name);
        }
        let websocket = self.forwarding_headers(&mut req, &info.client_ip, info.trusted);
        if route.steps.is_empty() {
            return match &route.target {
                Target::Handler(h) => Ok(handler_response(h)),
                Target::Service(svc) => {
                    let mut plan = pipeline::Plan {
                        path: info.path,
                        ..Default::default()
                    };
                    self.proxy_service(
                        req, info, &host, &route, svc, websocket, &mut plan, rec, alog,
                    )
                    .await
                }
            };
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let mut plan = pipeline::Plan {
            path: info.path,
            ..Default::default()
        };
        let outcome =
            match pipeline::request_phase(self, &route, &mut req, &host, info.peer.ip(), &mut plan)
                .await
            {
                Err(e) => Err(e),
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => match &route.target {
                    Target::Handler(h) => Ok(handler_response(h)),
                    Target::Service(svc) => {
                        self.proxy_service(
                            req,
                            info,
                            &host,
                            &route,
                            svc,
                            websocket,
                            &mut plan,
                            rec,
                            alog.as_deref_mut(),
                        )
                        .await
                    }
                },
            };
        let resp = match outcome {
            Ok(r) => r,
            Err(e) => failed(e, info, &method, &uri),
        };
        if let Some(l) = alog {
            l.user(plan.user.take());
        }
        Ok(pipeline::response_phase(self, &route, &mut plan, resp, info.peer.ip()).await)
    }

    /// Settles the forwarding headers before the middlewares run (as at a Traefik entrypoint):
    /// hooks see what the backend will see, and headers middlewares set (X-Forwarded-Prefix) are
    /// not taken for client spoofing. Returns whether the request asks for a websocket.
    fn forwarding_headers<B>(
        &self,
        req: &mut Request<B>,
        client_ip: &HeaderValue,
        trusted: bool,
    ) -> bool {
        // An upgrade is an HTTP/1.1 mechanism: on HTTP/1.0 the headers are dropped as hop-by-hop.
        let websocket =
            req.version() == Version::HTTP_11 && forward::is_websocket_upgrade(req.headers());
        let down = forward::Downstream {
            client_ip,
            trusted,
            proto: if websocket { "ws" } else { "http" },
            server_name: &self.server_name,
        };
        forward::prepare_request(req.headers_mut(), &down);
        websocket
    }

    /// Sends the request to a server of `svc`: body buffering, balancer pick (sticky, health),
    /// retries, passive health and circuit-breaker accounting, then the response head.
    #[allow(clippy::too_many_arguments)]
    async fn proxy_service(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
        host: &str,
        route: &Route,
        svc: &Service,
        websocket: bool,
        plan: &mut pipeline::Plan,
        mut rec: Option<&mut record::Pending>,
        mut alog: Option<&mut access_log::Entry>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut downstream_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let tap = rec
            .as_deref_mut()
            .and_then(|r| record::tap_body(r, &self.recorder));
        let fault = upstream::ClientFault::default();
        let mut body = Some(match tap {
            Some(tap) => UpBody::Tapped(body, tap, fault.clone()),
            None => UpBody::Incoming(body, fault.clone()),
        });
        if let Some(limit) = plan.buffering.as_ref().and_then(|b| b.max_request_body) {
            body = Some(UpBody::Full(Some(
                self.buffer_request(body, &parts, limit).await?,
            )));
        }
        let mut attempts = plan.retry.as_ref().map_or(1, |r| r.attempts.max(1));
        // A body sent more than once must be in memory.
        let mut replay: Option<Option<Bytes>> = None;
        if attempts > 1 && !websocket {
            match body.take() {
                Some(UpBody::Full(b)) => replay = Some(b),
                Some(b) if http_body::Body::is_end_stream(&b) => replay = Some(None),
                Some(b)
                    if content_length(&parts.headers).is_some_and(|n| n <= RETRY_BODY_LIMIT) =>
                {
                    replay = Some(Some(
                        self.buffer_request(Some(b), &parts, RETRY_BODY_LIMIT)
                            .await?,
                    ));
                }
                other => {
                    body = other;
                    attempts = 1;
                }
            }
        } else {
            attempts = 1;
        }
        let mut last_error = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                if let Some(p) = &plan.retry {
                    let factor = 1u32 << (attempt - 1).min(16);
                    tokio::time::sleep(p.initial_interval.saturating_mul(factor)).await;
                }
            }
            let view = RequestView {
                method: &parts.method,
                host,
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                client_ip: info.peer.ip(),
            };
            let pick = svc
                .pick(&view, Instant::now())
                .map_err(|message| ProxyError::Hook {
                    route: route.name.clone(),
                    message,
                })?;
            let Some(pick) = pick else {
                return Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
                    service: svc.name.clone(),
                }));
            };
            let (Some(server), Some(state)) = (pick.at.server(), pick.at.state()) else {
                return Err(ProxyError::NoServer {
                    service: svc.name.clone(),
                });
            };
            if !route.steps.is_empty() {
                plan.server = Some(server.authority.clone());
            }
            if let Some(r) = rec.as_deref_mut() {
                record::forward(r, &pick.at.service.name, server, &parts.uri);
            }
            if let Some(l) = alog.as_deref_mut() {
                l.forward(&pick.at.service.name, server);
            }
            let last = attempt + 1 == attempts;
            let headers = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            let up_body = match &replay {
                Some(b) => UpBody::Full(b.clone()),
                None => body.take().unwrap_or_else(UpBody::empty),
            };
            let in_flight = state.begin();
            let started = Instant::now();
            let sent = self
                .send(
                    &parts,
                    headers,
                    up_body,
                    server,
                    pick.at.service.pass_host_header,
                    websocket,
                )
                .await;
            match sent {
                Ok(resp) => {
                    if let Some(l) = alog.as_deref_mut() {
                        l.origin(resp.status(), resp.headers());
                    }
                    state.record_success();
                    plan.record(Some(resp.status().as_u16()), started.elapsed());
                    debug!(route = %route.name, service = %pick.at.service.name, server = server.authority.as_str(), status = resp.status().as_u16(), "forwarded");
                    return self
                        .finish(
                            resp,
                            info,
                            route,
                            server,
                            downstream_upgrade.take(),
                            pick.set_cookie,
                            in_flight,
                            plan,
                        )
                        .await;
                }
                Err(Failure { error, never_sent }) => {
                    drop(in_flight);
                    if fault.is_set() {
                        // The client's body broke the exchange: the server is not to blame and
                        // the body cannot be sent again.
                        return Err(ProxyError::ClientBody {
                            source: Some(Box::new(error)),
                        });
                    }
                    self.metrics.upstream_error(
                        &pick.at.service.name,
                        upstream_error_kind(&error, never_sent),
                    );
                    if let Some(policy) = &pick.at.pool.passive {
                        if state.record_failure(policy, Instant::now()) {
                            warn!(service = %pick.at.service.name, server = server.authority.as_str(), cooldown = ?policy.cooldown, "server ejected after consecutive failures");
                        }
                    }
                    plan.record(None, started.elapsed());
                    let retryable = never_sent || is_idempotent(&parts.method);
                    if last || !retryable {
                        return Err(error);
                    }
                    debug!(route = %route.name, server = server.authority.as_str(), error = %error, attempt, "retrying");
                    self.metrics.retry(&svc.name);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
            service: svc.name.clone(),
        }))
    }

    async fn buffer_request(
        &self,
        body: Option<UpBody>,
        parts: &http::request::Parts,
        limit: u64,
    ) -> Result<Bytes, ProxyError> {
        if content_length(&parts.headers).is_some_and(|n| n > limit) {
            return Err(ProxyError::RequestTooLarge { limit });
        }
        let Some(body) = body else {
            return Ok(Bytes::new());
        };
        pipeline::collect_limited(body, limit)
            .await
            .map_err(|e| match e {
                Ok(()) => ProxyError::RequestTooLarge { limit },
                Err(why) => ProxyError::ClientBody {
                    source: Some(why.into()),
                },
            })
    }

    /// One exchange with one server, up to the response head.
    async fn send(
        &self,
        parts: &http::request::Parts,
        mut headers: http::HeaderMap,
        body: UpBody,
        server: &Server,
        pass_host_header: bool,
        websocket: bool,
    ) -> Result<Response<Incoming>, Failure> {
        let server_name = server.authority.as_str();
        let uri = upstream_head(
            &parts.uri,
            &mut headers,
            server,
            pass_host_header,
            websocket,
        )
        .map_err(|error| Failure {
            error,
            never_sent: true,
        })?;
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers;
        let sent = self.client.request(up);
        match tokio::time::timeout(self.settings.upstream_response_timeout, sent).await {
            Err(_) => Err(Failure {
                error: ProxyError::UpstreamTimeout {
                    server: server_name.to_string(),
                    phase: "response header",
                },
                never_sent: false,
            }),
            Ok(Err(e)) => Err(upstream::classify(e, server_name)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Turns a server's response head into the downstream response: websocket tunnel, header
    /// clean-up, sticky cookie, response buffering.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut resp: Response<Incoming>,
        info: &ConnInfo,
        route: &Route,
        server: &Server,
        downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
        set_cookie: Option<HeaderValue>,
        in_flight: crate::balance::InFlight,
        plan: &pipeline::Plan,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let server_name = server.authority.as_str();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = downstream_upgrade else {
                return Err(ProxyError::Upstream {
                    server: server_name.to_string(),
                    what: "101 to a request that did not ask to upgrade",
                    source: None,
                });
            };
            let upstream = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            // A client that opens its session with a websocket (socket.io's websocket-only
            // transport) is pinned by the handshake answer.
            if let Some(c) = set_cookie {
                parts.headers.append(header::SET_COOKIE, c);
            }
            tokio::spawn(tunnel(
                downstream,
                upstream,
                info.tracker.clone(),
                route.name.clone(),
                in_flight,
            ));
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
        let (mut parts, body) = resp.into_parts();
        forward::clean_response(&mut parts.headers);
        if let Some(c) = set_cookie {
            parts.headers.append(header::SET_COOKIE, c);
        }
        let body = match plan.buffering.as_ref().and_then(|b| b.max_response_body) {
            None => ProxyBody::upstream(body),
            Some(limit) => match pipeline::collect_limited(body, limit).await {
                Ok(bytes) => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    ProxyBody::full(bytes)
                }
                Err(Ok(())) => {
                    return Err(ProxyError::ResponseTooLarge {
                        server: server_name.to_string(),
                        limit,
                    })
                }
                Err(Err(reason)) => {
                    return Err(ProxyError::Upstream {
                        server: server_name.to_string(),
                        what: "response body",
                        source: Some(reason.into()),
                    })
                }
            },
        };
        Ok(Response::from_parts(
            parts,
            body.with_server(Some(in_flight)),
        ))
    }
}

/// The route a request takes: the table's lookup, its failures as errors. Shared by the live
/// path and dry runs.
fn find_route<B>(
    table: &RouteTable,
    entrypoint: &str,
    req: &Request<B>,
    host: &str,
    peer: std::net::IpAddr,
) -> Result<Arc<Route>, ProxyError> {
    let view = RequestView {
        method: req.method(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
        client_ip: peer,
    };
    match table.lookup(entrypoint, &view) {
        Ok(Some(route)) => Ok(route.clone()),
        Ok(None) => Err(ProxyError::NoRoute),
        Err(e) => Err(ProxyError::Hook {
            route: e.route,
            message: e.message,
        }),
    }
}

/// The head of the request as it leaves for `server`: the target URI and the header edits made
/// at the last moment (websocket upgrade headers, `Host` unless passed). Shared by the live
/// exchange and dry runs.
fn upstream_head(
    uri: &Uri,
    headers: &mut http::HeaderMap,
    server: &Server,
    pass_host_header: bool,
    websocket: bool,
) -> Result<Uri, ProxyError> {
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if !pass_host_header {
        headers.remove(header::HOST);
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme("http")
        .authority(server.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

/// Logs a failed request and turns it into its response.
fn failed(e: ProxyError, info: &ConnInfo, method: &Method, uri: &Uri) -> Response<ProxyBody> {
    match e.side() {
        error::Side::Client => {
            debug!(peer = %info.peer, %method, path = uri.path(), error = %e, "request refused")
        }
        error::Side::Router | error::Side::Upstream => {
            warn!(peer = %info.peer, %method, path = uri.path(), error = %e, "request failed")
        }
    }
    e.into_response()
}

/// The `kind` label of a failed exchange.
fn upstream_error_kind(e: &ProxyError, never_sent: bool) -> crate::metrics::UpstreamErrorKind {
    use crate::metrics::UpstreamErrorKind as K;
    match e {
        ProxyError::UpstreamTimeout { .. } => K::Timeout,
        _ if never_sent => K::Connect,
        _ => K::Other,
    }
}

/// Methods RFC 9110 calls idempotent: safe to send again after the server may have seen them.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Copies bytes both ways between an upgraded client and backend until either side closes.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    tracker: Tracker,
    route: String,
    in_flight: crate::balance::InFlight,
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
    drop(in_flight);
    drop(tracker);
}

pub(super) fn set_path_and_query<B>(
    req: &mut Request<B>,
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

/// Makes `req` the canonical request every later decision reads, and returns its host
/// (lowercase, without port or trailing dot).
///
/// - The target: an absolute-form URI (`GET http://a.test/x`) names the host (RFC 9112 §3.2.2):
///   its authority replaces any `Host` header and the target becomes origin-form; userinfo in it
///   is refused. Otherwise exactly one valid `Host` (HTTP/1.1 requires one).
/// - The path: canonicalised by the entrypoint's rules (`canonical::canonical_path`); ambiguous
///   spellings are refused with 400.
/// - `CONNECT` is refused (405): the router opens no tunnels.
pub(crate) fn canonicalize<B>(
    req: &mut Request<B>,
    opts: &PathOptions,
) -> Result<String, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }
    let bad_host = |e: canonical::HostError| ProxyError::BadRequest(e.reason());
    let host = if let Some(authority) = req.uri().authority().cloned() {
        let parsed = canonical::parse_host(authority.as_str().as_bytes()).map_err(bad_host)?;
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        req.headers_mut().insert(header::HOST, value);
        parsed.host
    } else {
        let mut values = req.headers().get_all(header::HOST).iter();
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
            (Some(v), None) => canonical::parse_host(v.as_bytes()).map_err(bad_host)?.host,
            (None, _) if req.version() == Version::HTTP_11 => {
                return Err(ProxyError::BadRequest("missing Host header"))
            }
            (None, _) => String::new(),
        }
    };
    let path = req.uri().path();
    let canon_path =
        canonical::canonical_path(path, opts).map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let changed = matches!(canon_path, std::borrow::Cow::Owned(_));
    if changed || req.uri().authority().is_some() {
        let canon_path = canon_path.into_owned();
        let query = req.uri().query().map(str::to_string);
        set_path_and_query(req, canon_path, query.as_deref())
            .map_err(|()| ProxyError::BadRequest("invalid request target"))?;
        // Origin-form from here on: the authority now lives in `Host` only.
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = None;
        parts.authority = None;
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    Ok(host)
}

/// The host a request names, as well as it can be told, for a recording of what arrived (the
/// decision itself uses `canonicalize`).
pub(super) fn recorded_host<B>(req: &Request<B>) -> String {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(&b""[..], |v| v.as_bytes()),
    };
    canonical::parse_host(raw).map_or_else(|_| String::new(), |h| h.host)
}

pub(super) fn handler_response(h: &Handler) -> Response<ProxyBody> {
    match h {
        Handler::Respond {
            status,
            body,
            headers,
        } => {
            let mut resp = error::plain(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                String::new(),
            );
            *resp.body_mut() = ProxyBody::full(Bytes::from(body.clone()));
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    resp.headers_mut().append(n, v);
                }
            }
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
    fn canonical_request() {
        let opts = PathOptions::default();
        let mut req = Request::builder()
            .uri("http://A.test:8080/x/%2e%2e/y?q=1")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert_eq!(canonicalize(&mut req, &opts).unwrap(), "a.test");
        assert_eq!(req.uri().to_string(), "/y?q=1");
        assert_eq!(req.headers()["host"], "A.test:8080");
        let mut two = Request::builder()
            .uri("/")
            .header("host", "a.test")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert!(canonicalize(&mut two, &opts).is_err());
        let mut bad = Request::builder()
            .uri("/a%2fb")
            .header("host", "a.test")
            .body(())
            .unwrap();
        assert!(matches!(
            canonicalize(&mut bad, &opts),
            Err(ProxyError::BadRequest("encoded slash in path"))
        ));
        let mut userinfo = Request::builder().uri("http://u@a.test/").body(()).unwrap();
        assert!(canonicalize(&mut userinfo, &opts).is_err());
    }
}
