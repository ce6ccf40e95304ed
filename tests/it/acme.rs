//! ACME certificate resolvers against Debian's Pebble (a real RFC 8555 server) and
//! pebble-challtestsrv (its DNS, pointing every name at 127.0.0.1): HTTP-01 and TLS-ALPN-01
//! issuance, the certificate served by SNI and verified against Pebble's root, the storage file
//! serving again after a restart without the CA. Pebble's HTTPS certificate is made here (Debian
//! ships none) and trusted only by the router (`ca-certificate`).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard::config::Config;

use crate::support::*;
use crate::tls::{addr_of, curl, entrypoint, Ca};

use crate::support::docker::free_port;

/// Waits until something accepts on `addr` (at most 20 s).
fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pebble and its DNS, for a router whose HTTP-01 answers come on `http_port` and TLS-ALPN-01
/// on `tls_port`.
pub(crate) struct Pebble {
    _dns: tokio::process::Child,
    pebble: Option<tokio::process::Child>,
    /// The ACME directory URL.
    pub(crate) directory: String,
    listen: SocketAddr,
    management: SocketAddr,
    /// The CA file the router trusts for Pebble's HTTPS listener.
    pub(crate) listener_ca: PathBuf,
    config: PathBuf,
    dns: u16,
}

impl Pebble {
    pub(crate) fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_at(dir, http_port, tls_port, "127.0.0.1")
    }

    /// Pebble whose DNS answers every name with `ip`.
    fn start_at(dir: &Path, http_port: u16, tls_port: u16, ip: &str) -> Pebble {
        Pebble::start_with(dir, http_port, tls_port, ip, None)
    }

    /// `start_at`, issuing certificates valid `validity` seconds when given (Pebble's default
    /// is five years).
    fn start_with(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        ip: &str,
        validity: Option<u64>,
    ) -> Pebble {
        // Installs pebble, pebble-challtestsrv and redis-server when missing (`cargo test` alone
        // sets up a fresh machine).
        tools_python();
        assert!(
            Path::new("/usr/bin/pebble").exists() || which("pebble"),
            "pebble missing: run tests/tools/setup.sh"
        );
        let ca = Ca::new(dir);
        let listener = ca.issue("pebble", &["localhost", "127.0.0.1"], false);
        let (cert, key) = listener.split_once(':').unwrap();
        let dns = free_port();
        let dns_child = tokio::process::Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                ip,
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting pebble-challtestsrv");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("pebble.json");
        let mut settings = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity {
            settings["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(
            &config,
            serde_json::json!({ "pebble": settings }).to_string(),
        )
        .unwrap();
        let mut p = Pebble {
            _dns: dns_child,
            pebble: None,
            directory: format!("https://{listen}/dir"),
            listen,
            management,
            listener_ca: ca.cert.clone(),
            config,
            dns,
        };
        p.restart();
        p
    }

    /// Starts Pebble (again, after `stop`: a new CA that knows no account and has a new root).
    fn restart(&mut self) {
        let pebble = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns))
            // No random validation delays, no rejected nonces: quick, deterministic runs.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting pebble");
        wait_listening(self.listen, "pebble");
        self.pebble = Some(pebble);
    }

    /// A resolver's settings for this CA (its directory, its listener's CA) plus `more`.
    fn settings(&self, more: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("ca-server", self.directory.clone()),
            ("ca-certificate", self.listener_ca.display().to_string()),
        ];
        all.extend(more);
        all
    }

    /// Pebble's current root (PEM), from its management listener.
    pub(crate) async fn root(&self, dir: &Path) -> PathBuf {
        let c = curl(&[
            "--cacert",
            &self.listener_ca.display().to_string(),
            &format!("https://localhost:{}/roots/0", self.management.port()),
        ])
        .await;
        assert_eq!(c.status, 200, "{c:?}");
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, format!("{}\n", c.body)).unwrap();
        path
    }

    async fn stop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            let _ = p.start_kill();
            let _ = p.wait().await;
        }
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A router with `web` (HTTP-01) and `websecure` (TLS) on fixed free ports and resolver `le`
/// pointed at `directory`.
async fn router(script: &str, ports: (u16, u16), resolver: &[(&str, String)]) -> TestRouter {
    router_at("127.0.0.1", script, ports, resolver, None).await
}

