//! Wiring for `switchyard run`: binds entrypoints, starts the control loop, the proxy and the
//! admin API, and shuts them down in order.
//!
//! Owns the process lifecycle: SIGHUP reloads scripts — and, when the static configuration can
//! be read again (`run_reloading`), applies a changed one by starting a new router on the kept
//! sockets of unchanged entrypoints and stopping the old one gracefully; SIGINT/SIGTERM stop
//! accepting, let in-flight requests finish up to the grace period, then return. `Router::start` takes already
//! bound listeners so tests can run a router on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::control::certs::CertManager;
use crate::control::{self, Control, Trigger};
use crate::providers;
use crate::proxy::{self, Proxy, Tracker};
use crate::recording::recorder::Recorder;
use crate::script::ScriptsOrigin;
use crate::script::{self, Limits};

/// One worker's listening sockets: one per entrypoint, in entrypoint order.
pub type ListenerSet = Vec<(String, std::net::TcpListener)>;

/// A running router.
pub struct Router {
    control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    triggers: mpsc::Sender<Trigger>,
    tasks: Vec<JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    _watchers: Vec<notify::RecommendedWatcher>,
    pub entrypoints: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    /// Live request recording, shared by every proxy worker and the admin API.
    pub recorder: Arc<Recorder>,
    /// The access log (`--access-log`), shared by every proxy worker.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl Router {
    /// Starts on already-bound listeners: one proxy worker thread per `ListenerSet`, each with its
    /// own single-threaded runtime and upstream pool (no cross-thread hand-offs per request);
    /// the control loop and the admin API run on the caller's runtime. The first build runs
    /// before this returns; if it fails the router starts with an empty table (every request
    /// 404) and keeps watching for a fix.
    pub async fn start(
        cfg: &Config,
        sets: Vec<ListenerSet>,
        admin_listener: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Router> {
        // Checked before anything starts: an invalid expression must not serve a partial catalog.
        if let Some(d) = &cfg.docker {
            providers::docker::constraints(d).context("--docker.constraints")?;
        }
        if let Some(s) = &cfg.swarm {
            providers::swarm::constraints(s).context("--swarm.constraints")?;
        }
        let catalog = match &cfg.catalog {
            Some(p) => Catalog::load(p)?,
            None => Catalog::default(),
        };
        let first = sets.first().context("no proxy worker to start")?;
        let mut names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
        let mut entrypoints = Vec::new();
        for (name, l) in first {
            let addr = l.local_addr()?;
            info!(entrypoint = %name, %addr, workers = sets.len(), "listening");
            entrypoints.push((name.clone(), addr));
        }
        // UDP entrypoints: one socket each, served on this runtime.
        let mut udp_sockets = Vec::new();
        for (name, addr) in cfg.entrypoints.iter().filter(|(n, _)| is_udp(cfg, n)) {
            let socket = udp_socket(*addr)
                .with_context(|| format!("cannot listen on {addr}/udp for entrypoint {name:?}"))?;
            let actual = socket.local_addr()?;
            info!(entrypoint = %name, addr = %actual, "listening (UDP)");
            entrypoints.push((name.clone(), actual));
            names.push(name.clone());
            udp_sockets.push((name.clone(), socket));
        }
        let admin_at = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        // Redirects to another entrypoint name the port it really listens on (`:0` in tests).
        let mut settings = cfg.settings.clone();
        for o in settings.entrypoint_options.values_mut() {
            if let Some(r) = &mut o.redirect {
                if let Some((_, a)) = entrypoints.iter().find(|(n, _)| *n == r.to) {
                    r.port = a.port();
                }
            }
        }
        let control = Arc::new(Control::new(
            cfg.scripts.clone(),
            catalog,
            {
                let mut env = script::BuildEnv::new(names, admin_at);
                let from_cfg = cfg.build_env();
                env.tls_entrypoints = from_cfg.tls_entrypoints;
                env.udp_entrypoints = from_cfg.udp_entrypoints;
                env
            },
            Limits::default(),
        ));
        let tls_entrypoints: Vec<&String> = cfg
            .entrypoints
            .iter()
            .map(|(n, _)| n)
            .filter(|n| cfg.settings.is_tls(n))
            .collect();
        // Always: TLS entrypoints serve these certificates, and so do TCP routes that terminate
        // TLS on any entrypoint.
        let certs = {
            let base = match control.origin() {
                ScriptsOrigin::Dir(d) => d.clone(),
                ScriptsOrigin::Embedded | ScriptsOrigin::Generated(_) => PathBuf::from("."),
            };
            let m = CertManager::new(
                cfg.tls.certificates.clone(),
                cfg.tls.default_certificate.as_ref(),
                base,
            )
            .map_err(anyhow::Error::msg)
            .context("TLS certificates")?;
            // Every TLS entrypoint's settings are checked now, not at its first connection.
            for name in &tls_entrypoints {
                if let Some(t) = cfg.settings.entrypoint(name).and_then(|o| o.tls.as_ref()) {
                    t.server_config(m.certificates())
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("entrypoint {name:?}"))?;
                }
            }
            let m = Arc::new(m);
            control.set_certificates(m.clone());
            Some(m)
        };
        // Certificate resolvers serve what their storage holds from the first build on.
        let mut resolvers = Vec::new();
        // The shared store backs the resolvers and `rate_limit(#{ store })`.
        let shared = match &cfg.tls.store {
            Some(url) => {
                let key = cfg
                    .tls
                    .store_key_file
                    .as_deref()
                    .map(crate::acme::shared::read_key_file)
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let s = crate::acme::shared::SharedStore::connect(
                    url,
                    key,
                    cfg.tls.store_ca_file.as_deref(),
                )
                .await
                .map_err(anyhow::Error::msg)
                .context("the shared store")?;
                Some(Arc::new(s))
            }
            None => None,
        };
        if let Some(s) = &shared {
            control.set_shared_store(s.clone());
            // With Sentinel, a failover moves the connection to the new master.
            tokio::spawn(crate::acme::shared::follow_sentinel_master(Arc::downgrade(
                s,
            )));
        }
        let mut alpn_sharing = None;
        if let Some(m) = &certs {
            if let Some(s) = &shared {
                m.certificates().set_remote(s.clone());
                alpn_sharing = Some((m.certificates(), s.clone()));
            }
            for r in &cfg.acme {
                let resolver =
                    crate::acme::Resolver::new(r.clone(), m.certificates(), shared.clone())
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("certificate resolver {:?}", r.name))?;
                let resolver = Arc::new(resolver);
                m.add_source(resolver.clone());
                resolvers.push(resolver);
            }
            if let Some(issuer) =
                crate::acme::on_demand::OnDemandIssuer::new(&resolvers, m.certificates())
            {
                let issuer = Arc::new(issuer);
                m.certificates().set_on_demand(issuer.clone());
                control.set_on_demand(issuer);
            }
            control.set_resolvers(resolvers.clone());
        }
        match control.origin() {
            ScriptsOrigin::Dir(d) => info!(scripts = %d.display(), "loading route scripts"),
            ScriptsOrigin::Embedded => {
                info!("no scripts folder: using the embedded default scripts")
            }
            ScriptsOrigin::Generated(files) => {
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                info!(scripts = ?names, "using generated scripts")
            }
        }
        if let Some(p) = &cfg.dynamic_config {
            let c = providers::traefik_file::load(p).map_err(anyhow::Error::msg)?;
            info!(path = %p.display(), files = c.entries.len(), "Traefik dynamic configuration");
            control.set_catalog(providers::traefik_file::PROVIDER, Arc::new(c));
        }
        let c = control.clone();
        let built = tokio::task::spawn_blocking(move || c.rebuild(true))
            .await
            .context("first build")?;
        if !built && cfg.require_valid_start {
            anyhow::bail!(
                "the scripts do not build (errors above) and --require-valid-start is set"
            );
        }
        control.enable_health_checks(tokio::runtime::Handle::current());

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (triggers, trigger_rx) = mpsc::channel(64);
        let mut watchers = Vec::new();
        if let ScriptsOrigin::Dir(d) = control.origin() {
            let w = control::watch_dir(d, triggers.clone())
                .with_context(|| format!("cannot watch {}", d.display()))?;
            watchers.push(w);
        }
        // Providers report on their own channel (they do not know the control loop); each
        // report is forwarded as a trigger.
        let (reports, mut report_rx) = mpsc::channel::<crate::catalog::ProviderReport>(64);
        let forward = triggers.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(r) = report_rx.recv().await {
                if forward.send(Trigger::from(r)).await.is_err() {
                    break;
                }
            }
        });
        if let Some(p) = &cfg.catalog {
            let w = providers::file::watch(p, reports.clone())
                .with_context(|| format!("cannot watch {}", p.display()))?;
            watchers.push(w);
        }
        if let Some(p) = &cfg.dynamic_config {
            let w = providers::traefik_file::watch(p, reports.clone())
                .with_context(|| format!("cannot watch {}", p.display()))?;
            watchers.push(w);
        }
        let mut tasks = vec![
            forwarder,
            tokio::spawn(control.clone().run(
                trigger_rx,
                shutdown_rx.clone(),
                Duration::from_millis(100),
            )),
        ];
        // With a shared store, TLS-ALPN-01 answers other replicas published are served here.
        if let Some((certs, store)) = alpn_sharing {
            tasks.push(tokio::spawn(crate::acme::run_alpn_sharing(certs, store)));
        }
        if let Some(d) = &cfg.docker {
            tasks.push(tokio::spawn(providers::docker::run(
                d.clone(),
                reports.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(s) = &cfg.swarm {
            tasks.push(tokio::spawn(providers::swarm::run(
                s.clone(),
                reports.clone(),
                shutdown_rx.clone(),
            )));
        }

        let recorder = Recorder::new(cfg.record.clone());
        if cfg.record.file.is_some() {
            // A file that cannot be opened is logged and kept in the status; traffic goes on.
            let _ = recorder.start(None, None);
        }
        // Opened before any worker starts: an unwritable access-log file is a start-up error.
        let access_log =
            crate::access_log::AccessLog::open(&cfg.access_log).map_err(anyhow::Error::msg)?;
        for r in resolvers {
            let tx = triggers.clone();
            let issued = move || {
                let _ = tx.try_send(Trigger::Certificates);
            };
            tasks.push(tokio::spawn(r.run(
                control.acme_wanted(),
                issued,
                shutdown_rx.clone(),
            )));
        }
        if let Some(m) = &certs {
            // Certificate files are polled: they often live outside the scripts folder (a
            // mounted secret, an ACME client's output), where a watch may not reach.
            let (m, tx, mut stop) = (m.clone(), triggers.clone(), shutdown_rx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(CERT_POLL) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    if m.files_changed() {
                        info!("a certificate file changed: reloading");
                        let _ = tx.send(Trigger::Certificates).await;
                    }
                }
            }));
        }
        for (name, socket) in udp_sockets {
            let timeout = cfg
                .settings
                .entrypoint(&name)
                .map_or(crate::settings::DEFAULT_UDP_TIMEOUT, |o| o.udp_timeout);
            tasks.push(tokio::spawn(crate::proxy::udp::serve(
                control.table(),
                name,
                socket,
                timeout,
                crate::proxy::udp::Observers {
                    metrics: control.metrics(),
                    access_log: access_log.clone(),
                },
                shutdown_rx.clone(),
            )));
        }
        let mut workers = Vec::new();
        for (i, set) in sets.into_iter().enumerate() {
            let recorder = recorder.clone();
            let access_log = access_log.clone();
            let table = control.table();
            let store = control.store();
            let metrics = control.metrics();
            let settings = settings.clone();
            let certs = certs.as_ref().map(|m| m.certificates());
            let shared_rate = shared
                .clone()
                .map(|s| s as Arc<dyn crate::middleware::limit::SharedRate>);
            let shutdown_rx = shutdown_rx.clone();
            let grace = cfg.grace_period;
            let handle = std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || {
                    let logs = (recorder, access_log);
                    worker(
                        set,
                        table,
                        store,
                        metrics,
                        (settings, certs, shared_rate),
                        logs,
                        shutdown_rx,
                        grace,
                    )
                })
                .context("starting a proxy worker thread")?;
            workers.push(handle);
        }

        let mut admin_addr = None;
        if let Some(l) = admin_listener {
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let addr = l.local_addr()?;
            info!(%addr, "admin API listening");
            admin_addr = Some(addr);
            let state = AdminState {
                table: control.table(),
                status: control.status(),
                started: Instant::now(),
                recorder: recorder.clone(),
                control: control.clone(),
                entrypoints: entrypoints.clone(),
                settings: settings.clone(),
                rates: Default::default(),
                auth: if cfg.admin_users.is_empty() {
                    None
                } else {
                    Some(Arc::new(
                        crate::middleware::auth::BasicAuth::new(&cfg.admin_users, "switchyard")
                            .map_err(|e| anyhow::anyhow!("--admin.users: {e}"))?,
                    ))
                },
            };
            tasks.push(tokio::spawn(admin::serve(l, state, shutdown_rx.clone())));
        }
        Ok(Router {
            control,
            shutdown,
            triggers,
            tasks,
            workers,
            _watchers: watchers,
            entrypoints,
            admin: admin_addr,
            recorder,
            access_log,
        })
    }

    /// Asks for a rebuild (what SIGHUP does).
    pub fn reload(&self) {
        let _ = self.triggers.try_send(Trigger::Signal);
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops accepting and waits for the workers, which let in-flight requests finish for up to
    /// the configured grace period; `grace` bounds this wait.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let workers = std::mem::take(&mut self.workers);
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        });
        if tokio::time::timeout(grace + Duration::from_secs(1), joined)
            .await
            .is_err()
        {
            warn!(grace = ?grace, "workers did not stop within the grace period");
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let recorder = self.recorder.clone();
        let _ = tokio::task::spawn_blocking(move || recorder.stop()).await;
        if let Some(log) = self.access_log.clone() {
            // A plain thread, waited on for a bounded time: an output that blocks (a stdout pipe
            // nobody reads) must not hold up the exit.
            let (done, flushed) = tokio::sync::oneshot::channel();
            let _ = std::thread::Builder::new()
                .name("switchyard-access-log-close".into())
                .spawn(move || {
                    log.close();
                    let _ = done.send(());
                });
            if tokio::time::timeout(Duration::from_secs(2), flushed)
                .await
                .is_err()
            {
                warn!("the access log did not flush within 2s");
            }
        }
    }
}

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(2);

