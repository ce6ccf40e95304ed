//! Per-request script calls: predicates, `on_request` / `on_response` hooks and `pick` balancers.
//!
//! Owns the `HookRuntime` (an engine with hook-sized limits plus the functions of every script of
//! one build) and the objects hooks get: `Request`, `Response`, the request-scoped `Context`
//! (`ctx`: route, service, server, client ip, request id) and the shared `Store` (`ctx.store`).
//! A hook function may take `(req)` or `(req, ctx)`; its arity is looked up once. Invariants: a hook call is bounded by the
//! runtime's operation budget, so an endless loop fails that one request instead of hanging a
//! worker; a failing hook yields an error message for the log, never a panic, and nothing of it
//! reaches the client.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, AST};

use crate::middleware::store::Value;
use crate::middleware::{
    HookCtx, HookOutcome, HookRequest, HookResponse, RequestHook, ResponseHook, Store,
};
use crate::routing::matcher::{canonical_ip, query_pairs, Predicate, RequestView};
use crate::routing::service::ServerPicker;
use crate::routing::Handler;

/// The engine and script functions per-request calls run on, fixed when a build completes.
pub struct HookRuntime {
    pub engine: Engine,
    pub lib: AST,
}

impl fmt::Debug for HookRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRuntime").finish_non_exhaustive()
    }
}

/// The request as a hook sees it: a shared handle, so edits made through any copy of it (Rhai
/// passes arguments by value) land in the one request.
#[derive(Debug, Clone)]
pub struct ScriptRequest(Arc<Mutex<HookRequest>>);

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn hook_error<T>(msg: String) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg),
        rhai::Position::NONE,
    )))
}

impl ScriptRequest {
    pub fn new(req: HookRequest) -> Self {
        ScriptRequest(Arc::new(Mutex::new(req)))
    }

    /// A read-only snapshot of a request being matched (headers are copied).
    pub fn from_view(req: &RequestView<'_>) -> Self {
        ScriptRequest::new(HookRequest {
            method: req.method.clone(),
            host: req.host.to_string(),
            path: req.path.to_string(),
            query: req.query.unwrap_or("").to_string(),
            headers: req.headers.clone(),
            client_ip: canonical_ip(req.client_ip),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HookRequest> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the (edited) request back out of the handle.
    pub fn into_inner(self) -> HookRequest {
        match Arc::try_unwrap(self.0) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            // A copy is still referenced somewhere (e.g. returned by the hook): take the fields.
            Err(shared) => {
                let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
                HookRequest {
                    method: guard.method.clone(),
                    host: std::mem::take(&mut guard.host),
                    path: std::mem::take(&mut guard.path),
                    query: std::mem::take(&mut guard.query),
                    headers: std::mem::take(&mut guard.headers),
                    client_ip: guard.client_ip,
                }
            }
        }
    }

    /// First value of a header (case-insensitive name), or "".
    pub fn header(&self, name: &str) -> String {
        self.lock()
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }

    /// Value of a cookie from the Cookie header(s), or "".
    pub fn cookie(&self, name: &str) -> String {
        let req = self.lock();
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| cookie::Cookie::split_parse(v.to_string()))
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// First value of a query parameter (percent-decoded), or "".
    pub fn query_param(&self, name: &str) -> String {
        let req = self.lock();
        let value = query_pairs(Some(&req.query))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v);
        value.unwrap_or_default()
    }

    /// Sets (or with `None` removes) one cookie, rewriting the request's Cookie header(s) into
    /// one header that keeps every other cookie in order.
    fn edit_cookie(&self, name: &str, value: Option<&str>) -> RhaiResult<()> {
        let bad = |s: &str| s.is_empty() || s.contains([';', '=', ',', ' ', '"']);
        if bad(name) {
            return hook_error(format!("invalid cookie name {name:?}"));
        }
        if value.is_some_and(|v| v.contains([';', ',', ' ', '"'])) {
            return hook_error(format!("invalid value for cookie {name}"));
        }
        let mut req = self.lock();
        let mut pairs: Vec<String> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
            .collect();
        if let Some(v) = value {
            pairs.push(format!("{name}={v}"));
        }
        req.headers.remove(http::header::COOKIE);
        if !pairs.is_empty() {
            let v = HeaderValue::from_str(&pairs.join("; "))
                .or_else(|_| hook_error(format!("invalid value for cookie {name}")))?;
            req.headers.insert(http::header::COOKIE, v);
        }
        Ok(())
    }

    fn edit_header(&self, name: &str, value: Option<&str>, append: bool) -> RhaiResult<()> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .or_else(|_| hook_error(format!("invalid header name {name:?}")))?;
        let mut req = self.lock();
        match value {
            None => {
                req.headers.remove(&name);
            }
            Some(v) => {
                let v = HeaderValue::from_str(v)
                    .or_else(|_| hook_error(format!("invalid value for header {name}")))?;
                if append {
                    req.headers.append(name, v);
                } else {
                    req.headers.insert(name, v);
                }
            }
        }
        Ok(())
    }
}

