//! TLS entrypoints with real clients: curl (HTTP/1.1 and HTTP/2 by ALPN, h2c with prior
//! knowledge, client certificates) and a rustls client that reports which certificate the
//! router served. Certificates are made in the test by a test CA (rcgen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use switchyard::config::apply_entrypoint_option;
use switchyard::config::Config;

use crate::support::*;

/// A certificate authority made for one test, writing PEM files into `dir`.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    pub(crate) cert: PathBuf,
}

impl Ca {
    pub(crate) fn new(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join("ca.crt");
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            cert,
        }
    }

    /// A certificate for `names` (server) or a client certificate (`client`), as
    /// `STEM.crt`/`STEM.key` in the CA's folder; returns `CERT:KEY`.
    pub(crate) fn issue(&self, stem: &str, names: &[&str], client: bool) -> String {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        format!("{}:{}", c.display(), k.display())
    }
}

/// Files of a `CERT:KEY` pair.
pub(crate) fn pair(p: &str) -> switchyard::tls::CertFiles {
    let (c, k) = p.split_once(':').unwrap();
    switchyard::tls::CertFiles {
        cert: c.into(),
        key: k.into(),
    }
}

/// Adds entrypoint `name` on a free loopback port with `options` (`KEY=VALUE`).
pub(crate) fn entrypoint(cfg: &mut Config, name: &str, options: &[&str]) {
    cfg.entrypoints
        .push((name.to_string(), "127.0.0.1:0".parse().unwrap()));
    let opts = cfg
        .settings
        .entrypoint_options
        .entry(name.to_string())
        .or_default();
    for o in options {
        let (k, v) = o.split_once('=').unwrap_or((o, "true"));
        apply_entrypoint_option(opts, k, v).unwrap();
    }
}

/// Sets options (`KEY=VALUE`) of the `web` entrypoint the test router always has.
pub(crate) fn web_options(cfg: &mut Config, options: &[(&str, &str)]) {
    let web = cfg
        .settings
        .entrypoint_options
        .entry("web".into())
        .or_default();
    for (k, v) in options {
        apply_entrypoint_option(web, k, v).unwrap();
    }
}

