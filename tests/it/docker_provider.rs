//! The Docker provider end to end: a real dockerd (the rig), host-network busybox containers
//! labelled as Traefik users label them, a real router with `--docker` and the shipped Traefik
//! stdlib, real requests on loopback. Each test's router sees only its own containers (a
//! `constraints` expression on a per-test label), so tests can share the daemon.

// The rig's use lock (std RwLock) is held across awaits on purpose: every #[tokio::test] runs on
// its own thread and runtime, and the lock only keeps ordinary tests and the daemon-restart test
// apart; nothing on the same runtime ever waits for it.
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use switchyard::config::DockerConfig;

use crate::support::docker::{container_name, free_port, DockerRig};
use crate::support::*;

const SCRIPT: &str = "import \"traefik\" as traefik;\ntraefik::routes(catalog);\n";

/// A router on the rig's daemon that sees only containers labelled `switchyard.test=<tag>`.
async fn router_for(rig: &DockerRig, tag: &str) -> TestRouter {
    router_at(&rig.endpoint(), tag).await
}

/// The provider settings of a test: containers labelled `switchyard.test=<tag>` only.
fn docker_config(endpoint: &str, tag: &str) -> DockerConfig {
    DockerConfig {
        endpoint: endpoint.to_string(),
        tls: None,
        network: None,
        exposed_by_default: false,
        constraints: Some(format!("Label(`switchyard.test`, `{tag}`)")),
        host_address: "127.0.0.1".to_string(),
        allow_empty_services: false,
        use_bind_port_ip: false,
    }
}

async fn router_at(endpoint: &str, tag: &str) -> TestRouter {
    let docker = docker_config(endpoint, tag);
    TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], move |cfg| {
        cfg.docker = Some(docker)
    })
    .await
}

/// Polls `GET host path` until `ok` holds for the reply (at most 10 s); returns that reply.
async fn until(r: &TestRouter, host: &str, path: &str, ok: impl Fn(&Reply) -> bool) -> Reply {
    poll_get(r.web, host, path, Duration::from_secs(10), ok).await
}

fn owned<'a>(tag: &'a str, labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("switchyard.test", tag), ("traefik.enable", "true")];
    all.extend_from_slice(labels);
    all
}

/// Runs `name` on `port` with router `app` (`rule`) and its service port, plus `extra` labels.
fn run_app(
    rig: &DockerRig,
    tag: &str,
    name: &str,
    port: u16,
    rule: &str,
    extra: &[(&str, &str)],
    docker_args: &[&str],
) {
    let port_text = port.to_string();
    let mut labels = owned(
        tag,
        &[
            ("traefik.http.routers.app.rule", rule),
            (
                "traefik.http.services.app.loadbalancer.server.port",
                &port_text,
            ),
        ],
    );
    labels.extend_from_slice(extra);
    rig.run_httpd(name, port, &labels, docker_args);
}

#[tokio::test]
async fn v2_labels_route_a_container_from_start_to_removal() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("v2");
    let r = router_for(rig, &tag).await;
    let name = container_name("v2-app");
    let port = free_port();
    let host = format!("{name}.docker.test");
    let rule = format!("Host(`{host}`) && PathPrefix(`/api`)");
    run_app(
        rig,
        &tag,
        &name,
        port,
        &rule,
        &[
            ("traefik.http.routers.app.middlewares", "strip@docker"),
            (
                "traefik.http.middlewares.strip.stripprefix.prefixes",
                "/api",
            ),
        ],
        &[],
    );
    // The container's page answers 200 only on `/`: a 200 proves the prefix was stripped.
    let ok = until(&r, &host, "/api", |rep| rep.status == 200).await;
    assert_eq!(ok.body, format!("{name}\n"));
    assert_eq!(
        get(r.web, &host, "/other").await.status,
        404,
        "rule has a path"
    );

    // `docker stop` takes the route away, `docker start` brings it back.
    rig.docker_ok(&["stop", "-t", "1", &name]);
    until(&r, &host, "/api", |rep| rep.status == 404).await;
    rig.docker_ok(&["start", &name]);
    until(&r, &host, "/api", |rep| rep.status == 200).await;

    // A label edit is a re-created container: the new rule replaces the old one.
    let new_host = format!("{name}.edited.docker.test");
    let new_rule = format!("Host(`{new_host}`)");
    run_app(rig, &tag, &name, port, &new_rule, &[], &[]);
    until(&r, &new_host, "/", |rep| rep.status == 200).await;
    until(&r, &host, "/api", |rep| rep.status == 404).await;

    rig.rm(&name);
    until(&r, &new_host, "/", |rep| rep.status == 404).await;
    r.shutdown().await;
}

