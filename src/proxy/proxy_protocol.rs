//! The PROXY protocol (HAProxy's, v1 text and v2 binary): read from trusted clients of an
//! entrypoint (`proxy-protocol.trusted-ips`), written towards the servers of a TCP service
//! (`.proxy_protocol(1|2)`). Parsing and encoding are the `ppp` crate's; this module owns the
//! socket side: the header is peeked, never buffered, and consumed only once complete, so
//! whatever follows reaches the next reader (TLS, HTTP, a TCP route) untouched.
//!
//! Invariants: a header is read only from a client the entrypoint trusts; a trusted client may
//! send none (its connection is served as is); a header longer than `MAX_HEADER` bytes, a broken
//! one, or one that does not finish within the wait closes the connection; `parse` never panics
//! (fuzzed: `fuzz/fuzz_targets/proxy_protocol.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header read (v1 is at most 107 bytes; v2 with TLVs is bounded here).
pub const MAX_HEADER: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; `source` is the client it names (`None` for `UNKNOWN`,
    /// `LOCAL` or a non-IP family: the connection's own peer stands).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// The start of a header: wait for more bytes.
    Incomplete,
    /// Not a PROXY header at all.
    Absent,
    /// A header that cannot be right.
    Invalid(String),
}

/// Parses the start of a connection. Pure; never panics.
pub fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    let could_be_v2 = buf.get(..n) == V2_SIGNATURE.get(..n);
    let m = buf.len().min(V1_PREFIX.len());
    let could_be_v1 = buf.get(..m) == V1_PREFIX.get(..m);
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if !could_be_v1 && !could_be_v2 {
        return Parsed::Absent;
    }
    if buf.len() < n.max(m).max(if could_be_v2 { 16 } else { 6 }) {
        return Parsed::Incomplete;
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Parsed::Invalid(format!("PROXY header longer than {MAX_HEADER} bytes"))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Header {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Parsed::Header {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("PROXY v2 header: {e}")),
    }
}

/// Reads a PROXY header, if the client sent one, within `wait`: the client address it names
/// (`Ok(None)`: no header, or one naming no address). The header's bytes are consumed, nothing
/// else is.
pub async fn read(stream: &mut TcpStream, wait: Duration) -> Result<Option<SocketAddr>, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; MAX_HEADER];
    let mut last = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err("no complete PROXY header in time".into()),
            Ok(Err(e)) => return Err(format!("reading the PROXY header: {e}")),
            Ok(Ok(0)) => return Err("connection closed before a request".into()),
            Ok(Ok(n)) => n,
        };
        match parse(buf.get(..n).unwrap_or_default()) {
            Parsed::Absent => return Ok(None),
            Parsed::Invalid(e) => return Err(e),
            Parsed::Header { len, source } => {
                let mut sink = vec![0u8; len];
                stream
                    .read_exact(&mut sink)
                    .await
                    .map_err(|e| format!("reading the PROXY header: {e}"))?;
                return Ok(source);
            }
            Parsed::Incomplete => {
                if tokio::time::Instant::now() >= deadline {
                    // `peek` answers at once while bytes are queued, so the deadline is checked
                    // here too: a client that stops half-way is closed in time.
                    return Err("no complete PROXY header in time".into());
                }
                if n == last {
                    // Nothing new queued: give the client a moment (peek returns at once while
                    // data is queued).
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                last = n;
            }
        }
    }
}

/// The header a server gets before a client's bytes: `client` connected to `local`.
pub fn encode(version: u8, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // One family for both addresses, as the protocol wants (IPv4 written as mapped IPv6 when the
    // other side is IPv6).
    let (client, local) = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V6(l)) => (
            SocketAddr::new(c.ip().to_ipv6_mapped().into(), c.port()),
            SocketAddr::V6(l),
        ),
        (SocketAddr::V6(c), SocketAddr::V4(l)) => (
            SocketAddr::V6(c),
            SocketAddr::new(l.ip().to_ipv6_mapped().into(), l.port()),
        ),
        other => other,
    };
    if version == 1 {
        return ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes();
    }
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two as u8 | ppp::v2::Command::Proxy as u8,
        ppp::v2::Protocol::Stream,
        (client, local),
    )
    .build()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_round_trip() {
        let c: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let l: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let v1 = encode(1, c, l);
        assert_eq!(v1, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8443\r\n");
        let mut with_data = v1.clone();
        with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&with_data),
            Parsed::Header {
                len: v1.len(),
                source: Some(c)
            }
        );
        let v2 = encode(2, c, l);
        assert_eq!(v2.get(..12), Some(V2_SIGNATURE));
        assert_eq!(
            parse(&v2),
            Parsed::Header {
                len: v2.len(),
                source: Some(c)
            }
        );
        let c6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(
            parse(&encode(2, c6, l)),
            Parsed::Header {
                len: 16 + 36,
                source: Some(c6)
            }
        );
    }

    #[test]
    fn partial_absent_and_broken_headers() {
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Absent);
        assert_eq!(parse(&[0x16, 3, 1, 0, 5]), Parsed::Absent);
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        let v2 = encode(
            2,
            "1.2.3.4:5".parse().unwrap(),
            "5.6.7.8:9".parse().unwrap(),
        );
        assert_eq!(parse(&v2[..20]), Parsed::Incomplete);
        assert!(matches!(
            parse(&[b'P'; MAX_HEADER]),
            Parsed::Absent | Parsed::Invalid(_)
        ));
    }
}
