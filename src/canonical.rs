//! The canonical request: one spelling of a request's path and host, made before any decision.
//!
//! Owns path canonicalisation (`canonical_path`: percent-encoded unreserved characters decoded,
//! other escapes upper-cased, `.`/`..` segments resolved — also when written `%2e` —, repeated
//! slashes merged when the entrypoint asks) and the `Host` / authority parser (`parse_host`:
//! lowercase name without trailing dot, a port that is a number in range, nothing else).
//!
//! Invariants: the output of `canonical_path` is a fixed point (canonicalising it again changes
//! nothing), starts with `/`, never has a dot segment and never climbs above `/`; every spelling
//! that reaches the same resource on a backend that decodes once has the same canonical form, and
//! ambiguous input (an encoded `/`, `\` or NUL, a raw `\`, a `..` above the root, a dot segment
//! with `;` parameters, a broken `%` escape) is refused with a `PathError` unless the entrypoint's
//! options allow it; raw non-ASCII bytes are escaped like their `%XX` spellings, and rule
//! literals are put in the same form (`canonical_literal`). Pure functions over text: no I/O, no allocation when the input is already
//! canonical. Must never: import anything from the rest of the crate (fuzz targets and property
//! tests drive it alone).

use std::borrow::Cow;
use std::fmt;

/// How an entrypoint canonicalises paths (Traefik's `sanitizePath` and encoded-character options,
/// nginx's `merge_slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Canonicalise at all (`false`: paths are routed and forwarded as received, Traefik's
    /// `sanitizePath=false`).
    pub sanitize: bool,
    /// `//a///b` → `/a/b` (nginx `merge_slashes on`).
    pub merge_slashes: bool,
    /// Accept `%2F` (kept encoded) instead of answering 400.
    pub allow_encoded_slash: bool,
    /// Accept `%5C` and a raw `\` (kept, the raw one encoded) instead of answering 400.
    pub allow_encoded_backslash: bool,
    /// Accept `%00` (kept encoded) instead of answering 400.
    pub allow_encoded_null: bool,
    /// Clamp a `..` that climbs above `/` at the root instead of answering 400.
    pub allow_above_root: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            sanitize: true,
            merge_slashes: true,
            allow_encoded_slash: false,
            allow_encoded_backslash: false,
            allow_encoded_null: false,
            allow_above_root: false,
        }
    }
}

/// Why a path was refused (each is a 400 for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form: does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    EncodedSlash,
    Backslash,
    EncodedNull,
    /// A `..` that would climb above `/`.
    AboveRoot,
    /// A dot segment carrying `;` parameters (`/..;/x`), which some servers resolve.
    DotSegmentParams,
    /// A rewrite produced a dot segment (a prefix strip that landed inside `/api./x`).
    RewriteDotSegment,
}

impl PathError {
    /// The short reason given to the client.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path must start with /",
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::Backslash => "backslash in path",
            PathError::EncodedNull => "encoded NUL in path",
            PathError::AboveRoot => "path climbs above the root",
            PathError::DotSegmentParams => "dot segment with parameters in path",
            PathError::RewriteDotSegment => "rewritten path has a dot segment",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.push(b'%');
    out.push(HEX_UPPER.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
    out.push(HEX_UPPER.get(usize::from(b & 15)).copied().unwrap_or(b'0'));
}

/// Whether `path` certainly needs no work: no escapes, no backslash, no dot segment, no empty
/// segment. The common case; checked without allocating.
fn plainly_canonical(path: &[u8]) -> bool {
    let mut prev_slash = false;
    let mut seg_start = true;
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        match b {
            b'%' | b'\\' => return false,
            0x80.. => return false,
            b'/' => {
                if prev_slash {
                    return false;
                }
                prev_slash = true;
                seg_start = true;
                i += 1;
                continue;
            }
            b'.' if seg_start => return false,
            _ => {}
        }
        prev_slash = false;
        seg_start = false;
        i += 1;
    }
    true
}

