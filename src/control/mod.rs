//! The control loop: the single writer of the live route table.
//!
//! Owns where scripts come from (a watched folder or the embedded default), the current catalog,
//! the build status shown by `/api/scripts`, and the reload triggers (file events, SIGHUP,
//! explicit requests). Invariants: only `Control::rebuild` stores into the live table; a failed
//! build leaves the live table untouched and records its errors; file events are debounced so an
//! editor's write-rename burst causes one build; a build whose inputs did not change is skipped.

pub mod certs;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::catalog::{Catalog, ProviderReport};
use crate::middleware::Store;
use crate::proxy::health::HealthChecker;
use crate::script::{self, Limits, ScriptError, ScriptSource, ScriptsOrigin};
use crate::table::RouteTable;

/// The outcome of the latest build, as `/api/scripts` shows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BuildStatus {
    /// Increments with every build attempt.
    pub attempt: u64,
    /// The attempt whose table is live (0: nothing built yet).
    pub live_attempt: u64,
    /// RFC 3339 time of the latest attempt.
    pub at: String,
    pub ok: bool,
    pub duration_ms: f64,
    pub files: Vec<String>,
    pub routes: usize,
    pub errors: Vec<ScriptError>,
    /// Problems the live build skipped past (`warn(...)` in scripts, e.g. a malformed label).
    pub warnings: Vec<ScriptError>,
}

/// A reason to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Something changed in the scripts folder.
    Files,
    /// SIGHUP or an explicit request: rebuild even if no input changed.
    Signal,
    /// What a provider reported (a new snapshot or a failed sync).
    Provider(ProviderReport),
    /// A certificate file of the live store changed: rebuild even if no script changed.
    Certificates,
}

impl From<ProviderReport> for Trigger {
    fn from(r: ProviderReport) -> Self {
        Trigger::Provider(r)
    }
}

/// What `/api/catalog` shows of one provider.
pub struct ProviderState {
    pub provider: &'static str,
    pub catalog: Arc<Catalog>,
    /// RFC 3339 time of its latest snapshot.
    pub last_sync: Option<String>,
    /// Its latest failed sync since that snapshot: (time, error).
    pub error: Option<(String, String)>,
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub struct Control {
    origin: ScriptsOrigin,
    /// Each provider's latest snapshot; scripts see them merged (in provider name order).
    catalogs: Mutex<std::collections::BTreeMap<&'static str, Arc<Catalog>>>,
    /// When each provider's latest snapshot arrived (RFC 3339).
    synced: Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// Each provider's latest failed sync (time, error), until its next snapshot.
    sync_errors: Mutex<std::collections::BTreeMap<&'static str, (String, String)>>,
    catalog: Mutex<Arc<Catalog>>,
    env: script::BuildEnv,
    limits: Limits,
    table: Arc<ArcSwap<RouteTable>>,
    status: watch::Sender<BuildStatus>,
    /// The inputs of the live table, to skip builds that would change nothing.
    last_inputs: Mutex<Option<(Vec<ScriptSource>, Arc<Catalog>)>>,
    /// The store hooks share; lives as long as the process, across builds.
    store: Arc<Store>,
    /// Active health checks of the live table (absent in `check`, which serves nothing).
    health: OnceLock<HealthChecker>,
    /// The router's metrics registry (builds are counted here; routes get their series).
    metrics: Arc<crate::metrics::Metrics>,
    /// The certificates of TLS entrypoints (absent in `check` and routers without TLS).
    certs: OnceLock<Arc<certs::CertManager>>,
    /// What the live table's TLS routes ask each certificate resolver for.
    acme_wanted: watch::Sender<crate::acme::Wanted>,
    /// The certificate resolvers, for their status.
    resolvers: OnceLock<Vec<Arc<crate::acme::Resolver>>>,
    /// Orders certificates at the handshake with the live build's `on_demand(...)` rules.
    on_demand: OnceLock<Arc<crate::acme::on_demand::OnDemandIssuer>>,
    /// The store shared with other replicas (`--store`), for its state.
    shared_store: OnceLock<Arc<crate::acme::shared::SharedStore>>,
}

impl Control {
    pub fn new(
        origin: ScriptsOrigin,
        catalog: Catalog,
        env: script::BuildEnv,
        limits: Limits,
    ) -> Self {
        Control {
            origin,
            catalogs: Mutex::new(std::collections::BTreeMap::from([(
                "file",
                Arc::new(catalog.clone()),
            )])),
            synced: Mutex::new(std::collections::BTreeMap::from([("file", now_text())])),
            sync_errors: Mutex::new(std::collections::BTreeMap::new()),
            catalog: Mutex::new(Arc::new(catalog)),
            limits,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            status: watch::channel(BuildStatus::default()).0,
            last_inputs: Mutex::new(None),
            store: Arc::new(Store::new()),
            health: OnceLock::new(),
            metrics: crate::metrics::Metrics::new(&env.entrypoints),
            env,
            certs: OnceLock::new(),
            acme_wanted: watch::channel(crate::acme::Wanted::new()).0,
            resolvers: OnceLock::new(),
            on_demand: OnceLock::new(),
            shared_store: OnceLock::new(),
        }
    }

