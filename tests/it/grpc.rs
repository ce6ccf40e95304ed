//! gRPC through the router end to end, with PyPI's grpcio on both sides
//! (`clients/grpc_pair.py`): a client on an h2c entrypoint and on a TLS entrypoint (ALPN h2),
//! a server behind `h2c://`. Unary, server-, client- and bidi-streaming calls; the server's
//! error status and message arrive (trailers forwarded); a call the server answers after the
//! router's response timeout gets a gRPC error from the router, not an HTML page. The router's
//! own errors as a raw HTTP/2 (and HTTP/1.1) client sees them: HTTP 200, `application/grpc`,
//! `grpc-status`; calls share one upstream connection per worker, made again after the server
//! restarts.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::docker::free_port;
use crate::support::*;
use crate::tls::{addr_of, entrypoint, pair, web_options, Ca};

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/grpc_pair.py")
}

/// The gRPC server on `port`, up when this returns; killed on drop.
async fn grpc_server(port: u16) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(tools_python())
        .arg(script())
        .args(["server", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the gRPC server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
        "gRPC server not ready: {ready:?}"
    );
    child
}

/// Runs the client against `target` (TLS with `ca` and `name`), bounded; its JSON verdict.
async fn grpc_client(target: &str, tls: Option<(&str, &str)>) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new(tools_python());
    cmd.arg(script()).args(["client", target]);
    if let Some((ca, name)) = tls {
        cmd.args([ca, name]);
    }
    verdict(cmd).await
}

/// Runs a `grpc_pair.py` client command (at most 40 s) and parses the JSON verdict it prints.
async fn verdict(mut cmd: tokio::process::Command) -> serde_json::Value {
    let out = tokio::time::timeout(Duration::from_secs(40), cmd.kill_on_drop(true).output())
        .await
        .expect("the gRPC client took longer than 40 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "no verdict ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn grpc_calls_pass_through_h2c_and_tls_with_trailers_and_grpc_errors() {
    let port = free_port();
    let _server = grpc_server(port).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.issue("grpc", &["grpc.test"], false);
    let log_file = dir.path().join("access.log");
    let script = format!(
        "route(\"grpc\").rule(\"PathPrefix(`/echo.Echo/`)\").entrypoints([\"web\", \"websecure\"])\n\
         .to(service(\"echo\").servers([\"h2c://127.0.0.1:{port}\"]));\n"
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        web_options(cfg, &[("h2c", "true")]);
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&cert)];
        // The `Slow` call answers after 3 s: past this, the router answers instead.
        cfg.settings.upstream_response_timeout = Duration::from_secs(1);
        cfg.access_log.output = Some(switchyard::access_log::Output::File(log_file.clone()));
        cfg.access_log.format = switchyard::access_log::Format::Json;
    })
    .await;

    let tls = addr_of(&r, "websecure");
    let ca_file = ca.cert.display().to_string();
    for (how, v) in [
        (
            "h2c",
            grpc_client(&format!("127.0.0.1:{}", r.web.port()), None).await,
        ),
        (
            "tls",
            grpc_client(
                &format!("127.0.0.1:{}", tls.port()),
                Some((&ca_file, "grpc.test")),
            )
            .await,
        ),
    ] {
        assert_eq!(v["unary"], "unary:hi", "{how}: {v}");
        assert_eq!(
            v["server_stream"],
            serde_json::json!(["part0:x", "part1:x", "part2:x"]),
            "{how}: {v}"
        );
        assert_eq!(v["client_stream"], "a+b+c", "{how}: {v}");
        assert_eq!(
            v["bidi"],
            serde_json::json!(["echo:1", "echo:2"]),
            "{how}: {v}"
        );
        // The server's status and message travel in the trailers.
        assert_eq!(
            v["fail"],
            serde_json::json!(["PERMISSION_DENIED", "no entry for bob"]),
            "{how}: {v}"
        );
        // The router's timeout is a gRPC status the client understands.
        assert_eq!(v["slow"][0], "DEADLINE_EXCEEDED", "{how}: {v}");
        assert!(
            v["slow"][1]
                .as_str()
                .unwrap_or_default()
                .starts_with("switchyard:"),
            "{how}: the router's answer, not the client's own deadline: {v}"
        );
    }

    // The statuses are counted, from trailers (OK after a stream), from a server's
    // trailers-only answer (PERMISSION_DENIED 7) and from the router's own (DEADLINE_EXCEEDED 4).
    let metrics = get(r.admin, "localhost", "/metrics").await.body;
    let count = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |n| n.trim().parse::<f64>().unwrap_or(0.0) as u64)
    };
    let grpc = |code: &str| {
        count(&format!(
            "switchyard_grpc_responses_total{{route=\"grpc\",service=\"echo\",grpc_status=\"{code}\"}}"
        ))
    };
    assert_eq!(grpc("0"), 8, "4 good calls per client:\n{metrics}");
    assert_eq!(grpc("7"), 2, "{metrics}");
    assert_eq!(grpc("4"), 2, "{metrics}");
    assert_eq!(
        count(
            "switchyard_requests_total{entrypoint=\"web\",route=\"grpc\",service=\"echo\",\
             code=\"200\",method=\"POST\",protocol=\"grpc\",version=\"2\"}"
        ),
        6,
        "{metrics}"
    );
    // And logged: one line per call, with its status, once the call ended.
    r.shutdown().await;
    let log = std::fs::read_to_string(&log_file).unwrap();
    let statuses: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["RouterName"] == "grpc")
        .map(|v| v["GrpcStatus"].as_str().unwrap_or("missing").to_string())
        .collect();
    assert_eq!(statuses.len(), 12, "{log}");
    for (code, n) in [("0", 8), ("7", 2), ("4", 2)] {
        assert_eq!(
            statuses.iter().filter(|s| *s == code).count(),
            n,
            "GrpcStatus {code}: {statuses:?}"
        );
    }
}

