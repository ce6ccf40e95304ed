//! The script API of TCP and UDP routing: `tcp_route`, `tcp_service`, `udp_route`,
//! `udp_service`, `in_flight_conn`, and the compilation of their declarations into
//! `routing::l4::L4Table`.
//!
//! Builders only record (with the file:line:col of the call); `compile` validates after every
//! script ran: rules parse (`routing::parse_tcp_rule`), services exist, entrypoints exist and
//! carry the right protocol (TCP routes on TCP entrypoints, UDP routes on UDP ones), names are
//! unique, one UDP route per entrypoint. Server state carries over from the previous table for a
//! service that keeps its name and exact server list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use super::api::{lock, runtime_error, strings, Collector};
use super::error::ScriptError;
use crate::middleware::Middleware;
use crate::routing::l4::{
    InFlightConn, L4Pool, L4Server, L4Table, TcpHealth, TcpMiddleware, TcpRoute, TcpService,
    TcpTls, UdpRoute, UdpService,
};
use crate::routing::{Location, RuleSyntax, TlsDomain};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A target named or given as a handle.
#[derive(Debug, Clone)]
pub enum L4Target<H> {
    Handle(H),
    Named { name: String, at: Location },
}

#[derive(Debug, Clone)]
pub struct TcpRouteDecl {
    pub name: String,
    pub at: Location,
    pub rule: Option<(String, Location)>,
    pub syntax: RuleSyntax,
    pub priority: Option<i64>,
    pub entrypoints: Option<Vec<String>>,
    pub tls: Option<TcpTls>,
    pub middlewares: Vec<TcpMiddleware>,
    pub target: Option<L4Target<TcpServiceHandle>>,
}

#[derive(Debug, Clone)]
pub struct TcpServiceDecl {
    pub name: String,
    pub at: Location,
    pub servers: Vec<L4Server>,
    pub proxy_protocol: Option<u8>,
    pub health: Option<TcpHealth>,
}

#[derive(Debug, Clone)]
pub struct UdpRouteDecl {
    pub name: String,
    pub at: Location,
    pub entrypoints: Option<Vec<String>>,
    pub target: Option<L4Target<UdpServiceHandle>>,
}

#[derive(Debug, Clone)]
pub struct UdpServiceDecl {
    pub name: String,
    pub at: Location,
    pub servers: Vec<L4Server>,
}

macro_rules! handle {
    ($name:ident, $decl:ty) => {
        #[derive(Debug, Clone)]
        pub struct $name(pub Arc<Mutex<$decl>>);
        impl $name {
            pub fn decl(&self) -> MutexGuard<'_, $decl> {
                lock(&self.0)
            }
        }
    };
}
handle!(TcpRouteHandle, TcpRouteDecl);
handle!(TcpServiceHandle, TcpServiceDecl);
handle!(UdpRouteHandle, UdpRouteDecl);
handle!(UdpServiceHandle, UdpServiceDecl);

/// Every TCP/UDP declaration of one build.
#[derive(Debug, Default)]
pub struct L4Decls {
    pub tcp_routes: Vec<TcpRouteHandle>,
    pub tcp_services: Vec<TcpServiceHandle>,
    pub udp_routes: Vec<UdpRouteHandle>,
    pub udp_services: Vec<UdpServiceHandle>,
}

/// `"127.0.0.1:5432"` or `#{ address: "db:5432", weight: 2 }`.
fn l4_server(ctx: &NativeCallContext, v: &Dynamic) -> RhaiResult<L4Server> {
    let (address, weight) = if let Some(map) = v.read_lock::<Map>() {
        if let Some(k) = map
            .keys()
            .find(|k| !["address", "weight"].contains(&k.as_str()))
        {
            return runtime_error(ctx, format!("server: unknown key {k:?} (address, weight)"));
        }
        let Some(address) = map
            .get("address")
            .and_then(|a| a.clone().into_immutable_string().ok())
        else {
            return runtime_error(ctx, "server: `address` (host:port) is required");
        };
        let weight = match map.get("weight") {
            None => 1,
            Some(w) => match w.as_int().ok().and_then(|w| u32::try_from(w).ok()) {
                Some(w) => w,
                None => return runtime_error(ctx, "server: `weight` must be a number from 0"),
            },
        };
        (address.to_string(), weight)
    } else {
        match v.clone().into_immutable_string() {
            Ok(s) => (s.to_string(), 1),
            Err(t) => {
                return runtime_error(
                    ctx,
                    format!("servers must be \"host:port\" strings or #{{ address, weight }} maps, found {t}"),
                )
            }
        }
    };
    check_address(&address).or_else(|e| runtime_error(ctx, e))?;
    Ok(L4Server { address, weight })
}

