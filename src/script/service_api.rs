//! Script functions that shape services: balancers (`round_robin`, `least_conn`, `p2c`,
//! `random`, `consistent_hash`, `pick(fn)`), `sticky_cookie`, active and passive health checks,
//! how TLS to `https://` servers is done (`.transport(#{ ca, server_name,
//! insecure_skip_verify, cert, key })`), and the composite kinds `failover(...)` and
//! `weighted(...)`.
//!
//! All of it only records into the service declaration; `build` compiles it. Options are
//! validated here, so a bad value is a build error at the call site; the files a transport names
//! are only recorded (with the call's location) and read by the build. Must never: do I/O.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext};

use super::api::{
    Collector, ServiceDecl, ServiceDeclKind, ServiceHandle, ServiceRef, TransportDecl,
};
use super::hook::{HookRuntime, ScriptFn, ScriptPicker};
use super::mw_api::{
    check_keys, err, header_name_of, opt_bool, opt_duration, opt_str, opt_u64, status_ranges,
};
use crate::balance::{Algorithm, HashKey, PassivePolicy};
use crate::routing::service::{HealthCheck, SameSite, ServerPicker, StickyCookie};

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// What `.balance(...)` takes.
#[derive(Debug, Clone)]
pub enum Balance {
    Algorithm(Algorithm),
    Picker(Arc<dyn ServerPicker>),
    Sticky(StickyCookie),
}

fn sticky(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Balance> {
    let what = "sticky_cookie";
    check_keys(
        ctx,
        what,
        opts,
        &[
            "secure",
            "http_only",
            "same_site",
            "max_age",
            "path",
            "domain",
            "secret",
        ],
    )?;
    if name.is_empty()
        || cookie::Cookie::parse(format!("{name}=x")).is_err()
        || name.contains(['=', ';', ' '])
    {
        return err(ctx, format!("sticky_cookie: invalid cookie name {name:?}"));
    }
    let same_site = match opt_str(ctx, what, opts, "same_site")?
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") => None,
        Some("lax") => Some(SameSite::Lax),
        Some("strict") => Some(SameSite::Strict),
        Some("none") => Some(SameSite::None),
        Some(other) => {
            return err(
                ctx,
                format!(
                    "sticky_cookie: same_site is \"lax\", \"strict\" or \"none\", not {other:?}"
                ),
            )
        }
    };
    let max_age =
        opt_u64(ctx, what, opts, "max_age")?.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let path = opt_str(ctx, what, opts, "path")?.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        return err(
            ctx,
            format!("sticky_cookie: path {path:?} must start with /"),
        );
    }
    Ok(Balance::Sticky(StickyCookie {
        name: name.to_string(),
        secure: opt_bool(ctx, what, opts, "secure")?.unwrap_or(false),
        http_only: opt_bool(ctx, what, opts, "http_only")?.unwrap_or(false),
        same_site,
        max_age,
        path,
        domain: opt_str(ctx, what, opts, "domain")?,
        secret: opt_str(ctx, what, opts, "secret")?.unwrap_or_default(),
    }))
}

fn health_check(ctx: &NativeCallContext, opts: &Map) -> RhaiResult<HealthCheck> {
    let what = "health_check";
    check_keys(
        ctx,
        what,
        opts,
        &["path", "interval", "timeout", "status", "host", "headers"],
    )?;
    let path = opt_str(ctx, what, opts, "path")?.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        return err(
            ctx,
            format!("health_check: path {path:?} must start with / and be a valid path"),
        );
    }
    let interval = opt_duration(ctx, what, opts, "interval")?.unwrap_or(Duration::from_secs(30));
    let timeout = opt_duration(ctx, what, opts, "timeout")?.unwrap_or(Duration::from_secs(5));
    if interval < Duration::from_millis(10) || timeout.is_zero() {
        return err(
            ctx,
            "health_check: interval must be at least 10ms and timeout above 0",
        );
    }
    let status = match opt_str(ctx, what, opts, "status")? {
        None => (200, 399),
        Some(s) => match status_ranges(ctx, what, &[s])?.first() {
            Some(r) => *r,
            None => (200, 399),
        },
    };
    let mut headers = Vec::new();
    if let Some(v) = opts.get("headers") {
        let Some(map) = v.clone().try_cast::<Map>() else {
            return err(
                ctx,
                "health_check: `headers` must be a map of name to value",
            );
        };
        for (name, value) in map {
            let name = header_name_of(ctx, what, &name)?;
            let text = value.into_immutable_string().or_else(|t| {
                err(
                    ctx,
                    format!("health_check: header {name} must be a string, not {t}"),
                )
            })?;
            let value = http::HeaderValue::from_str(&text).or_else(|_| {
                err(
                    ctx,
                    format!("health_check: invalid value for header {name}"),
                )
            })?;
            headers.push((name, value));
        }
    }
    Ok(HealthCheck {
        path,
        interval,
        timeout,
        status,
        host: opt_str(ctx, what, opts, "host")?,
        headers,
    })
}

