//! Script functions that make middleware values: redirects, header edits, CORS, basic auth, IP
//! allow lists, rate and in-flight limits, retry, circuit breaker, compression, buffering,
//! error pages, forward auth, chains, and `on_response` hooks.
//!
//! Every constructor validates its arguments when the script runs (bad regex, CIDR, htpasswd
//! line, header name, duration, unknown option key), so a mistake is a build error at the call's
//! file:line:col and never a per-request failure. Options are Rhai maps; an unknown key is an
//! error naming the keys that exist. Must never: do I/O (forward_auth and errors only record
//! addresses and service names here).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::hook::{HookRuntime, ScriptFn, ScriptResponseHook};
use crate::middleware::auth::{BasicAuth, IpAllowList};
use crate::middleware::circuit::CircuitBreaker;
use crate::middleware::compress::{CompressOptions, Encoding};
use crate::middleware::cors::{Cors, CorsOptions};
use crate::middleware::limit::{InFlightLimiter, RateLimiter};
use crate::middleware::redirect::{RedirectRegex, RedirectScheme};
use crate::middleware::{
    BasicAuthMw, Buffering, ErrorPages, ForwardAuth, HeaderOps, InFlightMw, LimitKey, Middleware,
    RateLimitMw, RetryPolicy,
};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn err<T>(ctx: &NativeCallContext, msg: impl Into<String>) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        ctx.call_position(),
    )))
}

/// Fails on keys of `map` not in `known`.
pub(super) fn check_keys(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    known: &[&str],
) -> RhaiResult<()> {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            return err(
                ctx,
                format!(
                    "{what}: unknown option `{key}` (known: {})",
                    known.join(", ")
                ),
            );
        }
    }
    Ok(())
}

pub(super) fn opt_str(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    key: &str,
) -> RhaiResult<Option<String>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => match v.clone().into_immutable_string() {
            Ok(s) => Ok(Some(s.to_string())),
            Err(t) => err(ctx, format!("{what}: `{key}` must be a string, not {t}")),
        },
    }
}

pub(super) fn opt_bool(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    key: &str,
) -> RhaiResult<Option<bool>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => match v.as_bool() {
            Ok(b) => Ok(Some(b)),
            Err(t) => err(
                ctx,
                format!("{what}: `{key}` must be true or false, not {t}"),
            ),
        },
    }
}

pub(super) fn opt_u64(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    key: &str,
) -> RhaiResult<Option<u64>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => match v.as_int() {
            Ok(i) => u64::try_from(i)
                .map(Some)
                .or_else(|_| err(ctx, format!("{what}: `{key}` must not be negative"))),
            Err(t) => err(ctx, format!("{what}: `{key}` must be an integer, not {t}")),
        },
    }
}

/// A duration option: `"10s"`, `"250ms"`, or an integer number of seconds.
pub(super) fn opt_duration(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    key: &str,
) -> RhaiResult<Option<Duration>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => duration_of(ctx, &format!("{what}: `{key}`"), v).map(Some),
    }
}

pub(super) fn duration_of(
    ctx: &NativeCallContext,
    what: &str,
    v: &Dynamic,
) -> RhaiResult<Duration> {
    if let Ok(secs) = v.as_int() {
        let d = u64::try_from(secs)
            .map(Duration::from_secs)
            .or_else(|_| err(ctx, format!("{what} must not be negative")))?;
        if d > crate::duration::MAX_STANDARD {
            return err(
                ctx,
                format!("{what}: {secs} seconds is too long (at most 30 days)"),
            );
        }
        return Ok(d);
    }
    match v.clone().into_immutable_string() {
        Ok(s) => crate::duration::parse(&s, crate::duration::Syntax::Standard)
            .or_else(|e| err(ctx, format!("{what}: {e}"))),
        Err(t) => err(
            ctx,
            format!("{what} must be a duration like \"10s\" or seconds, not {t}"),
        ),
    }
}

pub(super) fn string_list(
    ctx: &NativeCallContext,
    what: &str,
    v: &Dynamic,
) -> RhaiResult<Vec<String>> {
    if let Ok(s) = v.clone().into_immutable_string() {
        return Ok(vec![s.to_string()]);
    }
    let Some(arr) = v.clone().try_cast::<Array>() else {
        return err(ctx, format!("{what} must be a list of strings"));
    };
    arr.iter()
        .map(|item| {
            item.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .or_else(|t| err(ctx, format!("{what} must be strings, found {t}")))
        })
        .collect()
}

