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
