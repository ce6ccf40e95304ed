//! The access log (`run --access-log`): a real router in front of a whoami backend gets a known
//! mix of requests; every line of the file must parse (common via a regex, JSON via serde) and
//! say what happened, and the filters and header rules must hold.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regex::Regex;
use switchyard::access_log::{parse_status, AccessLogConfig, Format, Output, REDACTED};
use switchyard::app::Router;

use crate::support::{send, servers, test_config, Backend, Reply, TestRouter};

/// `u:test` as `Authorization: Basic`.
const USER_TEST: &str = "Basic dTp0ZXN0";

fn script(b: &Backend) -> String {
    format!(
        r#"
        let app = service("app").servers({s});
        route("staff").rule(host("staff.test")).middlewares([basic_auth(["u:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M="])]).to(app);
        route("home").rule(host("app.test")).to(app);
        "#,
        s = servers(&[b])
    )
}

struct Setup {
    tr: TestRouter,
    file: PathBuf,
    backend: Backend,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut AccessLogConfig)) -> Setup {
    let backend = Backend::start("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let mut cfg = AccessLogConfig {
        output: Some(Output::File(file.clone())),
        ..AccessLogConfig::default()
    };
    tweak(&mut cfg);
    let tr = TestRouter::start_with(&[("10-test.rhai", &script(&backend))], move |c| {
        c.access_log = cfg;
    })
    .await;
    Setup {
        tr,
        file,
        backend,
        _dir: dir,
    }
}

/// One request of the mix: host, path, request headers, expected status.
struct Req {
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
}

const SECRET_HEADERS: &[(&str, &str)] = &[
    ("authorization", "Bearer s3cret-token"),
    ("cookie", "session=s3cret-cookie"),
    ("x-request-id", "req-42"),
    ("user-agent", "alog-test/1.0"),
    ("referer", "http://app.test/from"),
];

/// 200s, a 404 (no route), a 401 (basic auth), an authenticated 200, a 503 from the server and
/// a slow 200 — in this order.
const MIX: &[Req] = &[
    Req {
        host: "app.test",
        path: "/hello?x=1",
        headers: SECRET_HEADERS,
        status: 200,
    },
    Req {
        host: "nothing.test",
        path: "/missing",
        headers: &[],
        status: 404,
    },
    Req {
        host: "staff.test",
        path: "/admin",
        headers: &[],
        status: 401,
    },
    Req {
        host: "staff.test",
        path: "/admin",
        headers: &[("authorization", USER_TEST)],
        status: 200,
    },
    Req {
        host: "app.test",
        path: "/boom?status=503",
        headers: &[],
        status: 503,
    },
    Req {
        host: "app.test",
        path: "/slow?delay=150ms",
        headers: &[],
        status: 200,
    },
];

/// What each request of `MIX` must log as: router, whether it reached the server, user.
fn expected(i: usize) -> (Option<&'static str>, bool, Option<&'static str>) {
    match i {
        0 | 4 | 5 => (Some("home"), true, None),
        1 => (None, false, None),
        2 => (Some("staff"), false, None),
        3 => (Some("staff"), true, Some("u")),
        _ => unreachable!(),
    }
}

async fn send_mix(web: std::net::SocketAddr) -> Vec<Reply> {
    let mut replies = Vec::new();
    for r in MIX {
        let reply = send(web, "GET", r.host, r.path, r.headers, "").await;
        assert_eq!(reply.status.as_u16(), r.status, "{}{}", r.host, r.path);
        replies.push(reply);
    }
    replies
}

/// The file's complete lines once `done` holds for them (at most 10 s; the writer flushes on
/// an interval).
fn wait_lines(file: &Path, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end_matches('\n').to_string())
            .collect();
        if done(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "access log {} not as expected within 10 s; it has:\n{}",
            file.display(),
            text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Traefik's common format, one capture per field.
fn common_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r#"^(?P<ip>\S+) - (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "#,
            r#""(?P<method>\S+) (?P<path>\S+) (?P<proto>HTTP/\d\.\d)" (?P<status>\d{3}) (?P<size>\d+|-) "#,
            r#""(?P<referer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)" (?P<count>\d+) "#,
            r#""(?P<router>[^"]*)" "(?P<server>[^"]*)" (?P<ms>\d+)ms$"#,
        ))
        .unwrap()
    })
}