fn opt_list(ctx: &NativeCallContext, what: &str, map: &Map, key: &str) -> RhaiResult<Vec<String>> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(v) => string_list(ctx, &format!("{what}: `{key}`"), v),
    }
}

pub(super) fn header_name_of(
    ctx: &NativeCallContext,
    what: &str,
    name: &str,
) -> RhaiResult<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .or_else(|_| err(ctx, format!("{what}: invalid header name {name:?}")))
}

/// Headers the router owns: a header middleware must not change them.
fn protected_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "host" || n.starts_with("x-forwarded-") || n == "x-real-ip"
}

fn header_pairs(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    key: &str,
    request: bool,
) -> RhaiResult<Vec<(HeaderName, HeaderValue)>> {
    let Some(v) = map.get(key) else {
        return Ok(Vec::new());
    };
    let Some(pairs) = v.clone().try_cast::<Map>() else {
        return err(
            ctx,
            format!("{what}: `{key}` must be a map of header name to value"),
        );
    };
    let mut out = Vec::new();
    for (name, value) in pairs {
        let name = header_name_of(ctx, what, &name)?;
        if request && protected_header(&name) {
            return err(
                ctx,
                format!("{what}: {name} is set by the router and cannot be changed here"),
            );
        }
        let text = value.into_immutable_string().or_else(|t| {
            err(
                ctx,
                format!("{what}: value of {name} must be a string, not {t}"),
            )
        })?;
        let value = HeaderValue::from_str(&text)
            .or_else(|_| err(ctx, format!("{what}: invalid value for header {name}")))?;
        out.push((name, value));
    }
    Ok(out)
}

fn header_ops(
    ctx: &NativeCallContext,
    what: &str,
    map: &Map,
    request: bool,
) -> RhaiResult<HeaderOps> {
    check_keys(ctx, what, map, &["set", "append", "remove"])?;
    let remove = opt_list(ctx, what, map, "remove")?
        .iter()
        .map(|n| {
            let name = header_name_of(ctx, what, n)?;
            if request && protected_header(&name) {
                return err(
                    ctx,
                    format!("{what}: {name} is set by the router and cannot be removed here"),
                );
            }
            Ok(name)
        })
        .collect::<RhaiResult<Vec<_>>>()?;
    Ok(HeaderOps {
        set: header_pairs(ctx, what, map, "set", request)?,
        append: header_pairs(ctx, what, map, "append", request)?,
        remove,
    })
}

fn single_header(
    ctx: &NativeCallContext,
    what: &str,
    name: &str,
    value: &str,
    request: bool,
) -> RhaiResult<HeaderOps> {
    let mut m = Map::new();
    m.insert(name.into(), Dynamic::from(value.to_string()));
    let mut outer = Map::new();
    outer.insert("set".into(), Dynamic::from(m));
    header_ops(ctx, what, &outer, request)
}

fn limit_key(ctx: &NativeCallContext, what: &str, map: &Map) -> RhaiResult<LimitKey> {
    match opt_str(ctx, what, map, "by")?.as_deref() {
        None | Some("client_ip") => Ok(LimitKey::ClientIp),
        Some(other) => match other.strip_prefix("header:") {
            Some(h) => Ok(LimitKey::Header(header_name_of(ctx, what, h.trim())?)),
            None => err(
                ctx,
                format!("{what}: `by` is \"client_ip\" or \"header:<name>\", not {other:?}"),
            ),
        },
    }
}

/// `"500-599"`, `"404"` → inclusive ranges.
pub(super) fn status_ranges(
    ctx: &NativeCallContext,
    what: &str,
    items: &[String],
) -> RhaiResult<Vec<(u16, u16)>> {
    let parse =
        |s: &str| -> Option<u16> { s.trim().parse().ok().filter(|n| (100..=999).contains(n)) };
    items
        .iter()
        .map(|item| {
            let range = match item.split_once('-') {
                Some((a, b)) => parse(a).zip(parse(b)),
                None => parse(item).map(|n| (n, n)),
            };
            match range {
                Some((a, b)) if a <= b => Ok((a, b)),
                _ => err(
                    ctx,
                    format!(
                        "{what}: invalid status or range {item:?} (write \"500-599\" or \"404\")"
                    ),
                ),
            }
        })
        .collect()
}

