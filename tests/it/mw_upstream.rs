//! Upstream-facing middlewares and response hooks against real loopback backends: `retry`
//! (connect failures vs. requests that reached a server, no duplicated POST), `circuit_breaker`
//! (trips to 503, recovers once the server is back), `compress` (gzip/br/zstd by
//! `Accept-Encoding`, size and encoding limits), `buffering` (413 / 500 over the limits),
//! `errors` (error pages from another service), `on_response` edits and context, `ctx` + shared
//! store in hooks (across a reload, with a TTL), and `respond(status, body, headers)` from a hook.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A response whose body is kept as raw bytes (compressed bodies are not UTF-8).
struct RawReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send_bytes(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawReply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method("GET")
        .uri(format!("http://{addr}{path}"))
        .header("host", "x");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    RawReply {
        status,
        headers,
        body,
    }
}

/// What a tiny hand-written backend does once it has read a whole request.
#[derive(Clone, Copy)]
enum Then {
    /// Close the connection with a reset (SO_LINGER 0), never answering.
    Reset,
    /// Answer `200 ok` and close.
    Ok,
}

/// A raw TCP backend that counts the requests it read completely (head plus
/// `Content-Length` body), one request per connection.
async fn counting_backend(then: Then) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if message_complete(&buf) {
                        break;
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match then {
                    Then::Reset => {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                    }
                    Then::Ok => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                            )
                            .await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn retry_recovers_from_connect_failures() {
    let live = Backend::start("live").await;
    let dead = dead_addr().await;
    let script = format!(
        r#"
        let with_retry = service("with-retry").servers(["{dead}", "{live}"]);
        let without = service("without").servers(["{dead}", "{live}"]);
        route("retried").rule(path_prefix("/r")).middlewares([retry(3, "10ms")]).to(with_retry);
        route("plain").rule(path_prefix("/p")).to(without);
        "#,
        live = live.addr
    );
    let r = TestRouter::start(&script).await;

    for i in 0..20 {
        let reply = get(r.web, "x", "/r").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(reply.backend(), Some("live"));
    }
    let mut failed = 0;
    for _ in 0..20 {
        let reply = get(r.web, "x", "/p").await;
        match reply.status.as_u16() {
            502 => failed += 1,
            200 => {}
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    assert!(
        (5..=15).contains(&failed),
        "without retry about half the requests go to the dead server and get 502, got {failed}/20"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn retry_never_duplicates_a_post_that_reached_a_server() {
    let (resetting, received) = counting_backend(Then::Reset).await;
    let (ok_addr, ok_received) = counting_backend(Then::Ok).await;
    let dead = dead_addr().await;
    let script = format!(
        r#"
        let resetting = service("resetting").servers(["{resetting}"]);
        let mixed = service("mixed").servers(["{dead}", "{ok_addr}"]);
        route("reset").rule(path_prefix("/reset")).middlewares([retry(3, "10ms")]).to(resetting);
        route("mixed").rule(path_prefix("/mixed")).middlewares([retry(3, "10ms")]).to(mixed);
        "#
    );
    let r = TestRouter::start(&script).await;

    let post = send(r.web, "POST", "x", "/reset", &[], "order=1").await;
    assert_eq!(post.status, 502, "{}", post.body);
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "a POST that reached the server is sent exactly once"
    );

    received.store(0, Ordering::SeqCst);
    let get_reply = get(r.web, "x", "/reset").await;
    assert_eq!(get_reply.status, 502, "{}", get_reply.body);
    assert_eq!(
        received.load(Ordering::SeqCst),
        3,
        "an idempotent GET is tried `attempts` times"
    );

    // Round robin over [dead, ok]: at least two of four POSTs meet the dead server first;
    // the connect failure is retried and every POST arrives exactly once.
    for i in 0..4 {
        let reply = send(r.web, "POST", "x", "/mixed", &[], "order=2").await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "ok\n"),
            "POST {i}"
        );
        assert_eq!(ok_received.load(Ordering::SeqCst), i + 1, "POST {i}");
    }
    r.shutdown().await;
}

#[tokio::test]
async fn circuit_breaker_opens_on_network_errors_and_recovers() {
    let (dead, reserved) = crate::support::dead_socket();
    let script = format!(
        r#"
        let app = service("app").servers(["{dead}"]);
        route("cb").rule(path_prefix("/")).middlewares([
            circuit_breaker("NetworkErrorRatio() > 0.5",
                #{{ check_period: "2s", fallback_duration: "500ms", recovery_duration: "200ms" }})
        ]).to(app);
        "#
    );
    let r = TestRouter::start(&script).await;

    let mut failures = 0;
    let mut tripped_at = None;
    for _ in 0..50 {
        let reply = get(r.web, "x", "/api").await;
        match reply.status.as_u16() {
            502 => failures += 1,
            503 => {
                tripped_at = Some(Instant::now());
                break;
            }
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    let tripped_at = tripped_at.expect("the circuit never opened within 50 failing requests");
    assert!(
        failures >= 10,
        "the window needs at least 10 results, tripped after {failures}"
    );

    // The server comes back on the same address; while the circuit is open it still gets 503.
    drop(reserved);
    let listener = TcpListener::bind(dead).await.unwrap();
    let _back = Backend::on(listener, "back");
    let open = get(r.web, "x", "/api").await;
    if tripped_at.elapsed() < Duration::from_millis(300) {
        assert_eq!(
            open.status, 503,
            "open circuit answers without asking the server"
        );
        assert_eq!(open.backend(), None);
    }

    // After fallback + recovery, traffic flows again (bounded polling).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut consecutive = 0;
    while consecutive < 5 {
        assert!(
            Instant::now() < deadline,
            "the route did not recover within 5 s"
        );
        let reply = get(r.web, "x", "/api").await;
        if reply.status == 200 {
            assert_eq!(reply.backend(), Some("back"));
            consecutive += 1;
        } else {
            assert_eq!(reply.status, 503, "{}", reply.body);
            consecutive = 0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(tripped_at.elapsed() >= Duration::from_millis(500));
    r.shutdown().await;
}

fn pattern(n: usize) -> Vec<u8> {
    (b'a'..=b'z').cycle().take(n).collect()
}

#[tokio::test]
async fn compress_negotiates_gzip_br_zstd_and_skips_small_or_unwanted() {
    let backend = Backend::start("data").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        // whoami's /data is application/octet-stream, excluded by default: these clear the list.
        route("all").rule(path_prefix("/data")).middlewares([compress(#{{ excluded_types: [] }})]).to(app);
        route("gzip-only").rule(path_prefix("/g")).middlewares([replace_path("/data"), compress(#{{ encodings: ["gzip"], excluded_types: [] }})]).to(app);
        route("default").rule(path_prefix("/dflt")).middlewares([replace_path("/data"), compress()]).to(app);
        route("text").rule(path_prefix("/text")).middlewares([compress()]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let plain = send_bytes(r.web, "/data?size=20000", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, pattern(20000));

    let gz = send_bytes(r.web, "/data?size=20000", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let vary = gz.header("vary").unwrap_or_default().to_ascii_lowercase();
    assert!(vary.contains("accept-encoding"), "Vary: {vary:?}");
    assert!(
        gz.body.len() < 20000,
        "gzip body is {} bytes",
        gz.body.len()
    );
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.body);

    let br = send_bytes(r.web, "/data?size=20000", &[("Accept-Encoding", "br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    let mut out = Vec::new();
    brotli::Decompressor::new(&br.body[..], 4096)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.body);

    let zs = send_bytes(r.web, "/data?size=20000", &[("Accept-Encoding", "zstd")]).await;
    assert_eq!(zs.header("content-encoding"), Some("zstd"));
    let out = zstd::stream::decode_all(&zs.body[..]).unwrap();
    assert_eq!(out, plain.body);

    let small = send_bytes(r.web, "/data?size=100", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(small.status, 200);
    assert_eq!(
        small.header("content-encoding"),
        None,
        "under min_size (1024)"
    );
    assert_eq!(small.body, pattern(100));

    let not_br = send_bytes(r.web, "/g?size=20000", &[("Accept-Encoding", "br")]).await;
    assert_eq!(not_br.status, 200);
    assert_eq!(
        not_br.header("content-encoding"),
        None,
        "br is not in encodings"
    );
    assert_eq!(not_br.body, plain.body);
    let only_gz = send_bytes(r.web, "/g?size=20000", &[("Accept-Encoding", "br, gzip")]).await;
    assert_eq!(only_gz.header("content-encoding"), Some("gzip"));

    // Defaults: octet-stream is an excluded type; a large text/plain echo is compressed.
    let octets = send_bytes(r.web, "/dflt?size=20000", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(octets.status, 200);
    assert_eq!(octets.header("content-encoding"), None);
    assert_eq!(octets.body, plain.body);
    let pad = "p".repeat(3000);
    let text = send_bytes(
        r.web,
        "/text",
        &[
            ("Accept-Encoding", "gzip;q=0.5, zstd;q=0.1"),
            ("X-Pad", &pad),
        ],
    )
    .await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-encoding"),
        Some("gzip"),
        "highest q-value wins"
    );
    let mut out = String::new();
    flate2::read::GzDecoder::new(&text.body[..])
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains(&format!("X-Pad: {pad}\n")), "{out}");
    r.shutdown().await;
}

#[tokio::test]
async fn buffering_limits_request_and_response_bodies() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("req").rule(path_prefix("/in")).middlewares([buffering(#{{ max_request_body: 1000 }})]).to(app);
        route("resp").rule(path_prefix("/data")).middlewares([buffering(#{{ max_response_body: 1000 }})]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let small = "x".repeat(499) + "!";
    let ok = send(r.web, "POST", "x", "/in", &[], &small).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.ends_with(&format!("\n\n{small}")),
        "the backend echoes the whole body: {}",
        ok.body
    );
    assert!(ok.body.contains("Content-Length: 500\n"), "{}", ok.body);

    let big = "y".repeat(5000);
    let too_big = send(r.web, "POST", "x", "/in", &[], &big).await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert_eq!(too_big.backend(), None, "never reached the backend");

    let fits = get(r.web, "x", "/data?size=500").await;
    assert_eq!(fits.status, 200);
    assert_eq!(fits.body.as_bytes(), pattern(500));
    let over = get(r.web, "x", "/data?size=5000").await;
    assert_eq!(over.status, 500, "{}", over.body);
    assert!(!over.body.contains("abcdefghij"), "{}", over.body);
    r.shutdown().await;
}

#[tokio::test]
async fn errors_middleware_serves_pages_from_another_service() {
    let app_backend = Backend::start("app").await;
    let mut pages_backend = Backend::start("pages").await;
    let script = format!(
        r#"
        let app = service("app").servers({a});
        let pages = service("pages").servers({p});
        route("app").rule(path_prefix("/")).middlewares([
            errors(#{{ status: ["500-599"], service: pages, query: "/{{status}}.html" }})
        ]).to(app);
        "#,
        a = servers(&[&app_backend]),
        p = servers(&[&pages_backend])
    );
    let r = TestRouter::start(&script).await;

    let page = get(r.web, "x", "/orders?status=503").await;
    assert_eq!(page.status, 503, "the status code stays");
    assert!(
        page.body.contains("GET /503.html HTTP/1.1\n"),
        "body from the pages service: {}",
        page.body
    );
    assert!(page.body.contains("Name: pages\n"), "{}", page.body);

    let not_in_range = get(r.web, "x", "/orders?status=404").await;
    assert_eq!(not_in_range.status, 404);
    assert_eq!(not_in_range.backend(), Some("app"));
    assert!(
        not_in_range
            .body
            .contains("GET /orders?status=404 HTTP/1.1\n"),
        "{}",
        not_in_range.body
    );

    let ok = get(r.web, "x", "/orders").await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("Name: app\n"), "{}", ok.body);

    pages_backend.stop();
    // Once the pages server is gone, the original answer goes through (bounded polling, the
    // backend stops asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(r.web, "x", "/orders?status=503").await;
        assert_eq!(reply.status, 503);
        if reply.body.contains("Name: app\n") {
            assert!(
                reply.body.contains("GET /orders?status=503 HTTP/1.1\n"),
                "{}",
                reply.body
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served from pages: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.shutdown().await;
}

#[tokio::test]
async fn on_response_edits_status_and_headers_and_fails_locally() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        fn edit(resp) {{
            resp.set_header("X-Edited", "yes");
            if resp.status == 200 {{ resp.status = 203; }}
        }}
        fn with_ctx(resp, ctx) {{
            resp.set_header("X-Route", ctx.route);
            resp.set_header("X-Service", ctx.service);
            resp.set_header("X-Server", ctx.server);
            resp.set_header("X-Backend-Said", resp.header("X-Whoami-Name"));
        }}
        route("edit").rule(path_prefix("/edit")).middlewares([on_response(Fn("edit"))]).to(app);
        route("ctx").rule(path_prefix("/ctx")).middlewares([on_response(Fn("with_ctx"))]).to(app);
        route("boom").rule(path_prefix("/boom")).middlewares([on_response(|resp| throw "nope")]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let edited = get(r.web, "x", "/edit").await;
    assert_eq!(edited.status, 203);
    assert_eq!(edited.header("x-edited"), Some("yes"));
    assert_eq!(edited.backend(), Some("app"));
    let err = get(r.web, "x", "/edit?status=404").await;
    assert_eq!(err.status, 404, "only 200 becomes 203");
    assert_eq!(err.header("x-edited"), Some("yes"));

    let ctx = get(r.web, "x", "/ctx").await;
    assert_eq!(ctx.status, 200);
    assert_eq!(ctx.header("x-route"), Some("ctx"));
    assert_eq!(ctx.header("x-service"), Some("app"));
    assert_eq!(
        ctx.header("x-server"),
        Some(backend.addr.to_string().as_str())
    );
    assert_eq!(ctx.header("x-backend-said"), Some("app"));

    let boom = get(r.web, "x", "/boom").await;
    assert_eq!(boom.status, 500);
    assert_eq!(boom.body, "500 Internal Server Error\n");
    let after = get(r.web, "x", "/edit").await;
    assert_eq!(after.status, 203, "another route is unaffected");
    r.shutdown().await;
}

#[tokio::test]
async fn hooks_share_a_store_that_survives_reloads_and_expires() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        fn count(req, ctx) {{
            let n = ctx.store.incr("hits", 1);
            req.set_header("X-Count", n.to_string());
            req.set_header("X-Req-Id", ctx.request_id);
        }}
        fn windowed(req, ctx) {{
            let n = ctx.store.incr("k", 1, "300ms");
            req.set_header("X-K", n.to_string());
        }}
        route("count").rule(path_prefix("/api")).middlewares([on_request(Fn("count"))]).to(app);
        route("ttl").rule(path_prefix("/ttl")).middlewares([replace_path("/api"), on_request(Fn("windowed"))]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let mut ids = Vec::new();
    for expected in 1..=3 {
        let seen = get(r.web, "x", "/api").await.json();
        assert_eq!(
            seen["headers"]["x-count"][0],
            expected.to_string(),
            "{seen}"
        );
        let id = seen["headers"]["x-req-id"][0].as_str().unwrap().to_string();
        assert!(!id.is_empty());
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids differ: {ids:?}");

    let status = r
        .write_script("10-test.rhai", &format!("{script}\n// reloaded\n"))
        .await;
    assert!(status.ok, "{:?}", status.errors);
    assert_eq!(status.live_attempt, status.attempt);
    let seen = get(r.web, "x", "/api").await.json();
    assert_eq!(
        seen["headers"]["x-count"][0], "4",
        "the store survives a reload"
    );

    let first = get(r.web, "x", "/ttl").await.json();
    assert_eq!(first["headers"]["x-k"][0], "1");
    let second = get(r.web, "x", "/ttl").await.json();
    assert_eq!(second["headers"]["x-k"][0], "2");
    let start = Instant::now();
    loop {
        let seen = get(r.web, "x", "/ttl").await.json();
        if seen["headers"]["x-k"][0] == "1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the key never expired: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.shutdown().await;
}

#[tokio::test]
async fn on_request_respond_with_headers() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        fn deny(req) {{
            if req.header("X-Key") == "" {{
                return respond(429, "slow down\n", #{{ "Retry-After": "7", "X-Why": "quota" }});
            }}
        }}
        route("gated").rule(path_prefix("/")).middlewares([on_request(Fn("deny"))]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let denied = get(r.web, "x", "/api").await;
    assert_eq!(
        (denied.status.as_u16(), denied.body.as_str()),
        (429, "slow down\n")
    );
    assert_eq!(denied.header("retry-after"), Some("7"));
    assert_eq!(denied.header("x-why"), Some("quota"));
    assert_eq!(denied.backend(), None);

    let allowed = send(r.web, "GET", "x", "/api", &[("X-Key", "k")], "").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.backend(), Some("app"));
    assert_eq!(allowed.header("x-why"), None);
    r.shutdown().await;
}
