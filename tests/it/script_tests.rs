//! `switchyard test` as CI runs it: the real binary on folders of route scripts and
//! `*.test.rhai` files — passing, failing (names, file:line:col, expected vs actual), a test file
//! that does not parse, and recorded requests whose route changed.

use std::path::Path;
use std::process::Stdio;

/// Runs `switchyard test --scripts . [extra…]` in `dir`: (exit code, stdout, stderr).
fn switchyard_test(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = ["--scripts", "."].iter().chain(extra).copied().collect();
    switchyard_test_from(dir, &args)
}

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const ROUTES: &str = r#"let api = service("api").servers(["127.0.0.1:9001", "127.0.0.1:9002"]);
route("api").rule(host("api.localhost") & path_prefix("/v1"))
    .middlewares([strip_prefix("/v1")])
    .to(api);
route("old").rule(host("old.localhost")).to(redirect("https://api.localhost/", true));
"#;

#[test]
fn the_shipped_example_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tested");
    let (code, out, err) = switchyard_test(&dir, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("running 11 tests"), "{out}");
    assert!(
        out.contains("test routes.test.rhai::api v1 strips the prefix ... ok"),
        "{out}"
    );
    assert!(
        out.contains(
            "test tests/recorded.test.rhai::../traffic.jsonl #3 GET old.localhost/ ... ok"
        ),
        "{out}"
    );
    assert!(
        out.contains("test result: ok. 11 passed; 0 failed"),
        "{out}"
    );
}

#[test]
fn a_failing_test_names_itself_its_location_and_both_decisions() {
    let dir = folder(&[
        ("routes.rhai", ROUTES),
        (
            "routes.test.rhai",
            r#"test("api strips the prefix", || {
    expect(get("http://api.localhost/v1/users")).routes_to("api").with_path("/users");
});
test("a wrong round-robin expectation", || {
    expect(get("http://api.localhost/v1/a"))
        .to_server("127.0.0.1:9001");
});
test("old host moved", || {
    expect(get("http://old.localhost/x")).routes_to("old").redirects_to("https://new.localhost/");
});
test("typo in the host", || {
    expect(get("http://apii.localhost/v1/users")).routes_to("api");
    expect(get("http://api.localhost/v1/never-decided")).routes_to("api");
});
expect(get("http://old.localhost/")).answers(301);
"#,
        ),
    ]);
    let (code, out, err) = switchyard_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("test result: FAILED. 2 passed; 3 failed"),
        "{out}"
    );
    assert!(
        out.contains("test routes.test.rhai::old host moved ... FAILED"),
        "{out}"
    );
    assert!(
        out.contains("routes.test.rhai:9:60: assertion failed"),
        "{out}"
    );
    insta::assert_snapshot!("script_tests_failing_output", out);

    let (code, json, _) = switchyard_test(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "{json}");
    assert_eq!(lines[0]["type"], "scripts");
    assert_eq!(lines[0]["scripts"], "the scripts in .");
    assert_eq!(lines[3]["name"], "routes.test.rhai::old host moved");
    assert_eq!(lines[3]["result"], "failed");
    assert_eq!(lines[3]["failure"]["at"], "routes.test.rhai:9:60");
    assert_eq!(lines[3]["failure"]["decision"]["outcome"]["status"], 301);
    assert_eq!(lines[6]["type"], "summary");
    assert_eq!(lines[6]["failed"], 3);
}

#[test]
fn a_test_file_that_does_not_parse_fails_with_its_position() {
    let dir = folder(&[
        ("routes.rhai", ROUTES),
        (
            "tests/bad.test.rhai",
            "test(\"x\", || {\n    expect(get(\"http://api.localhost/v1/\")).routes_to(\"api\")\n    expect(get(\"http://api.localhost/v1/\"));\n});\n",
        ),
        (
            "good.test.rhai",
            "expect(get(\"http://api.localhost/v1/\")).routes_to(\"api\");\n",
        ),
    ]);
    let (code, out, err) = switchyard_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("test tests/bad.test.rhai ... FAILED"), "{out}");
    assert!(out.contains("tests/bad.test.rhai:3:5: "), "{out}");
    assert!(
        out.contains("test result: FAILED. 1 passed; 1 failed"),
        "{out}"
    );
}

