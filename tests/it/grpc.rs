//! gRPC through the router end to end, with PyPI's grpcio on both sides
//! (`clients/grpc_pair.py`): a client on an h2c entrypoint and on a TLS entrypoint (ALPN h2),
//! a server behind `h2c://`. Unary, server-, client- and bidi-streaming calls; the server's
//! error status and message arrive (trailers forwarded); a call the server answers after the
//! router's response timeout gets a gRPC error from the router, not an HTML page.

use std::time::Duration;

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
    r.shutdown().await;
}
