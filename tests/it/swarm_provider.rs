//! The Swarm provider end to end on the rig's single-node Swarm: real services (`docker service
//! create` of the busybox test image on the host network, each replica on its own 127.0.0.1
//! port `P{{.Task.Slot}}`), a real router with `--swarm` and the shipped Traefik stdlib, real
//! requests on loopback. Each test's router sees only its own services (a constraint on a
//! per-test label), so tests share the Swarm.

// See docker_provider.rs: the rig's use lock is held across awaits on purpose.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use switchyard::config::{SwarmConfig, TlsFiles};

use crate::support::docker::{container_name, free_port, slot_ports, DockerRig, BUSYBOX_IMAGE};
use crate::support::*;

const SCRIPT: &str = "import \"traefik\" as traefik;\ntraefik::routes(catalog);\n";

fn swarm_config(endpoint: &str, tag: &str) -> SwarmConfig {
    SwarmConfig {
        endpoint: endpoint.to_string(),
        tls: None,
        network: None,
        exposed_by_default: false,
        constraints: Some(format!("Label(`switchyard.test`, `{tag}`)")),
        // The default: only events make changes fast.
        refresh: Duration::from_secs(15),
        host_address: "127.0.0.1".to_string(),
    }
}

async fn router_with(swarm: SwarmConfig) -> TestRouter {
    TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], move |cfg| {
        cfg.swarm = Some(swarm)
    })
    .await
}

/// Creates service `name` (`replicas` busybox tasks on the host network; task N serves
/// `<name>-N` on 127.0.0.1:`<prefix>N`) labelled for `tag` with `labels`; does not wait.
/// `extra` are more `docker service create` flags; the items after a `"--"` in it replace the
/// image's command.
fn create_service(
    rig: &DockerRig,
    tag: &str,
    name: &str,
    prefix: u16,
    replicas: u32,
    labels: &[(&str, &str)],
    extra: &[&str],
) {
    rig.service_rm(&[name]);
    let mut args: Vec<String> = [
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--network",
        "host",
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--replicas={replicas}"));
    args.push(format!("--env=NAME={name}-{{{{.Task.Slot}}}}"));
    args.push(format!("--env=PORT={prefix}{{{{.Task.Slot}}}}"));
    args.push(format!("--label=switchyard.test={tag}"));
    args.push("--label=traefik.enable=true".to_string());
    for (k, v) in labels {
        args.push(format!("--label={k}={v}"));
    }
    let (flags, command) = match extra.iter().position(|a| *a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    args.extend(flags.iter().map(|s| s.to_string()));
    args.push(BUSYBOX_IMAGE.to_string());
    args.extend(command.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    rig.docker_ok(&refs);
}

/// Removes the named services when the test ends, also when it fails.
struct Services<'a>(&'a DockerRig, Vec<String>);

impl Drop for Services<'_> {
    fn drop(&mut self) {
        let names: Vec<&str> = self.1.iter().map(String::as_str).collect();
        self.0.service_rm(&names);
    }
}

/// Creates service `name` with one task for `tag`, routed by v1 labels at `<name>.swarm.test`
/// (returned) to the task's slot port; `extra` as for `create_service`.
fn one_task_service(rig: &DockerRig, tag: &str, name: &str, extra: &[&str]) -> String {
    let prefix = slot_ports();
    let host = format!("{name}.swarm.test");
    let port = format!("{prefix}{{{{.Task.Slot}}}}");
    let rule = format!("Host:{host}");
    create_service(
        rig,
        tag,
        name,
        prefix,
        1,
        &[("traefik.frontend.rule", &rule), ("traefik.port", &port)],
        extra,
    );
    host
}

/// The distinct bodies of `n` requests (round robin visits every server).
async fn answers(r: &TestRouter, host: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let rep = get(r.web, host, "/").await;
        if rep.status == 200 {
            seen.insert(rep.body.trim().to_string());
        }
    }
    seen
}