/// Registers the `Request` type hooks receive.
pub fn register_request(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    engine.register_get("method", |r: &mut ScriptRequest| {
        r.lock().method.as_str().to_string()
    });
    engine.register_get("host", |r: &mut ScriptRequest| r.lock().host.clone());
    engine.register_get("path", |r: &mut ScriptRequest| r.lock().path.clone());
    engine.register_get("query", |r: &mut ScriptRequest| r.lock().query.clone());
    engine.register_get("client_ip", |r: &mut ScriptRequest| {
        r.lock().client_ip.to_string()
    });
    engine.register_fn("header", |r: &mut ScriptRequest, name: &str| r.header(name));
    engine.register_fn("cookie", |r: &mut ScriptRequest, name: &str| r.cookie(name));
    engine.register_fn("query_param", |r: &mut ScriptRequest, name: &str| {
        r.query_param(name)
    });
    engine.register_fn(
        "set_header",
        |r: &mut ScriptRequest, name: &str, value: &str| r.edit_header(name, Some(value), false),
    );
    engine.register_fn(
        "append_header",
        |r: &mut ScriptRequest, name: &str, value: &str| r.edit_header(name, Some(value), true),
    );
    engine.register_fn("remove_header", |r: &mut ScriptRequest, name: &str| {
        r.edit_header(name, None, false)
    });
    engine.register_fn(
        "set_path",
        |r: &mut ScriptRequest, path: &str| -> RhaiResult<()> {
            if !path.starts_with('/')
                || http::uri::PathAndQuery::try_from(path).is_err()
                || path.contains('?')
            {
                return hook_error(format!(
                    "invalid path {path:?}: it must start with / and hold no query"
                ));
            }
            r.lock().path = path.to_string();
            Ok(())
        },
    );
    engine.register_fn(
        "set_query",
        |r: &mut ScriptRequest, query: &str| -> RhaiResult<()> {
            if http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err() {
                return hook_error(format!("invalid query {query:?}"));
            }
            r.lock().query = query.to_string();
            Ok(())
        },
    );
    engine.register_fn(
        "set_method",
        |r: &mut ScriptRequest, m: &str| -> RhaiResult<()> {
            let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .or_else(|_| hook_error(format!("invalid method {m:?}")))?;
            r.lock().method = method;
            Ok(())
        },
    );
    engine.register_fn(
        "set_cookie",
        |r: &mut ScriptRequest, name: &str, value: &str| -> RhaiResult<()> {
            r.edit_cookie(name, Some(value))
        },
    );
    engine.register_fn(
        "remove_cookie",
        |r: &mut ScriptRequest, name: &str| -> RhaiResult<()> { r.edit_cookie(name, None) },
    );
    engine.register_fn("to_string", |r: &mut ScriptRequest| {
        let req = r.lock();
        format!("{} {}{}", req.method, req.host, req.path)
    });
}

/// A script function kept for per-request calls, with the runtime of the build that made it.
pub struct ScriptFn {
    f: FnPtr,
    runtime: Arc<OnceLock<HookRuntime>>,
    /// Parameters the function takes besides curried values, looked up on first call.
    arity: OnceLock<usize>,
}

impl ScriptFn {
    pub fn new(f: FnPtr, runtime: Arc<OnceLock<HookRuntime>>) -> Self {
        ScriptFn {
            f,
            runtime,
            arity: OnceLock::new(),
        }
    }

    /// How many arguments the function takes (curried values not counted).
    fn arity(&self, rt: &HookRuntime) -> usize {
        *self.arity.get_or_init(|| {
            let name = self.f.fn_name();
            rt.lib
                .iter_functions()
                .filter(|f| f.name == name)
                .map(|f| f.params.len().saturating_sub(self.f.curry().len()))
                .max()
                .unwrap_or(1)
        })
    }