fn middleware_list(ctx: &NativeCallContext, list: Array) -> RhaiResult<Vec<Middleware>> {
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let t = item.type_name();
        match item.try_cast::<Middleware>() {
            Some(m) => out.push(m),
            None => {
                return err(
                    ctx,
                    format!(
                        "middlewares must be middleware values (e.g. strip_prefix(...)), found {t}"
                    ),
                )
            }
        }
    }
    Ok(out)
}

/// Registers every middleware constructor except the path rewrites and `on_request`.
pub fn register(engine: &mut Engine, hooks: &Arc<OnceLock<HookRuntime>>) {
    let h = hooks.clone();
    engine.register_fn("on_response", move |f: FnPtr| {
        Middleware::OnResponse(Arc::new(ScriptResponseHook(ScriptFn::new(f, h.clone()))))
    });
    engine.register_fn(
        "chain",
        |ctx: NativeCallContext, name: &str, list: Array| -> RhaiResult<Middleware> {
            let items = middleware_list(&ctx, list)?;
            Ok(Middleware::Chain(name.into(), Arc::new(items)))
        },
    );
    register_redirects(engine);
    register_headers(engine);
    register_access(engine);
    register_limits(engine);
    register_upstream(engine);
}

fn register_redirects(engine: &mut Engine) {
    engine.register_fn(
        "redirect_scheme",
        |ctx: NativeCallContext, scheme: &str| -> RhaiResult<Middleware> {
            RedirectScheme::new(scheme, None, true)
                .map(|r| Middleware::RedirectScheme(Arc::new(r)))
                .or_else(|e| err(&ctx, e))
        },
    );
    engine.register_fn(
        "redirect_scheme",
        |ctx: NativeCallContext, scheme: &str, opts: Map| -> RhaiResult<Middleware> {
            let what = "redirect_scheme";
            check_keys(&ctx, what, &opts, &["port", "permanent"])?;
            let port = opt_u64(&ctx, what, &opts, "port")?
                .map(|p| {
                    u16::try_from(p)
                        .or_else(|_| err(&ctx, format!("{what}: port {p} is out of range")))
                })
                .transpose()?;
            let permanent = opt_bool(&ctx, what, &opts, "permanent")?.unwrap_or(true);
            RedirectScheme::new(scheme, port, permanent)
                .map(|r| Middleware::RedirectScheme(Arc::new(r)))
                .or_else(|e| err(&ctx, e))
        },
    );
    engine.register_fn(
        "redirect_regex",
        |ctx: NativeCallContext, re: &str, replacement: &str| -> RhaiResult<Middleware> {
            RedirectRegex::new(re, replacement, false)
                .map(|r| Middleware::RedirectRegex(Arc::new(r)))
                .or_else(|e| err(&ctx, e))
        },
    );
    engine.register_fn(
        "redirect_regex",
        |ctx: NativeCallContext,
         re: &str,
         replacement: &str,
         permanent: bool|
         -> RhaiResult<Middleware> {
            RedirectRegex::new(re, replacement, permanent)
                .map(|r| Middleware::RedirectRegex(Arc::new(r)))
                .or_else(|e| err(&ctx, e))
        },
    );
}

fn register_headers(engine: &mut Engine) {
    engine.register_fn(
        "request_header",
        |ctx: NativeCallContext, name: &str, value: &str| -> RhaiResult<Middleware> {
            let ops = single_header(&ctx, "request_header", name, value, true)?;
            Ok(Middleware::RequestHeaders(Arc::new(ops)))
        },
    );
    engine.register_fn(
        "response_header",
        |ctx: NativeCallContext, name: &str, value: &str| -> RhaiResult<Middleware> {
            let ops = single_header(&ctx, "response_header", name, value, false)?;
            Ok(Middleware::ResponseHeaders(Arc::new(ops)))
        },
    );
    engine.register_fn(
        "request_headers",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let ops = header_ops(&ctx, "request_headers", &opts, true)?;
            Ok(Middleware::RequestHeaders(Arc::new(ops)))
        },
    );
    engine.register_fn(
        "response_headers",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let ops = header_ops(&ctx, "response_headers", &opts, false)?;
            Ok(Middleware::ResponseHeaders(Arc::new(ops)))
        },
    );
    engine.register_fn(
        "cors",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "cors";
            check_keys(
                &ctx,
                what,
                &opts,
                &[
                    "allow_origins",
                    "allow_origin_regex",
                    "allow_methods",
                    "allow_headers",
                    "expose_headers",
                    "allow_credentials",
                    "max_age",
                    "add_vary",
                ],
            )?;
            let o = CorsOptions {
                allow_origins: opt_list(&ctx, what, &opts, "allow_origins")?,
                allow_origin_regex: opt_list(&ctx, what, &opts, "allow_origin_regex")?,
                allow_methods: opt_list(&ctx, what, &opts, "allow_methods")?,
                allow_headers: opt_list(&ctx, what, &opts, "allow_headers")?,
                expose_headers: opt_list(&ctx, what, &opts, "expose_headers")?,
                allow_credentials: opt_bool(&ctx, what, &opts, "allow_credentials")?
                    .unwrap_or(false),
                max_age: opt_u64(&ctx, what, &opts, "max_age")?,
                add_vary: opt_bool(&ctx, what, &opts, "add_vary")?.unwrap_or(true),
            };
            Cors::new(o)
                .map(|c| Middleware::Cors(Arc::new(c)))
                .or_else(|e| err(&ctx, format!("cors: {e}")))
        },
    );
}

