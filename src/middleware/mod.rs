//! Middlewares: what a route does to a request between the route lookup and the upstream, and
//! to the response on its way back.
//!
//! Owns the `Middleware` values a route carries (in declaration order), the contracts of
//! per-request script hooks (`RequestHook`, `ResponseHook`) which the script layer implements,
//! the request-scoped `HookCtx` and the shared `Store` hooks keep counters in. Natives run here at
//! native speed (path rewrites in this file; auth, limits, CORS, redirects, circuit breaking in
//! the submodules); a hook runs Rhai only on the routes that list it. Middlewares that need the
//! network (forward_auth, errors, retry, buffering, compress) are data here and run in `proxy`.
//! Must never: touch sockets, import `rhai`, or let a failing hook affect more than its own
//! request.

pub mod auth;
pub mod circuit;
pub mod client_cert;
pub mod compress;
pub mod cors;
pub mod headers;
pub mod limit;
pub mod redirect;
pub mod store;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::routing::matcher::Pattern;
use crate::routing::{Handler, Service};

pub use headers::HeaderOps;
pub use store::Store;

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

/// The parts of a response an `on_response` hook may read and edit.
#[derive(Debug, Clone)]
pub struct HookResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// What a hook knows of the request it runs for (read-only) plus the shared store. Cheap to
/// make and clone (two `Arc`s and a number): strings are produced only when a hook reads them.
#[derive(Debug, Clone)]
pub struct HookCtx {
    pub route: Arc<crate::routing::Route<Middleware>>,
    /// The server the request went to (`None` before the balancer picked, or when none did).
    pub server: Option<http::uri::Authority>,
    pub client_ip: IpAddr,
    /// A process-unique request number; shown as `<process prefix>-<n>`.
    pub request_seq: u64,
    pub store: Arc<Store>,
}

impl HookCtx {
    /// The route's service ("" for handler routes).
    pub fn service(&self) -> &str {
        match &self.route.target {
            crate::routing::Target::Service(s) => &s.name,
            crate::routing::Target::Handler(_) => "",
        }
    }

    /// `8f3a01c2-42`: a random per-process prefix and the request number.
    pub fn request_id(&self) -> String {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        let prefix = PREFIX.get_or_init(|| fastrand::u32(..));
        format!("{prefix:08x}-{}", self.request_seq)
    }
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
    fn on_request(&self, req: &mut HookRequest, ctx: &HookCtx) -> Result<HookOutcome, String>;
    /// How the hook is shown in listings, e.g. `on_request(Fn("canary"))`.
    fn describe(&self) -> String;
}

/// A per-response hook: may edit status and headers. `Err` fails the request with a bare 500.
pub trait ResponseHook: Send + Sync + fmt::Debug {
    fn on_response(&self, resp: &mut HookResponse, ctx: &HookCtx) -> Result<(), String>;
    fn describe(&self) -> String;
}

/// Set by `strip_prefix` / `strip_prefix_regex` to the prefix removed.
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// Set by `replace_path` / `replace_path_regex` to the path before the rewrite.
pub const X_REPLACED_PATH: HeaderName = HeaderName::from_static("x-replaced-path");

/// What a per-key limiter counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    /// A request header's value (requests without it share the empty key).
    Header(HeaderName),
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::ClientIp => f.write_str("client_ip"),
            LimitKey::Header(h) => write!(f, "header {h}"),
        }
    }
}

#[derive(Debug)]
pub struct BasicAuthMw {
    pub auth: auth::BasicAuth,
    /// Request header that carries the authenticated user to the server.
    pub header_field: Option<HeaderName>,
    /// Remove `Authorization` before forwarding (default true).
    pub remove_header: bool,
}

#[derive(Debug)]
pub struct RateLimitMw {
    pub limiter: limit::RateLimiter,
    pub key: LimitKey,
    /// Counted in the shared store under this name (`store: true` or `store: "name"`), by
    /// every replica together; the local `limiter` serves when there is no store or it is down.
    pub shared: Option<String>,
}

