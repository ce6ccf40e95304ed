//! Live recording (`run --record`, `/api/record*`): what the running router writes, and that a
//! replay of the file with the same scripts decides every request as the live router did.

use std::path::{Path, PathBuf};

use switchyard::catalog::Catalog;
use switchyard::proxy::dry::Outcome;
use switchyard::recording::format::{self as record, Clock, RecordedRequest, REDACTED};
use switchyard::recording::recorder::{rotated_name, Scope};
use switchyard::replay::Session;
use switchyard::script::ScriptsOrigin;

use crate::support::{get, send, servers, Backend, TestRouter};

fn load(path: &Path) -> Vec<RecordedRequest> {
    let rec = record::load(path).unwrap();
    assert!(rec.errors.is_empty(), "unreadable lines: {:?}", rec.errors);
    rec.requests
}

/// The whoami echo's request line: `GET /path HTTP/1.1`.
fn echoed_target(body: &str) -> String {
    body.lines()
        .find(|l| l.ends_with(" HTTP/1.1"))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string()
}

async fn record_status(tr: &TestRouter) -> serde_json::Value {
    get(tr.admin, "localhost", "/api/record").await.json()
}

#[tokio::test]
async fn a_recorded_run_replays_to_the_same_routes_servers_and_paths() {
    let backends = [
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];
    let all: Vec<&Backend> = backends.iter().collect();
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("api").rule("Host(`app.test`) && PathPrefix(`/api`)").middlewares([strip_prefix("/api")]).to(app);
        route("old").rule("Host(`app.test`) && Path(`/old`)").to(redirect("/new", false));
        route("staff").rule(host("staff.test")).middlewares([basic_auth(["u:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M="])]).to(app);
        route("home").rule(host("app.test")).to(app);
        "#,
        s = servers(&all)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.jsonl");
    let f = file.clone();
    let tr = TestRouter::start_with(&[("10-test.rhai", &script)], move |cfg| {
        cfg.record.file = Some(f);
    })
    .await;
    assert_eq!(record_status(&tr).await["state"], "on");

    // (host, path, expected status); backend replies are kept to compare with the recording.
    let plan: &[(&str, &str, u16)] = &[
        ("app.test", "/api/users?page=2", 200),
        ("app.test", "/", 200),
        ("app.test", "/old", 302),
        ("nothing.test", "/x", 404),
        ("staff.test", "/", 401),
        ("app.test", "/api/v1/items", 200),
        ("app.test", "/about", 200),
        ("app.test", "/api", 200),
    ];
    let mut replies = Vec::new();
    for (host, path, status) in plan {
        let r = get(tr.web, host, path).await;
        assert_eq!(r.status.as_u16(), *status, "{host}{path}: {}", r.body);
        replies.push(r);
    }
    let stopped = send(tr.admin, "POST", "localhost", "/api/record/stop", &[], "").await;
    assert_eq!(stopped.json()["state"], "off");
    assert_eq!(stopped.json()["recorded"], plan.len());

    let recorded = load(&file);
    assert_eq!(recorded.len(), plan.len());
    let session = Session::new(
        ScriptsOrigin::Dir(tr.dir.path().to_path_buf()),
        Catalog::default(),
        switchyard::script::BuildEnv::new(vec!["web".into()], Some(tr.admin)),
        switchyard::proxy::Settings::default(),
    )
    .unwrap_or_else(|e| panic!("session: {e:?}"));
    let mut clock = Clock::new();
    let mut servers_seen = std::collections::BTreeSet::new();
    for (i, (req, reply)) in recorded.iter().zip(&replies).enumerate() {
        assert_eq!(req.id, i as u64 + 1);
        assert_eq!((req.host.as_str(), req.target()), {
            let (h, p, _) = plan[i];
            (h, p.to_string())
        });
        let live = req.outcome.clone().unwrap();
        assert_eq!(live.status, reply.status.as_u16(), "request {}", req.id);
        let decision = session.decide(req, &mut clock).await.unwrap();
        assert_eq!(decision.route, live.route, "route of {}", req.line());
        match &decision.outcome {
            Outcome::Forward {
                service,
                server,
                path,
                ..
            } => {
                assert_eq!(
                    Some(server),
                    live.server.as_ref(),
                    "server of {}",
                    req.line()
                );
                assert_eq!(Some(service), live.service.as_ref());
                assert_eq!(Some(path), live.upstream_path.as_ref());
                // ... and what the backend itself saw.
                let backend = backends
                    .iter()
                    .find(|b| b.addr.to_string() == *server)
                    .unwrap();
                assert_eq!(reply.backend(), Some(backend.name.as_str()));
                assert_eq!(&echoed_target(&reply.body), path, "{}", reply.body);
                servers_seen.insert(server.clone());
            }
            Outcome::Answer { status, .. } => {
                assert_eq!(*status, live.status, "answer to {}", req.line());
                assert_eq!(live.server, None);
                assert_eq!(reply.backend(), None);
            }
        }
    }
    assert_eq!(servers_seen.len(), 3, "round robin used every server");
    let no_route = &recorded[3];
    assert_eq!(no_route.outcome.as_ref().unwrap().route, None);
    assert_eq!(
        recorded[0]
            .outcome
            .as_ref()
            .unwrap()
            .upstream_path
            .as_deref(),
        Some("/users?page=2")
    );
    tr.shutdown().await;
}

