//! The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against a running router. `tests/browser/setup.sh` installs
//! what is missing (apt, npm) on first use. Screenshots are kept in
//! `target/test-artifacts/dashboard/`. The router has a TLS entrypoint serving one certificate
//! a script declares (made by the test CA of `tls.rs`) and its self-signed default, which the
//! Certificates tab lists. The browser run sends the traffic (to `api.test`) whose totals,
//! latency and rate charts the page must show; before it no route has a latency, after it
//! `api` has. It also has a TCP entrypoint with a cleartext TCP route to a line-echo server and
//! a UDP entrypoint with a UDP route to a UDP echo: the test makes `TCP_CONNECTIONS`
//! connections and `UDP_SESSIONS` sessions through them first (waiting, through the admin API,
//! until they have ended), and the TCP and UDP tabs must show at least those.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::support::l4::{add_entrypoint, lines_to, start_router, udp_ask, LineServer, UdpEcho};
use crate::support::{get, poll_get, servers, Backend};
use crate::tls::{pair, Ca};

/// Connections through the TCP route and client sessions through the UDP route before the
/// browser run.
const TCP_CONNECTIONS: u64 = 3;
const UDP_SESSIONS: u64 = 2;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to completion, killing it past `limit`: (exit code, stdout + stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let out = out_path.reopen().unwrap();
    let err = out.try_clone().unwrap();
    let mut child = cmd.stdout(out).stderr(err).spawn().expect("cannot start");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        std::fs::read_to_string(out_path.path()).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let (code, out) = tokio::task::spawn_blocking(|| {
        run_bounded(
            Command::new("bash").arg(repo().join("tests/browser/setup.sh")),
            Duration::from_secs(1500),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "browser set-up failed:\n{out}");

    let api = Backend::start("api-1").await;
    let www = Backend::start("www-1").await;
    let echo = LineServer::start("echo").await;
    let udp_echo = UdpEcho::start().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let secure = pair(&ca.issue("secure", &["secure.test"], false));
    let script = format!(
        r#"
tls_certificate("{}", "{}");
route("api").rule(host("api.test")).priority(30).to(service("api").servers({}));
route("www").rule(host("www.test")).priority(20).to(service("www").servers({}));
route("old").rule(host("old.test")).priority(10).to(redirect("https://www.test/", true));
tcp_route("echo").rule("HostSNI(`*`)").entrypoints(["tcp"]).to(tcp_service("echo").servers(["{}"]));
udp_route("dns").to(udp_service("dns").servers(["{}"]));
"#,
        secure.cert.display(),
        secure.key.display(),
        servers(&[&api]),
        servers(&[&www]),
        echo.addr,
        udp_echo.addr
    );
    let r = start_router(&[("10-routes.rhai", &script)], |cfg| {
        add_entrypoint(cfg, "websecure", &["tls"]);
        add_entrypoint(cfg, "tcp", &[]);
        // Sessions end (and count) after 1 s without a datagram.
        add_entrypoint(cfg, "dns", &["udp", "udp.timeout=1s"]);
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status().errors);

    // TCP connections and UDP sessions through the router, each answered by its echo server.
    let (tcp, udp) = (r.entrypoint("tcp"), r.entrypoint("dns"));
    for i in 0..TCP_CONNECTIONS {
        let mut c = lines_to(tcp).await;
        assert_eq!(
            c.ask(&format!("hello {i}")).await.unwrap(),
            format!("echo: hello {i}")
        );
    }
    for i in 0..UDP_SESSIONS {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answer = udp_ask(&socket, udp, &format!("query {i}")).await.unwrap();
        assert!(answer.ends_with(&format!(" query {i}")), "{answer}");
    }
    // Counted when they end: the connections once closed, the sessions after 1 s idle.
    let ended = |list: &'static str, at_least: u64| {
        move |reply: &crate::support::Reply| {
            let v = reply.json();
            let route = &v[list][0];
            route["connections"].as_u64() >= Some(at_least)
                && route["bytes_in"].as_u64() > Some(0)
                && route["bytes_out"].as_u64() > Some(0)
        }
    };
    let within = Duration::from_secs(10);
    let tcp_routes = poll_get(
        r.admin,
        "localhost",
        "/api/tcp/routes",
        within,
        ended("tcp_routes", TCP_CONNECTIONS),
    )
    .await
    .json();
    assert_eq!(tcp_routes["tcp_routes"][0]["name"], "echo", "{tcp_routes}");
    poll_get(
        r.admin,
        "localhost",
        "/api/udp/routes",
        within,
        ended("udp_routes", UDP_SESSIONS),
    )
    .await;

    // The page is served from the binary and names nothing outside it.
    let page = get(r.admin, "localhost", "/dashboard/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for asset in ["/dashboard/", "/dashboard/app.js", "/dashboard/style.css"] {
        let body = get(r.admin, "localhost", asset).await.body;
        for fetches in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "fetch(\"http",
            "@import",
        ] {
            assert!(
                !body.contains(fetches),
                "{asset} loads from another site: {fetches}"
            );
        }
    }

    // No request yet: no latency to show.
    let routes = get(r.admin, "localhost", "/api/routes").await.json();
    for route in routes["routes"].as_array().unwrap() {
        assert!(
            route["p50_ms"].is_null() && route["p99_ms"].is_null(),
            "latency before any request: {route}"
        );
    }

    let shots: PathBuf = repo().join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{}", r.admin);
    let script_file = r.script_path("10-routes.rhai");
    let web = r.web.to_string();
    let shots_env = shots.clone();
    let (tcp, udp) = (tcp.to_string(), udp.to_string());
    let (code, out) = tokio::task::spawn_blocking(move || {
        run_bounded(
            Command::new("node")
                .arg(repo().join("tests/browser/dashboard.mjs"))
                .current_dir(repo().join("tests/browser"))
                .env("DASHBOARD_URL", base)
                .env("SCRIPT_FILE", script_file)
                .env("WEB_ADDR", web)
                .env("TCP_ADDR", tcp)
                .env("UDP_ADDR", udp)
                .env("TCP_CONNECTIONS", TCP_CONNECTIONS.to_string())
                .env("UDP_SESSIONS", UDP_SESSIONS.to_string())
                .env("SHOT_DIR", &shots_env),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    println!("{out}");
    assert_eq!(
        code,
        Some(0),
        "the browser run failed (screenshots in {}):\n{out}",
        shots.display()
    );
    for shot in [
        "3-explain.png",
        "4-certificates.png",
        "6-route-charts.png",
        "7-service-charts.png",
        "8-routes-800px.png",
        "9-tcp.png",
        "10-udp.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }

    // The browser's traffic: `api` (route and service) has a latency, `www` still none.
    let routes = get(r.admin, "localhost", "/api/routes").await.json();
    let route = |name: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("no route {name}: {routes}"))
            .clone()
    };
    let api = route("api");
    let (p50, p99) = (api["p50_ms"].as_f64(), api["p99_ms"].as_f64());
    assert!(
        p50.is_some_and(|p| p > 0.0) && p99.is_some_and(|p| p > 0.0) && p99 >= p50,
        "api after traffic: {api}"
    );
    assert!(api["requests"].as_u64() > Some(10), "{api}");
    assert!(api["errors"].as_u64() > Some(0), "{api}");
    let www = route("www");
    assert!(www["p50_ms"].is_null() && www["p99_ms"].is_null(), "{www}");
    let svc = get(r.admin, "localhost", "/api/services/api").await.json();
    assert!(
        svc["p50_ms"].as_f64().is_some_and(|p| p > 0.0)
            && svc["p99_ms"].as_f64().is_some_and(|p| p > 0.0),
        "service api after traffic: {svc}"
    );
    r.shutdown().await;
}