fn basic_auth(ctx: &NativeCallContext, users: &Dynamic, opts: &Map) -> RhaiResult<Middleware> {
    let what = "basic_auth";
    check_keys(ctx, what, opts, &["realm", "header_field", "remove_header"])?;
    let lines = string_list(ctx, "basic_auth users", users)?;
    let realm = opt_str(ctx, what, opts, "realm")?.unwrap_or_else(|| "switchyard".to_string());
    let auth = BasicAuth::new(&lines, &realm).or_else(|e| err(ctx, format!("basic_auth: {e}")))?;
    let header_field = opt_str(ctx, what, opts, "header_field")?
        .map(|h| header_name_of(ctx, what, &h))
        .transpose()?;
    Ok(Middleware::BasicAuth(Arc::new(BasicAuthMw {
        auth,
        header_field,
        remove_header: opt_bool(ctx, what, opts, "remove_header")?.unwrap_or(true),
    })))
}

fn register_access(engine: &mut Engine) {
    engine.register_fn(
        "pass_tls_client_cert",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "pass_tls_client_cert";
            check_keys(&ctx, what, &opts, &["pem", "info"])?;
            let mut p = crate::middleware::client_cert::PassTlsClientCert {
                pem: opt_bool(&ctx, what, &opts, "pem")?.unwrap_or(false),
                ..Default::default()
            };
            if let Some(info) = opts.get("info") {
                let Some(info) = info.clone().try_cast::<Map>() else {
                    return err(&ctx, format!("{what}: `info` must be a map of true/false"));
                };
                let keys = [
                    "subject",
                    "issuer",
                    "not_before",
                    "not_after",
                    "sans",
                    "serial_number",
                ];
                check_keys(&ctx, "pass_tls_client_cert info", &info, &keys)?;
                let on = |k: &str| opt_bool(&ctx, what, &info, k).map(|b| b.unwrap_or(false));
                p.subject = on("subject")?;
                p.issuer = on("issuer")?;
                p.not_before = on("not_before")?;
                p.not_after = on("not_after")?;
                p.sans = on("sans")?;
                p.serial_number = on("serial_number")?;
            }
            Ok(Middleware::PassTlsClientCert(Arc::new(p)))
        },
    );
    engine.register_fn("basic_auth", |ctx: NativeCallContext, users: Dynamic| {
        basic_auth(&ctx, &users, &Map::new())
    });
    engine.register_fn(
        "basic_auth",
        |ctx: NativeCallContext, users: Dynamic, opts: Map| basic_auth(&ctx, &users, &opts),
    );
    engine.register_fn(
        "ip_allow_list",
        |ctx: NativeCallContext, list: Dynamic| -> RhaiResult<Middleware> {
            let entries = string_list(&ctx, "ip_allow_list entries", &list)?;
            IpAllowList::new(&entries)
                .map(|l| Middleware::IpAllowList(Arc::new(l)))
                .or_else(|e| err(&ctx, e))
        },
    );
    engine.register_fn("forward_auth", |ctx: NativeCallContext, address: &str| {
        forward_auth(&ctx, address, &Map::new())
    });
    engine.register_fn(
        "forward_auth",
        |ctx: NativeCallContext, address: &str, opts: Map| forward_auth(&ctx, address, &opts),
    );
}

