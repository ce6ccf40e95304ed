//! Prometheus metrics: the process-wide registry (`Metrics`) and its text exposition (format
//! 0.0.4) served at `GET /metrics` on the admin listener.
//!
//! Owns every counter, gauge and histogram the router exports. The request path only does
//! relaxed atomic adds: each route's series are resolved when a table is built
//! (`Metrics::attach`, called by the control loop before the table goes live) into the
//! `MetricsSlot` the route carries (opaque to routing; a `RouteHandle` here), and series survive rebuilds because the registry keys them by
//! route, service and hook, not by table (series of routes a build removed are dropped with
//! it). Server up/down is read from the live table's
//! `ServerState`s at scrape time, so it never lags the health checker. The admin API reads
//! per-route and per-service totals and p50/p99 durations (`route_stats`, `service_stats`:
//! `histogram_quantile` over the summed duration buckets, as Prometheus would) from the same
//! series.
//!
//! Invariants: no lock on the request path (a `OnceLock` read and a type check, then atomics; rare events such as
//! upstream errors and retries take one `DashMap` shard); label cardinality is bounded by the
//! configuration (methods outside RFC 9110's set count as `OTHER`, codes are 100..=999); the
//! exposition is deterministic (series sorted by labels). Must never: block a request on a
//! scrape, or reset the counter of a route, hook or service that a reload keeps.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::middleware::Middleware;
use crate::routing::Target;
use crate::table::{Route, RouteTable};

/// Request duration buckets (seconds): Traefik's 0.1, 0.3, 1.2, 5 region with finer low ones.
mod l4;
pub use l4::{L4Totals, OpenGuard};

pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Hook duration buckets (seconds): script hooks run in microseconds to milliseconds.
pub const HOOK_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// The `method` label values; anything else is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "OTHER",
];

/// What a request carries: the `protocol` label, with Traefik's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http = 0,
    /// A websocket upgrade.
    Websocket = 1,
    /// `Accept: text/event-stream`.
    Sse = 2,
    /// `content-type: application/grpc…`.
    Grpc = 3,
    /// `content-type: application/grpc-web…`.
    GrpcWeb = 4,
}

const PROTOCOLS: [&str; 5] = ["http", "websocket", "sse", "grpc", "grpc-web"];

/// The `version` label values (HTTP/0.9 counts as 1.0, HTTP/3 as 2: neither reaches the router).
const VERSIONS: [&str; 3] = ["1.0", "1.1", "2"];

impl Protocol {
    /// The protocol of a request head, as Traefik tells it.
    pub fn of(headers: &http::HeaderMap) -> Protocol {
        let has = |name: header::HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let starts = |p: &str| {
            content_type
                .get(..p.len())
                .is_some_and(|c| c.eq_ignore_ascii_case(p))
        };
        if starts("application/grpc-web") {
            Protocol::GrpcWeb
        } else if starts("application/grpc") {
            Protocol::Grpc
        } else if has(header::UPGRADE, "websocket") {
            Protocol::Websocket
        } else if headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"))
        {
            Protocol::Sse
        } else {
            Protocol::Http
        }
    }

    /// A gRPC or gRPC-Web request (the router's own errors are answered as gRPC statuses).
    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }
}

/// The labels of one request beside its route: method, protocol and HTTP version.
#[derive(Debug, Clone, Copy)]
pub struct RequestKind<'a> {
    pub method: &'a Method,
    pub protocol: Protocol,
    pub version: http::Version,
}

impl RequestKind<'_> {
    /// Index of (protocol, version) in `EntrySeries::by_kind`.
    fn slot(&self) -> usize {
        let v = match self.version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => 0,
            http::Version::HTTP_11 => 1,
            _ => 2,
        };
        self.protocol as usize * VERSIONS.len() + v
    }
}

/// gRPC status codes 0..=16, and `GRPC_NONE` for a gRPC response that ended without one (a
/// stream cut short).
const GRPC_CODES: usize = 18;
const GRPC_NONE: usize = 17;

/// Why an exchange with a server failed (`kind` of `switchyard_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The connection could not be opened (refused, unreachable).
    Connect = 0,
    /// Connect or response-head timeout.
    Timeout = 1,
    /// Anything after the request was sent (reset, malformed response, ...).
    Other = 2,
}

const ERROR_KINDS: [&str; 3] = ["connect", "timeout", "other"];

/// A histogram with fixed bounds: per-bucket (not cumulative) counts, a count and a sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // `le` semantics: the first bucket whose bound is >= the value; past the last, +Inf only.
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative bucket counts (one per bound), the count (the `+Inf` bucket) and the sum in
    /// seconds. Read while requests run, the count is raised to the last bucket if an
    /// observation was caught half-way, so the output is always monotone.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut acc = 0u64;
        let cumulative: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| {
                acc = acc.saturating_add(b.load(Relaxed));
                acc
            })
            .collect();
        let count = self.count.load(Relaxed).max(acc);
        let sum = Duration::from_nanos(self.sum_nanos.load(Relaxed)).as_secs_f64();
        (cumulative, count, sum)
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a histogram, as Prometheus' `histogram_quantile` estimates
/// it: `cumulative` holds the cumulative count at each finite upper bound of `bounds`
/// (ascending), `count` is the `+Inf` bucket (all observations). The quantile's rank
/// (`q × count`) falls in the first bucket whose cumulative count reaches it and is
/// interpolated linearly within that bucket, the first bucket starting at 0; a rank past every
/// finite bucket gives the highest finite bound. `None` with no observations (or `q` outside
/// 0..=1, or no finite bound). Where Prometheus would divide 0 by 0 (`q` = 0 and an empty first
/// bucket) the bucket's lower bound is returned.
pub fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[u64], count: u64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let finite = bounds.len().min(cumulative.len());
    // As Prometheus' `ensureMonotonic`: a count read half-way is at least the last bucket.
    let count = count.max(cumulative.get(..finite)?.iter().copied().max().unwrap_or(0));
    if count == 0 || finite == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut below = 0u64; // cumulative count of the buckets before the one the rank falls in
    let mut start = 0.0; // and the lower bound of that bucket
    for (bound, cum) in bounds.iter().zip(cumulative) {
        let cum = (*cum).max(below);
        if cum as f64 >= rank {
            let in_bucket = cum - below;
            if in_bucket == 0 {
                return Some(start);
            }
            let into = rank - below as f64;
            return Some(start + (bound - start) * (into / in_bucket as f64));
        }
        below = cum;
        start = *bound;
    }
    // The rank is in the `+Inf` bucket: its lower bound is the most that can be said.
    Some(start)
}

