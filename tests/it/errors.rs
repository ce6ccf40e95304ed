//! Failure paths: what the client gets when something is wrong, and that nothing hangs.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A router whose one route answers "fine" to everything, with tweaked settings.
async fn fine_router(tweak: impl FnOnce(&mut switchyard::config::Config)) -> TestRouter {
    TestRouter::start_with(
        &[(
            "10-test.rhai",
            r#"route("all").rule(path_prefix("/")).to(respond(200, "fine"));"#,
        )],
        tweak,
    )
    .await
}

#[tokio::test]
async fn refused_and_reset_upstreams_are_502() {
    let dead = dead_addr().await;
    // A backend that accepts and closes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resetter = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..8 {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    });
    let r = TestRouter::start(&format!(
        r#"
        route("dead").rule(host("dead.test")).to(service("dead").servers(["{dead}"]));
        route("reset").rule(host("reset.test")).to(service("reset").servers(["{resetter}"]));
        "#
    ))
    .await;
    let d = get(r.web, "dead.test", "/").await;
    assert_eq!(d.status, 502);
    assert_eq!(d.body, "502 Bad Gateway\n", "no internals leak");
    assert_eq!(get(r.web, "reset.test", "/").await.status, 502);
    r.shutdown().await;
}

#[tokio::test]
async fn slow_upstreams_are_504() {
    let backend = Backend::start("slow").await;
    // A listener whose accept queue is full: connects to it hang until the connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(full_addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let r = TestRouter::start_with(
        &[(
            "10-test.rhai",
            &format!(
                r#"
                route("slow").rule(host("slow.test")).to(service("slow").servers({s}));
                route("full").rule(host("full.test")).to(service("full").servers(["{full_addr}"]));
                "#,
                s = servers(&[&backend])
            ),
        )],
        |cfg| {
            cfg.settings.upstream_response_timeout = Duration::from_millis(500);
            cfg.settings.upstream_connect_timeout = Duration::from_millis(300);
        },
    )
    .await;
    let started = Instant::now();
    let slow = get(r.web, "slow.test", "/?delay=5s").await;
    assert_eq!(slow.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timed out late: {:?}",
        started.elapsed()
    );
    assert_eq!(get(r.web, "slow.test", "/?delay=10ms").await.status, 200);
    let connect = get(r.web, "full.test", "/").await;
    assert_eq!(connect.status, 504, "connect timeout: {}", connect.body);
    drop(fillers);
    drop(full);
    r.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_4xx_not_crashes() {
    let r = fine_router(|cfg| {
        cfg.settings.max_header_bytes = 16 * 1024;
    })
    .await;
    let bad_host = raw(r.web, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").await;
    assert!(bad_host.starts_with("HTTP/1.1 400"), "{bad_host}");
    let no_host = raw(r.web, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    let two_hosts = raw(r.web, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    let garbage = raw(
        r.web,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    )
    .await;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let too_big = raw(r.web, huge.as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    // HTTP/1.0 without Host still routes (host-less rule).
    let old = raw(r.web, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.0 200") && old.ends_with("fine"),
        "{old}"
    );
    // And the router is fine afterwards.
    assert_eq!(get(r.web, "x", "/").await.body, "fine");
    r.shutdown().await;
}

#[tokio::test]
async fn slowloris_client_is_cut_off_but_slow_readers_of_idle_keepalive_are_not() {
    let r = fine_router(|cfg| {
        cfg.settings.header_read_timeout = Duration::from_millis(400);
        cfg.settings.idle_timeout = Duration::from_secs(30);
    })
    .await;
    // Drip a request head one byte every 50 ms: the router must close the connection.
    let mut s = tokio::net::TcpStream::connect(r.web).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut = false;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    assert!(cut, "slow head was never cut off");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );

    // A keep-alive connection that sits idle longer than the header timeout between requests
    // is not a slowloris: its next request still works.
    let mut k = tokio::net::TcpStream::connect(r.web).await.unwrap();
    k.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = k.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("fine"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    k.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = k.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "idle keep-alive was closed"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed_after_the_idle_timeout() {
    let r = fine_router(|cfg| {
        cfg.settings.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut k = tokio::net::TcpStream::connect(r.web).await.unwrap();
    k.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = k.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), k.read(&mut buf))
        .await
        .expect("idle connection never closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    r.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let backend = Backend::start("slow").await;
    let r = TestRouter::start(&format!(
        r#"route("slow").rule(path_prefix("/")).to(service("slow").servers({}));"#,
        servers(&[&backend])
    ))
    .await;
    let web = r.web;
    let in_flight = tokio::spawn(async move { get(web, "x", "/?delay=800ms").await });
    // Wait until the request reached the backend's delay (the router holds a busy connection).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn(r.shutdown());
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status, 200, "in-flight request must complete");
    shutdown.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(web).await.is_err(),
        "listener must be closed after shutdown"
    );
}

/// On an h2c entrypoint, a client that sends the start of the HTTP/2 preface and stops is closed
/// at the header-read timeout (the preface is peeked, and peek answers at once while bytes are
/// queued: the reader checks the deadline itself).
#[tokio::test]
async fn a_half_sent_h2c_preface_is_closed_at_the_header_read_timeout() {
    let r = fine_router(|cfg| {
        cfg.settings.header_read_timeout = Duration::from_millis(400);
        crate::tls::web_options(cfg, &[("h2c", "true")]);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(r.web).await.unwrap();
    s.write_all(b"PRI * HTTP").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "a half preface kept its connection past 5 s: {end:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    // The entrypoint still serves.
    assert_eq!(get(r.web, "x", "/").await.body, "fine");
    r.shutdown().await;
}
