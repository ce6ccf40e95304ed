//! TCP and UDP test helpers: a router with UDP entrypoints, in-process line-echo servers (TCP,
//! TLS, UDP), line clients, a rustls client that reports the certificate it was served, and the
//! external servers some tests need (openssl `s_server`, HAProxy) as child processes killed on
//! drop. Readiness is always awaited (a bound socket, a printed address, a connect), never slept.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::{test_config, TestRouter};
use crate::tls::AnyCert;

/// How long one client step (connect, a line, an answer) may take.
pub const STEP: Duration = Duration::from_secs(5);

/// A router over `files` like `TestRouter::start_with`, but bound as `switchyard run` binds:
/// TCP entrypoints once per worker, UDP ones (`udp` option) as UDP sockets.
pub async fn start_router(files: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> TestRouter {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut cfg = test_config(dir.path());
    tweak(&mut cfg);
    let (sets, admin) = switchyard::app::bind(&cfg).unwrap();
    let router = switchyard::app::Router::start(&cfg, sets, admin)
        .await
        .unwrap();
    let web = router.entrypoints[0].1;
    let admin = router.admin.unwrap();
    TestRouter {
        router: Some(router),
        web,
        admin,
        dir,
    }
}

/// Adds entrypoint `name` on a free loopback port with `options` (`KEY=VALUE`, or `KEY` for
/// `KEY=true`; `udp` makes it a UDP entrypoint): the TLS tests' helper.
pub(crate) use crate::tls::entrypoint as add_entrypoint;

/// What a line-echo server saw.
#[derive(Default)]
pub struct Seen {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Every byte received, per connection, in accept order.
    pub bytes: Mutex<Vec<Vec<u8>>>,
}

/// Serves one connection: an optional banner first, then every line `L` answered with
/// `NAME: L`, until the client closes.
async fn serve_lines<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    name: String,
    banner: Option<String>,
    seen: Arc<Seen>,
) {
    let (r, mut w) = tokio::io::split(stream);
    let idx = {
        let mut b = seen.bytes.lock().unwrap();
        b.push(Vec::new());
        b.len() - 1
    };
    if let Some(b) = banner {
        if w.write_all(b.as_bytes()).await.is_err() {
            return;
        }
    }
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        seen.bytes.lock().unwrap()[idx].extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        let answer = format!("{name}: {}\n", text.trim_end());
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An in-process TCP server answering lines with `NAME: LINE` (optionally greeting first), or
/// the same over TLS.
pub struct LineServer {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl LineServer {
    pub async fn start(name: &str) -> LineServer {
        LineServer::spawn(name, None, None).await
    }

    /// Sends `banner` as soon as a connection is accepted (a server-speaks-first protocol).
    pub async fn with_banner(name: &str, banner: &str) -> LineServer {
        LineServer::spawn(name, Some(banner.to_string()), None).await
    }

    /// Terminates TLS with the PEM `cert` and `key` files, then answers lines.
    pub async fn tls(name: &str, cert: &str, key: &str) -> LineServer {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(switchyard::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        LineServer::spawn(name, None, Some(acceptor)).await
    }

    async fn spawn(
        name: &str,
        banner: Option<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> LineServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (n, s) = (name.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let (n, b, s, tls) = (n.clone(), banner.clone(), s.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_lines(stream, n, b, s).await,
                        Some(acceptor) => {
                            if let Ok(t) = acceptor.accept(stream).await {
                                serve_lines(t, n, b, s).await
                            }
                        }
                    }
                });
            }
        });
        LineServer {
            addr,
            name: name.to_string(),
            seen,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    /// The bytes connection `i` (in accept order) sent so far.
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.seen
            .bytes
            .lock()
            .unwrap()
            .get(i)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An in-process UDP server answering each datagram with `SOURCE PAYLOAD`, where SOURCE is
/// the address it came from.
pub struct UdpEcho {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpEcho {
    pub async fn start() -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let answer = format!("{from} {}", String::from_utf8_lossy(&buf[..n]));
                let _ = socket.send_to(answer.as_bytes(), from).await;
            }
        });
        UdpEcho { addr, task }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One datagram to `to` from `socket` and its answer (at most `STEP`).
pub async fn udp_ask(socket: &UdpSocket, to: SocketAddr, payload: &str) -> Result<String, String> {
    socket
        .send_to(payload.as_bytes(), to)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
        .await
        .map_err(|_| format!("no answer to {payload:?} within {STEP:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A TCP connection from `from` (a loopback address such as 127.0.0.2) to `to`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4().unwrap(),
        IpAddr::V6(_) => TcpSocket::new_v6().unwrap(),
    };
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(STEP, socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// A client speaking lines over any stream.
pub struct Lines<S> {
    r: BufReader<tokio::io::ReadHalf<S>>,
    w: tokio::io::WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> Lines<S> {
    pub fn new(stream: S) -> Lines<S> {
        let (r, w) = tokio::io::split(stream);
        Lines {
            r: BufReader::new(r),
            w,
        }
    }

    /// The next line (without its end), or why there is none: closed, error, or nothing
    /// within `STEP`.
    pub async fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match tokio::time::timeout(STEP, self.r.read_line(&mut line)).await {
            Err(_) => Err(format!("no line within {STEP:?}")),
            Ok(Err(e)) => Err(format!("closed: {e}")),
            Ok(Ok(0)) => Err("closed".into()),
            Ok(Ok(_)) => Ok(line.trim_end().to_string()),
        }
    }

    /// Sends `line` and reads the answer.
    pub async fn ask(&mut self, line: &str) -> Result<String, String> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("closed: {e}"))?;
        self.read_line().await
    }

    /// Waits (at most `within`) for the peer to close; returns how long it took, or `Err` if
    /// the connection stayed open or data arrived instead.
    pub async fn closed_within(&mut self, within: Duration) -> Result<Duration, String> {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 256];
        match tokio::time::timeout(within, self.r.read(&mut buf)).await {
            Err(_) => Err(format!("still open after {within:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(start.elapsed()),
            Ok(Ok(n)) => Err(format!(
                "got data instead of a close: {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
        }
    }
}

/// Line client over a new TCP connection.
pub async fn lines_to(addr: SocketAddr) -> Lines<TcpStream> {
    let s = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    Lines::new(s)
}

pub type TlsClient = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` asking for `sni`: the stream and the leaf certificate (DER) it
/// was served. Any certificate is accepted; the caller compares it.
pub async fn tls_connect(addr: SocketAddr, sni: &str) -> Result<(TlsClient, Vec<u8>), String> {
    let config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(STEP, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    Ok((tls, leaf))
}

/// The bytes of a real TLS ClientHello (rustls' client) for `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// The DER of the first certificate in PEM `text`.
pub fn first_cert_der(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    CertificateDer::from_pem_slice(&text.as_bytes()[start..end])
        .ok()
        .map(|c| c.to_vec())
}

/// The subject of a DER certificate, for messages.
pub fn subject(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|e| format!("<unparsable: {e}>"))
}

/// A child process, killed when dropped.
pub struct Child(pub tokio::process::Child);

/// `openssl s_server -www` with `cert`/`key` on 127.0.0.1 (port chosen by the system, read
/// from its `ACCEPT` line).
pub async fn s_server(cert: &str, key: &str) -> (Child, SocketAddr) {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert", cert])
        .args(["-key", key])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting openssl s_server");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = out.next_line().await.unwrap() {
            if let Some(a) = line.strip_prefix("ACCEPT ") {
                return a.trim().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("openssl s_server exited before listening");
    })
    .await
    .expect("openssl s_server did not listen within 10 s");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    (Child(child), addr)
}

/// `openssl s_client -connect ADDR -servername SNI [-alpn ALPN]` with nothing to send: the
/// leaf certificate it was served (DER), or its output when it got none.
pub async fn s_client_cert(
    addr: SocketAddr,
    sni: &str,
    alpn: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        sni,
    ]);
    if let Some(a) = alpn {
        cmd.args(["-alpn", a]);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        cmd.stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| "openssl s_client took longer than 10 s".to_string())?
    .map_err(|e| format!("running openssl s_client: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    first_cert_der(&stdout).ok_or_else(|| {
        format!(
            "no certificate (exit {:?}): {}\n{}",
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A loopback port free right now (bound, then released), for servers that cannot report
/// the port they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The HAProxy binary (Debian installs it in /usr/sbin, which a non-root PATH may lack).
fn haproxy_bin() -> &'static str {
    if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// HAProxy listening with `accept-proxy` (PROXY protocol v1 or v2 required on every
/// connection), answering every HTTP request with the client address it parsed from the
/// header, `IP:PORT`. Ready when it accepts a connection.
pub async fn haproxy_client_echo(dir: &Path) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join(format!("haproxy-{}.cfg", addr.port()));
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 100\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend fe\n    bind {addr} accept-proxy\n    \
             http-request return status 200 content-type text/plain lf-string \"%ci:%cp\"\n"
        ),
    )
    .unwrap();
    let log = dir.join(format!("haproxy-{}.log", addr.port()));
    let mut child = tokio::process::Command::new(haproxy_bin())
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("starting haproxy");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("haproxy exited ({status}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "haproxy did not listen on {addr} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Child(child), addr)
}

/// Writes `bytes` on `stream` and reads until the server closes (at most `STEP`).
pub async fn exchange_until_close(stream: &mut TcpStream, bytes: &[u8]) -> String {
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