/// Request durations of a route or a service: the cumulative bucket counts of its histograms
/// summed over its series (entrypoints; for a service, the routes sending to it), at the bounds
/// of `REQUEST_BUCKETS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations {
    /// Cumulative count at each bound of `REQUEST_BUCKETS` (empty: nothing added yet).
    cumulative: Vec<u64>,
    /// Every observation (the `+Inf` bucket).
    count: u64,
}

impl Durations {
    fn add(&mut self, h: &Histogram) {
        let (cumulative, count, _) = h.snapshot();
        if self.cumulative.len() < cumulative.len() {
            self.cumulative.resize(cumulative.len(), 0);
        }
        for (acc, n) in self.cumulative.iter_mut().zip(cumulative) {
            *acc = acc.saturating_add(n);
        }
        self.count = self.count.saturating_add(count);
    }

    /// How many requests were timed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile in seconds (`histogram_quantile`); `None` before the first request.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, REQUEST_BUCKETS, &self.cumulative, self.count)
    }

    /// The `q`-quantile in milliseconds; `None` before the first request.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile(q).map(|s| s * 1000.0)
    }
}

/// A route's or a service's totals and request durations (`Metrics::route_stats`,
/// `Metrics::service_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub counts: RouteCounts,
    pub durations: Durations,
}

impl RequestStats {
    /// Median request duration in milliseconds; `None` before the first request.
    pub fn p50_ms(&self) -> Option<f64> {
        self.durations.quantile_ms(0.5)
    }

    /// 99th percentile request duration in milliseconds; `None` before the first request.
    pub fn p99_ms(&self) -> Option<f64> {
        self.durations.quantile_ms(0.99)
    }

    fn add(&mut self, series: &RequestSeries) {
        let c = series.counts();
        self.counts.requests += c.requests;
        self.counts.client_errors += c.client_errors;
        self.counts.server_errors += c.server_errors;
        for e in series.entries.iter() {
            self.durations.add(&e.duration);
        }
    }
}

/// Counters per status code 100..=999, one lazily allocated block of 100 per hundred.
#[derive(Debug, Default)]
struct CodeCounters {
    classes: [OnceLock<Box<[AtomicU64; 100]>>; 9],
}

impl CodeCounters {
    fn add(&self, code: u16) {
        let Some(class) = usize::from(code / 100).checked_sub(1) else {
            return;
        };
        let Some(slot) = self.classes.get(class) else {
            return;
        };
        let block = slot.get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        if let Some(c) = block.get(usize::from(code % 100)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Every non-zero counter as (code, value), ascending.
    fn each(&self) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        for (class, slot) in (1u16..).zip(self.classes.iter()) {
            let Some(block) = slot.get() else { continue };
            for (rest, c) in (0u16..).zip(block.iter()) {
                let v = c.load(Relaxed);
                if v > 0 {
                    out.push((class * 100 + rest, v));
                }
            }
        }
        out
    }
}

/// Code counters by method, for one (protocol, version).
type ByMethod = [CodeCounters; METHODS.len()];

/// One entrypoint's share of a route's request series.
#[derive(Debug)]
struct EntrySeries {
    /// By (protocol, version) (`RequestKind::slot`), allocated on first use: most routes see
    /// one or two kinds.
    by_kind: [OnceLock<Box<ByMethod>>; PROTOCOLS.len() * VERSIONS.len()],
    duration: Histogram,
}

impl EntrySeries {
    fn new() -> Self {
        EntrySeries {
            by_kind: Default::default(),
            duration: Histogram::new(REQUEST_BUCKETS),
        }
    }
}

/// The request series of one (route, service): counts by entrypoint, method and code, and the
/// duration histogram by entrypoint.
#[derive(Debug)]
pub struct RequestSeries {
    entries: Box<[EntrySeries]>,
    /// gRPC responses by `grpc-status` (index `GRPC_NONE`: none).
    grpc: [AtomicU64; GRPC_CODES],
}

impl RequestSeries {
    fn new(entrypoints: usize) -> Self {
        RequestSeries {
            entries: (0..entrypoints).map(|_| EntrySeries::new()).collect(),
            grpc: Default::default(),
        }
    }

