//! Building: run every route script with the catalog in scope, then validate and compile what
//! they declared into a `RouteTable`.
//!
//! Invariants: a build either returns a complete table or a list of errors with file:line:col —
//! never a partial table; all scripts of one build share one scope, run in lexical file order;
//! per-request hooks of the resulting table run on a separate engine with hook limits and no
//! builder functions. The files a service's `.transport(...)` names (CA, client certificate and
//! key; paths relative to the declaring script's folder) are read while compiling, so a build
//! whose transport cannot be made fails with the file and the call's `file:line:col`; a pool
//! with `https://` servers and no `.transport(...)` checks them against the system roots (read
//! once per process). Must never: touch the live table (the control loop swaps it) or do I/O
//! other than reading the script files it was given and the files transports name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rhai::{Dynamic, Engine, Scope, AST};

use super::api::{
    self, Collector, Declarations, RuleDecl, ServiceDeclKind, ServiceHandle, ServiceRef,
    TargetDecl, TransportDecl,
};
use super::error::ScriptError;
use super::hook::HookRuntime;
use super::{engine_with_limits, Limits, STDLIB};
use crate::balance::{Balancer, ServerState};
use crate::catalog::Catalog;
use crate::middleware::Middleware;
use crate::routing::service::Mirroring;
use crate::routing::service::{sticky_id, Scheme, Transport, Verify};
use crate::routing::{parse_rule, Location, Pool, Server, Service, ServiceKind, Target};
use crate::table::{Route, RouteTable};

/// One script file: the name errors show (`scripts/api.rhai`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSource {
    pub name: String,
    pub text: String,
}

/// Reads every `*.rhai` file directly in `dir`, sorted by file name, except `*.test.rhai` (test
/// files for `switchyard test`, which may live beside the scripts). Names are shown as
/// `<dir>/<file>` with a leading `./` dropped.
pub fn load_dir(dir: &Path) -> Result<Vec<ScriptSource>, ScriptError> {
    let shown_dir = dir.display().to_string();
    let shown_dir = shown_dir
        .strip_prefix("./")
        .unwrap_or(&shown_dir)
        .trim_end_matches('/')
        .to_string();
    let read_err = |file: &str, e: std::io::Error| ScriptError {
        file: file.to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
        source_line: None,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| read_err(&shown_dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rhai") && !n.ends_with(".test.rhai") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let shown = format!("{shown_dir}/{n}");
            let text = std::fs::read_to_string(dir.join(&n)).map_err(|e| read_err(&shown, e))?;
            Ok(ScriptSource { name: shown, text })
        })
        .collect()
}

/// What a successful build produced.
#[derive(Debug)]
pub struct Built {
    pub table: RouteTable,
    /// `warn(...)` calls of the build (e.g. a container skipped for a malformed label).
    pub warnings: Vec<ScriptError>,
    pub files: Vec<String>,
    pub duration: std::time::Duration,
    /// `tls_certificate(cert, key)` calls, for the router to read.
    pub certificates: Vec<(crate::tls::CertFiles, Location)>,
    /// `tls_default_certificate(cert, key)`, for the router to read.
    pub default_certificate: Option<(crate::tls::CertFiles, Location)>,
    /// `tls_default_certificate(#{ resolver, main, sans })`.
    pub default_generated: Option<super::api::DefaultGenerated>,
    /// `on_demand(...)` predicates, for the certificate resolvers.
    pub on_demand: Vec<super::api::OnDemandDecl>,
    /// `tls_options(name, #{...})`, for the router to make handshake settings of.
    pub tls_options: Vec<(String, crate::tls::TlsOptions, Location)>,
}

/// What the running router offers scripts besides the catalog.
#[derive(Debug, Clone, Default)]
pub struct BuildEnv {
    /// The names routes may use.
    pub entrypoints: Vec<String>,
    /// The admin API's address as seen from the router itself (a loopback address when it
    /// listens on all interfaces): `admin_address()` in scripts, the server of `api@internal`.
    pub admin: Option<std::net::SocketAddr>,
    /// The entrypoints that terminate TLS (a `.tls()` route on none of them is warned about).
    pub tls_entrypoints: Vec<String>,
    /// The UDP entrypoints (`NAME=ADDR/udp`): only UDP routes may name them.
    pub udp_entrypoints: Vec<String>,
}

impl BuildEnv {
    pub fn new(entrypoints: Vec<String>, admin: Option<std::net::SocketAddr>) -> Self {
        let admin = admin.map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(if a.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            a
        });
        BuildEnv {
            entrypoints,
            admin,
            tls_entrypoints: Vec::new(),
            udp_entrypoints: Vec::new(),
        }
    }
}

/// Runs the scripts and compiles their declarations. `entrypoints` are the names routes may use.
pub fn build(
    sources: &[ScriptSource],
    catalog: &Catalog,
    entrypoints: &[String],
    limits: &Limits,
) -> Result<Built, Vec<ScriptError>> {
    let env = BuildEnv::new(entrypoints.to_vec(), None);
    build_with(sources, catalog, &env, limits, None)
}

