//! The access log (`run --access-log [FILE]`): one line per request, in Traefik's common
//! (CLF-like) format or as JSON with Traefik's field names, written by one writer thread.
//!
//! Owns the access-log settings (format, status and duration filters, kept headers), the
//! per-request `Entry` the proxy fills in along the live path, the line formats and the writer.
//!
//! Invariants:
//! - When the log is off the request path pays one `Option` check (`Proxy::access_log`); when on,
//!   an `Entry` is built from the request head (a few cheap clones, the kept headers only).
//! - Entries go to the writer over a bounded channel with `try_send`: a full queue drops the line
//!   and counts it, so a slow or failing disk never blocks or slows a request. Lines are
//!   formatted on the writer thread, never on a proxy worker.
//! - The writer flushes at least every `FLUSH_EVERY`; a write error is logged once (and counted),
//!   never affects traffic, and later lines are still tried.
//! - Header fields are dropped unless listed in `--access-log.headers`; `Authorization`,
//!   `Proxy-Authorization`, `Cookie` and `Set-Cookie` are written as `REDACTED` even when listed.
//! - Duration is measured from the request's arrival at the router to its response head being
//!   ready (not to the last body byte); the size is the response's `Content-Length` (or the exact
//!   size of a body the router made), else unknown (`-`).
//! - Filters follow Traefik's `accessLog.filters`: with none set every request is kept; otherwise
//!   a request is kept when its status is in one of the ranges *or* it took longer than the
//!   minimum duration.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{error, warn};

use crate::routing::Server;

/// What a redacted header value is written as (Traefik's word).
pub const REDACTED: &str = "REDACTED";
/// Headers whose values are never written, even when listed in `--access-log.headers`.
pub const ALWAYS_REDACTED: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// Lines waiting for the writer unless `--access-log.buffer` says otherwise.
pub const DEFAULT_BUFFER: usize = 4096;
/// The writer flushes at least this often while it has unflushed lines.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Dropped lines are reported at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Line format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Traefik's common log format (CLF plus request count, router, server URL, duration).
    #[default]
    Common,
    /// One JSON object per line with Traefik's field names.
    Json,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    /// `-` (or nothing) is stdout; anything else a file path.
    pub fn parse(s: &str) -> Output {
        match s.trim() {
            "" | "-" => Output::Stdout,
            _ => Output::File(PathBuf::from(s)),
        }
    }
}

/// Status codes kept: inclusive ranges (`400-499,500`); empty keeps every status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusFilter(pub Vec<(u16, u16)>);

impl StatusFilter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// `200,400-499, 500-599` → ranges (Traefik's `accessLog.filters.statusCodes`).
pub fn parse_status(s: &str) -> Result<StatusFilter, String> {
    let mut ranges = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let code = |t: &str| -> Result<u16, String> {
            t.parse::<u16>()
                .ok()
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| {
                    format!("invalid status code {t:?} in {part:?} (write e.g. 404 or 500-599)")
                })
        };
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(format!("status range {part:?} ends before it starts"));
        }
        ranges.push((lo, hi));
    }
    Ok(StatusFilter(ranges))
}

/// `X-Request-Id, user-agent` → header names as written (checked to be valid names).
pub fn parse_headers<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for n in names
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))?;
        out.push(n.to_string());
    }
    Ok(out)
}

/// Access-log settings from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `None`: the access log is off.
    pub output: Option<Output>,
    pub format: Format,
    pub status: StatusFilter,
    /// Keep requests slower than this (`None`: no duration filter).
    pub min_duration: Option<Duration>,
    /// Request headers written (as `request_<Name>` in JSON), names as the user wrote them.
    pub headers: Vec<String>,
    /// Lines queued for the writer before new ones are dropped.
    pub buffer: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            output: None,
            format: Format::Common,
            status: StatusFilter::default(),
            min_duration: None,
            headers: Vec::new(),
            buffer: DEFAULT_BUFFER,
        }
    }
}

/// Which finished requests get a line (Traefik's filters: any one that matches keeps it).
#[derive(Debug, Clone)]
struct Filter {
    status: StatusFilter,
    min_duration: Option<Duration>,
}

impl Filter {
    fn keeps(&self, status: u16, took: Duration) -> bool {
        if self.status.is_empty() && self.min_duration.is_none() {
            return true;
        }
        self.status.contains(status) || self.min_duration.is_some_and(|m| took > m)
    }
}

