//! The compose example of docs/docker.md, verbatim: `docker-compose up` of
//! examples/docker/compose.yml on the rig, the shipped `scripts/` folder (which imports the Traefik
//! stdlib) and a router with `--docker`; its v2 and v1 labels route real requests on loopback.

// See docker_provider.rs: the rig's use lock is held across awaits on purpose.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use switchyard::config::DockerConfig;
use switchyard::script::ScriptsOrigin;

use crate::support::docker::{container_name, free_port, DockerRig};
use crate::support::*;

fn compose(rig: &DockerRig, project: &str, args: &[&str]) {
    compose_file(rig, "docker/compose.yml", project, &[], args)
}

/// `docker-compose` of `examples/FILE` on the rig, with `vars` in its environment.
fn compose_file(
    rig: &DockerRig,
    file: &str,
    project: &str,
    vars: &[(&str, String)],
    args: &[&str],
) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let out = Command::new("docker-compose")
        .env("DOCKER_HOST", rig.endpoint())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("-f")
        .arg(&file)
        .args(["-p", project])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker-compose (the rig installs it): {e}"));
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Docker provider on the rig, limited to the containers of compose project `project`.
fn project_provider(rig: &DockerRig, project: &str) -> DockerConfig {
    DockerConfig {
        endpoint: rig.endpoint(),
        tls: None,
        network: None,
        exposed_by_default: true,
        constraints: Some(format!("Label(`com.docker.compose.project`, `{project}`)")),
        host_address: "127.0.0.1".to_string(),
        allow_empty_services: false,
        use_bind_port_ip: false,
    }
}

/// Polls until the container named `body` answers (the shipped welcome route answers every
/// other request until the container's route is live).
async fn until_served(r: &TestRouter, host: &str, path: &str, body: &str) -> Reply {
    poll_get(r.web, host, path, Duration::from_secs(15), |rep| {
        rep.status == 200 && rep.body == body
    })
    .await
}

#[tokio::test]
async fn the_readme_compose_example_routes_verbatim() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let project = container_name("demo").replace('-', "");
    compose(rig, &project, &["up", "-d"]);
    let docker = project_provider(rig, &project);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let r = TestRouter::start_with(&[], move |cfg| {
        cfg.scripts = ScriptsOrigin::Dir(shipped);
        cfg.docker = Some(docker);
    })
    .await;

    let whoami = until_served(&r, "whoami.docker.localhost", "/", "whoami\n").await;
    assert_eq!(whoami.header("x-frame-options"), Some("DENY"));
    // v1: Host plus PathPrefixStrip — the page answers 200 only on `/`, so /app was stripped.
    until_served(&r, "legacy.docker.localhost", "/app", "legacy\n").await;

    r.shutdown().await;
    compose(rig, &project, &["down", "--timeout", "1"]);
}

/// Traefik's own quick start (`examples/traefik-quickstart/compose.yml`): the router container
/// runs `--api.insecure=true --providers.docker` as Traefik would, and the docs' `whoami` label
/// routes; the API answers on Traefik's `traefik` entrypoint. The rig is held alone: the
/// quick start routes every container of the engine, as Traefik's does.
#[tokio::test]
async fn traefiks_quick_start_runs_with_only_the_image_swapped() {
    let rig = DockerRig::shared();
    let _only = rig.exclusive_use();
    let image = rig.router_image();
    let (web, admin, app) = (free_port(), free_port(), free_port());
    let vars = [
        ("SWITCHYARD_IMAGE", image.to_string()),
        ("DOCKER_SOCKET", rig.socket.display().to_string()),
        ("WEB_PORT", web.to_string()),
        ("ADMIN_PORT", admin.to_string()),
        ("APP_PORT", app.to_string()),
    ];
    let project = container_name("quick").replace('-', "");
    compose_file(
        rig,
        "traefik-quickstart/compose.yml",
        &project,
        &vars,
        &["up", "-d"],
    );
    let web: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let served = poll_get(
        web,
        "whoami.docker.localhost",
        "/",
        Duration::from_secs(60),
        |r| r.status == 200,
    )
    .await;
    assert!(served.body.contains("GET / HTTP/1.1"), "{}", served.body);
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let routes = get(admin, "localhost", "/api/routes").await;
    assert!(routes.body.contains("whoami@docker"), "{}", routes.body);
    compose_file(
        rig,
        "traefik-quickstart/compose.yml",
        &project,
        &vars,
        &["down", "--timeout", "1"],
    );
}

/// `examples/tcp-udp/compose.yml`: Traefik's TCP and UDP labels on two socat containers. The
/// shipped scripts route `echo.docker.localhost` on the TCP entrypoint to the TLS echo by
/// passthrough (the client sees the container's certificate, made by make-certs.sh) and the UDP
/// entrypoint's datagrams to the UDP echo.
#[tokio::test]
async fn tcp_and_udp_labels_route_the_compose_example() {
    use crate::support::l4;
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let certs = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/swarm-socat/make-certs.sh"))
        .arg(certs.path())
        .arg("DNS:echo.docker.localhost")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (tls_port, udp_port) = (free_port(), free_port());
    let vars = [
        ("SOCAT_IMAGE", "switchyard-test/socat:latest".to_string()),
        ("CERTS", certs.path().display().to_string()),
        ("TLS_PORT", tls_port.to_string()),
        ("UDP_PORT", udp_port.to_string()),
    ];
    let project = container_name("l4").replace('-', "");
    compose_file(rig, "tcp-udp/compose.yml", &project, &vars, &["up", "-d"]);
    let docker = project_provider(rig, &project);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let r = l4::start_router(&[], move |cfg| {
        cfg.scripts = ScriptsOrigin::Dir(shipped);
        cfg.docker = Some(docker);
        l4::add_entrypoint(cfg, "tcp", &[]);
        l4::add_entrypoint(cfg, "udp", &["udp"]);
    })
    .await;
    let at = |name: &str| {
        r.router
            .as_ref()
            .unwrap()
            .entrypoints
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    let (tcp, udp) = (at("tcp"), at("udp"));
    let ca = std::fs::read_to_string(certs.path().join("server-cert.pem")).unwrap();
    let container_cert = l4::first_cert_der(&ca).unwrap();

    // The labels reach the router once the containers are listed; TLS passthrough then answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut tls, leaf) = loop {
        match l4::tls_connect(tcp, "echo.docker.localhost").await {
            Ok(x) => break x,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no passthrough within 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        leaf, container_cert,
        "the client must see the container's own certificate"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"ping over tls\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping over tls\n");

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answer = l4::udp_ask(&socket, udp, "ping over udp").await;
    assert_eq!(answer.as_deref(), Ok("ping over udp"));

    r.shutdown().await;
    compose_file(
        rig,
        "tcp-udp/compose.yml",
        &project,
        &vars,
        &["down", "--timeout", "1"],
    );
}
