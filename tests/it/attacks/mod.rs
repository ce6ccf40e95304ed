//! The attack suite: does the edge hold? A raw-socket client sends exact bytes to a real router;
//! a raw-socket backend logs the exact bytes it receives. Every vector of the table
//! (`vectors::table`) asserts what the client got and what the backend saw (exactly one clean
//! request, or nothing), then a normal request on a new connection must get 200 and reach the
//! backend alone (nothing left poisoned on a reused upstream connection).
//!
//! One test per section of the table, so `cargo test --test it attacks` shows which sections
//! hold; each runs all its vectors and fails listing every failing vector with the reason. Tests
//! that need time or special settings (slowloris, `max_connections`, passive health and metrics
//! for client faults) have their own routers. `nginx_calibration` (ignored) replays the same
//! table against nginx configured alike (`tests/attacks-nginx/`).
//!
//! Only 127.0.0.1 is ever contacted; every read, write and loop is bounded.

pub mod backend;
mod judge;
mod nginx;
mod selftest;
mod vectors;
mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::*;
use backend::{RawBackend, Role};
use judge::{Row, Vector};
use wire::{Parsed, Writes};

/// `alice:secret` as htpasswd `{SHA}`.
pub const HTPASSWD_LINE: &str = "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

/// The router under test: see `vectors` for what each route is for.
fn script(backend: SocketAddr, auth: SocketAddr, passive: bool) -> String {
    let health = if passive {
        r#".passive_health(#{ failures: 2, cooldown: "60s" })"#
    } else {
        ""
    };
    format!(
        r#"
let raw = service("raw").servers(["{backend}"]){health};
route("admin").rule(path_prefix("/admin")).priority(100)
    .middlewares([ip_allow_list(["10.0.0.0/8"])]).to(raw);
route("secret").rule(path_prefix("/secret")).priority(100)
    .middlewares([basic_auth(["{HTPASSWD_LINE}"], #{{ header_field: "X-User" }})]).to(raw);
route("api").rule(path_prefix("/api")).priority(100)
    .middlewares([strip_prefix(["/api"])]).to(raw);
route("fa").rule(path_prefix("/fa")).priority(100)
    .middlewares([forward_auth("http://{auth}/auth", #{{ auth_response_headers: ["X-Auth-User"] }})]).to(raw);
// Not in the brief's list: a non-ASCII prefix, to see that its spellings are one too.
route("cafe").rule(path_prefix("/café")).priority(100)
    .middlewares([ip_allow_list(["10.0.0.0/8"])]).to(raw);
route("internal").rule(host("internal.test")).priority(200)
    .middlewares([ip_allow_list(["10.0.0.0/8"])]).to(raw);
route("public").rule(path_prefix("/")).priority(1).to(raw);
"#
    )
}

/// A router with its raw backend and auth server.
pub struct Rig {
    pub backend: RawBackend,
    /// The forward_auth server (kept running).
    pub _auth: RawBackend,
    pub router: TestRouter,
}

impl Rig {
    /// `passive`: the backend's service ejects a server after 2 consecutive failures. The head
    /// limit is `vectors::HEAD_LIMIT`; `tweak` may change more.
    pub async fn start(passive: bool, tweak: impl FnOnce(&mut switchyard::config::Config)) -> Rig {
        let backend = RawBackend::start(Role::App).await;
        let auth = RawBackend::start(Role::Auth).await;
        let text = script(backend.addr, auth.addr, passive);
        let router = TestRouter::start_with(&[("10-attacks.rhai", &text)], |cfg| {
            cfg.settings.max_header_bytes = vectors::HEAD_LIMIT;
            tweak(cfg);
        })
        .await;
        assert!(router.status().ok, "{:?}", router.status());
        Rig {
            backend,
            _auth: auth,
            router,
        }
    }

    pub async fn run(&self, vectors: &[Vector]) -> Vec<Row> {
        judge::run_all(self.router.web, &self.backend, vectors).await
    }
}

fn section(n: u8) -> Vec<Vector> {
    vectors::table()
        .into_iter()
        .filter(|v| v.section == n)
        .collect()
}

async fn run_section(n: u8, title: &str) {
    let rig = Rig::start(false, |_| {}).await;
    let rows = rig.run(&section(n)).await;
    rig.router.shutdown().await;
    judge::report(title, &rows);
}

/// The same table against nginx configured alike (`tests/attacks-nginx/`), printed beside
/// switchyard's results: `cargo test --test it attacks::nginx_calibration -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "calibration against nginx, run by hand (needs /usr/sbin/nginx)"]
async fn nginx_calibration() {
    nginx::calibrate().await;
}

#[test]
fn table_is_well_formed() {
    let t = vectors::table();
    let mut names = std::collections::BTreeSet::new();
    for v in &t {
        assert!(names.insert(v.name.clone()), "duplicate name {:?}", v.name);
        assert!((1..=7).contains(&v.section), "{}", v.name);
        assert!(!v.bytes.is_empty(), "{}", v.name);
    }
    let per: Vec<String> = (1..=7)
        .map(|s| format!("{s}: {}", t.iter().filter(|v| v.section == s).count()))
        .collect();
    println!("{} vectors ({})", t.len(), per.join(", "));
    assert!(t.len() >= 150, "{} vectors", t.len());
}

#[tokio::test]
async fn s1_canonical_path_decides_and_is_forwarded() {
    run_section(1, "1 canonical path").await;
}

#[tokio::test]
async fn s2_ambiguous_paths_are_400() {
    run_section(2, "2 ambiguous paths").await;
}

#[tokio::test]
async fn s3_one_host() {
    run_section(3, "3 one Host").await;
}

#[tokio::test]
async fn s4_router_owned_headers_cannot_be_smuggled() {
    run_section(4, "4 router-owned headers").await;
}

#[tokio::test]
async fn s6_exact_limits() {
    run_section(6, "6 exact limits").await;
}

#[tokio::test]
async fn s7_framing_holds() {
    run_section(7, "7 framing").await;
}

/// Sum of every `switchyard_upstream_errors_total` series.
async fn upstream_errors(admin: SocketAddr) -> f64 {
    let reply = get(admin, "localhost", "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
        .body
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_upstream_errors_total{")
                || l.starts_with("switchyard_upstream_errors_total ")
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .fold(0.0, |a, b| a + b)
}

/// Section 5 with passive health on (2 failures eject the only server for 60 s): every broken
/// upload twice — enough to eject it if they counted —, then normal requests must still get 200
/// and `switchyard_upstream_errors_total` must not have moved.
#[tokio::test]
async fn s5_client_faults_are_not_server_faults() {
    let rig = Rig::start(true, |_| {}).await;
    let before = upstream_errors(rig.router.admin).await;
    let mut vectors = section(5);
    let again: Vec<Vector> = vectors
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.name = format!("{} (again)", v.name);
            v
        })
        .collect();
    vectors.extend(again);
    let rows = rig.run(&vectors).await;
    let mut problems = Vec::new();
    for i in 0..5 {
        let out = wire::exchange(
            rig.router.web,
            &wire::get(&format!("/after/{i}"), &[]),
            Writes::One,
            Duration::ZERO,
        )
        .await;
        if out.status() != Some(200) {
            problems.push(format!(
                "normal request {i} after the broken uploads got {}",
                out.summary()
            ));
        }
    }
    let after = upstream_errors(rig.router.admin).await;
    if after != before {
        problems.push(format!(
            "switchyard_upstream_errors_total moved from {before} to {after}"
        ));
    }
    rig.router.shutdown().await;
    for p in &problems {
        println!("  FAIL {p}");
    }
    let mut rows = rows;
    if !problems.is_empty() {
        rows.push(Row {
            section: 5,
            name: "server not ejected, upstream errors unchanged".into(),
            result: String::new(),
            want: "200 afterwards, upstream errors unchanged".into(),
            verdict: Err(problems.join("; ")),
        });
    }
    judge::report("5 client faults", &rows);
}

/// Reads one response head's status from `s` (at most 5 s).
async fn read_status(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for _ in 0..1000 {
        if let Parsed::Done(resp, _) = wire::parse_response(&buf, false) {
            return Some(resp.status);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            _ => return None,
        }
    }
    None
}

/// `max_connections = 3`: a 4th concurrent connection is closed at once without a response;
/// once one of the three closes, a new connection is served.
#[tokio::test]
async fn s6_max_connections_closes_the_fourth_at_once() {
    let rig = Rig::start(false, |cfg| {
        let mut o = switchyard::proxy::EntrypointOptions::default();
        o.max_connections = 3;
        cfg.settings.entrypoint_options.insert("web".into(), o);
    })
    .await;
    let web = rig.router.web;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(web).await.unwrap();
        wire::write_bounded(&mut s, &wire::get(&format!("/held/{i}"), &[]))
            .await
            .unwrap();
        assert_eq!(read_status(&mut s).await, Some(200), "held connection {i}");
        held.push(s);
    }
    let mark = rig.backend.mark();
    let started = Instant::now();
    let mut fourth = TcpStream::connect(web).await.unwrap();
    let _ = wire::write_bounded(&mut fourth, &wire::get("/fourth", &[])).await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf)).await;
    let took = started.elapsed();
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "the 4th connection got a response: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("the 4th connection was left open for 5 s"),
    }
    assert!(took < Duration::from_secs(1), "closed only after {took:?}");
    assert!(
        rig.backend.since(mark).is_empty(),
        "the refused connection's request reached the backend: {:?}",
        rig.backend.since(mark)
    );
    // The held ones still work.
    wire::write_bounded(&mut held[1], &wire::get("/held/again", &[]))
        .await
        .unwrap();
    assert_eq!(read_status(&mut held[1]).await, Some(200));
    // One closes: a new connection is served (bounded poll while the router notices).
    drop(held.remove(0));
    let mut last = String::new();
    let mut ok = false;
    for _ in 0..40 {
        let out = wire::exchange(
            web,
            &wire::get("/after-close", &[]),
            Writes::One,
            Duration::ZERO,
        )
        .await;
        if out.status() == Some(200) {
            ok = true;
            break;
        }
        last = out.summary();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "no new connection served after one of three closed; last: {last}"
    );
    drop(held);
    rig.router.shutdown().await;
}

/// Normal requests on new connections, every `gap`, `n` times: each status and how long it took.
async fn meanwhile(web: SocketAddr, n: usize, gap: Duration) -> Vec<(Option<u16>, Duration)> {
    let mut got = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let out = wire::exchange(
            web,
            &wire::get(&format!("/meanwhile/{i}"), &[]),
            Writes::One,
            Duration::ZERO,
        )
        .await;
        got.push((out.status(), started.elapsed()));
        tokio::time::sleep(gap).await;
    }
    got
}

/// A head trickled one byte every 250 ms (the header-read timeout is 1 s): the connection is
/// closed within a few seconds, the backend never sees it, and other clients are served
/// meanwhile.
#[tokio::test]
async fn s7_slowloris_head_is_cut_and_others_are_served() {
    let rig = Rig::start(false, |cfg| {
        cfg.settings.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let web = rig.router.web;
    let mark = rig.backend.mark();
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(web).await.unwrap();
        let head = b"GET /slowloris HTTP/1.1\r\nHost: public.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let started = Instant::now();
        let mut got = Vec::new();
        for b in head.iter() {
            if wire::write_bounded(&mut s, &[*b]).await.is_err() {
                return (started.elapsed(), true, got);
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), true, got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        (started.elapsed(), false, got)
    });
    let served = meanwhile(web, 12, Duration::from_millis(200)).await;
    let (took, cut, got) = slow.await.unwrap();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(cut, "the trickled head was never cut off (got {got:?})");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    assert!(
        !got.starts_with("HTTP/1.1 2"),
        "the trickled head was answered: {got:?}"
    );
    let seen = rig.backend.since(mark);
    assert!(
        seen.iter().all(|s| s.line() != "GET /slowloris"),
        "backend saw the slow head: {seen:?}"
    );
    for (i, (status, t)) in served.iter().enumerate() {
        assert_eq!(*status, Some(200), "request {i} meanwhile: {served:?}");
        assert!(*t < Duration::from_secs(2), "request {i} took {t:?}");
    }
    rig.router.shutdown().await;
}

/// One slow upload: head plus 10 of 1000 bytes, then one byte every 200 ms (20 bytes at most);
/// returns how long until the router answered or closed, whether it closed, and what it sent.
async fn slow_upload(web: SocketAddr, path: &str) -> (Duration, bool, String) {
    let mut s = TcpStream::connect(web).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: public.test\r\nContent-Length: 1000\r\n\r\n0123456789"
    );
    let _ = wire::write_bounded(&mut s, head.as_bytes()).await;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    for _ in 0..20 {
        if wire::write_bounded(&mut s, b"x").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let first = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (started.elapsed(), closed, first)
}

/// Two bodies trickled one byte every 200 ms, with a 2 s upstream response timeout and passive
/// health on (2 failures eject the only server for 60 s): the router does not crash, and other
/// clients are served meanwhile and afterwards — a client that is slow to send its body must
/// not get the server ejected for everyone. What the slow clients got and the movement of
/// `switchyard_upstream_errors_total` are printed.
#[tokio::test]
async fn s7_slowloris_body_does_not_stop_others() {
    let rig = Rig::start(true, |cfg| {
        cfg.settings.upstream_response_timeout = Duration::from_secs(2);
    })
    .await;
    let web = rig.router.web;
    let before = upstream_errors(rig.router.admin).await;
    let a = tokio::spawn(async move { slow_upload(web, "/slow-body/a").await });
    let b = tokio::spawn(async move { slow_upload(web, "/slow-body/b").await });
    let served = meanwhile(web, 12, Duration::from_millis(200)).await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let after = upstream_errors(rig.router.admin).await;
    println!("slow bodies: {a:?}, {b:?}; switchyard_upstream_errors_total {before} -> {after}");
    let healthy = judge::health(web, &rig.backend, 9999).await;
    rig.router.shutdown().await;
    let late: Vec<String> = served
        .iter()
        .enumerate()
        .filter(|(_, (status, t))| *status != Some(200) || *t >= Duration::from_secs(2))
        .map(|(i, (status, t))| format!("request {i}: {status:?} after {t:?}"))
        .collect();
    assert!(
        late.is_empty() && healthy.is_ok(),
        "other clients were not served while/after two slow uploads \
         (upstream errors {before} -> {after}; slow clients got {:?} / {:?}): {late:?}; afterwards: {healthy:?}",
        a.2,
        b.2
    );
}