    /// Calls the function with the first `arity` of `args`. A function pointer without curried
    /// values is called by name straight from the build's function library (no top-level
    /// evaluation, no scope set-up); closures that captured values go through `FnPtr::call`,
    /// which passes them along.
    fn call(&self, args: Vec<Dynamic>) -> Result<Dynamic, String> {
        let mut args = args;
        let Some(rt) = self.runtime.get() else {
            return Err(format!(
                "{} called before its build completed",
                self.label()
            ));
        };
        let arity = self.arity(rt);
        if arity < args.len() {
            args.truncate(arity.max(1));
        }
        self.call_with(rt, args)
    }

    /// Calls with `first`, plus `ctx()` only when the function takes a second parameter (so
    /// one-parameter hooks never pay for making the context value).
    fn call_with_ctx(
        &self,
        first: Dynamic,
        ctx: impl FnOnce() -> Dynamic,
    ) -> Result<Dynamic, String> {
        let Some(rt) = self.runtime.get() else {
            return Err(format!(
                "{} called before its build completed",
                self.label()
            ));
        };
        let args = if self.arity(rt) >= 2 {
            vec![first, ctx()]
        } else {
            vec![first]
        };
        self.call_with(rt, args)
    }

    fn call_with(&self, rt: &HookRuntime, args: Vec<Dynamic>) -> Result<Dynamic, String> {
        let result = if self.f.curry().is_empty() {
            let opts = rhai::CallFnOptions::new()
                .eval_ast(false)
                .rewind_scope(false);
            rt.engine.call_fn_with_options(
                opts,
                &mut rhai::Scope::new(),
                &rt.lib,
                self.f.fn_name(),
                args,
            )
        } else {
            self.f.call(&rt.engine, &rt.lib, args)
        };
        result.map_err(|e| e.to_string())
    }

    /// `Fn("name")`, or `Fn(<closure>)` for an anonymous function.
    fn label(&self) -> String {
        let name = self.f.fn_name();
        if name.starts_with("anon$") {
            "Fn(<closure>)".to_string()
        } else {
            format!("Fn(\"{name}\")")
        }
    }
}

impl fmt::Debug for ScriptFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScriptFn({})", self.f.fn_name())
    }
}

/// A script function used as a route matcher: `predicate(|req| req.header("x-beta") == "1")`.
#[derive(Debug)]
pub struct ScriptPredicate(pub ScriptFn);

impl Predicate for ScriptPredicate {
    fn matches(&self, req: &RequestView<'_>) -> Result<bool, String> {
        let out = self
            .0
            .call(vec![Dynamic::from(ScriptRequest::from_view(req))])
            .map_err(|e| format!("predicate {}: {e}", self.describe()))?;
        out.as_bool().map_err(|t| {
            format!(
                "predicate {} returned {t}, expected a bool",
                self.describe()
            )
        })
    }

    fn describe(&self) -> String {
        self.0.label()
    }
}

/// A script function run on every request of the routes that list it:
/// `.middlewares([on_request(|req| req.set_header("X-Canary", "1"))])`. Returning a handler
/// (`respond(...)`, `redirect(...)`) answers directly.
#[derive(Debug)]
pub struct ScriptRequestHook(pub ScriptFn);

impl RequestHook for ScriptRequestHook {
    fn on_request(&self, req: &mut HookRequest, ctx: &HookCtx) -> Result<HookOutcome, String> {
        let placeholder = HookRequest {
            method: req.method.clone(),
            host: String::new(),
            path: String::new(),
            query: String::new(),
            headers: http::HeaderMap::new(),
            client_ip: req.client_ip,
        };
        let handle = ScriptRequest::new(std::mem::replace(req, placeholder));
        let result = self.0.call_with_ctx(Dynamic::from(handle.clone()), || {
            Dynamic::from(ScriptCtx(ctx.clone()))
        });
        let outcome = match result {
            Ok(v) => match v.try_cast::<Handler>() {
                Some(h) => Ok(HookOutcome::Respond(h)),
                None => Ok(HookOutcome::Continue),
            },
            Err(e) => Err(format!("{}: {e}", self.describe())),
        };
        *req = handle.into_inner();
        outcome
    }

