//! Redirects (Traefik's `redirectScheme` and `redirectRegex`): decide whether a request is
//! answered with a redirect, and build its `Location` and status.
//!
//! Owns the validated configuration; `location` never fails once built. Status rule (both): a
//! permanent redirect is 301 for GET/HEAD and 308 otherwise, a temporary one 302 for GET/HEAD and
//! 307 otherwise, so that non-GET methods keep their method and body.
//! Must never: redirect a request to the URL it already has (a loop), or trust a Host it cannot
//! parse into a host (no redirect rather than a Location to nowhere).

use http::{Method, StatusCode};
use regex::Regex;

fn status_for(permanent: bool, method: &Method) -> StatusCode {
    let safe = method == Method::GET || method == Method::HEAD;
    match (permanent, safe) {
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits a Host header value into the host as it must appear in a URL (IPv6 in brackets) and
/// its port. `None` when there is no host. A port that is not a number is dropped.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        (format!("[{ip}]"), port)
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 literal: no port can be told apart from it.
        (format!("[{host}]"), None)
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()),
            None => (host.to_owned(), None),
        }
    };
    if name.is_empty() || name == "[]" {
        return None;
    }
    Some((name, port))
}

/// Redirects to another scheme (and optionally port), keeping host, path and query.
#[derive(Debug, Clone)]
pub struct RedirectScheme {
    scheme: String,
    port: Option<u16>,
    permanent: bool,
}

impl RedirectScheme {
    /// `scheme` is an RFC 3986 scheme token ("https", "http", ...), stored lowercase; `port` None
    /// means the scheme's default port, omitted in the URL. Errors on an empty or invalid scheme.
    pub fn new(scheme: &str, port: Option<u16>, permanent: bool) -> Result<RedirectScheme, String> {
        let scheme = scheme.trim();
        if scheme.is_empty() {
            return Err("redirect_scheme: scheme is empty".to_owned());
        }
        let mut bytes = scheme.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(format!(
                "redirect_scheme: scheme {scheme:?} is not a valid scheme (a letter, then letters, digits, '+', '-' or '.')"
            ));
        }
        if port == Some(0) {
            return Err("redirect_scheme: port 0 is not a valid port".to_owned());
        }
        Ok(RedirectScheme {
            scheme: scheme.to_ascii_lowercase(),
            port,
            permanent,
        })
    }

    /// `req_scheme`: the scheme the client used ("http"; after honouring a trusted
    /// X-Forwarded-Proto); `host`: the Host header value, possibly with a port; `path_and_query`:
    /// "/a?b". None when the request already uses the target scheme (and port, if one is set),
    /// or when `host` holds no host. Else the Location: scheme://host[:port]/path?query, where the
    /// request's port is replaced by the configured one, or dropped (no port configured, or the
    /// configured one is the scheme's default).
    pub fn location(&self, req_scheme: &str, host: &str, path_and_query: &str) -> Option<String> {
        let (name, req_port) = split_host(host)?;
        let req_scheme = req_scheme.trim().to_ascii_lowercase();
        if req_scheme == self.scheme {
            let effective = req_port.or_else(|| default_port(&req_scheme));
            if self.port.is_none() || self.port == effective {
                return None;
            }
        }
        let port = match self.port {
            Some(p) if Some(p) != default_port(&self.scheme) => format!(":{p}"),
            _ => String::new(),
        };
        let path = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else if path_and_query.is_empty() || path_and_query == "*" {
            "/".to_owned()
        } else {
            format!("/{path_and_query}")
        };
        Some(format!("{}://{name}{port}{path}", self.scheme))
    }

    pub fn status(&self, method: &Method) -> StatusCode {
        status_for(self.permanent, method)
    }

    /// `redirect_scheme("https")`, `redirect_scheme("https", port: 8443, permanent)`.
    pub fn describe(&self) -> String {
        let port = self
            .port
            .map(|p| format!(", port: {p}"))
            .unwrap_or_default();
        let permanent = if self.permanent { ", permanent" } else { "" };
        format!("redirect_scheme({:?}{port}{permanent})", self.scheme)
    }
}

