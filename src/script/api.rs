//! The script API: the builder functions and types a route script declares things with.
//!
//! Owns the Rhai registrations for `route()`, `service()`, matchers, handlers, catalog entries,
//! and the `Collector` that records every declaration with the file:line:col it came from.
//! Builder calls only record; validation and compilation happen in `build` after all scripts
//! ran. Must never: perform I/O, or let a builder call outlive its build (the collector is sealed
//! once the build finishes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use http::uri::Authority;
use http::{HeaderName, Method};
use ipnet::IpNet;
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::hook::{HookRuntime, ScriptFn, ScriptPredicate, ScriptRequestHook};
use crate::catalog::CatalogEntry;
use crate::middleware::Middleware;
use crate::routing::matcher::{HostPattern, Matcher, Pattern};
use crate::routing::service::Scheme;
use crate::routing::{Handler, Location, RuleSyntax};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn runtime_error<T>(ctx: &NativeCallContext, msg: impl Into<String>) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        ctx.call_position(),
    )))
}

/// A rule as declared: already native, or a Traefik string parsed once all options are known.
#[derive(Debug, Clone)]
pub enum RuleDecl {
    Native(Matcher),
    Text { text: String, at: Location },
}

#[derive(Debug, Clone)]
pub enum TargetDecl {
    Service(ServiceHandle),
    /// A service referenced by name, resolved after all scripts ran.
    Named {
        name: String,
        at: Location,
    },
    Handler(Handler),
}

#[derive(Debug, Clone)]
pub struct RouteDecl {
    pub name: String,
    pub at: Location,
    pub rule: Option<RuleDecl>,
    pub syntax: RuleSyntax,
    pub priority: Option<i64>,
    pub entrypoints: Option<Vec<String>>,
    pub middlewares: Vec<Middleware>,
    pub target: Option<TargetDecl>,
    /// `.record(bool)`.
    pub record: Option<bool>,
    /// `.tls(...)`.
    pub tls: Option<crate::routing::RouteTls>,
    /// `.tls(false)`.
    pub cleartext: bool,
}

#[derive(Debug, Clone)]
pub struct ServerDecl {
    pub authority: Authority,
    pub weight: u32,
    /// From the URL: `http://` (or none), `https://`, `h2c://`.
    pub scheme: Scheme,
}

/// `.transport(#{ ca, server_name, insecure_skip_verify, cert, key })`: how the router speaks
/// TLS to the service's `https://` servers. File names only: the build reads the files (paths
/// relative to the declaring script's folder), never the script engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportDecl {
    /// PEM file of the CA certificates servers are checked against (instead of the system's).
    pub ca: Option<String>,
    /// The name sent as SNI and verified, instead of each server's host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// The client certificate chain and key presented to servers (mTLS).
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Where `.transport(...)` was called: file errors point here.
    pub at: Location,
}

/// A service named in a composite, resolved after all scripts ran.
#[derive(Debug, Clone)]
pub enum ServiceRef {
    Handle(ServiceHandle),
    Name(String),
}

