//! Per-request script calls: predicates, `on_request` / `on_response` hooks and `pick` balancers.
//!
//! Owns the `HookRuntime` (an engine with hook-sized limits plus the functions of every script of
//! one build) and the objects hooks get: `Request`, `Response`, the request-scoped `Context`
//! (`ctx`: route, service, server, client ip, request id) and the shared `Store` (`ctx.store`).
//! A hook function may take `(req)` or `(req, ctx)`.
//!
//! Invariants: a hook call is bounded by the runtime's operation budget, so an endless loop
//! fails that one request instead of hanging a worker; a failing hook yields an error message
//! for the log, never a panic, and nothing of it reaches the client.
//!
//! Hooks borrow, they do not copy or lock: the request (or response) of a call is lent to the
//! calling thread for exactly that call — `on_request`'s `HookRequest` and `on_response`'s
//! `HookResponse` are moved into a thread-local slot and back out (no allocation), and a
//! predicate's or `pick`'s `RequestView` is read in place through a pointer that lives only as
//! long as the call. The `Request`/`Response` values scripts hold are handles carrying just the
//! call's id, so no header map is cloned per predicate or `pick` call and no `Arc<Mutex>` is made
//! per call; a handle that outlives its call (kept by a closure, returned) gets an error, never
//! another request. Edits made by a predicate or `pick` stay within that call (the view is copied
//! on the first edit only). A function's call path (its arity, called by name or as a closure) is
//! resolved once, on its first call, and its arguments go in without a `Vec`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, FuncArgs, ImmutableString, AST};

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
    /// The script file each function was defined in, so a runtime error names it.
    pub files: std::collections::HashMap<String, String>,
}

impl HookRuntime {
    /// A call's error as `file:line:col: message` (the file of the function `name`, when
    /// known), without Rhai's `(line L, position P)` suffix.
    fn located(&self, name: &str, e: &EvalAltResult) -> String {
        let pos = e.position();
        let text = e.to_string();
        let message = text
            .strip_suffix(&format!(" ({pos})"))
            .unwrap_or(&text)
            .to_string();
        match (self.files.get(name), pos.line()) {
            (Some(file), Some(line)) => {
                format!("{file}:{line}:{}: {message}", pos.position().unwrap_or(0))
            }
            (Some(file), None) => format!("{file}: {message}"),
            _ => text,
        }
    }
}

impl fmt::Debug for HookRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRuntime").finish_non_exhaustive()
    }
}

/// The request as a hook sees it: a handle to the request of the hook call in progress on this
/// thread. It holds only that call's id; reads and edits go to the request lent to the call (see
/// `lend_request`), so making it costs nothing and no header is copied. A handle kept past its
/// call (a closure storing it, a value returned) finds its call gone and fails with an error;
/// it can never reach another call's request or memory that is no longer there.
#[derive(Debug, Clone, Copy)]
pub struct ScriptRequest {
    call: u64,
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn hook_error<T>(msg: String) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg),
        rhai::Position::NONE,
    )))
}

fn stale<T>(what: &str) -> RhaiResult<T> {
    hook_error(format!(
        "this {what} belongs to a hook call that has finished; use the one the hook was given"
    ))
}

/// What a call's request is while the call runs.
// Boxing the large variant would allocate on every call; a `Lent` is only ever moved twice.
#[allow(clippy::large_enum_variant)]
enum Lent {
    /// `on_request` (and the REPL): the request itself, moved in for the call and back out.
    Owned(HookRequest),
    /// A predicate's or `pick`'s borrowed `RequestView`, read in place: a type-erased
    /// `*const RequestView<'_>`. Valid for the whole call: `lend_request` removes the lease
    /// before returning, and only a handle of this call (same id, same thread) dereferences it.
    View(*const ()),
}

/// The request lent to one call on this thread.
struct RequestLease {
    call: u64,
    lent: Lent,
}

/// The parts of a request hooks read, borrowed from either kind of `Lent`.
struct Parts<'a> {
    method: &'a http::Method,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    client_ip: std::net::IpAddr,
}

impl Parts<'_> {
    fn to_request(&self) -> HookRequest {
        HookRequest {
            method: self.method.clone(),
            host: self.host.to_string(),
            path: self.path.to_string(),
            query: self.query.to_string(),
            headers: self.headers.clone(),
            client_ip: self.client_ip,
        }
    }
}