/// A header kept in the log.
#[derive(Debug)]
struct Kept {
    name: HeaderName,
    /// `request_<Name>`.
    key: Arc<str>,
    redact: bool,
}

/// One request as the log sees it; filled in along the live path, formatted by the writer.
#[derive(Debug)]
pub struct Entry {
    started: Instant,
    start: SystemTime,
    count: u64,
    client: SocketAddr,
    entrypoint: Arc<str>,
    method: Method,
    uri: Uri,
    version: Version,
    /// `Host` as sent (with port), or the absolute-form target's authority.
    host: Option<String>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    headers: Vec<(Arc<str>, String)>,
    request_size: Option<u64>,
    route: Option<String>,
    service: Option<String>,
    server: Option<http::uri::Authority>,
    attempts: u32,
    origin_status: Option<u16>,
    origin_size: Option<u64>,
    user: Option<String>,
    status: u16,
    size: Option<u64>,
    duration: Duration,
    /// The request came over TLS (`RequestScheme` https).
    tls: bool,
    /// A gRPC response's `grpc-status` (`GrpcStatus`; "none" when it ended without one).
    grpc_status: Option<String>,
}

impl Entry {
    /// The `grpc-status` a gRPC response ended with (`None`: it had none).
    pub fn grpc_status(&mut self, status: Option<u8>) {
        self.grpc_status = Some(status.map_or_else(|| "none".into(), |s| s.to_string()));
    }

    /// Marks the request as having come over TLS.
    pub fn over_tls(&mut self) {
        self.tls = true;
    }

    /// The request matched `route`.
    pub fn route(&mut self, route: &str) {
        self.route = Some(route.to_string());
    }

    /// The request leaves for `server` of `service` (each retry counts an attempt).
    pub fn forward(&mut self, service: &str, server: &Server) {
        self.attempts += 1;
        if self.service.as_deref() != Some(service) {
            self.service = Some(service.to_string());
        }
        self.server = Some(server.authority.clone());
    }

    /// The server's response head.
    pub fn origin(&mut self, status: StatusCode, headers: &http::HeaderMap) {
        self.origin_status = Some(status.as_u16());
        self.origin_size = content_length(headers);
    }