/// One proxy worker: a single-threaded runtime serving its own sockets of every entrypoint.
#[allow(clippy::too_many_arguments)]
fn worker(
    set: ListenerSet,
    table: Arc<arc_swap::ArcSwap<crate::table::RouteTable>>,
    store: Arc<crate::middleware::Store>,
    metrics: Arc<crate::metrics::Metrics>,
    (settings, certs, shared_rate): (
        crate::proxy::Settings,
        Option<Arc<crate::tls::Certificates>>,
        Option<Arc<dyn crate::middleware::limit::SharedRate>>,
    ),
    (recorder, access_log): (Arc<Recorder>, Option<Arc<crate::access_log::AccessLog>>),
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start a proxy worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut proxy =
            Proxy::with_observers(table, settings, store, recorder, metrics, access_log);
        if let Some(c) = certs {
            proxy = proxy.with_certificates(c);
        }
        if let Some(s) = shared_rate {
            proxy = proxy.with_shared_rate(s);
        }
        let (tracker, drain) = Tracker::new();
        for (name, l) in set {
            let listener = match l
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
            {
                Ok(l) => l,
                Err(e) => {
                    error!(entrypoint = %name, error = %e, "cannot use listener");
                    continue;
                }
            };
            tokio::spawn(proxy.clone().serve_entrypoint(
                name,
                listener,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        drop(tracker);
        let _ = shutdown.wait_for(|s| *s).await;
        if tokio::time::timeout(grace, proxy::wait_for_drain(drain))
            .await
            .is_err()
        {
            warn!(grace = ?grace, "grace period over; closing remaining connections");
        }
    });
}

/// Binds every entrypoint `workers` times with `SO_REUSEPORT`, so the kernel spreads new
/// connections over the workers. Port 0 is resolved by the first socket and reused by the rest.
pub fn bind_entrypoints(
    entrypoints: &[(String, SocketAddr)],
    workers: usize,
) -> anyhow::Result<Vec<ListenerSet>> {
    let mut sets: Vec<ListenerSet> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for (name, addr) in entrypoints {
        let mut actual = *addr;
        let shared = sets.len() > 1;
        for set in sets.iter_mut() {
            let l = listener(actual, shared)
                .with_context(|| format!("cannot listen on {actual} for entrypoint {name:?}"))?;
            actual = l.local_addr()?;
            set.push((name.clone(), l));
        }
    }
    Ok(sets)
}

/// A listening socket; `shared` sets `SO_REUSEPORT` so several workers can bind the same address
/// (only then: a lone socket never lets another process share its port).
fn listener(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(shared)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Whether entrypoint `name` of `cfg` is a UDP one (`ADDR/udp`).
fn is_udp(cfg: &Config, name: &str) -> bool {
    cfg.settings.entrypoint(name).is_some_and(|o| o.udp)
}

/// The TCP entrypoints of `cfg` (bound once per worker; UDP ones are bound by `Router::start`).
fn tcp_entrypoints(cfg: &Config) -> Vec<(String, SocketAddr)> {
    cfg.entrypoints
        .iter()
        .filter(|(n, _)| !is_udp(cfg, n))
        .cloned()
        .collect()
}

/// A UDP entrypoint's socket. `SO_REUSEPORT`, so a router started on a new static
/// configuration can bind it while the previous one still serves.
fn udp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Binds every entrypoint (once per worker) and the admin listener of `cfg`.
pub fn bind(cfg: &Config) -> anyhow::Result<(Vec<ListenerSet>, Option<std::net::TcpListener>)> {
    let sets = bind_entrypoints(&tcp_entrypoints(cfg), cfg.workers)?;
    let admin = match cfg.admin {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} for the admin API"))?,
        ),
        None => None,
    };
    Ok((sets, admin))
}