impl ServiceRef {
    pub fn name(&self) -> String {
        match self {
            ServiceRef::Handle(h) => h.decl().name.clone(),
            ServiceRef::Name(n) => n.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ServiceDeclKind {
    Servers,
    Failover {
        primary: ServiceRef,
        fallback: ServiceRef,
    },
    Weighted(Vec<(ServiceRef, u32)>),
    /// `mirror(name, main, [[service, percent], ...], #{ mirror_body, max_body_size })`.
    Mirror {
        main: ServiceRef,
        mirrors: Vec<(ServiceRef, u32)>,
        body: bool,
        max_body: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ServiceDecl {
    pub name: String,
    pub at: Location,
    pub kind: ServiceDeclKind,
    pub servers: Vec<ServerDecl>,
    pub pass_host_header: bool,
    pub algorithm: crate::balance::Algorithm,
    pub picker: Option<Arc<dyn crate::routing::service::ServerPicker>>,
    pub sticky: Option<crate::routing::service::StickyCookie>,
    pub health: Option<crate::routing::service::HealthCheck>,
    pub passive: Option<crate::balance::PassivePolicy>,
    pub transport: Option<TransportDecl>,
}

impl ServiceDecl {
    pub fn new(name: &str, at: Location) -> ServiceDecl {
        ServiceDecl {
            name: name.to_string(),
            at,
            kind: ServiceDeclKind::Servers,
            servers: Vec::new(),
            pass_host_header: true,
            algorithm: crate::balance::Algorithm::RoundRobin,
            picker: None,
            sticky: None,
            health: None,
            passive: None,
            transport: None,
        }
    }
}

/// What a script holds after `route(name)`: every method records into the shared declaration.
#[derive(Debug, Clone)]
pub struct RouteHandle(pub Arc<Mutex<RouteDecl>>);

/// What a script holds after `service(name)`.
#[derive(Debug, Clone)]
pub struct ServiceHandle(pub Arc<Mutex<ServiceDecl>>);

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Build-time only; a poisoned lock still holds a consistent declaration.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RouteHandle {
    pub fn decl(&self) -> MutexGuard<'_, RouteDecl> {
        lock(&self.0)
    }
}

impl ServiceHandle {
    pub fn decl(&self) -> MutexGuard<'_, ServiceDecl> {
        lock(&self.0)
    }
}

#[derive(Debug, Default)]
struct CollectorState {
    sealed: bool,
    current_file: String,
    routes: Vec<RouteHandle>,
    services: Vec<ServiceHandle>,
    /// Services made from catalog entries by `.to(entry)`, one per entry name.
    implicit: HashMap<String, ServiceHandle>,
    /// `warn(...)` calls: problems that skip something without failing the build.
    warnings: Vec<(Location, String)>,
    /// `tls_certificate(cert, key)` calls: files the router reads (never the script engine).
    certificates: Vec<(crate::tls::CertFiles, Location)>,
    /// `tls_default_certificate(cert, key)`: the last call wins.
    default_certificate: Option<(crate::tls::CertFiles, Location)>,
    /// `tls_default_certificate(#{ resolver, main, sans })`: the last call wins.
    default_generated: Option<DefaultGenerated>,
    /// `on_demand([resolver,] predicate)` calls.
    on_demand: Vec<OnDemandDecl>,
    /// `tls_options(name, #{...})`: named TLS options routes choose with `.tls(#{ options })`.
    tls_options: Vec<(String, crate::tls::TlsOptions, Location)>,
    /// `tcp_route`, `tcp_service`, `udp_route`, `udp_service` calls.
    l4: super::l4_api::L4Decls,
}

/// `tls_default_certificate(#{ resolver, main, sans })`: the default certificate is the one a
/// certificate resolver holds for `main` (Traefik's `tls.stores.default.defaultGeneratedCert`);
/// the resolver orders `main` and `sans` as it does for routes.
#[derive(Debug, Clone)]
pub struct DefaultGenerated {
    pub resolver: String,
    pub main: String,
    pub sans: Vec<String>,
    pub at: Location,
}

/// `on_demand([resolver,] predicate)`: which names a resolver with `on-demand=true` may order
/// at their first handshake.
#[derive(Debug, Clone)]
pub struct OnDemandDecl {
    /// The resolver named, else any on-demand one.
    pub resolver: Option<String>,
    pub allow: Arc<super::hook::NameCheck>,
    pub at: Location,
}

/// Everything the scripts of one build declared.
#[derive(Debug, Default)]
pub struct Declarations {
    pub routes: Vec<RouteHandle>,
    pub services: Vec<ServiceHandle>,
    pub implicit: HashMap<String, ServiceHandle>,
    pub warnings: Vec<(Location, String)>,
    pub certificates: Vec<(crate::tls::CertFiles, Location)>,
    pub default_certificate: Option<(crate::tls::CertFiles, Location)>,
    pub default_generated: Option<DefaultGenerated>,
    pub on_demand: Vec<OnDemandDecl>,
    pub tls_options: Vec<(String, crate::tls::TlsOptions, Location)>,
    pub l4: super::l4_api::L4Decls,
}

/// Records declarations during one build.
#[derive(Debug, Default)]
pub struct Collector {
    state: Mutex<CollectorState>,
}

impl Collector {
    pub fn set_current_file(&self, file: &str) {
        lock(&self.state).current_file = file.to_string();
    }

    /// Ends the build: later builder calls (e.g. from a hook) fail instead of recording.
    pub fn seal(&self) -> Declarations {
        let mut st = lock(&self.state);
        st.sealed = true;
        Declarations {
            routes: std::mem::take(&mut st.routes),
            services: std::mem::take(&mut st.services),
            implicit: std::mem::take(&mut st.implicit),
            warnings: std::mem::take(&mut st.warnings),
            certificates: std::mem::take(&mut st.certificates),
            default_certificate: st.default_certificate.take(),
            default_generated: st.default_generated.take(),
            on_demand: std::mem::take(&mut st.on_demand),
            tls_options: std::mem::take(&mut st.tls_options),
            l4: std::mem::take(&mut st.l4),
        }
    }

    /// Records a TCP/UDP declaration.
    pub(super) fn with_l4(&self, f: impl FnOnce(&mut super::l4_api::L4Decls)) {
        f(&mut lock(&self.state).l4);
    }

    pub(super) fn location(&self, ctx: &NativeCallContext) -> Location {
        let st = lock(&self.state);
        let pos = ctx.call_position();
        Location {
            file: ctx
                .call_source()
                .filter(|s| !s.is_empty())
                .map_or_else(|| st.current_file.clone(), str::to_string),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
        }
    }

    pub(super) fn add_service(&self, h: ServiceHandle) {
        lock(&self.state).services.push(h);
    }

    pub(super) fn check_open(&self, ctx: &NativeCallContext, what: &str) -> RhaiResult<()> {
        if lock(&self.state).sealed {
            return runtime_error(
                ctx,
                format!("{what}() may only be called while scripts build, not from a hook"),
            );
        }
        Ok(())
    }
}

/// Parses a server URL: `host:port` or `http://host:port[/]` (HTTP/1.1), `https://host:port[/]`
/// (HTTP/1.1 over TLS) or `h2c://host:port[/]` (HTTP/2 with prior knowledge, for gRPC
/// servers); the scheme is matched without regard to case.
pub fn parse_server_url(raw: &str) -> Result<(Authority, Scheme), String> {
    let trimmed = raw.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        None => (Scheme::Http, trimmed),
        Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
            "http" => (Scheme::Http, rest),
            "https" => (Scheme::Https, rest),
            "h2c" => (Scheme::H2c, rest),
            _ => {
                return Err(format!(
                    "server {raw:?}: unknown scheme {s:?} (http://, https:// or h2c://)"
                ))
            }
        },
    };
    authority_of(raw, rest).map(|a| (a, scheme))
}

/// Parses a cleartext HTTP/1.1 server address: `host:port` or `http://host:port[/]`.
pub fn parse_server_address(raw: &str) -> Result<Authority, String> {
    match parse_server_url(raw)? {
        (a, Scheme::Http) => Ok(a),
        (_, other) => Err(format!(
            "server {raw:?}: an http:// address is needed here, not {}://",
            other.as_str()
        )),
    }
}

/// The `host:port` of a server URL without its scheme (`rest`), checked.
fn authority_of(raw: &str, rest: &str) -> Result<Authority, String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(format!("server {raw:?}: a server address has no path"));
    }
    let authority: Authority = rest
        .parse()
        .map_err(|e| format!("server {raw:?}: invalid address: {e}"))?;
    match authority.port_u16() {
        Some(0) => return Err(format!("server {raw:?}: port 0 is not a port (1-65535)")),
        Some(_) => {}
        None => {
            // `host:99999` parses as an authority whose port does not fit in 16 bits.
            let digits = rest
                .rsplit_once(':')
                .map(|(_, p)| p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            return Err(match digits {
                Some(p) => format!("server {raw:?}: port {p} is out of range (1-65535)"),
                None => format!("server {raw:?}: missing port (write host:port)"),
            });
        }
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "server {raw:?}: credentials in server addresses are not supported"
        ));
    }
    Ok(authority)
}