/// `router` on loopback address `ip`, with the shared store `store` (URL, key file) when given.
async fn router_at(
    ip: &str,
    script: &str,
    ports: (u16, u16),
    resolver: &[(&str, String)],
    store: Option<(String, PathBuf)>,
) -> TestRouter {
    router_with(ip, script, ports, resolver, store, None).await
}

/// `router_at`, reading Traefik dynamic configuration from `dynamic` when given.
async fn router_with(
    ip: &str,
    script: &str,
    ports: (u16, u16),
    resolver: &[(&str, String)],
    store: Option<(String, PathBuf)>,
    dynamic: Option<PathBuf>,
) -> TestRouter {
    let ip = ip.to_string();
    let resolver: Vec<(String, String)> = resolver
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    TestRouter::start_with(&[("10-test.rhai", script)], move |cfg: &mut Config| {
        cfg.entrypoints = vec![("web".into(), format!("{ip}:{}", ports.0).parse().unwrap())];
        entrypoint(cfg, "websecure", &["tls"]);
        if let Some(e) = cfg.entrypoints.iter_mut().find(|(n, _)| n == "websecure") {
            e.1 = format!("{ip}:{}", ports.1).parse().unwrap();
        }
        if let Some((url, key)) = store {
            // `rediss://…#ca=FILE`: a TLS store and the CA it is checked against.
            let (url, ca) = match url.split_once("#ca=") {
                Some((u, ca)) => (u.to_string(), Some(PathBuf::from(ca))),
                None => (url, None),
            };
            cfg.tls.store = Some(url);
            cfg.tls.store_key_file = Some(key);
            cfg.tls.store_ca_file = ca;
        }
        cfg.dynamic_config = dynamic;
        let mut r = switchyard::acme::ResolverConfig::new("le");
        for (k, v) in &resolver {
            r.set(k, v).unwrap();
        }
        cfg.acme = vec![r];
    })
    .await
}

/// The issuer of the certificate served for `sni`, polled until `ok` holds (at most 60 s).
pub(crate) async fn served_issuer(
    addr: SocketAddr,
    sni: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(der) = crate::tls::served_cert(addr, sni).await {
            let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
            let issuer = x.issuer().to_string();
            if ok(&issuer) {
                return issuer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no certificate for {sni} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn routes(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "route(\"{n}\").rule(\"Host(`{n}`)\").tls(#{{ resolver: \"le\" }}).to(respond(200, \"{n}\\n\"));\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn http01_issues_serves_and_survives_a_restart_without_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let mut pebble = Pebble::start(dir.path(), ports.0, ports.1);
    let storage = dir.path().join("acme-le.json");
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        ("storage", storage.display().to_string()),
        ("retry-base", "1s".to_string()),
        ("email", "ops@example.test".to_string()),
    ]);
    let script = routes(&["a.acme.test"]);
    let started = Instant::now();
    let r = router(&script, ports, &settings).await;
    let tls = addr_of(&r, "websecure");
    let issuer = served_issuer(tls, "a.acme.test", |i| i.contains("Pebble")).await;
    let took = started.elapsed();
    eprintln!("HTTP-01: route to served certificate in {took:?} (issuer {issuer})");

    // Verified by a real client against Pebble's root.
    let root = pebble.root(dir.path()).await;
    let c = curl(&[
        "--cacert",
        &root.display().to_string(),
        "--resolve",
        &format!("a.acme.test:{}:127.0.0.1", tls.port()),
        &format!("https://a.acme.test:{}/", tls.port()),
    ])
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "a.acme.test"), "{c:?}");

    // The status is visible; the storage holds the account and the certificate, mode 0600.
    let status: serde_json::Value =
        serde_json::from_str(&get(r.admin, "localhost", "/api/certificates").await.body).unwrap();
    let le = &status["resolvers"][0];
    assert_eq!(le["name"], "le", "{status:#}");
    assert_eq!(le["names"][0]["name"], "a.acme.test", "{status:#}");
    assert!(le["names"][0]["not_after"].is_string(), "{status:#}");
    let m = get(r.admin, "localhost", "/metrics").await.body;
    assert!(
        m.contains(
            "switchyard_certificate_not_after_seconds{name=\"a.acme.test\",source=\"acme:le\"}"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "switchyard_acme_orders_total{resolver=\"le\",name=\"a.acme.test\",result=\"ok\"} 1"
        ),
        "{m}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&storage).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&storage).unwrap()).unwrap();
    assert!(stored["account"].is_object(), "{stored:#}");
    assert_eq!(stored["certificates"][0]["name"], "a.acme.test");
    r.shutdown().await;

    // Without the CA, a restarted router serves the stored certificate at once.
    pebble.stop().await;
    let r = router(&script, ports, &settings).await;
    let again = served_issuer(addr_of(&r, "websecure"), "a.acme.test", |i| {
        i.contains("Pebble")
    })
    .await;
    assert_eq!(again, issuer);
    r.shutdown().await;
}

