//! Hot reload: edits, broken edits, deletions and editor-style saves while clients keep sending;
//! build errors as `/api/scripts` shows them; runaway scripts; forced rebuilds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard::control::BuildStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::*;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET that reports failures instead of panicking.
async fn try_get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", "reload.test")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out after 10 s".to_string())?
}

/// What the load client saw for one request.
#[derive(Debug)]
struct Seen {
    n: usize,
    path: &'static str,
    keep_alive: bool,
    /// The test's phase once the answer was complete.
    phase: usize,
    outcome: Result<(u16, String), String>,
}

/// A client sending GETs in a loop, alternating a kept-alive connection with fresh ones, and `/`
/// (script 10-a) with `/b` (script 20-b).
struct Load {
    stop: Arc<AtomicBool>,
    done: watch::Receiver<usize>,
    handle: JoinHandle<Vec<Seen>>,
}

const MAX_REQUESTS: usize = 3000;
const MAX_TIME: Duration = Duration::from_secs(30);

impl Load {
    fn start(addr: SocketAddr, phase: Arc<AtomicUsize>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = watch::channel(0usize);
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let pooled = http_client();
            let started = Instant::now();
            // Paces the load so the request budget outlasts the test; not a wait for anything.
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            let mut seen = Vec::new();
            for n in 0..MAX_REQUESTS {
                if s.load(SeqCst) || started.elapsed() > MAX_TIME {
                    break;
                }
                pace.tick().await;
                let path = if n % 3 == 2 { "/b" } else { "/" };
                let keep_alive = n % 2 == 0;
                let outcome = if keep_alive {
                    try_get(&pooled, addr, path).await
                } else {
                    try_get(&http_client(), addr, path).await
                };
                seen.push(Seen {
                    n,
                    path,
                    keep_alive,
                    phase: phase.load(SeqCst),
                    outcome,
                });
                done_tx.send_replace(n + 1);
            }
            seen
        });
        Load { stop, done, handle }
    }

    /// Waits until the client completed `more` further requests.
    async fn progress(&mut self, more: usize) {
        let target = *self.done.borrow() + more;
        let reached = tokio::time::timeout(
            Duration::from_secs(10),
            self.done.wait_for(|d| *d >= target),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "the load client stopped or stalled before {target} requests (at {})",
            *self.done.borrow()
        );
    }

    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, SeqCst);
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("load client did not stop")
            .expect("load client panicked")
    }
}

/// Waits for a build attempt after `before`, however long a runaway script takes (at most 30 s).
async fn wait_build(r: &TestRouter, before: u64) -> BuildStatus {
    let mut rx = r.router().control().status();
    let status = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.attempt > before))
        .await
        .expect("no build within 30 s")
        .expect("control loop gone")
        .clone();
    status
}

fn script_a(body: &str) -> String {
    format!("route(\"a\").rule(path(\"/\")).to(respond(200, \"{body}\"));\n")
}

const SCRIPT_B: &str = "route(\"b\").rule(path(\"/b\")).to(respond(200, \"b\"));\n";

/// The test phase each step sets before touching a file, and the newest version of `/` it allows.
const EDIT_V2: usize = 1;
const SYNTAX_ERROR: usize = 2;
const RUNTIME_ERROR: usize = 3;
const FIX_V3: usize = 4;
const DELETE_B: usize = 5;
const RENAME_V4: usize = 6;
const NEWEST_VERSION: [usize; 7] = [1, 2, 2, 2, 3, 3, 4];

