//! Built-in echo backend, in the spirit of Traefik's `whoami` image.
//!
//! Switchyard uses it for demos, as the real backend behind the proxy in the
//! integration tests, and in container images. This module owns:
//!
//! * the accept loop over an already-bound [`TcpListener`] ([`serve`]),
//! * one HTTP/1.1 connection task per accepted socket (hyper 1.x, upgrades
//!   enabled), including the WebSocket echo that follows a `101`,
//! * graceful shutdown: stop accepting, tell every in-flight connection to
//!   finish (`graceful_shutdown`, WebSocket close `1001`), wait at most
//!   [`SHUTDOWN_GRACE`], then abort whatever is left,
//! * the per-server `/health` status set by `POST /health`.
//!
//! Endpoints (exact paths; everything else is the echo):
//!
//! * any other path, any method: `200 text/plain` echo of the request
//!   (see [`serve`] for the exact format), followed by a blank line and the
//!   request body when there is one (body capped at [`MAX_BODY`], over → 413),
//! * `/api`: the same information as JSON,
//! * `/health`: `POST` with a status code as body (e.g. `503`) sets this
//!   server's health status; any other method answers it, with body `ok`
//!   (status < 400) or `unhealthy`; the default is `200 ok`,
//! * `/data?size=N`: `N` bytes of `a..z` repeating, streamed with a
//!   Content-Length,
//! * `Upgrade: websocket` on any path: handshake, then echo of every text and
//!   binary message until the peer closes.
//!
//! Query parameters on any path: `status=NNN` (200..=599) overrides the status
//! of a successful answer; `delay=D` or `wait=D` (Go duration such as `150ms`,
//! `2s`, `1m30s`, or plain milliseconds, capped at [`MAX_DELAY`]) sleeps first.
//! Invalid values answer `400` with a one-line reason.
//!
//! Invariants:
//!
//! * every response produced here carries `X-Whoami-Name: <name>` (only the
//!   errors hyper itself sends for unparsable requests lack it);
//! * no request can make it panic, allocate without bound (request bodies
//!   are capped, `/data` is streamed as slices of one shared pattern buffer,
//!   WebSocket messages are bounded by tungstenite's default limits) or sleep
//!   longer than [`MAX_DELAY`];
//! * a failing connection only ends that connection: the accept loop keeps
//!   going through per-connection and resource-exhaustion accept errors.
//!
//! It must never bind sockets itself (the caller owns the listener), keep
//! process-global state (all state lives in one [`serve`] call), or outlive
//! [`serve`]: once [`serve`] returns, or its future is dropped, no task it
//! started is still running.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// How long in-flight connections get to finish once shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request body that is read (echo, `POST /health`); larger → 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest `/data` answer; larger sizes are clamped to it.
pub const MAX_DATA: u64 = 100 * 1024 * 1024;
/// Longest `delay=`/`wait=`; longer values are clamped to it.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Size of one `/data` chunk.
const DATA_CHUNK: usize = 64 * 1024;
/// Time a client gets to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a WebSocket peer gets to answer our close frame during shutdown.
const WS_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Pause after an accept error that is not about one connection (EMFILE...).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

const X_WHOAMI_NAME: HeaderName = HeaderName::from_static("x-whoami-name");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

type RespBody = Either<Full<Bytes>, DataBody>;