#[tokio::test]
async fn tls_alpn01_issues_and_failures_back_off_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), ports.0, ports.1);
    let settings = pebble.settings(vec![
        ("tls-challenge", "true".to_string()),
        (
            "storage",
            dir.path().join("acme.json").display().to_string(),
        ),
        ("retry-base", "1s".to_string()),
    ]);
    let script = routes(&["b.acme.test"]);
    let r = router(&script, ports, &settings).await;
    let tls = addr_of(&r, "websecure");
    served_issuer(tls, "b.acme.test", |i| i.contains("Pebble")).await;

    // A CA that cannot reach the answer: the order fails, the error and the next attempt show.
    drop(pebble);
    std::fs::write(
        r.script_path("10-test.rhai"),
        format!("{script}{}", routes(&["c.acme.test"])),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&get(r.admin, "localhost", "/api/certificates").await.body)
                .unwrap();
        let c = v["resolvers"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "c.acme.test")
            .cloned();
        if let Some(c) = c.filter(|c| c["last_error"].is_string()) {
            assert!(c["failures"].as_u64().unwrap() >= 1, "{c:#}");
            assert!(c["next_attempt_in_seconds"].is_u64(), "{c:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed order reported:\n{v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // b.acme.test keeps its certificate through the failures.
    served_issuer(tls, "b.acme.test", |i| i.contains("Pebble")).await;
    r.shutdown().await;
}

/// A Traefik user's acme.json: its certificates move into a resolver's storage and serve at
/// once, with no order (the CA here does not even exist).
#[tokio::test]
async fn a_traefik_acme_json_is_imported_and_served_without_an_order() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let pair = ca.issue("imp", &["imp.test", "www.imp.test"], false);
    let (cert, key) = pair.split_once(':').unwrap();
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
    let acme_json = dir.path().join("acme.json");
    std::fs::write(
        &acme_json,
        serde_json::json!({
            "myresolver": {
                "Account": { "Email": "a@b.test", "PrivateKey": "AAAA", "KeyType": "4096" },
                "Certificates": [
                    { "domain": { "main": "imp.test", "sans": ["www.imp.test"] },
                      "certificate": b64(cert), "key": b64(key), "Store": "default" },
                    { "domain": { "main": "broken.test" },
                      "certificate": "bm90IGEgY2VydA==", "key": "bm90IGEga2V5", "Store": "default" }
                ]
            }
        })
        .to_string(),
    )
    .unwrap();
    let storage = dir.path().join("acme-le.json");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&[
        "certs",
        "import",
        acme_json.to_str().unwrap(),
        "--resolver",
        "le",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no resolver \"le\" (it has: myresolver)"),
        "{err}"
    );
    let (code, out, err) = run(&[
        "certs",
        "import",
        acme_json.to_str().unwrap(),
        "--resolver",
        "le",
        "--from",
        "myresolver",
        "--storage",
        storage.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("imported 1 certificate") && out.contains("imp.test"),
        "{out}"
    );
    assert!(err.contains("skipped broken.test"), "{err}");

    let ports = (free_port(), free_port());
    let settings = vec![
        ("ca-server", "https://127.0.0.1:9/dir".to_string()),
        ("http-challenge", "web".to_string()),
        ("storage", storage.display().to_string()),
    ];
    let script = routes(&["imp.test", "www.imp.test"]);
    let r = router(&script, ports, &settings).await;
    let tls = addr_of(&r, "websecure");
    for name in ["imp.test", "www.imp.test"] {
        assert_eq!(
            crate::tls::served_cert(tls, name).await.unwrap(),
            std::fs::read(cert)
                .map(|pem| {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::CertificateDer::from_pem_slice(&pem)
                        .unwrap()
                        .to_vec()
                })
                .unwrap(),
            "{name}"
        );
    }
    // Held names are not ordered: no failure shows although the CA does not exist.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: serde_json::Value =
        serde_json::from_str(&get(r.admin, "localhost", "/api/certificates").await.body).unwrap();
    for n in v["resolvers"][0]["names"].as_array().unwrap() {
        assert_eq!(n["orders"], 0, "{v:#}");
        assert!(
            n["not_after"].is_string(),
            "held through its SANs too: {v:#}"
        );
    }
    r.shutdown().await;
}

