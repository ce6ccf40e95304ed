//! WebSocket tunnelling, other upgrades, CONNECT.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn ws_connect(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("ws://{host}{path}").into_client_request().unwrap();
    tokio_tungstenite::client_async(req, tcp)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn websocket_is_tunnelled_and_outlives_a_reload() {
    let backend = Backend::start("ws").await;
    let r = TestRouter::start(&format!(
        r#"route("ws").rule(host("ws.test")).to(service("ws").servers({}));"#,
        servers(&[&backend])
    ))
    .await;
    let mut ws = ws_connect(r.web, "ws.test", "/echo")
        .await
        .expect("upgrade through the router");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );

    // Remove the route: new upgrades get 404, the open websocket keeps working.
    let status = r
        .write_script(
            "10-test.rhai",
            r#"route("other").rule(host("other.test")).to(respond(200, "x"));"#,
        )
        .await;
    assert!(status.ok, "{status:?}");
    assert!(ws_connect(r.web, "ws.test", "/echo").await.is_err());
    assert_eq!(get(r.web, "ws.test", "/").await.status, 404);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    ws.close(None).await.unwrap();
    r.shutdown().await;
}

#[tokio::test]
async fn refused_upgrade_is_passed_back_without_tunnel() {
    let backend = Backend::start("ws").await;
    let r = TestRouter::start(&format!(
        r#"route("ws").rule(host("ws.test")).to(service("ws").servers({}));"#,
        servers(&[&backend])
    ))
    .await;
    let err = ws_connect(r.web, "ws.test", "/echo?status=403")
        .await
        .expect_err("backend refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    r.shutdown().await;
}

#[tokio::test]
async fn non_websocket_upgrades_are_not_forwarded() {
    let backend = Backend::start("app").await;
    let r = TestRouter::start(&format!(
        r#"route("app").rule(host("app.test")).to(service("app").servers({}));"#,
        servers(&[&backend])
    ))
    .await;
    let resp = send(
        r.web,
        "GET",
        "app.test",
        "/api",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    let api = resp.json();
    assert!(api["headers"].get("upgrade").is_none(), "{api}");
    assert!(api["headers"].get("http2-settings").is_none(), "{api}");
    r.shutdown().await;
}

#[tokio::test]
async fn connect_is_refused() {
    let r =
        TestRouter::start(r#"route("all").rule(path_prefix("/")).to(respond(200, "x"));"#).await;
    let resp = raw(
        r.web,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    r.shutdown().await;
}

/// The handshake answer carries the sticky cookie (a client whose first request is the
/// websocket, like socket.io's websocket-only transport, is pinned from the start), and a
/// client presenting it is tunnelled to the same server every time.
#[tokio::test]
async fn websocket_handshake_sets_and_honours_the_sticky_cookie() {
    let (a, b) = (Backend::start("ws-a").await, Backend::start("ws-b").await);
    let r = TestRouter::start(&format!(
        r#"route("ws").rule(host("ws.test")).to(service("ws").servers({}).balance(sticky_cookie("io", #{{ http_only: true }})));"#,
        servers(&[&a, &b])
    ))
    .await;
    let handshake = |cookie: Option<String>| async move {
        let tcp = tokio::net::TcpStream::connect(r.web).await.unwrap();
        let mut req = "ws://ws.test/echo".into_client_request().unwrap();
        if let Some(c) = cookie {
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        (header("x-whoami-name"), header("set-cookie"))
    };
    let (server, set_cookie) = handshake(None).await;
    let set_cookie = set_cookie.expect("Set-Cookie on the 101 answer");
    assert!(
        set_cookie.starts_with("io=") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let pair = set_cookie.split(';').next().unwrap().to_string();
    for _ in 0..6 {
        let (again, reissued) = handshake(Some(pair.clone())).await;
        assert_eq!(again, server);
        assert_eq!(reissued, None, "a valid cookie is not set again");
    }
    r.shutdown().await;
}