/// Serves the whoami backend on `listener` until `shutdown` completes.
///
/// Each accepted connection is served by hyper's HTTP/1 server (upgrades
/// enabled) in its own task. When `shutdown` completes the listener is
/// dropped (new connections are refused), every connection is told to shut
/// down gracefully and given [`SHUTDOWN_GRACE`]; tasks still running after
/// that are aborted. Returns `Err` only if the listener itself is unusable
/// (accept fails with `InvalidInput`), after draining the same way.
///
/// Echo format (`text/plain; charset=utf-8`, every line ends with `\n`):
///
/// ```text
/// Name: <name>
/// Hostname: <hostname of the machine>
/// IP: <local ip of the connection>
/// RemoteAddr: <peer ip:port>
/// <METHOD> <path?query> <HTTP/1.1>
/// Host: <Host header, or the request-target's authority, or empty>
/// <Header-Name>: <value>
/// ```
///
/// One `<Header-Name>: <value>` line per header value except `Host`, in the
/// order received (the values of a repeated header are grouped at the first
/// occurrence), names in Go's canonical form (`x-custom-id` → `X-Custom-Id`).
/// If the request has a non-empty body: an empty line, then the body bytes
/// unchanged.
///
/// `/api` JSON (one line, then `\n`): `{"name", "hostname", "ip": [local ip],
/// "remoteAddr", "method", "url": path+query, "host", "headers": {lowercase
/// name: [values]}}`, where `headers` holds every header including `host`.
pub async fn serve(
    listener: TcpListener,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = Arc::new(Server::new(name));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut fatal = None;

    loop {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        Arc::clone(&server),
                        stop_rx.clone(),
                    ));
                }
                Err(err) if is_connection_error(&err) => {
                    tracing::debug!(error = %err, "whoami: accept failed for one connection");
                }
                Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
                    tracing::error!(error = %err, "whoami: listener is unusable");
                    fatal = Some(err);
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "whoami: accept failed; backing off");
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = joined {
                    tracing::warn!(error = %err, "whoami: connection task failed");
                }
            }
        }
    }

    drop(listener);
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "whoami: grace period over; aborting connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    match fatal {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Accept errors that concern a single connection, not the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// State shared by every connection of one [`serve`] call.
struct Server {
    name: String,
    hostname: String,
    name_header: HeaderValue,
    /// Status answered by `GET /health`; always a valid final status code.
    health: AtomicU16,
    /// `a..z` repeating, `DATA_CHUNK + 26` bytes: every `/data` chunk is a
    /// zero-copy slice of it.
    pattern: Bytes,
}

impl Server {
    fn new(name: String) -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let name_header = header_value_lossy(&name);
        let pattern: Vec<u8> = (0..DATA_CHUNK + 26).map(alphabet_byte).collect();
        Server {
            name,
            hostname,
            name_header,
            health: AtomicU16::new(StatusCode::OK.as_u16()),
            pattern: Bytes::from(pattern),
        }
    }
}

/// The `i`-th byte of the `/data` stream.
fn alphabet_byte(i: usize) -> u8 {
    // `i % 26 < 26`, so the cast cannot truncate.
    b'a' + (i % 26) as u8
}

/// `value` as a header value, control characters replaced by `?`.
fn header_value_lossy(value: &str) -> HeaderValue {
    let cleaned: Vec<u8> = value
        .bytes()
        .map(|b| {
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                b'?'
            } else {
                b
            }
        })
        .collect();
    HeaderValue::from_bytes(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What one connection's requests need to know about it.
struct ConnCtx {
    server: Arc<Server>,
    local: SocketAddr,
    peer: SocketAddr,
    /// Hands an accepted WebSocket upgrade to the connection task, which runs
    /// the echo once hyper has released the socket.
    upgrades: mpsc::UnboundedSender<OnUpgrade>,
}

/// Resolves once the server asks connections to stop (or the server is gone).
async fn wait_for_shutdown(stop: &mut watch::Receiver<bool>) {
    // `Err` means the sender was dropped with `serve`: stop as well.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
) {
    let local = match stream.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "whoami: connection has no local address");
            return;
        }
    };
    // Only a latency nicety: a failure changes nothing about correctness.
    let _ = stream.set_nodelay(true);
    let (upgrade_tx, mut upgrade_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(ConnCtx {
        server,
        local: canonical(local),
        peer: canonical(peer),
        upgrades: upgrade_tx,
    });
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = wait_for_shutdown(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "whoami: connection ended with an error");
    }
    if let Ok(upgrade) = upgrade_rx.try_recv() {
        websocket_echo(upgrade, peer, stop).await;
    }
}

/// An IPv4-mapped IPv6 address shown as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

async fn handle(req: Request<Incoming>, ctx: &ConnCtx) -> Response<RespBody> {
    let mut resp = respond(req, ctx).await;
    resp.headers_mut()
        .insert(X_WHOAMI_NAME, ctx.server.name_header.clone());
    resp
}

