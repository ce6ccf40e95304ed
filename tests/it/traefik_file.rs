//! Traefik's file provider (`--dynamic-config`): a folder of Traefik dynamic configuration files
//! (YAML and TOML) read by the `traefik` stdlib module like labels. Routers, services with
//! server URLs, middlewares referenced as `name@file` from another file, `{{ env "X" }}`
//! templates, hot reload on save, and a broken save reported with its file and line while the
//! last good configuration keeps serving.

use std::time::Duration;

use crate::support::*;

const SCRIPT: &str = "import \"traefik\" as traefik;\ntraefik::routes(catalog);\n";

#[tokio::test]
async fn dynamic_configuration_files_route_like_traefiks_file_provider() {
    let app = Backend::start("app").await;
    let other = Backend::start("other").await;
    let dynamic = tempfile::tempdir().unwrap();
    std::env::set_var("SWITCHYARD_TEST_APP_HOST", "app.test");
    std::fs::write(
        dynamic.path().join("routers.yml"),
        format!(
            "http:\n  routers:\n    app:\n      rule: \"Host(`{{{{ env \"SWITCHYARD_TEST_APP_HOST\" }}}}`)\"\n      service: app\n      middlewares: [\"tag@file\"]\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"http://{}/\"\n",
            app.addr
        ),
    )
    .unwrap();
    std::fs::write(
        dynamic.path().join("middlewares.toml"),
        "[http.middlewares.tag.headers.customRequestHeaders]\nX-From-File = \"yes\"\n",
    )
    .unwrap();
    let path = dynamic.path().to_path_buf();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        cfg.dynamic_config = Some(path);
    })
    .await;

    let reply = get(r.web, "app.test", "/hello").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.backend(), Some("app"));
    assert!(
        reply.body.to_ascii_lowercase().contains("x-from-file: yes"),
        "the middleware from the other file applied: {}",
        reply.body
    );
    let routes = get(r.admin, "localhost", "/api/routes").await.json();
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, ["app@file"]);

    // A save is live within seconds: the router now points at the other server.
    std::fs::write(
        dynamic.path().join("routers.yml"),
        format!(
            "http:\n  routers:\n    app:\n      rule: \"Host(`app.test`)\"\n      service: app\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"http://{}\"\n",
            other.addr
        ),
    )
    .unwrap();
    poll_get(r.web, "app.test", "/", Duration::from_secs(10), |x| {
        x.backend() == Some("other")
    })
    .await;

    // A broken save: reported with the file and line, the last good configuration serves.
    std::fs::write(
        dynamic.path().join("routers.yml"),
        "http:\n  routers:\n    app:\n      rule: [\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let overview = loop {
        let o = get(r.admin, "localhost", "/api/overview").await.json();
        if o["counts"]["provider_errors"] == 1 {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broken file was never reported: {o}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = overview["provider_errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("routers.yml"), "{error}");
    assert_eq!(get(r.web, "app.test", "/").await.backend(), Some("other"));
    r.shutdown().await;
}