/// Redirects when a regex matches the full request URL, to the URL with every match replaced.
#[derive(Debug, Clone)]
pub struct RedirectRegex {
    regex: Regex,
    replacement: String,
    permanent: bool,
}

/// Every `$ref` / `${ref}` in a replacement, as the regex crate reads them (`$$` is a literal).
fn group_refs(replacement: &str) -> Vec<&str> {
    let mut refs = Vec::new();
    let mut rest = replacement;
    while let Some(pos) = rest.find('$') {
        let after = rest.get(pos + 1..).unwrap_or_default();
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.split_once('}') {
                Some((name, tail)) => {
                    refs.push(name);
                    rest = tail;
                }
                // An unclosed brace is taken literally by the regex crate.
                None => rest = braced,
            }
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len > 0 {
                refs.push(after.get(..len).unwrap_or_default());
            }
            rest = after.get(len..).unwrap_or_default();
        }
    }
    refs
}

impl RedirectRegex {
    /// Errors (naming the offending value) on an empty or invalid regex, an empty replacement,
    /// and a replacement referring to a group the regex does not have, which the regex crate
    /// would silently expand to nothing (`$1x` names group "1x"; write `${1}x`).
    pub fn new(regex: &str, replacement: &str, permanent: bool) -> Result<RedirectRegex, String> {
        if regex.is_empty() {
            return Err("redirect_regex: regex is empty".to_owned());
        }
        if replacement.trim().is_empty() {
            return Err(format!("redirect_regex {regex:?}: replacement is empty"));
        }
        let re = Regex::new(regex).map_err(|e| format!("redirect_regex {regex:?}: {e}"))?;
        for name in group_refs(replacement) {
            let known = match name.parse::<usize>() {
                Ok(i) => i < re.captures_len(),
                Err(_) => re.capture_names().flatten().any(|n| n == name),
            };
            if !known {
                return Err(format!(
                    "redirect_regex {regex:?}: replacement {replacement:?} refers to group {name:?}, which the regex does not have"
                ));
            }
        }
        Ok(RedirectRegex {
            regex: re,
            replacement: replacement.to_owned(),
            permanent,
        })
    }

    /// `url` is the full request URL "scheme://host[:port]/path?query". None when the regex does
    /// not match, or when the result equals `url` (a redirect to itself would loop). Else `url`
    /// with every match replaced by the replacement, `$1` / `${name}` expanded (Traefik's
    /// ReplaceAllString; with an anchored `^...$` regex that is the expanded replacement alone).
    pub fn location(&self, url: &str) -> Option<String> {
        if !self.regex.is_match(url) {
            return None;
        }
        let out = self.regex.replace_all(url, self.replacement.as_str());
        (out != url).then(|| out.into_owned())
    }

    pub fn status(&self, method: &Method) -> StatusCode {
        status_for(self.permanent, method)
    }

