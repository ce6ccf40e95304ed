//! Traefik's static configuration run as is (`switchyard traefik`, or a first argument that is a
//! Traefik flag): the binary as a real process started with Traefik's command line, a
//! `traefik.yml` found where Traefik looks, or `TRAEFIK_*` variables; `--dry-run` printing a
//! command line and script that switchyard itself accepts; refused keys stopping the start with
//! the key named.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{free_port, wait_listening};
use crate::support::Backend;
use crate::support::*;

/// The binary in `cwd`, with no `SWITCHYARD_*` or `TRAEFIK_*` variable inherited, and `HOME`
/// and `XDG_CONFIG_HOME` pointing into `cwd` (so no real `traefik.yml` is found).
fn switchyard(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SWITCHYARD_") || k.starts_with("TRAEFIK_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", cwd)
        .env("XDG_CONFIG_HOME", cwd.join(".config"))
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd
}

/// A started router process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(mut cmd: Command) -> Proc {
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start switchyard"),
    )
}

/// Waits (bounded) until `port` accepts connections, else fails with the process's log.
fn wait_up(p: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = p.0.try_wait() {
            let mut log = String::new();
            if let Some(mut e) = p.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut log);
            }
            panic!("the router exited ({status}):\n{log}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    wait_listening(format!("127.0.0.1:{port}").parse().unwrap(), Duration::ZERO);
}

#[tokio::test]
async fn a_traefik_command_line_runs_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let (web, admin) = (free_port(), free_port());
    // As a stack file's `command:` would give it: no subcommand, Traefik 2/3 flags.
    let mut cmd = switchyard(dir.path());
    cmd.args([
        format!("--entrypoints.web.address=127.0.0.1:{web}"),
        format!("--entrypoints.traefik.address=127.0.0.1:{admin}"),
        "--api.insecure=true".into(),
        "--ping".into(),
        "--log.level=INFO".into(),
        "--global.sendAnonymousUsage=false".into(),
    ]);
    let mut p = start(cmd);
    wait_up(&mut p, web);
    wait_up(&mut p, admin);
    let web_addr = format!("127.0.0.1:{web}").parse().unwrap();
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    // Traefik's `traefik` entrypoint is the admin listener: ping, API, dashboard.
    let ping = get(admin_addr, "localhost", "/ping").await;
    assert_eq!(ping.status, 200, "{}", ping.body);
    let scripts = get(admin_addr, "localhost", "/api/scripts").await.body;
    assert!(scripts.contains("traefik/10-traefik.rhai"), "{scripts}");
    // No provider, no routes: every request is Traefik's 404 (no welcome page).
    let r = get(web_addr, "app.test", "/").await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn traefik_entrypoints_serve_tls_cleartext_and_h2c_on_one_port() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    // Traefik's file provider: one cleartext router and one TLS router for the same host.
    std::fs::write(
        dir.path().join("dynamic.yml"),
        format!(
            "http:\n  routers:\n    plain:\n      rule: Host(`app.test`)\n      service: app\n    secure:\n      rule: Host(`app.test`)\n      service: app\n      tls: {{}}\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://{}\n",
            backend.addr
        ),
    )
    .unwrap();
    let mut cmd = switchyard(dir.path());
    cmd.args([
        format!("--entrypoints.web.address=127.0.0.1:{web}"),
        "--providers.file.filename=dynamic.yml".into(),
    ]);
    let mut p = start(cmd);
    wait_up(&mut p, web);
    // tls::curl runs curl as a child the runtime awaits: the backend runs on this runtime.
    let curl = |args: &'static [&'static str], url: String, resolve: String| async move {
        let mut all: Vec<&str> = vec!["--resolve", &resolve, "-o", "/dev/null"];
        all.extend_from_slice(args);
        all.push(&url);
        let c = crate::tls::curl(&all).await;
        let scheme = if url.starts_with("https") {
            "HTTPS"
        } else {
            "HTTP"
        };
        format!("{} {} {scheme}", c.status, c.version)
    };
    let resolve = format!("app.test:{web}:127.0.0.1");
    let plain = format!("http://app.test:{web}/");
    let secure = format!("https://app.test:{web}/");
    assert_eq!(
        curl(&[], plain.clone(), resolve.clone()).await,
        "200 1.1 HTTP"
    );
    assert_eq!(
        curl(&["-k"], secure, resolve.clone()).await,
        "200 2 HTTPS",
        "TLS (ALPN h2) on the same port, the self-signed default certificate"
    );
    assert_eq!(
        curl(&["--http2-prior-knowledge"], plain, resolve).await,
        "200 2 HTTP"
    );
}

#[test]
fn traefik_yml_and_traefik_variables_are_read_where_traefik_reads_them() {
    // traefik.yml in the working directory, v2 shape, with an entrypoint redirect.
    let dir = tempfile::tempdir().unwrap();
    let (web, secure, admin) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("traefik.yml"),
        format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:{web}\"\n    http:\n      redirections:\n        entryPoint:\n          to: websecure\n          scheme: https\n  websecure:\n    address: \"127.0.0.1:{secure}\"\n  traefik:\n    address: \"127.0.0.1:{admin}\"\nping: {{}}\nlog:\n  level: WARN\n"
        ),
    )
    .unwrap();
    let mut cmd = switchyard(dir.path());
    cmd.arg("traefik");
    let mut p = start(cmd);
    wait_up(&mut p, web);
    wait_up(&mut p, admin);
    let out = curl_head(web, "/x?y=1");
    assert!(out.contains("301") || out.contains("308"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("location: https://app.test:{secure}/x?y=1")),
        "{out}"
    );
    drop(p);

    // The same through TRAEFIK_* variables (no file: another folder).
    let dir = tempfile::tempdir().unwrap();
    let (web, admin) = (free_port(), free_port());
    let mut cmd = switchyard(dir.path());
    cmd.arg("traefik")
        .env(
            "TRAEFIK_ENTRYPOINTS_WEB_ADDRESS",
            format!("127.0.0.1:{web}"),
        )
        .env(
            "TRAEFIK_ENTRYPOINTS_TRAEFIK_ADDRESS",
            format!("127.0.0.1:{admin}"),
        )
        .env("TRAEFIK_PING", "true");
    let mut p = start(cmd);
    wait_up(&mut p, web);
    wait_up(&mut p, admin);
    let out = curl_head(admin, "/ping");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// `curl -sI` against 127.0.0.1:PORT with Host app.test; the response head.
