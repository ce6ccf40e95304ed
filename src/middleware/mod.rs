//! Middlewares: what a route does to a request between the route lookup and the upstream.
//!
//! Owns the `Middleware` values a route carries (in declaration order) and the contract of
//! per-request hooks (`RequestHook`), which the script layer implements. Natives run here at
//! native speed; a hook runs Rhai only on the routes that list it. Must never: touch sockets,
//! import `rhai`, or let a failing hook affect more than its own request.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

use crate::routing::matcher::Pattern;
use crate::routing::Handler;

/// The parts of a request a hook may read and edit. Moved in and out of the proxy's request
/// (no header copies).
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub method: Method,
    /// Lowercase host without port (as matched).
    pub host: String,
    pub path: String,
    /// Raw query without `?`; empty when none.
    pub query: String,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Go on with the (possibly edited) request.
    Continue,
    /// Answer directly; the request goes no further.
    Respond(Handler),
}

/// A per-request hook. `Err` carries a message for the log only; the client gets a bare 500.
pub trait RequestHook: Send + Sync + fmt::Debug {
    fn on_request(&self, req: &mut HookRequest) -> Result<HookOutcome, String>;
    /// How the hook is shown in listings, e.g. `on_request(Fn("canary"))`.
    fn describe(&self) -> String;
}

/// Set by `strip_prefix` / `strip_prefix_regex` to the prefix removed.
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// Set by `replace_path` / `replace_path_regex` to the path before the rewrite.
pub const X_REPLACED_PATH: HeaderName = HeaderName::from_static("x-replaced-path");

/// One step of a route's middleware chain.
#[derive(Debug, Clone)]
pub enum Middleware {
    OnRequest(Arc<dyn RequestHook>),
    /// Removes the first matching prefix (Traefik `stripPrefix`).
    StripPrefix(Vec<String>),
    /// Removes the leading match of the first matching regex (Traefik `stripPrefixRegex`).
    StripPrefixRegex(Vec<Pattern>),
    AddPrefix(String),
    ReplacePath(String),
    ReplacePathRegex(Pattern, String),
}

/// A path rewrite decided by a native middleware: the new path and a header to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEdit {
    pub path: String,
    pub header: Option<(HeaderName, String)>,
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Middleware {
    pub fn describe(&self) -> String {
        match self {
            Middleware::OnRequest(h) => h.describe(),
            Middleware::StripPrefix(p) => {
                format!(
                    "strip_prefix([{}])",
                    quoted_list(p.iter().map(String::as_str))
                )
            }
            Middleware::StripPrefixRegex(p) => format!(
                "strip_prefix_regex([{}])",
                quoted_list(p.iter().map(|p| p.source.as_str()))
            ),
            Middleware::AddPrefix(p) => format!("add_prefix({p:?})"),
            Middleware::ReplacePath(p) => format!("replace_path({p:?})"),
            Middleware::ReplacePathRegex(re, to) => {
                format!("replace_path_regex({:?}, {to:?})", re.source)
            }
        }
    }

    /// For the path middlewares: how they rewrite `path`, or `None` when they do not apply to it
    /// (or are not path middlewares). The new path is always normalised.
    pub fn rewrite_path(&self, path: &str) -> Option<PathEdit> {
        let (new, header) = match self {
            Middleware::OnRequest(_) => return None,
            Middleware::StripPrefix(prefixes) => {
                let prefix = prefixes.iter().find(|p| path.starts_with(p.as_str()))?;
                let rest = path.get(prefix.len()..).unwrap_or("");
                let header = (X_FORWARDED_PREFIX, prefix.clone());
                (format!("/{}", rest.trim_start_matches('/')), Some(header))
            }
            Middleware::StripPrefixRegex(patterns) => {
                let m = patterns.iter().find_map(|p| {
                    p.regex
                        .find(path)
                        .filter(|m| m.start() == 0 && !m.is_empty())
                })?;
                let rest = path.get(m.end()..).unwrap_or("");
                let header = (X_FORWARDED_PREFIX, m.as_str().to_string());
                (format!("/{}", rest.trim_start_matches('/')), Some(header))
            }
            Middleware::AddPrefix(prefix) => {
                (format!("{}{}", prefix.trim_end_matches('/'), path), None)
            }
            Middleware::ReplacePath(to) => (to.clone(), Some((X_REPLACED_PATH, path.to_string()))),
            Middleware::ReplacePathRegex(re, to) => {
                if !re.is_match(path) {
                    return None;
                }
                let new = re.regex.replace_all(path, to.as_str()).into_owned();
                (new, Some((X_REPLACED_PATH, path.to_string())))
            }
        };
        Some(PathEdit {
            path: normalize_path(&new),
            header,
        })
    }
}

/// Resolves `.` and `..` segments (also percent-encoded ones) and empty segments, so a rewrite can
/// never send `/../` to a backend; the result always starts with `/`.
pub fn normalize_path(path: &str) -> String {
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dotdot = |s: &str| {
        let l = s.to_ascii_lowercase();
        l == ".." || l == "%2e%2e" || l == ".%2e" || l == "%2e."
    };
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.split('/') {
        trailing = false;
        if is_dot(seg) {
            trailing = true;
        } else if is_dotdot(seg) {
            out.pop();
            trailing = true;
        } else if seg.is_empty() {
            trailing = true;
        } else {
            out.push(seg);
        }
    }
    let mut result = String::with_capacity(path.len() + 1);
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || trailing {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_dot_segments() {
        assert_eq!(normalize_path("/a/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_path("/a/%2E%2e/b"), "/b");
        assert_eq!(normalize_path("/a/./b/"), "/a/b/");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/users"), "/users");
        assert_eq!(normalize_path("//x//y"), "/x/y");
    }

    #[test]
    fn path_middlewares_follow_traefik() {
        let strip = Middleware::StripPrefix(vec!["/api".into(), "/v1".into()]);
        let e = strip.rewrite_path("/api/users").unwrap();
        assert_eq!(e.path, "/users");
        assert_eq!(e.header, Some((X_FORWARDED_PREFIX, "/api".into())));
        assert_eq!(strip.rewrite_path("/api").unwrap().path, "/");
        assert_eq!(
            strip.rewrite_path("/api/../../secret").unwrap().path,
            "/secret"
        );
        assert!(strip.rewrite_path("/other").is_none());
        let re = Middleware::StripPrefixRegex(vec![Pattern::new("/t/[0-9]+").unwrap()]);
        assert_eq!(re.rewrite_path("/t/42/x").unwrap().path, "/x");
        assert!(
            re.rewrite_path("/x/t/42").is_none(),
            "only a leading match strips"
        );
        let add = Middleware::AddPrefix("/v2/".into());
        assert_eq!(add.rewrite_path("/a").unwrap().path, "/v2/a");
        let rp = Middleware::ReplacePath("/new".into())
            .rewrite_path("/old")
            .unwrap();
        assert_eq!(rp.path, "/new");
        assert_eq!(rp.header, Some((X_REPLACED_PATH, "/old".into())));
        let rr = Middleware::ReplacePathRegex(Pattern::new("^/wsk/(.*)").unwrap(), "/$1".into());
        assert_eq!(
            rr.rewrite_path("/wsk/socket.io/").unwrap().path,
            "/socket.io/"
        );
        assert!(rr.rewrite_path("/other").is_none());
    }
}
