//! `switchyard replay` and dry runs: recorded requests decided offline by the live decision
//! code — explain traces, middleware notes, the request as it would leave, comparisons with a
//! candidate scripts folder.

use std::path::Path;
use std::process::Command;

use switchyard::catalog::Catalog;
use switchyard::proxy::dry::Outcome;
use switchyard::recording::format::{self as record, Clock};
use switchyard::replay::{report, Session};
use switchyard::script::BuildEnv;
use switchyard::script::ScriptsOrigin;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replay")
}

/// Runs the binary in the repository root (so paths in its output are relative) and returns
/// stdout with this machine's host name (X-Forwarded-Server) masked.
fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(
        &format!("x-forwarded-server: {host}"),
        "x-forwarded-server: [host]",
    );
    (
        out.status.code().unwrap_or(-1),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn session(script: &str) -> (tempfile::TempDir, Session) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-test.rhai"), script).unwrap();
    let s = Session::new(
        ScriptsOrigin::Dir(dir.path().to_path_buf()),
        Catalog::default(),
        BuildEnv::new(vec!["web".into(), "internal".into()], None),
        switchyard::proxy::Settings::default(),
    )
    .unwrap_or_else(|e| panic!("{}", switchyard::script::error::render_all(&e)));
    (dir, s)
}

fn recorded(lines: &[&str]) -> Vec<record::RecordedRequest> {
    let rec = record::parse(&lines.join("\n"));
    assert!(rec.errors.is_empty(), "{:?}", rec.errors);
    rec.requests
}

