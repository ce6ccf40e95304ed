//! Per-request `on_request` hooks: edits (headers, path, query, method, cookies) reach the
//! backend, direct answers, failures stay local.

use crate::support::*;

#[tokio::test]
async fn on_request_hooks_edit_answer_and_fail_safely() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        fn tag(req) {{
            req.set_header("X-Seen-Host", req.host);
            req.remove_header("X-Drop-Me");
            req.append_header("X-Multi", "two");
        }}
        fn gate(req) {{
            if req.header("X-Token") != "letmein" {{ return respond(403, "forbidden\n"); }}
        }}
        route("tagged").rule(host("app.test") & path_prefix("/api")).middlewares([on_request(Fn("tag"))]).to(app);
        route("rewrite").rule(host("app.test") & path_prefix("/old"))
            .middlewares([on_request(|req| req.set_path("/api" + req.path.sub_string(4)))])
            .to(app);
        route("gated").rule(host("gate.test")).middlewares([on_request(Fn("gate")), on_request(Fn("tag"))]).to(app);
        route("spin").rule(host("spin.test")).middlewares([on_request(|req| {{ loop {{ }} }})]).to(app);
        route("plain").rule(host("plain.test")).to(app);
        let release = "v42";
        route("captured").rule(host("cap.test")).middlewares([on_request(|req| req.set_header("X-Release", release))]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let api = send(
        r.web,
        "GET",
        "app.test",
        "/api?x=1",
        &[("X-Drop-Me", "1"), ("X-Multi", "one")],
        "",
    )
    .await
    .json();
    assert_eq!(api["headers"]["x-seen-host"][0], "app.test");
    assert!(api["headers"].get("x-drop-me").is_none(), "{api}");
    assert_eq!(api["headers"]["x-multi"], serde_json::json!(["one", "two"]));
    assert_eq!(api["url"], "/api?x=1");

    let moved = get(r.web, "app.test", "/old/users?page=2").await;
    assert_eq!(moved.status, 200);
    // The rewritten request reached the backend with its query intact.
    assert!(
        moved.body.contains("\nGET /api/users?page=2 HTTP/1.1\n"),
        "{}",
        moved.body
    );

    let denied = get(r.web, "gate.test", "/").await;
    assert_eq!(
        (denied.status.as_u16(), denied.body.as_str()),
        (403, "forbidden\n")
    );
    let allowed = send(
        r.web,
        "GET",
        "gate.test",
        "/api",
        &[("X-Token", "letmein")],
        "",
    )
    .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.json()["headers"]["x-seen-host"][0],
        "gate.test",
        "chain runs in order"
    );

    let spin = get(r.web, "spin.test", "/").await;
    assert_eq!(spin.status, 500);
    assert_eq!(spin.body, "500 Internal Server Error\n");
    let plain = get(r.web, "plain.test", "/api").await.json();
    assert!(
        plain["headers"].get("x-seen-host").is_none(),
        "hooks run only on their routes"
    );

    let cap = get(r.web, "cap.test", "/api").await.json();
    assert_eq!(
        cap["headers"]["x-release"][0], "v42",
        "closures keep captured values"
    );

    let version = get(r.admin, "localhost", "/api/version").await.json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["profile"], "debug");
    assert!(
        version["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{version}"
    );

    let gated = r.route_info("gated").await;
    assert_eq!(
        gated["middlewares"],
        serde_json::json!(["on_request(Fn(\"gate\"))", "on_request(Fn(\"tag\"))"])
    );
    r.shutdown().await;
}

#[tokio::test]
async fn hooks_edit_method_query_and_cookies() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        fn edit(req) {{
            if req.cookie("beta") == "yes" {{ req.set_header("X-Beta", "1"); }}
            req.set_cookie("seen", "1");
            req.remove_cookie("tracking");
            req.set_query("page=" + req.query_param("p"));
            req.set_method("put");
        }}
        route("edit").rule(host("app.test")).middlewares([on_request(Fn("edit"))]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    let api = send(
        r.web,
        "GET",
        "app.test",
        "/api?p=3",
        &[("Cookie", "beta=yes; tracking=abc"), ("Cookie", "sid=9")],
        "",
    )
    .await
    .json();
    assert_eq!(api["method"], "PUT");
    assert_eq!(api["url"], "/api?page=3");
    assert_eq!(api["headers"]["x-beta"][0], "1");
    // Every other cookie kept, in order, in one header; the removed one gone.
    assert_eq!(
        api["headers"]["cookie"],
        serde_json::json!(["beta=yes; sid=9; seen=1"])
    );
}

/// A mistake inside a hook surfaces at request time with the script file, line and column (as
/// build errors do), seen here through the live explain.
#[tokio::test]
async fn a_runtime_hook_error_names_its_file_line_and_column() {
    let script = "fn bad(req, ctx) {\n    let x = ctx.rout;\n    x\n}\nroute(\"h\").rule(\"PathPrefix(`/`)\").middlewares([on_request(Fn(\"bad\"))]).to(respond(200, \"ok\"));\n";
    let r = TestRouter::start(script).await;
    assert_eq!(get(r.web, "a.test", "/").await.status, 500);
    let reply = send(
        r.admin,
        "POST",
        "localhost",
        "/api/explain",
        &[],
        r#"{"url": "http://a.test/"}"#,
    )
    .await;
    assert!(
        reply
            .body
            .contains("10-test.rhai:2:17: Unknown property 'rout'"),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.contains("(line 2, position 17)"),
        "{}",
        reply.body
    );
    r.shutdown().await;
}