    /// `redirect_regex("^http://(.*)$", "https://$1")`, with `, permanent` when it is.
    pub fn describe(&self) -> String {
        let permanent = if self.permanent { ", permanent" } else { "" };
        format!(
            "redirect_regex({:?}, {:?}{permanent})",
            self.regex.as_str(),
            self.replacement
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https() -> RedirectScheme {
        RedirectScheme::new("https", None, true).unwrap()
    }

    #[test]
    fn scheme_validation() {
        assert_eq!(
            RedirectScheme::new("", None, false).unwrap_err(),
            "redirect_scheme: scheme is empty"
        );
        assert_eq!(
            RedirectScheme::new("  ", None, false).unwrap_err(),
            "redirect_scheme: scheme is empty"
        );
        assert_eq!(
            RedirectScheme::new("ht tp", None, false).unwrap_err(),
            "redirect_scheme: scheme \"ht tp\" is not a valid scheme (a letter, then letters, digits, '+', '-' or '.')"
        );
        assert!(RedirectScheme::new("https://", None, false).is_err());
        assert!(RedirectScheme::new("1http", None, false).is_err());
        assert_eq!(
            RedirectScheme::new("https", Some(0), false).unwrap_err(),
            "redirect_scheme: port 0 is not a valid port"
        );
        let r = RedirectScheme::new("HTTPS", None, false).unwrap();
        assert_eq!(r.describe(), "redirect_scheme(\"https\")");
        assert!(RedirectScheme::new("git+ssh", None, false).is_ok());
    }

    #[test]
    fn scheme_locations() {
        let r = https();
        assert_eq!(
            r.location("http", "example.com", "/a?b=1").as_deref(),
            Some("https://example.com/a?b=1")
        );
        // The request's port is dropped: the target is the scheme's default port.
        assert_eq!(
            r.location("http", "example.com:8080", "/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            r.location("HTTP", "[::1]:8080", "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            r.location("http", "[::1]", "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            r.location("http", "::1", "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            r.location("http", "example.com", "").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            r.location("http", "example.com", "*").as_deref(),
            Some("https://example.com/")
        );
        // Already https: no redirect, whatever the port.
        assert_eq!(r.location("https", "example.com", "/"), None);
        assert_eq!(r.location("https", "example.com:8443", "/"), None);
        // No host: nothing to redirect to.
        assert_eq!(r.location("http", "", "/"), None);
        assert_eq!(r.location("http", ":80", "/"), None);
        assert_eq!(r.location("http", "[]:80", "/"), None);
    }

    #[test]
    fn scheme_with_port() {
        let r = RedirectScheme::new("https", Some(8443), false).unwrap();
        assert_eq!(
            r.location("http", "example.com:8080", "/p?q").as_deref(),
            Some("https://example.com:8443/p?q")
        );
        assert_eq!(
            r.location("http", "[2001:db8::1]", "/").as_deref(),
            Some("https://[2001:db8::1]:8443/")
        );
        // Same scheme, other port: redirected to the configured port.
        assert_eq!(
            r.location("https", "example.com", "/").as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(r.location("https", "example.com:8443", "/"), None);
        assert_eq!(r.describe(), "redirect_scheme(\"https\", port: 8443)");

        // A configured default port is omitted, and matches a port-less request.
        let r = RedirectScheme::new("https", Some(443), true).unwrap();
        assert_eq!(
            r.location("http", "example.com:80", "/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(r.location("https", "example.com", "/"), None);
        assert_eq!(r.location("https", "example.com:443", "/"), None);
        assert_eq!(
            r.location("https", "example.com:444", "/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            r.describe(),
            "redirect_scheme(\"https\", port: 443, permanent)"
        );

        // Downgrade to http on a custom port.
        let r = RedirectScheme::new("http", Some(8080), false).unwrap();
        assert_eq!(
            r.location("https", "example.com", "/").as_deref(),
            Some("http://example.com:8080/")
        );
        assert_eq!(r.location("http", "example.com:8080", "/"), None);
        assert_eq!(
            r.location("http", "example.com", "/").as_deref(),
            Some("http://example.com:8080/")
        );
    }

    #[test]
    fn statuses() {
        let perm = https();
        let temp = RedirectScheme::new("https", None, false).unwrap();
        assert_eq!(perm.status(&Method::GET), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(perm.status(&Method::HEAD), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(perm.status(&Method::POST), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            perm.status(&Method::OPTIONS),
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(temp.status(&Method::GET), StatusCode::FOUND);
        assert_eq!(temp.status(&Method::HEAD), StatusCode::FOUND);
        assert_eq!(temp.status(&Method::PUT), StatusCode::TEMPORARY_REDIRECT);
        let rr = RedirectRegex::new("^http://a/(.*)", "http://b/$1", true).unwrap();
        assert_eq!(rr.status(&Method::GET), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(rr.status(&Method::DELETE), StatusCode::PERMANENT_REDIRECT);
        let rr = RedirectRegex::new("^http://a/(.*)", "http://b/$1", false).unwrap();
        assert_eq!(rr.status(&Method::GET), StatusCode::FOUND);
        assert_eq!(rr.status(&Method::PATCH), StatusCode::TEMPORARY_REDIRECT);
    }

    #[test]
    fn regex_validation() {
        assert_eq!(
            RedirectRegex::new("", "x", false).unwrap_err(),
            "redirect_regex: regex is empty"
        );
        assert_eq!(
            RedirectRegex::new("^a", " ", false).unwrap_err(),
            "redirect_regex \"^a\": replacement is empty"
        );
        let e = RedirectRegex::new("(", "x", false).unwrap_err();
        assert!(e.starts_with("redirect_regex \"(\": "), "{e}");
        assert_eq!(
            RedirectRegex::new("^http://(.*)", "https://$1x", false).unwrap_err(),
            "redirect_regex \"^http://(.*)\": replacement \"https://$1x\" refers to group \"1x\", which the regex does not have"
        );
        assert_eq!(
            RedirectRegex::new("^http://(.*)", "https://$2", false).unwrap_err(),
            "redirect_regex \"^http://(.*)\": replacement \"https://$2\" refers to group \"2\", which the regex does not have"
        );
        assert!(RedirectRegex::new("^http://(?P<rest>.*)", "https://${rest}", false).is_ok());
        assert!(RedirectRegex::new("^http://(.*)", "https://${1}x$$", false).is_ok());
        assert!(RedirectRegex::new("^http://(.*)", "https://$0", false).is_ok());
        assert!(RedirectRegex::new("^http://(.*)", "https://${unclosed", false).is_ok());
    }

    #[test]
    fn group_refs_parse_like_the_regex_crate() {
        assert_eq!(group_refs("a$1b"), vec!["1b"]);
        assert_eq!(group_refs("a${1}b$name-$$x$"), vec!["1", "name"]);
        assert_eq!(group_refs("$$1"), Vec::<&str>::new());
        assert_eq!(group_refs("${a}${b"), vec!["a"]);
    }

    #[test]
    fn regex_locations() {
        let r = RedirectRegex::new(
            r"^http://localhost(:\d+)?/(.*)$",
            "https://example.com/${2}",
            false,
        )
        .unwrap();
        assert_eq!(
            r.location("http://localhost:8080/a/b?c=d").as_deref(),
            Some("https://example.com/a/b?c=d")
        );
        assert_eq!(
            r.location("http://localhost/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(r.location("https://localhost/a"), None);

        let named = RedirectRegex::new(
            r"^https?://(?P<host>[^/]+)/old/(?P<rest>.*)",
            "https://${host}/new/$rest",
            true,
        )
        .unwrap();
        assert_eq!(
            named.location("http://a.test/old/x?y").as_deref(),
            Some("https://a.test/new/x?y")
        );

        // Unanchored: every match inside the URL is replaced, the rest is kept.
        let sub = RedirectRegex::new("/v1/", "/v2/", false).unwrap();
        assert_eq!(
            sub.location("http://api.test/v1/users/v1/x").as_deref(),
            Some("http://api.test/v2/users/v2/x")
        );

        // A result equal to the input is no redirect (it would loop).
        let same = RedirectRegex::new(r"^(https://.*)$", "$1", false).unwrap();
        assert_eq!(same.location("https://a.test/"), None);
        let www = RedirectRegex::new(
            r"^https?://(?:www\.)?a\.test/(.*)",
            "https://www.a.test/$1",
            true,
        )
        .unwrap();
        assert_eq!(www.location("https://www.a.test/p"), None);
        assert_eq!(
            www.location("http://a.test/p").as_deref(),
            Some("https://www.a.test/p")
        );
        assert_eq!(
            www.describe(),
            r#"redirect_regex("^https?://(?:www\\.)?a\\.test/(.*)", "https://www.a.test/$1", permanent)"#
        );
        assert_eq!(sub.describe(), r#"redirect_regex("/v1/", "/v2/")"#);
    }
}