fn forward_auth(ctx: &NativeCallContext, address: &str, opts: &Map) -> RhaiResult<Middleware> {
    let what = "forward_auth";
    check_keys(
        ctx,
        what,
        opts,
        &[
            "trust_forward_header",
            "auth_response_headers",
            "auth_request_headers",
            "max_body",
        ],
    )?;
    let uri: http::Uri = address
        .parse()
        .or_else(|e| err(ctx, format!("{what}: invalid address {address:?}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return err(
            ctx,
            format!("{what}: address {address:?} must be http://host:port/path"),
        );
    }
    let names = |key: &str| -> RhaiResult<Vec<HeaderName>> {
        opt_list(ctx, what, opts, key)?
            .iter()
            .map(|n| header_name_of(ctx, what, n))
            .collect()
    };
    let max_body = opt_u64(ctx, what, opts, "max_body")?.unwrap_or(64 * 1024);
    Ok(Middleware::ForwardAuth(Arc::new(ForwardAuth {
        address: uri,
        trust_forward_header: opt_bool(ctx, what, opts, "trust_forward_header")?.unwrap_or(false),
        auth_response_headers: names("auth_response_headers")?,
        auth_request_headers: names("auth_request_headers")?,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
    })))
}

fn register_limits(engine: &mut Engine) {
    engine.register_fn(
        "rate_limit",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "rate_limit";
            check_keys(
                &ctx,
                what,
                &opts,
                &["average", "period", "burst", "by", "store"],
            )?;
            let Some(average) = opt_u64(&ctx, what, &opts, "average")? else {
                return err(
                    &ctx,
                    "rate_limit: `average` (requests per period) is required",
                );
            };
            let period =
                opt_duration(&ctx, what, &opts, "period")?.unwrap_or(Duration::from_secs(1));
            let burst = opt_u64(&ctx, what, &opts, "burst")?.unwrap_or(1);
            let limiter = RateLimiter::new(average, period, burst)
                .or_else(|e| err(&ctx, format!("rate_limit: {e}")))?;
            let key = limit_key(&ctx, what, &opts)?;
            // Counted in the shared store (`--store`; `shared` is a Rhai keyword): `store: true`
            // counts with every identical limit (same numbers and key); a name gives the limit
            // a bucket of its own.
            let shared =
                match opts.get("store") {
                    None => None,
                    Some(v) if v.is_bool() => v
                        .as_bool()
                        .ok()
                        .filter(|b| *b)
                        .map(|_| format!("{average}/{}ms/{burst}/{key}", period.as_millis())),
                    Some(v) => match v.clone().into_string() {
                        Ok(name) if !name.trim().is_empty() => Some(name.trim().to_string()),
                        _ => return err(
                            &ctx,
                            "rate_limit: `store` is true, false or a name for the shared bucket",
                        ),
                    },
                };
            Ok(Middleware::RateLimit(Arc::new(RateLimitMw {
                limiter,
                key,
                shared,
            })))
        },
    );
    let in_flight = |ctx: &NativeCallContext, amount: i64, opts: &Map| -> RhaiResult<Middleware> {
        let what = "in_flight_limit";
        check_keys(ctx, what, opts, &["by"])?;
        let amount = u64::try_from(amount)
            .or_else(|_| err(ctx, "in_flight_limit: amount must be positive"))?;
        let limiter =
            InFlightLimiter::new(amount).or_else(|e| err(ctx, format!("in_flight_limit: {e}")))?;
        Ok(Middleware::InFlightLimit(Arc::new(InFlightMw {
            limiter,
            key: limit_key(ctx, what, opts)?,
        })))
    };
    engine.register_fn(
        "in_flight_limit",
        move |ctx: NativeCallContext, amount: i64| in_flight(&ctx, amount, &Map::new()),
    );
    engine.register_fn(
        "in_flight_limit",
        move |ctx: NativeCallContext, amount: i64, opts: Map| in_flight(&ctx, amount, &opts),
    );
    let retry =
        |ctx: &NativeCallContext, attempts: i64, interval: Duration| -> RhaiResult<Middleware> {
            let attempts = u32::try_from(attempts)
                .ok()
                .filter(|a| (1..=10).contains(a))
                .map_or_else(
                    || err(ctx, format!("retry: attempts {attempts} is not in 1..=10")),
                    Ok,
                )?;
            Ok(Middleware::Retry(RetryPolicy {
                attempts,
                initial_interval: interval,
            }))
        };
    engine.register_fn("retry", move |ctx: NativeCallContext, attempts: i64| {
        retry(&ctx, attempts, Duration::from_millis(100))
    });
    engine.register_fn(
        "retry",
        move |ctx: NativeCallContext, attempts: i64, interval: Dynamic| {
            let d = duration_of(&ctx, "retry interval", &interval)?;
            retry(&ctx, attempts, d)
        },
    );
    let breaker = |ctx: &NativeCallContext, expr: &str, opts: &Map| -> RhaiResult<Middleware> {
        let what = "circuit_breaker";
        check_keys(
            ctx,
            what,
            opts,
            &["check_period", "fallback_duration", "recovery_duration"],
        )?;
        let check =
            opt_duration(ctx, what, opts, "check_period")?.unwrap_or(Duration::from_secs(10));
        let fallback =
            opt_duration(ctx, what, opts, "fallback_duration")?.unwrap_or(Duration::from_secs(10));
        let recovery =
            opt_duration(ctx, what, opts, "recovery_duration")?.unwrap_or(Duration::from_secs(10));
        CircuitBreaker::new(expr, check, fallback, recovery)
            .map(|c| Middleware::CircuitBreaker(Arc::new(c)))
            .or_else(|e| err(ctx, e))
    };
    engine.register_fn(
        "circuit_breaker",
        move |ctx: NativeCallContext, expr: &str| breaker(&ctx, expr, &Map::new()),
    );
    engine.register_fn(
        "circuit_breaker",
        move |ctx: NativeCallContext, expr: &str, opts: Map| breaker(&ctx, expr, &opts),
    );
}