#[derive(Debug)]
struct Line {
    user: String,
    method: String,
    path: String,
    status: u16,
    size: Option<u64>,
    referer: String,
    ua: String,
    count: u64,
    router: String,
    server: String,
    ms: u64,
}

fn parse_common(line: &str) -> Line {
    let c = common_re()
        .captures(line)
        .unwrap_or_else(|| panic!("not a common-format line: {line}"));
    assert_eq!(&c["ip"], "127.0.0.1", "{line}");
    assert_eq!(&c["proto"], "HTTP/1.1", "{line}");
    Line {
        user: c["user"].to_string(),
        method: c["method"].to_string(),
        path: c["path"].to_string(),
        status: c["status"].parse().unwrap(),
        size: c["size"].parse().ok(),
        referer: c["referer"].to_string(),
        ua: c["ua"].to_string(),
        count: c["count"].parse().unwrap(),
        router: c["router"].to_string(),
        server: c["server"].to_string(),
        ms: c["ms"].parse().unwrap(),
    }
}

#[tokio::test]
async fn common_lines_say_what_happened_to_each_request() {
    let s = start(|_| {}).await;
    let replies = send_mix(s.tr.web).await;
    let lines = wait_lines(&s.file, |l| l.len() >= MIX.len());
    assert_eq!(lines.len(), MIX.len(), "{lines:#?}");
    let server_url = format!("http://{}", s.backend.addr);
    for (i, (text, (req, reply))) in lines.iter().zip(MIX.iter().zip(&replies)).enumerate() {
        let l = parse_common(text);
        let (router, forwarded, user) = expected(i);
        assert_eq!(l.method, "GET", "{text}");
        assert_eq!(l.path, req.path, "{text}");
        assert_eq!(l.status, req.status, "{text}");
        assert_eq!(l.router, router.unwrap_or("-"), "{text}");
        let server = if forwarded { server_url.as_str() } else { "-" };
        assert_eq!(l.server, server, "{text}");
        assert_eq!(l.user, user.unwrap_or("-"), "{text}");
        assert_eq!(l.count, i as u64 + 1, "request count: {text}");
        // The size is what the client got, when its length was known.
        assert_eq!(l.size, Some(reply.body.len() as u64), "{text}");
        if req.path.contains("delay=150ms") {
            assert!(l.ms >= 150, "slow request logged {}ms: {text}", l.ms);
        } else {
            assert!(l.ms < 5000, "{text}");
        }
    }
    let first = parse_common(&lines[0]);
    assert_eq!(
        (first.referer.as_str(), first.ua.as_str()),
        ("http://app.test/from", "alog-test/1.0")
    );
    let all = lines.join("\n");
    assert!(
        !all.contains("s3cret"),
        "secrets never reach the log: {all}"
    );
    s.tr.shutdown().await;
}

fn parse_json(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn json_lines_carry_traefik_fields_and_drop_headers_by_default() {
    let s = start(|c| c.format = Format::Json).await;
    send_mix(s.tr.web).await;
    let lines = wait_lines(&s.file, |l| l.len() >= MIX.len());
    let entries = parse_json(&lines);
    assert_eq!(entries.len(), MIX.len());
    let addr = s.backend.addr.to_string();
    for (i, (e, req)) in entries.iter().zip(MIX).enumerate() {
        let (router, forwarded, user) = expected(i);
        assert_eq!(e["RequestMethod"], "GET", "{e}");
        assert_eq!(e["RequestPath"], req.path, "{e}");
        assert_eq!(e["RequestHost"], req.host, "{e}");
        assert_eq!(e["RequestProtocol"], "HTTP/1.1", "{e}");
        assert_eq!(e["DownstreamStatus"], req.status, "{e}");
        assert_eq!(e["ClientHost"], "127.0.0.1", "{e}");
        assert_eq!(e["entryPointName"], "web", "{e}");
        assert_eq!(e["RequestCount"], i + 1, "{e}");
        assert_eq!(e["RetryAttempts"], 0, "{e}");
        assert_eq!(e["ClientUsername"], user.unwrap_or("-"), "{e}");
        assert_eq!(e.get("RouterName").and_then(|v| v.as_str()), router, "{e}");
        if forwarded {
            assert_eq!(e["ServiceName"], "app", "{e}");
            assert_eq!(e["ServiceAddr"], addr.as_str(), "{e}");
            assert_eq!(e["ServiceURL"], format!("http://{addr}"), "{e}");
            assert_eq!(e["OriginStatus"], req.status, "{e}");
        } else {
            assert!(
                e.get("ServiceURL").is_none() && e.get("OriginStatus").is_none(),
                "{e}"
            );
        }
        let ns = e["Duration"].as_u64().unwrap();
        if req.path.contains("delay=150ms") {
            assert!(ns >= 150_000_000, "slow request logged {ns}ns: {e}");
        }
        assert!(
            e["StartUTC"].as_str().unwrap().ends_with('Z'),
            "StartUTC is UTC: {e}"
        );
        // No header fields unless asked for.
        let headers: Vec<&String> = e
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| {
                k.starts_with("request_") && *k != "request_User-Agent" && *k != "request_Referer"
            })
            .collect();
        assert!(headers.is_empty(), "headers dropped by default: {e}");
    }
    assert_eq!(entries[0]["request_User-Agent"], "alog-test/1.0");
    assert!(!lines.join("\n").contains("s3cret"));
    s.tr.shutdown().await;
}