#[derive(Debug)]
pub struct InFlightMw {
    pub limiter: limit::InFlightLimiter,
    pub key: LimitKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubles with every further try.
    pub initial_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffering {
    pub max_request_body: Option<u64>,
    pub max_response_body: Option<u64>,
}

/// Custom error pages: for responses whose status is in one of `statuses`, the body comes from
/// `query` (with `{status}` replaced) on a server of the named service; the status stays.
#[derive(Debug)]
pub struct ErrorPages {
    pub statuses: Vec<(u16, u16)>,
    pub service_name: String,
    /// Filled when the table is compiled.
    pub service: OnceLock<Arc<Service>>,
    pub query: String,
}

impl ErrorPages {
    pub fn covers(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Ask an authentication server first (Traefik `forwardAuth`).
#[derive(Debug)]
pub struct ForwardAuth {
    /// `http://host:port/path` of the auth server.
    pub address: http::Uri,
    /// Keep the client's X-Forwarded-* when sending to the auth server (otherwise ours).
    pub trust_forward_header: bool,
    /// Copied from a 2xx auth answer onto the request.
    pub auth_response_headers: Vec<HeaderName>,
    /// Only these request headers are sent to the auth server (empty: all).
    pub auth_request_headers: Vec<HeaderName>,
    /// The auth answer body is read up to this many bytes.
    pub max_body: usize,
}

/// One step of a route's middleware chain.
#[derive(Debug, Clone)]
pub enum Middleware {
    OnRequest(Arc<dyn RequestHook>),
    OnResponse(Arc<dyn ResponseHook>),
    /// Removes the first matching prefix (Traefik `stripPrefix`).
    StripPrefix(Vec<String>),
    /// Removes the leading match of the first matching regex (Traefik `stripPrefixRegex`).
    StripPrefixRegex(Vec<Pattern>),
    AddPrefix(String),
    ReplacePath(String),
    ReplacePathRegex(Pattern, String),
    RedirectScheme(Arc<redirect::RedirectScheme>),
    RedirectRegex(Arc<redirect::RedirectRegex>),
    RequestHeaders(Arc<HeaderOps>),
    ResponseHeaders(Arc<HeaderOps>),
    Cors(Arc<cors::Cors>),
    BasicAuth(Arc<BasicAuthMw>),
    IpAllowList(Arc<auth::IpAllowList>),
    RateLimit(Arc<RateLimitMw>),
    InFlightLimit(Arc<InFlightMw>),
    Retry(RetryPolicy),
    CircuitBreaker(Arc<circuit::CircuitBreaker>),
    Compress(Arc<compress::CompressOptions>),
    Buffering(Buffering),
    Errors(Arc<ErrorPages>),
    ForwardAuth(Arc<ForwardAuth>),
    PassTlsClientCert(Arc<client_cert::PassTlsClientCert>),
    /// A named group, applied in place.
    Chain(Arc<str>, Arc<Vec<Middleware>>),
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

impl crate::routing::Describe for Middleware {
    fn describe(&self) -> String {
        Middleware::describe(self)
    }
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
            Middleware::OnResponse(h) => h.describe(),
            Middleware::RedirectScheme(r) => r.describe(),
            Middleware::RedirectRegex(r) => r.describe(),
            Middleware::RequestHeaders(h) => format!("request_headers({})", h.describe()),
            Middleware::ResponseHeaders(h) => format!("response_headers({})", h.describe()),
            Middleware::Cors(_) => "cors(...)".to_string(),
            Middleware::BasicAuth(b) => format!("basic_auth(users: {})", b.auth.users().join(", ")),
            Middleware::IpAllowList(l) => {
                format!(
                    "ip_allow_list([{}])",
                    quoted_list(l.entries().iter().map(String::as_str))
                )
            }
            Middleware::RateLimit(r) => match &r.shared {
                None => format!("rate_limit({} per {})", r.limiter.describe(), r.key),
                Some(name) => format!(
                    "rate_limit({} per {}, store {name:?})",
                    r.limiter.describe(),
                    r.key
                ),
            },
            Middleware::InFlightLimit(l) => {
                format!("in_flight_limit({} per {})", l.limiter.amount(), l.key)
            }
            Middleware::Retry(r) => format!(
                "retry(attempts: {}, initial_interval: {:?})",
                r.attempts, r.initial_interval
            ),
            Middleware::CircuitBreaker(c) => format!("circuit_breaker({:?})", c.expression()),
            Middleware::Compress(o) => format!(
                "compress([{}])",
                o.encodings
                    .iter()
                    .map(|e| e.token())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Middleware::Buffering(b) => format!(
                "buffering(request: {}, response: {})",
                b.max_request_body
                    .map_or("unlimited".to_string(), |n| n.to_string()),
                b.max_response_body
                    .map_or("unlimited".to_string(), |n| n.to_string())
            ),
            Middleware::Errors(e) => format!(
                "errors({} -> {}{})",
                e.statuses
                    .iter()
                    .map(|(a, b)| if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                e.service_name,
                e.query
            ),
            Middleware::ForwardAuth(f) => format!("forward_auth({})", f.address),
            Middleware::PassTlsClientCert(p) => p.describe(),
            Middleware::Chain(name, _) => format!("chain({name:?})"),
        }
    }

    /// Appends this middleware to `out`, with chains expanded in place (the order they run in).
    pub fn flatten_into(&self, out: &mut Vec<Middleware>) {
        match self {
            Middleware::Chain(_, items) => {
                for m in items.iter() {
                    m.flatten_into(out);
                }
            }
            m => out.push(m.clone()),
        }
    }

    /// For the path middlewares: how they rewrite `path`, or `None` when they do not apply to it
    /// (or are not path middlewares). The new path is as the rewrite made it: the proxy re-checks
    /// it with `canonical::recheck_rewritten` (a strip landing inside `/api./x` is refused there).
    pub fn rewrite_path(&self, path: &str) -> Option<PathEdit> {
        let (new, header) = match self {
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
            _ => return None,
        };
        Some(PathEdit { path: new, header })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_middlewares_follow_traefik() {
        let strip = Middleware::StripPrefix(vec!["/api".into(), "/v1".into()]);
        let e = strip.rewrite_path("/api/users").unwrap();
        assert_eq!(e.path, "/users");
        assert_eq!(e.header, Some((X_FORWARDED_PREFIX, "/api".into())));
        assert_eq!(strip.rewrite_path("/api").unwrap().path, "/");
        assert_eq!(
            strip.rewrite_path("/api../x").unwrap().path,
            "/../x",
            "left for the proxy's re-check to refuse"
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