    /// Totals over every entrypoint, kind and method.
    fn counts(&self) -> RouteCounts {
        let mut c = RouteCounts::default();
        for e in self.entries.iter() {
            for codes in e
                .by_kind
                .iter()
                .filter_map(OnceLock::get)
                .flat_map(|b| b.iter())
            {
                for (code, n) in codes.each() {
                    c.requests += n;
                    match code {
                        400..=499 => c.client_errors += n,
                        500..=599 => c.server_errors += n,
                        _ => {}
                    }
                }
            }
        }
        c
    }

    fn observe(&self, entrypoint: usize, kind: &RequestKind<'_>, code: u16, took: Duration) {
        let Some(e) = self.entries.get(entrypoint) else {
            return;
        };
        if let Some(slot) = e.by_kind.get(kind.slot()) {
            let by_method = slot.get_or_init(Box::default);
            if let Some(c) = by_method.get(method_index(kind.method)) {
                c.add(code);
            }
        }
        e.duration.observe(took);
    }
}

/// One hook's duration and failures.
#[derive(Debug)]
pub struct HookSeries {
    duration: Histogram,
    failures: AtomicU64,
}

/// What a live route carries: its series, resolved when its table was built.
#[derive(Debug)]
pub struct RouteHandle {
    requests: Arc<RequestSeries>,
    /// Keyed by the hook's `Arc` address, which lives exactly as long as this route.
    hooks: Vec<(usize, Arc<HookSeries>)>,
}

/// The handle `Metrics::attach` put in a route's `MetricsSlot` (`None`: a table that was never
/// attached, e.g. a dry run's, so nothing is counted).
fn handle(route: &Route) -> Option<&RouteHandle> {
    route.metrics.get::<RouteHandle>()
}

/// The address identifying a hook within its route (see `RouteHandle::hooks`).
pub fn hook_key<T: ?Sized>(hook: &Arc<T>) -> usize {
    Arc::as_ptr(hook).cast::<()>() as usize
}

#[derive(Debug, Default)]
struct ServiceCounters {
    errors: [AtomicU64; 3],
    retries: AtomicU64,
    /// Copies sent to this service as a mirror, by `MIRROR_OUTCOMES` index.
    mirrored: [AtomicU64; 6],
}

/// The `outcome` label of `switchyard_mirror_requests_total`.
const MIRROR_OUTCOMES: [&str; 6] = [
    "sent",
    "error",
    "timeout",
    "no_server",
    "too_large",
    "dropped",
];

#[derive(Debug, Default)]
struct Builds {
    ok: AtomicU64,
    error: AtomicU64,
    /// Unix time of the latest attempt, in milliseconds (0: none yet).
    last_ms: AtomicU64,
    last_ok: AtomicU64,
}

/// (route, service) or (route, hook label).
type SeriesKey = (String, String);

/// The registry: one per router, shared (`Arc`) by every worker, the control loop and admin.
#[derive(Debug)]
pub struct Metrics {
    entrypoints: Vec<String>,
    open: Box<[AtomicI64]>,
    /// TLS handshakes by entrypoint: [completed, failed].
    handshakes: Box<[[AtomicU64; 2]]>,
    /// Keyed by (route, service); requests no route took are `unrouted` (route "", service "").
    requests: DashMap<SeriesKey, Arc<RequestSeries>>,
    unrouted: Arc<RequestSeries>,
    /// Keyed by (route, hook label).
    hooks: DashMap<SeriesKey, Arc<HookSeries>>,
    services: DashMap<String, Arc<ServiceCounters>>,
    builds: Builds,
    provider_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// TCP and UDP routes' series.
    l4: l4::L4Map,
}

impl Metrics {
    /// A registry for a router with these entrypoints (their order gives `entrypoint_index`).
    pub fn new(entrypoints: &[String]) -> Arc<Metrics> {
        Arc::new(Metrics {
            entrypoints: entrypoints.to_vec(),
            open: entrypoints.iter().map(|_| AtomicI64::new(0)).collect(),
            handshakes: entrypoints
                .iter()
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            requests: DashMap::new(),
            unrouted: Arc::new(RequestSeries::new(entrypoints.len())),
            hooks: DashMap::new(),
            services: DashMap::new(),
            builds: Builds::default(),
            provider_errors: Mutex::new(BTreeMap::new()),
            l4: DashMap::new(),
        })
    }

    /// Where an entrypoint's series live; `usize::MAX` (counted nowhere) for an unknown name.
    pub fn entrypoint_index(&self, name: &str) -> usize {
        self.entrypoints
            .iter()
            .position(|e| e == name)
            .unwrap_or(usize::MAX)
    }

    /// Resolves every route's series of a freshly built table (before it goes live). Series are
    /// shared with earlier tables' routes of the same name, service and hook; series of routes,
    /// hooks and services the table no longer has are dropped, so memory follows the
    /// configuration, not its history (a route that comes back starts from zero, which
    /// Prometheus reads as a counter reset).
    pub fn attach(&self, table: &RouteTable) {
        let mut requests = HashSet::new();
        let mut hooks = HashSet::new();
        for route in table.routes() {
            let (handle, request_key, hook_keys) = self.handle_for(route);
            route.metrics.set(handle);
            requests.insert(request_key);
            hooks.extend(hook_keys);
        }
        self.requests.retain(|k, _| requests.contains(k));
        self.hooks.retain(|k, _| hooks.contains(k));
        let services: HashSet<&str> = table.services().iter().map(|s| s.name.as_str()).collect();
        self.services.retain(|k, _| services.contains(k.as_str()));
        self.attach_l4(table);
    }