/// A Traefik TLS stack moved over unchanged: a cleartext router redirecting to https and a
/// `tls=true` router on `websecure`, served with a certificate file over HTTP/2.
#[tokio::test]
async fn traefik_tls_labels_serve_https_and_redirect_http() {
    use crate::tls::{addr_of, curl, entrypoint, https, pair, refs, Ca};
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("tls");
    let name = container_name("tls-app");
    let host = format!("{name}.docker.test");
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let cert = ca.issue("app", &[&host], false);
    let docker = docker_config(&rig.endpoint(), &tag);
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        cfg.docker = Some(docker);
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&cert)];
    })
    .await;
    let port = free_port();
    let port_text = port.to_string();
    let rule = format!("Host(`{host}`)");
    let labels = owned(
        &tag,
        &[
            ("traefik.http.routers.app-http.rule", &rule),
            ("traefik.http.routers.app-http.entrypoints", "web"),
            (
                "traefik.http.routers.app-http.middlewares",
                "https-redirect",
            ),
            (
                "traefik.http.middlewares.https-redirect.redirectscheme.scheme",
                "https",
            ),
            ("traefik.http.routers.app.rule", &rule),
            ("traefik.http.routers.app.entrypoints", "websecure"),
            ("traefik.http.routers.app.tls", "true"),
            (
                "traefik.http.services.app.loadbalancer.server.port",
                &port_text,
            ),
        ],
    );
    rig.run_httpd(&name, port, &labels, &[]);
    let redirect = until(&r, &host, "/", |rep| rep.status == 302).await;
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://{host}/").as_str())
    );
    let tls = addr_of(&r, "websecure");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = curl(&refs(&https(&ca, &host, tls, "/"))).await;
        if c.status == 200 {
            assert_eq!(
                (c.version.as_str(), c.body.as_str()),
                ("2", name.as_str()),
                "{c:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "https never served: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.rm(&name);
    r.shutdown().await;
}

#[tokio::test]
async fn v1_sticky_backend_of_two_containers() {
    // The Swarm sticky-session article's labels (v1) verbatim, on two containers standing in for
    // the two replicas (`traefik.backend` gives them one backend, as the replicas of one Swarm
    // service have; the network label is kept though host networking makes it moot).
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("v1");
    let r = router_for(rig, &tag).await;
    let host = format!("{}.docker.test", container_name("sticky"));
    let rule = "Method: GET, POST, PUT".to_string();
    let mut names = Vec::new();
    for i in 0..2 {
        let name = container_name(&format!("sticky-{i}"));
        let port = free_port().to_string();
        rig.run_httpd(
            &name,
            port.parse().unwrap(),
            &owned(
                &tag,
                &[
                    ("traefik.backend", "app"),
                    ("traefik.backend.loadbalancer.sticky", "true"),
                    ("traefik.port", &port),
                    ("traefik.frontend.rule", &rule),
                    ("traefik.docker.network", "mystack_net"),
                ],
            ),
            &[],
        );
        names.push(name);
    }
    // Both containers are servers once the two answers differ.
    let first = until(&r, &host, "/", |rep| rep.status == 200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get(r.web, &host, "/").await.body;
        let b = get(r.web, &host, "/").await.body;
        if a != b {
            break;
        }
        assert!(Instant::now() < deadline, "never saw both containers: {a}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cookie = first
        .header("set-cookie")
        .expect("a sticky backend sets a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..10 {
        let again = send(r.web, "GET", &host, "/", &[("Cookie", &cookie)], "").await;
        assert_eq!(
            again.body, first.body,
            "the cookie keeps the client on one container"
        );
    }
    // The rule's Method matcher: DELETE is not routed.
    assert_eq!(send(r.web, "DELETE", &host, "/", &[], "").await.status, 404);
    for n in &names {
        rig.rm(n);
    }
    r.shutdown().await;
}

#[tokio::test]
async fn a_broken_label_skips_only_its_container() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("broken");
    let r = router_for(rig, &tag).await;
    let good = container_name("good");
    let bad = container_name("bad");
    let (gp, bp) = (free_port(), free_port());
    let (gp_text, bp_text) = (gp.to_string(), bp.to_string());
    let good_host = format!("{good}.docker.test");
    let good_rule = format!("Host(`{good_host}`)");
    rig.run_httpd(
        &good,
        gp,
        &owned(
            &tag,
            &[
                ("traefik.http.routers.good.rule", &good_rule),
                (
                    "traefik.http.services.good.loadbalancer.server.port",
                    &gp_text,
                ),
            ],
        ),
        &[],
    );
    rig.run_httpd(
        &bad,
        bp,
        &owned(
            &tag,
            &[
                ("traefik.http.routers.bad.rule", "Host(`bad.docker.test`"),
                (
                    "traefik.http.services.bad.loadbalancer.server.port",
                    &bp_text,
                ),
            ],
        ),
        &[],
    );
    // A label the provider itself reads, malformed: that container is skipped too.
    let bad_port = container_name("bad-port");
    rig.run_httpd(
        &bad_port,
        free_port(),
        &owned(
            &tag,
            &[
                ("traefik.port", "eighty"),
                (
                    "traefik.http.routers.badport.rule",
                    "Host(`bad-port.docker.test`)",
                ),
            ],
        ),
        &[],
    );
    let ok = until(&r, &good_host, "/", |rep| rep.status == 200).await;
    assert_eq!(ok.body, format!("{good}\n"));
    // The build succeeded and says which container and label it skipped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scripts = get(r.admin, "localhost", "/api/scripts").await.json();
        let warnings = scripts["warnings"].to_string();
        if warnings.contains(&bad)
            && warnings.contains("traefik.http.routers.bad.rule")
            && warnings.contains(&bad_port)
            && warnings.contains("traefik.port")
        {
            assert_eq!(scripts["ok"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no warning naming {bad}: {scripts}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(get(r.web, "bad.docker.test", "/").await.status, 404);
    assert_eq!(get(r.web, "bad-port.docker.test", "/").await.status, 404);
    rig.rm(&good);
    rig.rm(&bad);
    rig.rm(&bad_port);
    r.shutdown().await;
}

#[tokio::test]
async fn traefik_docker_network_picks_the_address() {
    // Only read back through the admin API: no traffic goes to a bridge address.
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("nets");
    let (n1, n2) = (container_name("sy-front"), container_name("sy-back"));
    for n in [&n1, &n2] {
        let _ = rig.docker(&["network", "rm", n]);
        rig.docker_ok(&["network", "create", n]);
    }
    let r = router_for(rig, &tag).await;
    let name = container_name("two-nets");
    let label_args: Vec<String> = owned(
        &tag,
        &[
            ("traefik.docker.network", &n2),
            ("traefik.http.services.app.loadbalancer.server.port", "8080"),
        ],
    )
    .iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    rig.rm(&name);
    let mut args = vec![
        "create",
        "--name",
        &name,
        "--network",
        &n1,
        "-e",
        "PORT=8080",
    ];
    for l in &label_args {
        args.extend(["--label", l.as_str()]);
    }
    args.push(crate::support::docker::BUSYBOX_IMAGE);
    rig.docker_ok(&args);
    rig.docker_ok(&["network", "connect", &n2, &name]);
    rig.docker_ok(&["start", &name]);
    let ip_on = |net: &str| {
        rig.docker_ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            &name,
        ])
    };
    let (ip1, ip2) = (ip_on(&n1), ip_on(&n2));
    assert!(
        !ip1.is_empty() && !ip2.is_empty() && ip1 != ip2,
        "{ip1} {ip2}"
    );
    let want = format!("{ip2}:8080");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routes = get(r.admin, "localhost", "/api/routes").await.json();
        let servers: Vec<String> = routes["services"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["servers"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["address"].as_str().map(str::to_string))
            .collect();
        if servers.contains(&want) {
            assert!(!servers.iter().any(|s| s.starts_with(&ip1)), "{servers:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no server {want} (the traefik.docker.network address): {routes}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    rig.rm(&name);
    for n in [&n1, &n2] {
        let _ = rig.docker(&["network", "rm", n]);
    }
    r.shutdown().await;
}

#[tokio::test]
async fn routes_survive_a_daemon_restart_and_refresh_after_it() {
    let rig = DockerRig::shared();
    let _only = rig.exclusive_use();
    let tag = container_name("restart");
    let r = router_for(rig, &tag).await;
    let name = container_name("restart-app");
    let port = free_port();
    let host = format!("{name}.docker.test");
    let rule = format!("Host(`{host}`)");
    run_app(rig, &tag, &name, port, &rule, &[], &["--restart", "always"]);
    until(&r, &host, "/", |rep| rep.status == 200).await;

    rig.halt();
    // The daemon (and with it the container) is gone; the router keeps the last catalog, so the
    // route is still there: its server no longer answers (502), but it is not a 404.
    let routes = get(r.admin, "localhost", "/api/routes").await.json();
    assert!(routes["routes"].to_string().contains(&host), "{routes}");
    let during = get(r.web, &host, "/").await;
    assert_ne!(during.status, 404, "route lost while the daemon was down");
    // The admin API says why: the docker provider's failed sync, beside its last good catalog.
    let docker_state = |v: &serde_json::Value| {
        v["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["provider"] == "docker")
            .cloned()
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(r.admin, "localhost", "/api/catalog").await.json();
        let d = docker_state(&v);
        if d["error"].is_string() {
            assert!(d["entries"].as_u64() >= Some(1), "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no docker sync error shown: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    rig.resume();
    // The container restarts with the daemon; the provider reconnects, lists again and routes.
    let back = until(&r, &host, "/", |rep| rep.status == 200).await;
    assert_eq!(back.body, format!("{name}\n"));
    // The route may answer before the provider's backoff (up to 10 s) ends; once it has listed
    // again, the error clears.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(r.admin, "localhost", "/api/catalog").await.json();
        if docker_state(&v)["error"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "error kept after the reconnect: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.rm(&name);
    r.shutdown().await;
}

/// The socat pattern of the Swarm articles: the Docker API exposed on TCP (here on loopback) and
/// the router reading it with `--docker.endpoint tcp://...`.
#[tokio::test]
async fn a_tcp_endpoint_works_like_the_socket() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let api_port = free_port();
    /// Stops socat when the test ends, also when it fails.
    struct Socat(std::process::Child);
    impl Drop for Socat {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _socat = Socat(
        std::process::Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{api_port},bind=127.0.0.1,reuseaddr,fork"
            ))
            .arg(format!("UNIX-CONNECT:{}", rig.socket.display()))
            .spawn()
            .expect("socat (the rig installs it)"),
    );
    crate::support::docker::wait_listening(
        std::net::SocketAddr::from(([127, 0, 0, 1], api_port)),
        Duration::from_secs(10),
    );
    let tag = container_name("tcp");
    let r = router_at(&format!("tcp://127.0.0.1:{api_port}"), &tag).await;
    let name = container_name("tcp-app");
    let port = free_port();
    let host = format!("{name}.docker.test");
    run_app(rig, &tag, &name, port, &format!("Host(`{host}`)"), &[], &[]);
    let ok = until(&r, &host, "/", |rep| rep.status == 200).await;
    assert_eq!(ok.body, format!("{name}\n"));
    rig.rm(&name);
    until(&r, &host, "/", |rep| rep.status == 404).await;
    r.shutdown().await;
}

/// `switchyard catalog` snapshots the live containers in the catalog file's format, and `check
/// --catalog` builds the same routes from that file offline.
#[tokio::test]
async fn catalog_command_snapshots_containers_for_offline_checks() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("snap");
    let name = container_name("snap-app");
    let port = free_port();
    let host = format!("{name}.docker.test");
    run_app(rig, &tag, &name, port, &format!("Host(`{host}`)"), &[], &[]);
    let constraint = format!("Label(`switchyard.test`, `{tag}`)");
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let out = std::process::Command::new(bin)
        .args(["catalog", "--docker", "--docker.endpoint", &rig.endpoint()])
        .args([
            "--docker.exposed-by-default",
            "false",
            "--docker.constraints",
            &constraint,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &entries[0];
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entry["provider"], "docker");
    assert_eq!(
        entry["servers"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
    assert_eq!(entry["container"]["name"], name.as_str());
    assert_eq!(entry["labels"]["switchyard.test"], tag.as_str());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, &out.stdout).unwrap();
    std::fs::write(dir.path().join("10.rhai"), SCRIPT).unwrap();
    let check = std::process::Command::new(bin)
        .args(["check", "--format", "json", "--scripts"])
        .arg(dir.path())
        .arg("--catalog")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(
        table["routes"]
            .to_string()
            .contains(&format!("Host(`{host}`)")),
        "{table}"
    );
    rig.rm(&name);
}

/// `switchyard catalog --from-inspect`: `docker inspect` output, translated with no engine,
/// gives the entry the live provider gives for the same container.
#[test]
fn catalog_from_docker_inspect_output_matches_the_live_provider() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("inspect");
    let name = container_name("inspect-app");
    let port = free_port();
    run_app(
        rig,
        &tag,
        &name,
        port,
        "Host(`inspect.docker.test`)",
        &[],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inspect.json");
    std::fs::write(&file, rig.docker_ok(&["inspect", &name])).unwrap();
    let catalog = |args: &[String]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("catalog")
            .args(args)
            .env_remove("SWITCHYARD_DOCKER")
            .env("DOCKER_HOST", "unix:///nonexistent.sock")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let live = catalog(&[
        "--docker".into(),
        format!("--docker.endpoint={}", rig.endpoint()),
        format!("--docker.constraints=Label(`switchyard.test`, `{tag}`)"),
    ]);
    let offline = catalog(&["--from-inspect".into(), file.display().to_string()]);
    rig.rm(&name);
    assert_eq!(live.as_array().map(Vec::len), Some(1), "{live:#}");
    assert_eq!(offline, live);
    assert_eq!(
        offline[0]["labels"]["traefik.http.routers.app.rule"],
        "Host(`inspect.docker.test`)"
    );
}

/// `traefik.docker.allownonrunning=true`: a stopped container keeps its route, answering 503
/// (no server) instead of 404, while a container without the label drops out.
#[tokio::test]
async fn allownonrunning_keeps_a_stopped_containers_route() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let tag = container_name("nonrun");
    let r = router_for(rig, &tag).await;
    let (kept, plain) = (
        container_name("nonrun-kept"),
        container_name("nonrun-plain"),
    );
    let (kept_host, plain_host) = (
        format!("{kept}.docker.test"),
        format!("{plain}.docker.test"),
    );
    // Two containers, each with its own router and service (one name declared differently by
    // two containers would be dropped, as in Traefik).
    for (name, host, router, allow) in [
        (&kept, &kept_host, "kept", "true"),
        (&plain, &plain_host, "plain", "false"),
    ] {
        let port = free_port();
        let (rule, port_text) = (format!("Host(`{host}`)"), port.to_string());
        let (rule_key, port_key) = (
            format!("traefik.http.routers.{router}.rule"),
            format!("traefik.http.services.{router}.loadbalancer.server.port"),
        );
        let labels = owned(
            &tag,
            &[
                (rule_key.as_str(), rule.as_str()),
                (port_key.as_str(), port_text.as_str()),
                ("traefik.docker.allownonrunning", allow),
            ],
        );
        rig.run_httpd(name, port, &labels, &[]);
    }
    until(&r, &kept_host, "/", |rep| rep.status == 200).await;
    until(&r, &plain_host, "/", |rep| rep.status == 200).await;
    rig.docker_ok(&["stop", "-t", "1", &kept, &plain]);
    until(&r, &kept_host, "/", |rep| rep.status == 503).await;
    until(&r, &plain_host, "/", |rep| rep.status == 404).await;
    rig.rm(&kept);
    rig.rm(&plain);
    r.shutdown().await;
}