/// The address entrypoint `name` listens on.
pub(crate) fn addr_of(r: &TestRouter, name: &str) -> SocketAddr {
    r.router()
        .entrypoints
        .iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// What curl reported: exit code, HTTP status, HTTP version and body.
#[derive(Debug)]
pub(crate) struct Curl {
    pub(crate) code: i32,
    pub(crate) status: u16,
    pub(crate) version: String,
    pub(crate) body: String,
    pub(crate) stderr: String,
}

/// Runs curl against `https://NAME:PORT/PATH` (resolved to the router) with `args`, at most
/// 10 s.
pub(crate) async fn curl(args: &[&str]) -> Curl {
    // curl and openssl come with the test tools (installed once when missing).
    tools_python();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "8",
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl took longer than 10 s")
    .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut t = tail.split_whitespace();
    Curl {
        code: out.status.code().unwrap_or(-1),
        status: t.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: t.next().unwrap_or_default().to_string(),
        body: body.trim_end().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl arguments reaching `name` on `addr` over TLS, trusting `ca`.
pub(crate) fn https(ca: &Ca, name: &str, addr: SocketAddr, path: &str) -> Vec<String> {
    vec![
        "--cacert".into(),
        ca.cert.display().to_string(),
        "--resolve".into(),
        format!("{name}:{}:127.0.0.1", addr.port()),
        format!("https://{name}:{}{path}", addr.port()),
    ]
}

pub(crate) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Accepts any server certificate: the tests look at which one was served.
#[derive(Debug)]
pub(crate) struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        switchyard::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf certificate the router serves for `sni` (DER), or the handshake error.
pub(crate) async fn served_cert(addr: SocketAddr, sni: &str) -> Result<Vec<u8>, String> {
    let config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate".to_string())
}

/// The DER of the certificate in a PEM file.
pub(crate) fn der_of(pem_file: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}

const SCRIPT: &str = r#"
route("plain").rule("PathPrefix(`/plain`)").to(respond(200, "plain\n"));
route("secure").rule("PathPrefix(`/secure`)").tls(true).to(respond(200, "secure\n"));
route("listed").rule("PathPrefix(`/listed`)").entrypoints(["websecure"]).to(respond(200, "listed\n"));
"#;

#[tokio::test]
async fn https_by_sni_with_http2_and_traefik_route_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let w = ca.issue("w", &["*.w.test"], false);
    let backend = Backend::start("b1").await;
    let script = format!(
        "{SCRIPT}\nroute(\"echo\").rule(\"PathPrefix(`/echo`)\").tls(true).to(service(\"b\").servers([\"{}\"]));\n",
        backend.addr
    );
    let log = dir.path().join("access.log");
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&a), pair(&w)];
        cfg.access_log.output = Some(switchyard::access_log::Output::File(log.clone()));
        cfg.access_log.format = switchyard::access_log::Format::Json;
    })
    .await;
    let tls = addr_of(&r, "websecure");

    // SNI picks the certificate curl verifies against the name; ALPN gives HTTP/2.
    let c = curl(&refs(&https(&ca, "a.test", tls, "/secure"))).await;
    assert_eq!(
        (c.status, c.version.as_str(), c.body.as_str()),
        (200, "2", "secure"),
        "{c:?}"
    );
    let c = curl(&refs(&https(&ca, "x.w.test", tls, "/secure"))).await;
    assert_eq!(
        (c.status, c.version.as_str()),
        (200, "2"),
        "wildcard: {c:?}"
    );
    let mut h1 = https(&ca, "a.test", tls, "/secure");
    h1.insert(0, "--http1.1".into());
    let c = curl(&refs(&h1)).await;
    assert_eq!((c.status, c.version.as_str()), (200, "1.1"), "{c:?}");
    // A wildcard covers one label only; an unknown name gets the self-signed default, which
    // curl refuses, and which the rustls client sees.
    let c = curl(&refs(&https(&ca, "y.x.w.test", tls, "/secure"))).await;
    assert_ne!(
        c.code, 0,
        "two labels under a wildcard must not verify: {c:?}"
    );
    let default = served_cert(tls, "unknown.test").await.unwrap();
    assert_ne!(default, der_of(a.split(':').next().unwrap()));
    let (_, x) = x509_parser::parse_x509_certificate(&default).unwrap();
    assert!(
        x.subject().to_string().contains("SWITCHYARD DEFAULT CERT"),
        "{}",
        x.subject()
    );
    assert_eq!(
        served_cert(tls, "a.test").await.unwrap(),
        der_of(a.split(':').next().unwrap())
    );

    // Traefik's rules: a `.tls()` route serves only TLS, a route without it only cleartext,
    // unless it names the TLS entrypoint itself.
    let c = curl(&refs(&https(&ca, "a.test", tls, "/plain"))).await;
    assert_eq!(c.status, 404, "a route without .tls() is not on TLS: {c:?}");
    let c = curl(&refs(&https(&ca, "a.test", tls, "/listed"))).await;
    assert_eq!(
        c.status, 200,
        "a route naming the TLS entrypoint serves it: {c:?}"
    );
    assert_eq!(get(r.web, "a.test", "/plain").await.status, 200);
    assert_eq!(get(r.web, "a.test", "/secure").await.status, 404);

    // The backend learns the request came over TLS.
    let c = curl(&refs(&https(&ca, "a.test", tls, "/echo"))).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(c.body.contains("X-Forwarded-Proto: https"), "{}", c.body);

    // Handshakes are counted.
    let m = get(r.admin, "localhost", "/metrics").await.body;
    let ok = m
        .lines()
        .find(|l| {
            l.starts_with("switchyard_tls_handshakes_total{entrypoint=\"websecure\",result=\"ok\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(ok >= 8.0, "handshakes counted: {ok}\n{m}");

    // The access log tells HTTP/2 over TLS apart.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"/echo\"")) {
            break serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for /echo:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            &line["RequestScheme"],
            &line["RequestProtocol"],
            &line["RequestPath"]
        ),
        (
            &serde_json::json!("https"),
            &serde_json::json!("HTTP/2.0"),
            &serde_json::json!("/echo")
        ),
        "{line:#}"
    );

    // The admin API lists the certificates and which routes serve TLS.
    let certs: serde_json::Value =
        serde_json::from_str(&get(r.admin, "localhost", "/api/certificates").await.body).unwrap();
    let names: Vec<String> = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}{}",
                c["names"],
                if c["default"] == true { " default" } else { "" }
            )
        })
        .collect();
    assert_eq!(
        names,
        vec!["[\"a.test\"]", "[\"*.w.test\"]", "[] default"],
        "{certs:#}"
    );
    let routes: serde_json::Value =
        serde_json::from_str(&get(r.admin, "localhost", "/api/routes").await.body).unwrap();
    let secure = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "secure")
        .unwrap();
    assert_eq!(secure["tls"], serde_json::json!({}), "{secure:#}");
    r.shutdown().await;
}