/// `.transport(#{ ca, server_name, insecure_skip_verify, cert, key })`, checked but not read.
fn transport(c: &Collector, ctx: &NativeCallContext, opts: &Map) -> RhaiResult<TransportDecl> {
    let what = "transport";
    check_keys(
        ctx,
        what,
        opts,
        &["ca", "server_name", "insecure_skip_verify", "cert", "key"],
    )?;
    let file = |key: &str| -> RhaiResult<Option<String>> {
        match opt_str(ctx, what, opts, key)? {
            Some(f) if f.trim().is_empty() => err(ctx, format!("{what}: `{key}` names no file")),
            f => Ok(f.map(|f| f.trim().to_string())),
        }
    };
    let (ca, cert, key) = (file("ca")?, file("cert")?, file("key")?);
    if cert.is_some() != key.is_some() {
        return err(
            ctx,
            "transport: a client certificate needs both `cert` and `key`",
        );
    }
    let insecure_skip_verify = opt_bool(ctx, what, opts, "insecure_skip_verify")?.unwrap_or(false);
    if insecure_skip_verify && ca.is_some() {
        return err(
            ctx,
            "transport: `ca` and `insecure_skip_verify` exclude each other (a CA is only used to verify)",
        );
    }
    let server_name = opt_str(ctx, what, opts, "server_name")?;
    if let Some(n) = &server_name {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            return err(
                ctx,
                format!("transport: server_name {n:?} is not a DNS name or IP address"),
            );
        }
    }
    Ok(TransportDecl {
        ca,
        server_name,
        insecure_skip_verify,
        cert,
        key,
        at: c.location(ctx),
    })
}

fn service_ref(ctx: &NativeCallContext, what: &str, v: &Dynamic) -> RhaiResult<ServiceRef> {
    if let Some(h) = v.clone().try_cast::<ServiceHandle>() {
        return Ok(ServiceRef::Handle(h));
    }
    match v.clone().into_immutable_string() {
        Ok(s) => Ok(ServiceRef::Name(s.to_string())),
        Err(t) => err(
            ctx,
            format!("{what}: expected a service or a service name, found {t}"),
        ),
    }
}

fn composite(
    c: &Collector,
    ctx: &NativeCallContext,
    name: &str,
    kind: ServiceDeclKind,
) -> RhaiResult<ServiceHandle> {
    c.check_open(ctx, "service")?;
    if name.trim().is_empty() {
        return err(ctx, "a service needs a non-empty name");
    }
    let mut decl = ServiceDecl::new(name, c.location(ctx));
    decl.kind = kind;
    let handle = ServiceHandle(Arc::new(Mutex::new(decl)));
    c.add_service(handle.clone());
    Ok(handle)
}

