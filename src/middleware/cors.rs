//! CORS the way Traefik's `headers` middleware does it (the `accessControl*` options): answers
//! preflight requests directly and adds the `Access-Control-*` headers to actual responses.
//!
//! Owns the compiled policy (`Cors`): origins, anchored origin regexes and the pre-joined header
//! values, all validated in `Cors::new`, so answering never fails.
//!
//! Origin resolution: an exact entry (ASCII case-insensitive) or a regex match echoes the request
//! Origin; otherwise a `"*"` entry answers `*`; otherwise the origin is not allowed.
//!
//! `"*"` with `allow_credentials`: not an error, and the Origin is not echoed. Like Traefik, the
//! answer is `Access-Control-Allow-Origin: *` plus `Access-Control-Allow-Credentials: true`;
//! browsers then serve uncredentialed requests and refuse credentialed ones. Echoing any origin
//! with credentials would let every web site read responses made with the user's cookies; to allow
//! credentials, list the origins (or regexes).
//!
//! Must never: emit `Access-Control-Allow-Credentials` (or any other `Access-Control-Allow-*`)
//! for an origin that is not allowed, or match a regex against part of an Origin only.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

#[derive(Debug, Clone, Default)]
pub struct CorsOptions {
    /// Exact origins (`scheme://host[:port]`, or `null`) or `"*"`.
    pub allow_origins: Vec<String>,
    /// Regexes matched against the whole Origin (they are anchored for you).
    pub allow_origin_regex: Vec<String>,
    /// Method tokens; `["*"]` echoes the preflight's Access-Control-Request-Method.
    pub allow_methods: Vec<String>,
    /// Header names; `["*"]` echoes the preflight's Access-Control-Request-Headers.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: Option<u64>,
    /// Add `Vary: Origin` whenever the answer depends on the Origin (i.e. is not a plain `*`).
    pub add_vary: bool,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    regexes: Vec<Regex>,
    echo_methods: bool,
    allow_methods: Option<HeaderValue>,
    echo_headers: bool,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
    add_vary: bool,
}

/// How an allowed origin is answered.
enum Allowed {
    Any,
    Echo(HeaderValue),
}

fn is_wildcard_only(list: &[String]) -> bool {
    list.len() == 1 && list.first().is_some_and(|s| s.trim() == "*")
}

/// Joins validated names with "," (Traefik's separator); `None` for an empty list.
fn join(
    field: &str,
    list: &[String],
    valid: impl Fn(&str) -> bool,
) -> Result<Option<HeaderValue>, String> {
    let mut parts = Vec::with_capacity(list.len());
    for item in list {
        let item = item.trim();
        if item != "*" && !valid(item) {
            return Err(format!("cors {field} entry {item:?} is not a valid name"));
        }
        parts.push(item);
    }
    if parts.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&parts.join(","))
        .map(Some)
        .map_err(|e| format!("cors {field}: {e}"))
}

fn valid_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#'])
        && HeaderValue::from_str(origin).is_ok()
}

/// Adds `tokens` to the response's Vary (one line, no duplicates, nothing when `*`).
fn merge_vary(headers: &mut HeaderMap, tokens: &[&str]) {
    if tokens.is_empty() {
        return;
    }
    let mut parts: Vec<String> = Vec::new();
    for v in headers.get_all(VARY) {
        for t in String::from_utf8_lossy(v.as_bytes()).split(',') {
            let t = t.trim();
            if !t.is_empty() {
                parts.push(t.to_owned());
            }
        }
    }
    if parts.iter().any(|p| p == "*") {
        return;
    }
    let before = parts.len();
    for token in tokens {
        if !parts.iter().any(|p| p.eq_ignore_ascii_case(token)) {
            parts.push((*token).to_owned());
        }
    }
    if parts.len() == before {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&parts.join(", ")) {
        headers.insert(VARY, v);
    }
}

