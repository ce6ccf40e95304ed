//! Which route answers: hosts, paths, methods, headers, priorities, Traefik rule strings.

use crate::support::*;

#[tokio::test]
async fn routes_by_host_path_method_header_and_query() {
    let api = Backend::start("api").await;
    let web = Backend::start("web").await;
    let admin = Backend::start("admin").await;
    let script = format!(
        r#"
        let api = service("api").servers({api});
        let web = service("web").servers({web});
        let admin = service("admin").servers({admin});
        route("api").rule(host("api.example.com") & path_prefix("/v1")).to(api);
        route("web").rule(host("*.example.com")).to(web);
        route("admin-post").rule(host("api.example.com") & method("POST") & header("X-Role", "admin")).priority(1000).to(admin);
        route("beta").rule("Host(`api.example.com`) && Query(`beta`, `1`)").priority(900).to(admin);
        "#,
        api = servers(&[&api]),
        web = servers(&[&web]),
        admin = servers(&[&admin]),
    );
    let r = TestRouter::start(&script).await;
    assert_eq!(
        get(r.web, "api.example.com", "/v1/users").await.backend(),
        Some("api")
    );
    assert_eq!(
        get(r.web, "API.Example.COM.", "/v1/users").await.backend(),
        Some("api"),
        "hosts are case-insensitive, trailing dot ignored"
    );
    assert_eq!(
        get(r.web, "api.example.com:8080", "/v1").await.backend(),
        Some("api"),
        "port in Host is ignored"
    );
    assert_eq!(
        get(r.web, "api.example.com", "/v2").await.backend(),
        Some("web"),
        "falls through to the wildcard"
    );
    assert_eq!(
        get(r.web, "deep.sub.example.com", "/").await.backend(),
        Some("web")
    );
    let none = get(r.web, "example.com", "/").await;
    assert_eq!(none.status, 404, "a wildcard needs at least one label");
    assert_eq!(none.body, "404 page not found\n");
    let post = send(
        r.web,
        "POST",
        "api.example.com",
        "/v1/x",
        &[("X-Role", "admin")],
        "",
    )
    .await;
    assert_eq!(post.backend(), Some("admin"));
    let post_other = send(
        r.web,
        "POST",
        "api.example.com",
        "/v1/x",
        &[("X-Role", "user")],
        "",
    )
    .await;
    assert_eq!(post_other.backend(), Some("api"));
    assert_eq!(
        get(r.web, "api.example.com", "/v1/x?beta=1")
            .await
            .backend(),
        Some("admin")
    );
    assert_eq!(
        get(r.web, "api.example.com", "/v1/x?beta=2")
            .await
            .backend(),
        Some("api")
    );
    r.shutdown().await;
}

#[tokio::test]
async fn default_priority_is_rule_length_like_traefik() {
    let short = Backend::start("short").await;
    let long = Backend::start("long").await;
    let script = format!(
        r#"
        route("short").rule("PathPrefix(`/`)").to(service("s").servers({s}));
        route("long").rule("PathPrefix(`/app`)").to(service("l").servers({l}));
        route("explicit").rule(path_prefix("/app/admin")).priority(1).to(respond(403, "nope"));
        "#,
        s = servers(&[&short]),
        l = servers(&[&long]),
    );
    let r = TestRouter::start(&script).await;
    assert_eq!(get(r.web, "x", "/app/1").await.backend(), Some("long"));
    assert_eq!(get(r.web, "x", "/other").await.backend(), Some("short"));
    // The explicit low priority loses against both longer rules.
    assert_eq!(get(r.web, "x", "/app/admin").await.backend(), Some("long"));
    r.shutdown().await;
}

#[tokio::test]
async fn handlers_answer_without_a_backend() {
    let r = TestRouter::start(
        r#"
        route("teapot").rule(path("/tea")).to(respond(418, "short and stout\n"));
        route("moved").rule(path("/old")).to(redirect("https://example.com/new", true));
        route("temp").rule(path("/tmp")).to(redirect("/elsewhere"));
        route("either").rule(path("/a") | path("/b") & method("POST")).to(respond(200, "either"));
        "#,
    )
    .await;
    let t = get(r.web, "x", "/tea").await;
    assert_eq!(
        (t.status.as_u16(), t.body.as_str()),
        (418, "short and stout\n")
    );
    let m = get(r.web, "x", "/old").await;
    assert_eq!(m.status, 301);
    assert_eq!(m.header("location"), Some("https://example.com/new"));
    assert_eq!(get(r.web, "x", "/tmp").await.status, 302);
    // `a | b & c` is `a | (b & c)`.
    assert_eq!(get(r.web, "x", "/a").await.body, "either");
    assert_eq!(get(r.web, "x", "/b").await.status, 404);
    assert_eq!(send(r.web, "POST", "x", "/b", &[], "").await.body, "either");
    r.shutdown().await;
}

#[tokio::test]
async fn v2_rule_syntax_and_client_ip() {
    let r = TestRouter::start(
        r#"
        route("v2").rule("Host(`a.com`, `b.com`) && PathPrefix(`/u/{id:[0-9]+}`)").rule_syntax("v2").to(respond(200, "v2"));
        route("local").rule(client_ip("127.0.0.0/8") & path("/who")).to(respond(200, "loopback"));
        route("remote").rule(!client_ip("127.0.0.0/8") & path("/who")).to(respond(200, "remote"));
        "#,
    )
    .await;
    assert_eq!(get(r.web, "b.com", "/u/42/x").await.body, "v2");
    assert_eq!(get(r.web, "b.com", "/u/abc").await.status, 404);
    assert_eq!(get(r.web, "x", "/who").await.body, "loopback");
    r.shutdown().await;
}