#[tokio::test]
async fn kept_headers_are_written_but_secrets_are_always_redacted() {
    let s = start(|c| {
        c.format = Format::Json;
        c.headers = vec![
            "Authorization".into(),
            "Cookie".into(),
            "X-Request-Id".into(),
            "X-Absent".into(),
        ];
    })
    .await;
    send_mix(s.tr.web).await;
    let lines = wait_lines(&s.file, |l| l.len() >= MIX.len());
    let entries = parse_json(&lines);
    let first = &entries[0];
    assert_eq!(first["request_Authorization"], REDACTED, "{first}");
    assert_eq!(first["request_Cookie"], REDACTED, "{first}");
    assert_eq!(first["request_X-Request-Id"], "req-42", "{first}");
    assert!(first.get("request_X-Absent").is_none(), "{first}");
    // The basic-auth request: the user is logged, the credentials are not.
    assert_eq!(entries[3]["ClientUsername"], "u");
    assert_eq!(entries[3]["request_Authorization"], REDACTED);
    assert!(entries[1].get("request_Authorization").is_none());
    let all = lines.join("\n");
    assert!(
        !all.contains("s3cret") && !all.contains("dTp0ZXN0"),
        "{all}"
    );
    s.tr.shutdown().await;
}

const MARKER: &str = "/marker?status=404&delay=120ms";

/// Sends the mix plus a last request the filter keeps, waits for its line (lines are written in
/// order, so everything before it was decided), and returns the (path, status) pairs logged.
async fn filtered(tweak: impl FnOnce(&mut AccessLogConfig)) -> Vec<(String, u16)> {
    let s = start(tweak).await;
    send_mix(s.tr.web).await;
    // A slow 404 from the server: kept by every filter used below.
    let marker = send(s.tr.web, "GET", "app.test", MARKER, &[], "").await;
    assert_eq!(marker.status, 404);
    let lines = wait_lines(&s.file, |l| l.iter().any(|l| l.contains("/marker")));
    s.tr.shutdown().await;
    assert_eq!(
        std::fs::read_to_string(&s.file).unwrap().lines().count(),
        lines.len(),
        "nothing after the marker"
    );
    lines
        .iter()
        .map(|l| parse_common(l))
        .map(|l| (l.path, l.status))
        .filter(|(p, _)| p != MARKER)
        .collect()
}

fn paths(list: &[(String, u16)]) -> Vec<&str> {
    list.iter().map(|(p, _)| p.as_str()).collect()
}

#[tokio::test]
async fn status_filter_keeps_only_the_listed_ranges() {
    let kept = filtered(|c| c.status = parse_status("400-499").unwrap()).await;
    assert_eq!(kept, vec![("/missing".into(), 404), ("/admin".into(), 401)]);
    let kept = filtered(|c| c.status = parse_status("200,404,500-599").unwrap()).await;
    assert_eq!(
        paths(&kept),
        vec![
            "/hello?x=1",
            "/missing",
            "/admin",
            "/boom?status=503",
            "/slow?delay=150ms"
        ]
    );
}