/// `build`, carrying server state (health, in-flight counts) over from `previous` for every
/// service that keeps its name and exact server list.
pub fn build_with(
    sources: &[ScriptSource],
    catalog: &Catalog,
    env: &BuildEnv,
    limits: &Limits,
    previous: Option<&RouteTable>,
) -> Result<Built, Vec<ScriptError>> {
    let started = Instant::now();
    let collector = Arc::new(Collector::default());
    let hooks: Arc<OnceLock<HookRuntime>> = Arc::new(OnceLock::new());
    let mut engine = engine_with_limits(limits, limits.build_operations);
    api::register_builders(&mut engine, &collector, &hooks);
    // The names routes may use, so a script can drop entrypoints it cannot serve (labels written
    // for another router's configuration) instead of failing the build.
    let entrypoints = env.entrypoints.as_slice();
    let names: rhai::Array = entrypoints.iter().cloned().map(Dynamic::from).collect();
    engine.register_fn("entrypoint_names", move || names.clone());
    // The UDP ones among them (`NAME=ADDR/udp`): only UDP routes may use them.
    let udp: rhai::Array = env
        .udp_entrypoints
        .iter()
        .cloned()
        .map(Dynamic::from)
        .collect();
    engine.register_fn("udp_entrypoint_names", move || udp.clone());
    // `()` when the admin API is off, so `api@internal` can say so instead of routing nowhere.
    let admin: Dynamic = env
        .admin
        .map(|a| Dynamic::from(a.to_string()))
        .unwrap_or(Dynamic::UNIT);
    engine.register_fn("admin_address", move || admin.clone());
    install_stdlib(&mut engine).map_err(|e| vec![e])?;
    super::error::learn_function_names(&engine);
    let deadline = started + limits.build_time;
    engine.on_progress(move |_| {
        (Instant::now() > deadline).then(|| Dynamic::from("build time budget exceeded"))
    });

    let mut scope = Scope::new();
    let entries: rhai::Array = catalog.entries.iter().cloned().map(Dynamic::from).collect();
    scope.push_constant("catalog", entries);

    let mut errors = Vec::new();
    let mut asts = Vec::new();
    for src in sources {
        collector.set_current_file(&src.name);
        let mut ast = match engine.compile_with_scope(&scope, &src.text) {
            Ok(ast) => ast,
            Err(e) => {
                errors.push(ScriptError::from_parse(&src.name, &e).with_source(&src.text));
                continue;
            }
        };
        ast.set_source(src.name.as_str());
        if let Err(e) = engine.run_ast_with_scope(&mut scope, &ast) {
            errors.push(ScriptError::from_eval(&src.name, &e).with_source(&src.text));
        }
        asts.push(ast);
    }
    let mut decls = collector.seal();
    let warnings: Vec<ScriptError> = std::mem::take(&mut decls.warnings)
        .into_iter()
        .map(|(at, message)| {
            let e = ScriptError::at(&at, message);
            match sources.iter().find(|s| s.name == e.file) {
                Some(src) => e.with_source(&src.text),
                None => e,
            }
        })
        .collect();
    drop(engine);
    if !errors.is_empty() {
        return Err(errors);
    }

    let certificates = std::mem::take(&mut decls.certificates);
    let default_certificate = decls.default_certificate.take();
    let default_generated = decls.default_generated.take();
    let on_demand = std::mem::take(&mut decls.on_demand);
    let tls_options = std::mem::take(&mut decls.tls_options);
    let l4_decls = std::mem::take(&mut decls.l4);
    // HTTP routes on a UDP entrypoint could never be reached.
    let mut udp_misuse = Vec::new();
    for h in &decls.routes {
        let d = h.decl();
        if let Some(bad) = d
            .entrypoints
            .iter()
            .flatten()
            .find(|e| env.udp_entrypoints.contains(e))
        {
            udp_misuse.push(ScriptError::at(
                &d.at,
                format!(
                    "route {:?}: {bad:?} is a UDP entrypoint; HTTP routes need a TCP one (UDP entrypoints take udp_route(...))",
                    d.name
                ),
            ));
        }
    }
    let with_source = |e: ScriptError| match sources.iter().find(|s| s.name == e.file) {
        Some(src) => e.with_source(&src.text),
        None => e,
    };
    if !udp_misuse.is_empty() {
        return Err(udp_misuse.into_iter().map(with_source).collect());
    }
    let (table, compile_warnings) = compile(decls, entrypoints, previous)
        .map_err(|errs| errs.into_iter().map(with_source).collect::<Vec<_>>())?;
    let l4_env = super::l4_api::L4Env {
        entrypoints,
        udp: &env.udp_entrypoints,
    };
    let l4 = super::l4_api::compile(l4_decls, &l4_env, previous.map(|p| p.l4().as_ref()))
        .map_err(|errs| errs.into_iter().map(with_source).collect::<Vec<_>>())?;
    let table = table.with_l4(l4);

    let mut lib = AST::empty();
    let mut files = std::collections::HashMap::new();
    for ast in &asts {
        lib.combine(ast.clone_functions_only());
        let file = ast.source().unwrap_or_default().to_string();
        for f in ast.iter_functions() {
            files
                .entry(f.name.to_string())
                .or_insert_with(|| file.clone());
        }
    }
    let mut hook_engine = engine_with_limits(limits, limits.hook_operations);
    install_stdlib(&mut hook_engine).map_err(|e| vec![e])?;
    // `set` fails only if already set, which cannot happen: this build owns `hooks`.
    let _ = hooks.set(HookRuntime {
        engine: hook_engine,
        lib,
        files,
    });

    let mut warnings = warnings;
    warnings.extend(compile_warnings.into_iter().map(with_source));
    warnings.extend(tls_without_entrypoint(&table, &env.tls_entrypoints));
    let declared: Vec<&str> = tls_options.iter().map(|(n, _, _)| n.as_str()).collect();
    let (_, option_warnings) = options_by_host(&table, &declared);
    warnings.extend(option_warnings.into_iter().map(with_source));
    Ok(Built {
        table,
        certificates,
        default_certificate,
        default_generated,
        on_demand,
        tls_options,
        warnings,
        files: sources.iter().map(|s| s.name.clone()).collect(),
        duration: started.elapsed(),
    })
}

