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
//! subrequest.rs  forward_auth and error pages: requests the router sends for a request
//! mirror.rs    copies of a request for mirroring services, sent after the main answer
//! ```
//!
//! Invariants: every decision is made on the request `canonicalize` made (the one the server
//! receives); each request reads exactly one table snapshot (`ArcSwap::load_full`) and keeps it
//! until it finishes, so a reload never changes a request mid-way; bodies stream through and are
//! buffered only where a route asks (buffering, retry, mirroring, each with a size limit); every failure becomes a response in `error` (no panics, no hangs).

pub mod body;
pub mod compress;
pub mod conn;
mod ctx;
pub mod dry;
pub mod error;
mod exchange;
pub mod forward;
pub mod health;
pub mod hello;
mod listener;
mod mirror;
mod phases;
mod pipeline;
pub mod proxy_protocol;
mod record;
mod subrequest;
mod tcp;
pub mod udp;
pub mod upstream;

use phases::set_path_and_query;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc;

use crate::middleware::Store;
use crate::routing::Handler;
use crate::table::RouteTable;
use body::ProxyBody;

pub use crate::settings::{EntrypointOptions, Settings, DEFAULT_MAX_CONNECTIONS};

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
    recorder: Arc<crate::recording::recorder::Recorder>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The access log, when on (the one check per request).
    access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// The certificates TLS entrypoints serve (the control loop swaps them on reload).
    certs: OnceLock<Arc<crate::tls::Certificates>>,
    /// Where `rate_limit(#{ store })` counts (`--store`), when there is a store.
    shared_rate: OnceLock<Arc<dyn crate::middleware::limit::SharedRate>>,
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
            crate::recording::recorder::Recorder::off(),
        )
    }

    /// A proxy whose requests go to `recorder` while it records.
    pub fn with_recorder(
        table: Arc<ArcSwap<RouteTable>>,
        settings: Settings,
        store: Arc<Store>,
        recorder: Arc<crate::recording::recorder::Recorder>,
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
        recorder: Arc<crate::recording::recorder::Recorder>,
        metrics: Arc<crate::metrics::Metrics>,
        access_log: Option<Arc<crate::access_log::AccessLog>>,
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
            certs: OnceLock::new(),
            shared_rate: OnceLock::new(),
        })
    }

    /// Counts shared rate limits in `store` (call before serving; later calls are ignored).
    pub fn with_shared_rate(
        self: Arc<Self>,
        store: Arc<dyn crate::middleware::limit::SharedRate>,
    ) -> Arc<Self> {
        let _ = self.shared_rate.set(store);
        self
    }

    /// Serves `certs` on TLS entrypoints (call before serving them; later calls are ignored).
    pub fn with_certificates(self: Arc<Self>, certs: Arc<crate::tls::Certificates>) -> Arc<Self> {
        let _ = self.certs.set(certs);
        self
    }

    /// The certificates TLS entrypoints serve: the router's, else (a proxy made without them,
    /// in tests) a self-signed default.
    fn certificates(&self) -> Result<Arc<crate::tls::Certificates>, String> {
        if let Some(c) = self.certs.get() {
            return Ok(c.clone());
        }
        let default = crate::tls::certs::self_signed()?;
        let c = crate::tls::Certificates::new(crate::tls::CertStore::new(Vec::new(), default));
        Ok(self.certs.get_or_init(|| c).clone())
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
