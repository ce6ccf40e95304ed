//! Per-request script calls: script predicates (and later request/response hooks).
//!
//! Owns the `HookRuntime` (an engine with hook-sized limits plus the functions of every script of
//! one build) and the `Request` object hooks read. Invariants: a hook call is bounded by the
//! runtime's operation budget, so an endless loop fails that one request instead of hanging a
//! worker; a failing hook yields an error message for the log, never a panic, and nothing of it
//! reaches the client.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine, FnPtr, AST};

use crate::routing::matcher::{query_pairs, Predicate, RequestView};

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

/// The request as a hook sees it: a snapshot, cheap to read from Rhai.
#[derive(Debug, Clone)]
pub struct ScriptRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub client_ip: String,
    headers: Vec<(String, String)>,
}

impl ScriptRequest {
    pub fn from_view(req: &RequestView<'_>) -> Self {
        ScriptRequest {
            method: req.method.as_str().to_string(),
            host: req.host.to_string(),
            path: req.path.to_string(),
            query: req.query.unwrap_or("").to_string(),
            client_ip: crate::routing::matcher::canonical_ip(req.client_ip).to_string(),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// First value of a header (case-insensitive name), or "".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Value of a cookie from the Cookie header(s), or "".
    pub fn cookie(&self, name: &str) -> String {
        self.headers
            .iter()
            .filter(|(k, _)| k == "cookie")
            .flat_map(|(_, v)| cookie::Cookie::split_parse(v.clone()))
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// First value of a query parameter (percent-decoded), or "".
    pub fn query_param(&self, name: &str) -> String {
        query_pairs(Some(&self.query))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

/// Registers the `Request` type hooks receive.
pub fn register_request(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    engine.register_get("method", |r: &mut ScriptRequest| r.method.clone());
    engine.register_get("host", |r: &mut ScriptRequest| r.host.clone());
    engine.register_get("path", |r: &mut ScriptRequest| r.path.clone());
    engine.register_get("query", |r: &mut ScriptRequest| r.query.clone());
    engine.register_get("client_ip", |r: &mut ScriptRequest| r.client_ip.clone());
    engine.register_fn("header", |r: &mut ScriptRequest, name: &str| r.header(name));
    engine.register_fn("cookie", |r: &mut ScriptRequest, name: &str| r.cookie(name));
    engine.register_fn("query_param", |r: &mut ScriptRequest, name: &str| {
        r.query_param(name)
    });
    engine.register_fn("to_string", |r: &mut ScriptRequest| {
        format!("{} {}{}", r.method, r.host, r.path)
    });
}

/// A script function used as a route matcher: `predicate(|req| req.header("x-beta") == "1")`.
pub struct ScriptPredicate {
    f: FnPtr,
    runtime: Arc<OnceLock<HookRuntime>>,
}

impl ScriptPredicate {
    pub fn new(f: FnPtr, runtime: Arc<OnceLock<HookRuntime>>) -> Self {
        ScriptPredicate { f, runtime }
    }
}

impl fmt::Debug for ScriptPredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScriptPredicate({})", self.f.fn_name())
    }
}

impl Predicate for ScriptPredicate {
    fn matches(&self, req: &RequestView<'_>) -> Result<bool, String> {
        let Some(rt) = self.runtime.get() else {
            return Err("script predicate called before its build completed".into());
        };
        let arg = Dynamic::from(ScriptRequest::from_view(req));
        let out: Dynamic = self
            .f
            .call(&rt.engine, &rt.lib, (arg,))
            .map_err(|e| format!("predicate {}: {e}", self.describe()))?;
        out.as_bool().map_err(|t| {
            format!(
                "predicate {} returned {t}, expected a bool",
                self.describe()
            )
        })
    }

    fn describe(&self) -> String {
        let name = self.f.fn_name();
        if name.starts_with("anon$") {
            "Fn(<closure>)".to_string()
        } else {
            format!("Fn(\"{name}\")")
        }
    }
}