/// A warning for each `.tls()` route none of whose entrypoints terminates TLS: it would never
/// match (a Traefik stack moved over without its `websecure` entrypoint made a TLS one).
fn tls_without_entrypoint(table: &RouteTable, tls_entrypoints: &[String]) -> Vec<ScriptError> {
    table
        .routes()
        .iter()
        .filter(|r| r.tls.is_some())
        .filter(|r| {
            !tls_entrypoints
                .iter()
                .any(|t| r.entrypoints.is_empty() || r.entrypoints.contains(t))
        })
        .map(|r| {
            let on = if r.entrypoints.is_empty() {
                "no entrypoint".to_string()
            } else {
                format!("none of its entrypoints ({})", r.entrypoints.join(", "))
            };
            ScriptError::at(
                &r.declared_at,
                format!(
                    "route {} serves TLS requests only, but {on} terminates TLS: it matches \
                     nothing until one does (--entrypoint.NAME.tls)",
                    r.name
                ),
            )
        })
        .collect()
}

/// The names served with named TLS options: `(host, options name)` for each exact or wildcard
/// host (`*.a.com`) of a route whose `.tls(#{ options })` names declared options (`declared`).
/// A route naming undeclared options, or a host two routes give different options, is a warning
/// and keeps its entrypoint's (or the `default`) options, as Traefik falls back to its default.
pub fn options_by_host(
    table: &RouteTable,
    declared: &[&str],
) -> (Vec<(String, String)>, Vec<ScriptError>) {
    let mut chosen: std::collections::BTreeMap<String, (String, &crate::table::Route)> =
        std::collections::BTreeMap::new();
    let mut conflicted = std::collections::BTreeSet::new();
    let mut warnings = Vec::new();
    for r in table.routes() {
        let Some(name) = r.tls.as_ref().and_then(|t| t.options.as_deref()) else {
            continue;
        };
        if name == "default" && !declared.contains(&"default") {
            continue;
        }
        if !declared.contains(&name) {
            warnings.push(ScriptError::at(
                &r.declared_at,
                format!(
                    "route {}: TLS options {name:?} are not declared (tls_options({name:?}, \
                     #{{...}})); its entrypoint's options apply",
                    r.name
                ),
            ));
            continue;
        }
        for h in r.rule.required_hosts().unwrap_or_default() {
            let host = match h {
                crate::routing::HostPattern::Exact(h) => h,
                crate::routing::HostPattern::Wildcard(suffix) => format!("*{suffix}"),
            };
            match chosen.get(&host) {
                Some((other, by)) if other != name => {
                    if conflicted.insert(host.clone()) {
                        warnings.push(ScriptError::at(
                            &r.declared_at,
                            format!(
                                "route {} gives {host} TLS options {name:?}, route {} gives it \
                                 {other:?}: neither applies to {host}",
                                r.name, by.name
                            ),
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    chosen.insert(host, (name.to_string(), r));
                }
            }
        }
    }
    let hosts = chosen
        .into_iter()
        .filter(|(h, _)| !conflicted.contains(h))
        .map(|(h, (n, _))| (h, n))
        .collect();
    (hosts, warnings)
}

/// Rhai definition files (`.d.rhai`) for the whole script API — builders, middlewares,
/// matchers, the request/context types hooks see, and Rhai's standard library — so Rhai's
/// language server and editor extensions can complete and check route scripts. `(file, text)`
/// pairs, as `Engine::definitions` splits them.
pub fn definitions() -> Vec<(String, String)> {
    let collector = Arc::new(Collector::default());
    let hooks: Arc<OnceLock<HookRuntime>> = Arc::new(OnceLock::new());
    let mut engine = engine_with_limits(&Limits::default(), 0);
    api::register_builders(&mut engine, &collector, &hooks);
    engine.register_fn("entrypoint_names", rhai::Array::new);
    engine.register_fn("udp_entrypoint_names", rhai::Array::new);
    engine.register_fn("admin_address", || Dynamic::UNIT);
    let mut scope = rhai::Scope::new();
    scope.push_constant("catalog", rhai::Array::new());
    let defs = engine
        .definitions_with_scope(&scope)
        .with_headers(true)
        .include_standard_packages(true);
    // Functions returning `Result<T, Box<EvalAltResult>>` come out with a mangled return type;
    // they are left without one (unknown to the editor) rather than a wrong one.
    defs.iter_files()
        .map(|(name, text)| (name, text.replace(" -> EvalAltResult>>", "")))
        .collect()
}

pub(super) fn install_stdlib(engine: &mut Engine) -> Result<(), ScriptError> {
    let mut resolver = rhai::module_resolvers::StaticModuleResolver::new();
    for (name, text) in STDLIB {
        let file = format!("stdlib/{name}.rhai");
        let mut ast = engine
            .compile(text)
            .map_err(|e| ScriptError::from_parse(&file, &e).with_source(text))?;
        ast.set_source(file.as_str());
        let module = rhai::Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| ScriptError::from_eval(&file, &e).with_source(text))?;
        resolver.insert(*name, module);
    }
    engine.set_module_resolver(resolver);
    Ok(())
}

/// The table the declarations make, with the compile's warnings (transports that skip
/// verification or find no roots).
fn compile(
    decls: Declarations,
    entrypoints: &[String],
    previous: Option<&RouteTable>,
) -> Result<(RouteTable, Vec<ScriptError>), Vec<ScriptError>> {
    let mut errors = Vec::new();

    // Services: explicit ones by name (duplicates are errors), then catalog-made ones, then
    // composites once the services they name exist.
    let mut services = Services {
        previous,
        ..Services::default()
    };
    let mut composites = Vec::new();
    for h in &decls.services {
        if matches!(h.decl().kind, ServiceDeclKind::Servers) {
            services.add(h, &mut errors);
        } else {
            composites.push(h.clone());
        }
    }
    let mut implicit: Vec<_> = decls.implicit.values().collect();
    implicit.sort_by(|a, b| a.decl().name.cmp(&b.decl().name));
    for h in implicit {
        let explicit = services.by_name.contains_key(&h.decl().name)
            || composites.iter().any(|c| c.decl().name == h.decl().name);
        if !explicit {
            services.add(h, &mut errors);
        }
    }
    services.add_composites(composites, &mut errors);

    let mut routes = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for handle in &decls.routes {
        let d = handle.decl().clone();
        if let Some(first) = seen.get(&d.name) {
            errors.push(ScriptError::at(
                &d.at,
                format!("route {:?} is already declared at {first}", d.name),
            ));
            continue;
        }
        seen.insert(d.name.clone(), d.at.clone());
        let mut written_len = None;
        let rule = match d.rule {
            None => {
                errors.push(ScriptError::at(
                    &d.at,
                    format!("route {:?} has no rule: add .rule(...)", d.name),
                ));
                continue;
            }
            Some(RuleDecl::Native(m)) => m,
            Some(RuleDecl::Text { text, at }) => match parse_rule(&text, d.syntax) {
                Ok(m) => {
                    written_len = Some(text.len());
                    m
                }
                Err(e) => {
                    errors.push(ScriptError::at(
                        &at,
                        format!("route {:?}: {e} in {text:?}", d.name),
                    ));
                    continue;
                }
            },
        };
        let target = match d.target {
            None => {
                errors.push(ScriptError::at(
                    &d.at,
                    format!(
                        "route {:?} has no target: add .to(service(...)) or .to(respond(...))",
                        d.name
                    ),
                ));
                continue;
            }
            Some(TargetDecl::Handler(h)) => Target::Handler(h),
            Some(TargetDecl::Service(h)) => {
                let name = h.decl().name.clone();
                match services
                    .by_handle
                    .get(&(Arc::as_ptr(&h.0) as usize))
                    .or_else(|| services.by_name.get(&name).map(|(s, _)| s))
                {
                    Some(s) => Target::Service(s.clone()),
                    None => continue, // its declaration already produced an error
                }
            }
            Some(TargetDecl::Named { name, at }) => match services.by_name.get(&name) {
                Some((s, _)) => Target::Service(s.clone()),
                None => {
                    errors.push(ScriptError::at(
                        &at,
                        format!("route {:?} targets unknown service {name:?}", d.name),
                    ));
                    continue;
                }
            },
        };
        let eps = d.entrypoints.unwrap_or_default();
        if let Some(bad) = eps.iter().find(|e| !entrypoints.contains(e)) {
            errors.push(ScriptError::at(
                &d.at,
                format!(
                    "route {:?} names unknown entrypoint {bad:?} (known: {})",
                    d.name,
                    entrypoints.join(", ")
                ),
            ));
            continue;
        }
        let mut steps = Vec::new();
        for m in &d.middlewares {
            m.flatten_into(&mut steps);
        }
        for m in &steps {
            if let Middleware::Errors(pages) = m {
                match services.by_name.get(&pages.service_name) {
                    Some((svc, _)) => {
                        let _ = pages.service.set(svc.clone());
                    }
                    None => errors.push(ScriptError::at(
                        &d.at,
                        format!(
                            "route {:?}: errors middleware names unknown service {:?}",
                            d.name, pages.service_name
                        ),
                    )),
                }
            }
        }
        let rule_text = rule.to_string();
        // Traefik's default priority is the length of the rule as written.
        let len = written_len.unwrap_or(rule_text.len());
        let priority = d
            .priority
            .unwrap_or_else(|| i64::try_from(len).unwrap_or(i64::MAX));
        routes.push(Route {
            middlewares: d.middlewares,
            steps,
            name: d.name,
            rule,
            rule_text,
            priority,
            entrypoints: eps,
            target,
            declared_at: d.at,
            record: d.record,
            metrics: Default::default(),
            tls: d.tls,
            cleartext: d.cleartext,
        });
    }

    if errors.is_empty() {
        let warnings = std::mem::take(&mut services.warnings);
        Ok((
            RouteTable::new(routes, services.ordered, entrypoints),
            warnings,
        ))
    } else {
        Err(errors)
    }
}

#[derive(Default)]
struct Services<'p> {
    by_name: HashMap<String, (Arc<Service>, Location)>,
    /// Keyed by the declaration's address, so `.to(handle)` finds its own service.
    by_handle: HashMap<usize, Arc<Service>>,
    ordered: Vec<Arc<Service>>,
    previous: Option<&'p RouteTable>,
    warnings: Vec<ScriptError>,
}

impl Services<'_> {
    fn insert(&mut self, h: &ServiceHandle, svc: Service, errors: &mut Vec<ScriptError>) {
        let (name, at) = (svc.name.clone(), svc.declared_at.clone());
        if let Some((_, first)) = self.by_name.get(&name) {
            errors.push(ScriptError::at(
                &at,
                format!("service {name:?} is already declared at {first}"),
            ));
            return;
        }
        let svc = Arc::new(svc);
        self.by_name.insert(name, (svc.clone(), at));
        self.by_handle
            .insert(Arc::as_ptr(&h.0) as usize, svc.clone());
        self.ordered.push(svc);
    }

    /// The live state of the same servers (address and scheme) in the previous table's service
    /// of this name.
    fn carried_states(&self, name: &str, servers: &[Server]) -> Option<Vec<Arc<ServerState>>> {
        let old = self.previous?.services().iter().find(|s| s.name == name)?;
        let pool = old.pool()?;
        let same = pool.servers.len() == servers.len()
            && pool
                .servers
                .iter()
                .zip(servers)
                .all(|(a, b)| a.authority == b.authority && a.scheme == b.scheme);
        same.then(|| pool.states.clone())
    }

    fn add(&mut self, h: &ServiceHandle, errors: &mut Vec<ScriptError>) {
        let d = h.decl().clone();
        let secret = d.sticky.as_ref().map_or("", |s| s.secret.as_str());
        let servers: Vec<Server> = d
            .servers
            .iter()
            .map(|s| Server {
                authority: s.authority.clone(),
                weight: s.weight,
                sticky_id: sticky_id(secret, s.scheme, s.authority.as_str()),
                scheme: s.scheme,
            })
            .collect();
        let https = servers.iter().any(|s| s.scheme == Scheme::Https);
        let transport = if https {
            match transport_of(&d.name, d.transport.as_ref(), &d.at, &mut self.warnings) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    errors.push(e);
                    return;
                }
            }
        } else {
            if let Some(t) = &d.transport {
                self.warnings.push(ScriptError::at(
                    &t.at,
                    format!(
                        "service {:?}: .transport(...) applies to https:// servers only, and it has none",
                        d.name
                    ),
                ));
            }
            None
        };
        let ids: Vec<(&str, u32)> = servers
            .iter()
            .map(|s| (s.authority.as_str(), s.weight))
            .collect();
        let balancer = Balancer::new(d.algorithm.clone(), &ids);
        let states = self
            .carried_states(&d.name, &servers)
            .unwrap_or_else(|| servers.iter().map(|_| ServerState::new()).collect());
        let svc = Service {
            name: d.name.clone(),
            kind: ServiceKind::Servers(Box::new(Pool {
                servers,
                states,
                balancer,
                picker: d.picker.clone(),
                sticky: d.sticky.clone(),
                health: d.health.clone(),
                passive: d.passive,
                transport,
            })),
            pass_host_header: d.pass_host_header,
            declared_at: d.at.clone(),
        };
        self.insert(h, svc, errors);
    }

    fn resolve(&self, r: &ServiceRef) -> Option<Arc<Service>> {
        match r {
            ServiceRef::Handle(h) => self
                .by_handle
                .get(&(Arc::as_ptr(&h.0) as usize))
                .cloned()
                .or_else(|| self.by_name.get(&h.decl().name).map(|(s, _)| s.clone())),
            ServiceRef::Name(n) => self.by_name.get(n).map(|(s, _)| s.clone()),
        }
    }

    /// Adds failover/weighted services in dependency order; what cannot be resolved (unknown
    /// names, cycles) is an error at the composite's declaration.
    fn add_composites(&mut self, mut pending: Vec<ServiceHandle>, errors: &mut Vec<ScriptError>) {
        loop {
            let before = pending.len();
            let mut waiting = Vec::new();
            for h in pending {
                let d = h.decl().clone();
                let kind = match &d.kind {
                    ServiceDeclKind::Servers => None,
                    ServiceDeclKind::Failover { primary, fallback } => {
                        match (self.resolve(primary), self.resolve(fallback)) {
                            (Some(primary), Some(fallback)) => {
                                Some(ServiceKind::failover(primary, fallback, d.sticky.clone()))
                            }
                            _ => None,
                        }
                    }
                    ServiceDeclKind::Weighted(members) => members
                        .iter()
                        .map(|(r, w)| self.resolve(r).map(|s| (s, *w)))
                        .collect::<Option<Vec<_>>>()
                        .map(|children| ServiceKind::weighted(children, d.sticky.clone())),
                    ServiceDeclKind::Mirror {
                        main,
                        mirrors,
                        body,
                        max_body,
                    } => self.resolve(main).and_then(|main| {
                        let mirrors = mirrors
                            .iter()
                            .map(|(r, p)| self.resolve(r).map(|s| (s, *p)))
                            .collect::<Option<Vec<_>>>()?;
                        Some(ServiceKind::Mirror(Box::new(Mirroring::new(
                            main, mirrors, *body, *max_body,
                        ))))
                    }),
                };
                match kind {
                    Some(kind) => {
                        let svc = Service {
                            name: d.name.clone(),
                            kind,
                            pass_host_header: d.pass_host_header,
                            declared_at: d.at.clone(),
                        };
                        self.insert(&h, svc, errors);
                    }
                    None => waiting.push(h),
                }
            }
            if waiting.is_empty() {
                return;
            }
            if waiting.len() == before {
                for h in waiting {
                    let d = h.decl();
                    let names: Vec<String> = match &d.kind {
                        ServiceDeclKind::Servers => Vec::new(),
                        ServiceDeclKind::Failover { primary, fallback } => {
                            vec![primary.name(), fallback.name()]
                        }
                        ServiceDeclKind::Weighted(m) => m.iter().map(|(r, _)| r.name()).collect(),
                        ServiceDeclKind::Mirror { main, mirrors, .. } => {
                            std::iter::once(main.name())
                                .chain(mirrors.iter().map(|(r, _)| r.name()))
                                .collect()
                        }
                    };
                    let missing: Vec<String> = names
                        .into_iter()
                        .filter(|n| !self.by_name.contains_key(n))
                        .collect();
                    errors.push(ScriptError::at(
                        &d.at,
                        format!(
                            "service {:?} names services that are unknown or form a cycle: {}",
                            d.name,
                            missing.join(", ")
                        ),
                    ));
                }
                return;
            }
            pending = waiting;
        }
    }
}