/// Waits (at most `within`) until exactly the replicas `names` answer for `host`; returns how long
/// that took.
async fn until_replicas(
    r: &TestRouter,
    host: &str,
    names: &BTreeSet<String>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = answers(r, host, names.len() * 3).await;
        if &seen == names {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{host}: replicas {seen:?} answer, not {names:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replicas(name: &str, slots: std::ops::RangeInclusive<u32>) -> BTreeSet<String> {
    slots.map(|s| format!("{name}-{s}")).collect()
}

#[tokio::test]
async fn services_scale_relabel_and_leave_with_the_route_table_following() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let tag = container_name("sw-scale");
    let r = router_with(swarm_config(&rig.endpoint(), &tag)).await;
    let name = container_name("sw-app");
    let _cleanup = Services(rig, vec![name.clone()]);
    let prefix = slot_ports();
    let host = format!("{name}.swarm.test");
    let rule = format!("Host(`{host}`)");
    let port = format!("{prefix}{{{{.Task.Slot}}}}");
    create_service(
        rig,
        &tag,
        &name,
        prefix,
        2,
        &[
            ("traefik.http.routers.app.rule", &rule),
            ("traefik.http.services.app.loadbalancer.server.port", &port),
        ],
        &[],
    );
    let first = until_replicas(&r, &host, &replicas(&name, 1..=2), Duration::from_secs(30)).await;
    eprintln!("service create → 2 replicas routed: {first:?}");

    // Scale up: measured from the moment `docker service scale` is issued (it returns at once
    // with --detach) until the router sends requests to all five replicas.
    let t0 = Instant::now();
    rig.docker_ok(&["service", "scale", "--detach", &format!("{name}=5")]);
    until_replicas(&r, &host, &replicas(&name, 1..=5), Duration::from_secs(30)).await;
    eprintln!(
        "docker service scale 2→5 → 5 replicas routed: {:?}",
        t0.elapsed()
    );

    rig.docker_ok(&["service", "scale", "--detach", &format!("{name}=1")]);
    until_replicas(&r, &host, &replicas(&name, 1..=1), Duration::from_secs(30)).await;
    let info = r.route_info("app@swarm").await;
    assert_eq!(
        info["target"]["servers"].as_array().map(Vec::len),
        Some(1),
        "{info}"
    );

    // A label change moves the route: the old host is no longer served.
    let moved = format!("moved-{host}");
    rig.docker_ok(&[
        "service",
        "update",
        "--detach",
        "--label-add",
        &format!("traefik.http.routers.app.rule=Host(`{moved}`)"),
        &name,
    ]);
    let rep = poll_get(r.web, &moved, "/", Duration::from_secs(30), |rep| {
        rep.status == 200
    })
    .await;
    assert_eq!(rep.body.trim(), format!("{name}-1"));
    assert_eq!(get(r.web, &host, "/").await.status, 404);

    rig.service_rm(&[&name]);
    poll_get(r.web, &moved, "/", Duration::from_secs(30), |rep| {
        rep.status == 404
    })
    .await;
    r.shutdown().await;
}

#[tokio::test]
async fn a_task_that_stops_running_is_no_longer_a_server() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let tag = container_name("sw-exit");
    let r = router_with(swarm_config(&rig.endpoint(), &tag)).await;
    let name = container_name("sw-exit");
    let _cleanup = Services(rig, vec![name.clone()]);
    // The task serves until told to stop (a file the test creates in its container), then exits
    // 0 and is not restarted (state: complete). Bounded: it stops by itself after 120 s.
    let host = one_task_service(
        rig,
        &tag,
        &name,
        &[
            "--restart-condition=none",
            "--",
            "sh",
            "-c",
            "serve & i=0; while [ ! -e /tmp/stop ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; kill $!",
        ],
    );
    let up = poll_get(r.web, &host, "/", Duration::from_secs(30), |rep| {
        rep.status == 200
    })
    .await;
    assert_eq!(up.body.trim(), format!("{name}-1"));
    let task = rig.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={name}"),
    ]);
    assert!(!task.is_empty(), "no running container for {name}");
    rig.docker_ok(&["exec", task.trim(), "touch", "/tmp/stop"]);
    // Once the task is complete the service has no running task, so no server, and (as with
    // Traefik) its router goes: 404, never a request to the dead address (a 502 can be seen in
    // the moment between the task's exit and the provider's next snapshot).
    poll_get(r.web, &host, "/", Duration::from_secs(30), |rep| {
        rep.status == 404
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(r.web, &host, "/").await.status, 404);
    }
    let state = rig.docker_ok(&["service", "ps", "--format", "{{.CurrentState}}", &name]);
    assert!(state.starts_with("Complete"), "task state: {state}");
    rig.service_rm(&[&name]);
    r.shutdown().await;
}