/// A router with one catch-all route to a whoami backend, recording from boot into a file in
/// a tempdir; `tweak` adjusts the recording settings.
struct RecordingRouter {
    tr: TestRouter,
    file: PathBuf,
    _dir: tempfile::TempDir,
    _backend: Backend,
}

async fn recording_router(
    tweak: impl FnOnce(&mut switchyard::recording::recorder::RecordConfig) + Send + 'static,
) -> RecordingRouter {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.jsonl");
    let f = file.clone();
    let script = format!(
        r#"route("a").rule(path_prefix("/")).to(service("a").servers({}));"#,
        servers(&[&backend])
    );
    let tr = TestRouter::start_with(&[("10-test.rhai", &script)], move |cfg| {
        cfg.record.file = Some(f);
        tweak(&mut cfg.record);
    })
    .await;
    RecordingRouter {
        tr,
        file,
        _dir: dir,
        _backend: backend,
    }
}

async fn recorded_headers(redact: Option<Vec<String>>) -> RecordedRequest {
    let RecordingRouter {
        tr,
        file,
        _dir,
        _backend,
    } = recording_router(move |rec| {
        if let Some(r) = redact {
            rec.redact = r;
        }
    })
    .await;
    let r = send(
        tr.web,
        "GET",
        "a.test",
        "/",
        &[
            ("authorization", "Bearer secret"),
            ("cookie", "sid=1"),
            ("x-token", "t0k"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    tr.router().recorder.stop();
    let mut recs = load(&file);
    tr.shutdown().await;
    recs.remove(0)
}

#[tokio::test]
async fn secrets_are_redacted_by_default_and_the_list_is_configurable() {
    let rec = recorded_headers(None).await;
    assert_eq!(rec.header("authorization"), Some(REDACTED));
    assert_eq!(rec.header("cookie"), Some(REDACTED));
    assert_eq!(rec.header("x-token"), Some("t0k"));

    let rec = recorded_headers(Some(vec![])).await;
    assert_eq!(rec.header("authorization"), Some("Bearer secret"));
    assert_eq!(rec.header("cookie"), Some("sid=1"));

    let custom = switchyard::recording::recorder::parse_redact("X-Token");
    let rec = recorded_headers(Some(custom)).await;
    assert_eq!(rec.header("x-token"), Some(REDACTED));
    assert_eq!(rec.header("authorization"), Some("Bearer secret"));
}

#[tokio::test]
async fn the_file_rotates_past_max_size_keeping_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rot.jsonl");
    let f = file.clone();
    let tr = TestRouter::start_with(
        &[(
            "10-test.rhai",
            r#"route("r").rule(path_prefix("/")).to(respond(200, "ok"));"#,
        )],
        move |cfg| {
            cfg.record.file = Some(f);
            cfg.record.max_size = 1024;
            cfg.record.keep = 2;
        },
    )
    .await;
    for i in 0..40 {
        assert_eq!(get(tr.web, "r.test", &format!("/{i}")).await.status, 200);
    }
    let status = tr.router().recorder.stop();
    assert_eq!(status.recorded, 40);
    let mut lines = 0;
    for f in [file.clone(), rotated_name(&file, 1), rotated_name(&file, 2)] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.len() <= 1024,
            "{} has {} bytes",
            f.display(),
            text.len()
        );
        lines += load(&f).len();
    }
    assert!(
        !rotated_name(&file, 3).exists(),
        "only 2 rotated files kept"
    );
    assert!(lines < 40, "older files were dropped");
    // The newest file ends with the last request.
    let last = load(&file).pop().unwrap();
    assert_eq!((last.id, last.path.as_str()), (40, "/39"));
    tr.shutdown().await;
}

