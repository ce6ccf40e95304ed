//! Matchers: the native predicates a route's rule is made of, and the request view they read.
//!
//! Owns the `Matcher` tree, its evaluation against a `RequestView`, and its canonical text form
//! (Traefik v3 syntax), which is also what gives a route its default priority (the rule length,
//! as in Traefik). Evaluation is pure and allocation-free except for script predicates, which
//! call back into Rhai through the `Predicate` trait object and may fail.
//! Must never: touch sockets, import `rhai`, or panic on request input.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;
use regex::Regex;

use crate::canonical::canonical_literal;

/// What a matcher may read of a request. Built once per request by the proxy (or the REPL).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Lowercase, without port and without a trailing dot; empty when the request names none.
    pub host: &'a str,
    /// Path as received (not percent-decoded), always starting with `/` for origin-form requests.
    pub path: &'a str,
    /// Raw query string without the `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// A per-request script function used as a matcher. Implemented by the script layer.
pub trait Predicate: Send + Sync + fmt::Debug {
    /// Returns whether the request matches; `Err` carries a message for the log (never the client).
    fn matches(&self, req: &RequestView<'_>) -> Result<bool, String>;
    /// How the predicate is shown in rules, e.g. `Fn("is_beta")`.
    fn describe(&self) -> String;
}

/// A host pattern: an exact name or a `*.suffix` wildcard (one or more labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored as the suffix including its leading dot, e.g. `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a host as written in a rule: case-insensitive, trailing dot ignored, `*.` wildcard.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let host = normalize_host(raw);
        if host.is_empty() {
            return Err("empty host".into());
        }
        if let Some(rest) = host.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!("invalid wildcard host {raw:?}"));
            }
            return Ok(HostPattern::Wildcard(format!(".{rest}")));
        }
        if host.contains('*') {
            return Err(format!(
                "invalid host {raw:?}: `*` is only allowed as the first label"
            ));
        }
        // An IPv6 literal matches the request's `[v6]` or `[v6]:port` host, written with or
        // without brackets (Traefik matches `Host(`::1`)` for `[::1]:8080`).
        if !host.starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(HostPattern::Exact(format!("[{host}]")));
        }
        Ok(HostPattern::Exact(host))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Lowercases a host and drops a trailing dot (Traefik treats `a.com.` as `a.com`).
pub fn normalize_host(raw: &str) -> String {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    trimmed.to_ascii_lowercase()
}

/// A regex as Go's `regexp` reads it, in Rust's syntax: a `{` that does not start a repetition
/// (`{2}`, `{2,}`, `{2,5}`) is a literal brace in Go and an error in Rust, so it is escaped.
/// Escaped characters and character classes pass unchanged.
pub fn go_syntax(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let rest = |i: usize| chars.get(i..).unwrap_or(&[]);
    let mut out = String::with_capacity(source.len());
    let mut class = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '\\' => {
                out.push(c);
                if let Some(&n) = chars.get(i) {
                    out.push(n);
                    i += 1;
                }
            }
            '[' if !class => {
                class = true;
                out.push(c);
                // `[^]a]`, `[]a]`: a `]` right after the opening is a member.
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push(']');
                    i += 1;
                }
            }
            ']' if class => {
                class = false;
                out.push(c);
            }
            '{' if !class && is_repetition(rest(i)) => {
                // The whole repetition, through its `}`.
                out.push(c);
                while let Some(&n) = chars.get(i) {
                    out.push(n);
                    i += 1;
                    if n == '}' {
                        break;
                    }
                }
            }
            '{' | '}' if !class => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether `rest` (after a `{`) is `N}`, `N,}` or `N,M}`.
fn is_repetition(rest: &[char]) -> bool {
    let Some(end) = rest.iter().position(|&c| c == '}') else {
        return false;
    };
    let inner: String = rest.iter().take(end).collect();
    let (min, max) = match inner.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (inner.as_str(), None),
    };
    !min.is_empty()
        && min.chars().all(|c| c.is_ascii_digit())
        && max.is_none_or(|m| m.chars().all(|c| c.is_ascii_digit()))
}

/// A regex together with the source text it was compiled from (for display).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

