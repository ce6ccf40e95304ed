//! The proxy: the only code that touches client and backend sockets.
//!
//! Owns the `Proxy` (shared state of a worker's entrypoints), its `Settings` and per-entrypoint
//! options. The work is split by phase:
//!
//! ```text
//! listener.rs  accept (max-connections) ─► connection (exact head limit, timeouts) ─► handle
//! phases.rs    canonicalise ─► route ─► forwarding headers ─► request phase (pipeline.rs)
//!              ─► target: handler | Exchange::service ─► response phase (pipeline.rs)
//! exchange.rs  Live: pick ─► upstream (retries, passive health, breakers) ─► response head
//! dry.rs       Dry: pick ─► the request as it would leave (replay, REPL, test, explain)
//! ctx.rs       RequestCtx (one per request) and the observers fed by the log phase
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
mod ctx;
pub mod dry;
pub mod error;
mod exchange;
pub mod forward;
pub mod health;
mod listener;
mod phases;
mod pipeline;
mod record;
pub mod upstream;

use phases::set_path_and_query;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::canonical::PathOptions;
use crate::middleware::Store;
use crate::routing::{Handler, RouteTable};
use body::ProxyBody;

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
    pub(super) fn admit(&self) -> Option<OpenConnection> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let conn = OpenConnection(self.open.clone());
        (n < self.max_connections).then_some(conn)
    }
}

/// One admitted connection; uncounted when dropped.
pub(super) struct OpenConnection(Arc<AtomicUsize>);

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
