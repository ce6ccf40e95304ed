//! `https://` servers: the router speaks TLS to a real rustls backend on loopback that reports
//! what it saw (the SNI name, the client certificate's subject, the path and Host). Verification
//! against the service's CA, a server name that differs from the address, a certificate from
//! another CA refused (502, counted against the server), `insecure_skip_verify`, client
//! certificates (mTLS) and health checks that fail on a certificate that does not verify.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::*;
use crate::tls::Ca;

/// A TLS backend: answers every request with `sni=… client=… path=… host=…`; counts requests.
struct TlsBackend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

fn read_pem(pair: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let (c, k) = pair.split_once(':').unwrap();
    let certs = rustls_pemfile_certs(Path::new(c));
    let key = rustls::pki_types::pem::PemObject::from_pem_file(k).unwrap();
    (certs, key)
}

fn rustls_pemfile_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

impl TlsBackend {
    /// Serves `pair` (`CERT:KEY`); with `client_ca`, requires a client certificate it issued.
    async fn start(pair: &str, client_ca: Option<&Path>) -> TlsBackend {
        let (certs, key) = read_pem(pair);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile_certs(ca) {
                    roots.add(c).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let (_, conn) = tls.get_ref();
                    let sni = conn.server_name().unwrap_or("-").to_string();
                    let client = conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| {
                            let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).unwrap();
                            x.subject().to_string()
                        })
                        .unwrap_or_else(|| "-".into());
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let body = format!(
                            "sni={sni} client={client} path={} host={host}\n",
                            req.uri().path()
                        );
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsBackend { addr, requests }
    }

    fn seen(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A router with route `/` to service `s` over `servers`, with `extra` appended to the service.
async fn router(servers: &[String], extra: &str) -> TestRouter {
    let list = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        "route(\"r\").rule(\"PathPrefix(`/`)\")\n\
         .to(service(\"s\").servers([{list}]){extra});\n"
    );
    TestRouter::start_with(&[("10-test.rhai", &script)], |_| {}).await
}

/// `switchyard_upstream_errors_total{service="s",kind=KIND}` (0 when absent).
async fn upstream_errors(r: &TestRouter, kind: &str) -> u64 {
    let text = get(r.admin, "localhost", "/metrics").await.body;
    let want = format!("switchyard_upstream_errors_total{{service=\"s\",kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

#[tokio::test]
async fn https_servers_are_verified_against_the_service_ca_with_its_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let by_name = TlsBackend::start(&ca.issue("api", &["api.internal"], false), None).await;
    let by_ip = TlsBackend::start(&ca.issue("ip", &["127.0.0.1"], false), None).await;
    let ca_file = ca.cert.display().to_string();

    // The name verified is the transport's server_name, sent as SNI; the Host is the client's.
    let r = router(
        &[format!("https://{}", by_name.addr)],
        &format!(".transport(#{{ ca: \"{ca_file}\", server_name: \"api.internal\" }})"),
    )
    .await;
    let reply = get(r.web, "app.test", "/hello").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        "sni=api.internal client=- path=/hello host=app.test\n"
    );
    // Keep-alive: more requests reuse the TLS connection and keep working.
    for _ in 0..5 {
        assert_eq!(get(r.web, "app.test", "/again").await.status, 200);
    }
    assert_eq!(by_name.seen(), 6);
    r.shutdown().await;

    // Without server_name the server's own address is the name: an IP certificate verifies,
    // and no SNI is sent for an IP address.
    let r = router(
        &[format!("https://{}", by_ip.addr)],
        &format!(".transport(#{{ ca: \"{ca_file}\" }})"),
    )
    .await;
    let reply = get(r.web, "app.test", "/ip").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.starts_with("sni=- client=- path=/ip"),
        "{}",
        reply.body
    );
    r.shutdown().await;

    // The same backend addressed by IP with a certificate for api.internal only: refused.
    let r = router(
        &[format!("https://{}", by_name.addr)],
        &format!(".transport(#{{ ca: \"{ca_file}\" }})"),
    )
    .await;
    let before = by_name.seen();
    assert_eq!(get(r.web, "app.test", "/x").await.status, 502);
    assert_eq!(
        by_name.seen(),
        before,
        "nothing was sent over an unverified connection"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_unless_verification_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Ca::new(&dir.path().join("ours").tap_mkdir());
    let theirs = Ca::new(&dir.path().join("theirs").tap_mkdir());
    let backend = TlsBackend::start(&theirs.issue("srv", &["api.internal"], false), None).await;
    let server = format!("https://{}", backend.addr);

    let r = router(
        std::slice::from_ref(&server),
        &format!(
            ".transport(#{{ ca: \"{}\", server_name: \"api.internal\" }})",
            ours.cert.display()
        ),
    )
    .await;
    for _ in 0..3 {
        let reply = get(r.web, "app.test", "/").await;
        assert_eq!(reply.status, 502);
        assert!(
            !reply.body.contains("certificate") && !reply.body.contains("127.0.0.1"),
            "no internals in the page: {}",
            reply.body
        );
    }
    assert_eq!(backend.seen(), 0);
    assert!(
        upstream_errors(&r, "connect").await >= 3,
        "a failed handshake counts against the server as a connect failure"
    );
    r.shutdown().await;

    // With no transport at all the system roots are used: the test CA is not among them.
    let r = router(std::slice::from_ref(&server), "").await;
    assert_eq!(get(r.web, "app.test", "/").await.status, 502);
    r.shutdown().await;

    // insecure_skip_verify: any certificate, any name.
    let r = router(
        std::slice::from_ref(&server),
        ".transport(#{ insecure_skip_verify: true })",
    )
    .await;
    let reply = get(r.web, "app.test", "/skip").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("path=/skip"), "{}", reply.body);
    r.shutdown().await;
}