/// `redis-cli -p PORT ARGS…`, its output trimmed.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A redis-server on loopback, stopped on drop.
pub(crate) struct Redis {
    child: Option<tokio::process::Child>,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) fn start(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// Redis speaking TLS only (`--port 0`), with `cert`/`key` (`CERT:KEY` from `Ca::issue`).
    fn start_tls(port: u16, pair: &str) -> Redis {
        let (cert, key) = pair.split_once(':').unwrap();
        let port = port.to_string();
        Redis::start_with(
            0,
            &[
                "--tls-port",
                &port,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-auth-clients",
                "no",
            ],
        )
        .on(port.parse().unwrap())
    }

    fn on(mut self, port: u16) -> Redis {
        self.port = port;
        wait_listening(format!("127.0.0.1:{port}").parse().unwrap(), "redis-server");
        self
    }

    pub(crate) fn start_with(port: u16, extra: &[&str]) -> Redis {
        tools_python();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server (tests/tools/setup.sh installs it)");
        if port != 0 {
            wait_listening(format!("127.0.0.1:{port}").parse().unwrap(), "redis-server");
        }
        Redis {
            child: Some(child),
            port,
        }
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// Two replicas share one Redis. Pebble's DNS sends the CA to replica B, which has no route for
/// the name and orders nothing; replica A orders it. B answers the HTTP-01 challenge from the
/// store, the order succeeds, B later serves A's certificate without an order of its own, and
/// a Redis outage fails no request.
#[tokio::test]
async fn two_replicas_share_one_redis_and_the_other_one_answers_the_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start_at(dir.path(), ports.0, ports.1, "127.0.0.3");
    let mut redis = Redis::start(free_port());
    let key = dir.path().join("store.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let store = Some((format!("redis://127.0.0.1:{}/0", redis.port), key.clone()));
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        ("retry-base", "1s".to_string()),
    ]);
    let other = "route(\"x\").rule(\"Host(`x.test`)\").to(respond(200, \"x\"));\n";
    let b = router_at("127.0.0.3", other, ports, &settings, store.clone()).await;
    let script = routes(&["r.acme.test"]);
    let started = Instant::now();
    let a = router_at("127.0.0.2", &script, ports, &settings, store.clone()).await;
    let a_tls = addr_of(&a, "websecure");
    served_issuer(a_tls, "r.acme.test", |i| i.contains("Pebble")).await;
    eprintln!(
        "shared HTTP-01 (answered by the other replica): {:?}",
        started.elapsed()
    );
    let a_der = crate::tls::served_cert(a_tls, "r.acme.test").await.unwrap();

    // B takes the route and serves the same certificate, read from the store, never ordered.
    std::fs::write(b.script_path("10-test.rhai"), format!("{other}{script}")).unwrap();
    let b_tls = addr_of(&b, "websecure");
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::tls::served_cert(b_tls, "r.acme.test").await.ok() != Some(a_der.clone()) {
        assert!(
            Instant::now() < deadline,
            "replica B never served A's certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v: serde_json::Value =
        serde_json::from_str(&get(b.admin, "localhost", "/api/certificates").await.body).unwrap();
    let r = &v["resolvers"][0]["names"][0];
    assert_eq!(
        (r["name"].as_str(), r["orders"].as_u64()),
        (Some("r.acme.test"), Some(0)),
        "{v:#}"
    );

    // The key is sealed in Redis.
    let dump = redis_cli(redis.port, &["HGETALL", "switchyard:acme:le:certs"]);
    assert!(
        dump.contains("sealed:") && !dump.contains("PRIVATE KEY"),
        "{dump}"
    );

    // Redis goes away and comes back (empty): TLS requests on both replicas keep being served,
    // and `/api/overview` shows the outage while it lasts.
    let serve_all = || async {
        for tls in [a_tls, b_tls] {
            for _ in 0..5 {
                let c = curl(&[
                    "-k",
                    "--resolve",
                    &format!("r.acme.test:{}:{}", tls.port(), tls.ip()),
                    &format!("https://r.acme.test:{}/", tls.port()),
                ])
                .await;
                assert_eq!((c.status, c.body.as_str()), (200, "r.acme.test"), "{c:?}");
            }
        }
    };
    let store_shown = |reachable: bool| {
        let (a, b) = (&a, &b);
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            for r in [a, b] {
                loop {
                    let v = get(r.admin, "localhost", "/api/overview").await.json();
                    if v["store"]["reachable"] == reachable {
                        assert!(!v["store"]["url"].as_str().unwrap().is_empty(), "{v:#}");
                        assert_eq!(v["store"]["error"].is_string(), !reachable, "{v:#}");
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "store not shown as {reachable}: {v:#}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    store_shown(true).await;
    let port = redis.port;
    redis.stop().await;
    serve_all().await;
    store_shown(false).await;
    serve_all().await;
    let _redis = Redis::start(port);
    store_shown(true).await;
    serve_all().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// `rediss://`: the shared store over TLS, checked against `--store.ca-file`. A replica orders
/// through it and the certificate lands sealed in Redis; a replica given the wrong CA refuses
/// to start, naming the store without its password.
#[tokio::test]
async fn the_shared_store_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    // Its own folder: Pebble's listener CA is made in `dir`.
    let ca_dir = dir.path().join("redis-ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca = Ca::new(&ca_dir);
    let pair = ca.issue("redis", &["127.0.0.1"], false);
    let ports = (free_port(), free_port());
    let pebble = Pebble::start_at(dir.path(), ports.0, ports.1, "127.0.0.1");
    let redis = Redis::start_tls(free_port(), &pair);
    let key = dir.path().join("store.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let store = Some((format!("{url}#ca={}", ca.cert.display()), key.clone()));
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        ("retry-base", "1s".to_string()),
    ]);
    let r = router_at(
        "127.0.0.1",
        &routes(&["s.acme.test"]),
        ports,
        &settings,
        store,
    )
    .await;
    served_issuer(addr_of(&r, "websecure"), "s.acme.test", |i| {
        i.contains("Pebble")
    })
    .await;
    let out = tokio::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca.cert)
        .args([
            "-p",
            &redis.port.to_string(),
            "HGETALL",
            "switchyard:acme:le:certs",
        ])
        .output()
        .await
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        dump.contains("s.acme.test") && dump.contains("sealed:"),
        "{dump}"
    );
    r.shutdown().await;

    // Another CA: the TLS handshake with Redis fails and the router does not start.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Ca::new(&other_dir);
    let mut cfg = crate::support::test_config(dir.path());
    cfg.tls.store = Some(format!("rediss://user:hunter2@127.0.0.1:{}/0", redis.port));
    cfg.tls.store_ca_file = Some(other.cert.clone());
    entrypoint(&mut cfg, "websecure", &["tls"]);
    let mut resolver = switchyard::acme::ResolverConfig::new("le");
    for (k, v) in &settings {
        resolver.set(k, v).unwrap();
    }
    cfg.acme = vec![resolver];
    let (sets, admin) = switchyard::app::bind(&cfg).unwrap();
    let err = match switchyard::app::Router::start(&cfg, sets, admin).await {
        Ok(_) => panic!("a router started on a store it cannot verify"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("shared store") && err.contains("user:***@"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password is never shown: {err}"
    );
}

/// TLS-ALPN-01 through the shared store: Pebble's DNS sends the CA to replica B, which has no
/// route for the name and orders nothing; replica A orders it with TLS-ALPN-01 and B answers
/// the validation handshake from the answer A published, so the order succeeds.
#[tokio::test]
async fn tls_alpn_answers_are_shared_between_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start_at(dir.path(), ports.0, ports.1, "127.0.0.3");
    let redis = Redis::start(free_port());
    let key = dir.path().join("store.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let store = Some((format!("redis://127.0.0.1:{}/0", redis.port), key));
    let settings = pebble.settings(vec![
        ("tls-challenge", "true".to_string()),
        ("retry-base", "1s".to_string()),
    ]);
    let other = "route(\"x\").rule(\"Host(`x.test`)\").to(respond(200, \"x\"));\n";
    let b = router_at("127.0.0.3", other, ports, &settings, store.clone()).await;
    let a = router_at(
        "127.0.0.2",
        &routes(&["t.acme.test"]),
        ports,
        &settings,
        store,
    )
    .await;
    let issuer = served_issuer(addr_of(&a, "websecure"), "t.acme.test", |i| {
        i.contains("Pebble")
    })
    .await;
    assert!(issuer.contains("Pebble"));
    let v: serde_json::Value =
        serde_json::from_str(&get(a.admin, "localhost", "/api/certificates").await.body).unwrap();
    let n = &v["resolvers"][0]["names"][0];
    assert_eq!(n["name"], "t.acme.test", "{v:#}");
    assert!(
        n["last_error"].is_null(),
        "the first order succeeded: {v:#}"
    );
    // The answer is taken down with the order.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = tokio::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "HLEN",
                "switchyard:acme:alpn",
            ])
            .output()
            .await
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the TLS-ALPN answer stayed in the store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Traefik's own ACME flags through traefik mode, as the articles' stacks write them: a
/// `certificatesresolvers` resolver with an HTTP-01 challenge on `web`, a file-provider router
/// naming it with `tls.certresolver`; Pebble issues the certificate the router then serves.
#[tokio::test]
async fn traefik_acme_flags_get_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), ports.0, ports.1);
    let backend = Backend::start("app").await;
    let dynamic = dir.path().join("dynamic.yml");
    std::fs::write(
        &dynamic,
        format!(
            "http:\n  routers:\n    app:\n      rule: \"Host(`e.acme.test`)\"\n      entryPoints: [websecure]\n      service: app\n      tls:\n        certResolver: le\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"http://{}\"\n",
            backend.addr
        ),
    )
    .unwrap();
    let flags: Vec<String> = [
        format!("--entrypoints.web.address=127.0.0.1:{}", ports.0),
        format!("--entrypoints.websecure.address=127.0.0.1:{}", ports.1),
        "--api.insecure=true".to_string(),
        "--entrypoints.traefik.address=127.0.0.1:0".to_string(),
        format!("--providers.file.filename={}", dynamic.display()),
        "--certificatesresolvers.le.acme.email=ops@example.com".to_string(),
        format!(
            "--certificatesresolvers.le.acme.caserver={}",
            pebble.directory
        ),
        format!(
            "--certificatesresolvers.le.acme.cacertificates={}",
            pebble.listener_ca.display()
        ),
        format!(
            "--certificatesresolvers.le.acme.storage={}",
            dir.path().join("acme.json").display()
        ),
        "--certificatesresolvers.le.acme.httpchallenge.entrypoint=web".to_string(),
    ]
    .into();
    let (_, t) = switchyard::traefik::plan(&flags, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let cfg = switchyard::traefik::config(&t).unwrap();
    let (sets, admin) = switchyard::app::bind(&cfg).unwrap();
    let router = switchyard::app::Router::start(&cfg, sets, admin)
        .await
        .unwrap();
    let tls = router
        .entrypoints
        .iter()
        .find(|(n, _)| n == "websecure")
        .map(|(_, a)| *a)
        .unwrap();
    let issuer = served_issuer(tls, "e.acme.test", |i| i.contains("Pebble")).await;
    assert!(issuer.contains("Pebble"), "{issuer}");
    let c = curl(&[
        "-k",
        "--resolve",
        &format!("e.acme.test:{}:127.0.0.1", tls.port()),
        &format!("https://e.acme.test:{}/", tls.port()),
    ])
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(
        c.body.contains("app"),
        "the router's service answered: {c:?}"
    );
    let stored = std::fs::read_to_string(dir.path().join("acme.json")).unwrap();
    assert!(stored.contains("e.acme.test"), "the storage file holds it");
    router.shutdown(Duration::from_secs(2)).await;
}

/// `name`'s entry in the first resolver's `/api/certificates` list.
async fn name_status(r: &TestRouter, name: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&get(r.admin, "localhost", "/api/certificates").await.body).unwrap();
    v["resolvers"][0]["names"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
}

/// On-demand certificates: a handshake for a name no route lists gets a certificate ordered
/// there and then, when the script's predicate allows the name; the first client already
/// verifies it against Pebble's root. Refused names and names over `on-demand-limit` get the
/// default certificate and are never ordered.
#[tokio::test]
async fn on_demand_certificates_are_ordered_at_the_first_handshake_when_the_script_allows() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), ports.0, ports.1);
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        (
            "storage",
            dir.path().join("acme.json").display().to_string(),
        ),
        ("on-demand", "true".to_string()),
        ("on-demand-limit", "2/1h".to_string()),
    ]);
    let script = r#"
