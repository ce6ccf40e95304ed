//! HTTP/2 abuse at the frame level against a real router: a Python client
//! (`clients/h2_attack.py`, PyPI `h2`/`hyperframe` over a raw socket) writes the frames, on the
//! cleartext h2c entrypoint or over TLS with ALPN h2 (the self-signed default certificate); a
//! counting loopback backend shows how much of the abuse reached a server; a fresh client is
//! served right afterwards. Each attack is bounded in count and time (the client stops after
//! 10 s of sending; the test waits 30 s at most for it).
//!
//! What guards each (the HTTP/2 builder in `src/proxy/listener.rs`): rapid reset —
//! `max_pending_accept_reset_streams`; MadeYouReset — `max_local_error_reset_streams`;
//! CONTINUATION flood and oversized header lists — `max_header_list_size` (h2 also caps the
//! CONTINUATION frames of one header block by it); the stream cap — `max_concurrent_streams`.
//! Each test fails when its guard is taken out of the builder.
//!
//! Not covered: a client that resets each stream only after the router has taken it up and
//! sent it on (`h2_attack.py --batch 1 --lag 5 rapid-reset …`) is never cut off — the
//! pending-reset budget counts only streams reset before they were accepted, and a reset frees
//! its slot under the stream cap at once — so each such request reaches the backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// GOAWAY/RST_STREAM error codes (RFC 9113 section 7), as the client reports them.
const PROTOCOL_ERROR: &str = "1";
const ENHANCE_YOUR_CALM: &str = "11";

/// A backend that counts the requests it gets and answers each after `delay`.
struct Counting {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Counting {
    async fn start(delay: Duration) -> Counting {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        c.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Counting { addr, count }
    }

