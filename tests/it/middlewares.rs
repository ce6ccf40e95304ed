//! Native path middlewares (Traefik's stripPrefix, stripPrefixRegex, addPrefix, replacePath,
//! replacePathRegex): what the backend receives.

use crate::support::*;

#[tokio::test]
async fn path_middlewares_rewrite_what_the_backend_sees() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("strip").rule(path_prefix("/svc")).middlewares([strip_prefix(["/svc", "/other"])]).to(app);
        route("strip-re").rule(path_prefix("/t/")).middlewares([strip_prefix_regex("/t/[0-9]+")]).to(app);
        route("add").rule(path("/x")).middlewares([add_prefix("/api")]).to(app);
        route("replace").rule(path("/old")).middlewares([replace_path("/api")]).to(app);
        route("wsk").rule(path_prefix("/wsk")).middlewares([replace_path_regex("^/wsk/(.*)", "/$1")]).to(app);
        route("chain").rule(path_prefix("/hooked"))
            .middlewares([strip_prefix("/hooked"), on_request(|req| req.set_header("X-Seen-Path", req.path))])
            .to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;

    let api = get(r.web, "x", "/svc/api?q=1").await.json();
    assert_eq!(api["url"], "/api?q=1");
    assert_eq!(api["headers"]["x-forwarded-prefix"][0], "/svc");
    // The prefix matches the decoded path: `/sv%63` is `/svc`.
    let encoded = get(r.web, "x", "/sv%63/ap%69?q=1").await.json();
    assert_eq!(encoded["url"], "/api?q=1");
    assert_eq!(encoded["headers"]["x-forwarded-prefix"][0], "/svc");

    // The path is canonical before the route is chosen: `..` never climbs above the root (400),
    // a resolved one is forwarded resolved, and a strip that lands in a dot segment is refused.
    let escaped = get(r.web, "x", "/svc/../../api").await;
    assert_eq!(escaped.status, 400, "{}", escaped.body);
    let resolved = get(r.web, "x", "/svc/x/%2e%2e/api").await.json();
    assert_eq!(resolved["url"], "/api");
    let dotted = get(r.web, "x", "/svc../api").await;
    assert_eq!(dotted.status, 400, "{}", dotted.body);
    assert!(dotted.body.contains("dot segment"), "{}", dotted.body);

    let re = get(r.web, "x", "/t/42/api").await.json();
    assert_eq!(re["url"], "/api");
    assert_eq!(re["headers"]["x-forwarded-prefix"][0], "/t/42");

    let added = get(r.web, "x", "/x").await;
    assert!(
        added.body.contains("\nGET /api/x HTTP/1.1\n"),
        "{}",
        added.body
    );

    let replaced = get(r.web, "x", "/old?keep=1").await.json();
    assert_eq!(replaced["url"], "/api?keep=1");
    assert_eq!(replaced["headers"]["x-replaced-path"][0], "/old");

    let wsk = get(r.web, "x", "/wsk/api").await.json();
    assert_eq!(wsk["url"], "/api");
    assert_eq!(wsk["headers"]["x-replaced-path"][0], "/wsk/api");

    let chained = get(r.web, "x", "/hooked/api").await.json();
    assert_eq!(
        chained["headers"]["x-seen-path"][0], "/api",
        "middlewares run in list order"
    );

    let strip = r.route_info("strip").await;
    assert_eq!(
        strip["middlewares"],
        serde_json::json!(["strip_prefix([\"/svc\", \"/other\"])"])
    );
    r.shutdown().await;
}

#[test]
fn bad_middleware_options_are_script_errors() {
    let errs = switchyard::script::build(
        &[switchyard::script::ScriptSource {
            name: "s/a.rhai".into(),
            text: "route(\"r\").rule(path(\"/\")).middlewares([strip_prefix(\"api\")]).to(respond(200, \"x\"));".into(),
        }],
        &Default::default(),
        &["web".to_string()],
        &Default::default(),
    )
    .unwrap_err();
    assert!(errs[0].message.contains("must start with /"), "{errs:?}");
    assert_eq!(errs[0].line, 1);
}