impl Cors {
    /// Validates and compiles `opts`. Errors name the field and the entry: an origin that is not
    /// `*`, `null` or `scheme://host[:port]` (a trailing slash or path would never match an
    /// Origin), a regex that does not compile, an invalid method or header name.
    /// `"*"` together with `allow_credentials` is accepted; see the module comment.
    pub fn new(opts: CorsOptions) -> Result<Cors, String> {
        let mut any_origin = false;
        let mut origins = Vec::new();
        for o in &opts.allow_origins {
            let o = o.trim();
            if o == "*" {
                any_origin = true;
            } else if valid_origin(o) {
                origins.push(o.to_owned());
            } else {
                return Err(format!(
                    "cors allow_origins entry {o:?} must be \"*\", \"null\" or scheme://host[:port] without a path"
                ));
            }
        }
        let mut regexes = Vec::new();
        for r in &opts.allow_origin_regex {
            let re = Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| format!("cors allow_origin_regex {r:?}: {e}"))?;
            regexes.push(re);
        }
        let allow_methods = join("allow_methods", &opts.allow_methods, |m| {
            Method::from_bytes(m.as_bytes()).is_ok()
        })?;
        let header_name = |h: &str| HeaderName::from_bytes(h.as_bytes()).is_ok();
        let allow_headers = join("allow_headers", &opts.allow_headers, header_name)?;
        let expose_headers = join("expose_headers", &opts.expose_headers, header_name)?;
        Ok(Cors {
            any_origin,
            origins,
            regexes,
            echo_methods: is_wildcard_only(&opts.allow_methods),
            allow_methods,
            echo_headers: is_wildcard_only(&opts.allow_headers),
            allow_headers,
            expose_headers,
            allow_credentials: opts.allow_credentials,
            max_age: opts.max_age.map(HeaderValue::from),
            add_vary: opts.add_vary,
        })
    }

    fn resolve(&self, origin: &HeaderValue) -> Option<Allowed> {
        if let Ok(o) = origin.to_str() {
            if self.origins.iter().any(|a| a.eq_ignore_ascii_case(o))
                || self.regexes.iter().any(|r| r.is_match(o))
            {
                return Some(Allowed::Echo(origin.clone()));
            }
        }
        self.any_origin.then_some(Allowed::Any)
    }

    /// Whether an answer for this resolution depends on the Origin (so caches must key on it).
    fn varies(&self, resolved: Option<&Allowed>) -> bool {
        match resolved {
            Some(Allowed::Any) => false,
            Some(Allowed::Echo(_)) => true,
            None => !self.origins.is_empty() || !self.regexes.is_empty() || !self.any_origin,
        }
    }

    fn allow_origin(&self, allowed: &Allowed, out: &mut HeaderMap) {
        let value = match allowed {
            Allowed::Any => HeaderValue::from_static("*"),
            Allowed::Echo(o) => o.clone(),
        };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.allow_credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// For a preflight request (OPTIONS + Origin + Access-Control-Request-Method): the headers of
    /// the direct answer, which the caller sends with status 204. None when the request is not a
    /// preflight.
    ///
    /// For an allowed origin: Access-Control-Allow-Origin, -Allow-Credentials (when configured),
    /// -Allow-Methods and -Allow-Headers (the configured lists, or the request's
    /// Access-Control-Request-Method / -Headers echoed when the list is `["*"]`), -Max-Age (when
    /// configured). A preflight from an origin that is not allowed gets Some(headers) without any
    /// Access-Control-Allow-* or Max-Age: the browser then blocks the actual request.
    /// With `add_vary`: Vary lists Origin when the answer depends on it, and the request headers
    /// that are echoed.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<HeaderMap> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let request_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut out = HeaderMap::new();
        let resolved = self.resolve(origin);
        if let Some(allowed) = &resolved {
            self.allow_origin(allowed, &mut out);
            let methods = if self.echo_methods {
                Some(request_method.clone())
            } else {
                self.allow_methods.clone()
            };
            if let Some(m) = methods {
                out.insert(ACCESS_CONTROL_ALLOW_METHODS, m);
            }
            let allow_headers = if self.echo_headers {
                headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned()
            } else {
                self.allow_headers.clone()
            };
            if let Some(h) = allow_headers {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, h);
            }
            if let Some(age) = &self.max_age {
                out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
            }
        }
        if self.add_vary {
            let mut vary = Vec::new();
            if self.varies(resolved.as_ref()) {
                vary.push("Origin");
            }
            if resolved.is_some() && self.echo_methods {
                vary.push("Access-Control-Request-Method");
            }
            if resolved.is_some() && self.echo_headers {
                vary.push("Access-Control-Request-Headers");
            }
            merge_vary(&mut out, &vary);
        }
        Some(out)
    }

    /// Adds the CORS headers for an actual (non-preflight) response to a request with this
    /// Origin: Access-Control-Allow-Origin, -Allow-Credentials (when configured), -Expose-Headers
    /// (when configured; replaces the upstream's). No Access-Control-* header when there is no
    /// Origin or it is not allowed. With `add_vary`, `Vary: Origin` is merged in whenever the
    /// answer depends on the Origin, including for a missing or refused Origin (otherwise a cache
    /// could serve the refused answer to an allowed origin); not when the policy is a plain `*`.
    pub fn apply(&self, origin: Option<&HeaderValue>, response_headers: &mut HeaderMap) {
        let resolved = origin.and_then(|o| self.resolve(o));
        if let Some(allowed) = &resolved {
            self.allow_origin(allowed, response_headers);
            if let Some(expose) = &self.expose_headers {
                response_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        if self.add_vary && self.varies(resolved.as_ref()) {
            merge_vary(response_headers, &["Origin"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn base() -> CorsOptions {
        CorsOptions {
            allow_origins: strs(&["https://app.example.com"]),
            allow_origin_regex: strs(&[r"https://[a-z0-9-]+\.example\.org"]),
            allow_methods: strs(&["GET", "POST", "PATCH"]),
            allow_headers: strs(&["Content-Type", "X-Token"]),
            expose_headers: strs(&["X-Request-Id"]),
            allow_credentials: true,
            max_age: Some(600),
            add_vary: true,
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Headers as sorted "name: value" lines, for exact comparisons.
    fn lines(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn validation_errors_name_the_entry() {
        let err = |o: CorsOptions| Cors::new(o).unwrap_err();
        let e = err(CorsOptions {
            allow_origin_regex: strs(&["(unclosed"]),
            ..CorsOptions::default()
        });
        assert!(
            e.starts_with("cors allow_origin_regex \"(unclosed\": "),
            "{e}"
        );
        assert_eq!(
            err(CorsOptions {
                allow_methods: strs(&["GET", "BAD METHOD"]),
                ..CorsOptions::default()
            }),
            "cors allow_methods entry \"BAD METHOD\" is not a valid name"
        );
        assert_eq!(
            err(CorsOptions {
                allow_headers: strs(&["X-Ok", "bad header"]),
                ..CorsOptions::default()
            }),
            "cors allow_headers entry \"bad header\" is not a valid name"
        );
        assert_eq!(
            err(CorsOptions {
                expose_headers: strs(&["x:y"]),
                ..CorsOptions::default()
            }),
            "cors expose_headers entry \"x:y\" is not a valid name"
        );
        assert_eq!(
            err(CorsOptions {
                allow_origins: strs(&["https://a.example/"]),
                ..CorsOptions::default()
            }),
            "cors allow_origins entry \"https://a.example/\" must be \"*\", \"null\" or scheme://host[:port] without a path"
        );
        assert!(Cors::new(CorsOptions {
            allow_origins: strs(&["*", "null", "http://localhost:3000"]),
            allow_credentials: true,
            ..CorsOptions::default()
        })
        .is_ok());
    }

    #[test]
    fn preflight_allowed_origin() {
        let cors = Cors::new(base()).unwrap();
        let h = req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-token"),
        ]);
        let out = cors.preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(
            lines(&out),
            vec![
                "access-control-allow-credentials: true",
                "access-control-allow-headers: Content-Type,X-Token",
                "access-control-allow-methods: GET,POST,PATCH",
                "access-control-allow-origin: https://app.example.com",
                "access-control-max-age: 600",
                "vary: Origin",
            ]
        );
    }

    #[test]
    fn preflight_regex_is_anchored() {
        let cors = Cors::new(base()).unwrap();
        let pre = |origin: &str| {
            cors.preflight(
                &Method::OPTIONS,
                &req(&[("origin", origin), ("access-control-request-method", "GET")]),
            )
            .unwrap()
        };
        let ok = pre("https://shop-1.example.org");
        assert_eq!(
            ok.get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://shop-1.example.org"
        );
        for bad in [
            "https://shop.example.org.evil.com",
            "https://evil.com?https://a.example.org",
            "http://shop.example.org",
        ] {
            let out = pre(bad);
            assert_eq!(lines(&out), vec!["vary: Origin"], "{bad}");
        }
    }

    #[test]
    fn preflight_refused_origin_has_no_allow_headers() {
        let cors = Cors::new(base()).unwrap();
        let h = req(&[
            ("origin", "https://evil.com"),
            ("access-control-request-method", "POST"),
        ]);
        let out = cors.preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(lines(&out), vec!["vary: Origin"]);
        let no_vary = Cors::new(CorsOptions {
            add_vary: false,
            ..base()
        })
        .unwrap();
        assert!(no_vary.preflight(&Method::OPTIONS, &h).unwrap().is_empty());
    }

    #[test]
    fn not_a_preflight() {
        let cors = Cors::new(base()).unwrap();
        let full = req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(cors.preflight(&Method::GET, &full).is_none());
        let no_acrm = req(&[("origin", "https://app.example.com")]);
        assert!(cors.preflight(&Method::OPTIONS, &no_acrm).is_none());
        let no_origin = req(&[("access-control-request-method", "GET")]);
        assert!(cors.preflight(&Method::OPTIONS, &no_origin).is_none());
    }

    #[test]
    fn wildcards_echo_request_lists() {
        let cors = Cors::new(CorsOptions {
            allow_origins: strs(&["*"]),
            allow_methods: strs(&["*"]),
            allow_headers: strs(&["*"]),
            add_vary: true,
            ..CorsOptions::default()
        })
        .unwrap();
        let h = req(&[
            ("origin", "https://any.site"),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "x-a, x-b"),
        ]);
        let out = cors.preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(
            lines(&out),
            vec![
                "access-control-allow-headers: x-a, x-b",
                "access-control-allow-methods: DELETE",
                "access-control-allow-origin: *",
                "vary: Access-Control-Request-Method, Access-Control-Request-Headers",
            ]
        );
        // A "*" among other names is sent literally.
        let lit = Cors::new(CorsOptions {
            allow_origins: strs(&["*"]),
            allow_headers: strs(&["*", "Authorization"]),
            ..CorsOptions::default()
        })
        .unwrap();
        let out = lit.preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(
            out.get(ACCESS_CONTROL_ALLOW_HEADERS).unwrap(),
            "*,Authorization"
        );
        assert!(out.get(ACCESS_CONTROL_MAX_AGE).is_none());
    }

    #[test]
    fn wildcard_with_credentials_answers_star() {
        let cors = Cors::new(CorsOptions {
            allow_origins: strs(&["*"]),
            allow_credentials: true,
            add_vary: true,
            ..CorsOptions::default()
        })
        .unwrap();
        let mut resp = HeaderMap::new();
        cors.apply(Some(&HeaderValue::from_static("https://x.test")), &mut resp);
        assert_eq!(
            lines(&resp),
            vec![
                "access-control-allow-credentials: true",
                "access-control-allow-origin: *",
            ]
        );
        // Plain "*": the answer never depends on the Origin, so no Vary even without one.
        let mut resp = HeaderMap::new();
        cors.apply(None, &mut resp);
        assert!(resp.is_empty());
    }

    #[test]
    fn exact_origin_beats_wildcard() {
        let cors = Cors::new(CorsOptions {
            allow_origins: strs(&["*", "https://app.example.com"]),
            add_vary: true,
            ..CorsOptions::default()
        })
        .unwrap();
        let mut resp = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("HTTPS://APP.example.com")),
            &mut resp,
        );
        assert_eq!(
            lines(&resp),
            vec![
                "access-control-allow-origin: HTTPS://APP.example.com",
                "vary: Origin",
            ]
        );
        let mut resp = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("https://other.test")),
            &mut resp,
        );
        assert_eq!(lines(&resp), vec!["access-control-allow-origin: *"]);
    }

    #[test]
    fn apply_actual_response() {
        let cors = Cors::new(base()).unwrap();
        let mut resp = req(&[
            ("vary", "Accept-Encoding"),
            ("access-control-expose-headers", "X-Upstream"),
        ]);
        cors.apply(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut resp,
        );
        assert_eq!(
            lines(&resp),
            vec![
                "access-control-allow-credentials: true",
                "access-control-allow-origin: https://app.example.com",
                "access-control-expose-headers: X-Request-Id",
                "vary: Accept-Encoding, Origin",
            ]
        );
        // Applying twice does not duplicate Vary.
        cors.apply(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut resp,
        );
        assert_eq!(resp.get(VARY).unwrap(), "Accept-Encoding, Origin");
    }

    #[test]
    fn apply_refused_or_missing_origin() {
        let cors = Cors::new(base()).unwrap();
        let mut resp = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("https://evil.com")),
            &mut resp,
        );
        assert_eq!(lines(&resp), vec!["vary: Origin"]);
        let mut resp = HeaderMap::new();
        cors.apply(None, &mut resp);
        assert_eq!(lines(&resp), vec!["vary: Origin"]);
        let quiet = Cors::new(CorsOptions {
            add_vary: false,
            ..base()
        })
        .unwrap();
        let mut resp = HeaderMap::new();
        quiet.apply(
            Some(&HeaderValue::from_static("https://evil.com")),
            &mut resp,
        );
        assert!(resp.is_empty());
        let mut resp = req(&[("vary", "*")]);
        cors.apply(None, &mut resp);
        assert_eq!(lines(&resp), vec!["vary: *"]);
    }
}
