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

use crate::support::docker::{container_name, DockerRig};
use crate::support::*;

fn compose(rig: &DockerRig, project: &str, args: &[&str]) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/docker/compose.yml");
    let out = Command::new("docker-compose")
        .env("DOCKER_HOST", rig.endpoint())
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
    let docker = DockerConfig {
        endpoint: rig.endpoint(),
        tls: None,
        network: None,
        exposed_by_default: true,
        constraints: Some(format!("Label(`com.docker.compose.project`, `{project}`)")),
        host_address: "127.0.0.1".to_string(),
        allow_empty_services: false,
        use_bind_port_ip: false,
    };
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
