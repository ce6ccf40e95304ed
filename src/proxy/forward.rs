//! Header rules between downstream and upstream: hop-by-hop removal and `X-Forwarded-*`.
//!
//! Invariants: headers named in a client's `Connection` header are removed *before* the router
//! sets its own, and can never remove `Host`, `X-Forwarded-*` or `X-Real-Ip`; from clients
//! outside the trusted networks every incoming `X-Forwarded-*`/`X-Real-Ip` is dropped, so what
//! the backend sees in them was written by this router; an underscore spelling of a forwarding
//! header (`X_Forwarded_For`) is dropped for every client; `Content-Length` leaves as one plain
//! decimal. Of a client's `TE` only `trailers` passes (as `te: trailers`, which gRPC servers
//! require; `exchange::upstream_head` removes it again for HTTP/1.1 servers); a response's
//! `Trailer` announcement passes, so an HTTP/1.1 client that asked for trailers gets them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones proxies drop).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_forwarding_header(name: &str) -> bool {
    name.starts_with("x-forwarded-") || name == "x-real-ip"
}

/// Names listed in `Connection` headers (lowercase, valid names only).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers and those the `Connection` header lists, except `protect`ed ones.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, protect: impl Fn(&HeaderName) -> bool) {
    if headers.contains_key(header::CONNECTION) {
        for name in connection_listed(headers) {
            if !protect(&name) {
                headers.remove(&name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// What the router knows about the downstream side of one request.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// The client's address as a header value, made once per connection.
    pub client_ip: &'a HeaderValue,
    pub trusted: bool,
    /// `http` or `ws`.
    pub proto: &'static str,
    pub server_name: &'a HeaderValue,
}

/// Rewrites request headers for the upstream: drop hop-by-hop and untrusted forwarding headers,
/// then set `X-Forwarded-*` and `X-Real-Ip`.
pub fn prepare_request(headers: &mut HeaderMap, down: &Downstream<'_>) {
    // Forwarding headers under another spelling (`X_Forwarded_For`, which CGI-style backends
    // fold into the same variable) never pass, trusted client or not; from untrusted clients
    // neither do the real spellings nor RFC 7239's `Forwarded`.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            (k.contains('_') && is_forwarding_header(&k.replace('_', "-")))
                || (!down.trusted && (is_forwarding_header(k) || k == "forwarded"))
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    canonical_content_length(headers);
    let te_trailers = wants_trailers(headers);
    remove_hop_by_hop(headers, |n| {
        n == header::HOST || is_forwarding_header(n.as_str())
    });
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }

    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if prior.is_empty() {
        headers.insert(X_FORWARDED_FOR, down.client_ip.clone());
    } else {
        let ip = down.client_ip.to_str().unwrap_or_default();
        let chain = format!("{}, {ip}", prior.join(", "));
        set(headers, X_FORWARDED_FOR, &chain);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(down.proto));
    }
    let host = headers.get(header::HOST).cloned();
    if let Some(host) = &host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    if !headers.contains_key(&X_FORWARDED_PORT) {
        let port = host.as_ref().and_then(|h| port_of(h.as_bytes()));
        let value = port
            .and_then(|p| HeaderValue::from_bytes(p).ok())
            .unwrap_or_else(|| HeaderValue::from_static("80"));
        headers.insert(X_FORWARDED_PORT, value);
    }
    headers.insert(X_FORWARDED_SERVER, down.server_name.clone());
    if !headers.contains_key(&X_REAL_IP) {
        headers.insert(X_REAL_IP, down.client_ip.clone());
    }
}

/// Re-writes `Content-Length` as one plain decimal (`010` or `5, 5` never reach a server as
/// written). The downstream parser already refused values that disagree or are not numbers;
/// anything it let through that is still not one number is removed, and the upstream client
/// frames the body itself.
fn canonical_content_length(headers: &mut HeaderMap) {
    let Some(first) = headers.get(header::CONTENT_LENGTH) else {
        return;
    };
    let parsed = first
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let plain = parsed.is_some_and(|n| {
        let all = headers.get_all(header::CONTENT_LENGTH).iter().count();
        all == 1 && first.as_bytes() == n.to_string().as_bytes()
    });
    if plain {
        return;
    }
    headers.remove(header::CONTENT_LENGTH);
    if let Some(n) = parsed {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The port of a `host[:port]` / `[v6]:port` value, if it names one.
fn port_of(host: &[u8]) -> Option<&[u8]> {
    let colon = host.iter().rposition(|b| *b == b':')?;
    let port = host.get(colon + 1..)?;
    (!port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)).then_some(port)
}

/// Whether the request's `TE` lists `trailers` (the one value that may pass).
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Removes hop-by-hop headers from an upstream response; the `Trailer` announcement stays (the
/// trailers themselves pass as frames of the body).
pub fn clean_response(headers: &mut HeaderMap) {
    let trailer: Vec<HeaderValue> = headers.get_all(header::TRAILER).iter().cloned().collect();
    remove_hop_by_hop(headers, |_| false);
    for v in trailer {
        headers.append(header::TRAILER, v);
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A client asks for a websocket when `Connection` lists `upgrade` and `Upgrade` is `websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade_listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade_listed
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn untrusted_client_cannot_spoof_or_strip() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, hv("app.example.com:8443"));
        h.insert(X_FORWARDED_FOR, hv("1.2.3.4"));
        h.insert(X_REAL_IP, hv("1.2.3.4"));
        h.insert("x-forwarded-user", hv("admin"));
        h.insert(
            header::CONNECTION,
            hv("X-Forwarded-For, x-real-ip, host, x-secret, keep-alive"),
        );
        h.insert("x-secret", hv("s"));
        h.insert("keep-alive", hv("timeout=5"));
        let name = hv("router-1");
        prepare_request(
            &mut h,
            &Downstream {
                client_ip: &HeaderValue::from_static("10.0.0.7"),
                trusted: false,
                proto: "http",
                server_name: &name,
            },
        );
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.7");
        assert_eq!(h.get(&X_REAL_IP).unwrap(), "10.0.0.7");
        assert!(h.get("x-forwarded-user").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::HOST).unwrap(), "app.example.com:8443");
        assert_eq!(h.get(&X_FORWARDED_HOST).unwrap(), "app.example.com:8443");
        assert_eq!(h.get(&X_FORWARDED_PORT).unwrap(), "8443");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get(&X_FORWARDED_SERVER).unwrap(), "router-1");
    }

    #[test]
    fn trusted_client_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, hv("a.com"));
        h.append(X_FORWARDED_FOR, hv("1.1.1.1"));
        h.append(X_FORWARDED_FOR, hv("2.2.2.2"));
        h.insert(X_FORWARDED_PROTO, hv("https"));
        let name = hv("r");
        prepare_request(
            &mut h,
            &Downstream {
                client_ip: &HeaderValue::from_static("10.0.0.7"),
                trusted: true,
                proto: "http",
                server_name: &name,
            },
        );
        assert_eq!(
            h.get(&X_FORWARDED_FOR).unwrap(),
            "1.1.1.1, 2.2.2.2, 10.0.0.7"
        );
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(h.get(&X_FORWARDED_PORT).unwrap(), "80");
    }

    #[test]
    fn underscore_spellings_and_content_length() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, hv("a.com"));
        h.insert("x_forwarded_for", hv("6.6.6.6"));
        h.insert("x-forwarded_host", hv("evil.test"));
        h.insert("x_real_ip", hv("6.6.6.6"));
        h.insert("x_custom", hv("kept"));
        h.insert(header::CONTENT_LENGTH, hv("010"));
        let name = hv("r");
        prepare_request(
            &mut h,
            &Downstream {
                client_ip: &HeaderValue::from_static("10.0.0.7"),
                trusted: true,
                proto: "http",
                server_name: &name,
            },
        );
        assert!(h.get("x_forwarded_for").is_none());
        assert!(h.get("x-forwarded_host").is_none());
        assert!(h.get("x_real_ip").is_none());
        assert_eq!(h.get("x_custom").unwrap(), "kept");
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.7");
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "10");
    }

    #[test]
    fn only_te_trailers_passes_and_trailer_announcements_stay() {
        let name = hv("r");
        let down = Downstream {
            client_ip: &HeaderValue::from_static("10.0.0.7"),
            trusted: false,
            proto: "http",
            server_name: &name,
        };
        for (te, kept) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("trailers;q=1", true),
            ("gzip, deflate", false),
            ("chunked", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::TE, HeaderValue::from_str(te).unwrap());
            h.insert(header::CONNECTION, hv("TE"));
            prepare_request(&mut h, &down);
            let got: Vec<_> = h.get_all(header::TE).iter().collect();
            if kept {
                assert_eq!(got, [hv("trailers")], "{te}");
            } else {
                assert!(got.is_empty(), "{te}: {got:?}");
            }
        }
        let mut r = HeaderMap::new();
        r.insert(header::TRAILER, hv("grpc-status, grpc-message"));
        r.insert(header::TRANSFER_ENCODING, hv("chunked"));
        r.insert(header::CONNECTION, hv("close"));
        clean_response(&mut r);
        assert_eq!(r.get(header::TRAILER).unwrap(), "grpc-status, grpc-message");
        assert!(r.get(header::TRANSFER_ENCODING).is_none());
        assert!(r.get(header::CONNECTION).is_none());
    }

    #[test]
    fn websocket_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, hv("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, hv("WebSocket"));
        assert!(is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, hv("h2c"));
        assert!(!is_websocket_upgrade(&h));
    }
}