fn may_issue(name) { name.ends_with(".ok.test") }
on_demand(Fn("may_issue"));
route("any").rule("PathPrefix(`/`)").entrypoints(["websecure"]).to(respond(200, "on demand\n"));
"#;
    let r = router(script, ports, &settings).await;
    let tls = addr_of(&r, "websecure");
    let root = pebble.root(dir.path()).await;
    let https = |name: &str| {
        (
            format!("{name}:{}:{}", tls.port(), tls.ip()),
            format!("https://{name}:{}/", tls.port()),
        )
    };

    // The first request for a.ok.test verifies against Pebble's root: it waited for the order.
    let (resolve, url) = https("a.ok.test");
    let started = Instant::now();
    let c = curl(&[
        "--cacert",
        &root.display().to_string(),
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "on demand"), "{c:?}");
    eprintln!(
        "on-demand: first handshake served in {:?}",
        started.elapsed()
    );
    let a = name_status(&r, "a.ok.test")
        .await
        .expect("a.ok.test listed");
    assert_eq!(
        (a["on_demand"].as_bool(), a["orders"].as_u64()),
        (Some(true), Some(1)),
        "{a:#}"
    );

    // The predicate refuses b.bad.test: the default certificate, no order.
    let issuer = |der: Vec<u8>| {
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        x.issuer().to_string()
    };
    let b = crate::tls::served_cert(tls, "b.bad.test").await.unwrap();
    assert!(!issuer(b).contains("Pebble"));
    assert!(name_status(&r, "b.bad.test").await.is_none());

    // The limit is two orders an hour: c.ok.test is the second, d.ok.test waits.
    served_issuer(tls, "c.ok.test", |i| i.contains("Pebble")).await;
    let d = crate::tls::served_cert(tls, "d.ok.test").await.unwrap();
    assert!(!issuer(d).contains("Pebble"));
    assert!(name_status(&r, "d.ok.test").await.is_none());

    // More handshakes for a held name order nothing more.
    let c = curl(&[
        "--cacert",
        &root.display().to_string(),
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    let a = name_status(&r, "a.ok.test").await.unwrap();
    assert_eq!(a["orders"].as_u64(), Some(1), "{a:#}");
    r.shutdown().await;

    // The certificates ordered on demand are kept as such and serve after a restart.
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("acme.json")).unwrap())
            .unwrap();
    let names: Vec<(&str, bool)> = stored["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["on_demand"] == true))
        .collect();
    assert_eq!(names.len(), 2, "{stored:#}");
    assert!(names.iter().all(|(_, od)| *od), "{names:?}");
}