/// A path this process cannot open for writing (root ignores file modes, so it gets a sysfs
/// file).
fn unwritable(dir: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        return PathBuf::from("/sys/kernel/notes");
    }
    let p = dir.join("ro.jsonl");
    std::fs::write(&p, "").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    p
}

#[tokio::test]
async fn a_full_disk_or_read_only_file_stops_recording_not_traffic() {
    let backend = Backend::start("a").await;
    let script = format!(
        r#"route("a").rule(path_prefix("/")).to(service("a").servers({}));"#,
        servers(&[&backend])
    );
    let tr = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| {
        cfg.record.file = Some(PathBuf::from("/dev/full"));
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 0;
    loop {
        assert_eq!(get(tr.web, "a.test", "/").await.status, 200);
        n += 1;
        let s = record_status(&tr).await;
        if s["state"] == "off" {
            let err = s["error"].as_str().unwrap();
            assert!(err.contains("/dev/full"), "{err}");
            assert!(err.to_lowercase().contains("space"), "{err}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still recording: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(tr.web, "a.test", "/").await.status, 200);
    }
    assert!(n >= 1);

    let dir = tempfile::tempdir().unwrap();
    let ro = unwritable(dir.path());
    let body = serde_json::json!({ "file": ro }).to_string();
    let r = send(
        tr.admin,
        "POST",
        "localhost",
        "/api/record/start",
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("cannot open"));
    let s = record_status(&tr).await;
    assert_eq!(s["state"], "off");
    assert!(s["error"]
        .as_str()
        .unwrap()
        .contains(&ro.display().to_string()));
    assert_eq!(get(tr.web, "a.test", "/").await.status, 200);
    // A start without a file takes the last file that worked, never the one that failed.
    let r = send(tr.admin, "POST", "localhost", "/api/record/start", &[], "").await;
    assert_ne!(
        record_status(&tr).await["file"].as_str(),
        Some(ro.display().to_string().as_str()),
        "{}",
        r.body
    );
    tr.shutdown().await;
}

#[tokio::test]
async fn admin_starts_stops_and_reports_recording() {
    let tr =
        TestRouter::start(r#"route("r").rule(path_prefix("/")).to(respond(200, "ok"));"#).await;
    let s = record_status(&tr).await;
    assert_eq!(
        (s["state"].as_str(), s["file"].as_str()),
        (Some("off"), None)
    );

    let r = send(tr.admin, "POST", "localhost", "/api/record/start", &[], "").await;
    assert_eq!(r.status, 400, "no file configured: {}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("file"));
    let r = send(
        tr.admin,
        "POST",
        "localhost",
        "/api/record/start",
        &[],
        "{\"file\": 3}",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().starts_with("bad body"));
    let r = send(
        tr.admin,
        "POST",
        "localhost",
        "/api/record/start",
        &[],
        "{\"scope\": \"some\"}",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(tr.admin, "DELETE", "localhost", "/api/record", &[], "").await;
    assert_eq!(r.status, 405);
    let r = send(tr.admin, "GET", "localhost", "/api/record/start", &[], "").await;
    assert_eq!(r.status, 405);
    assert!(
        r.json()["error"].as_str().unwrap().contains("takes POST"),
        "{}",
        r.body
    );
    // Unknown API paths answer JSON too.
    let r = get(tr.admin, "localhost", "/api/nosuch").await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"].as_str().unwrap().contains("/api/nosuch"),
        "{}",
        r.body
    );

    let file = tr.dir.path().join("admin.jsonl");
    let body = serde_json::json!({ "file": file, "scope": "all" }).to_string();
    let r = send(
        tr.admin,
        "POST",
        "localhost",
        "/api/record/start",
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "on");
    assert_eq!(r.json()["scope"], "all");
    for _ in 0..3 {
        get(tr.web, "r.test", "/").await;
    }
    let s = send(tr.admin, "POST", "localhost", "/api/record/stop", &[], "")
        .await
        .json();
    assert_eq!(
        (s["state"].as_str(), s["recorded"].as_u64()),
        (Some("off"), Some(3))
    );
    assert!(s["bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["error"], serde_json::Value::Null);
    get(tr.web, "r.test", "/").await;
    assert_eq!(load(&file).len(), 3, "nothing recorded after stop");

    // A restart without a body reuses the last file; ids start again at 1, appended.
    let r = send(tr.admin, "POST", "localhost", "/api/record/start", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    get(tr.web, "r.test", "/again").await;
    tr.router().recorder.stop();
    let recs = load(&file);
    assert_eq!(recs.len(), 4);
    assert_eq!((recs[3].id, recs[3].path.as_str()), (1, "/again"));
    tr.shutdown().await;
}

#[tokio::test]
async fn replay_reports_a_broken_line_by_number_and_replays_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-test.rhai"),
        r#"route("r").rule(path_prefix("/")).to(respond(200, "ok"));"#,
    )
    .unwrap();
    let good = |path: &str| {
        format!(
            r#"{{"id":1,"time":"2026-01-01T00:00:00.000Z","method":"GET","host":"r.test","path":"{path}"}}"#
        )
    };
    let requests = dir.path().join("rec.jsonl");
    std::fs::write(
        &requests,
        format!(
            "{}\n{}\n{}\n",
            good("/one"),
            r#"{"id":2,"time":"2026-01-01T00:00"#,
            good("/three")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("replay")
        .arg("--scripts")
        .arg(dir.path())
        .arg("--requests")
        .arg(&requests)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("rec.jsonl:2: skipped"), "{stderr}");
    assert!(
        stdout.contains("/one") && stdout.contains("/three"),
        "{stdout}"
    );
    assert!(stdout.contains("1 skipped"), "{stdout}");
}

#[tokio::test]
async fn routes_opt_out_and_scope_marked_takes_only_marked_routes() {
    let script = r#"
        route("quiet").rule(path_prefix("/quiet")).record(false).to(respond(200, "q"));
        route("loud").rule(path_prefix("/loud")).record(true).to(respond(200, "l"));
        route("plain").rule(path_prefix("/plain")).to(respond(200, "p"));
    "#;
    let tr = TestRouter::start(script).await;
    assert_eq!(tr.route_info("quiet").await["record"], false);
    assert_eq!(tr.route_info("loud").await["record"], true);
    assert!(tr.route_info("plain").await.get("record").is_none());

    let mut seen = Vec::new();
    for scope in [Scope::All, Scope::Marked] {
        let file = tr.dir.path().join(format!("{}.jsonl", scope.as_str()));
        tr.router()
            .recorder
            .start(Some(file.clone()), Some(scope))
            .unwrap();
        for p in ["/quiet", "/loud", "/plain", "/nowhere"] {
            get(tr.web, "x.test", p).await;
        }
        tr.router().recorder.stop();
        let paths: Vec<String> = load(&file).into_iter().map(|r| r.path).collect();
        seen.push(paths);
    }
    assert_eq!(seen[0], ["/loud", "/plain", "/nowhere"]);
    assert_eq!(seen[1], ["/loud"]);
    tr.shutdown().await;
}

/// Sends each body as a POST through a router recording up to 8 body bytes: the records' bodies.
async fn recorded_bodies(bodies: &[&str]) -> Vec<(Option<String>, bool)> {
    let RecordingRouter {
        tr,
        file,
        _dir,
        _backend,
    } = recording_router(|rec| rec.body_bytes = 8).await;
    for body in bodies {
        let r = send(tr.web, "POST", "a.test", "/", &[], body).await;
        assert_eq!(r.status, 200);
        // The server got the whole body, not the recorded part.
        assert!(r.body.contains(body), "{}", r.body);
    }
    tr.router().recorder.stop();
    let recs = load(&file);
    tr.shutdown().await;
    recs.into_iter()
        .map(|r| (r.body, r.body_truncated))
        .collect()
}

#[tokio::test]
async fn bodies_are_recorded_base64_up_to_the_cap() {
    use base64::Engine as _;
    let b64 = |s: &str| Some(base64::engine::general_purpose::STANDARD.encode(s));
    let got = recorded_bodies(&["hi", "twelve bytes", ""]).await;
    assert_eq!(
        got,
        vec![(b64("hi"), false), (b64("twelve b"), true), (None, false)]
    );
}