impl RequestLease {
    fn parts(&self) -> Parts<'_> {
        match &self.lent {
            Lent::Owned(r) => Parts {
                method: &r.method,
                host: &r.host,
                path: &r.path,
                query: &r.query,
                headers: &r.headers,
                client_ip: r.client_ip,
            },
            Lent::View(p) => {
                // SAFETY: `p` was made from a `&RequestView` by `with_view`, which outlives the
                // lease (see `Lent::View`); the view is only ever read.
                let v: &RequestView<'_> = unsafe { &*(*p).cast::<RequestView<'_>>() };
                Parts {
                    method: v.method,
                    host: v.host,
                    path: v.path,
                    query: v.query.unwrap_or(""),
                    headers: v.headers,
                    client_ip: canonical_ip(v.client_ip),
                }
            }
        }
    }

    /// The request to edit. A borrowed view is copied on the first edit, so edits made by a
    /// predicate or `pick` stay within its call (they always have: those see a copy).
    fn owned(&mut self) -> Option<&mut HookRequest> {
        if let Lent::View(_) = self.lent {
            self.lent = Lent::Owned(self.parts().to_request());
        }
        match &mut self.lent {
            Lent::Owned(r) => Some(r),
            Lent::View(_) => None,
        }
    }
}

thread_local! {
    static REQUEST: RefCell<Option<RequestLease>> = const { RefCell::new(None) };
    static RESPONSE: RefCell<Option<(u64, HookResponse)>> = const { RefCell::new(None) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static SCOPE: RefCell<rhai::Scope<'static>> = RefCell::new(rhai::Scope::new());
}

/// A process-unique call id without a shared write per call: each thread takes a block of
/// 2^40 ids from a global counter (once, or again when it has used them all).
fn next_call() -> u64 {
    static BLOCKS: AtomicU64 = AtomicU64::new(1);
    const BLOCK: u64 = (1 << 40) - 1;
    CALLS.with(|c| {
        let mut id = c.get();
        if id & BLOCK == BLOCK || id == 0 {
            id = BLOCKS.fetch_add(1, Ordering::Relaxed) << 40;
        }
        id += 1;
        c.set(id);
        id
    })
}

/// Puts back the lease that was there before a call, even if the call unwinds.
struct Restore<T: 'static> {
    slot: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    prev: Option<Option<T>>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            // Cannot fail: accessors release their borrow before they return or unwind.
            self.slot.with(|c| {
                if let Ok(mut b) = c.try_borrow_mut() {
                    *b = prev;
                }
            });
        }
    }
}

/// Runs `f` with `lent` as the request of a new call on this thread; returns `f`'s result and
/// the request as the call left it. Nested calls stack (the outer lease is restored).
fn lend_request<R>(lent: Lent, f: impl FnOnce(ScriptRequest) -> R) -> (R, Option<Lent>) {
    let call = next_call();
    let prev = REQUEST.with(|c| {
        c.try_borrow_mut()
            .ok()
            .map(|mut b| b.replace(RequestLease { call, lent }))
    });
    let _restore = Restore {
        slot: &REQUEST,
        prev,
    };
    let out = f(ScriptRequest { call });
    let lent = REQUEST.with(|c| {
        c.try_borrow_mut()
            .ok()
            .and_then(|mut b| b.take_if(|l| l.call == call))
            .map(|l| l.lent)
    });
    (out, lent)
}

/// Runs `f` with a handle to `req` (moved in for the call, handed back edited). For callers
/// outside the hook path, such as the REPL.
pub fn with_request<R>(req: HookRequest, f: impl FnOnce(ScriptRequest) -> R) -> (R, HookRequest) {
    let fallback = placeholder(&req);
    let (out, lent) = lend_request(Lent::Owned(req), f);
    match lent {
        Some(Lent::Owned(r)) => (out, r),
        _ => (out, fallback),
    }
}

/// Runs `f` with a read-only handle to `view` (no copy); edits stay within the call.
fn with_view<R>(view: &RequestView<'_>, f: impl FnOnce(ScriptRequest) -> R) -> R {
    let ptr = std::ptr::from_ref(view).cast::<()>();
    lend_request(Lent::View(ptr), f).0
}

/// An empty request left in the proxy's place while a hook has the real one.
fn placeholder(req: &HookRequest) -> HookRequest {
    HookRequest {
        method: req.method.clone(),
        host: String::new(),
        path: String::new(),
        query: String::new(),
        headers: HeaderMap::new(),
        client_ip: req.client_ip,
    }
}