/// `host:port` with a port in 1..=65535 (an IPv6 address in brackets).
pub fn check_address(address: &str) -> Result<(), String> {
    let address = address.trim();
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "server {address:?}: write host:port, e.g. 127.0.0.1:5432"
        ));
    };
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(format!(
            "server {address:?}: write host:port (IPv6 in brackets: [::1]:5432)"
        ));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        Ok(p) => Err(format!(
            "server {address:?}: port {p} is out of range (1-65535)"
        )),
        Err(_) => Err(format!("server {address:?}: {port:?} is not a port number")),
    }
}

fn servers(ctx: &NativeCallContext, list: &Array) -> RhaiResult<Vec<L4Server>> {
    if list.is_empty() {
        return runtime_error(ctx, "servers: the list is empty");
    }
    list.iter().map(|v| l4_server(ctx, v)).collect()
}

fn duration(ctx: &NativeCallContext, v: &Dynamic, what: &str) -> RhaiResult<Duration> {
    let text = v
        .clone()
        .into_immutable_string()
        .or_else(|_| runtime_error(ctx, format!("{what} must be a duration such as \"5s\"")))?;
    crate::duration::parse(&text, crate::duration::Syntax::Standard)
        .or_else(|e| runtime_error(ctx, format!("{what}: {e}")))
}

fn net_of(entry: &str) -> Option<IpNet> {
    let t = entry.trim();
    IpNet::from_str(t)
        .ok()
        .or_else(|| IpAddr::from_str(t).ok().map(IpNet::from))
        .map(|n| match n {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map(IpNet::V4)
                    .unwrap_or(n),
                None => n,
            },
            n => n,
        })
}

/// A middleware a TCP route can run: `in_flight_conn(n)`, or the HTTP `ip_allow_list(...)`.
fn tcp_middleware(ctx: &NativeCallContext, v: &Dynamic) -> RhaiResult<TcpMiddleware> {
    if let Some(m) = v.read_lock::<TcpMiddleware>() {
        return Ok(m.clone());
    }
    if let Some(m) = v.read_lock::<Middleware>() {
        if let Middleware::IpAllowList(l) = &*m {
            let nets: Vec<IpNet> = l.entries().iter().filter_map(|e| net_of(e)).collect();
            return Ok(TcpMiddleware::AllowList(nets));
        }
        return runtime_error(
            ctx,
            format!(
                "{} is an HTTP middleware; a TCP route takes ip_allow_list(...) and in_flight_conn(n)",
                m.describe()
            ),
        );
    }
    runtime_error(
        ctx,
        format!(
            "a TCP route's middlewares are ip_allow_list(...) and in_flight_conn(n), found {}",
            v.type_name()
        ),
    )
}

fn tls_decl(ctx: &NativeCallContext, opts: &Map) -> RhaiResult<TcpTls> {
    const KEYS: [&str; 4] = ["passthrough", "options", "resolver", "domains"];
    if let Some(k) = opts.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return runtime_error(
            ctx,
            format!("tls: unknown key {k:?} (known: {})", KEYS.join(", ")),
        );
    }
    let text = |k: &str| -> RhaiResult<Option<String>> {
        match opts.get(k) {
            None => Ok(None),
            Some(v) => match v.clone().into_immutable_string() {
                Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                _ => runtime_error(ctx, format!("tls: `{k}` must be a non-empty string")),
            },
        }
    };
    let passthrough = match opts.get("passthrough") {
        None => false,
        Some(v) => v
            .as_bool()
            .or_else(|_| runtime_error(ctx, "tls: `passthrough` must be true or false"))?,
    };
    let options = text("options")?;
    let resolver = text("resolver")?;
    let mut domains = Vec::new();
    if let Some(v) = opts.get("domains") {
        let list = v
            .clone()
            .into_array()
            .or_else(|_| runtime_error(ctx, "tls: `domains` must be a list of #{ main, sans }"))?;
        for d in list {
            let Some(m) = d.read_lock::<Map>() else {
                return runtime_error(ctx, "tls: `domains` must be a list of #{ main, sans }");
            };
            let main = m
                .get("main")
                .and_then(|v| v.clone().into_immutable_string().ok())
                .map(|s| s.trim().to_ascii_lowercase())
                .unwrap_or_default();
            let sans = match m.get("sans").and_then(|v| v.clone().into_array().ok()) {
                Some(a) => strings(ctx, &a, "tls domains sans")?,
                None => Vec::new(),
            };
            domains.push(TlsDomain { main, sans });
        }
    }
    if passthrough {
        if options.is_some() || resolver.is_some() || !domains.is_empty() {
            return runtime_error(
                ctx,
                "tls: passthrough sends the TLS bytes to the server as they came; options, resolver and domains do not apply",
            );
        }
        return Ok(TcpTls::Passthrough);
    }
    Ok(TcpTls::Terminate {
        options,
        resolver,
        domains,
    })
}