fn curl_head(port: u16, path: &str) -> String {
    tools_python(); // curl comes with the test tools
    let out = Command::new("curl")
        .args(["-sS", "-I", "--max-time", "5", "-H", "Host: app.test"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dry_run_prints_what_switchyard_itself_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // The third seed article's command line, Traefik 1 in Swarm mode.
    let out = switchyard(dir.path())
        .args([
            "--docker",
            "--docker.swarmmode",
            "--docker.watch",
            "--web",
            "--loglevel=DEBUG",
            "--docker.domain=docker.localhost",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--swarm \\\n") && text.contains("--log-level=debug"),
        "{text}"
    );
    assert!(
        text.contains("#   --docker.watch: the Docker provider always watches events"),
        "{text}"
    );
    // The script block, saved as the text says, builds.
    let script: String = text
        .split("# scripts/10-traefik.rhai\n")
        .nth(1)
        .unwrap()
        .split("\n# Accepted without effect")
        .next()
        .unwrap()
        .to_string();
    assert!(script.contains("docker.localhost"), "{script}");
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::write(scripts.join("10-traefik.rhai"), &script).unwrap();
    let check = switchyard(dir.path())
        .args(["check", "--scripts"])
        .arg(&scripts)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // And the command line parses as `switchyard run` (a usage error would exit 2 at once;
    // this one tries to reach the Swarm endpoint and is stopped).
    let line: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("switchyard run"))
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim().trim_end_matches('\\').trim().to_string())
        .collect();
    let words: Vec<String> = line
        .join(" ")
        .split_whitespace()
        .skip(2)
        .map(|w| {
            w.replace("0.0.0.0:80", "127.0.0.1:0")
                .replace("0.0.0.0:8080", "127.0.0.1:0")
        })
        .collect();
    let mut p = switchyard(dir.path())
        .arg("run")
        .args(&words)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok(Some(status)) = p.try_wait() {
        assert_ne!(
            status.code(),
            Some(2),
            "{words:?} is not a valid command line"
        );
    }
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn refused_keys_stop_the_start_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let out = switchyard(dir.path())
        .args([
            "--entrypoints.web.address=:80",
            "--providers.kubernetesCRD",
            "--entrypoints.dns.address=:53/sctp",
            "--serversTransport.insecureSkipVerify=true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "--providers.kubernetescrd: provider",
        "--entrypoints.dns.address: address \":53/sctp\": unknown protocol",
        "--serverstransport.insecureskipverify: TLS to servers is set per service",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    // A file that does not parse: its name and line.
    std::fs::write(dir.path().join("traefik.toml"), "[api]\ninsecure = \n").unwrap();
    let out = switchyard(dir.path()).arg("traefik").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("traefik.toml:2:"), "{err}");
}

#[test]
fn the_dry_run_shown_in_docs_is_what_the_binary_prints() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/traefik.md"))
            .unwrap();
    let command = doc
        .lines()
        .find(|l| l.starts_with("switchyard traefik --dry-run"))
        .expect("docs/traefik.md shows a --dry-run command");
    let shown: String = doc
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/traefik.md shows the output in a ```text block")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = switchyard(dir.path())
        .args(command.split_whitespace().skip(1))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), shown);
}

/// Entrypoint middlewares: v2/v3 `entryPoints.web.http.middlewares` run before every router's
/// own on that entrypoint (an auth middleware from a file guards a router that names none), and
/// v1's `Compress:true` becomes a compress middleware on its entrypoint's routers.
#[tokio::test]
async fn entrypoint_middlewares_guard_every_router_on_the_entrypoint() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    // test:test, as in Traefik's docs.
    std::fs::write(
        dir.path().join("dynamic.yml"),
        format!(
            "http:\n  middlewares:\n    auth:\n      basicAuth:\n        users: [\"test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/\"]\n  routers:\n    app:\n      rule: Host(`app.test`)\n      service: app\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://{}\n",
            backend.addr
        ),
    )
    .unwrap();
    let mut cmd = switchyard(dir.path());
    cmd.args([
        format!("--entrypoints.web.address=127.0.0.1:{web}"),
        "--entrypoints.web.http.middlewares=auth@file".into(),
        "--providers.file.filename=dynamic.yml".into(),
    ]);
    let mut p = start(cmd);
    wait_up(&mut p, web);
    let addr = format!("127.0.0.1:{web}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut r = get(addr, "app.test", "/").await;
    while r.status == 404 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = get(addr, "app.test", "/").await;
    }
    assert_eq!(r.status, 401, "{}", r.body);
    let ok = send(
        addr,
        "GET",
        "app.test",
        "/",
        &[("authorization", "Basic dGVzdDp0ZXN0")],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // v1: `Compress:true` on an entrypoint.
    let out = switchyard(dir.path())
        .args([
            "traefik",
            "--dry-run",
            "--entryPoints=Name:http Address::80 Compress:true",
            "--docker",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(r#"entrypoint_middlewares: #{ "http": ["compress@internal"] }"#),
        "{text}"
    );
}