    /// The route's handle, plus the registry keys it uses.
    fn handle_for(&self, route: &Route) -> (RouteHandle, SeriesKey, Vec<SeriesKey>) {
        let service = match &route.target {
            Target::Service(s) => s.name.clone(),
            Target::Handler(_) => String::new(),
        };
        let n = self.entrypoints.len();
        let request_key = (route.name.clone(), service);
        let requests = self
            .requests
            .entry(request_key.clone())
            .or_insert_with(|| Arc::new(RequestSeries::new(n)))
            .clone();
        let mut hooks = Vec::new();
        let mut hook_keys = Vec::new();
        for step in &route.steps {
            let (key, label) = match step {
                Middleware::OnRequest(h) => (hook_key(h), hook_label(&h.describe())),
                Middleware::OnResponse(h) => (hook_key(h), hook_label(&h.describe())),
                _ => continue,
            };
            let series_key = (route.name.clone(), label);
            hook_keys.push(series_key.clone());
            let series = self
                .hooks
                .entry(series_key)
                .or_insert_with(|| {
                    Arc::new(HookSeries {
                        duration: Histogram::new(HOOK_BUCKETS),
                        failures: AtomicU64::new(0),
                    })
                })
                .clone();
            hooks.push((key, series));
        }
        (RouteHandle { requests, hooks }, request_key, hook_keys)
    }

    /// One finished request (`route`: the route it took, if any).
    pub fn request(
        &self,
        entrypoint: usize,
        route: Option<&Route>,
        kind: &RequestKind<'_>,
        status: StatusCode,
        took: Duration,
    ) {
        if let Some(series) = self.series_of(route) {
            series.observe(entrypoint, kind, status.as_u16(), took);
        }
    }

    /// The series a request of `route` (or no route) counts in; `None` for a table that was
    /// never attached (not served live): nothing to count.
    fn series_of<'a>(&'a self, route: Option<&'a Route>) -> Option<&'a RequestSeries> {
        match route {
            Some(r) => handle(r).map(|h| &*h.requests),
            None => Some(&self.unrouted),
        }
    }