/// `mirror(name, main, [[service, percent], ...], #{ mirror_body, max_body_size })`: Traefik's
/// mirroring service.
fn mirror(
    c: &Collector,
    ctx: &NativeCallContext,
    name: &str,
    main: &Dynamic,
    members: Array,
    opts: &Map,
) -> RhaiResult<ServiceHandle> {
    let what = "mirror";
    check_keys(ctx, what, opts, &["mirror_body", "max_body_size"])?;
    let main = service_ref(ctx, "mirror main service", main)?;
    let mut mirrors = Vec::new();
    for m in members {
        let pair = m.try_cast::<Array>().filter(|p| p.len() == 2);
        let (Some(svc), Some(pct)) = pair
            .as_ref()
            .map_or((None, None), |p| (p.first(), p.get(1)))
        else {
            return err(ctx, "mirror: mirrors are [service, percent] pairs");
        };
        let svc = service_ref(ctx, "mirror", svc)?;
        let Some(pct) = pct
            .as_int()
            .ok()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p <= 100)
        else {
            return err(ctx, "mirror: a percentage is an integer in 0..=100");
        };
        mirrors.push((svc, pct));
    }
    let body = opt_bool(ctx, what, opts, "mirror_body")?.unwrap_or(true);
    let max_body = opt_u64(ctx, what, opts, "max_body_size")?
        .unwrap_or(crate::routing::service::MIRROR_BODY_LIMIT);
    composite(
        c,
        ctx,
        name,
        ServiceDeclKind::Mirror {
            main,
            mirrors,
            body,
            max_body,
        },
    )
}