fn text(s: &str) -> ImmutableString {
    ImmutableString::from(s)
}

/// A header value as script text (invalid UTF-8 replaced; the common valid case scans once).
fn header_text(v: &HeaderValue) -> ImmutableString {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => text(s),
        Err(_) => text(&String::from_utf8_lossy(v.as_bytes())),
    }
}

impl ScriptRequest {
    /// Reads this handle's request.
    fn read<T>(&self, f: impl FnOnce(&Parts<'_>) -> T) -> RhaiResult<T> {
        REQUEST.with(|c| match c.try_borrow().as_deref() {
            Ok(Some(lease)) if lease.call == self.call => Ok(f(&lease.parts())),
            _ => stale("request"),
        })
    }

    /// Edits this handle's request.
    fn edit<T>(&self, f: impl FnOnce(&mut HookRequest) -> RhaiResult<T>) -> RhaiResult<T> {
        REQUEST.with(|c| {
            let Ok(mut b) = c.try_borrow_mut() else {
                return stale("request");
            };
            match b
                .as_mut()
                .filter(|l| l.call == self.call)
                .and_then(RequestLease::owned)
            {
                Some(req) => f(req),
                None => stale("request"),
            }
        })
    }

    /// First value of a header (case-insensitive name), or "".
    pub fn header(&self, name: &str) -> RhaiResult<ImmutableString> {
        self.read(|r| r.headers.get(name).map(header_text).unwrap_or_default())
    }

    /// Value of a cookie from the Cookie header(s), or "".
    pub fn cookie(&self, name: &str) -> RhaiResult<ImmutableString> {
        self.read(|r| {
            r.headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(cookie::Cookie::split_parse)
                .filter_map(Result::ok)
                .find(|c| c.name() == name)
                .map(|c| text(c.value()))
                .unwrap_or_default()
        })
    }

    /// First value of a query parameter (percent-decoded), or "".
    pub fn query_param(&self, name: &str) -> RhaiResult<ImmutableString> {
        self.read(|r| {
            query_pairs(Some(r.query))
                .find(|(k, _)| k == name)
                .map(|(_, v)| ImmutableString::from(v))
                .unwrap_or_default()
        })
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
        self.edit(|req| {
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
        })
    }

    fn edit_header(&self, name: &str, value: Option<&str>, append: bool) -> RhaiResult<()> {
        self.edit(|req| edit_headers(&mut req.headers, name, value, append))
    }
}

/// Registers the `Request` type hooks receive.
pub fn register_request(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    engine.register_get("method", |r: &mut ScriptRequest| {
        r.read(|p| text(p.method.as_str()))
    });
    engine.register_get("host", |r: &mut ScriptRequest| r.read(|p| text(p.host)));
    engine.register_get("path", |r: &mut ScriptRequest| r.read(|p| text(p.path)));
    engine.register_get("query", |r: &mut ScriptRequest| r.read(|p| text(p.query)));
    engine.register_get("client_ip", |r: &mut ScriptRequest| {
        r.read(|p| ImmutableString::from(p.client_ip.to_string()))
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
            r.edit(|req| {
                req.path = path.to_string();
                Ok(())
            })
        },
    );
    engine.register_fn(
        "set_query",
        |r: &mut ScriptRequest, query: &str| -> RhaiResult<()> {
            if http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err() {
                return hook_error(format!("invalid query {query:?}"));
            }
            r.edit(|req| {
                req.query = query.to_string();
                Ok(())
            })
        },
    );
    engine.register_fn(
        "set_method",
        |r: &mut ScriptRequest, m: &str| -> RhaiResult<()> {
            let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .or_else(|_| hook_error(format!("invalid method {m:?}")))?;
            r.edit(|req| {
                req.method = method;
                Ok(())
            })
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
        r.read(|p| format!("{} {}{}", p.method, p.host, p.path))
    });
}

/// A script function kept for per-request calls, with the runtime of the build that made it.
pub struct ScriptFn {
    f: FnPtr,
    runtime: Arc<OnceLock<HookRuntime>>,
    /// How the function is called, resolved on the first call (the runtime is set only when
    /// the build that made this completes).
    prepared: OnceLock<Prepared>,
}

#[derive(Debug, Clone, Copy)]
struct Prepared {
    /// Parameters the function takes besides curried values.
    arity: usize,
    /// No curried values: called by name straight from the build's function library (no
    /// top-level evaluation, no scope set-up). Closures that captured values go through
    /// `FnPtr::call`, which passes them along.
    by_name: bool,
}

impl ScriptFn {
    pub fn new(f: FnPtr, runtime: Arc<OnceLock<HookRuntime>>) -> Self {
        ScriptFn {
            f,
            runtime,
            prepared: OnceLock::new(),
        }
    }