    /// The `grpc-status` a gRPC response of `route` ended with (`None`: it ended without one).
    pub fn grpc_status(&self, route: Option<&Route>, status: Option<u8>) {
        if let Some(series) = self.series_of(route) {
            let i = status.map_or(GRPC_NONE, usize::from).min(GRPC_NONE);
            if let Some(c) = series.grpc.get(i) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// One hook run of `route` (`key`: `hook_key` of the hook).
    pub fn hook(&self, route: &Route, key: usize, took: Duration, failed: bool) {
        let Some(h) = handle(route) else { return };
        if let Some((_, s)) = h.hooks.iter().find(|(k, _)| *k == key) {
            s.duration.observe(took);
            if failed {
                s.failures.fetch_add(1, Relaxed);
            }
        }
    }

    fn service(&self, name: &str) -> Arc<ServiceCounters> {
        if let Some(s) = self.services.get(name) {
            return s.clone();
        }
        self.services.entry(name.to_string()).or_default().clone()
    }

    pub fn upstream_error(&self, service: &str, kind: UpstreamErrorKind) {
        if let Some(c) = self.service(service).errors.get(kind as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn retry(&self, service: &str) {
        self.service(service).retries.fetch_add(1, Relaxed);
    }

    /// A copy for the mirror `service` ended with `outcome` (one of `MIRROR_OUTCOMES`).
    pub fn mirror(&self, service: &str, outcome: &str) {
        if let Some(i) = MIRROR_OUTCOMES.iter().position(|o| *o == outcome) {
            if let Some(c) = self.service(service).mirrored.get(i) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// A downstream connection opened on `entrypoint`; the guard closes it when dropped.
    pub fn connection(self: &Arc<Self>, entrypoint: usize) -> OpenConnection {
        if let Some(g) = self.open.get(entrypoint) {
            g.fetch_add(1, Relaxed);
        }
        OpenConnection {
            metrics: self.clone(),
            entrypoint,
        }
    }

    /// A TLS handshake on `entrypoint` finished (`ok`) or failed.
    pub fn tls_handshake(&self, entrypoint: usize, ok: bool) {
        if let Some(c) = self.handshakes.get(entrypoint) {
            let [done, failed] = c;
            if ok { done } else { failed }.fetch_add(1, Relaxed);
        }
    }

    /// One build attempt finished (`ok`: its table went live).
    pub fn build(&self, ok: bool) {
        let c = if ok {
            &self.builds.ok
        } else {
            &self.builds.error
        };
        c.fetch_add(1, Relaxed);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.builds.last_ms.store(ms, Relaxed);
        self.builds.last_ok.store(u64::from(ok), Relaxed);
    }

    /// A provider failed to produce a snapshot (engine unreachable, unreadable catalog file).
    pub fn provider_sync_error(&self, provider: &'static str) {
        let mut m = self
            .provider_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(provider).or_insert(0) += 1;
    }

    /// Per-route totals over every entrypoint, method and service (for the JSON API and the
    /// dashboard's request and error rates); route "" is requests no route took.
    pub fn route_counts(&self) -> BTreeMap<String, RouteCounts> {
        let mut out: BTreeMap<String, RouteCounts> = BTreeMap::new();
        for ((route, _), series) in self.request_series() {
            let c = out.entry(route).or_default();
            let s = series.counts();
            c.requests += s.requests;
            c.client_errors += s.client_errors;
            c.server_errors += s.server_errors;
        }
        out
    }

    /// Per-route totals and request durations (summed over entrypoints, methods, protocols
    /// and status codes), for the JSON API's `p50_ms`/`p99_ms`; route "" is requests no route
    /// took.
    pub fn route_stats(&self) -> BTreeMap<String, RequestStats> {
        let mut out: BTreeMap<String, RequestStats> = BTreeMap::new();
        for ((route, _), series) in self.request_series() {
            out.entry(route).or_default().add(&series);
        }
        out
    }

    /// Per-service totals and request durations: the requests of every route that sends to
    /// the service (a weighted or failover service's children count none of their own here;
    /// `switchyard_server_responses_total` has them per server). Handler routes and requests
    /// no route took have no service and are left out.
    pub fn service_stats(&self) -> BTreeMap<String, RequestStats> {
        let mut out: BTreeMap<String, RequestStats> = BTreeMap::new();
        for ((_, service), series) in self.request_series() {
            if !service.is_empty() {
                out.entry(service).or_default().add(&series);
            }
        }
        out
    }

    /// The text exposition of every series; server up/down is read from `table`.
    pub fn render(&self, table: &RouteTable) -> String {
        let mut out = Text::default();
        self.render_requests(&mut out);
        self.render_connections(&mut out);
        self.render_handshakes(&mut out);
        self.render_services(&mut out);
        render_servers(&mut out, table);
        self.render_builds(&mut out);
        self.render_hooks(&mut out);
        self.render_providers(&mut out);
        self.render_l4(&mut out);
        out.0
    }

    fn request_series(&self) -> Vec<(SeriesKey, Arc<RequestSeries>)> {
        let mut all: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.push(((String::new(), String::new()), self.unrouted.clone()));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn render_requests(&self, out: &mut Text) {
        let all = self.request_series();
        out.head(
            "switchyard_requests_total",
            "counter",
            "Requests served, by entrypoint, route, service, status code, method, protocol \
             (http, websocket, sse, grpc, grpc-web) and HTTP version (1.0, 1.1, 2).",
        );
        let kinds = || {
            PROTOCOLS
                .iter()
                .flat_map(|p| VERSIONS.iter().map(move |v| (*p, *v)))
        };
        for ((route, service), s) in &all {
            for (ep, e) in self.entrypoints.iter().zip(s.entries.iter()) {
                for ((protocol, version), slot) in kinds().zip(e.by_kind.iter()) {
                    let Some(by_method) = slot.get() else {
                        continue;
                    };
                    for (method, codes) in METHODS.iter().zip(by_method.iter()) {
                        for (code, v) in codes.each() {
                            let code = code.to_string();
                            out.sample(
                                "switchyard_requests_total",
                                &[
                                    ("entrypoint", ep),
                                    ("route", route),
                                    ("service", service),
                                    ("code", &code),
                                    ("method", method),
                                    ("protocol", protocol),
                                    ("version", version),
                                ],
                                v as f64,
                            );
                        }
                    }
                }
            }
        }
        out.head(
            "switchyard_grpc_responses_total",
            "counter",
            "gRPC responses by route, service and grpc_status (the code the server or the router \
             answered; \"none\": the response ended without one).",
        );
        for ((route, service), s) in &all {
            for (code, c) in s.grpc.iter().enumerate() {
                let n = c.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let code = if code == GRPC_NONE {
                    "none".to_string()
                } else {
                    code.to_string()
                };
                out.sample(
                    "switchyard_grpc_responses_total",
                    &[
                        ("route", route),
                        ("service", service),
                        ("grpc_status", &code),
                    ],
                    n as f64,
                );
            }
        }
        out.head(
            "switchyard_request_duration_seconds",
            "histogram",
            "Time from the request head to the response head, by entrypoint, route and service.",
        );
        for ((route, service), s) in &all {
            for (ep, e) in self.entrypoints.iter().zip(s.entries.iter()) {
                if e.duration.count.load(Relaxed) == 0 {
                    continue;
                }
                out.histogram(
                    "switchyard_request_duration_seconds",
                    &[("entrypoint", ep), ("route", route), ("service", service)],
                    &e.duration,
                );
            }
        }
    }

    fn render_connections(&self, out: &mut Text) {
        out.head(
            "switchyard_open_connections",
            "gauge",
            "Downstream connections open now, by entrypoint.",
        );
        for (ep, g) in self.entrypoints.iter().zip(self.open.iter()) {
            out.sample(
                "switchyard_open_connections",
                &[("entrypoint", ep)],
                g.load(Relaxed) as f64,
            );
        }
    }

    fn render_handshakes(&self, out: &mut Text) {
        out.head(
            "switchyard_tls_handshakes_total",
            "counter",
            "TLS handshakes on TLS entrypoints, by entrypoint and result (ok, error).",
        );
        for (ep, c) in self.entrypoints.iter().zip(self.handshakes.iter()) {
            for (result, n) in [("ok", &c[0]), ("error", &c[1])] {
                out.sample(
                    "switchyard_tls_handshakes_total",
                    &[("entrypoint", ep), ("result", result)],
                    n.load(Relaxed) as f64,
                );
            }
        }
    }

    fn render_services(&self, out: &mut Text) {
        let mut all: Vec<(String, Arc<ServiceCounters>)> = self
            .services
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        out.head(
            "switchyard_upstream_errors_total",
            "counter",
            "Failed exchanges with a server (each attempt), by service and kind (connect, timeout, other).",
        );
        for (service, c) in &all {
            for (kind, n) in ERROR_KINDS.iter().zip(c.errors.iter()) {
                let n = n.load(Relaxed);
                if n > 0 {
                    out.sample(
                        "switchyard_upstream_errors_total",
                        &[("service", service), ("kind", kind)],
                        n as f64,
                    );
                }
            }
        }
        out.head(
            "switchyard_retries_total",
            "counter",
            "Attempts after the first one made by retry middlewares, by the route's service.",
        );
        for (service, c) in &all {
            let n = c.retries.load(Relaxed);
            if n > 0 {
                out.sample(
                    "switchyard_retries_total",
                    &[("service", service)],
                    n as f64,
                );
            }
        }
        out.head(
            "switchyard_mirror_requests_total",
            "counter",
            "Copies of requests sent to mirror services, by mirror service and outcome (sent, error, timeout, no_server, too_large, dropped).",
        );
        for (service, c) in &all {
            for (outcome, n) in MIRROR_OUTCOMES.iter().zip(c.mirrored.iter()) {
                let n = n.load(Relaxed);
                if n > 0 {
                    out.sample(
                        "switchyard_mirror_requests_total",
                        &[("service", service), ("outcome", outcome)],
                        n as f64,
                    );
                }
            }
        }
    }

    fn render_builds(&self, out: &mut Text) {
        let b = &self.builds;
        out.head(
            "switchyard_script_builds_total",
            "counter",
            "Script build attempts, by result (ok: the table went live; error: the last good table kept serving).",
        );
        for (result, c) in [("ok", &b.ok), ("error", &b.error)] {
            out.sample(
                "switchyard_script_builds_total",
                &[("result", result)],
                c.load(Relaxed) as f64,
            );
        }
        out.head(
            "switchyard_last_build_timestamp_seconds",
            "gauge",
            "Unix time of the latest script build attempt (0: none yet).",
        );
        out.sample(
            "switchyard_last_build_timestamp_seconds",
            &[],
            b.last_ms.load(Relaxed) as f64 / 1000.0,
        );
        out.head(
            "switchyard_last_build_success",
            "gauge",
            "1 if the latest script build attempt succeeded, else 0.",
        );
        out.sample(
            "switchyard_last_build_success",
            &[],
            b.last_ok.load(Relaxed) as f64,
        );
    }

    fn render_hooks(&self, out: &mut Text) {
        let mut all: Vec<(SeriesKey, Arc<HookSeries>)> = self
            .hooks
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        out.head(
            "switchyard_hook_duration_seconds",
            "histogram",
            "Time spent in on_request / on_response script hooks, by route and hook.",
        );
        for ((route, hook), s) in &all {
            out.histogram(
                "switchyard_hook_duration_seconds",
                &[("route", route), ("hook", hook)],
                &s.duration,
            );
        }
        out.head(
            "switchyard_hook_failures_total",
            "counter",
            "Script hook runs that failed (the request got a 500), by route and hook.",
        );
        for ((route, hook), s) in &all {
            out.sample(
                "switchyard_hook_failures_total",
                &[("route", route), ("hook", hook)],
                s.failures.load(Relaxed) as f64,
            );
        }
    }

    fn render_providers(&self, out: &mut Text) {
        let m = self
            .provider_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out.head(
            "switchyard_provider_sync_errors_total",
            "counter",
            "Failed provider syncs (engine unreachable, unreadable catalog file), by provider.",
        );
        for (provider, n) in m {
            out.sample(
                "switchyard_provider_sync_errors_total",
                &[("provider", provider)],
                n as f64,
            );
        }
    }
}

fn render_servers(out: &mut Text, table: &RouteTable) {
    out.head(
        "switchyard_server_up",
        "gauge",
        "1 if the server can be picked (active health check passing, not passively ejected), else 0.",
    );
    let now = Instant::now();
    let mut rows = Vec::new();
    for svc in table.services() {
        let Some(pool) = svc.pool() else { continue };
        for (server, state) in pool.servers.iter().zip(pool.states.iter()) {
            rows.push((
                svc.name.clone(),
                server.authority.as_str().to_string(),
                state.available(now),
                state.responses(),
            ));
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (service, server, up, _) in &rows {
        out.sample(
            "switchyard_server_up",
            &[("service", service), ("server", server)],
            if *up { 1.0 } else { 0.0 },
        );
    }
    out.head(
        "switchyard_server_responses_total",
        "counter",
        "Responses each server sent, by service, server and status class (the leaf service of \
         a weighted or failover one: compare a canary with the stable version).",
    );
    for (service, server, _, counts) in &rows {
        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(counts) {
            if *n > 0 {
                out.sample(
                    "switchyard_server_responses_total",
                    &[
                        ("service", service),
                        ("server", server),
                        ("code_class", class),
                    ],
                    *n as f64,
                );
            }
        }
    }
}

/// What `Metrics::route_counts` reports for one route (and `RequestStats` for a route or a
/// service).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteCounts {
    pub requests: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
}

/// Keeps a connection counted in `switchyard_open_connections` while alive.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Arc<Metrics>,
    entrypoint: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(g) = self.metrics.open.get(self.entrypoint) {
            g.fetch_sub(1, Relaxed);
        }
    }
}

/// `GET /metrics`: the exposition with Prometheus' text content type.
pub fn response(metrics: &Metrics, table: &RouteTable, tls: &TlsView) -> Response<Full<Bytes>> {
    let mut text = metrics.render(table);
    text.push_str(&render_tls(tls));
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// What `/metrics` shows of certificates, read at scrape time: each served certificate (its
/// first name, its source, its expiry) and each resolver's orders per name (done, failed).
#[derive(Debug, Default)]
pub struct TlsView {
    pub certificates: Vec<(String, String, i64)>,
    pub orders: Vec<(String, String, u64, u64)>,
}

fn render_tls(v: &TlsView) -> String {
    let mut out = Text::default();
    if !v.certificates.is_empty() {
        out.head(
            "switchyard_certificate_not_after_seconds",
            "gauge",
            "When each served certificate expires (Unix time), by its first name and source.",
        );
        for (name, source, not_after) in &v.certificates {
            out.sample(
                "switchyard_certificate_not_after_seconds",
                &[("name", name), ("source", source)],
                *not_after as f64,
            );
        }
    }
    if !v.orders.is_empty() {
        out.head(
            "switchyard_acme_orders_total",
            "counter",
            "ACME certificate orders, by resolver, name and result (ok, error).",
        );
        for (resolver, name, done, failed) in &v.orders {
            let ok = done.saturating_sub(*failed);
            for (result, n) in [("ok", ok), ("error", *failed)] {
                out.sample(
                    "switchyard_acme_orders_total",
                    &[("resolver", resolver), ("name", name), ("result", result)],
                    n as f64,
                );
            }
        }
    }
    out.0
}

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// `on_request(Fn("canary"))` → `on_request(canary)`; closures stay `on_request(<closure>)`.
fn hook_label(described: &str) -> String {
    described
        .replace("Fn(\"", "")
        .replace("\")", "")
        .replace("Fn(<closure>)", "<closure>")
}

/// The exposition being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", format_value(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (cumulative, count, sum) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.bounds.iter().zip(cumulative.iter()) {
            let le = format_value(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, *n as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, count as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v.is_nan() {
        return "NaN".to_string();
    }
    // Rust prints integral floats without an exponent and shortest round-trip otherwise.
    format!("{v}")
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_and_cumulative() {
        let h = Histogram::new(REQUEST_BUCKETS);
        h.observe(Duration::from_millis(5)); // exactly on the first bound
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_secs(11)); // past the last bound: +Inf only
        let (cum, count, sum) = h.snapshot();
        assert_eq!(cum, vec![1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
        assert_eq!(count, 4);
        assert!((sum - 11.312).abs() < 1e-9, "{sum}");
    }

    fn close(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_prometheus_does() {
        // Ten observations (ms): 3, 4 | 7, 8, 9, 9.5 | 20 | 40 | 200 | 700, so per bucket
        // le=0.005: 2, le=0.01: 4, le=0.025: 1, le=0.05: 1, le=0.25: 1, le=1: 1, and
        // cumulatively [2, 6, 7, 8, 8, 9, 9, 10, 10, 10, 10].
        let h = Histogram::new(REQUEST_BUCKETS);
        for ms in [3.0, 4.0, 7.0, 8.0, 9.0, 9.5, 20.0, 40.0, 200.0, 700.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut d = Durations::default();
        d.add(&h);
        assert_eq!(d.cumulative, vec![2, 6, 7, 8, 8, 9, 9, 10, 10, 10, 10]);
        assert_eq!(d.count(), 10);
        // p50: rank 0.5 × 10 = 5, first reached at le=0.01 (6); that bucket holds 6 - 2 = 4
        // and the rank is 5 - 2 = 3 into it: 5 ms + (10 - 5) ms × 3/4 = 8.75 ms.
        assert!(close(d.quantile_ms(0.5), 8.75), "{:?}", d.quantile_ms(0.5));
        // p99: rank 9.9, first reached at le=1 (10); the bucket (0.5, 1] holds 1 and the rank
        // is 0.9 into it: 500 ms + 500 ms × 0.9 = 950 ms.
        assert!(
            close(d.quantile_ms(0.99), 950.0),
            "{:?}",
            d.quantile_ms(0.99)
        );
        // p10: rank 1 in the first bucket, which starts at 0: 5 ms × 1/2 = 2.5 ms.
        assert!(close(d.quantile_ms(0.1), 2.5), "{:?}", d.quantile_ms(0.1));
        // p25: rank 2.5, 0.5 into le=0.01: 5 ms + 5 ms × 0.5/4 = 5.625 ms.
        assert!(
            close(d.quantile_ms(0.25), 5.625),
            "{:?}",
            d.quantile_ms(0.25)
        );
        // p80: rank 8 is reached exactly at le=0.05: its upper bound, 50 ms.
        assert!(close(d.quantile_ms(0.8), 50.0), "{:?}", d.quantile_ms(0.8));
        // p100: rank 10, first reached at le=1: 1000 ms.
        assert!(
            close(d.quantile_ms(1.0), 1000.0),
            "{:?}",
            d.quantile_ms(1.0)
        );
    }

    #[test]
    fn quantiles_in_the_inf_bucket_none_without_observations() {
        // Nine observations of 2 ms and one of 11 s (+Inf only): cumulative 9 at every bound,
        // count 10.
        let h = Histogram::new(REQUEST_BUCKETS);
        for _ in 0..9 {
            h.observe(Duration::from_millis(2));
        }
        h.observe(Duration::from_secs(11));
        let mut d = Durations::default();
        d.add(&h);
        // p50: rank 5 of the 9 in (0, 5 ms]: 5 ms × 5/9.
        assert!(close(d.quantile_ms(0.5), 5.0 * 5.0 / 9.0));
        // p90: rank 9 is reached exactly at le=0.005: 5 ms.
        assert!(close(d.quantile_ms(0.9), 5.0));
        // p99: rank 9.9 is past every finite bucket: the highest finite bound, 10 s.
        assert!(close(d.quantile(0.99), 10.0));

        assert_eq!(Durations::default().quantile(0.5), None);
        let mut empty = Durations::default();
        empty.add(&Histogram::new(REQUEST_BUCKETS));
        assert_eq!(empty.quantile(0.5), None, "no observations");
        assert_eq!(
            histogram_quantile(0.5, &[], &[], 3),
            None,
            "no finite bound"
        );
        assert_eq!(d.quantile(1.5), None);
        assert_eq!(d.quantile(f64::NAN), None);
        // q = 0 with an empty first bucket: its lower bound (Prometheus: 0/0).
        assert_eq!(histogram_quantile(0.0, &[1.0, 2.0], &[0, 4], 4), Some(0.0));
        // A count read before the buckets caught up is raised to the last one.
        assert!(close(histogram_quantile(0.5, &[1.0, 2.0], &[2, 4], 3), 1.0));
    }

    #[test]
    fn route_stats_sum_the_series_of_every_entrypoint() {
        let m = Metrics::new(&["web".to_string(), "websecure".to_string()]);
        let kind = RequestKind {
            method: &Method::GET,
            protocol: Protocol::Http,
            version: http::Version::HTTP_11,
        };
        // Unrouted requests: 3 ms and 8 ms on web; 7 ms (a 502) and 40 ms (a 404) on websecure.
        m.request(0, None, &kind, StatusCode::OK, Duration::from_millis(3));
        m.request(0, None, &kind, StatusCode::OK, Duration::from_millis(8));
        m.request(
            1,
            None,
            &kind,
            StatusCode::BAD_GATEWAY,
            Duration::from_millis(7),
        );
        m.request(
            1,
            None,
            &kind,
            StatusCode::NOT_FOUND,
            Duration::from_millis(40),
        );
        let stats = m.route_stats();
        let s = stats.get("").unwrap();
        assert_eq!(
            s.counts,
            RouteCounts {
                requests: 4,
                client_errors: 1,
                server_errors: 1
            }
        );
        assert_eq!(s.counts, m.route_counts()[""]);
        // Summed buckets: 1 in (0, 5], 2 in (5, 10], 1 in (25, 50] ms. p50: rank 2, 1 into
        // (5, 10] of its 2: 7.5 ms. p99: rank 3.96, 0.96 into (25, 50]: 25 + 25 × 0.96 = 49 ms.
        assert!(close(s.p50_ms(), 7.5), "{:?}", s.p50_ms());
        assert!(close(s.p99_ms(), 49.0), "{:?}", s.p99_ms());
        assert!(
            m.service_stats().is_empty(),
            "unrouted requests have no service"
        );
        let fresh = Metrics::new(&["web".to_string()]);
        assert_eq!(fresh.route_stats()[""].p50_ms(), None);
    }

    #[test]
    fn code_counters_cover_100_to_999_and_ignore_the_rest() {
        let c = CodeCounters::default();
        for code in [200, 200, 404, 503, 100, 999, 42, 1000] {
            c.add(code);
        }
        assert_eq!(
            c.each(),
            vec![(100, 1), (200, 2), (404, 1), (503, 1), (999, 1)]
        );
    }

    #[test]
    fn labels_and_values_are_escaped_and_formatted() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.005), "0.005");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(
            hook_label("on_request(Fn(\"canary\"))"),
            "on_request(canary)"
        );
        assert_eq!(
            hook_label("on_response(Fn(<closure>))"),
            "on_response(<closure>)"
        );
    }

    #[test]
    fn protocol_of_a_request_head() {
        let of = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            Protocol::of(&h)
        };
        assert_eq!(of(&[]), Protocol::Http);
        assert_eq!(of(&[("content-type", "application/grpc")]), Protocol::Grpc);
        assert_eq!(
            of(&[("content-type", "Application/GRPC+proto")]),
            Protocol::Grpc
        );
        assert_eq!(
            of(&[("content-type", "application/grpc-web+proto")]),
            Protocol::GrpcWeb
        );
        assert_eq!(
            of(&[("connection", "Upgrade"), ("upgrade", "WebSocket")]),
            Protocol::Websocket
        );
        assert_eq!(of(&[("accept", "text/event-stream")]), Protocol::Sse);
        assert_eq!(of(&[("content-type", "application/json")]), Protocol::Http);
        assert!(Protocol::GrpcWeb.is_grpc() && !Protocol::Sse.is_grpc());
    }

    #[test]
    fn exposition_of_a_fresh_registry() {
        let m = Metrics::new(&["web".to_string()]);
        m.request(
            0,
            None,
            &RequestKind {
                method: &Method::from_bytes(b"BREW").unwrap(),
                protocol: Protocol::Http,
                version: http::Version::HTTP_11,
            },
            StatusCode::NOT_FOUND,
            Duration::from_millis(2),
        );
        m.request(
            0,
            None,
            &RequestKind {
                method: &Method::POST,
                protocol: Protocol::Grpc,
                version: http::Version::HTTP_2,
            },
            StatusCode::OK,
            Duration::from_millis(1),
        );
        m.grpc_status(None, Some(12));
        m.grpc_status(None, None);
        m.upstream_error("api", UpstreamErrorKind::Connect);
        m.retry("api");
        m.build(false);
        m.provider_sync_error("docker");
        let _open = m.connection(0);
        assert_eq!(
            m.route_counts().get(""),
            Some(&RouteCounts {
                requests: 2,
                client_errors: 1,
                server_errors: 0
            })
        );
        let text = m.render(&RouteTable::default());
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("switchyard_last_build_timestamp_seconds ") {
                    "switchyard_last_build_timestamp_seconds <time>"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(text);
    }
}
