//! Static configuration reload: the real binary with a `--config` file. A save (or SIGHUP) that
//! adds an entrypoint binds it; one that removes it closes it; the unchanged entrypoint keeps its
//! socket throughout, so a request in flight when the configuration changes finishes and new
//! connections are never refused; a configuration that cannot apply leaves the router as it was.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn write_config(path: &Path, entrypoints: &[(&str, SocketAddr)], grace: &str) {
    let mut text = format!(
        "scripts = \"scripts\"\nadmin = \"off\"\ngrace_period = \"{grace}\"\n[entrypoints]\n"
    );
    for (name, addr) in entrypoints {
        text.push_str(&format!("{name} = \"{addr}\"\n"));
    }
    // Written beside and renamed, as editors save.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answers(addr: SocketAddr) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => get(addr, "app.test", "/").await.status == 200,
        _ => false,
    }
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn a_changed_config_file_rebinds_entrypoints_without_dropping_requests() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/10-app.rhai"),
        format!(
            "route(\"app\").rule(host(\"app.test\")).to(service(\"app\").servers([\"{}\"]));\n",
            backend.addr
        ),
    )
    .unwrap();
    let config = dir.path().join("switchyard.toml");
    let web = free_port();
    let extra = free_port();
    write_config(&config, &[("web", web)], "10s");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir.path())
        .args(["run", "--config", "switchyard.toml"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    wait_until("the router never answered on web", || answers(web)).await;
    assert!(refused(extra).await);

    // A slow request in flight on `web` while the configuration changes: it finishes.
    let slow = tokio::spawn(async move { get(web, "app.test", "/?wait=1500ms").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_config(&config, &[("web", web), ("extra", extra)], "10s");
    // Meanwhile `web` never refuses a connection.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !answers(extra).await {
        assert!(
            Instant::now() < deadline,
            "the new entrypoint was never bound"
        );
        assert!(
            answers(web).await,
            "web stopped answering during the change"
        );
    }
    let reply = slow.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "the request in flight finished: {}",
        reply.body
    );
    assert_eq!(reply.backend(), Some("app"));

    // SIGHUP with a configuration that cannot apply (the port is taken): nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    write_config(&config, &[("web", web), ("busy", busy)], "10s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        answers(web).await && answers(extra).await,
        "a failed change kept both"
    );

    // Removing `extra` closes it; `web` stays.
    drop(taken);
    write_config(&config, &[("web", web)], "10s");
    wait_until("the removed entrypoint still listens", || refused(extra)).await;
    assert!(answers(web).await);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        answers(web).await,
        "SIGHUP with the same configuration reloads scripts only"
    );
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("router did not exit after SIGTERM")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("static configuration not applied") && log.contains(&busy.to_string()),
        "the failed change was logged with its reason: {log}"
    );
    assert!(log.contains("static configuration applied"), "{log}");
    assert!(log.contains("SIGHUP: reloading scripts"), "{log}");
}