async fn respond(mut req: Request<Incoming>, ctx: &ConnCtx) -> Response<RespBody> {
    let params = match Params::parse(req.uri().query()) {
        Ok(params) => params,
        Err(msg) => return text_response(StatusCode::BAD_REQUEST, msg),
    };
    if let Some(delay) = params.delay {
        tokio::time::sleep(delay).await;
    }
    // `status=` wins over an upgrade: it lets tests see a refused handshake.
    if params.status.is_none() && is_websocket_request(req.headers()) {
        return websocket_handshake(&mut req, ctx);
    }
    let result = match req.uri().path() {
        "/api" => api(&req, ctx),
        "/health" => health(req, ctx).await,
        "/data" => data(req.uri().query(), ctx),
        _ => echo(req, ctx).await,
    };
    match result {
        Ok(mut resp) => {
            if let Some(status) = params.status {
                *resp.status_mut() = status;
            }
            resp
        }
        Err(reject) => text_response(reject.status, reject.message),
    }
}

/// An answer, or an error that `status=` must not override.
type Answer = Result<Response<RespBody>, Reject>;

/// An error answer: `status` with a one-line `text/plain` message.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
        }
    }
}

fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    full_response(status, TEXT_PLAIN, body.into())
}

fn full_response(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    resp
}

// ---------------------------------------------------------------------------
// Query parameters

/// The query parameters honoured on every path.
#[derive(Debug, Default, PartialEq)]
struct Params {
    status: Option<StatusCode>,
    delay: Option<Duration>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let status = match query_param(query, "status") {
            Some(raw) => Some(parse_status(&raw)?),
            None => None,
        };
        let delay = match query_param(query, "delay").or_else(|| query_param(query, "wait")) {
            Some(raw) => {
                Some(parse_delay(&raw).map_err(|err| format!("invalid delay {raw:?}: {err}\n"))?)
            }
            None => None,
        };
        Ok(Params { status, delay })
    }
}

/// The first value of `key` in `query`, percent-decoded (`+` is a space).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    crate::routing::matcher::query_pairs(query).find_map(|(k, v)| (k == key).then_some(v))
}

/// A status a handler may answer with: 200..=599 (1xx cannot be a final
/// response: hyper would turn it into a 500, and 101 means an upgrade).
fn parse_status(raw: &str) -> Result<StatusCode, String> {
    let code: u16 = raw
        .trim()
        .parse()
        .map_err(|_| format!("invalid status {raw:?}: expected a number between 200 and 599\n"))?;
    match code {
        101 => Err(
            "invalid status 101: Switching Protocols is only sent for WebSocket upgrades\n".into(),
        ),
        100..=199 => Err(format!(
            "invalid status {code}: informational (1xx) statuses cannot be a final response\n"
        )),
        200..=599 => StatusCode::from_u16(code)
            .map_err(|_| format!("invalid status {code}: expected a number between 200 and 599\n")),
        _ => Err(format!(
            "invalid status {code}: expected a number between 200 and 599\n"
        )),
    }
}

/// A `delay=`/`wait=` value: a duration in Traefik whoami's Go syntax (`crate::duration`)
/// clamped to [`MAX_DELAY`].
fn parse_delay(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map(|d| d.min(MAX_DELAY))
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    crate::duration::parse(raw, crate::duration::Syntax::Go)
}

// ---------------------------------------------------------------------------
// Echo and /api