    fn describe(&self) -> String {
        format!("on_request({})", self.0.label())
    }
}

/// The response as an `on_response` hook sees it (shared handle, like `Request`).
#[derive(Debug, Clone)]
pub struct ScriptResponse(Arc<Mutex<HookResponse>>);

impl ScriptResponse {
    fn lock(&self) -> std::sync::MutexGuard<'_, HookResponse> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a hook knows of its request: `ctx.route`, `ctx.service`, `ctx.server`, `ctx.client_ip`,
/// `ctx.request_id`, and the shared store `ctx.store`.
#[derive(Debug, Clone)]
pub struct ScriptCtx(pub HookCtx);

/// The shared store as scripts see it.
#[derive(Debug, Clone)]
pub struct ScriptStore(pub Arc<Store>);

fn edit_headers(
    headers: &mut HeaderMap,
    name: &str,
    value: Option<&str>,
    append: bool,
) -> RhaiResult<()> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .or_else(|_| hook_error(format!("invalid header name {name:?}")))?;
    match value {
        None => {
            headers.remove(&name);
        }
        Some(v) => {
            let v = HeaderValue::from_str(v)
                .or_else(|_| hook_error(format!("invalid value for header {name}")))?;
            if append {
                headers.append(name, v);
            } else {
                headers.insert(name, v);
            }
        }
    }
    Ok(())
}

fn ttl_of(ttl: &Dynamic) -> RhaiResult<Option<Duration>> {
    if ttl.is_unit() {
        return Ok(None);
    }
    if let Ok(secs) = ttl.as_int() {
        return u64::try_from(secs)
            .map(|s| Some(Duration::from_secs(s)))
            .or_else(|_| hook_error(format!("ttl {secs} must not be negative")));
    }
    if let Some(text) = ttl.clone().try_cast::<rhai::ImmutableString>() {
        return humantime::parse_duration(&text)
            .map(Some)
            .or_else(|e| hook_error(format!("invalid ttl {text:?}: {e}")));
    }
    hook_error(format!(
        "a ttl is seconds (int) or a duration like \"10s\", not {}",
        ttl.type_name()
    ))
}

fn value_of(v: Dynamic) -> RhaiResult<Value> {
    if let Ok(i) = v.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Some(s) = v.clone().try_cast::<rhai::ImmutableString>() {
        return Ok(Value::Str(s.to_string()));
    }
    hook_error(format!(
        "the store holds ints, strings and bools, not {}",
        v.type_name()
    ))
}

fn dynamic_of(v: Option<Value>) -> Dynamic {
    match v {
        None => Dynamic::UNIT,
        Some(Value::Int(i)) => Dynamic::from(i),
        Some(Value::Bool(b)) => Dynamic::from(b),
        Some(Value::Str(s)) => Dynamic::from(s),
    }
}