fn version_of(body: &str) -> Option<usize> {
    match body {
        "v1" => Some(1),
        "v2" => Some(2),
        "v3" => Some(3),
        "v4" => Some(4),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_break_fix_delete_under_load() {
    let r = TestRouter::start_with(
        &[("10-a.rhai", &script_a("v1")), ("20-b.rhai", SCRIPT_B)],
        |_| {},
    )
    .await;
    assert!(r.status().ok, "{:?}", r.status());
    assert_eq!(get(r.web, "x", "/").await.body, "v1");
    assert_eq!(get(r.web, "x", "/b").await.body, "b");
    let dir = r.dir.path().display().to_string();
    let a_file = format!("{dir}/10-a.rhai");

    let phase = Arc::new(AtomicUsize::new(0));
    let mut load = Load::start(r.web, phase.clone());
    load.progress(20).await;

    // (a) An edit goes live.
    phase.store(EDIT_V2, SeqCst);
    let st = r.write_script("10-a.rhai", &script_a("v2")).await;
    assert!(st.ok, "{st:?}");
    assert_eq!(get(r.web, "x", "/").await.body, "v2");
    load.progress(20).await;

    // (b) A syntax error is reported with file:line:col and the last good table keeps serving.
    phase.store(SYNTAX_ERROR, SeqCst);
    let broken = format!("{}\n    let broken = ;\n", script_a("broken-syntax"));
    let st = r.write_script("10-a.rhai", &broken).await;
    assert!(!st.ok, "{st:?}");
    assert_eq!(
        st.live_attempt,
        st.attempt - 1,
        "the failed attempt must not be live: {st:?}"
    );
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    let e = &st.errors[0];
    assert_eq!(e.file, a_file);
    assert_eq!(
        (e.line, e.column),
        (3, "    let broken = ;".find(';').unwrap() + 1),
        "{e:?}"
    );
    assert!(!e.message.is_empty(), "{e:?}");
    assert_eq!(e.source_line.as_deref(), Some("    let broken = ;"));
    let api = get(r.admin, "localhost", "/api/scripts").await.json();
    assert_eq!(api["ok"], false, "{api}");
    assert_eq!(api["attempt"], st.attempt, "{api}");
    let api_err = &api["errors"][0];
    assert_eq!(api_err["file"], a_file.as_str(), "{api}");
    assert_eq!(api_err["line"], e.line, "{api}");
    assert_eq!(api_err["column"], e.column, "{api}");
    assert_eq!(api_err["message"], e.message.as_str(), "{api}");
    assert_eq!(get(r.web, "x", "/").await.body, "v2");
    load.progress(20).await;

    // (c) A runtime error in a later statement: no partial table either.
    phase.store(RUNTIME_ERROR, SeqCst);
    let bad_call = "route(\"x\").rule(host(\"a\")).to(service(\"s\").servers([\"nope\"]));";
    let st = r
        .write_script(
            "10-a.rhai",
            &format!("{}{bad_call}\n", script_a("broken-runtime")),
        )
        .await;
    assert!(!st.ok, "{st:?}");
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    let e = &st.errors[0];
    assert_eq!(e.file, a_file);
    assert_eq!(
        (e.line, e.column),
        (2, bad_call.find("servers").unwrap() + 1),
        "{e:?}"
    );
    assert!(e.message.contains("missing port"), "{e:?}");
    assert_eq!(get(r.web, "x", "/").await.body, "v2");
    assert_eq!(get(r.web, "x", "/b").await.body, "b");
    load.progress(20).await;

    // (d) The fix goes live and clears the error.
    phase.store(FIX_V3, SeqCst);
    let st = r.write_script("10-a.rhai", &script_a("v3")).await;
    assert!(st.ok && st.errors.is_empty(), "{st:?}");
    assert_eq!(get(r.web, "x", "/").await.body, "v3");
    assert_eq!(
        get(r.admin, "localhost", "/api/scripts").await.json()["ok"],
        true
    );
    load.progress(20).await;

    // (e) Deleting a script removes its routes.
    phase.store(DELETE_B, SeqCst);
    let before = r.status().attempt;
    std::fs::remove_file(r.script_path("20-b.rhai")).unwrap();
    let st = wait_build(&r, before).await;
    assert!(st.ok, "{st:?}");
    assert_eq!(st.files, vec![a_file.clone()]);
    assert_eq!(st.routes, 1);
    assert_eq!(get(r.web, "x", "/b").await.status, 404);
    assert_eq!(get(r.web, "x", "/").await.body, "v3");
    load.progress(20).await;

    // (f) An editor's atomic save: write a hidden temp file, rename it over the script.
    phase.store(RENAME_V4, SeqCst);
    let before = r.status().attempt;
    let tmp = r.script_path(".10-a.rhai.tmp");
    std::fs::write(&tmp, script_a("v4")).unwrap();
    std::fs::rename(&tmp, r.script_path("10-a.rhai")).unwrap();
    let st = wait_build(&r, before).await;
    assert!(st.ok, "{st:?}");
    assert_eq!(
        st.files,
        vec![a_file.clone()],
        "the temp file is not a script"
    );
    assert_eq!(get(r.web, "x", "/").await.body, "v4");
    load.progress(20).await;

    let seen = load.finish().await;
    r.shutdown().await;

    let failures: Vec<&Seen> = seen.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        seen.len(),
        &failures[..failures.len().min(5)]
    );
    let mut newest = 0;
    let mut b_gone = false;
    let mut versions_seen = [0usize; 5];
    for s in &seen {
        let (status, body) = s.outcome.as_ref().unwrap();
        match s.path {
            "/" => {
                assert_eq!(*status, 200, "{s:?}");
                let v = version_of(body)
                    .unwrap_or_else(|| panic!("a body that was never valid: {s:?}"));
                assert!(
                    v <= NEWEST_VERSION[s.phase],
                    "v{v} answered before it was written: {s:?}"
                );
                assert!(
                    v >= newest,
                    "v{v} after v{newest}: versions went backwards: {s:?}"
                );
                newest = v;
                versions_seen[v] += 1;
            }
            _ => match (*status, body.as_str()) {
                (200, "b") => assert!(!b_gone, "/b came back after it was deleted: {s:?}"),
                (404, _) => {
                    assert!(
                        s.phase >= DELETE_B,
                        "/b answered 404 before 20-b was deleted: {s:?}"
                    );
                    b_gone = true;
                }
                _ => panic!("unexpected answer for /b: {s:?}"),
            },
        }
    }
    assert!(
        versions_seen[1..].iter().all(|&c| c > 0),
        "every version was served under load: {versions_seen:?}"
    );
    assert!(b_gone, "the load client never saw /b deleted");
    assert_eq!(newest, 4);
    for keep_alive in [true, false] {
        let kinds: Vec<usize> = seen
            .iter()
            .filter(|s| s.keep_alive == keep_alive && s.path == "/")
            .filter_map(|s| version_of(&s.outcome.as_ref().unwrap().1))
            .collect();
        assert!(
            kinds.first() == Some(&1) && kinds.last() == Some(&4),
            "keep_alive={keep_alive}: saw {:?}…{:?}",
            kinds.first(),
            kinds.last()
        );
    }
    assert!(
        seen.last().is_some_and(|s| s.n + 1 == seen.len()),
        "requests recorded in order"
    );
}

#[tokio::test]
async fn duplicate_route_is_an_error_pointing_at_second_declaration() {
    let r = TestRouter::start_with(
        &[(
            "10-a.rhai",
            "route(\"same\").rule(path(\"/\")).to(respond(200, \"first\"));\n",
        )],
        |_| {},
    )
    .await;
    assert_eq!(get(r.web, "x", "/").await.body, "first");
    let dir = r.dir.path().display().to_string();

    let st = r
        .write_script(
            "20-b.rhai",
            "// another file\n  route(\"same\").rule(path(\"/b\")).to(respond(200, \"second\"));\n",
        )
        .await;
    assert!(!st.ok, "{st:?}");
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    let e = &st.errors[0];
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        (format!("{dir}/20-b.rhai").as_str(), 2, 3),
        "{e:?}"
    );
    assert!(
        e.message.contains(&format!("{dir}/10-a.rhai:1:1")),
        "names the first declaration: {e:?}"
    );
    assert!(e.message.contains("\"same\""), "{e:?}");

    assert_eq!(get(r.web, "x", "/").await.body, "first");
    assert_eq!(
        get(r.web, "x", "/b").await.status,
        404,
        "nothing of the failed build is live"
    );
    let routes = get(r.admin, "localhost", "/api/routes").await.json();
    assert_eq!(
        routes["routes"].as_array().map(Vec::len),
        Some(1),
        "{routes}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_runaway_build() {
    let r =
        TestRouter::start("route(\"r\").rule(path_prefix(\"/\")).to(respond(200, \"good\"));\n")
            .await;
    assert_eq!(get(r.web, "x", "/").await.body, "good");
    let before = r.status().attempt;
    let dir = r.dir.path().display().to_string();

    std::fs::write(
        r.script_path("10-test.rhai"),
        "route(\"r\").rule(path_prefix(\"/\")).to(respond(200, \"never\"));\nloop { }\n",
    )
    .unwrap();
    // While the runaway build spins, requests keep getting the previous table.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = 0;
    while r.status().attempt == before {
        assert!(Instant::now() < deadline, "the runaway build never ended");
        assert!(served < 100_000, "the runaway build never ended");
        assert_eq!(get(r.web, "x", "/").await.body, "good");
        served += 1;
    }
    let st = wait_build(&r, before).await;
    assert!(!st.ok, "{st:?}");
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    let e = &st.errors[0];
    assert_eq!(
        (e.file.as_str(), e.line),
        (format!("{dir}/10-test.rhai").as_str(), 2),
        "{e:?}"
    );
    assert!(
        e.message.contains("operations budget") || e.message.contains("time budget"),
        "{e:?}"
    );
    assert_eq!(get(r.web, "x", "/").await.body, "good");
    assert!(served > 0);

    // The router is not stuck: a fix still goes live.
    let st = r
        .write_script(
            "10-test.rhai",
            "route(\"r\").rule(path_prefix(\"/\")).to(respond(200, \"fixed\"));\n",
        )
        .await;
    assert!(st.ok, "{st:?}");
    assert_eq!(get(r.web, "x", "/").await.body, "fixed");
    r.shutdown().await;
}

#[tokio::test]
async fn sighup_and_explicit_reload() {
    let r = TestRouter::start("route(\"r\").rule(path(\"/\")).to(respond(200, \"same\"));\n").await;
    let first = r.status();
    assert!(
        first.ok && first.attempt == 1 && first.live_attempt == 1,
        "{first:?}"
    );

    let mut rx = r.router().control().status();
    for expected in [2, 3] {
        let before = rx.borrow_and_update().attempt;
        r.router().reload();
        let st = wait_attempt(&mut rx, before).await;
        assert_eq!(st.attempt, expected, "{st:?}");
        assert!(st.ok, "{st:?}");
        assert_eq!(
            st.live_attempt, expected,
            "a forced rebuild makes a new live table: {st:?}"
        );
        let api = get(r.admin, "localhost", "/api/scripts").await.json();
        assert_eq!(api["attempt"], expected, "{api}");
        assert_eq!(get(r.web, "x", "/").await.body, "same");
    }
    r.shutdown().await;
}
