//! The admin JSON API as the dashboard and a user's curl see it: every view of a known script
//! (snapshots, with the run-specific values — ports, times, the commit — scrubbed), search and
//! paging, the live explain, script errors with their source, and basic auth.

use serde_json::Value;

use crate::support::{dead_addr, get, send, Backend, TestRouter};

const SCRIPT: &str = r#"
let api = service("api").servers([SRV_A, SRV_B]);
let down = service("down").servers([SRV_DEAD]).health_check(#{ path: "/health", interval: "100ms", timeout: "50ms" });
route("api").rule(host("api.test") & path_prefix("/v1")).priority(20).middlewares([strip_prefix("/v1")]).to(api);
route("api-admin").rule(host("api.test") & path_prefix("/admin")).priority(30)
    .middlewares([ip_allow_list(["10.0.0.0/8"]), strip_prefix("/admin")]).to(api);
route("old").rule(host("old.test")).to(redirect("https://api.test/v1/", true));
route("down").rule(host("down.test")).to(down);
"#;

struct Fixture {
    r: TestRouter,
    /// Run-specific text → stable placeholder, for snapshots.
    scrub: Vec<(String, String)>,
    _backends: Vec<Backend>,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(tweak: impl FnOnce(&mut switchyard::config::Config)) -> Fixture {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dead = dead_addr().await;
    let script = SCRIPT
        .replace("SRV_A", &format!("\"{}\"", a.addr))
        .replace("SRV_B", &format!("\"{}\"", b.addr))
        .replace("SRV_DEAD", &format!("\"{dead}\""));
    let r = TestRouter::start_with(&[("10-api.rhai", &script)], tweak).await;
    let scrub = vec![
        (a.addr.to_string(), "BACKEND_A".to_string()),
        (b.addr.to_string(), "BACKEND_B".to_string()),
        (dead.to_string(), "DEAD".to_string()),
        (r.web.to_string(), "WEB".to_string()),
        (r.dir.path().display().to_string(), "SCRIPTS".to_string()),
    ];
    Fixture {
        r,
        scrub,
        _backends: vec![a, b],
    }
}

impl Fixture {
    async fn api(&self, path: &str) -> Value {
        let reply = get(self.r.admin, "localhost", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        self.scrubbed(&reply.body)
    }

    fn scrubbed(&self, body: &str) -> Value {
        let mut text = body.to_string();
        for (from, to) in &self.scrub {
            text = text.replace(from, to);
        }
        // This machine's host name, as X-Forwarded-Server in explain's header diff.
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        text = text
            .replace(
                &format!("x-forwarded-server: {host}"),
                "x-forwarded-server: [host]",
            )
            .replace(
                &format!("\"x-forwarded-server\",\"{host}\""),
                "\"x-forwarded-server\",\"[host]\"",
            );
        let mut v: Value = serde_json::from_str(&text).unwrap();
        blank(&mut v);
        v
    }
}

/// Times, durations and build identity differ per run: kept as keys, values blanked.
fn blank(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if matches!(
                    k.as_str(),
                    "at" | "duration_ms" | "uptime_seconds" | "commit" | "last_sync" | "in_flight"
                ) {
                    *x = Value::String("-".into());
                } else {
                    blank(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(blank),
        _ => {}
    }
}

/// Until the dead server's health check has marked it down (bounded).
async fn until_down(f: &Fixture) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = f.api("/api/services/down").await;
        if s["servers_up"] == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never down: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_view_of_a_known_script() {
    let f = fixture().await;
    until_down(&f).await;
    insta::assert_json_snapshot!("admin_overview", f.api("/api/overview").await);
    insta::assert_json_snapshot!("admin_routes", f.api("/api/routes").await);
    insta::assert_json_snapshot!("admin_route_detail", f.api("/api/routes/api-admin").await);
    insta::assert_json_snapshot!("admin_services", f.api("/api/services").await);
    insta::assert_json_snapshot!("admin_middlewares", f.api("/api/middlewares").await);
    insta::assert_json_snapshot!("admin_entrypoints", f.api("/api/entrypoints").await);
    insta::assert_json_snapshot!("admin_scripts", f.api("/api/scripts").await);
    insta::assert_json_snapshot!("admin_catalog", f.api("/api/catalog").await);
    f.r.shutdown().await;
}

#[tokio::test]
async fn lists_search_and_page_and_bad_queries_are_400() {
    let f = fixture().await;
    let v = f.api("/api/routes?search=API&per_page=1&page=2").await;
    let names: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // `api-admin` (priority 30) is tried before `api`; both match "api"; page 2 of 1 is `api`.
    assert_eq!(names, vec!["api"], "{v}");
    assert_eq!(
        (v["total"].as_u64(), v["page"].as_u64()),
        (Some(2), Some(2))
    );
    let v = f.api("/api/middlewares?search=ip_allow").await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(
        v["middlewares"][0]["routes"],
        serde_json::json!(["api-admin"])
    );

    for (path, says) in [
        ("/api/routes?page=0", "page starts at 1"),
        ("/api/services?per_page=5000", "per_page is 1 to 1000"),
        ("/api/routes?colour=red", "unknown field"),
        ("/api/scripts/source", "file=NAME"),
    ] {
        let r = get(f.r.admin, "localhost", path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(says),
            "{path}: {}",
            r.body
        );
    }
    for path in [
        "/api/routes/nope",
        "/api/services/nope",
        "/api/scripts/source?file=/etc/passwd",
    ] {
        assert_eq!(
            get(f.r.admin, "localhost", path).await.status,
            404,
            "{path}"
        );
    }
    f.r.shutdown().await;
}

/// The item named `name` of a list view (`routes` or `services`).
fn item(list: &Value, key: &str, name: &str) -> Value {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {key} item {name}: {list}"))
        .clone()
}

#[tokio::test]
async fn totals_and_latency_per_route_and_service() {
    let f = fixture().await;
    until_down(&f).await;
    let routes = f.api("/api/routes").await;
    for name in ["api", "api-admin", "down", "old"] {
        let r = item(&routes, "routes", name);
        assert_eq!(
            (&r["p50_ms"], &r["p99_ms"]),
            (&Value::Null, &Value::Null),
            "{r}"
        );
    }
    let services = f.api("/api/services").await;
    assert_eq!(item(&services, "services", "api")["p50_ms"], Value::Null);

    // Four requests the server holds 30 ms each: every one lands in the (25 ms, 50 ms] bucket
    // or later, so both quantiles are at least 25 ms. Then a 403 on `api-admin` (same service)
    // and a 503 on `down` (no server up).
    for _ in 0..4 {
        let r = get(f.r.web, "api.test", "/v1/x?delay=30ms").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(get(f.r.web, "api.test", "/admin/x").await.status, 403);
    assert_eq!(get(f.r.web, "down.test", "/").await.status, 503);

    let routes = f.api("/api/routes").await;
    let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
    let api = item(&routes, "routes", "api");
    assert_eq!(api["requests"], 4, "{api}");
    assert!(ms(&api, "p50_ms") >= 25.0, "{api}");
    assert!(ms(&api, "p99_ms") >= ms(&api, "p50_ms"), "{api}");
    let down = item(&routes, "routes", "down");
    assert_eq!(
        (down["requests"].as_u64(), down["errors"].as_u64()),
        (Some(1), Some(1)),
        "{down}"
    );
    assert!(
        ms(&down, "p50_ms") > 0.0 && ms(&down, "p99_ms") > 0.0,
        "{down}"
    );
    assert_eq!(
        item(&routes, "routes", "old")["p50_ms"],
        Value::Null,
        "{routes}"
    );
    // The route detail has them too.
    let detail = f.api("/api/routes/api").await;
    assert_eq!(detail["route"]["p50_ms"], api["p50_ms"], "{detail}");

    // A service counts the requests of every route sending to it.
    let services = f.api("/api/services").await;
    let svc = item(&services, "services", "api");
    assert_eq!(
        (
            svc["requests"].as_u64(),
            svc["client_errors"].as_u64(),
            svc["errors"].as_u64()
        ),
        (Some(5), Some(1), Some(0)),
        "{svc}"
    );
    assert!(
        ms(&svc, "p50_ms") > 0.0 && ms(&svc, "p99_ms") >= ms(&svc, "p50_ms"),
        "{svc}"
    );
    let one = f.api("/api/services/down").await;
    assert_eq!(
        (one["requests"].as_u64(), one["errors"].as_u64()),
        (Some(1), Some(1)),
        "{one}"
    );
    f.r.shutdown().await;
}

async fn explain(f: &Fixture, body: &str) -> (u16, Value) {
    let r = send(f.r.admin, "POST", "localhost", "/api/explain", &[], body).await;
    (
        r.status.as_u16(),
        serde_json::from_str(&r.body).unwrap_or(Value::String(r.body)),
    )
}

#[tokio::test]
async fn explain_decides_like_the_live_router_without_moving_it() {
    let f = fixture().await;
    let (code, v) = explain(
        &f,
        r#"{"url": "http://api.test/admin/users", "client": "192.0.2.1"}"#,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], 403, "{v}");
    assert_eq!(v["decision"]["route"], "api-admin", "{v}");
    let (code, v) = explain(
        &f,
        r#"{"request": "GET http://api.test/v1/users H:X-User=alice"}"#,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let v = f.scrubbed(&v.to_string());
    insta::assert_json_snapshot!("admin_explain_forward", v);
    let (_, v) = explain(&f, r#"{"url": "http://www.test/"}"#).await;
    let trace = v["trace"].as_str().unwrap();
    assert!(
        trace.contains("Host(`api.test`) ≠ host \"www.test\""),
        "{trace}"
    );
    assert_eq!(v["status"], 404);

    // Explains ran on their own copy: the live round robin still starts at the first server.
    for _ in 0..3 {
        explain(&f, r#"{"url": "http://api.test/v1/x"}"#).await;
    }
    let live = get(f.r.web, "api.test", "/v1/x").await;
    assert_eq!(live.backend(), Some("a"), "{}", live.body);
    // Only live traffic counts: one request to `api`, one 403 to `api-admin`, no explain.
    get(f.r.web, "api.test", "/admin/x").await;
    let routes = f.api("/api/routes").await;
    let counts = |name: &str| {
        let r = routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone();
        (
            r["requests"].as_u64(),
            r["client_errors"].as_u64(),
            r["errors"].as_u64(),
        )
    };
    assert_eq!(counts("api"), (Some(1), Some(0), Some(0)), "{routes}");
    assert_eq!(counts("api-admin"), (Some(1), Some(1), Some(0)), "{routes}");

    for (body, says) in [
        ("{", "bad body"),
        (r#"{"url": "api.test/v1"}"#, "invalid URL"),
        (
            r#"{"url": "http://api.test/", "entrypoint": "nope"}"#,
            "no entrypoint \"nope\"",
        ),
        (
            r#"{"url": "http://api.test/", "client": "me"}"#,
            "not an IP address",
        ),
    ] {
        let (code, v) = explain(&f, body).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let r = get(f.r.admin, "localhost", "/api/explain").await;
    assert_eq!(r.status, 405);
    f.r.shutdown().await;
}

#[tokio::test]
async fn a_broken_save_shows_in_scripts_with_its_source_and_a_fix_clears_it() {
    let f = fixture().await;
    let good = std::fs::read_to_string(f.r.script_path("10-api.rhai")).unwrap();
    let st =
        f.r.write_script(
            "10-api.rhai",
            &format!("{good}\nroute(\"x\").rule(host(\"x\")).to(;\n"),
        )
        .await;
    assert!(!st.ok);
    let v = f.api("/api/scripts").await;
    assert_eq!(v["ok"], false, "{v}");
    let file = &v["scripts"][0];
    assert_eq!(file["ok"], false, "{v}");
    let e = &file["errors"][0];
    let line = e["line"].as_u64().unwrap();
    assert_eq!(
        e["source_line"], "route(\"x\").rule(host(\"x\")).to(;",
        "{v}"
    );
    let name = file["file"]
        .as_str()
        .unwrap()
        .replace("SCRIPTS", &f.r.dir.path().display().to_string());
    let src = get(
        f.r.admin,
        "localhost",
        &format!("/api/scripts/source?file={}", name.replace('/', "%2F")),
    )
    .await
    .json();
    let text = src["text"].as_str().unwrap();
    assert_eq!(
        text.lines().nth(line as usize - 1),
        Some("route(\"x\").rule(host(\"x\")).to(;"),
        "{src}"
    );
    // The last good table still serves, and the overview says the build failed.
    let o = f.api("/api/overview").await;
    assert_eq!(
        (
            o["last_build"]["ok"].as_bool(),
            o["counts"]["routes"].as_u64()
        ),
        (Some(false), Some(4))
    );

    let st = f.r.write_script("10-api.rhai", &good).await;
    assert!(st.ok);
    let v = f.api("/api/scripts").await;
    assert_eq!(
        (v["ok"].as_bool(), v["scripts"][0]["ok"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    f.r.shutdown().await;
}

#[tokio::test]
async fn basic_auth_guards_everything_but_ping() {
    // user `admin`, password `s3cret` (SHA1 htpasswd).
    let user = "admin:{SHA}".to_string() + "/vNB+F2HQ559kaLUZbmHHvZrXpg=";
    let f = fixture_with(move |cfg| cfg.admin_users = vec![user]).await;
    let r = get(f.r.admin, "localhost", "/api/overview").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(get(f.r.admin, "localhost", "/ping").await.status, 200);
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
    let auth = format!("Basic {token}");
    let ok = send(
        f.r.admin,
        "GET",
        "localhost",
        "/api/overview",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = base64::engine::general_purpose::STANDARD.encode("admin:wrong");
    let no = send(
        f.r.admin,
        "GET",
        "localhost",
        "/api/routes",
        &[("authorization", &format!("Basic {bad}"))],
        "",
    )
    .await;
    assert_eq!(no.status, 401);
    f.r.shutdown().await;
}

#[tokio::test]
async fn a_provider_that_fails_to_sync_shows_in_the_catalog_until_it_syncs_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, r#"[{"name": "one", "servers": ["127.0.0.1:9"]}]"#).unwrap();
    let f2 = file.clone();
    let f = fixture_with(move |cfg| cfg.catalog = Some(f2)).await;
    let providers = |v: &Value| v["providers"][0].clone();
    let v = f.api("/api/catalog").await;
    assert_eq!(providers(&v)["entries"], 1, "{v}");
    assert_eq!(providers(&v)["error"], Value::Null, "{v}");
    assert_eq!(v["entries"][0]["name"], "one", "{v}");

    // Saved as editors do (write a temporary file, rename it over), so no reader sees a
    // half-written file.
    let save = |text: &str| {
        let tmp = dir.path().join(".catalog.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    save("[{ not json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let v = f.api("/api/catalog").await;
        if providers(&v)["error"].is_string() {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sync error shown: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let p = providers(&v);
    assert_eq!(p["provider"], "file");
    assert!(p["error"].as_str().unwrap().contains("catalog.json"), "{v}");
    // The last good catalog stays in use.
    assert_eq!(
        (p["entries"].as_u64(), v["total"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );

    save(r#"[{"name": "one"}, {"name": "two"}]"#);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = f.api("/api/catalog").await;
        if providers(&v)["entries"] == 2 {
            assert_eq!(providers(&v)["error"], Value::Null, "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never synced again: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    f.r.shutdown().await;
}