/// Go's canonical MIME header form: `x-forwarded-for` → `X-Forwarded-For`.
fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// The Host header, else the request-target's authority, else empty.
fn request_host(headers: &HeaderMap, uri: &Uri) -> String {
    match headers.get(header::HOST) {
        Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        None => uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// Path and query of the request-target (`*` for `OPTIONS *`).
fn request_target(uri: &Uri) -> &str {
    uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The plain-text echo, without the body (see [`serve`] for the format).
fn echo_text(parts: &Parts, ctx: &ConnCtx) -> String {
    let mut out = String::with_capacity(256);
    // Writing into a `String` cannot fail.
    let _ = writeln!(out, "Name: {}", ctx.server.name);
    let _ = writeln!(out, "Hostname: {}", ctx.server.hostname);
    let _ = writeln!(out, "IP: {}", ctx.local.ip());
    let _ = writeln!(out, "RemoteAddr: {}", ctx.peer);
    let _ = writeln!(
        out,
        "{} {} {}",
        parts.method,
        request_target(&parts.uri),
        version_str(parts.version)
    );
    let _ = writeln!(out, "Host: {}", request_host(&parts.headers, &parts.uri));
    for (name, value) in &parts.headers {
        if name == header::HOST {
            continue;
        }
        let _ = writeln!(
            out,
            "{}: {}",
            canonical_header_name(name.as_str()),
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    out
}

async fn echo(req: Request<Incoming>, ctx: &ConnCtx) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers).await?;
    let mut out = echo_text(&parts, ctx).into_bytes();
    if !body.is_empty() {
        out.reserve(body.len() + 1);
        out.push(b'\n');
        out.extend_from_slice(&body);
    }
    Ok(text_response(StatusCode::OK, out))
}

/// Reads the whole body, at most [`MAX_BODY`] bytes.
async fn read_body(body: Incoming, headers: &HeaderMap) -> Result<Bytes, Reject> {
    let too_large = || {
        Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {MAX_BODY} bytes\n"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Reject::new(
            StatusCode::BAD_REQUEST,
            format!("failed to read request body: {err}\n"),
        )),
    }
}

#[derive(Serialize)]
struct ApiInfo<'a> {
    name: &'a str,
    hostname: &'a str,
    ip: Vec<String>,
    #[serde(rename = "remoteAddr")]
    remote_addr: String,
    method: &'a str,
    url: &'a str,
    host: String,
    headers: BTreeMap<String, Vec<String>>,
}

fn api(req: &Request<Incoming>, ctx: &ConnCtx) -> Answer {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let info = ApiInfo {
        name: &ctx.server.name,
        hostname: &ctx.server.hostname,
        ip: vec![ctx.local.ip().to_string()],
        remote_addr: ctx.peer.to_string(),
        method: req.method().as_str(),
        url: request_target(req.uri()),
        host: request_host(req.headers(), req.uri()),
        headers,
    };
    match serde_json::to_vec(&info) {
        Ok(mut json) => {
            json.push(b'\n');
            Ok(full_response(
                StatusCode::OK,
                HeaderValue::from_static("application/json"),
                Bytes::from(json),
            ))
        }
        Err(err) => Err(Reject::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {err}\n"),
        )),
    }
}

// ---------------------------------------------------------------------------
// /health

async fn health(req: Request<Incoming>, ctx: &ConnCtx) -> Answer {
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let body = read_body(body, &parts.headers).await?;
        let raw = String::from_utf8_lossy(&body);
        let status = parse_status(&raw).map_err(|msg| Reject::new(StatusCode::BAD_REQUEST, msg))?;
        ctx.server.health.store(status.as_u16(), Ordering::Relaxed);
        tracing::info!(status = status.as_u16(), "whoami: health status updated");
        return Ok(text_response(
            StatusCode::OK,
            format!("health status set to {}\n", status.as_u16()),
        ));
    }
    let code = ctx.server.health.load(Ordering::Relaxed);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let body = if status.as_u16() < 400 {
        "ok"
    } else {
        "unhealthy"
    };
    Ok(text_response(status, body))
}

// ---------------------------------------------------------------------------
// /data