#[test]
fn recorded_requests_whose_route_changed_fail() {
    let recording = concat!(
        r#"{"id":1,"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"api.localhost","path":"/v1/users","outcome":{"route":"api","service":"api","server":"127.0.0.1:9001","status":200,"upstream_path":"/users"}}"#,
        "\n",
        r#"{"id":2,"time":"2026-12-03T07:00:01.000Z","method":"GET","host":"api.localhost","path":"/v2/users","outcome":{"route":"api","service":"api","server":"127.0.0.1:9002","status":200,"upstream_path":"/v2/users"}}"#,
        "\n",
    );
    // The v2 requests used to go to `api`; the scripts now send them to a new route.
    let scripts = format!(
        "{ROUTES}route(\"api-v2\").rule(host(\"api.localhost\") & path_prefix(\"/v2\")).to(respond(410, \"gone\"));\n"
    );
    let dir = folder(&[
        ("routes.rhai", &scripts),
        ("traffic.jsonl", recording),
        ("replay.test.rhai", "expect_recorded(\"traffic.jsonl\");\n"),
    ]);
    let (code, out, err) = switchyard_test(dir.path(), &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("test replay.test.rhai::traffic.jsonl #1 GET api.localhost/v1/users ... ok"),
        "{out}"
    );
    assert!(
        out.contains(
            "test replay.test.rhai::traffic.jsonl #2 GET api.localhost/v2/users ... FAILED"
        ),
        "{out}"
    );
    assert!(out.contains("route: recorded api, now api-v2"), "{out}");
    assert!(
        out.contains("expected  api → api @ 127.0.0.1:9002  /v2/users"),
        "{out}"
    );
    assert!(out.contains("actual    api-v2 → 410 (respond)"), "{out}");
}

#[test]
fn scripts_that_do_not_build_and_empty_folders_fail() {
    let broken = folder(&[
        (
            "routes.rhai",
            "route(\"x\").rule(host(\"\")).to(respond(200, \"x\"));\n",
        ),
        ("a.test.rhai", "expect(get(\"http://x/\")).answers(200);\n"),
    ]);
    let (code, _, err) = switchyard_test(broken.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("the scripts do not build"), "{err}");
    assert!(err.contains("routes.rhai:1:"), "{err}");

    let empty = folder(&[("routes.rhai", ROUTES)]);
    let (code, _, err) = switchyard_test(empty.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no test files (*.test.rhai)"), "{err}");
}

/// `switchyard test DIR` run from elsewhere: (exit code, stdout, stderr).
fn switchyard_test_from(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .arg("test")
        .args(args)
        .output()
        .expect("cannot start switchyard");
    (
        out.status.code().expect("killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_folder_with_its_own_route_scripts_is_tested_against_them() {
    let project = folder(&[
        ("routes.rhai", ROUTES),
        (
            "routes.test.rhai",
            r#"expect(get("http://api.localhost/v1/users")).routes_to("api").with_path("/users");
"#,
        ),
    ]);
    // Run from a folder without ./scripts: the embedded default would answer every request.
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();
    let (code, out, err) = switchyard_test_from(elsewhere.path(), &[dir]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().next(),
        Some(format!("testing the scripts in {dir}").as_str()),
        "{out}"
    );
    assert!(out.contains("test result: ok. 1 passed; 0 failed"), "{out}");

    // A scripts folder named on the command line still wins: here, one without the route.
    let other = folder(&[(
        "other.rhai",
        "route(\"x\").rule(host(\"x.localhost\")).to(respond(200, \"x\"));\n",
    )]);
    let scripts = other.path().to_str().unwrap();
    let (code, out, _) = switchyard_test_from(elsewhere.path(), &[dir, "--scripts", scripts]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("testing the scripts in {scripts}\n")),
        "{out}"
    );
    assert!(
        out.contains("test result: FAILED. 0 passed; 1 failed"),
        "{out}"
    );
}
