//! TCP and UDP routes (Traefik's `tcp`/`udp` routers) with real clients and servers on
//! loopback: SNI passthrough to `openssl s_server` backends, TLS termination, the PROXY protocol
//! towards HAProxy and from clients, UDP sessions, HTTP and TCP on one entrypoint, server-first
//! protocols, reloads with open connections, bad ClientHellos, TCP middlewares, build errors and
//! weighted round robin.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::l4::*;
use crate::support::*;
use crate::tls::{curl, der_of, https, pair, refs, Ca};

const LOCAL2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn cert_of(pair: &str) -> &str {
    pair.split_once(':').unwrap().0
}

fn key_of(pair: &str) -> &str {
    pair.split_once(':').unwrap().1
}

/// Asserts a served certificate is the one in `pem_file`, naming both subjects otherwise.
#[track_caller]
fn assert_cert(served: &[u8], pem_file: &str, what: &str) {
    let want = der_of(pem_file);
    assert!(
        served == want.as_slice(),
        "{what}: served {:?}, expected {:?}",
        subject(served),
        subject(&want)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. SNI passthrough

#[tokio::test]
async fn sni_passthrough_reaches_each_backend_with_its_own_certificate() {
    tools_python(); // openssl
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let b = ca.issue("b", &["b.test"], false);
    let c = ca.issue("c", &["c1.test"], false);
    let (_sa, a_addr) = s_server(cert_of(&a), key_of(&a)).await;
    let (_sb, b_addr) = s_server(cert_of(&b), key_of(&b)).await;
    let (_sc, c_addr) = s_server(cert_of(&c), key_of(&c)).await;
    let script = format!(
        r#"
let pass = #{{ passthrough: true }};
tcp_route("a").rule("HostSNI(`a.test`)").entrypoints(["tcp"]).tls(pass)
    .to(tcp_service("a").servers(["{a_addr}"]));
tcp_route("b").rule("HostSNI(`b.test`)").entrypoints(["tcp"]).tls(pass)
    .to(tcp_service("b").servers(["{b_addr}"]));
tcp_route("c").rule("HostSNIRegexp(`^c[0-9]+\\.test$`)").entrypoints(["tcp"]).tls(pass)
    .to(tcp_service("c").servers(["{c_addr}"]));
tcp_route("a-special").rule("HostSNI(`a.test`) && ALPN(`x-special`)").priority(100)
    .entrypoints(["tcp"]).tls(pass).to("c");
"#
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "tcp", &[]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");

    // The client sees each backend's own certificate: the router passed the bytes through.
    let served = s_client_cert(tcp, "a.test", None).await.unwrap();
    assert_cert(&served, cert_of(&a), "a.test");
    let served = s_client_cert(tcp, "b.test", None).await.unwrap();
    assert_cert(&served, cert_of(&b), "b.test");
    let served = s_client_cert(tcp, "c1.test", None).await.unwrap();
    assert_cert(&served, cert_of(&c), "c1.test (HostSNIRegexp)");
    // ALPN takes part in the choice: the higher-priority route wins for a.test + x-special.
    let served = s_client_cert(tcp, "a.test", Some("x-special"))
        .await
        .unwrap();
    assert_cert(&served, cert_of(&c), "a.test with ALPN x-special");
    // SNI is case-insensitive.
    let served = s_client_cert(tcp, "B.TEST", None).await.unwrap();
    assert_cert(&served, cert_of(&b), "B.TEST");
    // No route for the name (the regexp is anchored) on a cleartext entrypoint: closed, no
    // certificate at all.
    let e = s_client_cert(tcp, "c1.test.evil", None).await.unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
    let e = s_client_cert(tcp, "z.test", None).await.unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
    // The same names through the rustls client, which also completes the handshake.
    let (_, leaf) = tls_connect(tcp, "b.test").await.unwrap();
    assert_cert(&leaf, cert_of(&b), "b.test via rustls");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. TLS termination

/// A terminating TCP route (`.tls(true)`) with the certificate of a script's
/// `tls_certificate(...)`, on entrypoint `ep`: the client sees the router's certificate and the
/// echo server gets the cleartext.
async fn terminate_case(ep_options: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.issue("router", &["term.test"], false);
    let echo = LineServer::start("echo").await;
    let script = format!(
        r#"
tls_certificate("{}", "{}");
tcp_route("term").rule("HostSNI(`term.test`)").entrypoints(["tcp"]).tls(true)
    .to(tcp_service("echo").servers(["{}"]));
"#,
        cert_of(&cert),
        key_of(&cert),
        echo.addr
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "tcp", ep_options);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");

    let (tls, leaf) = tls_connect(tcp, "term.test")
        .await
        .expect("handshake with the router");
    assert_cert(
        &leaf,
        cert_of(&cert),
        "the router's certificate for term.test",
    );
    let mut conn = Lines::new(tls);
    assert_eq!(conn.ask("hello").await.unwrap(), "echo: hello");
    assert_eq!(conn.ask("second line").await.unwrap(), "echo: second line");
    assert_eq!(
        String::from_utf8_lossy(&echo.received(0)),
        "hello\nsecond line\n",
        "the server gets exactly the cleartext"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn terminate_on_a_tls_entrypoint_serves_the_script_certificate_and_sends_cleartext() {
    terminate_case(&["tls"]).await;
}

/// A cleartext entrypoint has no TLS settings of its own, yet a terminating TCP route on it
/// serves the script's certificate (not the self-signed default).
#[tokio::test]
async fn terminate_on_a_cleartext_entrypoint_serves_the_script_certificate() {
    terminate_case(&[]).await;
}

// ---------------------------------------------------------------------------------------------
// 3. PROXY protocol

#[tokio::test]
async fn proxy_protocol_v1_and_v2_reach_haproxy_with_the_client_address() {
    tools_python(); // haproxy
    let dir = tempfile::tempdir().unwrap();
    let (_hp, hp) = haproxy_client_echo(dir.path()).await;
    // Also a server that shows the exact bytes each version puts before the client's.
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = format!(
        r#"
tcp_route("v1").rule("HostSNI(`*`)").entrypoints(["pp1"])
    .to(tcp_service("hp1").servers(["{hp}"]).proxy_protocol(1));
tcp_route("v2").rule("HostSNI(`*`)").entrypoints(["pp2", "relay"])
    .to(tcp_service("hp2").servers(["{hp}"]).proxy_protocol(2));
tcp_route("raw1").rule("HostSNI(`*`)").entrypoints(["raw1"])
    .to(tcp_service("raw1").servers(["{raw}"]).proxy_protocol(1));
tcp_route("raw2").rule("HostSNI(`*`)").entrypoints(["raw2"])
    .to(tcp_service("raw2").servers(["{raw}"]).proxy_protocol(2));
"#,
        raw = raw.local_addr().unwrap()
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "pp1", &[]);
        add_entrypoint(cfg, "pp2", &[]);
        add_entrypoint(cfg, "raw1", &[]);
        add_entrypoint(cfg, "raw2", &[]);
        // A router behind another proxy: the client address comes from the inbound header and
        // goes on in the outbound one.
        add_entrypoint(cfg, "relay", &["proxy-protocol.trusted-ips=127.0.0.1"]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: hp.test\r\nConnection: close\r\n\r\n";

    for ep in ["pp1", "pp2"] {
        let mut s = TcpStream::connect(r.entrypoint(ep)).await.unwrap();
        let me = s.local_addr().unwrap();
        let answer = exchange_until_close(&mut s, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{ep}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(
            body.trim(),
            me.to_string(),
            "{ep}: HAProxy parsed the client's address and port"
        );
    }

    for (ep, version) in [("raw1", 1), ("raw2", 2)] {
        let to = r.entrypoint(ep);
        let mut s = TcpStream::connect(to).await.unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(b"client bytes").await.unwrap();
        let (mut server_side, _) = tokio::time::timeout(STEP, raw.accept())
            .await
            .unwrap()
            .unwrap();
        let mut want = if version == 1 {
            format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                me.port(),
                to.port()
            )
            .into_bytes()
        } else {
            proxy_v2(me, to)
        };
        want.extend_from_slice(b"client bytes");
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(STEP, server_side.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "PROXY v{version}: the header names client then router, then the client's bytes"
        );
    }

    let mut s = TcpStream::connect(r.entrypoint("relay")).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);
    let answer = exchange_until_close(&mut s, &bytes).await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body.trim(), "203.0.113.7:40000", "{answer}");
    r.shutdown().await;
}

/// A PROXY v2 header (TCP over IPv4) naming `src` connected to `dst`.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

/// Writes `bytes` and reads one HTTP/1.1 response (or until the server closes), at most `STEP`.
async fn http_on(s: &mut TcpStream, bytes: &[u8]) -> String {
    if s.write_all(bytes).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if message_complete(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a whoami `/api` answer.
#[track_caller]
fn api_body(answer: &str) -> serde_json::Value {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

const API_GET: &[u8] = b"GET /api HTTP/1.1\r\nHost: pp.test\r\n\r\n";

#[tokio::test]
async fn proxy_protocol_from_trusted_clients_names_the_client_for_http() {
    let who = Backend::start("who").await;
    let script = format!(
        "route(\"who\").rule(\"PathPrefix(`/`)\").to(service(\"who\").servers({}));\n",
        servers(&[&who])
    );
    let r = start_router(&[("10-http.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "pp", &["proxy-protocol.trusted-ips=127.0.0.1/32"]);
    })
    .await;
    let pp = r.entrypoint("pp");

    // v1 from a trusted address, on a kept-alive connection.
    let mut keep = TcpStream::connect(pp).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec();
    bytes.extend_from_slice(API_GET);
    let api = api_body(&http_on(&mut keep, &bytes).await);
    assert_eq!(seen(&api, "x-forwarded-for"), ["203.0.113.7"], "{api}");
    assert_eq!(seen(&api, "x-real-ip"), ["203.0.113.7"], "{api}");

    // v2.
    let mut s = TcpStream::connect(pp).await.unwrap();
    let mut bytes = proxy_v2(
        "198.51.100.9:5555".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    bytes.extend_from_slice(API_GET);
    let api = api_body(&http_on(&mut s, &bytes).await);
    assert_eq!(seen(&api, "x-forwarded-for"), ["198.51.100.9"], "{api}");
    assert_eq!(seen(&api, "x-real-ip"), ["198.51.100.9"], "{api}");

    // A trusted client may send no header: its own address stands.
    let mut s = TcpStream::connect(pp).await.unwrap();
    let api = api_body(&http_on(&mut s, API_GET).await);
    assert_eq!(seen(&api, "x-real-ip"), ["127.0.0.1"], "{api}");

    // A broken header closes that connection only, with no answer.
    let mut bad = TcpStream::connect(pp).await.unwrap();
    let answer = http_on(
        &mut bad,
        b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\nGET /api HTTP/1.1\r\nHost: pp.test\r\n\r\n",
    )
    .await;
    assert_eq!(answer, "", "a broken header gets no answer");
    let api = api_body(&http_on(&mut keep, API_GET).await);
    assert_eq!(
        seen(&api, "x-real-ip"),
        ["203.0.113.7"],
        "the other connection goes on, still named by its header: {api}"
    );

    // Untrusted: the header is request data, hence a bad request; on the default entrypoint
    // (no PROXY protocol) and from an address outside trusted-ips.
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec();
    bytes.extend_from_slice(API_GET);
    let mut s = TcpStream::connect(r.web).await.unwrap();
    let answer = http_on(&mut s, &bytes).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "web: {answer}");
    let mut s = connect_from(LOCAL2, pp).await;
    let answer = http_on(&mut s, &bytes).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "127.0.0.2 is not trusted: {answer}"
    );
    let mut s = connect_from(LOCAL2, pp).await;
    let api = api_body(&http_on(&mut s, API_GET).await);
    assert_eq!(seen(&api, "x-real-ip"), ["127.0.0.2"], "{api}");
    r.shutdown().await;
}

/// A trusted client that sends part of a PROXY header and stops is closed at the header-read
/// timeout (`peek` answers at once while bytes are queued, so the reader checks the deadline
/// itself; before it did, such a client held its connection forever).
#[tokio::test]
async fn a_partial_proxy_header_is_closed_at_the_header_read_timeout() {
    let who = Backend::start("who").await;
    let script = format!(
        "route(\"who\").rule(\"PathPrefix(`/`)\").to(service(\"who\").servers({}));\n",
        servers(&[&who])
    );
    let r = start_router(&[("10-http.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "pp", &["proxy-protocol.trusted-ips=127.0.0.1/32"]);
        // The PROXY header is read within the header-read timeout.
        cfg.settings.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let pp = r.entrypoint("pp");
    let partial = tokio::spawn(refused_after(
        pp,
        b"PROXY TCP4 203.0.113.7 ".to_vec(),
        false,
    ));
    // Meanwhile other clients are served.
    let mut s = TcpStream::connect(pp).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.8 127.0.0.1 40000 80\r\n".to_vec();
    bytes.extend_from_slice(API_GET);
    let api = api_body(&http_on(&mut s, &bytes).await);
    assert_eq!(seen(&api, "x-real-ip"), ["203.0.113.8"], "{api}");
    let partial = partial.await.unwrap();
    assert!(
        partial
            .as_ref()
            .is_ok_and(|t| *t >= Duration::from_millis(800) && *t <= Duration::from_secs(4)),
        "a partial PROXY header is closed at the 1 s header-read timeout: {partial:?}"
    );
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. UDP

#[tokio::test]
async fn udp_sessions_keep_clients_apart_and_expire_after_the_timeout() {
    let echo = UdpEcho::start().await;
    let script = format!(
        "udp_route(\"dns\").entrypoints([\"dns\"]).to(udp_service(\"dns\").servers([\"{}\"]));\n",
        echo.addr
    );
    let r = start_router(&[("10-udp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "dns", &["udp", "udp.timeout=1s"]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let dns = r.entrypoint("dns");

    // 50 clients at once, 3 datagrams each: every answer is the client's own, and each client
    // is one session (one source address at the server), different from every other client's.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..50 {
        clients.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut sources = BTreeSet::new();
            for j in 0..3 {
                let payload = format!("client{i}-datagram{j}");
                let answer = udp_ask(&socket, dns, &payload).await?;
                let (source, echoed) = answer
                    .split_once(' ')
                    .ok_or_else(|| format!("odd answer {answer:?}"))?;
                if echoed != payload {
                    return Err(format!("client {i} sent {payload:?}, got {answer:?}"));
                }
                sources.insert(source.to_string());
            }
            if sources.len() != 1 {
                return Err(format!(
                    "client {i} came from several sessions: {sources:?}"
                ));
            }
            Ok(sources.into_iter().next().unwrap())
        });
    }
    let mut sessions = BTreeSet::new();
    while let Some(res) = clients.join_next().await {
        sessions.insert(res.unwrap().unwrap());
    }
    assert_eq!(sessions.len(), 50, "one session per client: {sessions:?}");

    // A session lives while used, and ends after `udp.timeout` (1 s) of silence: the server
    // then sees the client's next datagram from a new source port.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = udp_ask(&socket, dns, "a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = udp_ask(&socket, dns, "b").await.unwrap();
    assert_eq!(
        first.split(' ').next(),
        second.split(' ').next(),
        "same session within the timeout"
    );
    // The behaviour under test is the idle timeout itself: wait twice its length.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let third = udp_ask(&socket, dns, "c").await.unwrap();
    assert_ne!(
        first.split(' ').next(),
        third.split(' ').next(),
        "a new session after 2 s idle (timeout 1 s): {first} / {third}"
    );
    assert!(third.ends_with(" c"), "{third}");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. HTTP and TCP on one entrypoint

#[tokio::test]
async fn http_https_and_tls_passthrough_share_one_entrypoint() {
    tools_python(); // openssl, curl
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let db = ca.issue("db", &["db.test"], false);
    let www = ca.issue("www", &["www.test"], false);
    let (_db, db_addr) = s_server(cert_of(&db), key_of(&db)).await;
    let who = Backend::start("who-secure").await;
    let script = format!(
        r#"
route("plain").rule("PathPrefix(`/`)").to(respond(200, "plain http\n"));
route("secure").rule("Host(`www.test`)").tls(true).to(service("who").servers({}));
tcp_route("db").rule("HostSNI(`db.test`)").tls(#{{ passthrough: true }})
    .to(tcp_service("db").servers(["{db_addr}"]));
"#,
        servers(&[&who])
    );
    let r = start_router(&[("10-mixed.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "edge", &["tls=auto"]);
        add_entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&www)];
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let edge = r.entrypoint("edge");

    // Cleartext HTTP on the same port.
    let reply = get(edge, "anything.test", "/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "plain http\n")
    );
    // TLS with SNI db.test goes through, untouched, to the backend's own certificate.
    let served = s_client_cert(edge, "db.test", None).await.unwrap();
    assert_cert(&served, cert_of(&db), "db.test");
    // TLS with another name is HTTPS, terminated by the router (curl checks the certificate).
    let c = curl(&refs(&https(&ca, "www.test", edge, "/"))).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(c.body.contains("who-secure"), "{c:?}");
    // The router's own certificate for that name, where db.test got the backend's.
    let (_, leaf) = tls_connect(edge, "www.test").await.unwrap();
    assert_cert(&leaf, cert_of(&www), "www.test");
    // A TLS-only entrypoint: the same split between passthrough and HTTPS by SNI.
    let websecure = r.entrypoint("websecure");
    let served = s_client_cert(websecure, "db.test", None).await.unwrap();
    assert_cert(&served, cert_of(&db), "db.test on websecure");
    let c = curl(&refs(&https(&ca, "www.test", websecure, "/"))).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(c.body.contains("who-secure"), "{c:?}");
    // The default cleartext entrypoint serves HTTP as before, and passes db.test through too
    // (a TCP route without `.entrypoints` is on every TCP entrypoint).
    let reply = get(r.web, "anything.test", "/").await;
    assert_eq!(reply.status.as_u16(), 200);
    let served = s_client_cert(r.web, "db.test", None).await.unwrap();
    assert_cert(&served, cert_of(&db), "db.test on web");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Server speaks first

#[tokio::test]
async fn a_cleartext_catch_all_serves_a_server_that_speaks_first() {
    let smtp = LineServer::with_banner("smtp", "220 smtp.test ready\r\n").await;
    let script = format!(
        "tcp_route(\"smtp\").rule(\"HostSNI(`*`)\").entrypoints([\"tcp\"]).to(tcp_service(\"smtp\").servers([\"{}\"]));\n",
        smtp.addr
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        // A long hello wait: if the router waited for the client's first byte, the banner
        // would come only after it.
        add_entrypoint(cfg, "tcp", &["tcp.hello-timeout=30s"]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let started = Instant::now();
    let mut c = lines_to(r.entrypoint("tcp")).await;
    assert_eq!(c.read_line().await.unwrap(), "220 smtp.test ready");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the banner came at once: {:?}",
        started.elapsed()
    );
    assert_eq!(c.ask("EHLO me").await.unwrap(), "smtp: EHLO me");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Reload with open connections

fn catch_all(route: &str, service: &str, server: SocketAddr) -> String {
    format!(
        "tcp_route(\"{route}\").rule(\"HostSNI(`*`)\").entrypoints([\"tcp\"]).to(tcp_service(\"{service}\").servers([\"{server}\"]));\n"
    )
}

#[tokio::test]
async fn reload_keeps_open_connections_and_closes_removed_routes_after_the_grace() {
    let one = LineServer::start("one").await;
    let two = LineServer::start("two").await;
    let r = start_router(
        &[("10-tcp.rhai", &catch_all("a", "one", one.addr))],
        |cfg| {
            add_entrypoint(cfg, "tcp", &["tcp.removed-route-grace=1s"]);
        },
    )
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");

    let mut old = lines_to(tcp).await;
    assert_eq!(old.ask("ping").await.unwrap(), "one: ping");

    // Route a now points at server two: the open connection stays with one, new ones go to two.
    let s = r
        .write_script("10-tcp.rhai", &catch_all("a", "two", two.addr))
        .await;
    assert!(s.ok, "{:?}", s.errors);
    assert_eq!(old.ask("still there?").await.unwrap(), "one: still there?");
    let mut moved = lines_to(tcp).await;
    assert_eq!(moved.ask("ping").await.unwrap(), "two: ping");

    // Route a is removed (b takes new connections): its connections go on for the grace
    // (1 s), then are closed.
    let s = r
        .write_script("10-tcp.rhai", &catch_all("b", "two", two.addr))
        .await;
    assert!(s.ok, "{:?}", s.errors);
    let removed_at = Instant::now();
    assert_eq!(old.ask("grace?").await.unwrap(), "one: grace?");
    let mut fresh = lines_to(tcp).await;
    assert_eq!(fresh.ask("ping").await.unwrap(), "two: ping");
    old.closed_within(Duration::from_secs(6))
        .await
        .expect("the removed route's connection is closed after its grace");
    moved
        .closed_within(Duration::from_secs(2))
        .await
        .expect("every connection of the removed route is closed");
    assert!(
        removed_at.elapsed() >= Duration::from_millis(900),
        "closed only after the 1 s grace: {:?}",
        removed_at.elapsed()
    );
    // The new route's connection is untouched.
    assert_eq!(fresh.ask("alive").await.unwrap(), "two: alive");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Bad ClientHellos

/// Connects to `addr`, sends `bytes` (then closes its sending side when `half_close`), and
/// returns how long the router took to close the connection (at most 6 s).
async fn refused_after(
    addr: SocketAddr,
    bytes: Vec<u8>,
    half_close: bool,
) -> Result<Duration, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    // The router may close before everything is written: write errors are expected then.
    let _ = s.write_all(&bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await {
        Err(_) => Err("still open after 6 s".into()),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(started.elapsed()),
        Ok(Ok(n)) => Err(format!(
            "got {n} bytes back: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
    }
}

/// One bad opening: a name, the bytes sent, whether the client then closes its sending side,
/// and the window (from the first byte sent) in which the router must close the connection.
struct BadHello {
    what: &'static str,
    bytes: Vec<u8>,
    half_close: bool,
    closed_after: Duration,
    closed_before: Duration,
}

/// A TLS passthrough route on an entrypoint with `tcp.hello-timeout=1s`: `bad` openings run
/// at once while an established TLS connection and a new one keep working; every bad one must
/// be closed in its window without reaching the server.
async fn bad_hellos_case(bad: Vec<BadHello>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let good_cert = ca.issue("good", &["good.test"], false);
    let backend = LineServer::tls("good", cert_of(&good_cert), key_of(&good_cert)).await;
    let script = format!(
        "tcp_route(\"good\").rule(\"HostSNI(`good.test`)\").entrypoints([\"tcp\"]).tls(#{{ passthrough: true }}).to(tcp_service(\"good\").servers([\"{}\"]));\n",
        backend.addr
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "tcp", &["tcp.hello-timeout=1s"]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");

    let (tls, leaf) = tls_connect(tcp, "good.test").await.unwrap();
    assert_cert(&leaf, cert_of(&good_cert), "good.test");
    let mut good = Lines::new(tls);
    assert_eq!(good.ask("one").await.unwrap(), "good: one");

    let running: Vec<_> = bad
        .into_iter()
        .map(|b| {
            let task = tokio::spawn(refused_after(tcp, b.bytes.clone(), b.half_close));
            (b, task)
        })
        .collect();

    // Meanwhile the established connection and new ones work.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(good.ask("two").await.unwrap(), "good: two");
    let (tls, _) = tls_connect(tcp, "good.test").await.unwrap();
    let mut second = Lines::new(tls);
    assert_eq!(second.ask("hi").await.unwrap(), "good: hi");

    let mut wrong = Vec::new();
    for (b, task) in running {
        let got = task.await.unwrap();
        if !got
            .as_ref()
            .is_ok_and(|t| *t >= b.closed_after && *t <= b.closed_before)
        {
            wrong.push(format!(
                "{}: {got:?} (expected closed within {:?}..{:?})",
                b.what, b.closed_after, b.closed_before
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "bad hellos not refused as expected:\n{}",
        wrong.join("\n")
    );
    assert_eq!(good.ask("three").await.unwrap(), "good: three");
    assert_eq!(second.ask("bye").await.unwrap(), "good: bye");
    // None of the bad ones reached the server.
    assert_eq!(backend.accepted(), 2);
    r.shutdown().await;
}

#[tokio::test]
async fn broken_and_oversize_hellos_are_closed_while_good_connections_go_on() {
    // Oversize: handshake records announcing a 48 KiB ClientHello, 20 KiB of it sent, never
    // completed (the router reads at most 16 KiB).
    let mut big = Vec::new();
    for i in 0..5 {
        big.extend_from_slice(&[0x16, 0x03, 0x01, 0x10, 0x00]);
        let mut record = vec![0u8; 4096];
        if i == 0 {
            record[..4].copy_from_slice(&[0x01, 0x00, 0xc0, 0x00]);
            record[4..6].copy_from_slice(&[0x03, 0x03]);
        }
        big.extend_from_slice(&record);
    }
    // Broken: a handshake record holding a ServerHello instead of a ClientHello.
    let broken = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
    bad_hellos_case(vec![
        BadHello {
            what: "oversize",
            bytes: big,
            half_close: false,
            closed_after: Duration::ZERO,
            closed_before: Duration::from_millis(900),
        },
        BadHello {
            what: "broken",
            bytes: broken,
            half_close: false,
            closed_after: Duration::ZERO,
            closed_before: Duration::from_millis(900),
        },
    ])
    .await;
}

/// A client that sends one byte, or half a hello and then closes, is closed at the hello
/// timeout (before the reader checked the deadline itself, such a connection stayed forever,
/// in CLOSE-WAIT once the client was gone, with a task waking every 5 ms).
#[tokio::test]
async fn truncated_and_slow_hellos_are_closed_at_the_hello_timeout() {
    let hello = client_hello("good.test");
    bad_hellos_case(vec![
        BadHello {
            // Half of a real hello, then the client closes its side.
            what: "truncated",
            bytes: hello[..hello.len() / 2].to_vec(),
            half_close: true,
            closed_after: Duration::ZERO,
            closed_before: Duration::from_secs(3),
        },
        BadHello {
            // One byte of a handshake record, then nothing: closed at the 1 s hello timeout.
            what: "slow",
            bytes: vec![0x16],
            half_close: false,
            closed_after: Duration::from_millis(800),
            closed_before: Duration::from_secs(4),
        },
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. Middlewares and ClientIP

#[tokio::test]
async fn allow_list_in_flight_limit_and_client_ip_rules() {
    let one = LineServer::start("one").await;
    let two = LineServer::start("two").await;
    let script = format!(
        r#"
tcp_route("guarded").rule("HostSNI(`*`)").entrypoints(["tcp"])
    .middlewares([ip_allow_list(["127.0.0.1"]), in_flight_conn(2)])
    .to(tcp_service("one").servers(["{one}"]));
tcp_route("local2").rule("HostSNI(`*`) && ClientIP(`127.0.0.2/32`)").priority(100)
    .entrypoints(["by-ip"]).to(tcp_service("two").servers(["{two}"]));
tcp_route("rest").rule("HostSNI(`*`)").entrypoints(["by-ip"]).to("one");
"#,
        one = one.addr,
        two = two.addr
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "tcp", &[]);
        add_entrypoint(cfg, "by-ip", &[]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");

    // Outside the allow list: closed, nothing reaches the server.
    let mut outsider = Lines::new(connect_from(LOCAL2, tcp).await);
    let e = outsider.ask("let me in").await.unwrap_err();
    assert!(e.starts_with("closed"), "{e}");
    assert_eq!(one.accepted(), 0);

    // Two open connections per client; the third is closed; after one closes, room again.
    let mut c1 = lines_to(tcp).await;
    assert_eq!(c1.ask("1").await.unwrap(), "one: 1");
    let mut c2 = lines_to(tcp).await;
    assert_eq!(c2.ask("2").await.unwrap(), "one: 2");
    let mut c3 = lines_to(tcp).await;
    let e = c3.ask("3").await.unwrap_err();
    assert!(e.starts_with("closed"), "third connection: {e}");
    drop(c1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = lines_to(tcp).await;
        match c.ask("again").await {
            Ok(a) => {
                assert_eq!(a, "one: again");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no room after a connection closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(c2.ask("still").await.unwrap(), "one: still");

    // ClientIP picks the route by source address.
    let by_ip = r.entrypoint("by-ip");
    let mut from2 = Lines::new(connect_from(LOCAL2, by_ip).await);
    assert_eq!(from2.ask("x").await.unwrap(), "two: x");
    let mut from1 = lines_to(by_ip).await;
    assert_eq!(from1.ask("x").await.unwrap(), "one: x");
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Build errors and the listing

/// `switchyard check` over one script with a `tcp` and a `dns` (UDP) entrypoint:
/// (exit code, stdout, stderr, the script's path).
fn check(script: &str, extra: &[&str]) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.rhai"), script).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .arg("check")
        .arg("--scripts")
        .arg(dir.path())
        .args([
            "--entrypoint",
            "tcp=127.0.0.1:0",
            "--entrypoint",
            "dns=127.0.0.1:0/udp",
        ])
        .args(extra)
        .output()
        .expect("running switchyard check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        format!("{}/x.rhai", dir.path().display()),
    )
}

/// The one error of a failed `check --format json`.
#[track_caller]
fn one_error(script: &str) -> (serde_json::Value, String) {
    let (code, out, err, file) = check(script, &["--format", "json"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(errors.len(), 1, "{v}");
    (errors[0].clone(), file)
}

#[test]
fn build_errors_point_at_the_script_and_check_lists_tcp_and_udp_routes() {
    // A cleartext route cannot match an SNI name: the error is at the `.rule(` call.
    let rule_line = "    .rule(\"HostSNI(`a.test`)\")";
    let script = format!(
        "tcp_route(\"a\")\n{rule_line}\n    .entrypoints([\"tcp\"])\n    .to(tcp_service(\"s\").servers([\"127.0.0.1:1\"]));\n"
    );
    let (e, file) = one_error(&script);
    assert_eq!(e["file"], file.as_str(), "{e}");
    assert_eq!(e["line"], 2, "{e}");
    assert_eq!(
        e["column"],
        rule_line.find(".rule(").unwrap() + 2,
        "the column of `rule`: {e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("HostSNI(`*`)") && m.contains(".tls("), "{m}");
    // The text form has file:line:col first.
    let (code, _, err, file) = check(&script, &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("{file}:2:")),
        "file:line:col first:\n{err}"
    );

    // A UDP route on a TCP entrypoint, and a TCP route on a UDP one.
    let (e, _) = one_error(
        "udp_route(\"u\").entrypoints([\"tcp\"]).to(udp_service(\"u\").servers([\"127.0.0.1:53\"]));\n",
    );
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(1), Some(1)),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("not a UDP entrypoint") && m.contains("dns"),
        "{m}"
    );
    let (e, _) = one_error(
        "tcp_route(\"t\").rule(\"HostSNI(`*`)\").entrypoints([\"dns\"]).to(tcp_service(\"t\").servers([\"127.0.0.1:1\"]));\n",
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("is a UDP entrypoint"),
        "{e}"
    );

    // A misspelt matcher gets a suggestion; an HTTP matcher is named as such.
    let (e, _) = one_error(
        "tcp_route(\"x\").rule(\"HostSNl(`a.test`)\").tls(true).to(tcp_service(\"s\").servers([\"127.0.0.1:1\"]));\n",
    );
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("did you mean \"HostSNI\""), "{m}");
    assert_eq!(e["column"], 16, "at `rule`: {e}");
    let (e, _) = one_error(
        "tcp_route(\"x\").rule(\"Host(`a.test`)\").tls(true).to(tcp_service(\"s\").servers([\"127.0.0.1:1\"]));\n",
    );
    assert!(
        e["message"].as_str().unwrap().contains("HTTP matcher"),
        "{e}"
    );

    // A good folder: check lists the TCP and UDP routes.
    let (code, out, err, _) = check(
        r#"
tcp_route("db").rule("HostSNI(`db.test`)").entrypoints(["tcp"]).tls(#{ passthrough: true })
    .to(tcp_service("db").servers(["127.0.0.1:5432", #{ address: "127.0.0.1:5433", weight: 2 }]).proxy_protocol(2));
udp_route("dns").entrypoints(["dns"]).to(udp_service("dns").servers(["127.0.0.1:5353"]));
"#,
        &["--format", "json"],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tcp = &v["tcp_routes"][0];
    assert_eq!(tcp["name"], "db", "{v}");
    assert_eq!(tcp["tls"]["mode"], "passthrough", "{v}");
    assert_eq!(tcp["service"]["proxy_protocol"], 2, "{v}");
    assert_eq!(tcp["service"]["servers"][1]["weight"], 2, "{v}");
    assert_eq!(v["udp_routes"][0]["name"], "dns", "{v}");
    assert_eq!(
        v["udp_routes"][0]["service"]["servers"][0]["address"], "127.0.0.1:5353",
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Weighted round robin

#[tokio::test]
async fn weighted_round_robin_over_tcp_servers() {
    let heavy = LineServer::start("heavy").await;
    let light = LineServer::start("light").await;
    let script = format!(
        "tcp_route(\"wrr\").rule(\"HostSNI(`*`)\").entrypoints([\"tcp\"]).to(tcp_service(\"wrr\").servers([#{{ address: \"{}\", weight: 3 }}, \"{}\"]));\n",
        heavy.addr, light.addr
    );
    let r = start_router(&[("10-tcp.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "tcp", &[]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);
    let tcp = r.entrypoint("tcp");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40 {
        let mut c = lines_to(tcp).await;
        let answer = c.ask(&format!("n{i}")).await.unwrap();
        let (name, _) = answer.split_once(": ").unwrap();
        *counts.entry(name.to_string()).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("heavy".to_string(), 30), ("light".to_string(), 10)]),
        "weights 3:1 over 40 connections"
    );
    r.shutdown().await;
}