#[tokio::test]
async fn servers_that_require_a_client_certificate_get_the_transport_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let backend =
        TlsBackend::start(&ca.issue("srv", &["api.internal"], false), Some(&ca.cert)).await;
    let server = format!("https://{}", backend.addr);
    let base = format!(
        "ca: \"{}\", server_name: \"api.internal\"",
        ca.cert.display()
    );

    // No client certificate: the server ends the handshake.
    let r = router(
        std::slice::from_ref(&server),
        &format!(".transport(#{{ {base} }})"),
    )
    .await;
    assert_eq!(get(r.web, "app.test", "/").await.status, 502);
    assert_eq!(backend.seen(), 0);
    r.shutdown().await;

    let client = ca.issue("router", &["router.internal"], true);
    let (cert, key) = client.split_once(':').unwrap();
    let r = router(
        std::slice::from_ref(&server),
        &format!(".transport(#{{ {base}, cert: \"{cert}\", key: \"{key}\" }})"),
    )
    .await;
    let reply = get(r.web, "app.test", "/mtls").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("client=CN=router.internal"),
        "the backend saw the router's certificate: {}",
        reply.body
    );
    r.shutdown().await;
}

#[tokio::test]
async fn health_checks_speak_tls_and_fail_on_a_certificate_that_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Ca::new(&dir.path().join("ours").tap_mkdir());
    let theirs = Ca::new(&dir.path().join("theirs").tap_mkdir());
    let good = TlsBackend::start(&ours.issue("good", &["api.internal"], false), None).await;
    let bad = TlsBackend::start(&theirs.issue("bad", &["api.internal"], false), None).await;
    let r = router(
        &[
            format!("https://{}", good.addr),
            format!("https://{}", bad.addr),
        ],
        &format!(
            ".transport(#{{ ca: \"{}\", server_name: \"api.internal\" }})\n\
             .health_check(#{{ path: \"/health\", interval: \"100ms\", timeout: \"1s\" }})",
            ours.cert.display()
        ),
    )
    .await;
    // The good server answers the checks over TLS (its counter moves); the bad one is marked
    // down after its first check, so requests all go to the good one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while good.seen() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no health check reached the good server over TLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&get(r.admin, "localhost", "/api/services/s").await.body).unwrap();
        if s["servers_up"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server with the other CA's certificate was never marked down: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let reply = get(r.web, "app.test", "/work").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(bad.seen(), 0);
    r.shutdown().await;
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
