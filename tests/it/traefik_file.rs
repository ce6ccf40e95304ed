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

/// Traefik's composite services from a file: `weighted` (with its sticky cookie), `mirroring`
/// and `failover`, each naming services of the same file or, with `@file`, written as Traefik
/// users write them.
#[tokio::test]
async fn weighted_mirroring_and_failover_services_from_a_file() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let shadow =
        crate::attacks::backend::RawBackend::start(crate::attacks::backend::Role::App).await;
    let dead = dead_addr().await;
    let dynamic = tempfile::tempdir().unwrap();
    std::fs::write(
        dynamic.path().join("services.yml"),
        format!(
            r#"http:
  routers:
    canary:
      rule: "Host(`canary.test`)"
      service: split
    shadowed:
      rule: "Host(`shadow.test`)"
      service: Copied
    backup:
      rule: "Host(`backup.test`)"
      service: backup@file
  services:
    stable:
      loadBalancer:
        servers: [{{ url: "http://{stable}" }}]
    canary:
      loadBalancer:
        servers: [{{ url: "http://{canary}" }}]
    shadow:
      loadBalancer:
        servers: [{{ url: "http://{shadow}" }}]
    gone:
      loadBalancer:
        servers: [{{ url: "http://{dead}" }}]
        healthCheck: {{ path: /health, interval: 100ms, timeout: 100ms }}
    split:
      weighted:
        services:
          - name: stable
            weight: 3
          - name: canary@file
            weight: 1
        sticky:
          cookie:
            name: lane
    copied:
      mirroring:
        service: stable
        maxBodySize: -1
        mirrors:
          - name: shadow
            percent: 100
    backup:
      failover:
        service: gone
        fallback: canary
"#,
            stable = stable.addr,
            canary = canary.addr,
            shadow = shadow.addr,
        ),
    )
    .unwrap();
    let path = dynamic.path().to_path_buf();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        cfg.dynamic_config = Some(path);
    })
    .await;

    // Weighted 3:1, and a client holding the cookie stays on its member.
    let mut lanes = std::collections::BTreeMap::new();
    let mut cookie = None;
    for _ in 0..8 {
        let reply = get(r.web, "canary.test", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        *lanes
            .entry(reply.backend().unwrap().to_string())
            .or_insert(0) += 1;
        if reply.backend() == Some("canary") {
            cookie = reply.header("set-cookie").map(str::to_string);
        }
    }
    assert_eq!(lanes.get("stable"), Some(&6), "{lanes:?}");
    assert_eq!(lanes.get("canary"), Some(&2), "{lanes:?}");
    let cookie = cookie.expect("the weighted service set its sticky cookie");
    assert!(cookie.starts_with("lane="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..6 {
        let reply = send(r.web, "GET", "canary.test", "/", &[("cookie", &pair)], "").await;
        assert_eq!(
            reply.backend(),
            Some("canary"),
            "a canary client stays a canary"
        );
    }

    // Mirroring: the client gets `stable`, the shadow gets a copy with the body.
    let reply = send(r.web, "POST", "shadow.test", "/orders", &[], "one order").await;
    assert_eq!(reply.backend(), Some("stable"), "{}", reply.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shadow.since(0).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no copy reached the mirror"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = &shadow.since(0)[0];
    assert_eq!(copy.line(), "POST /orders");
    assert_eq!(copy.body, b"one order");

    // Failover: as in Traefik, the primary's health check tells it is down; then the fallback
    // answers.
    let reply = poll_get(r.web, "backup.test", "/", Duration::from_secs(10), |x| {
        x.backend() == Some("canary")
    })
    .await;
    assert_eq!(reply.status, 200);
    r.shutdown().await;
}

/// `tls.certificates` and `tls.stores.default.defaultCertificate` from a file: the listed names
/// get their certificate, every other name the store's default instead of the router's
/// self-signed one; a default certificate that cannot be read is a build error at the line
/// that declared it, and the last good certificates keep serving.
#[tokio::test]
async fn a_files_default_certificate_serves_unlisted_names() {
    use crate::tls::{addr_of, der_of, entrypoint, served_cert, Ca};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let fallback = ca.issue("fallback", &["fallback.internal"], false);
    let (a_cert, a_key) = a.split_once(':').unwrap();
    let (f_cert, f_key) = fallback.split_once(':').unwrap();
    let dynamic = tempfile::tempdir().unwrap();
    std::fs::write(
        dynamic.path().join("tls.yml"),
        format!(
            "tls:\n  certificates:\n    - certFile: {a_cert}\n      keyFile: {a_key}\n  stores:\n    default:\n      defaultCertificate:\n        certFile: {f_cert}\n        keyFile: {f_key}\n"
        ),
    )
    .unwrap();
    let path = dynamic.path().to_path_buf();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.dynamic_config = Some(path);
    })
    .await;
    let tls = addr_of(&r, "websecure");
    assert_eq!(served_cert(tls, "a.test").await.unwrap(), der_of(a_cert));
    assert_eq!(
        served_cert(tls, "unlisted.test").await.unwrap(),
        der_of(f_cert),
        "names no certificate lists get the store's default"
    );

    let bad = r
        .write_script(
            "20-default.rhai",
            "tls_default_certificate(\"missing.crt\", \"missing.key\");\n",
        )
        .await;
    assert!(!bad.ok, "{bad:?}");
    let e = &bad.errors[0];
    assert!(e.file.ends_with("20-default.rhai") && e.line == 1, "{e:?}");
    assert!(e.message.contains("default certificate"), "{e:?}");
    assert_eq!(
        served_cert(tls, "unlisted.test").await.unwrap(),
        der_of(f_cert)
    );
    r.shutdown().await;
}

/// Traefik's `tls.options` from a file, named by a router (`tls.options: strict`, or
/// `strict@file` from labels): the router's host gets them at the handshake (TLS 1.3 only, a
/// client certificate required, Traefik's Go spellings); `default` options serve every other
/// name; a field with no equivalent is warned about, naming it.
#[tokio::test]
async fn a_files_tls_options_apply_to_the_routers_that_name_them() {
    use crate::tls::{addr_of, curl, entrypoint, https, pair, refs, Ca};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let certs = ca.issue("s", &["strict.test", "open.test"], false);
    let client = ca.issue("client", &["client"], true);
    let ca_file = ca.cert.display().to_string();
    let dynamic = tempfile::tempdir().unwrap();
    std::fs::write(
        dynamic.path().join("tls.yml"),
        format!(
            r#"
http:
  routers:
    strict:
      rule: Host(`strict.test`)
      service: hello
      tls:
        options: strict
    open:
      rule: Host(`open.test`)
      service: hello
      tls: {{}}
  services:
    hello:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:9
tls:
  options:
    default:
      minVersion: VersionTLS12
      curvePreferences: [CurveP521]
    strict:
      minVersion: VersionTLS13
      cipherSuites: [TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256]
      alpnProtocols: [h2, http/1.1, acme-tls/1]
      clientAuth:
        caFiles: [{ca_file}]
        clientAuthType: RequireAndVerifyClientCert
"#
        ),
    )
    .unwrap();
    let path = dynamic.path().to_path_buf();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&certs)];
        cfg.dynamic_config = Some(path);
    })
    .await;
    let tls = addr_of(&r, "websecure");
    // strict.test: no client certificate, no handshake.
    let c = curl(&refs(&https(&ca, "strict.test", tls, "/"))).await;
    assert!(c.status == 0 && c.code != 0, "{c:?}");
    // With one, over TLS 1.3, the router answers (502: the service's server is down).
    let (cert, key) = client.split_once(':').unwrap();
    let mut with_cert = https(&ca, "strict.test", tls, "/");
    with_cert.splice(0..0, ["--cert", cert, "--key", key].map(str::to_string));
    let c = curl(&refs(&with_cert)).await;
    assert_eq!(c.status, 502, "{c:?}");
    // ... but not over TLS 1.2.
    with_cert.splice(0..0, ["--tls-max", "1.2"].map(str::to_string));
    let c = curl(&refs(&with_cert)).await;
    assert!(c.status == 0 && c.code != 0, "{c:?}");
    // open.test takes the default options: TLS 1.2 and no client certificate are fine.
    let mut open = https(&ca, "open.test", tls, "/");
    open.splice(0..0, ["--tls-max", "1.2"].map(str::to_string));
    let c = curl(&refs(&open)).await;
    assert_eq!(c.status, 502, "{c:?}");
    let scripts = get(r.admin, "localhost", "/api/scripts").await.body;
    assert!(
        scripts.contains("curvepreferences is not applied"),
        "{scripts}"
    );
    r.shutdown().await;
}