    /// The runtime and the resolved call path.
    fn prepared(&self) -> Result<(&HookRuntime, Prepared), String> {
        let Some(rt) = self.runtime.get() else {
            return Err(format!(
                "{} called before its build completed",
                self.label()
            ));
        };
        let p = *self.prepared.get_or_init(|| {
            let name = self.f.fn_name();
            let curried = self.f.curry().len();
            Prepared {
                arity: rt
                    .lib
                    .iter_functions()
                    .filter(|f| f.name == name)
                    .map(|f| f.params.len().saturating_sub(curried))
                    .max()
                    .unwrap_or(1),
                by_name: curried == 0,
            }
        });
        Ok((rt, p))
    }

    fn invoke(
        &self,
        rt: &HookRuntime,
        p: Prepared,
        args: impl FuncArgs,
    ) -> Result<Dynamic, String> {
        let result = if p.by_name {
            // One scope per thread, reused: the call rewinds it, so it is empty between calls
            // and only its capacity is kept. (A nested call on the same thread, which hooks do
            // not make, would get a fresh one.)
            let opts = rhai::CallFnOptions::new()
                .eval_ast(false)
                .rewind_scope(true);
            let call = |scope: &mut rhai::Scope<'static>| {
                scope.rewind(0);
                rt.engine.call_fn_with_options::<Dynamic>(
                    opts,
                    scope,
                    &rt.lib,
                    self.f.fn_name(),
                    args,
                )
            };
            SCOPE.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scope) => call(&mut scope),
                Err(_) => call(&mut rhai::Scope::new()),
            })
        } else {
            self.f.call::<Dynamic>(&rt.engine, &rt.lib, args)
        };
        result.map_err(|e| rt.located(self.f.fn_name(), &e))
    }

    /// Calls with `first`, plus `second()` only when the function takes a second parameter (so
    /// one-parameter functions never pay for making it).
    fn call2(&self, first: Dynamic, second: impl FnOnce() -> Dynamic) -> Result<Dynamic, String> {
        let (rt, p) = self.prepared()?;
        if p.arity >= 2 {
            self.invoke(rt, p, [first, second()])
        } else {
            self.invoke(rt, p, [first])
        }
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

/// A script function deciding whether a name may get a certificate at its first handshake:
/// `on_demand(|name| name.ends_with(".customers.example"))`.
#[derive(Debug)]
pub struct NameCheck(pub ScriptFn);

impl NameCheck {
    pub fn allows(&self, name: &str) -> Result<bool, String> {
        let (rt, p) = self.0.prepared()?;
        let out = self
            .0
            .invoke(rt, p, [Dynamic::from(ImmutableString::from(name))])
            .map_err(|e| format!("on_demand({}): {e}", self.0.label()))?;
        out.as_bool().map_err(|t| {
            format!(
                "on_demand({}) returned {t}, expected a bool",
                self.0.label()
            )
        })
    }
}

/// A script function used as a route matcher: `predicate(|req| req.header("x-beta") == "1")`.
#[derive(Debug)]
pub struct ScriptPredicate(pub ScriptFn);

impl Predicate for ScriptPredicate {
    fn matches(&self, req: &RequestView<'_>) -> Result<bool, String> {
        let out = with_view(req, |handle| {
            let (rt, p) = self.0.prepared()?;
            self.0.invoke(rt, p, [Dynamic::from(handle)])
        })
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
        let lent = std::mem::replace(req, placeholder(req));
        let (result, lent) = lend_request(Lent::Owned(lent), |handle| {
            self.0.call2(Dynamic::from(handle), || {
                Dynamic::from(ScriptCtx(ctx.clone()))
            })
        });
        if let Some(Lent::Owned(edited)) = lent {
            *req = edited;
        }
        match result {
            Ok(v) => match v.try_cast::<Handler>() {
                Some(h) => Ok(HookOutcome::Respond(h)),
                None => Ok(HookOutcome::Continue),
            },
            Err(e) => Err(format!("{}: {e}", self.describe())),
        }
    }

    fn describe(&self) -> String {
        format!("on_request({})", self.0.label())
    }
}

/// The response as an `on_response` hook sees it: a handle, like `Request`, to the response
/// lent to the call in progress.
#[derive(Debug, Clone, Copy)]
pub struct ScriptResponse {
    call: u64,
}

impl ScriptResponse {
    fn with<T>(&self, f: impl FnOnce(&mut HookResponse) -> RhaiResult<T>) -> RhaiResult<T> {
        RESPONSE.with(|c| {
            let Ok(mut b) = c.try_borrow_mut() else {
                return stale("response");
            };
            match b.as_mut() {
                Some((call, resp)) if *call == self.call => f(resp),
                _ => stale("response"),
            }
        })
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
        return crate::duration::parse(&text, crate::duration::Syntax::Standard)
            .map(Some)
            .or_else(|e| hook_error(format!("ttl: {e}")));
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
        r.with(|resp| Ok(i64::from(resp.status.as_u16())))
    });
    engine.register_set(
        "status",
        |r: &mut ScriptResponse, status: i64| -> RhaiResult<()> {
            let s = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.as_u16() >= 200);
            match s {
                Some(s) => r.with(|resp| {
                    resp.status = s;
                    Ok(())
                }),
                None => hook_error(format!("status {status} is not in 200..=999")),
            }
        },
    );
    engine.register_fn("header", |r: &mut ScriptResponse, name: &str| {
        r.with(|resp| Ok(resp.headers.get(name).map(header_text).unwrap_or_default()))
    });
    engine.register_fn(
        "set_header",
        |r: &mut ScriptResponse, name: &str, value: &str| {
            r.with(|resp| edit_headers(&mut resp.headers, name, Some(value), false))
        },
    );
    engine.register_fn(
        "append_header",
        |r: &mut ScriptResponse, name: &str, value: &str| {
            r.with(|resp| edit_headers(&mut resp.headers, name, Some(value), true))
        },
    );
    engine.register_fn("remove_header", |r: &mut ScriptResponse, name: &str| {
        r.with(|resp| edit_headers(&mut resp.headers, name, None, false))
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
        let call = next_call();
        let lent = HookResponse {
            status: resp.status,
            headers: std::mem::take(&mut resp.headers),
        };
        let prev = RESPONSE.with(|c| c.try_borrow_mut().ok().map(|mut b| b.replace((call, lent))));
        let restore = Restore {
            slot: &RESPONSE,
            prev,
        };
        let result = self.0.call2(Dynamic::from(ScriptResponse { call }), || {
            Dynamic::from(ScriptCtx(ctx.clone()))
        });
        let edited = RESPONSE.with(|c| {
            c.try_borrow_mut()
                .ok()
                .and_then(|mut b| b.take_if(|(id, _)| *id == call))
        });
        drop(restore);
        if let Some((_, edited)) = edited {
            *resp = edited;
        }
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
        let list: rhai::Array = servers.iter().map(|s| Dynamic::from(text(s))).collect();
        let out = with_view(req, |handle| {
            self.0.call2(Dynamic::from(list), || Dynamic::from(handle))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::middleware::Middleware;
    use crate::script::{build, Built, Limits, ScriptSource};

    const SCRIPT: &str = r#"
        let kept = ();
        route("keep")
            .rule(host("keep.test"))
            .middlewares([on_request(|req| {
                if type_of(kept) == "Request" {
                    req.set_header("x-old", kept.host);
                }
                kept = req;
                req.set_header("x-kept", "1");
            })])
            .to(respond(200, ""));
        fn tag(req, ctx) {
            req.set_header("x-route", ctx.route);
            req.set_path("/v2" + req.path);
            req
        }
        route("tag").rule(host("tag.test")).middlewares([on_request(Fn("tag"))]).to(respond(200, ""));
        route("edit_in_predicate")
            .rule(host("p.test") & predicate(|req| {
                req.set_header("x-beta", "1");
                req.header("x-beta") == "1" && req.header("user-agent") == "curl/8"
            }))
            .to(respond(200, ""));
        route("resp")
            .rule(host("r.test"))
            .middlewares([on_response(|resp| {
                resp.status = 203;
                resp.set_header("x-seen", resp.header("content-type"));
            })])
            .to(respond(200, ""));
    "#;

    fn built() -> Built {
        let sources = [ScriptSource {
            name: "t.rhai".into(),
            text: SCRIPT.into(),
        }];
        build(
            &sources,
            &Catalog::default(),
            &["web".to_string()],
            &Limits::default(),
        )
        .unwrap()
    }

    fn ctx(b: &Built, route: &str) -> HookCtx {
        HookCtx {
            route: b
                .table
                .routes()
                .iter()
                .find(|r| r.name == route)
                .unwrap()
                .clone(),
            server: None,
            client_ip: "10.0.0.1".parse().unwrap(),
            request_seq: 1,
            store: Arc::new(Store::new()),
        }
    }

    fn request(host: &str) -> HookRequest {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        HookRequest {
            method: http::Method::GET,
            host: host.into(),
            path: "/users".into(),
            query: String::new(),
            headers,
            client_ip: "10.0.0.1".parse().unwrap(),
        }
    }

    fn on_request(b: &Built, route: &str, req: &mut HookRequest) -> Result<HookOutcome, String> {
        let c = ctx(b, route);
        let Some(Middleware::OnRequest(h)) = c.route.middlewares.first() else {
            panic!("{route}: no on_request");
        };
        h.on_request(req, &c)
    }

    #[test]
    fn a_handle_kept_past_its_call_fails_safely() {
        let b = built();
        let mut first = request("keep.test");
        assert_eq!(
            on_request(&b, "keep", &mut first),
            Ok(HookOutcome::Continue)
        );
        assert_eq!(first.headers["x-kept"], "1");
        assert_eq!(first.host, "keep.test");
        // The next call finds the handle of the finished call in the closure's captured value:
        // using it is an error of that call, not a read of anything else.
        let mut second = request("keep.test");
        let err = on_request(&b, "keep", &mut second).unwrap_err();
        assert!(err.contains("hook call that has finished"), "{err}");
        // The failed call still hands its request back.
        assert_eq!(second.host, "keep.test");
        assert_eq!(second.headers["user-agent"], "curl/8");
    }

    #[test]
    fn edits_come_back_and_returning_the_request_is_harmless() {
        let b = built();
        let mut req = request("tag.test");
        assert_eq!(on_request(&b, "tag", &mut req), Ok(HookOutcome::Continue));
        assert_eq!(req.headers["x-route"], "tag");
        assert_eq!(req.path, "/v2/users");
        assert_eq!(req.headers.len(), 2);
        // Nothing is left lent once the call is over.
        REQUEST.with(|c| assert!(c.borrow().is_none()));
    }

    #[test]
    fn predicates_read_the_view_in_place_and_keep_edits_to_themselves() {
        let b = built();
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        let view = RequestView {
            method: &http::Method::GET,
            host: "p.test",
            path: "/",
            query: None,
            headers: &headers,
            client_ip: "10.0.0.1".parse().unwrap(),
        };
        for _ in 0..3 {
            let route = b
                .table
                .lookup("web", &view)
                .unwrap()
                .map(|r| r.name.clone());
            assert_eq!(route.as_deref(), Some("edit_in_predicate"));
        }
        assert!(headers.get("x-beta").is_none());
        REQUEST.with(|c| assert!(c.borrow().is_none()));
    }

    #[test]
    fn response_hooks_edit_status_and_headers() {
        let b = built();
        let c = ctx(&b, "resp");
        let Some(Middleware::OnResponse(h)) = c.route.middlewares.first() else {
            panic!("no on_response");
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let mut resp = HookResponse {
            status: StatusCode::OK,
            headers,
        };
        h.on_response(&mut resp, &c).unwrap();
        assert_eq!(resp.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(resp.headers["x-seen"], "text/plain");
        assert_eq!(resp.headers.len(), 2);
        RESPONSE.with(|c| assert!(c.borrow().is_none()));
    }

    #[test]
    fn nested_leases_stack_and_call_ids_are_unique() {
        let (out, req) = with_request(request("outer.test"), |outer| {
            let inner = with_request(request("inner.test"), |inner| {
                (
                    inner.read(|p| p.host.to_string()),
                    outer.read(|p| p.host.len()),
                )
            });
            let ((inner_host, outer_seen), _) = inner;
            assert_eq!(inner_host.unwrap(), "inner.test");
            // Only the innermost call's request is reachable while it runs.
            assert!(outer_seen.is_err());
            outer.read(|p| p.host.to_string()).unwrap()
        });
        assert_eq!(out, "outer.test");
        assert_eq!(req.host, "outer.test");
        let ids: Vec<u64> = (0..4)
            .map(|_| std::thread::spawn(next_call))
            .map(|h| h.join().unwrap())
            .chain([next_call(), next_call()])
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }
}