#[tokio::test]
async fn min_duration_keeps_only_slow_requests_and_or_combines_with_status() {
    let kept = filtered(|c| c.min_duration = Some(Duration::from_millis(100))).await;
    assert_eq!(paths(&kept), vec!["/slow?delay=150ms"]);
    let kept = filtered(|c| {
        c.min_duration = Some(Duration::from_millis(100));
        c.status = parse_status("500-599").unwrap();
    })
    .await;
    assert_eq!(paths(&kept), vec!["/boom?status=503", "/slow?delay=150ms"]);
}

#[tokio::test]
async fn an_unwritable_access_log_file_stops_start_up_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let bad = dir.path().join("no-such-dir").join("access.log");
    cfg.access_log.output = Some(Output::File(bad.clone()));
    let sets = switchyard::app::bind_entrypoints(&cfg.entrypoints, 1).unwrap();
    let err = match Router::start(&cfg, sets, None).await {
        Ok(_) => panic!("started with an unwritable access log"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot open access log") && err.contains(&bad.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn retries_and_dead_servers_are_logged_as_traefik_does() {
    let live = Backend::start("live").await;
    let dead = crate::support::dead_addr().await;
    let script = format!(
        r#"
        let flaky = service("flaky").servers(["{dead}", "{live}"]);
        let gone = service("gone").servers(["{dead}"]);
        route("retried").rule(path_prefix("/r")).middlewares([retry(3, "10ms")]).to(flaky);
        route("broken").rule(path_prefix("/b")).to(gone);
        "#,
        live = live.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    let f = file.clone();
    let tr = TestRouter::start_with(&[("10-test.rhai", &script)], move |c| {
        c.access_log.output = Some(Output::File(f));
        c.access_log.format = Format::Json;
    })
    .await;
    for _ in 0..4 {
        assert_eq!(send(tr.web, "GET", "x", "/r", &[], "").await.status, 200);
    }
    assert_eq!(send(tr.web, "GET", "x", "/b", &[], "").await.status, 502);
    let entries = parse_json(&wait_lines(&file, |l| l.len() >= 5));
    let retried: Vec<&serde_json::Value> = entries.iter().take(4).collect();
    for e in &retried {
        assert_eq!(e["RouterName"], "retried", "{e}");
        assert_eq!(
            e["ServiceAddr"],
            live.addr.to_string(),
            "the last server tried: {e}"
        );
        assert_eq!(e["OriginStatus"], 200, "{e}");
    }
    assert!(
        retried.iter().any(|e| e["RetryAttempts"] == 1),
        "a request that met the dead server first counts one retry: {retried:?}"
    );
    let broken = &entries[4];
    assert_eq!(broken["DownstreamStatus"], 502, "{broken}");
    assert_eq!(broken["ServiceAddr"], dead.to_string(), "{broken}");
    assert!(
        broken.get("OriginStatus").is_none(),
        "no server answered: {broken}"
    );
    tr.shutdown().await;
}

/// `run --access-log` with no FILE writes to stdout: the real binary, killed if the test fails.
#[tokio::test]
async fn access_log_without_a_file_goes_to_stdout() {
    let cwd = tempfile::tempdir().unwrap();
    let web = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    std::fs::write(
        cwd.path().join("10-ok.rhai"),
        "route(\"ok\").rule(path(\"/\")).to(respond(200, \"ok\"));\n",
    )
    .unwrap();
    cmd.current_dir(cwd.path())
        .args([
            "run",
            "--scripts",
            ".",
            "--entrypoint",
            &format!("web={web}"),
        ])
        .args(["--admin", "off"])
        .args(["--access-log", "--access-log.status", "200"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(web).await.is_err() {
        assert!(Instant::now() < deadline, "router never listened on {web}");
        assert!(child.try_wait().unwrap().is_none(), "router exited early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(crate::support::get(web, "localhost", "/").await.status, 200);
    // (every other path matches no route)
    assert_eq!(
        crate::support::get(web, "localhost", "/nope-404")
            .await
            .status,
        404
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("router did not exit after SIGTERM")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Line> = stdout.lines().map(parse_common).collect();
    assert_eq!(lines.len(), 1, "only the 200 passes the filter: {stdout}");
    assert_eq!((lines[0].path.as_str(), lines[0].status), ("/", 200));
}