#[tokio::test]
async fn strict_sni_entrypoint_defaults_versions_and_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let fallback = ca.issue("fallback", &["fallback.internal"], false);
    let own_default = format!("tls.default-certificate={fallback}");
    let r = TestRouter::start_with(&[("10-test.rhai", SCRIPT)], |cfg| {
        entrypoint(
            cfg,
            "websecure",
            &["tls.strict-sni=true", "tls.min-version=1.3"],
        );
        entrypoint(cfg, "internal", &["tls", &own_default]);
        entrypoint(cfg, "public", &["tls"]);
        web_options(cfg, &[("h2c", "true")]);
        cfg.tls.certificates = vec![pair(&a)];
    })
    .await;
    let tls = addr_of(&r, "websecure");
    assert!(served_cert(tls, "a.test").await.is_ok());
    let refused = served_cert(tls, "other.test").await;
    assert!(refused.is_err(), "strict SNI must refuse an unknown name");
    // An entrypoint with its own default certificate serves it to unknown names; the other
    // TLS entrypoint keeps the router's (self-signed) default; known names are the same on both.
    let own = addr_of(&r, "internal");
    let plain = addr_of(&r, "public");
    let fallback_der = der_of(fallback.split(':').next().unwrap());
    assert_eq!(served_cert(own, "other.test").await.unwrap(), fallback_der);
    assert_eq!(
        served_cert(own, "a.test").await.unwrap(),
        der_of(a.split(':').next().unwrap())
    );
    let router_default = served_cert(plain, "other.test").await.unwrap();
    assert_ne!(router_default, fallback_der);
    assert_ne!(router_default, der_of(a.split(':').next().unwrap()));
    let mut v12 = https(&ca, "a.test", tls, "/secure");
    v12.splice(0..0, ["--tls-max".to_string(), "1.2".to_string()]);
    let c = curl(&refs(&v12)).await;
    assert_ne!(
        c.code, 0,
        "TLS 1.2 must be refused at min-version 1.3: {c:?}"
    );
    let c = curl(&refs(&https(&ca, "a.test", tls, "/secure"))).await;
    assert_eq!(c.status, 200, "{c:?}");

    // h2c: HTTP/2 with prior knowledge and HTTP/1.1 on the same cleartext entrypoint.
    let url = format!("http://127.0.0.1:{}/plain", r.web.port());
    let c = curl(&["--http2-prior-knowledge", &url]).await;
    assert_eq!(
        (c.status, c.version.as_str(), c.body.as_str()),
        (200, "2", "plain"),
        "{c:?}"
    );
    let c = curl(&[&url]).await;
    assert_eq!((c.status, c.version.as_str()), (200, "1.1"), "{c:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn client_certificates_and_domain_fronting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let ab = ca.issue("ab", &["a.test", "b.test"], false);
    let client = ca.issue("client", &["client"], true);
    let ca_file = ca.cert.display().to_string();
    let backend = Backend::start("b1").await;
    let script = format!(
        "{SCRIPT}\nroute(\"cert\").rule(\"PathPrefix(`/cert`)\").tls(true)\n\
         .middlewares([pass_tls_client_cert(#{{ pem: true, info: #{{ subject: true, sans: true }} }})])\n\
         .to(service(\"b\").servers([\"{}\"]));\n",
        backend.addr
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        entrypoint(
            cfg,
            "websecure",
            &[
                "tls.client-auth=require",
                &format!("tls.client-ca={ca_file}"),
            ],
        );
        entrypoint(
            cfg,
            "optional",
            &[
                "tls.client-auth=verify-if-given",
                &format!("tls.client-ca={ca_file}"),
            ],
        );
        cfg.tls.certificates = vec![pair(&ab)];
    })
    .await;
    let (cert, key) = client.split_once(':').unwrap();
    let with_cert = |mut v: Vec<String>| {
        v.splice(0..0, ["--cert", cert, "--key", key].map(str::to_string));
        v
    };
    let tls = addr_of(&r, "websecure");
    let c = curl(&refs(&https(&ca, "a.test", tls, "/secure"))).await;
    assert!(
        c.code != 0 || c.status == 0,
        "no client certificate must fail: {c:?}"
    );
    assert!(!c.stderr.is_empty(), "curl says why: {c:?}");
    let c = curl(&refs(&with_cert(https(&ca, "a.test", tls, "/secure")))).await;
    assert_eq!(c.status, 200, "{c:?}");
    // The certificate was checked for a.test: Host b.test on that connection is refused.
    let mut fronted = with_cert(https(&ca, "a.test", tls, "/secure"));
    fronted.splice(0..0, ["-H".to_string(), "Host: b.test".to_string()]);
    let c = curl(&refs(&fronted)).await;
    assert_eq!(c.status, 421, "domain fronting: {c:?}");

    // pass_tls_client_cert hands the checked certificate to the server, in Traefik's format.
    let c = curl(&refs(&with_cert(https(&ca, "a.test", tls, "/cert")))).await;
    assert_eq!(c.status, 200, "{c:?}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der_of(cert));
    let escaped = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert!(
        c.body
            .contains(&format!("X-Forwarded-Tls-Client-Cert: {escaped}")),
        "{}",
        c.body
    );
    assert!(
        c.body.contains(
            "X-Forwarded-Tls-Client-Cert-Info: Subject%3D%22CN%3Dclient%22%3BSAN%3D%22client%22"
        ),
        "{}",
        c.body
    );

    let opt = addr_of(&r, "optional");
    // Without a certificate nothing is passed, and a client cannot supply the header itself.
    let mut spoof = https(&ca, "a.test", opt, "/cert");
    spoof.splice(
        0..0,
        [
            "-H".to_string(),
            "X-Forwarded-Tls-Client-Cert: forged".to_string(),
        ],
    );
    let c = curl(&refs(&spoof)).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(!c.body.contains("forged"), "{}", c.body);
    assert!(
        !c.body.contains("X-Forwarded-Tls-Client-Cert"),
        "{}",
        c.body
    );
    let c = curl(&refs(&https(&ca, "a.test", opt, "/secure"))).await;
    assert_eq!(
        c.status, 200,
        "verify-if-given without a certificate: {c:?}"
    );
    let c = curl(&refs(&with_cert(https(&ca, "a.test", opt, "/secure")))).await;
    assert_eq!(c.status, 200, "verify-if-given with a certificate: {c:?}");
    // Without a client certificate Host alone decides, as in Traefik.
    let mut other_host = https(&ca, "a.test", opt, "/secure");
    other_host.splice(0..0, ["-H".to_string(), "Host: b.test".to_string()]);
    assert_eq!(curl(&refs(&other_host)).await.status, 200);
    r.shutdown().await;
}