pub fn register(
    engine: &mut Engine,
    collector: &Arc<Collector>,
    hooks: &Arc<OnceLock<HookRuntime>>,
) {
    engine.register_type_with_name::<Balance>("Balance");
    engine.register_fn("round_robin", || Balance::Algorithm(Algorithm::RoundRobin));
    engine.register_fn("least_conn", || Balance::Algorithm(Algorithm::LeastConn));
    engine.register_fn("p2c", || Balance::Algorithm(Algorithm::P2c));
    engine.register_fn("random", || Balance::Algorithm(Algorithm::Random));
    engine.register_fn(
        "consistent_hash",
        |ctx: NativeCallContext, kind: &str| -> RhaiResult<Balance> {
            match kind {
                "client_ip" => Ok(Balance::Algorithm(Algorithm::ConsistentHash(HashKey::ClientIp))),
                other => err(&ctx, format!("consistent_hash({other:?}): use consistent_hash(\"client_ip\"), consistent_hash(\"header\", name) or consistent_hash(\"cookie\", name)")),
            }
        },
    );
    engine.register_fn(
        "consistent_hash",
        |ctx: NativeCallContext, kind: &str, name: &str| -> RhaiResult<Balance> {
            let key = match kind {
                "header" => HashKey::Header(header_name_of(&ctx, "consistent_hash", name)?),
                "cookie" if !name.is_empty() => HashKey::Cookie(name.to_string()),
                _ => {
                    return err(&ctx, format!("consistent_hash({kind:?}, {name:?}): the key is \"header\" or \"cookie\" with a name"))
                }
            };
            Ok(Balance::Algorithm(Algorithm::ConsistentHash(key)))
        },
    );
    let h = hooks.clone();
    engine.register_fn("pick", move |f: FnPtr| {
        Balance::Picker(Arc::new(ScriptPicker(ScriptFn::new(f, h.clone()))))
    });
    engine.register_fn("traefik_cookie_name", |name: &str, service: &str| {
        crate::routing::service::traefik_cookie_name(name, service)
    });
    engine.register_fn("sticky_cookie", |ctx: NativeCallContext, name: &str| {
        sticky(&ctx, name, &Map::new())
    });
    engine.register_fn(
        "sticky_cookie",
        |ctx: NativeCallContext, name: &str, opts: Map| sticky(&ctx, name, &opts),
    );
    engine.register_fn(
        "balance",
        |ctx: NativeCallContext, s: &mut ServiceHandle, b: Balance| -> RhaiResult<ServiceHandle> {
            {
                let mut d = s.decl();
                if let (
                    ServiceDeclKind::Weighted(_) | ServiceDeclKind::Failover { .. },
                    Balance::Sticky(c),
                ) = (&d.kind, &b)
                {
                    // Traefik's `weighted.sticky` (and the same for failover): a client stays on
                    // the member it was given.
                    d.sticky = Some(c.clone());
                    drop(d);
                    return Ok(s.clone());
                }
                if !matches!(d.kind, ServiceDeclKind::Servers) {
                    return err(
                        &ctx,
                        format!(
                            "service {:?} is a composite; balance its member services instead \
                             (a weighted or failover service takes only sticky_cookie(...))",
                            d.name
                        ),
                    );
                }
                match b {
                    Balance::Algorithm(a) => {
                        d.algorithm = a;
                        d.picker = None;
                    }
                    Balance::Picker(p) => d.picker = Some(p),
                    Balance::Sticky(c) => d.sticky = Some(c),
                }
            }
            Ok(s.clone())
        },
    );
    engine.register_fn(
        "health_check",
        |ctx: NativeCallContext, s: &mut ServiceHandle, opts: Map| -> RhaiResult<ServiceHandle> {
            let hc = health_check(&ctx, &opts)?;
            s.decl().health = Some(hc);
            Ok(s.clone())
        },
    );
    engine.register_fn(
        "passive_health",
        |ctx: NativeCallContext, s: &mut ServiceHandle, opts: Map| -> RhaiResult<ServiceHandle> {
            let what = "passive_health";
            check_keys(&ctx, what, &opts, &["failures", "cooldown"])?;
            let failures = opt_u64(&ctx, what, &opts, "failures")?.unwrap_or(3);
            let cooldown =
                opt_duration(&ctx, what, &opts, "cooldown")?.unwrap_or(Duration::from_secs(10));
            let max_failures = u32::try_from(failures)
                .ok()
                .filter(|f| *f >= 1)
                .map_or_else(
                    || err(&ctx, "passive_health: failures must be at least 1"),
                    Ok,
                )?;
            s.decl().passive = Some(PassivePolicy {
                max_failures,
                cooldown,
            });
            Ok(s.clone())
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "transport",
        move |ctx: NativeCallContext, s: &mut ServiceHandle, opts: Map| -> RhaiResult<ServiceHandle> {
            let t = transport(&c, &ctx, &opts)?;
            {
                let mut d = s.decl();
                if !matches!(d.kind, ServiceDeclKind::Servers) {
                    return err(
                        &ctx,
                        format!(
                            "service {:?} is a composite; set the transport of its member services instead",
                            d.name
                        ),
                    );
                }
                d.transport = Some(t);
            }
            Ok(s.clone())
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "failover",
        move |ctx: NativeCallContext,
              name: &str,
              primary: Dynamic,
              fallback: Dynamic|
              -> RhaiResult<ServiceHandle> {
            let kind = ServiceDeclKind::Failover {
                primary: service_ref(&ctx, "failover primary", &primary)?,
                fallback: service_ref(&ctx, "failover fallback", &fallback)?,
            };
            composite(&c, &ctx, name, kind)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "mirror",
        move |ctx: NativeCallContext, name: &str, main: Dynamic, mirrors: Array| {
            mirror(&c, &ctx, name, &main, mirrors, &Map::new())
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "mirror",
        move |ctx: NativeCallContext,
              name: &str,
              main: Dynamic,
              mirrors: Array,
              opts: Map|
              -> RhaiResult<ServiceHandle> {
            mirror(&c, &ctx, name, &main, mirrors, &opts)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "weighted",
        move |ctx: NativeCallContext, name: &str, members: Array| -> RhaiResult<ServiceHandle> {
            let mut list = Vec::new();
            for m in members {
                let pair = m.try_cast::<Array>().filter(|p| p.len() == 2);
                let Some(pair) = pair else {
                    return err(&ctx, "weighted: members are [service, weight] pairs");
                };
                let (Some(svc), Some(w)) = (pair.first(), pair.get(1)) else {
                    return err(&ctx, "weighted: members are [service, weight] pairs");
                };
                let svc = service_ref(&ctx, "weighted member", svc)?;
                let w = w
                    .as_int()
                    .ok()
                    .and_then(|w| u32::try_from(w).ok())
                    .filter(|w| *w <= 1_000_000)
                    .map_or_else(
                        || err(&ctx, "weighted: a weight is an integer in 0..=1000000"),
                        Ok,
                    )?;
                list.push((svc, w));
            }
            if list.is_empty() {
                return err(&ctx, "weighted: give at least one [service, weight] pair");
            }
            composite(&c, &ctx, name, ServiceDeclKind::Weighted(list))
        },
    );
}
