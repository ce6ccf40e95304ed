//! Scripts: the only module that imports `rhai`.
//!
//! Owns the engines (limits, sandbox), the script API (`api`), building a `RouteTable` from script
//! files (`build`), per-request hooks (`hook`) and script error reporting (`error`). Every engine
//! made here is bounded (operations, call depth, expression depth, string/array/map sizes), has
//! strict variables, no `eval`, and no file, network or process access: modules resolve only to
//! the stdlib embedded in the binary.

pub mod api;
pub mod build;
pub mod error;
pub mod expect;
pub mod hook;
pub mod l4_api;
pub mod mw_api;
pub mod service_api;

use std::time::Duration;

use rhai::Engine;

pub use build::{build, build_with, definitions, load_dir, BuildEnv, Built, ScriptSource};
pub use error::ScriptError;

/// Rhai modules shipped in the binary, importable by name (`import "catalog" as cat;`).
pub const STDLIB: &[(&str, &str)] = &[
    ("catalog", include_str!("../../stdlib/catalog.rhai")),
    ("traefik", include_str!("../../stdlib/traefik.rhai")),
];

/// Where the scripts of a build come from.
#[derive(Debug, Clone)]
pub enum ScriptsOrigin {
    Dir(std::path::PathBuf),
    /// The default scripts compiled into the binary (no folder to watch).
    Embedded,
    /// Scripts made at start (`switchyard traefik`: from Traefik's static configuration), as
    /// (name, text); no folder to watch.
    Generated(Vec<(String, String)>),
}