fn register_upstream(engine: &mut Engine) {
    engine.register_fn("compress", || {
        Middleware::Compress(Arc::new(CompressOptions::default()))
    });
    engine.register_fn(
        "compress",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "compress";
            check_keys(
                &ctx,
                what,
                &opts,
                &["encodings", "min_size", "excluded_types"],
            )?;
            let mut o = CompressOptions::default();
            if opts.contains_key("encodings") {
                o.encodings = opt_list(&ctx, what, &opts, "encodings")?
                    .iter()
                    .map(|e| {
                        Encoding::parse(e).map_or_else(
                            || {
                                err(
                                    &ctx,
                                    format!(
                                        "compress: unknown encoding {e:?} (known: gzip, br, zstd)"
                                    ),
                                )
                            },
                            Ok,
                        )
                    })
                    .collect::<RhaiResult<Vec<_>>>()?;
            }
            if let Some(n) = opt_u64(&ctx, what, &opts, "min_size")? {
                o.min_size = n;
            }
            if opts.contains_key("excluded_types") {
                o.excluded_types = opt_list(&ctx, what, &opts, "excluded_types")?;
            }
            Ok(Middleware::Compress(Arc::new(o)))
        },
    );
    engine.register_fn(
        "buffering",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "buffering";
            check_keys(
                &ctx,
                what,
                &opts,
                &["max_request_body", "max_response_body"],
            )?;
            Ok(Middleware::Buffering(Buffering {
                max_request_body: opt_u64(&ctx, what, &opts, "max_request_body")?,
                max_response_body: opt_u64(&ctx, what, &opts, "max_response_body")?,
            }))
        },
    );
    engine.register_fn(
        "errors",
        |ctx: NativeCallContext, opts: Map| -> RhaiResult<Middleware> {
            let what = "errors";
            check_keys(&ctx, what, &opts, &["status", "service", "query"])?;
            let statuses = match opts.get("status") {
                Some(v) => status_ranges(&ctx, what, &string_list(&ctx, "errors: `status`", v)?)?,
                None => return err(&ctx, "errors: `status` (e.g. [\"500-599\"]) is required"),
            };
            let service_name = match opts.get("service") {
                Some(v) => match v.clone().try_cast::<super::api::ServiceHandle>() {
                    Some(h) => h.decl().name.clone(),
                    None => match v.clone().into_immutable_string() {
                        Ok(s) => s.to_string(),
                        Err(t) => {
                            return err(
                                &ctx,
                                format!("errors: `service` must be a service or its name, not {t}"),
                            )
                        }
                    },
                },
                None => {
                    return err(
                        &ctx,
                        "errors: `service` (where the pages come from) is required",
                    )
                }
            };
            let query = opt_str(&ctx, what, &opts, "query")?
                .unwrap_or_else(|| "/{status}.html".to_string());
            if !query.starts_with('/') {
                return err(&ctx, format!("errors: `query` {query:?} must start with /"));
            }
            Ok(Middleware::Errors(Arc::new(ErrorPages {
                statuses,
                service_name,
                service: OnceLock::new(),
                query,
            })))
        },
    );
}
