//! The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against a running router. `tests/browser/setup.sh` installs
//! what is missing (apt, npm) on first use. Screenshots are kept in
//! `target/test-artifacts/dashboard/`. The router has a TLS entrypoint serving one certificate
//! a script declares (made by the test CA of `tls.rs`) and its self-signed default, which the
//! Certificates tab lists. The browser run sends the traffic (to `api.test`) whose totals,
//! latency and rate charts the page must show; before it no route has a latency, after it
//! `api` has.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{get, servers, Backend, TestRouter};
use crate::tls::{entrypoint, pair, Ca};

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
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let secure = pair(&ca.issue("secure", &["secure.test"], false));
    let script = format!(
        r#"
tls_certificate("{}", "{}");
route("api").rule(host("api.test")).priority(30).to(service("api").servers({}));
route("www").rule(host("www.test")).priority(20).to(service("www").servers({}));
route("old").rule(host("old.test")).priority(10).to(redirect("https://www.test/", true));
"#,
        secure.cert.display(),
        secure.key.display(),
        servers(&[&api]),
        servers(&[&www])
    );
    let r = TestRouter::start_with(&[("10-routes.rhai", &script)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
    })
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
    let (code, out) = tokio::task::spawn_blocking(move || {
        run_bounded(
            Command::new("node")
                .arg(repo().join("tests/browser/dashboard.mjs"))
                .current_dir(repo().join("tests/browser"))
                .env("DASHBOARD_URL", base)
                .env("SCRIPT_FILE", script_file)
                .env("WEB_ADDR", web)
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
