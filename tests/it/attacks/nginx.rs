//! Calibration: the same table against nginx configured alike (`tests/attacks-nginx/`), with the
//! same raw backend and auth server, printed beside switchyard's results. Ignored by default (run
//! by hand; needs `/usr/sbin/nginx`).

use std::path::Path;
use std::time::Duration;

use super::backend::{RawBackend, Role};
use super::judge::{self, Row};
use super::{vectors, Rig};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx started from the calibration config on a free loopback port; killed on drop.
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(backend: &RawBackend, auth: &RawBackend) -> Nginx {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attacks-nginx");
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap().to_string();
        for sub in ["tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let conf = std::fs::read_to_string(src.join("nginx.conf.in"))
            .unwrap()
            .replace("@PREFIX@", &prefix)
            .replace("@LISTEN@", &addr.to_string())
            .replace("@BACKEND@", &backend.addr.to_string())
            .replace("@AUTH@", &auth.addr.to_string());
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        for f in ["proxy_headers.conf", "htpasswd"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let child = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(format!("{prefix}/"))
            .arg("-e")
            .arg(format!("{prefix}/error.log"))
            .arg("-c")
            .arg(format!("{prefix}/nginx.conf"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = Nginx { child, addr, dir };
        if !up {
            let log = std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx did not come up on {addr}: {log}");
        }
        n
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master (a fast shutdown that takes its workers along; a SIGKILL would
    /// orphan them), SIGKILL only if it is still there after 3 s.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..60 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn verdict(r: &Row) -> &'static str {
    if r.verdict.is_ok() {
        "ok"
    } else {
        "FAIL"
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

/// Runs the table against switchyard and nginx and prints both (see `super::nginx_calibration`).
pub async fn calibrate() {
    if !Path::new(NGINX).exists() {
        println!("{NGINX} not found: skipped (apt-get install -y nginx-light)");
        return;
    }
    let table = vectors::table();

    let rig = Rig::start(false, |_| {}).await;
    let sy = rig.run(&table).await;
    rig.router.shutdown().await;

    let backend = RawBackend::start(Role::App).await;
    let auth = RawBackend::start(Role::Auth).await;
    let nginx = Nginx::start(&backend, &auth).await;
    let ng = judge::run_all(nginx.addr, &backend, &table).await;
    drop(nginx);

    println!(
        "\n{:<3} {:<52} {:<30} {:<4}  {:<30} {:<4}  differ",
        "sec", "vector", "switchyard", "", "nginx", ""
    );
    let mut differ = 0;
    for (a, b) in sy.iter().zip(&ng) {
        let d = a.result != b.result;
        if d {
            differ += 1;
        }
        println!(
            "{:<3} {:<52} {:<30} {:<4}  {:<30} {:<4}  {}",
            a.section,
            clip(&a.name, 52),
            clip(&a.result, 30),
            verdict(a),
            clip(&b.result, 30),
            verdict(b),
            if d { "DIFFER" } else { "" }
        );
    }
    let pass = |rows: &[Row]| rows.iter().filter(|r| r.verdict.is_ok()).count();
    println!(
        "\n{} vectors; switchyard meets {} expectations, nginx {}; results differ on {differ}",
        table.len(),
        pass(&sy),
        pass(&ng)
    );
    println!("\nswitchyard failures:");
    for r in sy.iter().filter(|r| r.verdict.is_err()) {
        println!(
            "  {} [{}]: {}",
            r.name,
            r.result,
            r.verdict.as_ref().err().map(String::as_str).unwrap_or("")
        );
    }
    println!("\nnginx departures from the expectations:");
    for r in ng.iter().filter(|r| r.verdict.is_err()) {
        let why = r.verdict.as_ref().err().map(String::as_str).unwrap_or("");
        println!(
            "  {} [{}]: {}",
            r.name,
            r.result,
            why.lines().next().unwrap_or("")
        );
    }
}