/// Renewal and a CA outage: certificates valid 20 s are renewed when half their life is left.
/// With the CA down, renewal fails with a reason shown while the held certificate keeps serving;
/// the CA comes back as a new instance that forgot the account, and the resolver registers
/// again and renews.
#[tokio::test]
async fn renewal_survives_a_ca_outage_and_a_ca_that_forgot_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let mut pebble = Pebble::start_with(dir.path(), ports.0, ports.1, "127.0.0.1", Some(20));
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        (
            "storage",
            dir.path().join("acme.json").display().to_string(),
        ),
        ("renew-when-left", "50%".to_string()),
        ("retry-base", "1s".to_string()),
    ]);
    let r = router(&routes(&["r.renew.test"]), ports, &settings).await;
    let tls = addr_of(&r, "websecure");
    served_issuer(tls, "r.renew.test", |i| i.contains("Pebble")).await;
    let first = crate::tls::served_cert(tls, "r.renew.test").await.unwrap();

    pebble.stop().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = name_status(&r, "r.renew.test").await.unwrap();
        if s["last_error"].is_string() {
            assert!(s["next_attempt_in_seconds"].is_u64(), "{s:#}");
            break;
        }
        assert!(Instant::now() < deadline, "no failed renewal shown: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        crate::tls::served_cert(tls, "r.renew.test").await.unwrap(),
        first,
        "the held certificate stops serving while the CA is down"
    );

    pebble.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = crate::tls::served_cert(tls, "r.renew.test").await.unwrap();
        if now != first {
            let (_, x) = x509_parser::parse_x509_certificate(&now).unwrap();
            assert!(x.issuer().to_string().contains("Pebble"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed after the CA came back: {:#}",
            name_status(&r, "r.renew.test").await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = name_status(&r, "r.renew.test").await.unwrap();
    assert!(s["orders"].as_u64() >= Some(2), "{s:#}");
    assert!(s["failures"].as_u64() >= Some(1), "{s:#}");
    r.shutdown().await;
}

/// Traefik's `tls.stores.default.defaultGeneratedCert` from a dynamic file (the script call
/// `tls_default_certificate(#{ resolver, main, sans })`): the resolver orders the name although no
/// router asks for it, and its certificate becomes the one served to names no certificate lists.
#[tokio::test]
async fn a_default_certificate_from_the_resolver() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), ports.0, ports.1);
    let settings = pebble.settings(vec![
        ("http-challenge", "web".to_string()),
        (
            "storage",
            dir.path().join("acme.json").display().to_string(),
        ),
    ]);
    let dynamic = dir.path().join("dynamic");
    std::fs::create_dir(&dynamic).unwrap();
    std::fs::write(
        dynamic.join("tls.yml"),
        "tls:\n  stores:\n    default:\n      defaultGeneratedCert:\n        resolver: le\n        domain:\n          main: default.acme.test\n",
    )
    .unwrap();
    let script = "import \"traefik\" as traefik;\ntraefik::routes(catalog);\n";
    let r = router_with("127.0.0.1", script, ports, &settings, None, Some(dynamic)).await;
    let tls = addr_of(&r, "websecure");
    // Before the order completes the router's self-signed default serves; then Pebble's.
    served_issuer(tls, "anything.test", |i| i.contains("Pebble")).await;
    let der = crate::tls::served_cert(tls, "no-route.test").await.unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = x
        .subject_alternative_name()
        .unwrap()
        .map(|s| format!("{:?}", s.value))
        .unwrap_or_default();
    assert!(sans.contains("default.acme.test"), "{sans}");
    let s = name_status(&r, "default.acme.test").await.unwrap();
    assert_eq!(s["orders"].as_u64(), Some(1), "{s:#}");
    r.shutdown().await;
}