/// One call through `addr` on a fresh HTTP/2 connection with prior knowledge: POST `path` with
/// `content-type`, a gRPC-framed empty message and `te: trailers`. The response head, its body
/// and trailers.
async fn h2_call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
) -> (
    http::StatusCode,
    http::HeaderMap,
    Bytes,
    Option<http::HeaderMap>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://grpc.test{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The value of `switchyard_upstream_errors_total` for `service` and `kind` (0 when absent).
async fn upstream_errors(admin: SocketAddr, service: &str, kind: &str) -> u64 {
    let text = get(admin, "localhost", "/metrics").await.body;
    let want =
        format!("switchyard_upstream_errors_total{{service=\"{service}\",kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

#[tokio::test]
async fn router_errors_reach_grpc_clients_as_grpc_statuses() {
    let port = free_port();
    let _server = grpc_server(port).await;
    let dead = dead_addr().await;
    let script = format!(
        "route(\"grpc\").rule(\"PathPrefix(`/echo.Echo/`)\")\n\
         .to(service(\"echo\").servers([\"h2c://127.0.0.1:{port}\"]));\n\
         route(\"dead\").rule(\"PathPrefix(`/dead.Svc/`)\")\n\
         .to(service(\"dead\").servers([\"h2c://{dead}\"]));\n"
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        web_options(cfg, &[("h2c", "true")]);
        cfg.settings.upstream_response_timeout = Duration::from_secs(1);
    })
    .await;
    let grpc = "application/grpc";

    // A call that works, for reference: the server's status arrives in the trailers.
    let (status, _, body, trailers) = h2_call(r.web, "/echo.Echo/Unary", grpc).await;
    assert_eq!(status, 200);
    assert_eq!(&body[5..], b"unary:", "a gRPC-framed answer");
    assert_eq!(header(&trailers.unwrap(), "grpc-status"), "0");

    // The router's own answers: HTTP 200, gRPC content type, status in the head.
    for (path, code, why) in [
        ("/nothing.Svc/M", "12", "no route: UNIMPLEMENTED"),
        ("/dead.Svc/M", "14", "server refused: UNAVAILABLE"),
        (
            "/echo.Echo/Slow",
            "4",
            "response timeout: DEADLINE_EXCEEDED",
        ),
    ] {
        let (status, h, body, _) = h2_call(r.web, path, "application/grpc+proto").await;
        assert_eq!(status, 200, "{why}");
        assert_eq!(header(&h, "content-type"), grpc, "{why}");
        assert_eq!(header(&h, "grpc-status"), code, "{why}");
        assert!(
            header(&h, "grpc-message").starts_with("switchyard: "),
            "{why}: {h:?}"
        );
        assert!(body.is_empty(), "{why}: no HTML or text page: {body:?}");
    }
    // Other clients still get HTTP errors.
    let (status, h, _, _) = h2_call(r.web, "/dead.Svc/M", "application/json").await;
    assert_eq!(status, 502);
    assert!(
        header(&h, "content-type").starts_with("text/plain"),
        "{h:?}"
    );
    // A gRPC request over HTTP/1.1 gets the gRPC shape too.
    let reply = send(
        r.web,
        "POST",
        "grpc.test",
        "/dead.Svc/M",
        &[("content-type", grpc)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("14"));

    // The failures are the servers' side: counted against them, by kind.
    assert!(upstream_errors(r.admin, "dead", "connect").await >= 3);
    assert!(upstream_errors(r.admin, "echo", "timeout").await >= 1);
    r.shutdown().await;
}

/// Runs `grpc_pair.py peers TARGET N`, bounded: the distinct peers the server saw and failures.
async fn peers(target: &str, n: usize) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new(tools_python());
    cmd.arg(script()).args(["peers", target, &n.to_string()]);
    verdict(cmd).await
}

#[tokio::test]
async fn calls_share_one_upstream_connection_made_again_after_a_restart() {
    let port = free_port();
    let mut server = grpc_server(port).await;
    let script = format!(
        "route(\"grpc\").rule(\"PathPrefix(`/echo.Echo/`)\")\n\
         .to(service(\"echo\").servers([\"h2c://127.0.0.1:{port}\"]));\n"
    );
    // One worker: all calls go out on its one HTTP/2 connection to the server.
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        web_options(cfg, &[("h2c", "true")]);
        cfg.workers = 1;
    })
    .await;
    let target = format!("127.0.0.1:{}", r.web.port());
    let first = peers(&target, 24).await;
    assert_eq!(first["failed"], serde_json::json!([]), "{first}");
    assert_eq!(
        first["peers"].as_array().map(Vec::len),
        Some(1),
        "24 concurrent calls, one multiplexed connection: {first}"
    );

    // The server goes away and comes back on the same port: the router connects again.
    server.kill().await.unwrap();
    let _server = grpc_server(port).await;
    let second = peers(&target, 8).await;
    assert_eq!(second["failed"], serde_json::json!([]), "{second}");
    assert_eq!(
        second["peers"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert_ne!(first["peers"], second["peers"], "a new connection");
    r.shutdown().await;
}
