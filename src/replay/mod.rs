//! Recording, replay, explain, the REPL and `switchyard test`: seeing what scripts do with real
//! requests before they go live.
//!
//! Owns `Session` (scripts + catalog built into a table, behind a `Proxy` that is never bound to
//! a socket) and the replay command. Every decision comes from `Proxy::dry_run`, i.e. the live
//! proxy's own lookup, middleware phases and balancers (see `proxy::dry`); this module only
//! loads, orders, compares and prints.
//!
//! Invariants: a session's state (balancer counters, limiter buckets, the hook store) starts
//! fresh, like a router just started, so replaying a recording from a router's start in order
//! reproduces its deterministic decisions; a session never opens a socket.

pub mod repl;
pub mod report;
pub mod suite;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::middleware::Store;
use crate::proxy::dry::Decision;
use crate::proxy::Proxy;
use crate::recording::format::{Clock, RecordedRequest};
use crate::script::ScriptsOrigin;
use crate::script::{self, Limits, ScriptError, ScriptSource};
use crate::table::RouteTable;

/// Scripts and a catalog, built, ready to decide requests.
pub struct Session {
    pub scripts: ScriptsOrigin,
    pub catalog: Catalog,
    pub env: script::BuildEnv,
    pub proxy: Arc<Proxy>,
    table: Arc<ArcSwap<RouteTable>>,
    pub warnings: Vec<ScriptError>,
    pub files: Vec<String>,
    settings: crate::proxy::Settings,
}

impl Session {
    /// Builds the scripts of `cfg` against its catalog (the file plus a one-shot snapshot of the
    /// providers it names), as `check` does.
    pub fn load(cfg: &Config) -> Result<Session, Vec<ScriptError>> {
        let catalog =
            crate::providers::snapshot_now(cfg).map_err(|e| vec![ScriptError::catalog(&e)])?;
        let env = cfg.build_env();
        Session::new(cfg.scripts.clone(), catalog, env, cfg.settings.clone())
    }

    pub fn new(
        scripts: ScriptsOrigin,
        catalog: Catalog,
        env: script::BuildEnv,
        settings: crate::proxy::Settings,
    ) -> Result<Session, Vec<ScriptError>> {
        let built = build(&scripts, &catalog, &env)?;
        let table = Arc::new(ArcSwap::from_pointee(built.table));
        let proxy = Proxy::new(table.clone(), settings.clone(), Arc::new(Store::new()));
        Ok(Session {
            scripts,
            catalog,
            env,
            proxy,
            table,
            warnings: built.warnings,
            files: built.files,
            settings,
        })
    }

    /// Rebuilds from the scripts as they are now; on failure the session keeps its table.
    /// Balancer and limiter state start fresh again.
    pub fn reload(&mut self) -> Result<(), Vec<ScriptError>> {
        let built = build(&self.scripts, &self.catalog, &self.env)?;
        self.table.store(Arc::new(built.table));
        self.proxy = Proxy::new(
            self.table.clone(),
            self.settings.clone(),
            Arc::new(Store::new()),
        );
        self.warnings = built.warnings;
        self.files = built.files;
        Ok(())
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The scripts folder, when the session reads one.
    pub fn scripts_dir(&self) -> Option<PathBuf> {
        match &self.scripts {
            ScriptsOrigin::Dir(d) => Some(d.clone()),
            ScriptsOrigin::Embedded | ScriptsOrigin::Generated(_) => None,
        }
    }

    /// Decides one recorded request; `clock` maps its recorded time (rate limits replay with
    /// the recorded gaps).
    pub async fn decide(
        &self,
        req: &RecordedRequest,
        clock: &mut Clock,
    ) -> Result<Decision, String> {
        let dry = req.to_dry(Some(clock.at(req)))?;
        Ok(self.proxy.dry_run(dry).await)
    }
}

fn build(
    scripts: &ScriptsOrigin,
    catalog: &Catalog,
    env: &script::BuildEnv,
) -> Result<script::Built, Vec<ScriptError>> {
    let sources: Vec<ScriptSource> = match scripts {
        ScriptsOrigin::Dir(d) => script::load_dir(d).map_err(|e| vec![e])?,
        fixed => fixed.fixed_sources().unwrap_or_default(),
    };
    script::build_with(&sources, catalog, env, &Limits::default(), None)
}

/// A current-thread runtime for the CLI commands (dry runs are async only because the live
/// request phase is).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
