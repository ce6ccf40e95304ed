//! Wiring for `switchyard run`: binds entrypoints, starts the control loop, the proxy and the
//! admin API, and shuts them down in order.
//!
//! Owns the process lifecycle: SIGHUP reloads scripts; SIGINT/SIGTERM stop accepting, let
//! in-flight requests finish up to the grace period, then return. `Router::start` takes already
//! bound listeners so tests can run a router on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::control::{self, Control, ScriptsOrigin, Trigger};
use crate::providers;
use crate::proxy::{self, Proxy, Tracker};
use crate::script::Limits;

/// A running router.
pub struct Router {
    control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    triggers: mpsc::Sender<Trigger>,
    drain: mpsc::Receiver<()>,
    tracker: Option<Tracker>,
    tasks: Vec<JoinHandle<()>>,
    _watchers: Vec<notify::RecommendedWatcher>,
    pub entrypoints: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
}

impl Router {
    /// Starts on already-bound listeners. The first build runs before this returns; if it fails
    /// the router starts with an empty table (every request 404) and keeps watching for a fix.
    pub async fn start(
        cfg: &Config,
        listeners: Vec<(String, TcpListener)>,
        admin_listener: Option<TcpListener>,
    ) -> anyhow::Result<Router> {
        let catalog = match &cfg.catalog {
            Some(p) => Catalog::load(p)?,
            None => Catalog::default(),
        };
        let names: Vec<String> = listeners.iter().map(|(n, _)| n.clone()).collect();
        let control = Arc::new(Control::new(
            cfg.scripts.clone(),
            catalog,
            names,
            Limits::default(),
        ));
        match control.origin() {
            ScriptsOrigin::Dir(d) => info!(scripts = %d.display(), "loading route scripts"),
            ScriptsOrigin::Embedded => {
                info!("no scripts folder: using the embedded default scripts")
            }
        }
        let c = control.clone();
        tokio::task::spawn_blocking(move || c.rebuild(true))
            .await
            .context("first build")?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (triggers, trigger_rx) = mpsc::channel(64);
        let mut watchers = Vec::new();
        if let ScriptsOrigin::Dir(d) = control.origin() {
            let w = control::watch_dir(d, triggers.clone())
                .with_context(|| format!("cannot watch {}", d.display()))?;
            watchers.push(w);
        }
        if let Some(p) = &cfg.catalog {
            let w = providers::file::watch(p, triggers.clone())
                .with_context(|| format!("cannot watch {}", p.display()))?;
            watchers.push(w);
        }
        let mut tasks = vec![tokio::spawn(control.clone().run(
            trigger_rx,
            shutdown_rx.clone(),
            Duration::from_millis(100),
        ))];

        let proxy = Proxy::new(control.table(), cfg.settings.clone());
        let (tracker, drain) = Tracker::new();
        let mut entrypoints = Vec::new();
        for (name, listener) in listeners {
            let addr = listener.local_addr()?;
            info!(entrypoint = %name, %addr, "listening");
            entrypoints.push((name.clone(), addr));
            tasks.push(tokio::spawn(proxy.clone().serve_entrypoint(
                name,
                listener,
                shutdown_rx.clone(),
                tracker.clone(),
            )));
        }
        let mut admin_addr = None;
        if let Some(l) = admin_listener {
            let addr = l.local_addr()?;
            info!(%addr, "admin API listening");
            admin_addr = Some(addr);
            let state = AdminState {
                table: control.table(),
                status: control.status(),
                started: Instant::now(),
            };
            tasks.push(tokio::spawn(admin::serve(l, state, shutdown_rx.clone())));
        }
        Ok(Router {
            control,
            shutdown,
            triggers,
            drain,
            tracker: Some(tracker),
            tasks,
            _watchers: watchers,
            entrypoints,
            admin: admin_addr,
        })
    }

    /// Asks for a rebuild (what SIGHUP does).
    pub fn reload(&self) {
        let _ = self.triggers.try_send(Trigger::Signal);
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then returns.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.tracker.take();
        let drain = std::mem::replace(&mut self.drain, mpsc::channel(1).1);
        if tokio::time::timeout(grace, proxy::wait_for_drain(drain))
            .await
            .is_err()
        {
            warn!(grace = ?grace, "grace period over; closing remaining connections");
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Binds every entrypoint and the admin listener of `cfg`.
pub async fn bind(
    cfg: &Config,
) -> anyhow::Result<(Vec<(String, TcpListener)>, Option<TcpListener>)> {
    let mut listeners = Vec::new();
    for (name, addr) in &cfg.entrypoints {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for entrypoint {name:?}"))?;
        listeners.push((name.clone(), l));
    }
    let admin = match cfg.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the admin API"))?,
        ),
        None => None,
    };
    Ok((listeners, admin))
}

/// `switchyard run`: serve until SIGINT or SIGTERM; reload on SIGHUP.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal that arrives during the first build is queued, not fatal.
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let (listeners, admin) = bind(&cfg).await?;
    let router = Router::start(&cfg, listeners, admin).await?;
    loop {
        tokio::select! {
            _ = hup.recv() => { info!("SIGHUP: reloading scripts"); router.reload(); }
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
        }
    }
    router.shutdown(cfg.grace_period).await;
    info!("stopped");
    Ok(())
}