#[tokio::test]
async fn entrypoints_restrict_routes() {
    let r = TestRouter::start_with(
        &[(
            "10-test.rhai",
            r#"
            route("internal").rule(path_prefix("/")).entrypoints(["internal"]).to(respond(200, "internal"));
            route("public").rule(path("/")).entrypoints(["web"]).to(respond(200, "public"));
            "#,
        )],
        |cfg| cfg.entrypoints.push(("internal".into(), "127.0.0.1:0".parse().unwrap())),
    )
    .await;
    let internal = r.entrypoint("internal");
    assert_eq!(get(r.web, "x", "/").await.body, "public");
    assert_eq!(get(r.web, "x", "/admin").await.status, 404);
    assert_eq!(get(internal, "x", "/admin").await.body, "internal");
    r.shutdown().await;
}

#[tokio::test]
async fn script_predicates_run_per_request_and_fail_safely() {
    let r = TestRouter::start(
        r#"
        fn is_beta(req) { req.cookie("beta") == "yes" || req.header("X-Beta") == "1" }
        fn spin(req) { loop { } }
        route("beta").rule(path_prefix("/") & predicate(Fn("is_beta"))).priority(10).to(respond(200, "beta"));
        route("closure").rule(path("/q") & predicate(|req| req.query_param("n") == "7")).priority(20).to(respond(200, "seven"));
        route("spin").rule(path("/spin") & predicate(Fn("spin"))).priority(30).to(respond(200, "never"));
        route("stable").rule(path_prefix("/")).priority(1).to(respond(200, "stable"));
        "#,
    )
    .await;
    assert_eq!(get(r.web, "x", "/").await.body, "stable");
    assert_eq!(
        send(r.web, "GET", "x", "/", &[("Cookie", "a=b; beta=yes")], "")
            .await
            .body,
        "beta"
    );
    assert_eq!(
        send(r.web, "GET", "x", "/", &[("X-Beta", "1")], "")
            .await
            .body,
        "beta"
    );
    assert_eq!(get(r.web, "x", "/q?n=7").await.body, "seven");
    // An endless loop in a predicate fails that one request with a bare 500 …
    let spin = get(r.web, "x", "/spin").await;
    assert_eq!(spin.status, 500);
    assert!(
        !spin.body.contains("spin") && !spin.body.contains("operations"),
        "no internals: {}",
        spin.body
    );
    // … and the router keeps serving.
    assert_eq!(get(r.web, "x", "/").await.body, "stable");
    r.shutdown().await;
}

#[tokio::test]
async fn catalog_entries_become_routes() {
    let app = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        format!(
            r#"[{{"name":"shop","labels":{{"expose":"true"}},"servers":["{}"]}},
                {{"name":"hidden","labels":{{}},"servers":["{}"]}}]"#,
            app.addr, app.addr
        ),
    )
    .unwrap();
    let script = r#"
        import "catalog" as cat;
        for svc in cat::with_label(catalog, "expose", "true") {
            route(svc.name).rule(host(svc.name + ".localhost")).to(svc);
        }
    "#;
    let r = TestRouter::start_with(&[("10-test.rhai", script)], |cfg| {
        cfg.catalog = Some(catalog.clone())
    })
    .await;
    assert_eq!(
        get(r.web, "shop.localhost", "/").await.backend(),
        Some("app")
    );
    assert_eq!(get(r.web, "hidden.localhost", "/").await.status, 404);

    // The catalog file is watched: a broken save keeps the last catalog, a good one goes live.
    let mut rx = r.router().control().status();
    let before = rx.borrow_and_update().attempt;
    std::fs::write(&catalog, "[{\"name\": \"broken\"").unwrap();
    r.router().reload();
    let status = wait_attempt(&mut rx, before).await;
    assert!(status.ok, "{status:?}");
    assert_eq!(
        get(r.web, "shop.localhost", "/").await.backend(),
        Some("app"),
        "broken catalog file must not replace the last good one"
    );
    let before = status.attempt;
    let app_addr = app.addr;
    std::fs::write(
        &catalog,
        format!(r#"[{{"name":"hidden","labels":{{"expose":"true"}},"servers":["{app_addr}"]}}]"#),
    )
    .unwrap();
    let status = wait_attempt(&mut rx, before).await;
    assert!(status.ok, "{status:?}");
    assert_eq!(
        get(r.web, "hidden.localhost", "/").await.backend(),
        Some("app")
    );
    assert_eq!(get(r.web, "shop.localhost", "/").await.status, 404);
    r.shutdown().await;
}

#[tokio::test]
async fn several_workers_share_the_entrypoints() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"route("app").rule(host("app.test")).to(service("app").servers({}));"#,
        servers(&[&backend])
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| cfg.workers = 3).await;
    // Each request opens a new connection; the kernel spreads them over the workers' sockets.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let web = r.web;
        tasks.push(tokio::spawn(async move { get(web, "app.test", "/").await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().backend(), Some("app"));
    }
    r.shutdown().await;
}

/// An IPv6 literal in `Host` matches `[v6]` and `[v6]:port` request hosts, written with or
/// without brackets, as Traefik's `Host(`::1`)` does.
#[tokio::test]
async fn host_rules_match_ipv6_literals() {
    let r = TestRouter::start(
        "route(\"v6\").rule(\"Host(`::1`) || Host(`[2001:DB8::5]`)\").to(respond(200, \"v6\"));\n",
    )
    .await;
    for host in ["[::1]:8080", "[::1]", "[2001:db8::5]:80"] {
        let reply = get(r.web, host, "/").await;
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(reply.body, "v6", "{host}");
    }
    assert_eq!(get(r.web, "[::2]:8080", "/").await.status, 404);
    r.shutdown().await;
}