    fn seen(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Where an attack goes: the h2c entrypoint, or the TLS one (ALPN h2).
#[derive(Clone, Copy, PartialEq)]
enum Wire {
    H2c,
    Tls,
}

/// A router routing everything to `backend`: `web` takes h2c (with extra `web` options), and
/// with `Wire::Tls` a TLS entrypoint `websecure` serves the self-signed default certificate.
struct Rig {
    router: TestRouter,
    addr: SocketAddr,
    wire: Wire,
}

impl Rig {
    async fn start(backend: &Counting, wire: Wire, options: &[(&str, &str)]) -> Rig {
        let entrypoints = if wire == Wire::Tls {
            "[\"web\", \"websecure\"]"
        } else {
            "[\"web\"]"
        };
        let script = format!(
            "route(\"all\").rule(\"PathPrefix(`/`)\").entrypoints({entrypoints})\
             .to(service(\"b\").servers([\"{}\"]));\n",
            backend.addr
        );
        let options: Vec<(String, String)> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let router = TestRouter::start_with(&[("10-test.rhai", &script)], move |cfg| {
            let mut all: Vec<(&str, &str)> = vec![("h2c", "true")];
            all.extend(options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            crate::tls::web_options(cfg, &all);
            if wire == Wire::Tls {
                crate::tls::entrypoint(cfg, "websecure", &["tls"]);
            }
        })
        .await;
        let addr = match wire {
            Wire::H2c => router.web,
            Wire::Tls => router.entrypoint("websecure"),
        };
        Rig { router, addr, wire }
    }

    /// Runs `h2_attack.py [--tls] MODE 127.0.0.1 PORT ARGS…` and returns its JSON verdict.
    async fn attack(&self, mode: &str, args: &[&str]) -> Value {
        self.attack_with(&[], mode, args).await
    }

    /// The same with client options (`--batch K`, `--lag L`) before the mode.
    async fn attack_with(&self, options: &[&str], mode: &str, args: &[&str]) -> Value {
        let python = tools_python();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/h2_attack.py");
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(script);
        if self.wire == Wire::Tls {
            cmd.arg("--tls");
        }
        cmd.args(options);
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            cmd.arg(mode)
                .arg("127.0.0.1")
                .arg(self.addr.port().to_string())
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the attack client took longer than 30 s")
        .expect("running the attack client");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{mode}: no verdict ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        eprintln!("{options:?} {mode} {args:?}: {v}");
        if self.wire == Wire::Tls {
            assert_eq!(v["alpn"], "h2", "{mode} over TLS: {v}");
        }
        v
    }

    /// A well-behaved HTTP/2 client (curl, on a new connection) is still served.
    async fn still_served(&self) {
        let url = match self.wire {
            Wire::H2c => format!("http://127.0.0.1:{}/after", self.addr.port()),
            Wire::Tls => format!("https://127.0.0.1:{}/after", self.addr.port()),
        };
        let how = match self.wire {
            Wire::H2c => "--http2-prior-knowledge",
            Wire::Tls => "--http2",
        };
        let out = tokio::process::Command::new("curl")
            .args(["-sSk", "--max-time", "5", how, "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{http_version}", &url])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 2",
            "a fresh HTTP/2 client right after the attack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn shutdown(self) {
        self.router.shutdown().await;
    }
}

/// Streams the router read before it stopped the client (the client waits for a PING answer
/// after each write, so these were taken in, not parked in socket buffers), or for the
/// CONTINUATION flood the bytes written before the connection broke.
fn sent(v: &Value) -> u64 {
    v["sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("no `sent`: {v}"))
}

/// The connection was ended by the server (a GOAWAY, or the socket closed under the client).
fn ended(v: &Value) -> bool {
    v["goaway"].is_string() || v["closed"] == true
}

/// Rapid reset (CVE-2023-44487): 5000 streams, each HEADERS then RST_STREAM(CANCEL) at once,
/// fifty to a write. The router must end the connection after a few dozen, with GOAWAY
/// ENHANCE_YOUR_CALM (or at least by closing it early), few of them may reach the backend, and
/// a fresh client is served.
async fn rapid_reset(wire: Wire) {
    let backend = Counting::start(Duration::from_millis(20)).await;
    let rig = Rig::start(&backend, wire, &[]).await;
    let v = rig.attack("rapid-reset", &["5000"]).await;
    assert!(
        v["goaway"] == ENHANCE_YOUR_CALM || (v["closed"] == true && sent(&v) <= 500),
        "the connection must end early, with ENHANCE_YOUR_CALM: {v}"
    );
    assert!(
        sent(&v) <= 500,
        "cut off long before the 5000 streams were sent: {v}"
    );
    // Settle: requests still on their way to the backend are counted too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reached = backend.seen();
    eprintln!("rapid reset: {reached} requests reached the backend");
    assert!(
        reached <= 100,
        "{reached} of {} reset streams reached the backend: {v}",
        sent(&v)
    );
    rig.still_served().await;
    rig.shutdown().await;
}

#[tokio::test]
async fn rapid_reset_ends_the_connection_and_spares_the_backend() {
    rapid_reset(Wire::H2c).await;
}

#[tokio::test]
async fn rapid_reset_over_tls_ends_the_connection_and_spares_the_backend() {
    rapid_reset(Wire::Tls).await;
}

/// MadeYouReset (CVE-2025-8671): well-formed requests, each followed by a frame that makes the
/// router reset the stream itself (the client never sends RST_STREAM), 5000 of them: packed
/// fifty to a write, and paced (one stream per write, its offending frame one stream later, so
/// the router has taken each request up first). The router resets them (RST_STREAM seen) and
/// then ends the connection with ENHANCE_YOUR_CALM once its local-reset budget (200 per
/// connection) is spent; the backend sees at most that many, and the next client is served.
#[tokio::test]
async fn made_you_reset_ends_the_connection() {
    let backend = Counting::start(Duration::from_millis(20)).await;
    let rig = Rig::start(&backend, Wire::H2c, &[]).await;
    let runs: [(&[&str], &str); 3] = [
        (&[], "window-overflow"),
        (&[], "content-length"),
        (&["--batch", "1", "--lag", "1"], "window-overflow"),
    ];
    for (options, how) in runs {
        let before = backend.seen();
        let v = rig
            .attack_with(options, "made-you-reset", &["5000", how])
            .await;
        assert!(
            v["resets"].as_u64().unwrap() > 0,
            "{how} {options:?}: the router resets the streams itself: {v}"
        );
        assert!(
            v["goaway"] == ENHANCE_YOUR_CALM || (v["closed"] == true && sent(&v) <= 400),
            "{how} {options:?}: the connection must end with ENHANCE_YOUR_CALM: {v}"
        );
        assert!(
            sent(&v) <= 400,
            "{how} {options:?}: cut off long before the 5000 streams were sent: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reached = backend.seen() - before;
        eprintln!("{how} {options:?}: {reached} requests reached the backend");
        assert!(
            reached <= 250,
            "{how} {options:?}: {reached} requests reached the backend: {v}"
        );
        rig.still_served().await;
    }
    // h2 takes a zero WINDOW_UPDATE increment as a connection error: the first one ends it.
    let v = rig.attack("made-you-reset", &["5000", "window-zero"]).await;
    assert_eq!(v["goaway"], PROTOCOL_ERROR, "window-zero: {v}");
    assert_eq!(
        v["last_stream_id"], 1,
        "window-zero: the first stream ends it: {v}"
    );
    rig.still_served().await;
    rig.shutdown().await;
}

/// CONTINUATION flood (CVE-2024-27316 class): one HEADERS without END_HEADERS, then 8 KB
/// CONTINUATION frames, up to 10 MB. The router must cut the connection after about its
/// 64 KiB header list limit (GOAWAY or close) rather than buffer on, forward nothing, and
/// serve the next client.
#[tokio::test]
async fn a_continuation_flood_is_cut_off_early() {
    let backend = Counting::start(Duration::ZERO).await;
    let rig = Rig::start(&backend, Wire::H2c, &[]).await;
    let v = rig.attack("continuation", &["10000000"]).await;
    assert!(ended(&v), "the connection must end: {v}");
    assert!(
        sent(&v) < 1_000_000,
        "{} bytes of CONTINUATION were taken: {v}",
        sent(&v)
    );
    assert_eq!(backend.seen(), 0, "{v}");
    rig.still_served().await;
    rig.shutdown().await;
}

/// A header list of ~100 KB (over the 64 KiB limit) is refused — 431, a stream reset or a
/// GOAWAY, never forwarded — while one of ~50 KB on the same router is served.
#[tokio::test]
async fn an_oversized_header_list_is_refused() {
    let backend = Counting::start(Duration::ZERO).await;
    let rig = Rig::start(&backend, Wire::H2c, &[]).await;
    let v = rig.attack("big-headers", &["100000"]).await;
    assert!(
        v["status"] == "431" || v["reset"].is_string() || v["goaway"].is_string(),
        "a 100 KB header list must be refused: {v}"
    );
    assert_eq!(backend.seen(), 0, "{v}");
    let v = rig.attack("big-headers", &["50000"]).await;
    assert_eq!(
        v["status"], "200",
        "a 50 KB header list is within the limit: {v}"
    );
    assert_eq!(backend.seen(), 1, "{v}");
    rig.still_served().await;
    rig.shutdown().await;
}

/// SETTINGS_MAX_CONCURRENT_STREAMS is announced (250 by default, the configured number when
/// set), and streams opened past it at once are refused with REFUSED_STREAM, not queued.
#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let backend = Counting::start(Duration::from_millis(500)).await;
    let rig = Rig::start(
        &backend,
        Wire::H2c,
        &[("http2.max-concurrent-streams", "5")],
    )
    .await;
    let v = rig.attack("streams", &["12", "/slow"]).await;
    assert_eq!(v["max_concurrent_streams"], 5, "announced in SETTINGS: {v}");
    assert_eq!(v["responses"], 5, "5 of 12 streams served: {v}");
    assert_eq!(v["refused"], 7, "the other 7 refused (REFUSED_STREAM): {v}");
    assert_eq!(backend.seen(), 5, "{v}");
    rig.still_served().await;
    rig.shutdown().await;

    let backend = Counting::start(Duration::from_millis(500)).await;
    let rig = Rig::start(&backend, Wire::H2c, &[]).await;
    let v = rig.attack("streams", &["260", "/slow"]).await;
    assert_eq!(v["max_concurrent_streams"], 250, "the default: {v}");
    assert_eq!(v["responses"], 250, "{v}");
    assert_eq!(v["refused"], 10, "{v}");
    assert!(v["goaway"].is_null(), "refusals alone do not end it: {v}");
    assert_eq!(backend.seen(), 250, "{v}");
    rig.shutdown().await;
}
