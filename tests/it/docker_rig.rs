//! The Docker test rig itself, end to end: a real dockerd, the local busybox image, a host-network
//! container reachable on its 127.0.0.1 port, its labels read back, and its removal.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::docker::{container_name, free_port, DockerRig};

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: rig.test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn container_serves_on_loopback_shows_labels_and_goes_away() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let name = container_name("rig-e2e");
    let port = free_port();
    let id = rig.run_httpd(
        &name,
        port,
        &[
            ("traefik.enable", "true"),
            ("traefik.http.routers.e2e.rule", "Host(`rig.test`)"),
        ],
        &[],
    );

    let reply = http_get(port, "/");
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    assert!(reply.ends_with(&format!("{name}\n")), "{reply}");
    // Every path names the container, so a route's path rules can be checked by the body.
    assert!(http_get(port, "/some/path").ends_with(&format!("{name}\n")));

    let labels: serde_json::Value =
        serde_json::from_str(&rig.docker_ok(&["inspect", "-f", "{{json .Config.Labels}}", &id]))
            .unwrap();
    assert_eq!(labels["traefik.enable"], "true");
    assert_eq!(labels["traefik.http.routers.e2e.rule"], "Host(`rig.test`)");
    assert_eq!(
        rig.docker_ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", &id]),
        "host"
    );

    rig.rm(&name);
    let gone = rig.docker(&["inspect", &id]);
    assert!(
        !gone.status.success(),
        "container {name} still exists after rm -f"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers after the container was removed"
    );
}

#[test]
fn docker_stop_is_prompt_because_the_daemon_adds_an_init() {
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    let name = container_name("rig-stop");
    let port = free_port();
    rig.run_httpd(&name, port, &[], &[]);
    let started = std::time::Instant::now();
    rig.docker_ok(&["stop", &name]);
    // Without an init as PID 1, busybox httpd ignores SIGTERM and `docker stop` waits its 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "docker stop took {:?}",
        started.elapsed()
    );
    rig.rm(&name);
}