#[tokio::test]
async fn a_service_without_a_port_label_is_skipped_alone_with_a_clear_message() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let tag = container_name("sw-port");
    let r = router_with(swarm_config(&rig.endpoint(), &tag)).await;
    let good = container_name("sw-good");
    let bad = container_name("sw-noport");
    let _cleanup = Services(rig, vec![good.clone(), bad.clone()]);
    let (pg, pb) = (slot_ports(), slot_ports());
    let good_host = format!("{good}.swarm.test");
    let bad_host = format!("{bad}.swarm.test");
    let port = format!("{pg}{{{{.Task.Slot}}}}");
    create_service(
        rig,
        &tag,
        &good,
        pg,
        1,
        &[
            (
                "traefik.http.routers.good.rule",
                &format!("Host(`{good_host}`)"),
            ),
            ("traefik.http.services.good.loadbalancer.server.port", &port),
        ],
        &[],
    );
    create_service(
        rig,
        &tag,
        &bad,
        pb,
        1,
        &[(
            "traefik.http.routers.bad.rule",
            &format!("Host(`{bad_host}`)"),
        )],
        &[],
    );
    let rep = poll_get(r.web, &good_host, "/", Duration::from_secs(30), |rep| {
        rep.status == 200
    })
    .await;
    assert_eq!(rep.body.trim(), format!("{good}-1"));
    assert_eq!(get(r.web, &bad_host, "/").await.status, 404);
    let scripts = get(r.admin, "localhost", "/api/scripts").await.json();
    let warnings = scripts["warnings"].to_string();
    assert!(
        warnings.contains(&format!("swarm service {bad}"))
            && warnings.contains("no port")
            && warnings.contains(&format!(
                "traefik.http.services.{bad}.loadbalancer.server.port"
            )),
        "{warnings}"
    );
    assert!(
        !warnings.contains(&format!("swarm service {good}")),
        "{warnings}"
    );
    rig.service_rm(&[&good, &bad]);
    r.shutdown().await;
}