fn server_from_dynamic(item: &Dynamic) -> Result<ServerDecl, String> {
    if let Some(s) = item.clone().try_cast::<rhai::ImmutableString>() {
        let (authority, scheme) = parse_server_url(&s)?;
        return Ok(ServerDecl {
            authority,
            weight: 1,
            scheme,
        });
    }
    if let Some(map) = item.clone().try_cast::<Map>() {
        let addr = map
            .get("address")
            .or_else(|| map.get("url"))
            .and_then(|v| v.clone().into_immutable_string().ok())
            .ok_or_else(|| "a server map needs an `address` string".to_string())?;
        let weight = match map.get("weight") {
            None => 1,
            Some(w) => {
                let w = w
                    .as_int()
                    .map_err(|t| format!("server weight must be an integer, not {t}"))?;
                u32::try_from(w)
                    .ok()
                    .filter(|w| *w <= 1_000_000)
                    .ok_or_else(|| format!("server weight {w} is out of range 0..=1000000"))?
            }
        };
        for key in map.keys() {
            if !["address", "url", "weight"].contains(&key.as_str()) {
                return Err(format!(
                    "unknown server option `{key}` (known: address, weight)"
                ));
            }
        }
        let (authority, scheme) = parse_server_url(&addr)?;
        return Ok(ServerDecl {
            authority,
            weight,
            scheme,
        });
    }
    Err(format!(
        "a server is a \"host:port\" string or #{{address, weight}}, not {}",
        item.type_name()
    ))
}

pub(super) fn strings(ctx: &NativeCallContext, arr: &Array, what: &str) -> RhaiResult<Vec<String>> {
    arr.iter()
        .map(|v| {
            v.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .or_else(|t| runtime_error(ctx, format!("{what} must be strings, found {t}")))
        })
        .collect()
}

fn regex_matcher(
    ctx: &NativeCallContext,
    re: &str,
    f: impl FnOnce(Pattern) -> Matcher,
) -> RhaiResult<Matcher> {
    Pattern::new(re).map(f).or_else(|e| runtime_error(ctx, e))
}

fn header_name(ctx: &NativeCallContext, name: &str) -> RhaiResult<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .or_else(|_| runtime_error(ctx, format!("invalid header name {name:?}")))
}