impl ScriptsOrigin {
    /// The scripts when they are not in a folder (embedded or generated).
    pub fn fixed_sources(&self) -> Option<Vec<ScriptSource>> {
        match self {
            ScriptsOrigin::Dir(_) => None,
            ScriptsOrigin::Embedded => Some(embedded_default()),
            ScriptsOrigin::Generated(files) => Some(
                files
                    .iter()
                    .map(|(name, text)| ScriptSource {
                        name: name.clone(),
                        text: text.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

/// The default scripts folder, embedded so `run` works even where no `scripts/` exists.
pub const EMBEDDED_DEFAULT: &[(&str, &str)] = &[(
    "00-welcome.rhai",
    include_str!("../../scripts/00-welcome.rhai"),
)];

/// Bounds on script evaluation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Operations one whole build may use (all files together).
    pub build_operations: u64,
    /// Wall-clock budget of one build.
    pub build_time: Duration,
    /// Operations one per-request hook call may use (~45 ns each).
    pub hook_operations: u64,
    pub call_levels: usize,
    pub expr_depth: usize,
    pub string_size: usize,
    pub array_size: usize,
    pub map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            build_operations: 50_000_000,
            build_time: Duration::from_secs(10),
            hook_operations: 50_000,
            call_levels: 48,
            expr_depth: 128,
            string_size: 1 << 20,
            array_size: 1 << 20,
            map_size: 1 << 16,
        }
    }
}

/// A sandboxed engine with the given operation budget and everything scripts and hooks share:
/// matchers, the catalog and request types, `hash()`, and `print`/`debug` sent to the log.
pub fn engine_with_limits(limits: &Limits, operations: u64) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(operations);
    engine.set_max_call_levels(limits.call_levels);
    engine.set_max_expr_depths(limits.expr_depth, limits.expr_depth);
    engine.set_max_string_size(limits.string_size);
    engine.set_max_array_size(limits.array_size);
    engine.set_max_map_size(limits.map_size);
    engine.set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.on_print(|s| tracing::info!(target: "script", "{s}"));
    engine.on_debug(
        |s, src, pos| tracing::debug!(target: "script", source = src.unwrap_or(""), %pos, "{s}"),
    );
    api::register_matchers(&mut engine);
    api::register_catalog(&mut engine);
    api::register_handlers(&mut engine);
    hook::register_request(&mut engine);
    hook::register_hook_types(&mut engine);
    engine.register_fn("hash", |s: &str| api::stable_hash(s));
    engine
}

/// The embedded default scripts as sources named `scripts/<file>`.
pub fn embedded_default() -> Vec<ScriptSource> {
    EMBEDDED_DEFAULT
        .iter()
        .map(|(n, t)| ScriptSource {
            name: format!("scripts/{n}"),
            text: (*t).to_string(),
        })
        .collect()
}

/// Variables a REPL session keeps between expressions (`let x = ...;` on one line, `x` on
/// the next). Opaque: the script engine's scope stays inside this module.
#[derive(Default)]
pub struct Variables(rhai::Scope<'static>);

impl Variables {
    /// Names defined so far.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _, _)| n.to_string()).collect()
    }
}

/// Evaluates a Rhai expression with `req` bound to `req` (the REPL's expressions), in the
/// sandbox with the hook limits. Strings are shown quoted.
pub fn eval_with_request(
    expr: &str,
    req: crate::middleware::HookRequest,
) -> Result<String, ScriptError> {
    eval_with_request_in(&mut Variables::default(), expr, req)
}

/// `eval_with_request` keeping `let` variables in `vars` for the next call (a variable holding
/// the request itself is not kept: the request is lent for one call only).
pub fn eval_with_request_in(
    vars: &mut Variables,
    expr: &str,
    req: crate::middleware::HookRequest,
) -> Result<String, ScriptError> {
    let limits = Limits::default();
    let engine = engine_with_limits(&limits, limits.hook_operations);
    let (value, _) = hook::with_request(req, |handle| {
        let mut scope = vars.0.clone();
        let kept = scope.len();
        scope.push("req", handle);
        let ast = engine
            .compile_with_scope(&scope, expr)
            .map_err(|e| ScriptError::from_parse("expr", &e).with_source(expr))?;
        let value = engine
            .eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &ast)
            .map_err(|e| ScriptError::from_eval("expr", &e).with_source(expr))?;
        let mut next = rhai::Scope::new();
        for (i, (name, constant, v)) in scope.iter_raw().enumerate() {
            if (i == kept && name == "req") || v.is::<hook::ScriptRequest>() {
                continue;
            }
            if constant {
                next.push_constant_dynamic(name.to_string(), v.clone());
            } else {
                next.push_dynamic(name.to_string(), v.clone());
            }
        }
        vars.0 = next;
        Ok(value)
    });
    let value = value?;
    Ok(if value.is_string() {
        format!("{value:?}")
    } else {
        value.to_string()
    })
}

#[cfg(test)]
mod eval_tests {
    use super::*;

    fn request() -> crate::middleware::HookRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_static("curl/8"));
        crate::middleware::HookRequest {
            method: http::Method::GET,
            host: "api.x.com".into(),
            path: "/v1/users".into(),
            query: "page=2".into(),
            headers,
            client_ip: "10.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn evaluates_with_req_bound() {
        assert_eq!(
            eval_with_request("req.path", request()).unwrap(),
            "\"/v1/users\""
        );
        assert_eq!(
            eval_with_request("req.header(\"User-Agent\")", request()).unwrap(),
            "\"curl/8\""
        );
        assert_eq!(eval_with_request("req.path.len()", request()).unwrap(), "9");
        assert_eq!(
            eval_with_request("let n = req.query_param(\"page\"); n + \"!\"", request()).unwrap(),
            "\"2!\""
        );
    }

    #[test]
    fn errors_point_into_the_expression() {
        let e = eval_with_request("req.path +* 1", request()).unwrap_err();
        assert_eq!(e.file, "expr");
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("\n  req.path +* 1\n"), "{e}");
        let e = eval_with_request("nope + 1", request()).unwrap_err();
        assert_eq!(e.column, 1, "{e}");
        let e = eval_with_request("loop {}", request()).unwrap_err();
        assert!(e.message.contains("operations budget"), "{e}");
    }
}