#[test]
fn replay_prints_each_decision_and_the_totals() {
    let (code, out, err) = replay(&[
        "--scripts",
        "examples/replay/scripts",
        "--requests",
        "examples/replay/requests.jsonl",
    ]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("replay_example_text", out);
}

#[test]
fn compare_lists_only_the_requests_that_would_change() {
    let (code, out, err) = replay(&[
        "--scripts",
        "examples/replay/scripts",
        "--requests",
        "examples/replay/requests.jsonl",
        "--compare",
        "examples/replay/candidate",
    ]);
    assert_eq!(code, 2, "requests would change: exit 2 gates CI\n{err}");
    insta::assert_snapshot!("replay_example_compare", out);
    // The same scripts as candidate: nothing would change, exit 0.
    let (code, out, err) = replay(&[
        "--scripts",
        "examples/replay/scripts",
        "--requests",
        "examples/replay/requests.jsonl",
        "--compare",
        "examples/replay/scripts",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 would change"), "{out}");
}

#[test]
fn json_lines_agree_with_the_recording() {
    let (code, out, err) = replay(&[
        "--scripts",
        "examples/replay/scripts",
        "--requests",
        "examples/replay/requests.jsonl",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "7 requests and a summary:\n{out}");
    // The example recording is what these scripts did live: nothing differs.
    for l in &lines[..7] {
        assert_eq!(l["differs"], serde_json::json!([]), "{l}");
        assert_eq!(l["decision"]["route"], l["recorded"]["route"], "{l}");
    }
    assert_eq!(lines[0]["decision"]["outcome"]["server"], "127.0.0.1:9101");
    assert_eq!(lines[1]["decision"]["outcome"]["server"], "127.0.0.1:9102");
    assert_eq!(lines[2]["decision"]["outcome"]["path"], "/v1/cart");
    let summary = &lines[7]["summary"];
    assert_eq!(summary["requests"], 7);
    assert_eq!(summary["forwarded"], 4);
    assert_eq!(summary["no_route"], 1);
}

#[test]
fn a_changed_script_shows_up_as_differing_from_the_recording() {
    // The candidate folder against the recording of the live scripts: every moved request is
    // flagged, with the recorded and the new decision.
    let (code, out, _) = replay(&[
        "--scripts",
        "examples/replay/candidate",
        "--requests",
        "examples/replay/requests.jsonl",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("DIFFERS route: recorded api, now api-v2"),
        "{out}"
    );
    assert!(
        out.contains("DIFFERS route: recorded old-blog, now shop"),
        "{out}"
    );
    assert!(out.ends_with("2 differ from the recording\n"), "{out}");
}

#[test]
fn bad_lines_are_named_and_the_rest_replays() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(example().join("requests.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(2, "{\"time\": 12, \"method\": \"GET\"}");
    let cut = &lines[5][..40];
    lines[5] = cut;
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = replay(&[
        "--scripts",
        "examples/replay/scripts",
        "--requests",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("bad.jsonl:3: skipped: invalid type"), "{err}");
    assert!(
        err.contains("bad.jsonl:6: skipped: truncated record"),
        "{err}"
    );
    assert!(out.contains("replayed 6 requests"), "{out}");
    assert!(out.contains("2 skipped"), "{out}");
}

#[test]
fn broken_scripts_exit_1_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-bad.rhai"),
        "route(\"x\").rule(host(\"a\")\n",
    )
    .unwrap();
    let (code, _, err) = replay(&[
        "--scripts",
        dir.path().to_str().unwrap(),
        "--requests",
        "examples/replay/requests.jsonl",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("10-bad.rhai:"), "{err}");
}

#[tokio::test]
async fn explain_names_the_first_failing_matcher_of_each_route() {
    let (_dir, s) = session(
        r#"
        let app = service("app").servers(["127.0.0.1:9"]);
        route("internal-only").rule(path_prefix("/")).entrypoints(["internal"]).priority(500).to(app);
        route("api").rule(host("api.x.com") & path_prefix("/v1")).priority(400).to(app);
        route("beta").rule(host("www.x.com") & header("X-Beta", "1")).priority(300).to(app);
        route("posts").rule(host("www.x.com") & method("POST")).priority(200).to(app);
        route("search").rule(host("www.x.com") & query("q", "rust")).priority(150).to(app);
        route("not-bots").rule(host("www.x.com") & !header_regex("User-Agent", "curl.*")).priority(120).to(app);
        route("www").rule(host("www.x.com")).priority(100).to(app);
        route("never").rule(host("www.x.com")).priority(1).to(app);
        "#,
    );
    let reqs = recorded(&[
        r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"www.x.com","path":"/docs","query":"q=go","headers":[["host","www.x.com"],["x-beta","0"],["user-agent","curl/8"]]}"#,
    ]);
    let d = s.decide(&reqs[0], &mut Clock::new()).await.unwrap();
    assert_eq!(d.route.as_deref(), Some("www"));
    let trace = report::explain_text(&d).replace(&*_dir.path().to_string_lossy(), "[dir]");
    insta::assert_snapshot!("explain_trace", trace);
}

#[tokio::test]
async fn rate_limits_replay_with_the_recorded_gaps() {
    let (_dir, s) = session(
        r#"
        let app = service("app").servers(["127.0.0.1:9"]);
        route("limited").rule(path_prefix("/")).middlewares([rate_limit(#{ average: 1, period: "1s", burst: 1 })]).to(app);
        "#,
    );
    let reqs = recorded(&[
        r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"a","path":"/"}"#,
        r#"{"time":"2026-12-03T07:00:00.100Z","method":"GET","host":"a","path":"/"}"#,
        r#"{"time":"2026-12-03T07:00:02.000Z","method":"GET","host":"a","path":"/"}"#,
    ]);
    let mut clock = Clock::new();
    let mut statuses = vec![];
    for r in &reqs {
        statuses.push(s.decide(r, &mut clock).await.unwrap().status());
    }
    // Forwarded, refused (100 ms later: bucket empty), forwarded (2 s later: refilled).
    assert_eq!(statuses, vec![None, Some(429), None]);
}

#[tokio::test]
async fn dry_runs_run_hooks_and_rewrites_but_call_no_auth_server() {
    let dead = crate::support::dead_addr().await;
    let (_dir, s) = session(&format!(
        r#"
        fn tag(req) {{ req.set_header("X-Seen", req.path); }}
        let app = service("app").servers(["127.0.0.1:9"]);
        route("app").rule(path_prefix("/api"))
            .middlewares([
                forward_auth("http://{dead}/check"),
                strip_prefix(["/api"]),
                on_request(Fn("tag")),
                request_headers(#{{ remove: ["X-Debug"] }}),
            ])
            .to(app);
        "#
    ));
    let reqs = recorded(&[
        r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"a","path":"/api/users","headers":[["host","a"],["x-debug","1"]]}"#,
    ]);
    let d = s.decide(&reqs[0], &mut Clock::new()).await.unwrap();
    let Outcome::Forward { path, headers, .. } = &d.outcome else {
        panic!("not forwarded: {d:?}");
    };
    assert_eq!(path, "/users");
    assert!(
        headers
            .added
            .contains(&("x-seen".to_string(), "/users".to_string())),
        "{headers:?}"
    );
    assert!(
        headers.removed.contains(&"x-debug".to_string()),
        "{headers:?}"
    );
    assert!(
        d.steps[0].contains("not asked in a dry run"),
        "{:?}",
        d.steps
    );
    assert!(
        d.steps[1].contains("path /api/users → /users"),
        "{:?}",
        d.steps
    );
}