fn data(query: Option<&str>, ctx: &ConnCtx) -> Answer {
    let size = match query_param(query, "size") {
        None => 1,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(size) => size.min(MAX_DATA),
            Err(_) => {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid size {raw:?}: expected a non-negative number of bytes\n"),
                ))
            }
        },
    };
    let body = DataBody {
        pattern: ctx.server.pattern.clone(),
        offset: 0,
        remaining: size,
    };
    let mut resp = Response::new(Either::Right(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Content-Length comes from the body's exact size hint (hyper leaves it
    // out where a status forbids it, e.g. `status=204`).
    Ok(resp)
}

/// `remaining` more bytes of `a..z` repeating, in chunks of at most
/// `DATA_CHUNK`, each a slice of the shared pattern.
struct DataBody {
    pattern: Bytes,
    offset: u64,
    remaining: u64,
}

impl Body for DataBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        // Both bounded by small constants, so the casts are lossless.
        let len = self.remaining.min(DATA_CHUNK as u64) as usize;
        let start = (self.offset % 26) as usize;
        let end = (start + len).min(self.pattern.len());
        let chunk = self.pattern.slice(start..end);
        let sent = chunk.len() as u64;
        if sent == 0 {
            // Unreachable with a correctly sized pattern; end rather than spin.
            self.remaining = 0;
            return Poll::Ready(None);
        }
        self.offset += sent;
        self.remaining -= sent;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// ---------------------------------------------------------------------------
// WebSocket

/// Whether any comma-separated token of any `name` header equals `token`.
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn is_websocket_request(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::UPGRADE, "websocket")
        && header_has_token(headers, header::CONNECTION, "upgrade")
}

fn websocket_handshake(req: &mut Request<Incoming>, ctx: &ConnCtx) -> Response<RespBody> {
    if req.version() != Version::HTTP_11 {
        return text_response(
            StatusCode::BAD_REQUEST,
            "websocket upgrade requires HTTP/1.1\n",
        );
    }
    let key = match req.headers().get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => key.clone(),
        _ => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "websocket upgrade without Sec-WebSocket-Key\n",
            )
        }
    };
    if let Some(version) = req.headers().get(header::SEC_WEBSOCKET_VERSION) {
        if version.as_bytes().trim_ascii() != b"13" {
            let mut resp = text_response(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported Sec-WebSocket-Version (only 13)\n",
            );
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return resp;
        }
    }
    let accept = match HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        Ok(accept) => accept,
        Err(_) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode Sec-WebSocket-Accept\n",
            )
        }
    };
    if ctx.upgrades.send(hyper::upgrade::on(req)).is_err() {
        return text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded\n",
        );
    }
    let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// Echoes text and binary messages until the peer closes. Pings are answered