#[tokio::test]
async fn script_certificates_reload_and_swap_without_failed_handshakes() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let first = ca.issue("first", &["a.test"], false);
    let script = format!(
        "tls_certificate(\"{}\", \"{}\");\n{SCRIPT}",
        certs.path().join("live.crt").display(),
        certs.path().join("live.key").display()
    );
    let install = |p: &str| {
        let f = pair(p);
        std::fs::copy(&f.cert, certs.path().join("live.crt")).unwrap();
        std::fs::copy(&f.key, certs.path().join("live.key")).unwrap();
    };
    install(&first);
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
    })
    .await;
    let tls = addr_of(&r, "websecure");
    assert_eq!(
        served_cert(tls, "a.test").await.unwrap(),
        der_of(first.split(':').next().unwrap())
    );

    // Handshakes run without pause while the certificate files are replaced three times.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                match served_cert(tls, "a.test").await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };
    let mut last = first.clone();
    for i in 0..3 {
        let next = ca.issue(&format!("next{i}"), &["a.test"], false);
        install(&next);
        let want = der_of(next.split(':').next().unwrap());
        let deadline = Instant::now() + Duration::from_secs(8);
        while served_cert(tls, "a.test").await.ok().as_deref() != Some(&want[..]) {
            assert!(
                Instant::now() < deadline,
                "certificate {i} not picked up within 8 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last = next;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = hammer.await.unwrap();
    assert!(ok > 20, "the hammer ran: {ok}");
    assert!(
        failed.is_empty(),
        "failed handshakes during swaps: {failed:?}"
    );

    // A broken file is a build error naming the file; the last good certificate keeps serving.
    std::fs::write(certs.path().join("live.crt"), "not a certificate\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let status = get(r.admin, "localhost", "/api/scripts").await.body;
        if status.contains("live.crt") {
            assert!(
                status.contains("no PEM certificate") || status.contains("PEM"),
                "{status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no build error about live.crt:\n{status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served_cert(tls, "a.test").await.unwrap(),
        der_of(last.split(':').next().unwrap()),
        "the last good certificate keeps serving"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn bad_tls_settings_stop_the_start_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let b = ca.issue("b", &["b.test"], false);
    let mismatched = format!(
        "{}:{}",
        a.split(':').next().unwrap(),
        b.split(':').nth(1).unwrap()
    );
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(scripts.path().join("r.rhai"), SCRIPT).unwrap();
    let mut cfg = test_config(scripts.path());
    entrypoint(&mut cfg, "websecure", &["tls"]);
    cfg.tls.certificates = vec![pair(&mismatched)];
    let sets = switchyard::app::bind_entrypoints(&cfg.entrypoints, 1).unwrap();
    let err = match switchyard::app::Router::start(&cfg, sets, None).await {
        Ok(_) => panic!("a mismatched key must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("does not belong") && err.contains("a.crt"),
        "{err}"
    );
}

#[tokio::test]
async fn entrypoint_redirect_to_https_and_no_redirect_loop() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.issue("a", &["a.test"], false);
    let script = r#"
route("app").rule("Host(`a.test`)").entrypoints(["websecure"])
    .middlewares([redirect_scheme("https")]).to(respond(200, "over tls\n"));
"#;
    let r = TestRouter::start_with(&[("10-test.rhai", script)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
        let web = cfg
            .settings
            .entrypoint_options
            .entry("web".into())
            .or_default();
        apply_entrypoint_option(web, "redirect-to", "websecure").unwrap();
        cfg.tls.certificates = vec![pair(&a)];
    })
    .await;
    let tls = addr_of(&r, "websecure");
    let resp = get(r.web, &format!("a.test:{}", r.web.port()), "/x/y?q=1").await;
    assert_eq!(resp.status, 301, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some(format!("https://a.test:{}/x/y?q=1", tls.port()).as_str())
    );
    // Unknown hosts are redirected too: the entrypoint answers before any route.
    let resp = send(r.web, "POST", "nothing.test", "/form", &[], "a=1").await;
    assert_eq!(resp.status, 308, "non-GET keeps its method: {resp:?}");
    // curl follows it to the TLS entrypoint, where redirect_scheme("https") sees https and
    // lets the request through instead of redirecting again.
    let c = curl(&[
        "-L",
        "--cacert",
        &ca.cert.display().to_string(),
        "--resolve",
        &format!("a.test:{}:127.0.0.1", r.web.port()),
        "--resolve",
        &format!("a.test:{}:127.0.0.1", tls.port()),
        &format!("http://a.test:{}/", r.web.port()),
    ])
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "over tls"), "{c:?}");
    r.shutdown().await;
}

/// Named TLS options per route (Traefik's `tls.options`), chosen by the handshake's SNI name:
/// `modern` (TLS 1.3 only) for a.test, `mtls` (client certificate required) for b.test, the
/// entrypoint's own options for c.test. A request whose Host has other options than its
/// connection's SNI is refused with 421, so a lax name cannot open a strict one's routes.
#[tokio::test]
async fn named_tls_options_are_chosen_by_sni_and_cannot_be_fronted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let abc = ca.issue("abc", &["a.test", "b.test", "c.test", "d.test"], false);
    let client = ca.issue("client", &["client"], true);
    let script = format!(
        r#"
tls_options("modern", #{{ min_version: "1.3" }});
tls_options("mtls", #{{ client_auth: "require", client_ca: "{}" }});
route("a").rule("Host(`a.test`)").tls(#{{ options: "modern" }}).to(respond(200, "a"));
route("b").rule("Host(`b.test`)").tls(#{{ options: "mtls" }}).to(respond(200, "b"));
route("c").rule("Host(`c.test`)").tls(true).to(respond(200, "c"));
route("d").rule("Host(`d.test`)").tls(#{{ options: "nope" }}).to(respond(200, "d"));
"#,
        ca.cert.display()
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        entrypoint(cfg, "websecure", &["tls"]);
        cfg.tls.certificates = vec![pair(&abc)];
    })
    .await;
    let tls = addr_of(&r, "websecure");
    let tls12 = |name: &str| {
        let mut v = https(&ca, name, tls, "/");
        v.splice(0..0, ["--tls-max".to_string(), "1.2".to_string()]);
        v
    };
    // modern: TLS 1.2 is refused for a.test, allowed for c.test (the entrypoint's options).
    let c = curl(&refs(&tls12("a.test"))).await;
    assert!(c.status == 0 && c.code != 0, "TLS 1.2 to a.test: {c:?}");
    let c = curl(&refs(&https(&ca, "a.test", tls, "/"))).await;
    assert_eq!((c.status, c.body.as_str()), (200, "a"), "{c:?}");
    let c = curl(&refs(&tls12("c.test"))).await;
    assert_eq!((c.status, c.body.as_str()), (200, "c"), "{c:?}");
    // mtls: b.test needs a client certificate; c.test does not.
    let c = curl(&refs(&https(&ca, "b.test", tls, "/"))).await;
    assert!(
        c.status == 0 && c.code != 0,
        "b.test without a certificate: {c:?}"
    );
    let (cert, key) = client.split_once(':').unwrap();
    let mut with_cert = https(&ca, "b.test", tls, "/");
    with_cert.splice(0..0, ["--cert", cert, "--key", key].map(str::to_string));
    let c = curl(&refs(&with_cert)).await;
    assert_eq!((c.status, c.body.as_str()), (200, "b"), "{c:?}");
    // Fronting: a connection made for c.test (no client certificate asked) cannot reach b.test.
    let mut fronted = https(&ca, "c.test", tls, "/");
    fronted.splice(0..0, ["-H".to_string(), "Host: b.test".to_string()]);
    let c = curl(&refs(&fronted)).await;
    assert_eq!(c.status, 421, "fronting b.test over c.test: {c:?}");
    // ... nor a.test from a TLS 1.2 connection made for c.test.
    let mut fronted = tls12("c.test");
    fronted.splice(0..0, ["-H".to_string(), "Host: a.test".to_string()]);
    let c = curl(&refs(&fronted)).await;
    assert_eq!(c.status, 421, "fronting a.test over c.test: {c:?}");
    // Undeclared options are a warning naming the route; the route serves with the defaults.
    let c = curl(&refs(&tls12("d.test"))).await;
    assert_eq!((c.status, c.body.as_str()), (200, "d"), "{c:?}");
    let scripts = get(r.admin, "localhost", "/api/scripts").await.body;
    assert!(
        scripts.contains("TLS options \\\"nope\\\" are not declared"),
        "{scripts}"
    );
    r.shutdown().await;
}
