//! Entrypoints and downstream connections: the accept loop (per-entrypoint connection cap),
//! one HTTP/1.1 connection per client (exact head limit, header-read and idle timeouts watched
//! by a separate task, graceful shutdown), and the hand-over of each request to the phase list.
//!
//! Invariants: a connection over the entrypoint's `max-connections` is closed before a byte is
//! read; a connection's own task polls only the connection; every request gets a response (the
//! phase list's, or a 500 should the live exchange ever end without one).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, debug_span, warn, Instrument};

use super::body::ProxyBody;
use super::conn::{Activity, Expiry, TrackedIo};
use super::ctx::{Peer, RequestCtx};
use super::error::ProxyError;
use super::exchange::Live;
use super::pipeline::Plan;
use super::{record, Proxy, Tracker};

/// A live connection: its peer (shared with its requests), its timeout clocks, and the tracker
/// that keeps shutdown waiting while it (or a tunnel it opened) lives.
#[derive(Clone)]
pub(super) struct Conn {
    pub peer: Arc<Peer>,
    pub activity: Arc<Activity>,
    pub tracker: Tracker,
}

impl Proxy {
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
            let info = Conn {
                peer: Arc::new(Peer::new(entrypoint.clone(), peer, &self.settings, ep)),
                activity: Activity::new(),
                tracker: tracker.clone(),
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
        info: Conn,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _open = self.metrics.connection(info.peer.ep);
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
                        debug!(peer = %info.peer.addr, error = %e, "downstream connection ended with an error");
                    }
                    break;
                }
                why = &mut close_rx, if !closing => {
                    closing = true;
                    match why {
                        Ok(Expiry::HeaderRead) => {
                            debug!(peer = %info.peer.addr, "request head not received in time; closing");
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

    /// One request on a live connection: the phase list with the live exchange, then the log
    /// phase.
    async fn handle(&self, req: Request<Incoming>, info: &Conn) -> Response<ProxyBody> {
        let guard = info.activity.begin();
        let span = debug_span!("request", method = %req.method(), path = req.uri().path());
        let plan = Plan {
            path: info.peer.path,
            ..Default::default()
        };
        let mut ctx = RequestCtx::new(
            info.peer.clone(),
            req.method().clone(),
            req.uri().clone(),
            self.table.load_full(),
            plan,
        );
        // One atomic load when recording is off.
        if self.recorder.is_on() {
            ctx.observers.rec = Some(Box::new(record::begin(&req, &info.peer, &self.recorder)));
        }
        if let Some(l) = &self.access_log {
            ctx.observers.alog = Some(Box::new(l.begin(
                &req,
                info.peer.addr,
                &info.peer.entrypoint,
            )));
        }
        let mut live = Live {
            tracker: info.tracker.clone(),
        };
        let resp = self
            .run_phases(&mut ctx, req, &mut live)
            .instrument(span)
            .await
            .unwrap_or_else(|| {
                ProxyError::Hook {
                    route: String::new(),
                    message: "the live exchange ended without a response".into(),
                }
                .into_response()
            });
        ctx.finish(self, &resp);
        resp.map(|b| b.guarded(guard))
    }
}