fn catalog_service(
    collector: &Collector,
    entry: &CatalogEntry,
    at: Location,
) -> Result<ServiceHandle, String> {
    let mut st = lock(&collector.state);
    if let Some(existing) = st.implicit.get(&entry.name) {
        return Ok(existing.clone());
    }
    let servers = entry
        .servers
        .iter()
        .map(|s| {
            parse_server_url(s).map(|(authority, scheme)| ServerDecl {
                authority,
                weight: 1,
                scheme,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("catalog entry {:?}: {e}", entry.name))?;
    let mut decl = ServiceDecl::new(&entry.name, at);
    decl.servers = servers;
    let handle = ServiceHandle(Arc::new(Mutex::new(decl)));
    st.implicit.insert(entry.name.clone(), handle.clone());
    Ok(handle)
}

/// Registers the matcher constructors and operators (shared by the build and hook engines).
pub fn register_matchers(engine: &mut Engine) {
    engine.register_type_with_name::<Matcher>("Matcher");
    engine.register_fn("to_string", |m: &mut Matcher| m.to_string());
    engine.register_fn(
        "host",
        |ctx: NativeCallContext, h: &str| -> RhaiResult<Matcher> {
            HostPattern::parse(h)
                .map(Matcher::Host)
                .or_else(|e| runtime_error(&ctx, e))
        },
    );
    engine.register_fn(
        "host_regex",
        |ctx: NativeCallContext, re: &str| -> RhaiResult<Matcher> {
            Pattern::case_insensitive(re)
                .map(Matcher::HostRegex)
                .or_else(|e| runtime_error(&ctx, e))
        },
    );
    engine.register_fn(
        "path",
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Matcher> {
            if !p.starts_with('/') {
                return runtime_error(&ctx, format!("path {p:?} must start with /"));
            }
            Ok(Matcher::Path(p.to_string()))
        },
    );
    engine.register_fn(
        "path_prefix",
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Matcher> {
            if !p.starts_with('/') {
                return runtime_error(&ctx, format!("path prefix {p:?} must start with /"));
            }
            Ok(Matcher::PathPrefix(p.to_string()))
        },
    );
    engine.register_fn("path_regex", |ctx: NativeCallContext, re: &str| {
        regex_matcher(&ctx, re, Matcher::PathRegex)
    });
    engine.register_fn(
        "method",
        |ctx: NativeCallContext, m: &str| -> RhaiResult<Matcher> {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map(Matcher::Method)
                .or_else(|_| runtime_error(&ctx, format!("invalid method {m:?}")))
        },
    );
    engine.register_fn(
        "header",
        |ctx: NativeCallContext, name: &str, value: &str| -> RhaiResult<Matcher> {
            Ok(Matcher::Header(header_name(&ctx, name)?, value.to_string()))
        },
    );
    engine.register_fn(
        "header_regex",
        |ctx: NativeCallContext, name: &str, re: &str| -> RhaiResult<Matcher> {
            let name = header_name(&ctx, name)?;
            regex_matcher(&ctx, re, |p| Matcher::HeaderRegex(name, p))
        },
    );
    engine.register_fn("query", |key: &str| Matcher::Query(key.to_string(), None));
    engine.register_fn("query", |key: &str, value: &str| {
        Matcher::Query(key.to_string(), Some(value.to_string()))
    });
    engine.register_fn(
        "query_regex",
        |ctx: NativeCallContext, key: &str, re: &str| {
            regex_matcher(&ctx, re, |p| Matcher::QueryRegex(key.to_string(), p))
        },
    );
    engine.register_fn(
        "client_ip",
        |ctx: NativeCallContext, cidr: &str| -> RhaiResult<Matcher> {
            let net = cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
                .or_else(|_| runtime_error(&ctx, format!("invalid IP or CIDR {cidr:?}")))?;
            Ok(Matcher::ClientIp(net))
        },
    );
    engine.register_fn("&", |a: Matcher, b: Matcher| a.and(b));
    engine.register_fn("|", |a: Matcher, b: Matcher| a.or(b));
    engine.register_fn("!", |a: Matcher| a.not());
    engine.register_fn("all_of", |ctx: NativeCallContext, ms: Array| {
        combine(&ctx, ms, Matcher::and)
    });
    engine.register_fn("any_of", |ctx: NativeCallContext, ms: Array| {
        combine(&ctx, ms, Matcher::or)
    });
}

fn combine(
    ctx: &NativeCallContext,
    ms: Array,
    op: fn(Matcher, Matcher) -> Matcher,
) -> RhaiResult<Matcher> {
    let mut out: Option<Matcher> = None;
    for m in ms {
        let t = m.type_name();
        let Some(m) = m.try_cast::<Matcher>() else {
            return runtime_error(ctx, format!("expected matchers, found {t}"));
        };
        out = Some(match out {
            None => m,
            Some(acc) => op(acc, m),
        });
    }
    out.map_or_else(
        || {
            runtime_error(
                ctx,
                "an empty list matches nothing; give at least one matcher",
            )
        },
        Ok,
    )
}

/// Registers the builder API recording into `collector`. `hooks` is the runtime the build's
/// script predicates will run on once the build completes.
pub fn register_builders(
    engine: &mut Engine,
    collector: &Arc<Collector>,
    hooks: &Arc<OnceLock<HookRuntime>>,
) {
    engine.register_type_with_name::<RouteHandle>("Route");
    engine.register_type_with_name::<ServiceHandle>("Service");

    let c = collector.clone();
    engine.register_fn(
        "route",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<RouteHandle> {
            c.check_open(&ctx, "route")?;
            if name.trim().is_empty() {
                return runtime_error(&ctx, "a route needs a non-empty name");
            }
            let handle = RouteHandle(Arc::new(Mutex::new(RouteDecl {
                name: name.to_string(),
                at: c.location(&ctx),
                rule: None,
                syntax: RuleSyntax::V3,
                priority: None,
                entrypoints: None,
                middlewares: Vec::new(),
                target: None,
                record: None,
                tls: None,
                cleartext: false,
            })));
            lock(&c.state).routes.push(handle.clone());
            Ok(handle)
        },
    );

    let c = collector.clone();
    engine.register_fn(
        "service",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<ServiceHandle> {
            c.check_open(&ctx, "service")?;
            if name.trim().is_empty() {
                return runtime_error(&ctx, "a service needs a non-empty name");
            }
            let handle = ServiceHandle(Arc::new(Mutex::new(ServiceDecl::new(
                name,
                c.location(&ctx),
            ))));
            lock(&c.state).services.push(handle.clone());
            Ok(handle)
        },
    );
    super::service_api::register(engine, collector, hooks);
    super::l4_api::register(engine, collector);
    let c = collector.clone();
    engine.register_fn(
        "warn",
        move |ctx: NativeCallContext, message: &str| -> RhaiResult<()> {
            c.check_open(&ctx, "warn")?;
            let at = c.location(&ctx);
            tracing::warn!(target: "script", at = %at, "{message}");
            lock(&c.state).warnings.push((at, message.to_string()));
            Ok(())
        },
    );

    // The one place a script names files: the router reads them after the build (relative
    // paths from the scripts folder), never the script engine.
    let c = collector.clone();
    engine.register_fn(
        "tls_certificate",
        move |ctx: NativeCallContext, cert: &str, key: &str| -> RhaiResult<()> {
            let pair = cert_pair(&c, &ctx, "tls_certificate", cert, key)?;
            lock(&c.state).certificates.push(pair);
            Ok(())
        },
    );
    // The default certificate from a certificate resolver (Traefik's
    // `tls.stores.default.defaultGeneratedCert`).
    let c = collector.clone();
    engine.register_fn(
        "tls_default_certificate",
        move |ctx: NativeCallContext, opts: Map| -> RhaiResult<()> {
            c.check_open(&ctx, "tls_default_certificate")?;
            let what = "tls_default_certificate(#{ resolver, main, sans })";
            let text = |k: &str| -> RhaiResult<Option<String>> {
                match opts.get(k) {
                    None => Ok(None),
                    Some(v) => match v.clone().into_string() {
                        Ok(t) if !t.trim().is_empty() => {
                            Ok(Some(t.trim().trim_end_matches('.').to_ascii_lowercase()))
                        }
                        _ => {
                            runtime_error(&ctx, format!("{what}: `{k}` must be a non-empty string"))
                        }
                    },
                }
            };
            if let Some(k) = opts
                .keys()
                .find(|k| !["resolver", "main", "sans"].contains(&k.as_str()))
            {
                return runtime_error(&ctx, format!("{what}: unknown key {k:?}"));
            }
            let (Some(resolver), Some(main)) = (text("resolver")?, text("main")?) else {
                return runtime_error(&ctx, format!("{what}: `resolver` and `main` are required"));
            };
            let sans = match opts.get("sans") {
                None => Vec::new(),
                Some(v) => {
                    let items = v.clone().into_array().or_else(|_| {
                        runtime_error(&ctx, format!("{what}: `sans` must be a list of names"))
                    })?;
                    strings(&ctx, &items, "sans")?
                        .into_iter()
                        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                        .filter(|n| !n.is_empty())
                        .collect()
                }
            };
            let at = c.location(&ctx);
            lock(&c.state).default_generated = Some(DefaultGenerated {
                resolver,
                main,
                sans,
                at,
            });
            Ok(())
        },
    );
    // The certificate for names no other certificate lists (Traefik's
    // `tls.stores.default.defaultCertificate`), instead of the router's self-signed one.
    let c = collector.clone();
    engine.register_fn(
        "tls_default_certificate",
        move |ctx: NativeCallContext, cert: &str, key: &str| -> RhaiResult<()> {
            let pair = cert_pair(&c, &ctx, "tls_default_certificate", cert, key)?;
            lock(&c.state).default_certificate = Some(pair);
            Ok(())
        },
    );
    // Named TLS options (Traefik's `tls.options.NAME`): a route takes them with
    // `.tls(#{ options: NAME })`; `default` serves every other name. The client CA file is read
    // by the router after the build (relative paths from the scripts folder).
    let c = collector.clone();
    engine.register_fn(
        "tls_options",
        move |ctx: NativeCallContext, name: &str, opts: Map| -> RhaiResult<()> {
            c.check_open(&ctx, "tls_options")?;
            let name = name.trim();
            if name.is_empty() || name.contains('@') {
                return runtime_error(
                    &ctx,
                    format!("tls_options: {name:?} is not a name (no provider suffix)"),
                );
            }
            let mut o = crate::tls::TlsOptions::default();
            for (k, v) in &opts {
                let key = k.replace('_', "-");
                if !["min-version", "max-version", "cipher-suites", "alpn", "client-auth", "client-ca", "strict-sni"]
                    .contains(&key.as_str())
                {
                    return runtime_error(
                        &ctx,
                        format!("tls_options: unknown key {k:?} (known: min_version, max_version, cipher_suites, alpn, client_auth, client_ca, strict_sni)"),
                    );
                }
                let text = if v.is_array() {
                    let items = v.clone().into_array().unwrap_or_default();
                    strings(&ctx, &items, k)?.join(",")
                } else {
                    v.to_string()
                };
                o.set(&key, &text)
                    .or_else(|e| runtime_error(&ctx, format!("tls_options({name:?}): {e}")))?;
            }
            o.check()
                .or_else(|e| runtime_error(&ctx, format!("tls_options({name:?}): {e}")))?;
            let at = c.location(&ctx);
            let mut st = lock(&c.state);
            if st.tls_options.iter().any(|(n, _, _)| n == name) {
                drop(st);
                return runtime_error(&ctx, format!("tls_options({name:?}) is declared twice"));
            }
            st.tls_options.push((name.to_string(), o, at));
            Ok(())
        },
    );
    // On-demand certificates: a predicate over the handshake's name (run by the router at a
    // handshake for a name no certificate lists, on the hook runtime of this build).
    for named in [false, true] {
        let (c, h) = (collector.clone(), hooks.clone());
        let declare = move |ctx: &NativeCallContext, resolver: Option<&str>, f: FnPtr| {
            c.check_open(ctx, "on_demand")?;
            let at = c.location(ctx);
            let resolver = match resolver.map(str::trim) {
                Some("") => return runtime_error(ctx, "on_demand: the resolver name is empty"),
                r => r.map(str::to_string),
            };
            lock(&c.state).on_demand.push(OnDemandDecl {
                resolver,
                allow: Arc::new(super::hook::NameCheck(ScriptFn::new(f, h.clone()))),
                at,
            });
            Ok(())
        };
        if named {
            engine.register_fn(
                "on_demand",
                move |ctx: NativeCallContext, resolver: &str, f: FnPtr| -> RhaiResult<()> {
                    declare(&ctx, Some(resolver), f)
                },
            );
        } else {
            engine.register_fn(
                "on_demand",
                move |ctx: NativeCallContext, f: FnPtr| -> RhaiResult<()> {
                    declare(&ctx, None, f)
                },
            );
        }
    }
    engine.register_fn("tls", |r: &mut RouteHandle, on: bool| {
        let mut d = r.decl();
        d.tls = on.then(Default::default);
        d.cleartext = !on;
        drop(d);
        r.clone()
    });
    engine.register_fn(
        "tls",
        |ctx: NativeCallContext, r: &mut RouteHandle, m: Map| -> RhaiResult<RouteHandle> {
            let tls = route_tls(&ctx, &m)?;
            let mut d = r.decl();
            d.tls = Some(tls);
            d.cleartext = false;
            drop(d);
            Ok(r.clone())
        },
    );

    engine.register_fn("rule", |r: &mut RouteHandle, m: Matcher| {
        r.decl().rule = Some(RuleDecl::Native(m));
        r.clone()
    });
    let c = collector.clone();
    engine.register_fn(
        "rule",
        move |ctx: NativeCallContext, r: &mut RouteHandle, text: &str| -> RhaiResult<RouteHandle> {
            if text.trim().is_empty() {
                return runtime_error(&ctx, "empty rule");
            }
            r.decl().rule = Some(RuleDecl::Text {
                text: text.to_string(),
                at: c.location(&ctx),
            });
            Ok(r.clone())
        },
    );
    // Lets a script (the traefik stdlib) reject a bad rule string from a label with a warning
    // instead of failing the whole build when the route is compiled.
    engine.register_fn("check_rule", |text: &str| rule_problem(text, "v3"));
    engine.register_fn("check_rule", |text: &str, syntax: &str| {
        rule_problem(text, syntax)
    });
    engine.register_fn(
        "rule_syntax",
        |ctx: NativeCallContext, r: &mut RouteHandle, s: &str| -> RhaiResult<RouteHandle> {
            let syntax = s
                .parse::<RuleSyntax>()
                .or_else(|e| runtime_error(&ctx, e))?;
            r.decl().syntax = syntax;
            Ok(r.clone())
        },
    );
    engine.register_fn("priority", |r: &mut RouteHandle, p: i64| {
        r.decl().priority = Some(p);
        r.clone()
    });
    // Whether `run --record` takes this route's requests (scope `all`: false opts out; scope
    // `marked`: only routes marked true are recorded).
    engine.register_fn("record", |r: &mut RouteHandle, on: bool| {
        r.decl().record = Some(on);
        r.clone()
    });
    engine.register_fn(
        "entrypoints",
        |ctx: NativeCallContext, r: &mut RouteHandle, eps: Array| -> RhaiResult<RouteHandle> {
            let eps = strings(&ctx, &eps, "entrypoints")?;
            r.decl().entrypoints = Some(eps);
            Ok(r.clone())
        },
    );
    engine.register_fn("to", |r: &mut RouteHandle, s: ServiceHandle| {
        r.decl().target = Some(TargetDecl::Service(s));
        r.clone()
    });
    engine.register_fn("to", |r: &mut RouteHandle, h: Handler| {
        r.decl().target = Some(TargetDecl::Handler(h));
        r.clone()
    });
    let c = collector.clone();
    engine.register_fn(
        "to",
        move |ctx: NativeCallContext, r: &mut RouteHandle, name: &str| {
            r.decl().target = Some(TargetDecl::Named {
                name: name.to_string(),
                at: c.location(&ctx),
            });
            r.clone()
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "to",
        move |ctx: NativeCallContext,
              r: &mut RouteHandle,
              e: CatalogEntry|
              -> RhaiResult<RouteHandle> {
            let svc =
                catalog_service(&c, &e, c.location(&ctx)).or_else(|m| runtime_error(&ctx, m))?;
            r.decl().target = Some(TargetDecl::Service(svc));
            Ok(r.clone())
        },
    );
    engine.register_get("name", |r: &mut RouteHandle| r.decl().name.clone());

    engine.register_fn(
        "servers",
        |ctx: NativeCallContext, s: &mut ServiceHandle, list: Array| -> RhaiResult<ServiceHandle> {
            let servers = list
                .iter()
                .map(server_from_dynamic)
                .collect::<Result<Vec<_>, _>>()
                .or_else(|e| runtime_error(&ctx, e))?;
            s.decl().servers = servers;
            Ok(s.clone())
        },
    );
    engine.register_fn("pass_host_header", |s: &mut ServiceHandle, on: bool| {
        s.decl().pass_host_header = on;
        s.clone()
    });
    engine.register_get("name", |s: &mut ServiceHandle| s.decl().name.clone());

    register_path_middlewares(engine);
    super::mw_api::register(engine, hooks);
    engine.register_type_with_name::<Middleware>("Middleware");
    engine.register_fn("to_string", |m: &mut Middleware| m.describe());
    let h = hooks.clone();
    engine.register_fn("on_request", move |f: FnPtr| {
        Middleware::OnRequest(Arc::new(ScriptRequestHook(ScriptFn::new(f, h.clone()))))
    });
    engine.register_fn(
        "middlewares",
        |ctx: NativeCallContext, r: &mut RouteHandle, list: Array| -> RhaiResult<RouteHandle> {
            let mut chain = Vec::with_capacity(list.len());
            for item in list {
                let t = item.type_name();
                match item.try_cast::<Middleware>() {
                    Some(m) => chain.push(m),
                    None => {
                        return runtime_error(&ctx, format!("middlewares must be middleware values (e.g. on_request(...)), found {t}"))
                    }
                }
            }
            r.decl().middlewares = chain;
            Ok(r.clone())
        },
    );
    let h = hooks.clone();
    engine.register_fn("predicate", move |f: FnPtr| {
        Matcher::Predicate(Arc::new(ScriptPredicate(ScriptFn::new(f, h.clone()))))
    });
}

/// "" when `text` parses as a Traefik rule in `syntax`, else why not.
fn rule_problem(text: &str, syntax: &str) -> String {
    match syntax.parse::<RuleSyntax>() {
        Err(e) => e,
        Ok(_) if text.trim().is_empty() => "empty rule".to_string(),
        Ok(syntax) => crate::routing::parse_rule(text, syntax)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    }
}

fn redirect(ctx: &NativeCallContext, url: &str, permanent: bool) -> RhaiResult<Handler> {
    if url.is_empty() || http::HeaderValue::from_str(url).is_err() {
        return runtime_error(ctx, format!("invalid redirect location {url:?}"));
    }
    Ok(Handler::Redirect {
        location: url.to_string(),
        permanent,
    })
}

fn path_arg(ctx: &NativeCallContext, what: &str, p: &str) -> RhaiResult<String> {
    if !p.starts_with('/') {
        return runtime_error(ctx, format!("{what} {p:?} must start with /"));
    }
    Ok(p.to_string())
}

fn patterns(ctx: &NativeCallContext, list: Array) -> RhaiResult<Vec<Pattern>> {
    let sources = strings(ctx, &list, "regexes")?;
    sources
        .iter()
        .map(|re| Pattern::new(re).or_else(|e| runtime_error(ctx, e)))
        .collect()
}

/// Registers the native path middlewares (Traefik's stripPrefix, stripPrefixRegex, addPrefix,
/// replacePath, replacePathRegex).
fn register_path_middlewares(engine: &mut Engine) {
    engine.register_fn(
        "strip_prefix",
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Middleware> {
            Ok(Middleware::StripPrefix(vec![path_arg(&ctx, "prefix", p)?]))
        },
    );
    engine.register_fn(
        "strip_prefix",
        |ctx: NativeCallContext, list: Array| -> RhaiResult<Middleware> {
            let prefixes = strings(&ctx, &list, "prefixes")?;
            let prefixes = prefixes
                .iter()
                .map(|p| path_arg(&ctx, "prefix", p))
                .collect::<RhaiResult<Vec<_>>>()?;
            Ok(Middleware::StripPrefix(prefixes))
        },
    );
    engine.register_fn(
        "strip_prefix_regex",
        |ctx: NativeCallContext, re: &str| -> RhaiResult<Middleware> {
            Ok(Middleware::StripPrefixRegex(patterns(
                &ctx,
                vec![Dynamic::from(re.to_string())],
            )?))
        },
    );
    engine.register_fn(
        "strip_prefix_regex",
        |ctx: NativeCallContext, list: Array| -> RhaiResult<Middleware> {
            Ok(Middleware::StripPrefixRegex(patterns(&ctx, list)?))
        },
    );
    engine.register_fn(
        "add_prefix",
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Middleware> {
            Ok(Middleware::AddPrefix(path_arg(&ctx, "prefix", p)?))
        },
    );
    engine.register_fn(
        "replace_path",
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Middleware> {
            Ok(Middleware::ReplacePath(path_arg(&ctx, "path", p)?))
        },
    );
    engine.register_fn(
        "replace_path_regex",
        |ctx: NativeCallContext, re: &str, replacement: &str| -> RhaiResult<Middleware> {
            let p = Pattern::new(re).or_else(|e| runtime_error(&ctx, e))?;
            Ok(Middleware::ReplacePathRegex(p, replacement.to_string()))
        },
    );
}

fn respond(ctx: &NativeCallContext, status: i64, body: &str, headers: Map) -> RhaiResult<Handler> {
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .map_or_else(
            || runtime_error(ctx, format!("status {status} is not in 200..=599")),
            Ok,
        )?;
    let mut list = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value.into_immutable_string().or_else(|t| {
            runtime_error(
                ctx,
                format!("header {name}: value must be a string, not {t}"),
            )
        })?;
        if HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(&value).is_err()
        {
            return runtime_error(ctx, format!("invalid response header {name}: {value:?}"));
        }
        list.push((name.to_string(), value.to_string()));
    }
    Ok(Handler::Respond {
        status,
        body: body.to_string(),
        headers: list,
    })
}

/// Registers the handlers (`respond`, `redirect`): targets at build time, direct answers in hooks.
pub fn register_handlers(engine: &mut Engine) {
    engine.register_type_with_name::<Handler>("Handler");
    engine.register_fn(
        "respond",
        |ctx: NativeCallContext, status: i64, body: &str| -> RhaiResult<Handler> {
            respond(&ctx, status, body, Map::new())
        },
    );
    engine.register_fn(
        "respond",
        |ctx: NativeCallContext, status: i64, body: &str, headers: Map| -> RhaiResult<Handler> {
            respond(&ctx, status, body, headers)
        },
    );
    engine.register_fn("redirect", |ctx: NativeCallContext, url: &str| {
        redirect(&ctx, url, false)
    });
    engine.register_fn(
        "redirect",
        |ctx: NativeCallContext, url: &str, permanent: bool| redirect(&ctx, url, permanent),
    );
}

/// Registers `CatalogEntry` so scripts can read discovered services.
pub fn register_catalog(engine: &mut Engine) {
    engine.register_type_with_name::<CatalogEntry>("CatalogEntry");
    engine.register_get("name", |e: &mut CatalogEntry| e.name.clone());
    engine.register_get("provider", |e: &mut CatalogEntry| e.provider.clone());
    engine.register_get("labels", |e: &mut CatalogEntry| {
        e.labels
            .iter()
            .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
            .collect::<Map>()
    });
    engine.register_get("servers", |e: &mut CatalogEntry| {
        e.servers
            .iter()
            .map(|s| Dynamic::from(s.clone()))
            .collect::<Array>()
    });
    engine.register_fn("label", |e: &mut CatalogEntry, key: &str| {
        e.labels.get(key).cloned().unwrap_or_default()
    });
    engine.register_fn("has_label", |e: &mut CatalogEntry, key: &str| {
        e.labels.contains_key(key)
    });
    engine.register_fn("to_string", |e: &mut CatalogEntry| {
        format!("CatalogEntry({})", e.name)
    });
    register_container_detail(engine);
}

/// Getters for provider detail; "" / empty when the entry has none (e.g. from a catalog file).
fn register_container_detail(engine: &mut Engine) {
    fn text(
        e: &CatalogEntry,
        f: impl Fn(&crate::catalog::ContainerDetail) -> Option<String>,
    ) -> String {
        e.container.as_ref().and_then(f).unwrap_or_default()
    }
    engine.register_get("container_id", |e: &mut CatalogEntry| {
        text(e, |c| Some(c.id.clone()))
    });
    engine.register_get("container_name", |e: &mut CatalogEntry| {
        text(e, |c| Some(c.name.clone()))
    });
    engine.register_get("compose_project", |e: &mut CatalogEntry| {
        text(e, |c| c.compose_project.clone())
    });
    engine.register_get("compose_service", |e: &mut CatalogEntry| {
        text(e, |c| c.compose_service.clone())
    });
    engine.register_get("state", |e: &mut CatalogEntry| {
        text(e, |c| Some(c.state.clone()))
    });
    engine.register_get("health", |e: &mut CatalogEntry| {
        text(e, |c| c.health.clone())
    });
    engine.register_get("network_mode", |e: &mut CatalogEntry| {
        text(e, |c| Some(c.network_mode.clone()))
    });
    engine.register_get("address", |e: &mut CatalogEntry| {
        text(e, |c| c.address.clone())
    });
    engine.register_get("networks", |e: &mut CatalogEntry| {
        e.container
            .as_ref()
            .map(|c| {
                c.networks
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                    .collect::<Map>()
            })
            .unwrap_or_default()
    });
    engine.register_get("ports", |e: &mut CatalogEntry| {
        e.container
            .as_ref()
            .map(|c| {
                c.ports
                    .iter()
                    .map(|p| Dynamic::from(i64::from(*p)))
                    .collect::<Array>()
            })
            .unwrap_or_default()
    });
    engine.register_get("service_id", |e: &mut CatalogEntry| {
        text(e, |c| c.service_id.clone())
    });
    engine.register_get("node", |e: &mut CatalogEntry| text(e, |c| c.node.clone()));
    // 0 when there is no slot (global services, a service VIP entry, Docker containers).
    engine.register_get("task_slot", |e: &mut CatalogEntry| {
        e.container
            .as_ref()
            .and_then(|c| c.task_slot)
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(0)
    });
}

/// A stable 63-bit FNV-1a hash of a string, for scripts that shard by key.
pub fn stable_hash(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// `.tls(#{ options: "name", resolver: "le", domains: [#{ main: "a.com", sans: ["*.a.com"] }] })`
/// (`certresolver` and `cert_resolver` are accepted for `resolver`).
fn route_tls(ctx: &NativeCallContext, m: &Map) -> RhaiResult<crate::routing::RouteTls> {
    let mut tls = crate::routing::RouteTls::default();
    let text = |v: &Dynamic, what: &str| -> RhaiResult<String> {
        v.clone()
            .into_string()
            .or_else(|t| runtime_error(ctx, format!("tls {what} must be a string, not {t}")))
    };
    for (k, v) in m {
        match k.as_str() {
            "options" => tls.options = Some(text(v, "options")?),
            "resolver" | "certresolver" | "cert_resolver" => {
                tls.resolver = Some(text(v, "resolver")?)
            }
            "domains" => {
                let Some(list) = v.clone().try_cast::<Array>() else {
                    return runtime_error(ctx, "tls domains must be an array of #{ main, sans }");
                };
                for d in list {
                    let Some(d) = d.try_cast::<Map>() else {
                        return runtime_error(
                            ctx,
                            "tls domains must be an array of #{ main, sans }",
                        );
                    };
                    let main = match d.get("main") {
                        Some(v) => text(v, "domains main")?,
                        None => return runtime_error(ctx, "a tls domain needs main"),
                    };
                    let sans = match d.get("sans") {
                        Some(v) => match v.clone().try_cast::<Array>() {
                            Some(a) => strings(ctx, &a, "tls domain sans")?,
                            None => text(v, "domains sans")?
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect(),
                        },
                        None => Vec::new(),
                    };
                    tls.domains.push(crate::routing::TlsDomain { main, sans });
                }
            }
            other => {
                return runtime_error(
                    ctx,
                    format!("unknown tls key {other:?} (known: options, resolver, domains)"),
                )
            }
        }
    }
    Ok(tls)
}

/// The files of a `tls_certificate`-like call and where it was made.
fn cert_pair(
    c: &Collector,
    ctx: &NativeCallContext,
    what: &str,
    cert: &str,
    key: &str,
) -> RhaiResult<(crate::tls::CertFiles, Location)> {
    c.check_open(ctx, what)?;
    if cert.trim().is_empty() || key.trim().is_empty() {
        return runtime_error(ctx, format!("{what}(cert_file, key_file) needs both files"));
    }
    let files = crate::tls::CertFiles {
        cert: cert.trim().into(),
        key: key.trim().into(),
    };
    Ok((files, c.location(ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server_address("127.0.0.1:80").unwrap().as_str(),
            "127.0.0.1:80"
        );
        assert_eq!(
            parse_server_address("http://app:8080/").unwrap().as_str(),
            "app:8080"
        );
        assert!(parse_server_address("app")
            .unwrap_err()
            .contains("missing port"));
        assert!(parse_server_address("127.0.0.1:99999")
            .unwrap_err()
            .contains("port 99999 is out of range"));
        assert!(parse_server_address("127.0.0.1:0")
            .unwrap_err()
            .contains("port 0"));
        assert!(parse_server_address("https://a:1")
            .unwrap_err()
            .contains("https"));
        assert!(parse_server_address("http://a:1/x")
            .unwrap_err()
            .contains("no path"));
    }

    #[test]
    fn server_urls_name_their_scheme() {
        let url = |s: &str| parse_server_url(s).map(|(a, sc)| (a.to_string(), sc));
        assert_eq!(
            url("10.0.0.1:80").unwrap(),
            ("10.0.0.1:80".into(), Scheme::Http)
        );
        assert_eq!(
            url("http://a:8080/").unwrap(),
            ("a:8080".into(), Scheme::Http)
        );
        assert_eq!(
            url("https://api.internal:8443").unwrap(),
            ("api.internal:8443".into(), Scheme::Https)
        );
        assert_eq!(url("HTTPS://a:443").unwrap().1, Scheme::Https);
        assert_eq!(
            url("h2c://127.0.0.1:50051").unwrap(),
            ("127.0.0.1:50051".into(), Scheme::H2c)
        );
        assert!(url("ftp://a:21").unwrap_err().contains("unknown scheme"));
        assert!(url("https://a").unwrap_err().contains("missing port"));
        assert!(url("h2c://a:1/x").unwrap_err().contains("no path"));
    }
}
