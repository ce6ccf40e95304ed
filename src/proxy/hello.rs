//! Reading a TLS ClientHello without taking it off the socket: the SNI name and ALPN protocols
//! a TCP route is chosen by, before the connection is passed through, terminated or handed to
//! HTTPS. The hello is parsed by rustls (`rustls::server::Acceptor`) from peeked bytes, so the
//! socket still holds every byte for whoever serves the connection next.
//!
//! Invariants: at most `MAX_HELLO` bytes are looked at (a larger hello is refused); a hello
//! spread over several TCP segments is waited for until the deadline; `parse` never panics
//! (fuzzed: `fuzz/fuzz_targets/client_hello.rs`).

use std::time::Duration;

use tokio::net::TcpStream;

/// The largest ClientHello read, records included (post-quantum key shares make hellos of
/// about 2 KiB; 16 KiB leaves room for large extension lists).
pub const MAX_HELLO: usize = 16 * 1024;

/// What a ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The server name, lower-cased, without a trailing dot.
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloParse {
    Complete(Hello),
    Incomplete,
    Invalid(String),
}

/// Parses the start of a TLS connection. Pure; never panics.
pub fn parse(buf: &[u8]) -> HelloParse {
    if buf.first().is_some_and(|b| *b != 0x16) {
        return HelloParse::Invalid("not a TLS handshake".into());
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return HelloParse::Invalid(format!("TLS record: {e}")),
        }
    }
    match acceptor.accept() {
        Ok(None) => HelloParse::Incomplete,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            HelloParse::Complete(Hello {
                sni: hello
                    .server_name()
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
                alpn: hello
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default(),
            })
        }
        Err((e, _)) => HelloParse::Invalid(format!("ClientHello: {e}")),
    }
}

/// Peeks at the connection until a whole ClientHello is queued, within `wait`.
pub async fn peek(stream: &TcpStream, wait: Duration) -> Result<Hello, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; MAX_HELLO];
    let mut last = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err("no complete ClientHello in time".into()),
            Ok(Err(e)) => return Err(format!("reading the ClientHello: {e}")),
            Ok(Ok(0)) => return Err("connection closed during the ClientHello".into()),
            Ok(Ok(n)) => n,
        };
        match parse(buf.get(..n).unwrap_or_default()) {
            HelloParse::Complete(h) => return Ok(h),
            HelloParse::Invalid(e) => return Err(e),
            HelloParse::Incomplete if n >= MAX_HELLO => {
                return Err(format!("ClientHello larger than {MAX_HELLO} bytes"))
            }
            HelloParse::Incomplete => {
                if tokio::time::Instant::now() >= deadline {
                    // `peek` answers at once while bytes are queued, so the deadline is checked
                    // here too: a client that stops half-way is closed in time.
                    return Err("no complete ClientHello in time".into());
                }
                if n == last {
                    // Nothing new queued: peek returns at once while data is queued, so wait a
                    // moment for the next segment.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                last = n;
            }
        }
    }
}

/// The first byte of a connection, within `wait` (`None`: closed or nothing in time).
pub async fn first_byte(stream: &TcpStream, wait: Duration) -> Option<u8> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut b)).await {
        Ok(Ok(1)) => Some(b[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls' client, for `name` and `alpn`.
    fn client_hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        crate::tls::install();
        let mut roots = rustls::RootCertStore::empty();
        roots.roots.clear();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let server = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_and_alpn_and_waits_for_the_rest() {
        let hello = client_hello("DB.Example.com", &[b"h2", b"postgresql"]);
        match parse(&hello) {
            HelloParse::Complete(h) => {
                assert_eq!(h.sni.as_deref(), Some("db.example.com"));
                assert_eq!(h.alpn, vec![b"h2".to_vec(), b"postgresql".to_vec()]);
            }
            other => panic!("{other:?}"),
        }
        for cut in [1, 5, 6, hello.len() / 2, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), HelloParse::Incomplete, "cut at {cut}");
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            HelloParse::Invalid(_)
        ));
        assert!(matches!(
            parse(&[0x16, 3, 1, 0xff, 0xff, 1]),
            HelloParse::Incomplete | HelloParse::Invalid(_)
        ));
    }

    #[test]
    fn a_hello_split_into_records_is_read() {
        // The same handshake message in two TLS records (as a large post-quantum hello is sent
        // by some clients).
        let hello = client_hello("split.example.com", &[]);
        let body = &hello[5..];
        let (a, b) = body.split_at(body.len() / 2);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 3, 1]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        match parse(&two) {
            HelloParse::Complete(h) => assert_eq!(h.sni.as_deref(), Some("split.example.com")),
            other => panic!("{other:?}"),
        }
    }
}