/// Where a `tcp_route(name)`-style call declares something, once the build is open and the name
/// is not empty.
fn declared(
    c: &Collector,
    ctx: &NativeCallContext,
    what: &str,
    kind: &str,
    name: &str,
) -> RhaiResult<Location> {
    c.check_open(ctx, what)?;
    if name.trim().is_empty() {
        return runtime_error(ctx, format!("a {kind} needs a non-empty name"));
    }
    Ok(c.location(ctx))
}

pub fn register(engine: &mut Engine, collector: &Arc<Collector>) {
    engine.register_type_with_name::<TcpRouteHandle>("TcpRoute");
    engine.register_type_with_name::<TcpServiceHandle>("TcpService");
    engine.register_type_with_name::<UdpRouteHandle>("UdpRoute");
    engine.register_type_with_name::<UdpServiceHandle>("UdpService");
    engine.register_type_with_name::<TcpMiddleware>("TcpMiddleware");
    engine.register_fn("to_string", |m: &mut TcpMiddleware| m.describe());

    let c = collector.clone();
    engine.register_fn(
        "tcp_route",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<TcpRouteHandle> {
            let at = declared(&c, &ctx, "tcp_route", "TCP route", name)?;
            let h = TcpRouteHandle(Arc::new(Mutex::new(TcpRouteDecl {
                name: name.to_string(),
                at,
                rule: None,
                syntax: RuleSyntax::V3,
                priority: None,
                entrypoints: None,
                tls: None,
                middlewares: Vec::new(),
                target: None,
            })));
            c.with_l4(|d| d.tcp_routes.push(h.clone()));
            Ok(h)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "tcp_service",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<TcpServiceHandle> {
            let at = declared(&c, &ctx, "tcp_service", "TCP service", name)?;
            let h = TcpServiceHandle(Arc::new(Mutex::new(TcpServiceDecl {
                name: name.to_string(),
                at,
                servers: Vec::new(),
                proxy_protocol: None,
                health: None,
            })));
            c.with_l4(|d| d.tcp_services.push(h.clone()));
            Ok(h)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "udp_route",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<UdpRouteHandle> {
            let at = declared(&c, &ctx, "udp_route", "UDP route", name)?;
            let h = UdpRouteHandle(Arc::new(Mutex::new(UdpRouteDecl {
                name: name.to_string(),
                at,
                entrypoints: None,
                target: None,
            })));
            c.with_l4(|d| d.udp_routes.push(h.clone()));
            Ok(h)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "udp_service",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<UdpServiceHandle> {
            let at = declared(&c, &ctx, "udp_service", "UDP service", name)?;
            let h = UdpServiceHandle(Arc::new(Mutex::new(UdpServiceDecl {
                name: name.to_string(),
                at,
                servers: Vec::new(),
            })));
            c.with_l4(|d| d.udp_services.push(h.clone()));
            Ok(h)
        },
    );
    // `""` when a TCP rule is fine for a route with or without TLS, else why not (for label
    // translations that skip a bad router instead of failing the build).
    engine.register_fn(
        "check_tcp_rule",
        |text: &str, syntax: &str, tls: bool| -> String {
            let syntax = match RuleSyntax::from_str(syntax) {
                Ok(s) => s,
                Err(e) => return e,
            };
            match crate::routing::parse_tcp_rule(text, syntax) {
                Err(e) => e.to_string(),
                Ok(m) if !tls && rule_needs_tls(&m) => "a route without TLS only sees cleartext \
                     connections, which have no SNI or ALPN; use HostSNI(`*`) (with ClientIP) or \
                     add tls"
                    .to_string(),
                Ok(_) => String::new(),
            }
        },
    );
    engine.register_fn(
        "in_flight_conn",
        |ctx: NativeCallContext, n: i64| -> RhaiResult<TcpMiddleware> {
            match u32::try_from(n) {
                Ok(n) if n > 0 => Ok(TcpMiddleware::InFlightConn(Arc::new(InFlightConn::new(n)))),
                _ => runtime_error(
                    &ctx,
                    format!("in_flight_conn takes a number above 0, got {n}"),
                ),
            }
        },
    );

    // TCP route builders.
    let c = collector.clone();
    engine.register_fn(
        "rule",
        move |ctx: NativeCallContext, r: &mut TcpRouteHandle, text: &str| {
            r.decl().rule = Some((text.to_string(), c.location(&ctx)));
            r.clone()
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "rule",
        move |ctx: NativeCallContext,
              r: &mut TcpRouteHandle,
              text: &str,
              syntax: &str|
              -> RhaiResult<TcpRouteHandle> {
            let syntax = RuleSyntax::from_str(syntax).or_else(|e| runtime_error(&ctx, e))?;
            let mut d = r.decl();
            d.rule = Some((text.to_string(), c.location(&ctx)));
            d.syntax = syntax;
            drop(d);
            Ok(r.clone())
        },
    );
    engine.register_fn("priority", |r: &mut TcpRouteHandle, p: i64| {
        r.decl().priority = Some(p);
        r.clone()
    });
    engine.register_fn("tls", |r: &mut TcpRouteHandle, on: bool| {
        r.decl().tls = on.then_some(TcpTls::Terminate {
            options: None,
            resolver: None,
            domains: Vec::new(),
        });
        r.clone()
    });
    engine.register_fn(
        "tls",
        |ctx: NativeCallContext, r: &mut TcpRouteHandle, opts: Map| -> RhaiResult<TcpRouteHandle> {
            let tls = tls_decl(&ctx, &opts)?;
            r.decl().tls = Some(tls);
            Ok(r.clone())
        },
    );
    engine.register_fn(
        "middlewares",
        |ctx: NativeCallContext,
         r: &mut TcpRouteHandle,
         list: Array|
         -> RhaiResult<TcpRouteHandle> {
            let mws = list
                .iter()
                .map(|v| tcp_middleware(&ctx, v))
                .collect::<RhaiResult<Vec<_>>>()?;
            r.decl().middlewares = mws;
            Ok(r.clone())
        },
    );

    // TCP service builders.
    engine.register_fn(
        "proxy_protocol",
        |ctx: NativeCallContext,
         s: &mut TcpServiceHandle,
         v: i64|
         -> RhaiResult<TcpServiceHandle> {
            if !(v == 1 || v == 2) {
                return runtime_error(
                    &ctx,
                    format!("proxy_protocol takes version 1 or 2, got {v}"),
                );
            }
            s.decl().proxy_protocol = u8::try_from(v).ok();
            Ok(s.clone())
        },
    );
    engine.register_fn(
        "health",
        |ctx: NativeCallContext,
         s: &mut TcpServiceHandle,
         opts: Map|
         -> RhaiResult<TcpServiceHandle> {
            if let Some(k) = opts
                .keys()
                .find(|k| !["interval", "timeout"].contains(&k.as_str()))
            {
                return runtime_error(
                    &ctx,
                    format!("health: unknown key {k:?} (interval, timeout)"),
                );
            }
            let interval = match opts.get("interval") {
                Some(v) => duration(&ctx, v, "health interval")?,
                None => Duration::from_secs(30),
            };
            let timeout = match opts.get("timeout") {
                Some(v) => duration(&ctx, v, "health timeout")?,
                None => Duration::from_secs(5),
            };
            if interval.is_zero() || timeout.is_zero() {
                return runtime_error(&ctx, "health: interval and timeout must be above 0");
            }
            s.decl().health = Some(TcpHealth { interval, timeout });
            Ok(s.clone())
        },
    );

    // What TCP and UDP routes and services share.
    register_common::<TcpRouteHandle, TcpServiceHandle>(engine, collector);
    register_common::<UdpRouteHandle, UdpServiceHandle>(engine, collector);
}

/// A TCP or UDP route handle: what the shared builders set.
trait L4RouteHandle: Clone + Send + Sync + 'static {
    type Service: Clone + Send + Sync + 'static;
    fn set_entrypoints(&self, eps: Vec<String>);
    fn set_target(&self, target: L4Target<Self::Service>);
    fn name(&self) -> String;
}

/// A TCP or UDP service handle: what the shared builders set.
trait L4ServiceHandle: Clone + Send + Sync + 'static {
    fn set_servers(&self, servers: Vec<L4Server>);
    fn name(&self) -> String;
}

macro_rules! l4_handles {
    ($route:ty, $service:ty) => {
        impl L4RouteHandle for $route {
            type Service = $service;
            fn set_entrypoints(&self, eps: Vec<String>) {
                self.decl().entrypoints = Some(eps);
            }
            fn set_target(&self, target: L4Target<$service>) {
                self.decl().target = Some(target);
            }
            fn name(&self) -> String {
                self.decl().name.clone()
            }
        }
        impl L4ServiceHandle for $service {
            fn set_servers(&self, servers: Vec<L4Server>) {
                self.decl().servers = servers;
            }
            fn name(&self) -> String {
                self.decl().name.clone()
            }
        }
    };
}
l4_handles!(TcpRouteHandle, TcpServiceHandle);
l4_handles!(UdpRouteHandle, UdpServiceHandle);

/// `.entrypoints([...])`, `.to(service)`, `.to("name")`, `.name` of routes and `.servers([...])`,
/// `.name` of services.
fn register_common<R, S>(engine: &mut Engine, collector: &Arc<Collector>)
where
    R: L4RouteHandle<Service = S>,
    S: L4ServiceHandle,
{
    engine.register_fn(
        "entrypoints",
        |ctx: NativeCallContext, r: &mut R, eps: Array| -> RhaiResult<R> {
            r.set_entrypoints(strings(&ctx, &eps, "entrypoints")?);
            Ok(r.clone())
        },
    );
    engine.register_fn("to", |r: &mut R, s: S| {
        r.set_target(L4Target::Handle(s));
        r.clone()
    });
    let c = collector.clone();
    engine.register_fn(
        "to",
        move |ctx: NativeCallContext, r: &mut R, name: &str| {
            r.set_target(L4Target::Named {
                name: name.to_string(),
                at: c.location(&ctx),
            });
            r.clone()
        },
    );
    engine.register_get("name", |r: &mut R| L4RouteHandle::name(r));
    engine.register_fn(
        "servers",
        |ctx: NativeCallContext, s: &mut S, list: Array| -> RhaiResult<S> {
            s.set_servers(servers(&ctx, &list)?);
            Ok(s.clone())
        },
    );
    engine.register_get("name", |s: &mut S| L4ServiceHandle::name(s));
}

/// What `compile` needs to know of the entrypoints.
pub struct L4Env<'a> {
    pub entrypoints: &'a [String],
    pub udp: &'a [String],
}

/// A service's pool, when its declaration holds up: a name not declared before (`first`: where
/// it was) and some servers. Server states carry over from `previous` for the same servers.
fn checked_pool(
    kind: &str,
    name: &str,
    at: &Location,
    servers: Vec<L4Server>,
    first: Option<&Location>,
    previous: Option<&L4Pool>,
    errors: &mut Vec<ScriptError>,
) -> Option<L4Pool> {
    if let Some(first) = first {
        errors.push(ScriptError::at(
            at,
            format!("{kind} service {name:?} is already declared at {first}"),
        ));
        return None;
    }
    if servers.is_empty() {
        errors.push(ScriptError::at(
            at,
            format!("{kind} service {name:?} has no servers (.servers([...]))"),
        ));
        return None;
    }
    Some(L4Pool::new(servers, previous))
}

/// The service a route sends to: its handle's, or the one its name names.
#[allow(clippy::too_many_arguments)]
fn target_of<H, D>(
    kind: &str,
    route: &str,
    at: &Location,
    target: &Option<L4Target<H>>,
    by_name: &HashMap<String, Arc<D>>,
    by_handle: &HashMap<usize, Arc<D>>,
    key: impl Fn(&H) -> usize,
    errors: &mut Vec<ScriptError>,
) -> Option<Arc<D>> {
    let found = match target {
        None => None,
        Some(L4Target::Handle(h)) => by_handle.get(&key(h)),
        Some(L4Target::Named { name, at: named_at }) => match by_name.get(name) {
            Some(d) => Some(d),
            None => {
                errors.push(ScriptError::at(
                    named_at,
                    format!("{kind} route {route:?} targets unknown {kind} service {name:?}"),
                ));
                return None;
            }
        },
    };
    if found.is_none() {
        let lower = kind.to_ascii_lowercase();
        errors.push(ScriptError::at(
            at,
            format!("{kind} route {route:?} has no target (.to({lower}_service(...)))"),
        ));
    }
    found.cloned()
}

/// Validates and compiles the TCP/UDP declarations.
pub fn compile(
    decls: L4Decls,
    env: &L4Env<'_>,
    previous: Option<&L4Table>,
) -> Result<L4Table, Vec<ScriptError>> {
    let mut errors = Vec::new();
    let tcp_eps: Vec<&String> = env
        .entrypoints
        .iter()
        .filter(|e| !env.udp.contains(e))
        .collect();

    // TCP services, by name and by handle.
    let mut tcp_by_name: HashMap<String, Arc<TcpService>> = HashMap::new();
    let mut tcp_by_handle: HashMap<usize, Arc<TcpService>> = HashMap::new();
    for h in &decls.tcp_services {
        let d = h.decl().clone();
        let first = tcp_by_name.get(&d.name).map(|f| &f.declared_at);
        let old = previous
            .and_then(|p| p.tcp_service(&d.name))
            .map(|o| &o.pool);
        let Some(pool) = checked_pool("TCP", &d.name, &d.at, d.servers, first, old, &mut errors)
        else {
            continue;
        };
        let svc = Arc::new(TcpService {
            pool,
            name: d.name.clone(),
            proxy_protocol: d.proxy_protocol,
            health: d.health,
            declared_at: d.at,
        });
        tcp_by_handle.insert(Arc::as_ptr(&h.0) as usize, svc.clone());
        tcp_by_name.insert(d.name, svc);
    }

    let mut tcp = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for h in &decls.tcp_routes {
        let d = h.decl().clone();
        if let Some(first) = seen.get(&d.name) {
            errors.push(ScriptError::at(
                &d.at,
                format!("TCP route {:?} is already declared at {first}", d.name),
            ));
            continue;
        }
        seen.insert(d.name.clone(), d.at.clone());
        let Some((text, rule_at)) = d.rule.clone() else {
            errors.push(ScriptError::at(
                &d.at,
                format!(
                    "TCP route {:?} has no rule (e.g. .rule(\"HostSNI(`*`)\"))",
                    d.name
                ),
            ));
            continue;
        };
        let rule = match crate::routing::parse_tcp_rule(&text, d.syntax) {
            Ok(r) => r,
            Err(e) => {
                errors.push(ScriptError::at(
                    &rule_at,
                    format!("TCP route {:?}: {e}", d.name),
                ));
                continue;
            }
        };
        let key = |h: &TcpServiceHandle| Arc::as_ptr(&h.0) as usize;
        let (names, handles) = (&tcp_by_name, &tcp_by_handle);
        let Some(service) = target_of(
            "TCP",
            &d.name,
            &d.at,
            &d.target,
            names,
            handles,
            key,
            &mut errors,
        ) else {
            continue;
        };
        let eps = d.entrypoints.clone().unwrap_or_default();
        if let Some(bad) = eps.iter().find(|e| !tcp_eps.contains(e)) {
            let why = if env.udp.contains(bad) {
                "is a UDP entrypoint"
            } else {
                "is not an entrypoint"
            };
            errors.push(ScriptError::at(
                &d.at,
                format!(
                    "TCP route {:?}: {bad:?} {why} (TCP entrypoints: {})",
                    d.name,
                    tcp_eps
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            continue;
        }
        if d.tls.is_none() && rule_needs_tls(&rule) {
            errors.push(ScriptError::at(
                &rule_at,
                format!(
                    "TCP route {:?}: a route without TLS only sees cleartext connections, which have no SNI or ALPN; use HostSNI(`*`) (with ClientIP) or add .tls(...)",
                    d.name
                ),
            ));
            continue;
        }
        let priority = d
            .priority
            .unwrap_or_else(|| i64::try_from(text.len()).unwrap_or(i64::MAX));
        tcp.push(TcpRoute {
            name: d.name,
            rule_text: text,
            rule,
            priority,
            entrypoints: eps,
            tls: d.tls,
            middlewares: d.middlewares,
            service,
            declared_at: d.at,
            metrics: Default::default(),
        });
    }

    // UDP.
    let mut udp_by_name: HashMap<String, Arc<UdpService>> = HashMap::new();
    let mut udp_by_handle: HashMap<usize, Arc<UdpService>> = HashMap::new();
    for h in &decls.udp_services {
        let d = h.decl().clone();
        let first = udp_by_name.get(&d.name).map(|f| &f.declared_at);
        let old = previous
            .and_then(|p| p.udp_service(&d.name))
            .map(|o| &o.pool);
        let Some(pool) = checked_pool("UDP", &d.name, &d.at, d.servers, first, old, &mut errors)
        else {
            continue;
        };
        let svc = Arc::new(UdpService {
            pool,
            name: d.name.clone(),
            declared_at: d.at,
        });
        udp_by_handle.insert(Arc::as_ptr(&h.0) as usize, svc.clone());
        udp_by_name.insert(d.name, svc);
    }
    let mut udp = Vec::new();
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for h in &decls.udp_routes {
        let d = h.decl().clone();
        if let Some(first) = seen.get(&d.name) {
            errors.push(ScriptError::at(
                &d.at,
                format!("UDP route {:?} is already declared at {first}", d.name),
            ));
            continue;
        }
        seen.insert(d.name.clone(), d.at.clone());
        let key = |h: &UdpServiceHandle| Arc::as_ptr(&h.0) as usize;
        let (names, handles) = (&udp_by_name, &udp_by_handle);
        let Some(service) = target_of(
            "UDP",
            &d.name,
            &d.at,
            &d.target,
            names,
            handles,
            key,
            &mut errors,
        ) else {
            continue;
        };
        let eps = d.entrypoints.clone().unwrap_or_default();
        if let Some(bad) = eps.iter().find(|e| !env.udp.contains(e)) {
            errors.push(ScriptError::at(
                &d.at,
                format!(
                    "UDP route {:?}: {bad:?} is not a UDP entrypoint (UDP entrypoints, written NAME=ADDR/udp: {})",
                    d.name,
                    if env.udp.is_empty() { "none".to_string() } else { env.udp.join(", ") }
                ),
            ));
            continue;
        }
        let on: Vec<String> = if eps.is_empty() {
            env.udp.to_vec()
        } else {
            eps.clone()
        };
        let mut clash = None;
        for ep in &on {
            if let Some(other) = taken.get(ep) {
                clash = Some((ep.clone(), other.clone()));
                break;
            }
        }
        if let Some((ep, other)) = clash {
            errors.push(ScriptError::at(
                &d.at,
                format!(
                    "UDP route {:?}: entrypoint {ep:?} already has UDP route {other:?} (one per entrypoint)",
                    d.name
                ),
            ));
            continue;
        }
        for ep in on {
            taken.insert(ep, d.name.clone());
        }
        udp.push(UdpRoute {
            name: d.name,
            entrypoints: eps,
            service,
            declared_at: d.at,
            metrics: Default::default(),
        });
    }

    if errors.is_empty() {
        Ok(L4Table::new(tcp, udp))
    } else {
        Err(errors)
    }
}

/// Whether a rule can only match TLS connections (it names an SNI or ALPN that a cleartext
/// connection never has, outside a negation).
fn rule_needs_tls(m: &crate::routing::Matcher) -> bool {
    use crate::routing::Matcher as M;
    match m {
        M::Host(_) | M::HostRegex(_) | M::Alpn(_) => true,
        M::And(a, b) => rule_needs_tls(a) || rule_needs_tls(b),
        M::Or(a, b) => rule_needs_tls(a) && rule_needs_tls(b),
        _ => false,
    }
}