/// The canonical form of an origin-form path (no query). Borrowed when `path` already is one.
///
/// Steps: decode `%XX` of unreserved characters and upper-case the hex of the rest (refusing
/// encoded `/`, `\`, NUL unless allowed); then one pass over the segments that, with
/// `merge_slashes`, drops empty segments as it resolves `.` and `..` (as nginx does: `/a//../x` is
/// `/x`, where RFC 3986 §5.2.4 alone would give `/a/x`; the server receives this canonical form,
/// so router and server never disagree), a `..` above the root refused unless allowed.
pub fn canonical_path<'a>(path: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        // `OPTIONS *` is the one origin server target without a leading slash.
        if path == "*" {
            return Ok(Cow::Borrowed(path));
        }
        return Err(PathError::NotAbsolute);
    }
    if !opts.sanitize {
        return Ok(Cow::Borrowed(path));
    }
    if plainly_canonical(raw) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Escapes.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value);
                let lo = raw.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let c = (hi << 4) | lo;
                if is_unreserved(c) {
                    decoded.push(c);
                } else {
                    match c {
                        b'/' if !opts.allow_encoded_slash => return Err(PathError::EncodedSlash),
                        b'\\' if !opts.allow_encoded_backslash => return Err(PathError::Backslash),
                        0 if !opts.allow_encoded_null => return Err(PathError::EncodedNull),
                        _ => push_escaped(&mut decoded, c),
                    }
                }
                i += 3;
            }
            b'\\' => {
                if !opts.allow_encoded_backslash {
                    return Err(PathError::Backslash);
                }
                push_escaped(&mut decoded, b);
                i += 1;
            }
            // Raw non-ASCII (not valid in a request target, but sent): the escaped spelling is the
            // canonical one, as for `%C3%A9`.
            0x80.. => {
                push_escaped(&mut decoded, b);
                i += 1;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // 2. Segments. `decoded` starts with `/` (the first byte was a literal slash).
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split(|b| *b == b'/').skip(1) {
        trailing_slash = false;
        let name = seg.split(|b| *b == b';').next().unwrap_or(seg);
        let dot = name == b".";
        let dotdot = name == b"..";
        if (dot || dotdot) && name.len() != seg.len() {
            return Err(PathError::DotSegmentParams);
        }
        if dot {
            trailing_slash = true;
        } else if dotdot {
            if segments.pop().is_none() && !opts.allow_above_root {
                return Err(PathError::AboveRoot);
            }
            // `/a/..` and `/a/../` both name the folder `/`: a slash follows.
            trailing_slash = true;
        } else if seg.is_empty() && opts.merge_slashes {
            trailing_slash = true;
        } else {
            segments.push(seg);
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // Only ASCII is left (non-ASCII bytes were escaped), so this cannot fail; the fallback keeps
    // the contract without a panic.
    match String::from_utf8(out) {
        Ok(s) if s == path => Ok(Cow::Borrowed(path)),
        Ok(s) => Ok(Cow::Owned(s)),
        Err(_) => Err(PathError::BadEscape),
    }
}

/// The canonical form of a path written in a rule (`Path(`/café`)`), so it compares with canonical
/// request paths; a literal that is not a valid path is kept as written (it matches nothing new).
pub fn canonical_literal(path: &str) -> Cow<'_, str> {
    canonical_path(path, &PathOptions::default()).unwrap_or(Cow::Borrowed(path))
}

/// Re-checks a path a middleware or hook rewrote: it is canonicalised with the same options, and
/// a dot segment the rewrite produced (a strip that landed inside `/api./x`) is refused rather
/// than silently resolved.
pub fn recheck_rewritten(path: &str, opts: &PathOptions) -> Result<String, PathError> {
    if opts.sanitize && has_dot_segment(path) {
        return Err(PathError::RewriteDotSegment);
    }
    canonical_path(path, opts).map(Cow::into_owned)
}

/// Whether a segment of `path` is `.` or `..` once its unreserved escapes are decoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let name = seg.split(';').next().unwrap_or(seg);
        let lower = name.to_ascii_lowercase();
        let undotted = lower.replace("%2e", ".");
        undotted == "." || undotted == ".."
    })
}