    /// Records the shared store, whose state `/api/overview` shows.
    pub fn set_shared_store(&self, store: Arc<crate::acme::shared::SharedStore>) {
        let _ = self.shared_store.set(store);
    }

    /// The shared store's URL (no password) and the error of an outage in progress.
    pub fn shared_store_state(&self) -> Option<(String, Option<String>)> {
        self.shared_store.get().map(|s| s.state())
    }

    /// Gives each good build's `on_demand(...)` rules to `issuer`.
    pub fn set_on_demand(&self, issuer: Arc<crate::acme::on_demand::OnDemandIssuer>) {
        let _ = self.on_demand.set(issuer);
    }

    /// Records the certificate resolvers (their certificates reach the store as sources of the
    /// certificate manager; this is for their status).
    pub fn set_resolvers(&self, resolvers: Vec<Arc<crate::acme::Resolver>>) {
        let _ = self.resolvers.set(resolvers);
    }

    /// Each resolver with the names it must hold and how they stand.
    pub fn resolver_status(&self) -> Vec<(String, Vec<crate::acme::NameStatus>)> {
        let wanted = self.acme_wanted.borrow().clone();
        self.resolvers
            .get()
            .into_iter()
            .flatten()
            .map(|r| {
                let names = wanted.get(&r.cfg.name).cloned().unwrap_or_default();
                (r.cfg.name.clone(), r.status(&names))
            })
            .collect()
    }

    /// The names each certificate resolver must hold, updated with every live table.
    pub fn acme_wanted(&self) -> watch::Receiver<crate::acme::Wanted> {
        self.acme_wanted.subscribe()
    }

    /// Keeps `certs` in step with every build from now on (script-declared certificates are
    /// checked as part of the build).
    pub fn set_certificates(&self, certs: Arc<certs::CertManager>) {
        let _ = self.certs.set(certs);
    }

    /// The certificate manager, when the router serves TLS.
    pub fn certificates(&self) -> Option<Arc<certs::CertManager>> {
        self.certs.get().cloned()
    }

    /// The store shared by every hook of every build.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Runs active health checks of every live table on `runtime` from now on.
    pub fn enable_health_checks(&self, runtime: tokio::runtime::Handle) {
        let checker = self.health.get_or_init(|| HealthChecker::new(runtime));
        checker.sync(&self.table.load());
    }

    /// The metrics registry shared by the proxy workers and the admin API.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    pub fn status(&self) -> watch::Receiver<BuildStatus> {
        self.status.subscribe()
    }

    pub fn origin(&self) -> &ScriptsOrigin {
        &self.origin
    }

    /// Replaces what `provider` discovered; the next build sees every provider's entries.
    pub fn set_catalog(&self, provider: &'static str, catalog: Arc<Catalog>) {
        let mut all = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(provider, catalog);
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(provider, now_text());
        self.sync_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(provider);
        let merged = Catalog {
            entries: all
                .values()
                .flat_map(|c| c.entries.iter().cloned())
                .collect(),
            problems: all
                .iter()
                .flat_map(|(p, c)| c.problems.iter().map(move |m| format!("{p}: {m}")))
                .collect(),
        };
        *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(merged);
    }

