//! What the backend receives: X-Forwarded-*, hop-by-hop removal, Host, streamed bodies.

use crate::support::*;

async fn api_router(
    backend: &Backend,
    tweak: impl FnOnce(&mut switchyard::config::Config),
) -> TestRouter {
    let script = format!(
        r#"
        route("app").rule(host("app.test")).to(service("app").servers({s}));
        route("own-host").rule(host("own.test")).to(service("own").servers({s}).pass_host_header(false));
        "#,
        s = servers(&[backend]),
    );
    TestRouter::start_with(&[("10-test.rhai", &script)], tweak).await
}

fn header<'a>(api: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    api["headers"][name][0].as_str()
}

#[tokio::test]
async fn forwarded_headers_are_set_and_spoofing_is_dropped() {
    let backend = Backend::start("app").await;
    let r = api_router(&backend, |_| {}).await;
    let resp = send(
        r.web,
        "GET",
        "app.test:8000",
        "/api",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Real-Ip", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Custom", "evil"),
            (
                "Connection",
                "keep-alive, X-Forwarded-For, x-real-ip, X-Secret, Host",
            ),
            ("X-Secret", "hush"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    let api = resp.json();
    assert_eq!(header(&api, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&api, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&api, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&api, "x-forwarded-host"), Some("app.test:8000"));
    assert_eq!(header(&api, "x-forwarded-port"), Some("8000"));
    assert!(header(&api, "x-forwarded-server").is_some_and(|s| !s.is_empty()));
    assert_eq!(header(&api, "x-forwarded-custom"), None);
    assert_eq!(
        header(&api, "x-secret"),
        None,
        "headers named in Connection are removed"
    );
    assert_eq!(header(&api, "keep-alive"), None);
    assert_eq!(header(&api, "proxy-authorization"), None);
    assert_eq!(
        api["host"].as_str(),
        Some("app.test:8000"),
        "Host is passed through"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn trusted_networks_keep_their_forwarding_chain() {
    let backend = Backend::start("app").await;
    let r = api_router(&backend, |cfg| {
        cfg.settings.trusted_ips = vec!["127.0.0.0/8".parse().unwrap()]
    })
    .await;
    let api = send(
        r.web,
        "GET",
        "app.test",
        "/api",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
        ],
        "",
    )
    .await
    .json();
    assert_eq!(
        header(&api, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header(&api, "x-forwarded-proto"), Some("https"));
    r.shutdown().await;
}

#[tokio::test]
async fn pass_host_header_false_uses_the_server_address() {
    let backend = Backend::start("app").await;
    let r = api_router(&backend, |_| {}).await;
    let api = get(r.web, "own.test", "/api").await.json();
    assert_eq!(
        api["host"].as_str(),
        Some(backend.addr.to_string().as_str())
    );
    assert_eq!(header(&api, "x-forwarded-host"), Some("own.test"));
    r.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let backend = Backend::start("app").await;
    let r = api_router(&backend, |_| {}).await;
    // 8 MiB download through the router, checked byte for byte.
    let big = get(r.web, "app.test", "/data?size=8388608").await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 8 * 1024 * 1024);
    assert!(big
        .body
        .as_bytes()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    // 512 KiB upload echoed back by the backend after its header lines.
    let payload: String = (0..512 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let up = send(r.web, "POST", "app.test", "/", &[], &payload).await;
    assert_eq!(up.status, 200);
    assert!(up.body.ends_with(&payload), "upload not echoed intact");
    r.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    // A raw backend that answers with hop-by-hop headers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..4 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Internal, close\r\nX-Internal: secret\r\nKeep-Alive: timeout=1\r\nX-Kept: yes\r\n\r\nok")
                .await;
        }
    });
    let r = TestRouter::start(&format!(
        r#"route("raw").rule(path_prefix("/")).to(service("raw").servers(["{addr}"]));"#
    ))
    .await;
    let resp = get(r.web, "x", "/").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "ok");
    assert_eq!(resp.header("x-kept"), Some("yes"));
    assert_eq!(resp.header("x-internal"), None);
    assert_eq!(resp.header("keep-alive"), None);
    r.shutdown().await;
}