/// A parsed `Host` header or request-target authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Lowercase, without a trailing dot; IPv6 literals keep their brackets (`[::1]`).
    pub host: String,
    pub port: Option<u16>,
}

/// Why a `Host` was refused (each is a 400 for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Empty,
    /// `user@host`.
    Userinfo,
    /// `a.test, b.test`.
    SeveralValues,
    /// A port that is not a number from 0 to 65535, or an empty one.
    BadPort,
    /// `a.test:1:2`.
    TwoPorts,
    /// A character no host name has, an empty label or a malformed IPv6 literal.
    BadName,
}

impl HostError {
    pub fn reason(self) -> &'static str {
        match self {
            HostError::Empty => "empty Host",
            HostError::Userinfo => "userinfo in Host",
            HostError::SeveralValues => "several values in Host",
            HostError::BadPort => "invalid port in Host",
            HostError::TwoPorts => "two ports in Host",
            HostError::BadName => "invalid Host",
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HostError {}

fn parse_port(p: &[u8]) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(HostError::BadPort);
    }
    let mut n: u32 = 0;
    for d in p {
        n = n * 10 + u32::from(d - b'0');
    }
    u16::try_from(n).map_err(|_| HostError::BadPort)
}

/// Parses a `Host` value (`name[:port]`, `[v6][:port]`, `v4[:port]`).
pub fn parse_host(raw: &[u8]) -> Result<HostPort, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains(&b',') {
        return Err(HostError::SeveralValues);
    }
    if raw.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (name, port) = if raw.first() == Some(&b'[') {
        let close = raw
            .iter()
            .position(|b| *b == b']')
            .ok_or(HostError::BadName)?;
        let inner = raw.get(1..close).ok_or(HostError::BadName)?;
        let ok_inner = !inner.is_empty()
            && inner.contains(&b':')
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        if !ok_inner {
            return Err(HostError::BadName);
        }
        let name = raw.get(..=close).ok_or(HostError::BadName)?;
        let rest = raw.get(close + 1..).unwrap_or_default();
        let port = match rest.split_first() {
            None => None,
            Some((b':', p)) => Some(parse_port(p)?),
            Some(_) => return Err(HostError::BadName),
        };
        (name, port)
    } else {
        let mut parts = raw.splitn(3, |b| *b == b':');
        let name = parts.next().unwrap_or_default();
        let port = parts.next();
        if parts.next().is_some() {
            return Err(HostError::TwoPorts);
        }
        let port = match port {
            Some(p) => Some(parse_port(p)?),
            None => None,
        };
        (name, port)
    };
    let name = if name.first() == Some(&b'[') {
        name
    } else {
        // One trailing dot is the root label (`example.com.`); an empty label anywhere else is
        // not a name.
        let name = name.strip_suffix(b".").unwrap_or(name);
        let valid = !name.is_empty()
            && name.split(|b| *b == b'.').all(|label| !label.is_empty())
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(HostError::BadName);
        }
        name
    };
    let host = String::from_utf8(name.to_ascii_lowercase()).map_err(|_| HostError::BadName)?;
    Ok(HostPort { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonical_path(p, &PathOptions::default()).map(Cow::into_owned)
    }

    #[test]
    fn spellings_of_one_path_agree() {
        for p in [
            "/admin",
            "/%61dmin",
            "/%61%64%6D%69%6E",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/x/%2e%2e/admin",
            "/x/%2E./admin",
            "/x/.%2E/admin",
            "/%2e/admin",
            "///./admin",
        ] {
            assert_eq!(canon(p).unwrap(), "/admin", "{p}");
        }
        assert_eq!(canon("/api/../admin").unwrap(), "/admin");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/a/./").unwrap(), "/a/");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canon("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(canon("/").unwrap(), "/");
        assert_eq!(canon("*").unwrap(), "*");
        assert_eq!(canon("/a;x=1/b").unwrap(), "/a;x=1/b");
        assert_eq!(canon("/café").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/x/../caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn canonical_input_is_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c..d/.e", "/a;b"] {
            assert!(
                matches!(
                    canonical_path(p, &PathOptions::default()),
                    Ok(Cow::Borrowed(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_refused_by_default() {
        assert_eq!(canon("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(canon("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(canon("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(canon("/a\\b"), Err(PathError::Backslash));
        assert_eq!(canon("/a%00b"), Err(PathError::EncodedNull));
        assert_eq!(canon("/.."), Err(PathError::AboveRoot));
        assert_eq!(canon("/a/../../etc"), Err(PathError::AboveRoot));
        assert_eq!(canon("/a/%2e%2e/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(canon("/a/..;/x"), Err(PathError::DotSegmentParams));
        assert_eq!(canon("/a/.;x/x"), Err(PathError::DotSegmentParams));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%4"), Err(PathError::BadEscape));
        assert_eq!(canon("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn options_allow_what_they_name() {
        let opts = PathOptions {
            merge_slashes: false,
            allow_encoded_slash: true,
            allow_encoded_backslash: true,
            allow_encoded_null: true,
            allow_above_root: true,
            ..PathOptions::default()
        };
        let c = |p| canonical_path(p, &opts).map(Cow::into_owned);
        assert_eq!(c("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(c("/a\\b").unwrap(), "/a%5Cb");
        assert_eq!(c("/a%00").unwrap(), "/a%00");
        assert_eq!(c("/../../x").unwrap(), "/x");
        assert_eq!(c("//a//b").unwrap(), "//a//b");
        let raw = PathOptions {
            sanitize: false,
            ..PathOptions::default()
        };
        assert_eq!(
            canonical_path("/a/../%2f", &raw).unwrap(),
            "/a/../%2f",
            "sanitize off passes the path through"
        );
    }

    #[test]
    fn rewritten_paths_are_rechecked() {
        let o = PathOptions::default();
        assert_eq!(
            recheck_rewritten("/./x", &o),
            Err(PathError::RewriteDotSegment)
        );
        assert_eq!(
            recheck_rewritten("/../x", &o),
            Err(PathError::RewriteDotSegment)
        );
        assert_eq!(
            recheck_rewritten("/%2E/x", &o),
            Err(PathError::RewriteDotSegment)
        );
        assert_eq!(recheck_rewritten("//x", &o).unwrap(), "/x");
        assert_eq!(recheck_rewritten("/x.y", &o).unwrap(), "/x.y");
    }

    #[test]
    fn hosts() {
        let h = |s: &str| parse_host(s.as_bytes());
        assert_eq!(
            h("Example.COM.:8080").unwrap(),
            HostPort {
                host: "example.com".into(),
                port: Some(8080)
            }
        );
        assert_eq!(h("[::1]:80").unwrap().host, "[::1]");
        assert_eq!(h("[::1]").unwrap().port, None);
        assert_eq!(h("127.0.0.1").unwrap().host, "127.0.0.1");
        assert_eq!(h("my_service").unwrap().host, "my_service");
        assert_eq!(h("a.test:99999"), Err(HostError::BadPort));
        assert_eq!(h("a.test:8o"), Err(HostError::BadPort));
        assert_eq!(h("a.test:"), Err(HostError::BadPort));
        assert_eq!(h("a.test:1:2"), Err(HostError::TwoPorts));
        assert_eq!(h("u@a.test"), Err(HostError::Userinfo));
        assert_eq!(h("a.test,b.test"), Err(HostError::SeveralValues));
        assert_eq!(h(""), Err(HostError::Empty));
        assert_eq!(h("a..test"), Err(HostError::BadName));
        assert_eq!(h(".a.test"), Err(HostError::BadName));
        assert_eq!(h("a/b"), Err(HostError::BadName));
        assert_eq!(h("a b"), Err(HostError::BadName));
        assert_eq!(h("[::1"), Err(HostError::BadName));
        assert_eq!(h("[::1]x"), Err(HostError::BadName));
        assert_eq!(h("[zz]"), Err(HostError::BadName));
    }
}