/// A file a transport names: relative paths start at the folder of the script that named it.
fn transport_path(at: &Location, file: &str) -> std::path::PathBuf {
    let p = Path::new(file);
    match Path::new(&at.file).parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// The system's root certificates, read once per process (`rustls-native-certs`: the
/// platform store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's root certificates");
            }
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

/// The TLS settings of a pool with `https://` servers, from its `.transport(...)` (or the
/// defaults at the service's declaration `service_at`): the files are read here; an unreadable
/// or unusable file is an error at the `.transport(...)` call naming the file.
fn transport_of(
    service: &str,
    decl: Option<&TransportDecl>,
    service_at: &Location,
    warnings: &mut Vec<ScriptError>,
) -> Result<Transport, ScriptError> {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;

    let default = TransportDecl {
        at: service_at.clone(),
        ..TransportDecl::default()
    };
    let d = decl.unwrap_or(&default);
    let fail =
        |what: String| ScriptError::at(&d.at, format!("service {service:?}: transport {what}"));
    // `id` covers every setting and the bytes of every file, so changed files make new pools.
    let mut id = sha2::Sha256::new();
    let verify = if d.insecure_skip_verify {
        id.update(b"insecure\0");
        let message = format!(
            "service {service:?}: insecure_skip_verify: the certificates of its https:// servers are not checked"
        );
        tracing::warn!(at = %d.at, "{message}");
        warnings.push(ScriptError::at(&d.at, message));
        Verify::Skip
    } else if let Some(ca) = &d.ca {
        let path = transport_path(&d.at, ca);
        let shown = path.display();
        let pem = std::fs::read(&path).map_err(|e| fail(format!("ca {shown}: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| fail(format!("ca {shown}: not a PEM certificate file: {e}")))?;
            roots.add(c).map_err(|e| fail(format!("ca {shown}: {e}")))?;
        }
        if roots.is_empty() {
            return Err(fail(format!("ca {shown}: holds no PEM certificate")));
        }
        id.update(b"ca\0");
        id.update(&pem);
        Verify::Roots(Arc::new(roots))
    } else {
        let roots = system_roots();
        if roots.is_empty() {
            warnings.push(ScriptError::at(
                &d.at,
                format!(
                    "service {service:?}: no system root certificates were found, so its https:// \
                     servers cannot be verified: give .transport(#{{ ca: \"file\" }})"
                ),
            ));
        }
        id.update(b"system\0");
        Verify::Roots(roots)
    };
    let client = match (&d.cert, &d.key) {
        (Some(cert), Some(key)) => {
            let files = crate::tls::CertFiles {
                cert: transport_path(&d.at, cert),
                key: transport_path(&d.at, key),
            };
            let loaded =
                crate::tls::certs::load(&files).map_err(|e| fail(format!("client {e}")))?;
            id.update(b"client\0");
            for c in &loaded.key.cert {
                id.update(c.as_ref());
            }
            id.update(files.key.as_os_str().as_encoded_bytes());
            Some(loaded.key)
        }
        _ => None,
    };
    let server_name = match &d.server_name {
        Some(n) => Some(
            rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|e| fail(format!("server_name {n:?}: {e}")))?,
        ),
        None => None,
    };
    id.update(b"\0name\0");
    id.update(d.server_name.as_deref().unwrap_or_default().as_bytes());
    let id: String = id
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Transport::new(verify, client, server_name, id).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> ScriptSource {
        ScriptSource {
            name: name.into(),
            text: text.into(),
        }
    }

    fn errors(files: &[ScriptSource]) -> Vec<ScriptError> {
        build(
            files,
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap_err()
    }

    fn one_error(text: &str) -> ScriptError {
        let errs = errors(&[src("s/a.rhai", text)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn load_dir_skips_test_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "20-routes.rhai",
            "10-services.rhai",
            "routes.test.rhai",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "let x = 1;").unwrap();
        }
        let names: Vec<String> = load_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.name.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["10-services.rhai", "20-routes.rhai"]);
    }

    #[test]
    fn builder_errors_point_at_the_call() {
        let e = one_error("let ok = 1;\nroute(\"r\").rule(host(\"\")).to(respond(200, \"x\"));");
        assert_eq!((e.line, e.column), (2, 17), "{e}");
        assert!(e.message.contains("empty host"), "{e}");
        assert_eq!(
            e.source_line.as_deref(),
            Some("route(\"r\").rule(host(\"\")).to(respond(200, \"x\"));")
        );
    }

    #[test]
    fn strict_variables_catch_typos_at_compile_time() {
        let e = one_error("let api = service(\"api\");\nroute(\"r\").rule(path(\"/\")).to(apj);");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("apj"), "{e}");
    }

    #[test]
    fn validation_errors_name_route_and_location() {
        let e = one_error("route(\"r\").rule(path(\"/\"));");
        assert!(e.message.contains("has no target"), "{e}");
        let e = one_error("route(\"r\").to(respond(200, \"x\"));");
        assert!(e.message.contains("has no rule"), "{e}");
        let e = one_error("route(\"r\").rule(path(\"/\")).to(\"nope\");");
        assert!(e.message.contains("unknown service \"nope\""), "{e}");
        assert_eq!((e.line, e.column), (1, 28), "{e}");
        let e = one_error(
            "route(\"r\").rule(path(\"/\")).entrypoints([\"websecure\"]).to(respond(200, \"x\"));",
        );
        assert!(
            e.message.contains("unknown entrypoint \"websecure\""),
            "{e}"
        );
        let e = one_error("service(\"a\");\nservice(\"a\");");
        assert!(
            e.message.contains("already declared at s/a.rhai:1:1"),
            "{e}"
        );
    }

    #[test]
    fn files_share_one_scope_in_name_order() {
        let built = build(
            &[
                src(
                    "s/10.rhai",
                    "let api = service(\"api\").servers([\"127.0.0.1:1\"]);",
                ),
                src("s/20.rhai", "route(\"r\").rule(path(\"/\")).to(api);"),
            ],
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(built.table.routes().len(), 1);
        assert_eq!(built.table.services().len(), 1);
    }

    #[test]
    fn hooks_cannot_declare_and_sandbox_has_no_eval() {
        let e = one_error("eval(\"1\");");
        assert!(e.message.to_lowercase().contains("eval"), "{e}");
        // A predicate that calls a builder fails per request, not at build time.
        let built = build(
            &[src("s/a.rhai", "fn bad(req) { route(\"x\"); true }\nroute(\"r\").rule(predicate(Fn(\"bad\"))).to(respond(200, \"x\"));")],
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap();
        let headers = http::HeaderMap::new();
        let req = crate::routing::RequestView {
            method: &http::Method::GET,
            host: "a",
            path: "/",
            query: None,
            headers: &headers,
            client_ip: "127.0.0.1".parse().unwrap(),
        };
        let err = built.table.lookup("web", &req).unwrap_err();
        assert_eq!(err.route, "r");
        assert!(err.message.contains("route"), "{err:?}");
    }

    #[test]
    fn composite_services_resolve_names_and_report_cycles() {
        let built = build(
            &[src(
                "s/a.rhai",
                "let a = service(\"a\").servers([\"127.0.0.1:1\"]);\n\
                 let b = service(\"b\").servers([\"127.0.0.1:2\"]);\n\
                 let ha = failover(\"ha\", \"a\", b);\n\
                 let split = weighted(\"split\", [[ha, 3], [\"b\", 1]]);\n\
                 route(\"r\").rule(path(\"/\")).to(split);",
            )],
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap();
        let split = built
            .table
            .services()
            .iter()
            .find(|s| s.name == "split")
            .unwrap();
        assert_eq!(split.balancer_kind(), "weighted");
        assert_eq!(
            split.server_addresses(),
            vec!["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2"]
        );
        let e = one_error("failover(\"x\", \"y\", \"x\");");
        assert!(e.message.contains("unknown or form a cycle: y, x"), "{e}");
        let e = one_error(
            "route(\"r\").rule(path(\"/\")).middlewares([errors(#{ status: [\"500-599\"], service: \"nope\" })]).to(respond(200, \"x\"));",
        );
        assert!(e.message.contains("unknown service \"nope\""), "{e}");
    }

    #[test]
    fn server_state_survives_a_rebuild_with_the_same_servers() {
        let eps = ["web".to_string()];
        let one = |servers: &str| {
            vec![src(
                "s/a.rhai",
                &format!(
                    "route(\"r\").rule(path(\"/\")).to(service(\"api\").servers([{servers}]));"
                ),
            )]
        };
        let first = build(
            &one("\"127.0.0.1:1\""),
            &Catalog::default(),
            &eps,
            &Limits::default(),
        )
        .unwrap();
        let state = first.table.services()[0].pool().unwrap().states[0].clone();
        state.set_active_healthy(false);
        let env = BuildEnv::new(eps.to_vec(), None);
        let same = build_with(
            &one("\"127.0.0.1:1\""),
            &Catalog::default(),
            &env,
            &Limits::default(),
            Some(&first.table),
        )
        .unwrap();
        let carried = &same.table.services()[0].pool().unwrap().states[0];
        assert!(Arc::ptr_eq(carried, &state));
        assert!(!carried.active_healthy());
        let changed = build_with(
            &one("\"127.0.0.1:1\", \"127.0.0.1:2\""),
            &Catalog::default(),
            &env,
            &Limits::default(),
            Some(&first.table),
        )
        .unwrap();
        assert!(changed.table.services()[0].pool().unwrap().states[0].active_healthy());
    }

    #[test]
    fn middleware_options_are_checked_at_build_time() {
        for (text, want) in [
            (
                "rate_limit(#{ average: 1, burts: 2 })",
                "unknown option `burts`",
            ),
            ("basic_auth([\"alice\"])", "line 1"),
            ("ip_allow_list([\"10.0.0.0/33\"])", "10.0.0.0/33"),
            ("request_header(\"Host\", \"x\")", "set by the router"),
            ("retry(0)", "not in 1..=10"),
            (
                "circuit_breaker(\"NetworkErrorRatio() 0.5\")",
                "comparison operator",
            ),
            ("compress(#{ encodings: [\"lz4\"] })", "unknown encoding"),
        ] {
            let e = one_error(&format!(
                "route(\"r\").rule(path(\"/\")).middlewares([{text}]).to(respond(200, \"x\"));"
            ));
            assert!(e.message.contains(want), "{text}: {e}");
            assert_eq!(e.line, 1, "{text}: {e}");
        }
    }

    #[test]
    fn transports_are_checked_and_their_files_read_at_build_time() {
        let dir = tempfile::tempdir().unwrap();
        let script = |transport: &str| {
            src(
                &dir.path().join("a.rhai").display().to_string(),
                &format!(
                    "let s = service(\"s\").servers([\"https://127.0.0.1:8443\"]);\n\
                     s.transport({transport});\n\
                     route(\"r\").rule(path(\"/\")).to(s);\n"
                ),
            )
        };
        // Options are checked where they are written.
        for (t, want) in [
            ("#{ cert: \"c.pem\" }", "both `cert` and `key`"),
            (
                "#{ ca: \"ca.pem\", insecure_skip_verify: true }",
                "exclude each other",
            ),
            ("#{ server_name: \"not a name\" }", "not a DNS name"),
            ("#{ verify: false }", "unknown option `verify`"),
            ("#{ ca: \"\" }", "names no file"),
        ] {
            let errs = errors(&[script(t)]);
            assert_eq!(errs.len(), 1, "{t}: {errs:?}");
            assert!(errs[0].message.contains(want), "{t}: {}", errs[0]);
            assert_eq!(errs[0].line, 2, "{t}: {}", errs[0]);
        }
        // Files are read by the build, relative to the script's folder: a missing one is an
        // error at the `.transport(...)` line naming the file.
        let e = &errors(&[script("#{ ca: \"missing-ca.pem\" }")])[0];
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("missing-ca.pem"), "{e}");
        std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
        let e = &errors(&[script("#{ ca: \"junk.pem\" }")])[0];
        assert!(e.message.contains("holds no PEM certificate"), "{e}");
        let e = &errors(&[script("#{ cert: \"c.pem\", key: \"k.pem\" }")])[0];
        assert!(e.message.contains("c.pem"), "{e}");
        let ok = |sources: &[ScriptSource]| {
            build(
                sources,
                &Catalog::default(),
                &["web".to_string()],
                &Limits::default(),
            )
            .unwrap()
        };
        // A CA that reads: the pool gets a transport; skipping verification is a warning.
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let built = ok(&[script("#{ ca: \"ca.pem\", server_name: \"api.internal\" }")]);
        let svc = &built.table.services()[0];
        let t = svc.pool().unwrap().transport.as_ref().unwrap();
        assert!(!t.insecure_skip_verify);
        assert!(t.server_name.is_some());
        assert!(built.warnings.is_empty(), "{:?}", built.warnings);
        let built = ok(&[script("#{ insecure_skip_verify: true }")]);
        assert!(built
            .warnings
            .iter()
            .any(|w| w.message.contains("insecure_skip_verify") && w.line == 2));
        // Another CA file's contents make another transport (pools never mix them).
        let first = t.id.clone();
        let other = rcgen::generate_simple_self_signed(vec!["ca2.test".to_string()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), other.cert.pem()).unwrap();
        let built = ok(&[script("#{ ca: \"ca.pem\", server_name: \"api.internal\" }")]);
        let again = &built.table.services()[0].pool().unwrap().transport;
        assert_ne!(again.as_ref().unwrap().id, first);
        // https:// servers without a transport still get one (system roots).
        let built = build(
            &[src("s/b.rhai", "route(\"r\").rule(path(\"/\")).to(service(\"s\").servers([\"https://a.test:443\", \"h2c://b:1\"]));")],
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap();
        let pool = built.table.services()[0].pool().unwrap();
        assert!(pool.transport.is_some());
        assert_eq!(pool.servers[0].url(), "https://a.test:443");
        assert_eq!(pool.servers[1].url(), "h2c://b:1");
    }

    #[test]
    fn every_file_reports_its_own_syntax_error() {
        let errs = errors(&[src("s/a.rhai", "let x = ;"), src("s/b.rhai", "route(\"r\"")]);
        let files: Vec<_> = errs.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(files, vec!["s/a.rhai", "s/b.rhai"]);
    }
}