/// `switchyard run`: serve until SIGINT or SIGTERM; reload the scripts on SIGHUP.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    run_reloading(cfg, None).await
}

/// How the static configuration is read again: the function that reads it (the `--config` file
/// and the command line, or Traefik's static configuration) and the file to watch, if any.
pub struct StaticReload {
    pub read: Box<dyn Fn() -> anyhow::Result<Config> + Send>,
    pub watch: Option<PathBuf>,
}

/// How often the static configuration file is checked for changes.
const STATIC_POLL: Duration = Duration::from_secs(1);

/// `run`, with the static configuration read again on SIGHUP and when its file changes. The
/// same configuration only reloads the scripts; a different one starts a new router beside the
/// running one — unchanged entrypoints (same address) keep their listening sockets, so no
/// connection is refused, new ones are bound, removed ones closed — and then stops the old router
/// gracefully (its requests finish within the grace period). A configuration that cannot be read,
/// an address that cannot be bound or scripts that do not build under it leave the running
/// router as it is, with the error in the log.
pub async fn run_reloading(cfg: Config, reload: Option<StaticReload>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal that arrives during the first build is queued, not fatal.
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let (sets, admin) = bind(&cfg)?;
    let mut live = Listeners::keep(&cfg, &sets, admin.as_ref())?;
    let mut router = Router::start(&cfg, sets, admin).await?;
    let mut cfg = cfg;
    let watched = reload.as_ref().and_then(|r| r.watch.clone());
    let mut stamp = watched.as_deref().and_then(file_stamp);
    let mut poll = tokio::time::interval(STATIC_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed_file = tokio::select! {
            _ = hup.recv() => false,
            _ = poll.tick(), if watched.is_some() => {
                let now = watched.as_deref().and_then(file_stamp);
                if now == stamp { continue; }
                stamp = now;
                true
            }
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
        };
        let Some(r) = &reload else {
            info!("SIGHUP: reloading scripts");
            router.reload();
            continue;
        };
        let next = match (r.read)() {
            Ok(next) => next,
            Err(e) => {
                error!(error = %format!("{e:#}"), "static configuration not reloaded; the running one stays");
                continue;
            }
        };
        if format!("{next:?}") == format!("{cfg:?}") {
            if !changed_file {
                info!(
                    static_configuration = "unchanged",
                    "SIGHUP: reloading scripts"
                );
                router.reload();
            }
            continue;
        }
        info!("static configuration changed: starting a router on it beside the running one");
        match restart(&next, &live).await {
            Ok((new_router, new_live)) => {
                let old = std::mem::replace(&mut router, new_router);
                live = new_live;
                let grace = cfg.grace_period;
                cfg = next;
                info!(entrypoints = ?router.entrypoints, "static configuration applied; the previous router stops");
                tokio::spawn(old.shutdown(grace));
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "static configuration not applied; the running router stays");
            }
        }
    }
    router.shutdown(cfg.grace_period).await;
    info!("stopped");
    Ok(())
}