impl Pattern {
    /// Compiles `source` as written (unanchored, like Go's `regexp.MatchString`), read with Go's
    /// rules where Rust's differ (`go_syntax`).
    pub fn new(source: &str) -> Result<Self, String> {
        let regex =
            Regex::new(&go_syntax(source)).map_err(|e| format!("invalid regex {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Compiles `source` anchored at both ends (`^(?:…)$`) but displays the source as written.
    pub fn anchored(source: &str) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{})$", go_syntax(source)))
            .map_err(|e| format!("invalid regex {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Compiles `source` case-insensitively; used for host regexes.
    pub fn case_insensitive(source: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(&go_syntax(source))
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("invalid regex {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

/// A route rule as a tree of native matchers.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Matches every request (a route with an empty rule never exists; this is for combinators).
    Always,
    Host(HostPattern),
    HostRegex(Pattern),
    Path(String),
    PathPrefix(String),
    PathRegex(Pattern),
    Method(Method),
    /// Header present with exactly this value (any of its values).
    Header(HeaderName, String),
    HeaderRegex(HeaderName, Pattern),
    /// Query parameter present; with `Some(v)`, one of its values equals `v`.
    Query(String, Option<String>),
    QueryRegex(String, Pattern),
    ClientIp(IpNet),
    /// A TLS client offered this ALPN protocol (TCP rules only; never true for an HTTP request).
    Alpn(String),
    And(Box<Matcher>, Box<Matcher>),
    Or(Box<Matcher>, Box<Matcher>),
    Not(Box<Matcher>),
    Predicate(Arc<dyn Predicate>),
}

/// The result of evaluating a matcher: whether it matched, or a script predicate failed.
pub type MatchResult = Result<bool, String>;

impl Matcher {
    pub fn and(self, other: Matcher) -> Matcher {
        Matcher::And(Box::new(self), Box::new(other))
    }

    pub fn or(self, other: Matcher) -> Matcher {
        Matcher::Or(Box::new(self), Box::new(other))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Matcher {
        Matcher::Not(Box::new(self))
    }

    /// Evaluates the matcher. Natives never fail; a script predicate may.
    pub fn matches(&self, req: &RequestView<'_>) -> MatchResult {
        Ok(match self {
            Matcher::Always => true,
            Matcher::Host(p) => p.matches(req.host),
            Matcher::HostRegex(p) => p.is_match(req.host),
            // Request paths are canonical (invariant 16); so is what they are compared with.
            Matcher::Path(p) => req.path == canonical_literal(p),
            Matcher::PathPrefix(p) => req.path.starts_with(canonical_literal(p).as_ref()),
            Matcher::PathRegex(p) => p.is_match(req.path),
            Matcher::Method(m) => req.method == m,
            Matcher::Header(name, value) => req
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes()),
            Matcher::HeaderRegex(name, p) => req
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| p.is_match(s))),
            Matcher::Query(key, value) => query_pairs(req.query)
                .any(|(k, v)| k == key.as_str() && value.as_deref().is_none_or(|want| v == want)),
            Matcher::QueryRegex(key, p) => {
                query_pairs(req.query).any(|(k, v)| k == key.as_str() && p.is_match(&v))
            }
            Matcher::ClientIp(net) => net.contains(&canonical_ip(req.client_ip)),
            Matcher::Alpn(_) => false,
            Matcher::And(a, b) => a.matches(req)? && b.matches(req)?,
            Matcher::Or(a, b) => a.matches(req)? || b.matches(req)?,
            Matcher::Not(a) => !a.matches(req)?,
            Matcher::Predicate(p) => p.matches(req)?,
        })
    }

    /// Like `matches` (whose answer it always agrees with), but on failure says which matcher
    /// failed and what the request had instead, for explain traces:
    /// ``Host(`api.x.com`) ≠ host "www.x.com"``. Conjunctions report their first failing side;
    /// anything else reports itself.
    pub fn first_failure(&self, req: &RequestView<'_>) -> Result<Option<String>, String> {
        match self {
            Matcher::And(a, b) => match a.first_failure(req)? {
                Some(f) => Ok(Some(f)),
                None => b.first_failure(req),
            },
            other => Ok(if other.matches(req)? {
                None
            } else {
                Some(other.failure_text(req))
            }),
        }
    }

    /// `<matcher> ≠ <what the request had>` for a matcher known not to match.
    fn failure_text(&self, req: &RequestView<'_>) -> String {
        format!("{self} ≠ {}", self.had(req))
    }

    /// What the request had that this matcher looks at.
    fn had(&self, req: &RequestView<'_>) -> String {
        let header_values = |name: &HeaderName| {
            let values: Vec<String> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            if values.is_empty() {
                format!("no {name} header")
            } else {
                format!("{name} {}", values.join(", "))
            }
        };
        match self {
            Matcher::Host(_) | Matcher::HostRegex(_) => format!("host {:?}", req.host),
            Matcher::Path(_) | Matcher::PathPrefix(_) | Matcher::PathRegex(_) => {
                format!("path {:?}", req.path)
            }
            Matcher::Method(_) => format!("method {}", req.method),
            Matcher::Header(n, _) | Matcher::HeaderRegex(n, _) => header_values(n),
            Matcher::Query(..) | Matcher::QueryRegex(..) => match req.query {
                Some(q) => format!("query {q:?}"),
                None => "no query".to_string(),
            },
            Matcher::ClientIp(_) => format!("client {}", canonical_ip(req.client_ip)),
            Matcher::Not(inner) => inner.had(req),
            Matcher::Predicate(_) => "false".to_string(),
            Matcher::Alpn(_) => "no ALPN (an HTTP request)".to_string(),
            Matcher::Or(..) => "no alternative matched".to_string(),
            Matcher::Always | Matcher::And(..) => "no match".to_string(),
        }
    }

    /// The host patterns a request must match for this matcher to be true, or `None` when the
    /// matcher does not constrain the host to a finite set. Used to build the host index: it must
    /// never exclude a request the matcher would accept.
    pub fn required_hosts(&self) -> Option<Vec<HostPattern>> {
        match self {
            Matcher::Host(p) => Some(vec![p.clone()]),
            Matcher::And(a, b) => match (a.required_hosts(), b.required_hosts()) {
                (Some(x), Some(y)) => Some(if x.len() <= y.len() { x } else { y }),
                (Some(x), None) | (None, Some(x)) => Some(x),
                (None, None) => None,
            },
            Matcher::Or(a, b) => {
                let mut x = a.required_hosts()?;
                x.extend(b.required_hosts()?);
                Some(x)
            }
            _ => None,
        }
    }

    /// Whether evaluating this matcher may run a script function.
    pub fn has_predicate(&self) -> bool {
        match self {
            Matcher::Predicate(_) => true,
            Matcher::And(a, b) | Matcher::Or(a, b) => a.has_predicate() || b.has_predicate(),
            Matcher::Not(a) => a.has_predicate(),
            _ => false,
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Matcher::Or(..) => 1,
            Matcher::And(..) => 2,
            _ => 3,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if self.precedence() < min {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Iterates `key=value` pairs of a raw query string, percent-decoding both sides.
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
}

/// Decodes `%XX` escapes and `+` as space; invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                // Both digits must be hex (`from_str_radix` alone would accept "+5").
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Quotes a rule argument: backticks, or a Go-style double-quoted string when the value itself
/// holds a backtick.
fn quote(s: &str) -> String {
    if s.contains('`') {
        format!("{s:?}")
    } else {
        format!("`{s}`")
    }
}

impl fmt::Display for Matcher {
    /// Canonical Traefik v3 rule syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Always => f.write_str("Always()"),
            Matcher::Host(p) => write!(f, "Host({})", quote(&p.to_string())),
            Matcher::HostRegex(p) => write!(f, "HostRegexp({})", quote(&p.source)),
            Matcher::Path(p) => write!(f, "Path({})", quote(p)),
            Matcher::PathPrefix(p) => write!(f, "PathPrefix({})", quote(p)),
            Matcher::PathRegex(p) => write!(f, "PathRegexp({})", quote(&p.source)),
            Matcher::Method(m) => write!(f, "Method({})", quote(m.as_str())),
            Matcher::Header(n, v) => write!(f, "Header({}, {})", quote(n.as_str()), quote(v)),
            Matcher::HeaderRegex(n, p) => {
                write!(
                    f,
                    "HeaderRegexp({}, {})",
                    quote(n.as_str()),
                    quote(&p.source)
                )
            }
            // v3's one-argument Query means "empty value"; "any value" is spelled as a regexp.
            Matcher::Query(k, None) => write!(f, "QueryRegexp({}, `.*`)", quote(k)),
            // Traefik 3 refuses an empty argument: the empty value is the one-argument form.
            Matcher::Query(k, Some(v)) if v.is_empty() => write!(f, "Query({})", quote(k)),
            Matcher::Query(k, Some(v)) => write!(f, "Query({}, {})", quote(k), quote(v)),
            Matcher::QueryRegex(k, p) => {
                write!(f, "QueryRegexp({}, {})", quote(k), quote(&p.source))
            }
            Matcher::ClientIp(net) => write!(f, "ClientIP({})", quote(&net.to_string())),
            Matcher::Alpn(p) => write!(f, "ALPN({})", quote(p)),
            Matcher::And(a, b) => {
                a.fmt_operand(f, 2)?;
                f.write_str(" && ")?;
                b.fmt_operand(f, 3)
            }
            Matcher::Or(a, b) => {
                a.fmt_operand(f, 1)?;
                f.write_str(" || ")?;
                b.fmt_operand(f, 2)
            }
            Matcher::Not(a) => {
                f.write_str("!")?;
                a.fmt_operand(f, 3)
            }
            Matcher::Predicate(p) => f.write_str(&p.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            host,
            path,
            query,
            headers,
            client_ip: "10.1.2.3".parse().unwrap(),
        }
    }

    #[test]
    fn regexes_read_braces_as_go_does() {
        for (go, rust) in [
            ("^/a{2}$", "^/a{2}$"),
            ("^/a{2,}b{1,3}$", "^/a{2,}b{1,3}$"),
            ("^/{id}$", "^/\\{id\\}$"),
            ("^/x{$", "^/x\\{$"),
            ("^/x}$", "^/x\\}$"),
            ("^/[{}]$", "^/[{}]$"),
            ("^/[]{]$", "^/[]{]$"),
            ("^/\\{a\\}$", "^/\\{a\\}$"),
        ] {
            assert_eq!(go_syntax(go), rust, "{go}");
            assert!(Pattern::new(go).is_ok(), "{go}");
        }
        let p = Pattern::new("^/users/{id}$").unwrap();
        assert!(p.is_match("/users/{id}"));
        assert!(!p.is_match("/users/7"));
    }

    #[test]
    fn wildcard_host_needs_at_least_one_label() {
        let p = HostPattern::parse("*.Example.COM.").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("aexample.com"));
    }

    #[test]
    fn display_keeps_precedence() {
        let h = Matcher::Host(HostPattern::parse("a.com").unwrap());
        let p = Matcher::PathPrefix("/x".into());
        let m = Matcher::Method(Method::POST);
        let rule = h.clone().or(p.clone()).and(m.clone());
        assert_eq!(
            rule.to_string(),
            "(Host(`a.com`) || PathPrefix(`/x`)) && Method(`POST`)"
        );
        let rule = h.and(p).or(m.not());
        assert_eq!(
            rule.to_string(),
            "Host(`a.com`) && PathPrefix(`/x`) || !Method(`POST`)"
        );
    }

    #[test]
    fn query_and_client_ip() {
        let headers = HeaderMap::new();
        let req = view(
            "a.com",
            "/",
            Some("x=1&y=hello+world&z&p=%+5%4%41"),
            &headers,
        );
        assert!(Matcher::Query("y".into(), Some("hello world".into()))
            .matches(&req)
            .unwrap());
        assert!(Matcher::Query("z".into(), None).matches(&req).unwrap());
        assert!(Matcher::Query("p".into(), Some("% 5%4A".into()))
            .matches(&req)
            .unwrap());
        assert!(!Matcher::Query("x".into(), Some("2".into()))
            .matches(&req)
            .unwrap());
        assert!(Matcher::ClientIp("10.0.0.0/8".parse().unwrap())
            .matches(&req)
            .unwrap());
        let mut mapped = req;
        mapped.client_ip = "::ffff:10.9.9.9".parse().unwrap();
        assert!(Matcher::ClientIp("10.0.0.0/8".parse().unwrap())
            .matches(&mapped)
            .unwrap());
    }

    #[test]
    fn required_hosts_is_sound_for_or_and_not() {
        let a = Matcher::Host(HostPattern::parse("a.com").unwrap());
        let b = Matcher::Host(HostPattern::parse("b.com").unwrap());
        let p = Matcher::PathPrefix("/".into());
        assert_eq!(
            a.clone().or(b.clone()).required_hosts().map(|v| v.len()),
            Some(2)
        );
        assert!(a.clone().or(p.clone()).required_hosts().is_none());
        assert!(a.clone().not().required_hosts().is_none());
        assert_eq!(p.and(a).required_hosts().map(|v| v.len()), Some(1));
    }
}