    /// The catalog scripts see now (all providers merged).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Each provider's latest snapshot, when it arrived and its latest failed sync since, in
    /// provider name order (a provider that never synced is listed with an empty catalog).
    pub fn catalogs(&self) -> Vec<ProviderState> {
        let all = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let errors = self.sync_errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&'static str> = all.keys().chain(errors.keys()).copied().collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|p| ProviderState {
                provider: p,
                catalog: all.get(p).cloned().unwrap_or_default(),
                last_sync: synced.get(p).cloned(),
                error: errors.get(p).cloned(),
            })
            .collect()
    }

    /// A fresh build of the live table's inputs (the scripts and catalog it was built from):
    /// same routes, new balancer, limiter and health state, so deciding requests on it never
    /// moves the live router's state. `None` before the first successful build. Blocking.
    pub fn fresh_build(&self) -> Option<Result<script::Built, Vec<ScriptError>>> {
        let inputs = self
            .last_inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let (sources, catalog) = inputs;
        Some(script::build_with(
            &sources,
            &catalog,
            &self.env,
            &self.limits,
            None,
        ))
    }

    /// The scripts folder's text of one file, for showing errors in their source.
    pub fn script_source(&self, name: &str) -> Option<String> {
        match &self.origin {
            ScriptsOrigin::Dir(dir) => {
                let sources = script::load_dir(dir).ok()?;
                sources.into_iter().find(|s| s.name == name).map(|s| s.text)
            }
            fixed => fixed
                .fixed_sources()?
                .into_iter()
                .find(|s| s.name == name)
                .map(|s| s.text),
        }
    }

    fn load(&self) -> Result<Vec<ScriptSource>, ScriptError> {
        match &self.origin {
            ScriptsOrigin::Dir(dir) => script::load_dir(dir),
            fixed => Ok(fixed.fixed_sources().unwrap_or_default()),
        }
    }

    /// Builds from the current inputs and, on success, swaps the live table. Returns whether the
    /// live table now reflects the current inputs. Blocking: call from a blocking context.
    pub fn rebuild(&self, force: bool) -> bool {
        let sources = match self.load() {
            Ok(s) => s,
            Err(e) => return self.record(Err(vec![e]), None),
        };
        let catalog = self
            .catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        {
            let last = self.last_inputs.lock().unwrap_or_else(|e| e.into_inner());
            let unchanged = last
                .as_ref()
                .is_some_and(|(s, c)| *s == sources && **c == *catalog);
            if !force && unchanged {
                return true;
            }
        }
        let previous = self.table.load_full();
        let result =
            script::build_with(&sources, &catalog, &self.env, &self.limits, Some(&previous));
        self.record(result, Some((sources, catalog)))
    }

    /// Hands a good build's `on_demand(...)` rules to the on-demand issuer; with resolvers but
    /// none ordering on demand, they are a warning of the build.
    fn take_on_demand(&self, decls: &[script::api::OnDemandDecl], warnings: &mut Vec<ScriptError>) {
        match self.on_demand.get() {
            Some(issuer) => issuer.set_rules(
                decls
                    .iter()
                    .map(|d| {
                        let check = d.allow.clone();
                        crate::acme::on_demand::OnDemandRule {
                            resolver: d.resolver.clone(),
                            allow: Arc::new(move |name: &str| check.allows(name)),
                            at: d.at.to_string(),
                        }
                    })
                    .collect(),
            ),
            None if self.resolvers.get().is_some() => warnings.extend(decls.iter().map(|d| {
                ScriptError::at(
                    &d.at,
                    "on_demand(...) orders nothing: no certificate resolver has on-demand=true"
                        .to_string(),
                )
            })),
            None => {}
        }
    }

    fn record(
        &self,
        result: Result<script::Built, Vec<ScriptError>>,
        inputs: Option<(Vec<ScriptSource>, Arc<Catalog>)>,
    ) -> bool {
        let mut status = self.status.borrow().clone();
        status.attempt += 1;
        status.at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // The status is published before anything is logged, so whoever reacts to the log line
        // already sees the new status.
        // Certificates a build names must load before its table goes live.
        let (result, prepared) = match (result, self.certs.get()) {
            (Ok(built), Some(certs)) => {
                let declared: Vec<&str> = built
                    .tls_options
                    .iter()
                    .map(|(n, _, _)| n.as_str())
                    .collect();
                let (hosts, _) = script::build::options_by_host(&built.table, &declared);
                let p = certs
                    .prepare(
                        &built.certificates,
                        built.default_certificate.as_ref(),
                        built.default_generated.as_ref().map(|d| d.main.as_str()),
                    )
                    .and_then(|p| Ok((p, certs.prepare_options(&built.tls_options, &hosts)?)));
                match p {
                    Ok(p) => (Ok(built), Some((certs, p))),
                    Err(errors) => (Err(errors), None),
                }
            }
            (r, _) => (r, None),
        };
        match result {
            Ok(built) => {
                if let Some((certs, (p, options))) = prepared {
                    certs.apply(p);
                    certs.certificates().set_options(options);
                }
                let mut warnings = built.warnings.clone();
                self.take_on_demand(&built.on_demand, &mut warnings);
                let generated = built.default_generated.clone();
                let routes = built.table.routes().len();
                self.metrics.attach(&built.table);
                self.metrics.build(true);
                let table = Arc::new(built.table);
                self.table.store(table.clone());
                let mut wanted = crate::acme::wanted(&table);
                // A default certificate from a resolver is ordered like a route's names.
                if let Some(d) = generated {
                    let known = self
                        .resolvers
                        .get()
                        .is_some_and(|rs| rs.iter().any(|r| r.cfg.name == d.resolver));
                    if known {
                        wanted
                            .entry(d.resolver.clone())
                            .or_default()
                            .extend(std::iter::once(d.main).chain(d.sans));
                    } else if self.resolvers.get().is_some() {
                        warnings.push(ScriptError::at(
                            &d.at,
                            format!(
                                "tls_default_certificate: no certificate resolver {:?} \
                                 (--acme.{}.*); the default certificate stays as it is",
                                d.resolver, d.resolver
                            ),
                        ));
                    }
                }
                self.acme_wanted.send_if_modified(|w| {
                    let changed = *w != wanted;
                    *w = wanted;
                    changed
                });
                if let Some(h) = self.health.get() {
                    h.sync(&table);
                }
                status.live_attempt = status.attempt;
                status.ok = true;
                status.duration_ms = built.duration.as_secs_f64() * 1000.0;
                status.files = built.files;
                status.routes = routes;
                status.errors.clear();
                status.warnings = warnings;
                if let Some((_, catalog)) = &inputs {
                    status
                        .warnings
                        .extend(catalog.problems.iter().map(|m| ScriptError {
                            file: "provider".to_string(),
                            line: 0,
                            column: 0,
                            message: m.clone(),
                            source_line: None,
                        }));
                }
                *self.last_inputs.lock().unwrap_or_else(|e| e.into_inner()) = inputs;
                let (files, ms) = (status.files.len(), status.duration_ms);
                self.status.send_replace(status);
                info!(
                    routes,
                    files,
                    ms = format!("{ms:.1}"),
                    "scripts built; new route table is live"
                );
                true
            }
            Err(errors) => {
                self.metrics.build(false);
                status.ok = false;
                status.duration_ms = 0.0;
                if let Some((s, _)) = &inputs {
                    status.files = s.iter().map(|s| s.name.clone()).collect();
                }
                status.errors = errors.clone();
                // Forget the inputs so that restoring the previous text rebuilds and clears the error.
                *self.last_inputs.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let nothing_live = status.live_attempt == 0;
                self.status.send_replace(status);
                for e in &errors {
                    error!("{e}");
                }
                if nothing_live {
                    warn!(
                        errors = errors.len(),
                        "script build failed and no route table was built yet: every request gets 404 until the scripts build"
                    );
                } else {
                    warn!(
                        errors = errors.len(),
                        "script build failed; the last good route table keeps serving"
                    );
                }
                false
            }
        }
    }

    /// Rebuilds on every trigger, debounced by `quiet`, until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut triggers: mpsc::Receiver<Trigger>,
        mut shutdown: watch::Receiver<bool>,
        quiet: Duration,
    ) {
        loop {
            let first = tokio::select! {
                t = triggers.recv() => t,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Some(first) = first else { return };
            // Debounce: keep absorbing triggers until `quiet` passes without one.
            let mut force = false;
            // A failed provider sync changes no input: alone, it builds nothing.
            let mut inputs_changed = false;
            let mut next = Some(first);
            while let Some(t) = next {
                inputs_changed |=
                    !matches!(t, Trigger::Provider(ProviderReport::SyncFailed { .. }));
                match t {
                    Trigger::Files => {}
                    Trigger::Signal | Trigger::Certificates => force = true,
                    Trigger::Provider(ProviderReport::Snapshot { provider, catalog }) => {
                        self.set_catalog(provider, catalog)
                    }
                    Trigger::Provider(ProviderReport::SyncFailed { provider, error }) => {
                        self.metrics.provider_sync_error(provider);
                        self.sync_errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(provider, (now_text(), error));
                    }
                }
                next = tokio::time::timeout(quiet, triggers.recv())
                    .await
                    .ok()
                    .flatten();
            }
            if !inputs_changed {
                continue;
            }
            let this = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || this.rebuild(force)).await {
                error!(error = %e, "script build task failed");
            }
        }
    }
}

/// Watches `dir` and sends `Trigger::Files` on every change (create, write, remove, rename).
/// The returned watcher must be kept alive.
pub fn watch_dir(
    dir: &Path,
    tx: mpsc::Sender<Trigger>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
                let _ = tx.try_send(Trigger::Files);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "file watcher error"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
