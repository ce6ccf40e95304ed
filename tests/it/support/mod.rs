//! Test harness: real whoami backends and a real router on loopback port 0, plus small HTTP
//! clients. Waits on readiness (bound listeners, build status), never on fixed sleeps.

#![allow(dead_code)]

pub mod docker;
pub mod l4;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard::app::Router;
use switchyard::config::{Config, LogFormat};
use switchyard::control::BuildStatus;
use switchyard::script::ScriptsOrigin;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A whoami backend on 127.0.0.1:<random>.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::on(listener, name)
    }

    pub fn on(listener: TcpListener, name: &str) -> Backend {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let n = name.to_string();
        tokio::spawn(async move {
            let _ = switchyard::whoami::serve(listener, n, async move {
                let _ = rx.await;
            })
            .await;
        });
        Backend {
            addr,
            name: name.to_string(),
            stop: Some(tx),
        }
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address that refuses connections for the rest of the test binary: a socket bound but
/// never listening (the port stays taken, so no other test's server can get it).
pub async fn dead_addr() -> SocketAddr {
    let (addr, sock) = dead_socket();
    Box::leak(Box::new(sock));
    addr
}

/// A refusing address and the socket holding it: drop the socket to bind a server there.
pub fn dead_socket() -> (SocketAddr, socket2::Socket) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    (addr, sock)
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        scripts: ScriptsOrigin::Dir(dir.to_path_buf()),
        catalog: None,
        dynamic_config: None,
        entrypoints: vec![("web".into(), "127.0.0.1:0".parse().unwrap())],
        admin: Some("127.0.0.1:0".parse().unwrap()),
        admin_users: Vec::new(),
        settings: switchyard::proxy::Settings::default(),
        grace_period: Duration::from_secs(5),
        require_valid_start: false,
        workers: 1,
        log_level: "info".into(),
        log_format: LogFormat::Text,
        docker: None,
        swarm: None,
        record: Default::default(),
        access_log: Default::default(),
        tls: Default::default(),
        acme: Vec::new(),
    }
}

/// A router serving a temporary scripts folder.
pub struct TestRouter {
    pub router: Option<Router>,
    pub web: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestRouter {
    /// Starts with one script file `10-test.rhai`.
    pub async fn start(script: &str) -> TestRouter {
        TestRouter::start_with(&[("10-test.rhai", script)], |_| {}).await
    }

    pub async fn start_with(files: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> TestRouter {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let sets = switchyard::app::bind_entrypoints(&cfg.entrypoints, cfg.workers).unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let router = Router::start(&cfg, sets, Some(admin)).await.unwrap();
        let web = router.entrypoints[0].1;
        let admin = router.admin.unwrap();
        TestRouter {
            router: Some(router),
            web,
            admin,
            dir,
        }
    }

    pub fn router(&self) -> &Router {
        self.router.as_ref().unwrap()
    }

    pub fn entrypoint(&self, name: &str) -> SocketAddr {
        self.router()
            .entrypoints
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    }

    pub fn status(&self) -> BuildStatus {
        self.router().control().status().borrow().clone()
    }

    pub fn script_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a script and waits until a build attempt after this write finished.
    pub async fn write_script(&self, name: &str, text: &str) -> BuildStatus {
        let mut rx = self.router().control().status();
        let before = rx.borrow_and_update().attempt;
        std::fs::write(self.script_path(name), text).unwrap();
        wait_attempt(&mut rx, before).await
    }

    /// One route as `GET /api/routes` on the admin listener describes it.
    pub async fn route_info(&self, name: &str) -> serde_json::Value {
        let routes = get(self.admin, "localhost", "/api/routes").await.json();
        routes["routes"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no route {name:?} in /api/routes: {routes}"))
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.router.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Waits for a build attempt newer than `before` (at most 10 s).
pub async fn wait_attempt(
    rx: &mut tokio::sync::watch::Receiver<BuildStatus>,
    before: u64,
) -> BuildStatus {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.attempt > before))
        .await
        .expect("no build within 10 s")
        .expect("control loop gone")
        .clone()
}

/// Polls `GET host path` on `addr` until `ok` holds for the reply (at most `within`); returns that
/// reply, or panics with the last one.
pub async fn poll_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    within: Duration,
    ok: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = std::time::Instant::now() + within;
    loop {
        let reply = get(addr, host, path).await;
        if ok(&reply) {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such answer for {host}{path} within {within:?}; last: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend name for whoami answers.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-whoami-name")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with a fresh client (keep-alive within the client).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    reply_of(resp).await
}

/// Reads a whole response into a `Reply`.
pub async fn reply_of(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Whether `buf` holds a whole HTTP/1.1 message head plus its `Content-Length` body.
pub fn message_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    buf.len() >= end + 4 + len
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(addr, "GET", host, path, &[], "").await
}

/// Writes raw bytes on a new connection and reads one response (head plus `Content-Length`
/// bytes), or until the server closes the connection; at most 10 s.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 8192];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => break,
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if message_complete(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A service declaration over the given backends, for script text.
pub fn servers(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("[{}]", list.join(", "))
}

/// `Authorization: Basic ...` for user:password.
pub fn basic(user: &str, password: &str) -> String {
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    format!("Basic {b64}")
}

/// Values of one header as the backend saw them (`/api` JSON), empty when absent.
pub fn seen(api: &serde_json::Value, name: &str) -> Vec<String> {
    api["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The Python of the test tools' virtualenv (PyPI's `h2` and `grpcio`), made by
/// `tests/tools/setup.sh` on first use (it also installs `h2load`, `openssl` and `curl`).
pub fn tools_python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/setup.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running tests/tools/setup.sh");
            assert!(
                out.status.success(),
                "tests/tools/setup.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}