    /// The user a basic-auth middleware authenticated.
    pub fn user(&mut self, user: Option<String>) {
        if user.is_some() {
            self.user = user;
        }
    }
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

enum Msg {
    Entry(Box<Entry>),
    Conn(Box<ConnEntry>),
    Close,
}

/// One TCP connection or UDP session a TCP/UDP route served, logged when it ends.
#[derive(Debug, Clone)]
pub struct ConnEntry {
    pub start: SystemTime,
    pub client: SocketAddr,
    pub entrypoint: Arc<str>,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub route: String,
    pub service: String,
    /// `host:port`, when a server was reached.
    pub server: Option<String>,
    /// The ClientHello's server name, for TLS connections.
    pub sni: Option<String>,
    /// `passthrough`, `terminate` or `none`.
    pub tls: &'static str,
    /// Bytes (datagram payload bytes for UDP) from the client and to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// `ok`, or why it ended early: `refused`, `no_server`, `handshake_failed`, `error`,
    /// `route_removed`.
    pub outcome: &'static str,
}

/// The running access log, shared by every proxy worker.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    filter: Filter,
    kept: Vec<Kept>,
    requests: AtomicU64,
    counters: Arc<Counters>,
    closed: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the configured output (a file is created or appended to before this returns) and
    /// starts the writer; `Ok(None)` when the log is off.
    pub fn open(cfg: &AccessLogConfig) -> Result<Option<Arc<AccessLog>>, String> {
        let out: Box<dyn Write + Send> = match &cfg.output {
            None => return Ok(None),
            Some(Output::Stdout) => Box::new(std::io::stdout()),
            Some(Output::File(p)) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open access log {}: {e}", p.display()))?,
            ),
        };
        AccessLog::to_writer(cfg, out).map(Some)
    }

    /// An access log writing to `out` (any output; tests use a failing one).
    pub fn to_writer(
        cfg: &AccessLogConfig,
        out: Box<dyn Write + Send>,
    ) -> Result<Arc<AccessLog>, String> {
        let kept = cfg
            .headers
            .iter()
            .map(|n| {
                let name = HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("invalid header name {n:?}"))?;
                let redact = ALWAYS_REDACTED.contains(&name.as_str());
                Ok(Kept {
                    name,
                    key: format!("request_{n}").into(),
                    redact,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let (tx, rx) = sync_channel(cfg.buffer.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            out: BufWriter::new(out),
            format: cfg.format,
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Arc::new(AccessLog {
            tx,
            filter: Filter {
                status: cfg.status.clone(),
                min_duration: cfg.min_duration,
            },
            kept,
            requests: AtomicU64::new(0),
            counters,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
        }))
    }

    /// The request head on arrival.
    pub fn begin<B>(&self, req: &Request<B>, client: SocketAddr, entrypoint: &Arc<str>) -> Entry {
        let h = req.headers();
        let headers = self
            .kept
            .iter()
            .filter_map(|k| {
                let mut values = h.get_all(&k.name).iter().peekable();
                values.peek()?;
                let value = if k.redact {
                    REDACTED.to_string()
                } else {
                    let all: Vec<String> = values
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    all.join(", ")
                };
                Some((k.key.clone(), value))
            })
            .collect();
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => h
                .get(header::HOST)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        };
        Entry {
            started: Instant::now(),
            start: SystemTime::now(),
            count: self.requests.fetch_add(1, Ordering::Relaxed) + 1,
            client,
            entrypoint: entrypoint.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host,
            referer: h.get(header::REFERER).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            headers,
            request_size: content_length(h),
            route: None,
            service: None,
            server: None,
            attempts: 0,
            origin_status: None,
            origin_size: None,
            user: None,
            tls: false,
            grpc_status: None,
            status: 0,
            size: None,
            duration: Duration::ZERO,
        }
    }

    /// The response head is ready: stamps status, size and duration, applies the filters and
    /// hands the entry to the writer (never blocks; a full queue counts a drop).
    pub fn finish<B: http_body::Body>(&self, entry: Box<Entry>, resp: &Response<B>) {
        if let Some(entry) = self.complete(entry, resp) {
            self.send(entry);
        }
    }

    /// Fills in the response of `entry`; `None` when the filters drop it.
    pub fn complete<B: http_body::Body>(
        &self,
        mut entry: Box<Entry>,
        resp: &Response<B>,
    ) -> Option<Box<Entry>> {
        entry.duration = entry.started.elapsed();
        let status = resp.status();
        if !self.filter.keeps(status.as_u16(), entry.duration) {
            return None;
        }
        entry.status = status.as_u16();
        entry.size = response_size(&entry.method, resp);
        Some(entry)
    }

    /// Queues a completed entry for writing. A gRPC stream's entry is sent when its response
    /// ends, its `Duration` then covering the whole stream.
    pub fn send(&self, mut entry: Box<Entry>) {
        if entry.grpc_status.is_some() {
            entry.duration = entry.started.elapsed();
        }
        if self.tx.try_send(Msg::Entry(entry)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a finished TCP connection or UDP session (kept unless a minimum duration is set
    /// and it was shorter; status ranges do not apply: it has no status).
    pub fn send_conn(&self, entry: ConnEntry) {
        if self
            .filter
            .min_duration
            .is_some_and(|m| entry.duration <= m)
        {
            return;
        }
        if self.tx.try_send(Msg::Conn(Box::new(entry))).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer was behind (or already closed).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Write errors (a failed write or flush; the first one is logged).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Flushes what is queued and stops the writer; later entries are dropped. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Blocks only until the writer makes room; it drains without waiting on anything else.
        let _ = self.tx.send(Msg::Close);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

struct Writer {
    out: BufWriter<Box<dyn Write + Send>>,
    format: Format,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut line = Vec::with_capacity(512);
        let mut dirty = false;
        let mut broken = false;
        let mut last_flush = Instant::now();
        let mut reported = (0u64, Instant::now());
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(msg @ (Msg::Entry(_) | Msg::Conn(_))) => {
                    line.clear();
                    match (&msg, self.format) {
                        (Msg::Entry(e), Format::Common) => common_line(e, &mut line),
                        (Msg::Entry(e), Format::Json) => json_line(e, &mut line),
                        (Msg::Conn(c), Format::Common) => conn_common_line(c, &mut line),
                        (Msg::Conn(c), Format::Json) => conn_json_line(c, &mut line),
                        (Msg::Close, _) => {}
                    }
                    match self.out.write_all(&line) {
                        Ok(()) => {
                            self.counters.written.fetch_add(1, Ordering::Relaxed);
                            dirty = true;
                        }
                        Err(err) => self.failed(&err, &mut broken),
                    }
                }
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => {
                    if let Err(err) = self.out.flush() {
                        self.failed(&err, &mut broken);
                    }
                    let dropped = self.counters.dropped.load(Ordering::Relaxed);
                    if dropped > reported.0 {
                        warn!(
                            dropped = dropped - reported.0,
                            "access log writer fell behind; lines dropped"
                        );
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if dirty && last_flush.elapsed() >= FLUSH_EVERY {
                if let Err(err) = self.out.flush() {
                    self.failed(&err, &mut broken);
                }
                dirty = false;
                last_flush = Instant::now();
            }
            let dropped = self.counters.dropped.load(Ordering::Relaxed);
            if dropped > reported.0 && reported.1.elapsed() >= DROP_REPORT_EVERY {
                warn!(
                    dropped = dropped - reported.0,
                    "access log writer fell behind; lines dropped"
                );
                reported = (dropped, Instant::now());
            }
        }
    }

    /// A write error: counted, logged the first time only.
    fn failed(&self, err: &std::io::Error, broken: &mut bool) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        if !*broken {
            *broken = true;
            error!(error = %err, "cannot write the access log; lines are lost until it works again");
        }
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Body bytes the client gets: none for HEAD, 1xx, 204 and 304; else `Content-Length` or the
/// exact size of a body the router built; unknown for streamed bodies without a length.
fn response_size<B: http_body::Body>(method: &Method, resp: &Response<B>) -> Option<u64> {
    let s = resp.status();
    if method == Method::HEAD
        || s.is_informational()
        || s == StatusCode::NO_CONTENT
        || s == StatusCode::NOT_MODIFIED
    {
        return Some(0);
    }
    content_length(resp.headers()).or_else(|| resp.body().size_hint().exact())
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn request_path(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// `host:port` → (`host`, `port`); `[::1]:80` → (`[::1]`, `80`); no port → `-`.
fn split_host(addr: &str) -> (&str, &str) {
    if let Some(end) = addr.find(']') {
        let (h, rest) = addr.split_at(end + 1);
        return (h, rest.strip_prefix(':').unwrap_or("-"));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (addr, "-"),
    }
}

/// A value inside `"..."` of a common line: `"` and `\` escaped, control bytes as `\xNN`.
fn push_quoted(out: &mut String, value: Option<&str>) {
    out.push('"');
    match value {
        None | Some("") => out.push('-'),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => {
                        let _ = write!(out, "\\x{:02x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
        }
    }
    out.push('"');
}

fn lossy(v: &Option<HeaderValue>) -> Option<String> {
    v.as_ref()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn service_url(server: &http::uri::Authority) -> String {
    format!("http://{server}")
}

/// Traefik's common format:
/// `<client_ip> - <user|-> [<start>] "<method> <path?query> <proto>" <status> <size|->
/// "<referer|->" "<user_agent|->" <request_count> "<router|->" "<server_url|->" <duration>ms`.
fn common_line(e: &Entry, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} - {} [{}] \"{} {} {}\" {} ",
        e.client.ip(),
        e.user.as_deref().filter(|u| !u.is_empty()).unwrap_or("-"),
        clf_time(e.start),
        e.method,
        request_path(&e.uri),
        protocol(e.version),
        e.status,
    );
    match e.size {
        Some(n) => {
            let _ = write!(s, "{n} ");
        }
        None => s.push_str("- "),
    }
    push_quoted(&mut s, lossy(&e.referer).as_deref());
    s.push(' ');
    push_quoted(&mut s, lossy(&e.user_agent).as_deref());
    let _ = write!(s, " {} ", e.count);
    push_quoted(&mut s, e.route.as_deref());
    s.push(' ');
    push_quoted(&mut s, e.server.as_ref().map(service_url).as_deref());
    let _ = writeln!(s, " {}ms", e.duration.as_millis());
    out.extend_from_slice(s.as_bytes());
}

/// A TCP connection or UDP session in the common format's shape:
/// `<client_ip> - - [<start>] "<TCP|UDP> <sni|-> <tls>" <outcome> <bytes_out> "<entrypoint>"
/// <bytes_in> "<router>" "<server|->" <duration>ms`.
fn conn_common_line(c: &ConnEntry, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "{} - - [{}] \"{} {} {}\" {} {} ",
        c.client.ip(),
        clf_time(c.start),
        c.protocol.to_ascii_uppercase(),
        c.sni.as_deref().unwrap_or("-"),
        c.tls,
        c.outcome,
        c.bytes_out,
    );
    push_quoted(&mut s, Some(&c.entrypoint));
    let _ = write!(s, " {} ", c.bytes_in);
    push_quoted(&mut s, Some(&c.route));
    s.push(' ');
    push_quoted(&mut s, c.server.as_deref());
    let _ = writeln!(s, " {}ms", c.duration.as_millis());
    out.extend_from_slice(s.as_bytes());
}

/// A TCP connection or UDP session as JSON, with Traefik's names where a field means the same.
fn conn_json_line(c: &ConnEntry, out: &mut Vec<u8>) {
    let start = humantime::format_rfc3339_nanos(c.start).to_string();
    let mut m = Map::new();
    m.insert("ClientAddr".into(), Value::from(c.client.to_string()));
    m.insert("ClientHost".into(), Value::from(c.client.ip().to_string()));
    m.insert(
        "ClientPort".into(),
        Value::from(c.client.port().to_string()),
    );
    m.insert("Protocol".into(), Value::from(c.protocol));
    m.insert("RouterName".into(), Value::from(c.route.as_str()));
    m.insert("ServiceName".into(), Value::from(c.service.as_str()));
    if let Some(s) = &c.server {
        m.insert("ServiceAddr".into(), Value::from(s.as_str()));
    }
    if let Some(n) = &c.sni {
        m.insert("TLSServerName".into(), Value::from(n.as_str()));
    }
    m.insert("TLSMode".into(), Value::from(c.tls));
    m.insert("Outcome".into(), Value::from(c.outcome));
    m.insert("RequestContentSize".into(), Value::from(c.bytes_in));
    m.insert("DownstreamContentSize".into(), Value::from(c.bytes_out));
    m.insert(
        "Duration".into(),
        Value::from(u64::try_from(c.duration.as_nanos()).unwrap_or(u64::MAX)),
    );
    m.insert("StartUTC".into(), Value::from(start.clone()));
    m.insert("StartLocal".into(), Value::from(start));
    m.insert("entryPointName".into(), Value::from(&*c.entrypoint));
    m.insert("level".into(), Value::from("info"));
    m.insert("msg".into(), Value::from(""));
    if serde_json::to_writer(&mut *out, &Value::Object(m)).is_ok() {
        out.push(b'\n');
    } else {
        out.clear();
    }
}

/// One JSON object with Traefik's field names (keys sorted, as Traefik writes them).
fn json_fields(e: &Entry) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    let ip = e.client.ip().to_string();
    put("ClientAddr", Value::from(e.client.to_string()));
    put("ClientHost", Value::from(ip));
    put("ClientPort", Value::from(e.client.port().to_string()));
    put(
        "ClientUsername",
        Value::from(e.user.clone().unwrap_or_else(|| "-".to_string())),
    );
    if let Some(h) = &e.host {
        let (host, port) = split_host(h);
        put("RequestAddr", Value::from(h.as_str()));
        put("RequestHost", Value::from(host));
        put("RequestPort", Value::from(port));
    }
    put("RequestMethod", Value::from(e.method.as_str()));
    put("RequestPath", Value::from(request_path(&e.uri)));
    put("RequestProtocol", Value::from(protocol(e.version)));
    put(
        "RequestScheme",
        Value::from(if e.tls { "https" } else { "http" }),
    );
    put(
        "RequestContentSize",
        Value::from(e.request_size.unwrap_or(0)),
    );
    put("RequestCount", Value::from(e.count));
    if let Some(g) = &e.grpc_status {
        put("GrpcStatus", Value::from(g.as_str()));
    }
    put("DownstreamStatus", Value::from(e.status));
    if let Some(n) = e.size {
        put("DownstreamContentSize", Value::from(n));
    }
    if let Some(s) = e.origin_status {
        put("OriginStatus", Value::from(s));
    }
    if let Some(n) = e.origin_size {
        put("OriginContentSize", Value::from(n));
    }
    if let Some(r) = &e.route {
        put("RouterName", Value::from(r.as_str()));
    }
    if let Some(s) = &e.service {
        put("ServiceName", Value::from(s.as_str()));
    }
    if let Some(s) = &e.server {
        put("ServiceAddr", Value::from(s.as_str()));
        put("ServiceURL", Value::from(service_url(s)));
    }
    put(
        "Duration",
        Value::from(u64::try_from(e.duration.as_nanos()).unwrap_or(u64::MAX)),
    );
    put("RetryAttempts", Value::from(e.attempts.saturating_sub(1)));
    let start = humantime::format_rfc3339_nanos(e.start).to_string();
    put("StartUTC", Value::from(start.clone()));
    put("StartLocal", Value::from(start));
    put("entryPointName", Value::from(&*e.entrypoint));
    put("level", Value::from("info"));
    put("msg", Value::from(""));
    put(
        "time",
        Value::from(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
    );
    if let Some(r) = lossy(&e.referer) {
        put("request_Referer", Value::from(r));
    }
    if let Some(ua) = lossy(&e.user_agent) {
        put("request_User-Agent", Value::from(ua));
    }
    for (k, v) in &e.headers {
        put(k, Value::from(v.as_str()));
    }
    m
}

fn json_line(e: &Entry, out: &mut Vec<u8>) {
    let value = Value::Object(json_fields(e));
    if serde_json::to_writer(&mut *out, &value).is_ok() {
        out.push(b'\n');
    } else {
        out.clear();
    }
}

/// `03/Dec/2026:12:15:50 +0000` (always UTC, like Traefik's `StartUTC`).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS
        .get(m.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31) (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &AccessLog, req: Request<()>) -> Entry {
        log.begin(&req, "10.0.0.7:51000".parse().unwrap(), &Arc::from("web"))
    }

    fn cfg(headers: &[&str]) -> AccessLogConfig {
        AccessLogConfig {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            ..AccessLogConfig::default()
        }
    }

    fn sink() -> Box<dyn Write + Send> {
        Box::new(std::io::sink())
    }

    fn sample(log: &AccessLog) -> Entry {
        let req = Request::get("/api/users?page=2")
            .header("host", "app.test:8080")
            .header("user-agent", "curl/8.5 \"x\"")
            .header("authorization", "Basic dTpw")
            .header("cookie", "sid=1")
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        let mut e = entry(log, req);
        e.route("api");
        let server = Server {
            authority: "127.0.0.1:9001".parse().unwrap(),
            weight: 1,
            sticky_id: String::new(),
            scheme: Default::default(),
        };
        e.forward("app", &server);
        e.forward("app", &server);
        e.origin(StatusCode::OK, &http::HeaderMap::new());
        e.user(Some("alice".into()));
        e.status = 200;
        e.size = Some(123);
        e.duration = Duration::from_micros(12_345);
        e.start = UNIX_EPOCH + Duration::from_secs(1_764_764_150);
        e
    }

    #[test]
    fn status_filters_parse_like_traefik() {
        assert_eq!(
            parse_status("200, 400-499,500-599").unwrap().0,
            vec![(200, 200), (400, 499), (500, 599)]
        );
        assert!(parse_status("").unwrap().is_empty());
        assert!(parse_status("4xx").unwrap_err().contains("\"4xx\""));
        assert!(parse_status("500-400").unwrap_err().contains("ends before"));
        assert!(parse_status("99").is_err());
        assert!(parse_status("200-").is_err());
        let f = parse_status("404,500-599").unwrap();
        assert!(f.contains(404) && f.contains(503) && !f.contains(200) && !f.contains(403));
    }

    #[test]
    fn filters_keep_any_match_and_everything_when_unset() {
        let none = Filter {
            status: StatusFilter::default(),
            min_duration: None,
        };
        assert!(none.keeps(200, Duration::ZERO));
        let f = Filter {
            status: parse_status("400-499").unwrap(),
            min_duration: Some(Duration::from_millis(100)),
        };
        assert!(f.keeps(404, Duration::ZERO));
        assert!(f.keeps(200, Duration::from_millis(150)));
        assert!(!f.keeps(200, Duration::from_millis(100)));
        assert!(!f.keeps(500, Duration::from_millis(5)));
    }

    #[test]
    fn headers_are_dropped_by_default_and_secrets_always_redacted() {
        let log = AccessLog::to_writer(&cfg(&[]), sink()).unwrap();
        let e = sample(&log);
        assert!(e.headers.is_empty());
        let fields = json_fields(&e);
        assert!(!fields.keys().any(|k| k == "request_Authorization"
            || k == "request_Cookie"
            || k == "request_X-Request-Id"));

        let log = AccessLog::to_writer(
            &cfg(&["Authorization", "Cookie", "X-Request-Id", "X-Absent"]),
            sink(),
        )
        .unwrap();
        let fields = json_fields(&sample(&log));
        assert_eq!(fields["request_Authorization"], REDACTED);
        assert_eq!(fields["request_Cookie"], REDACTED);
        assert_eq!(fields["request_X-Request-Id"], "abc");
        assert!(!fields.contains_key("request_X-Absent"));
        assert!(parse_headers(["X-A, x-b", ""]).unwrap() == vec!["X-A", "x-b"]);
        assert!(parse_headers(["bad header"]).is_err());
    }

    #[test]
    fn common_line_matches_traefik_field_order() {
        let log = AccessLog::to_writer(&cfg(&[]), sink()).unwrap();
        let mut out = Vec::new();
        common_line(&sample(&log), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "10.0.0.7 - alice [03/Dec/2025:12:15:50 +0000] \"GET /api/users?page=2 HTTP/1.1\" 200 123 \
             \"-\" \"curl/8.5 \\\"x\\\"\" 1 \"api\" \"http://127.0.0.1:9001\" 12ms\n"
        );
        let mut bare = entry(&log, Request::get("/x").body(()).unwrap());
        bare.status = 404;
        bare.start = UNIX_EPOCH;
        let mut out = Vec::new();
        common_line(&bare, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "10.0.0.7 - - [01/Jan/1970:00:00:00 +0000] \"GET /x HTTP/1.1\" 404 - \"-\" \"-\" 2 \"-\" \"-\" 0ms\n"
        );
    }

    #[test]
    fn json_line_uses_traefik_names() {
        let log = AccessLog::to_writer(&cfg(&[]), sink()).unwrap();
        let mut out = Vec::new();
        json_line(&sample(&log), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ClientAddr"], "10.0.0.7:51000");
        assert_eq!(v["ClientHost"], "10.0.0.7");
        assert_eq!(v["ClientUsername"], "alice");
        assert_eq!(v["RequestAddr"], "app.test:8080");
        assert_eq!(v["RequestHost"], "app.test");
        assert_eq!(v["RequestPort"], "8080");
        assert_eq!(v["RequestMethod"], "GET");
        assert_eq!(v["RequestPath"], "/api/users?page=2");
        assert_eq!(v["RequestProtocol"], "HTTP/1.1");
        assert_eq!(v["DownstreamStatus"], 200);
        assert_eq!(v["DownstreamContentSize"], 123);
        assert_eq!(v["OriginStatus"], 200);
        assert_eq!(v["RouterName"], "api");
        assert_eq!(v["ServiceName"], "app");
        assert_eq!(v["ServiceAddr"], "127.0.0.1:9001");
        assert_eq!(v["ServiceURL"], "http://127.0.0.1:9001");
        assert_eq!(v["Duration"], 12_345_000);
        assert_eq!(v["RetryAttempts"], 1);
        assert_eq!(v["RequestCount"], 1);
        assert_eq!(v["StartUTC"], "2025-12-03T12:15:50.000000000Z");
        assert_eq!(v["entryPointName"], "web");
        assert_eq!(v["request_User-Agent"], "curl/8.5 \"x\"");
    }

    #[test]
    fn dates_and_hosts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_425), (2025, 12, 3));
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399)),
            "29/Feb/2000:23:59:59 +0000"
        );
        assert_eq!(split_host("a.test:80"), ("a.test", "80"));
        assert_eq!(split_host("a.test"), ("a.test", "-"));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", "8080"));
        assert_eq!(split_host("[::1]"), ("[::1]", "-"));
        assert_eq!(Output::parse("-"), Output::Stdout);
        assert_eq!(Output::parse("a.log"), Output::File("a.log".into()));
    }

    /// A disk that fails every write.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }

    #[test]
    fn a_failing_output_and_a_full_queue_never_block() {
        let log = AccessLog::to_writer(&cfg(&[]), Box::new(Broken)).unwrap();
        let resp = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
        for _ in 0..5 {
            let e = Box::new(entry(&log, Request::get("/").body(()).unwrap()));
            log.finish(e, &resp);
        }
        log.close();
        assert!(log.failed() >= 1, "the failed flush is counted");
        // Closed: further lines are dropped, not blocked on.
        let e = Box::new(entry(&log, Request::get("/").body(()).unwrap()));
        log.finish(e, &resp);
        assert!(log.dropped() >= 1);
    }
}