/// The TLS client-certificate endpoint: the rig's daemon also listens on 127.0.0.1 with
/// `--tlsverify`. With the client certificate the router sees the Swarm; without it the daemon
/// refuses the connection and `switchyard catalog` says so.
#[tokio::test]
async fn a_tls_client_cert_endpoint_is_read_and_refused_without_the_cert() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let (tls, tls_port) = rig.tls();
    let endpoint = format!("https://127.0.0.1:{tls_port}");
    let tag = container_name("sw-tls");
    let mut cfg = swarm_config(&endpoint, &tag);
    cfg.tls = Some(TlsFiles {
        ca: tls.join("ca.pem"),
        cert: tls.join("cert.pem"),
        key: tls.join("key.pem"),
    });
    let r = router_with(cfg).await;
    let name = container_name("sw-tls-app");
    let _cleanup = Services(rig, vec![name.clone()]);
    let prefix = slot_ports();
    let host = format!("{name}.swarm.test");
    create_service(
        rig,
        &tag,
        &name,
        prefix,
        1,
        &[
            ("traefik.http.routers.tls.rule", &format!("Host(`{host}`)")),
            ("traefik.port", &format!("{prefix}{{{{.Task.Slot}}}}")),
        ],
        &[],
    );
    let rep = poll_get(r.web, &host, "/", Duration::from_secs(30), |rep| {
        rep.status == 200
    })
    .await;
    assert_eq!(rep.body.trim(), format!("{name}-1"));

    // The daemon refuses a client without a certificate ...
    let bare = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(tls.join("ca.pem"))
        .arg(format!("{endpoint}/_ping"))
        .output()
        .expect("running curl");
    assert!(
        !bare.status.success(),
        "the daemon answered a client without a certificate"
    );
    // ... and one whose certificate its CA did not sign; `switchyard catalog` says which endpoint.
    let stranger = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=stranger", "-keyout"])
        .arg(stranger.path().join("key.pem"))
        .arg("-out")
        .arg(stranger.path().join("cert.pem"))
        .output()
        .expect("running openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let constraint = format!("Label(`switchyard.test`, `{tag}`)");
    let catalog = |certs: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["catalog", "--swarm", "--swarm.endpoint", &endpoint])
            .args(["--swarm.constraints", &constraint])
            .arg("--swarm.tls-ca")
            .arg(tls.join("ca.pem"))
            .arg("--swarm.tls-cert")
            .arg(certs.join("cert.pem"))
            .arg("--swarm.tls-key")
            .arg(certs.join("key.pem"))
            .output()
            .expect("running switchyard catalog")
    };
    let ok = catalog(&tls);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let entries: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        entries[0]["servers"][0],
        format!("127.0.0.1:{prefix}1"),
        "{entries}"
    );
    let refused = catalog(stranger.path());
    assert!(
        !refused.status.success(),
        "an unsigned client certificate was accepted"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{tls_port}")),
        "the error names the endpoint: {err}"
    );
    rig.service_rm(&[&name]);
    r.shutdown().await;
}

/// A port nobody listens on never leaves a half-read catalog: an unreachable manager keeps the
/// router serving what it had (here: nothing yet) and says so.
#[tokio::test]
async fn an_unreachable_manager_is_reported_by_catalog() {
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["catalog", "--swarm", "--swarm.endpoint"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .output()
        .expect("running switchyard catalog");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// The manager dies mid-stream (daemon halted under a live event stream): the router keeps the
/// last catalog and says why in `/api/catalog`; when the manager is back, the provider
/// reconnects, its service's task runs again and routes, and the error clears. The docker
/// provider's twin is `docker_provider::routes_survive_a_daemon_restart_and_refresh_after_it`:
/// both run the same session skeleton (`providers::engine`).
#[tokio::test]
async fn a_manager_restart_keeps_the_routes_and_reports_the_outage() {
    let rig = DockerRig::shared();
    let _only = rig.exclusive_use();
    rig.swarm();
    let tag = container_name("sw-restart");
    let r = router_with(swarm_config(&rig.endpoint(), &tag)).await;
    let name = container_name("sw-restart");
    let _cleanup = Services(rig, vec![name.clone()]);
    let host = one_task_service(rig, &tag, &name, &[]);
    poll_get(r.web, &host, "/", Duration::from_secs(30), |rep| {
        rep.status == 200
    })
    .await;

    rig.halt();
    let swarm_state = |v: &serde_json::Value| {
        v["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["provider"] == "swarm")
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(r.admin, "localhost", "/api/catalog").await.json();
        let s = swarm_state(&v);
        if s["error"].is_string() {
            assert!(
                s["entries"].as_u64() >= Some(1),
                "last catalog dropped: {v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no swarm sync error shown: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The route is still there (its server is gone with the daemon: not a 404).
    assert_ne!(get(r.web, &host, "/").await.status, 404, "route lost");

    rig.resume();
    let back = poll_get(r.web, &host, "/", Duration::from_secs(60), |rep| {
        rep.status == 200
    })
    .await;
    assert_eq!(back.body.trim(), format!("{name}-1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(r.admin, "localhost", "/api/catalog").await.json();
        if swarm_state(&v)["error"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "error kept after the reconnect: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.shutdown().await;
}