/// and close handshakes completed by tungstenite on the next read. On server
/// shutdown the server closes with `1001 Going Away`.
async fn websocket_echo(upgrade: OnUpgrade, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "whoami: websocket upgrade failed");
            return;
        }
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                // Closed: close handshake completed, or the peer went away.
                None => return,
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if let Err(err) = ws.send(msg).await {
                        tracing::debug!(%peer, error = %err, "whoami: websocket send failed");
                        return;
                    }
                }
                // Ping/Pong/Close: the reply (if any) is queued by tungstenite
                // and flushed by the next read.
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "whoami: websocket read failed");
                    return;
                }
            },
            () = wait_for_shutdown(&mut stop) => break,
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: Utf8Bytes::from_static("server shutting down"),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(WS_CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::{timeout, Instant};

    const T: Duration = Duration::from_secs(10);

    struct Running {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<io::Result<()>>,
    }

    impl Running {
        async fn shutdown(mut self) -> io::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            timeout(T, self.task)
                .await
                .expect("serve did not return")
                .expect("serve panicked")
        }
    }

    async fn start(name: &str) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, name.to_owned(), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn text(&self) -> String {
            String::from_utf8(self.body.clone()).expect("utf-8 body")
        }
    }

    /// Reads one response with a Content-Length (or none: empty body).
    async fn read_response(stream: &mut TcpStream) -> Resp {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read head");
            assert!(n > 0, "EOF before end of head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .expect("status code")
            .parse()
            .expect("numeric status");
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut body = buf[head_end + 4..].to_vec();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("content-length"))
            .unwrap_or(0);
        while body.len() < len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "EOF in body");
            body.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(body.len(), len, "body longer than Content-Length");
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn request(addr: SocketAddr, raw: &str) -> Resp {
        timeout(T, async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(raw.as_bytes()).await.expect("write");
            read_response(&mut stream).await
        })
        .await
        .expect("request timed out")
    }

    async fn get(addr: SocketAddr, target: &str) -> Resp {
        request(
            addr,
            &format!("GET {target} HTTP/1.1\r\nHost: whoami.test\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    #[tokio::test]
    async fn echo_plain_text_format() {
        let srv = start("backend-1").await;
        let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
        let client = stream.local_addr().expect("client addr");
        stream
            .write_all(
                b"GET /some/path?x=1&y=two HTTP/1.1\r\nHost: example.test:8080\r\n\
                  X-Custom-Header: hello world\r\nx-multi: a\r\nX-Multi: b\r\n\
                  Connection: close\r\n\r\n",
            )
            .await
            .expect("write");
        let resp = timeout(T, read_response(&mut stream))
            .await
            .expect("timely");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(resp.header("x-whoami-name"), Some("backend-1"));
        let text = resp.text();
        let lines: Vec<&str> = text.lines().collect();
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(lines[0], "Name: backend-1");
        assert_eq!(lines[1], format!("Hostname: {hostname}"));
        assert_eq!(lines[2], "IP: 127.0.0.1");
        assert_eq!(lines[3], format!("RemoteAddr: {client}"));
        assert_eq!(lines[4], "GET /some/path?x=1&y=two HTTP/1.1");
        assert_eq!(lines[5], "Host: example.test:8080");
        assert_eq!(
            &lines[6..],
            &[
                "X-Custom-Header: hello world",
                "X-Multi: a",
                "X-Multi: b",
                "Connection: close"
            ]
        );
        assert!(
            text.ends_with("Connection: close\n"),
            "no body section: {text:?}"
        );
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn echo_any_method_and_body() {
        let srv = start("b").await;
        let resp = request(
            srv.addr,
            "DELETE /anything HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\
             Connection: close\r\n\r\nhello\nbody!",
        )
        .await;
        assert_eq!(resp.status, 200);
        let text = resp.text();
        assert!(text.contains("\nDELETE /anything HTTP/1.1\n"), "{text}");
        assert!(
            text.ends_with("Connection: close\n\nhello\nbody!"),
            "{text:?}"
        );

        // Chunked request bodies are read too.
        let resp = request(
            srv.addr,
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        assert!(resp.text().ends_with("\n\nabcde"), "{:?}", resp.text());
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let srv = start("b").await;
        let resp = request(
            srv.addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                MAX_BODY + 1
            ),
        )
        .await;
        assert_eq!(resp.status, 413);
        assert_eq!(resp.header("x-whoami-name"), Some("b"));
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn api_json() {
        let srv = start("api-backend").await;
        let resp = request(
            srv.addr,
            "GET /api?q=1 HTTP/1.1\r\nHost: api.test\r\nX-Custom: a\r\nX-Custom: b\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.header("x-whoami-name"), Some("api-backend"));
        let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(v["name"], "api-backend");
        assert!(v["hostname"].is_string());
        assert_eq!(v["ip"], serde_json::json!(["127.0.0.1"]));
        assert!(v["remoteAddr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")));
        assert_eq!(v["method"], "GET");
        assert_eq!(v["url"], "/api?q=1");
        assert_eq!(v["host"], "api.test");
        assert_eq!(v["headers"]["x-custom"], serde_json::json!(["a", "b"]));
        assert_eq!(v["headers"]["host"], serde_json::json!(["api.test"]));
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn status_parameter() {
        let srv = start("s").await;
        let resp = get(srv.addr, "/?status=418").await;
        assert_eq!(resp.status, 418);
        assert!(resp.text().starts_with("Name: s\n"));
        assert_eq!(get(srv.addr, "/api?status=503").await.status, 503);
        for bad in ["101", "100", "600", "99", "abc", ""] {
            let resp = get(srv.addr, &format!("/?status={bad}")).await;
            assert_eq!(resp.status, 400, "status={bad}");
            assert_eq!(resp.header("x-whoami-name"), Some("s"));
            assert!(resp.text().contains("status"), "{}", resp.text());
        }
        srv.shutdown().await.expect("clean shutdown");
    }

    #[test]
    fn duration_parser() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("150ms"), Ok(ms(150)));
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("1.s"), Ok(ms(1_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("+2ms"), Ok(ms(2)));
        assert_eq!(parse_duration("250"), Ok(ms(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("1500us"),
            Ok(ms(1) + Duration::from_micros(500))
        );
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(
            parse_duration("99999999999999999999999999999h"),
            Ok(Duration::MAX)
        );
        for bad in [
            "", "abc", "-1s", "5x", "s", ".s", "1.5", "1s2", " 1s", "1 s", "+", "1sec",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_delay("2m"), Ok(MAX_DELAY));
        assert_eq!(parse_delay("99999999999999999999999"), Ok(MAX_DELAY));
        assert_eq!(parse_delay("99999999999999999999999h"), Ok(MAX_DELAY));
        assert_eq!(parse_delay("59s"), Ok(Duration::from_secs(59)));
    }

    #[test]
    fn params_and_helpers() {
        assert_eq!(Params::parse(None), Ok(Params::default()));
        assert_eq!(
            Params::parse(Some("a=1&wait=20ms&status=201")),
            Ok(Params {
                status: Some(StatusCode::CREATED),
                delay: Some(Duration::from_millis(20)),
            })
        );
        // `delay` takes precedence over `wait`; first occurrence wins.
        assert_eq!(
            Params::parse(Some("wait=1s&delay=5&delay=7")).map(|p| p.delay),
            Ok(Some(Duration::from_millis(5)))
        );
        assert!(Params::parse(Some("delay=soon")).is_err());
        assert_eq!(
            query_param(Some("d%65lay=1%2B2+3"), "delay").as_deref(),
            Some("1+2 3")
        );
        assert_eq!(query_param(Some("x=%zz%"), "x").as_deref(), Some("%zz%"));
        assert_eq!(query_param(Some("x=%+5%4"), "x").as_deref(), Some("% 5%4"));
        assert_eq!(
            query_param(Some("x=%e2%9C%93"), "x").as_deref(),
            Some("\u{2713}")
        );
        assert_eq!(canonical_header_name("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header_name("dnt"), "Dnt");
        assert_eq!(header_value_lossy("a\nb"), HeaderValue::from_static("a?b"));
    }

    #[tokio::test]
    async fn delay_parameter() {
        let srv = start("d").await;
        let started = Instant::now();
        let resp = get(srv.addr, "/?delay=150ms").await;
        assert_eq!(resp.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        let started = Instant::now();
        let resp = get(srv.addr, "/health?wait=100").await;
        assert_eq!(resp.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(100));

        let resp = get(srv.addr, "/?delay=soon").await;
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("invalid delay"), "{}", resp.text());
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn data_endpoint() {
        let srv = start("d").await;
        let resp = get(srv.addr, "/data?size=100000").await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(resp.header("content-length"), Some("100000"));
        assert_eq!(resp.header("x-whoami-name"), Some("d"));
        assert_eq!(resp.body.len(), 100_000);
        assert!(resp
            .body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));

        let resp = get(srv.addr, "/data").await;
        assert_eq!(resp.body, b"a");
        let resp = get(srv.addr, "/data?size=0").await;
        assert_eq!(
            (resp.status, resp.header("content-length")),
            (200, Some("0"))
        );
        assert_eq!(get(srv.addr, "/data?size=-3").await.status, 400);
        assert_eq!(get(srv.addr, "/data?size=lots").await.status, 400);
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn health_endpoint() {
        let srv = start("h").await;
        let resp = get(srv.addr, "/health").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
        let post = |body: &str| {
            format!(
                "POST /health HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let resp = request(srv.addr, &post("503")).await;
        assert_eq!(resp.status, 200);
        let resp = get(srv.addr, "/health").await;
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("x-whoami-name"), Some("h"));
        assert_eq!(request(srv.addr, &post("nope")).await.status, 400);
        assert_eq!(request(srv.addr, &post("101")).await.status, 400);
        assert_eq!(get(srv.addr, "/health").await.status, 503);
        assert_eq!(request(srv.addr, &post("200\n")).await.status, 200);
        assert_eq!(get(srv.addr, "/health").await.status, 200);
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn websocket_echo_text_binary_ping_close() {
        let srv = start("ws-backend").await;
        let tcp = TcpStream::connect(srv.addr).await.expect("connect");
        let (mut ws, resp) = timeout(
            T,
            tokio_tungstenite::client_async(format!("ws://{}/any/path", srv.addr), tcp),
        )
        .await
        .expect("timely")
        .expect("handshake");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers().get("x-whoami-name").map(|v| v.as_bytes()),
            Some(&b"ws-backend"[..])
        );
        let msgs = [
            Message::text("hello, whoami"),
            Message::binary(vec![0u8, 1, 2, 254, 255]),
            Message::text(""),
        ];
        for msg in msgs {
            ws.send(msg.clone()).await.expect("send");
            let echoed = timeout(T, ws.next()).await.expect("timely");
            assert_eq!(echoed.expect("open").expect("message"), msg);
        }
        ws.send(Message::Ping(Bytes::from_static(b"p1")))
            .await
            .expect("ping");
        let pong = timeout(T, ws.next()).await.expect("timely");
        assert_eq!(
            pong.expect("open").expect("pong"),
            Message::Pong(Bytes::from_static(b"p1"))
        );
        ws.close(None).await.expect("close");
        let rest = timeout(T, async {
            let mut rest = Vec::new();
            while let Some(Ok(msg)) = ws.next().await {
                rest.push(msg);
            }
            rest
        })
        .await
        .expect("server completes the close handshake");
        assert!(rest.iter().all(|m| m.is_close()), "{rest:?}");
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn websocket_handshake_errors() {
        let srv = start("w").await;
        let resp = request(
            srv.addr,
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 400);
        assert_eq!(resp.header("x-whoami-name"), Some("w"));
        let resp = request(
            srv.addr,
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 426);
        // Raw handshake: RFC 6455's sample key and accept value.
        let mut stream = TcpStream::connect(srv.addr).await.expect("connect");
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .expect("write");
        let resp = timeout(T, read_response(&mut stream))
            .await
            .expect("timely");
        assert_eq!(resp.status, 101);
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        drop(stream);
        srv.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn graceful_shutdown_stops_accepting() {
        let srv = start("g").await;
        let addr = srv.addr;
        // Neither a connection that never sent a byte nor an idle keep-alive
        // connection may hold shutdown up.
        let mut fresh = TcpStream::connect(addr).await.expect("connect");
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(
            timeout(T, read_response(&mut idle))
                .await
                .expect("timely")
                .status,
            200
        );
        // An in-flight request is allowed to finish.
        let in_flight = tokio::spawn(async move { get(addr, "/?delay=300ms").await });
        tokio::time::sleep(Duration::from_millis(100)).await;

        let started = Instant::now();
        srv.shutdown().await.expect("clean shutdown");
        assert!(
            started.elapsed() < SHUTDOWN_GRACE,
            "{:?}",
            started.elapsed()
        );
        let resp = timeout(T, in_flight).await.expect("timely").expect("task");
        assert_eq!(resp.status, 200);

        let mut rest = Vec::new();
        let n = timeout(T, idle.read_to_end(&mut rest))
            .await
            .expect("idle closed");
        assert_eq!(n.unwrap_or(0), 0);
        let n = timeout(T, fresh.read_to_end(&mut rest))
            .await
            .expect("fresh closed");
        assert_eq!(n.unwrap_or(0), 0);
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[tokio::test]
    async fn shutdown_closes_websockets_with_going_away() {
        let srv = start("w").await;
        let tcp = TcpStream::connect(srv.addr).await.expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/", srv.addr), tcp)
            .await
            .expect("handshake");
        ws.send(Message::text("x")).await.expect("send");
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        let client = tokio::spawn(async move {
            let mut close = None;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(frame) = msg {
                    close = frame;
                }
            }
            close
        });
        srv.shutdown().await.expect("clean shutdown");
        let close = timeout(T, client).await.expect("timely").expect("task");
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    }
}