/// Registers `Response`, `Context` and `Store` for hooks.
pub fn register_hook_types(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptResponse>("Response");
    engine.register_get("status", |r: &mut ScriptResponse| {
        i64::from(r.lock().status.as_u16())
    });
    engine.register_set(
        "status",
        |r: &mut ScriptResponse, status: i64| -> RhaiResult<()> {
            let s = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.as_u16() >= 200);
            match s {
                Some(s) => {
                    r.lock().status = s;
                    Ok(())
                }
                None => hook_error(format!("status {status} is not in 200..=999")),
            }
        },
    );
    engine.register_fn("header", |r: &mut ScriptResponse, name: &str| {
        r.lock()
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    });
    engine.register_fn(
        "set_header",
        |r: &mut ScriptResponse, name: &str, value: &str| {
            edit_headers(&mut r.lock().headers, name, Some(value), false)
        },
    );
    engine.register_fn(
        "append_header",
        |r: &mut ScriptResponse, name: &str, value: &str| {
            edit_headers(&mut r.lock().headers, name, Some(value), true)
        },
    );
    engine.register_fn("remove_header", |r: &mut ScriptResponse, name: &str| {
        edit_headers(&mut r.lock().headers, name, None, false)
    });

    engine.register_type_with_name::<ScriptCtx>("Context");
    engine.register_get("route", |c: &mut ScriptCtx| c.0.route.name.clone());
    engine.register_get("service", |c: &mut ScriptCtx| c.0.service().to_string());
    engine.register_get("server", |c: &mut ScriptCtx| {
        c.0.server
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default()
    });
    engine.register_get("client_ip", |c: &mut ScriptCtx| c.0.client_ip.to_string());
    engine.register_get("request_id", |c: &mut ScriptCtx| c.0.request_id());
    engine.register_get("store", |c: &mut ScriptCtx| ScriptStore(c.0.store.clone()));

    engine.register_type_with_name::<ScriptStore>("Store");
    engine.register_fn("get", |s: &mut ScriptStore, key: &str| {
        dynamic_of(s.0.get(key, Instant::now()))
    });
    engine.register_fn(
        "set",
        |s: &mut ScriptStore, key: &str, v: Dynamic| -> RhaiResult<()> {
            s.0.set(key, value_of(v)?, None, Instant::now())
                .or_else(hook_error)
        },
    );
    engine.register_fn(
        "set",
        |s: &mut ScriptStore, key: &str, v: Dynamic, ttl: Dynamic| -> RhaiResult<()> {
            s.0.set(key, value_of(v)?, ttl_of(&ttl)?, Instant::now())
                .or_else(hook_error)
        },
    );
    engine.register_fn(
        "incr",
        |s: &mut ScriptStore, key: &str| -> RhaiResult<i64> {
            s.0.incr(key, 1, None, Instant::now()).or_else(hook_error)
        },
    );
    engine.register_fn(
        "incr",
        |s: &mut ScriptStore, key: &str, by: i64| -> RhaiResult<i64> {
            s.0.incr(key, by, None, Instant::now()).or_else(hook_error)
        },
    );
    engine.register_fn(
        "incr",
        |s: &mut ScriptStore, key: &str, by: i64, ttl: Dynamic| -> RhaiResult<i64> {
            s.0.incr(key, by, ttl_of(&ttl)?, Instant::now())
                .or_else(hook_error)
        },
    );
    engine.register_fn("remove", |s: &mut ScriptStore, key: &str| s.0.remove(key));
}

/// `on_response(fn)`: `fn(resp)` or `fn(resp, ctx)` may edit status and headers.
#[derive(Debug)]
pub struct ScriptResponseHook(pub ScriptFn);

impl ResponseHook for ScriptResponseHook {
    fn on_response(&self, resp: &mut HookResponse, ctx: &HookCtx) -> Result<(), String> {
        let handle = ScriptResponse(Arc::new(Mutex::new(HookResponse {
            status: resp.status,
            headers: std::mem::take(&mut resp.headers),
        })));
        let result = self.0.call_with_ctx(Dynamic::from(handle.clone()), || {
            Dynamic::from(ScriptCtx(ctx.clone()))
        });
        let mut edited = handle.lock();
        resp.status = edited.status;
        resp.headers = std::mem::take(&mut edited.headers);
        result
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", self.describe()))
    }

    fn describe(&self) -> String {
        format!("on_response({})", self.0.label())
    }
}

/// `pick(fn)`: `fn(servers, req)` returns one of `servers` (an address) or its index.
#[derive(Debug)]
pub struct ScriptPicker(pub ScriptFn);

impl ServerPicker for ScriptPicker {
    fn pick(&self, servers: &[&str], req: &RequestView<'_>) -> Result<Option<usize>, String> {
        let list: rhai::Array = servers
            .iter()
            .map(|s| Dynamic::from(s.to_string()))
            .collect();
        let out = self
            .0
            .call(vec![
                Dynamic::from(list),
                Dynamic::from(ScriptRequest::from_view(req)),
            ])
            .map_err(|e| format!("{}: {e}", self.describe()))?;
        if out.is_unit() {
            return Ok(None);
        }
        if let Ok(i) = out.as_int() {
            return usize::try_from(i)
                .ok()
                .filter(|i| *i < servers.len())
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{} returned index {i} of {} servers",
                        self.describe(),
                        servers.len()
                    )
                });
        }
        if let Some(s) = out.clone().try_cast::<rhai::ImmutableString>() {
            return servers
                .iter()
                .position(|a| *a == s.as_str())
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{} returned {s:?}, which is not one of the available servers",
                        self.describe()
                    )
                });
        }
        Err(format!(
            "{} returned {}, expected a server address or index",
            self.describe(),
            out.type_name()
        ))
    }

    fn describe(&self) -> String {
        self.0.label()
    }
}