/// A file's modification time and length, to notice a save.
fn file_stamp(p: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Duplicates of the running router's listening sockets, by configured address, so a router on a
/// new static configuration can take over an unchanged entrypoint without closing its port.
struct Listeners {
    /// (configured address, one socket per worker).
    entrypoints: Vec<(SocketAddr, Vec<std::net::TcpListener>)>,
    admin: Option<(SocketAddr, std::net::TcpListener)>,
}

impl Listeners {
    fn keep(
        cfg: &Config,
        sets: &[ListenerSet],
        admin: Option<&std::net::TcpListener>,
    ) -> anyhow::Result<Listeners> {
        let mut entrypoints = Vec::new();
        for (i, (_, addr)) in tcp_entrypoints(cfg).iter().enumerate() {
            let mut socks = Vec::new();
            for set in sets {
                if let Some((_, l)) = set.get(i) {
                    socks.push(l.try_clone().context("duplicating a listening socket")?);
                }
            }
            entrypoints.push((*addr, socks));
        }
        let admin = match (cfg.admin, admin) {
            (Some(a), Some(l)) => Some((a, l.try_clone().context("duplicating the admin socket")?)),
            _ => None,
        };
        Ok(Listeners { entrypoints, admin })
    }
}

/// Starts a router on `next`, reusing the sockets of `live` whose address is unchanged.
async fn restart(next: &Config, live: &Listeners) -> anyhow::Result<(Router, Listeners)> {
    let workers = next.workers.max(1);
    let mut sets: Vec<ListenerSet> = (0..workers).map(|_| Vec::new()).collect();
    for (name, addr) in &tcp_entrypoints(next) {
        let kept = live
            .entrypoints
            .iter()
            .find(|(a, socks)| a == addr && !socks.is_empty());
        match kept {
            Some((_, socks)) => {
                for (set, sock) in sets.iter_mut().zip(socks.iter().cycle()) {
                    let l = sock.try_clone().context("duplicating a listening socket")?;
                    set.push((name.clone(), l));
                }
            }
            None => {
                let fresh = bind_entrypoints(&[(name.clone(), *addr)], workers)?;
                for (set, mut one) in sets.iter_mut().zip(fresh) {
                    set.append(&mut one);
                }
            }
        }
    }
    let admin = match (next.admin, &live.admin) {
        (Some(a), Some((was, l))) if a == *was => {
            Some(l.try_clone().context("duplicating the admin socket")?)
        }
        (Some(a), _) => Some(
            std::net::TcpListener::bind(a)
                .with_context(|| format!("cannot listen on {a} for the admin API"))?,
        ),
        (None, _) => None,
    };
    let kept = Listeners::keep(next, &sets, admin.as_ref())?;
    // The new scripts must build: a router that would serve an empty table is not started.
    let mut strict = next.clone();
    strict.require_valid_start = true;
    let router = Router::start(&strict, sets, admin).await?;
    Ok((router, kept))
}
