//! `switchyard test [DIR]`: run the `*.test.rhai` files of DIR (and `DIR/tests/`) against the
//! route scripts and print cargo-test-like results, as text or JSON lines.
//!
//! Owns finding test files, deciding what they expect (`script::expect::collect` runs a file and
//! returns its tests; every request is then decided by a `Session` dry run, in the order the file
//! expected them), judging a decision against an assertion (`evaluate`, pure) and the report.
//!
//! Invariants: each test file starts from a freshly built router (balancer counters, limiters,
//! the hook store), so round-robin picks and rate limits in a file are deterministic; requests
//! built in a file all happen at one instant, recorded ones keep their recorded gaps; a test
//! stops at its first failed assertion (its later requests are not decided, as if it had
//! returned). Prints (this is CLI code); routes nothing itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use serde::Serialize;

use super::report::{differs_from_recording, explain_text};
use super::Session;
use crate::check::Format;
use crate::config::Config;
use crate::proxy::dry::{Decision, DryRequest, HeaderDiff, Outcome};
use crate::recording::format::{self as record, Clock, RecordedRequest};
use crate::routing::Location;
use crate::script::error::render_all;
use crate::script::expect::{self, Check, Expectation, RecordingLoader, Subject, TestCase};
use crate::script::ScriptsOrigin;
use crate::script::{Limits, ScriptError};

/// The header `name` as the request leaves (values of a repeated header joined with `, `), from
/// what the client sent and the dry run's header diff.
pub fn leaving_header(sent: &HeaderMap, diff: &HeaderDiff, name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if diff.removed.contains(&name) {
        return None;
    }
    if let Some((_, v)) = diff.added.iter().find(|(n, _)| *n == name) {
        return Some(v.clone());
    }
    if let Some((_, _, now)) = diff.changed.iter().find(|(n, _, _)| *n == name) {
        return Some(now.clone());
    }
    let values: Vec<String> = sent
        .get_all(name.as_str())
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Judges `d` against one assertion. `Err` carries lines explaining what the decision had
/// beyond its summary (empty when the summary says it all).
pub fn evaluate(
    check: &Check,
    d: &Decision,
    sent: &HeaderMap,
    recorded: Option<&RecordedRequest>,
) -> Result<(), Vec<String>> {
    let forward = match &d.outcome {
        Outcome::Forward {
            service,
            server,
            path,
            headers,
            ..
        } => Some((service, server, path, headers)),
        Outcome::Answer { .. } => None,
    };
    let answered = || match &d.outcome {
        Outcome::Answer { status, .. } => vec![format!("the router answers {status} itself")],
        Outcome::Forward { .. } => Vec::new(),
    };
    let ok = |yes: bool, why: Vec<String>| if yes { Ok(()) } else { Err(why) };
    match check {
        Check::RoutesTo(r) => ok(d.route.as_deref() == Some(r.as_str()), Vec::new()),
        Check::NoRoute => ok(d.route.is_none(), Vec::new()),
        Check::ToService(s) => match forward {
            Some((service, ..)) => ok(service == s, Vec::new()),
            None => Err(answered()),
        },
        Check::ToServer(s) => match forward {
            Some((_, server, ..)) => ok(server == s, Vec::new()),
            None => Err(answered()),
        },
        Check::WithPath(p) => match forward {
            Some((_, _, path, _)) => ok(path == p, vec![format!("leaves with path {path}")]),
            None => Err(answered()),
        },
        Check::WithHeader(name, want) => match forward {
            Some((.., diff)) => {
                let got = leaving_header(sent, diff, name);
                let why = match &got {
                    Some(v) => format!("leaves with {name}: {v}"),
                    None => format!("leaves without {name}"),
                };
                ok(got.as_deref() == Some(want.as_str()), vec![why])
            }
            None => Err(answered()),
        },
        Check::WithoutHeader(name) => match forward {
            Some((.., diff)) => match leaving_header(sent, diff, name) {
                Some(v) => Err(vec![format!("leaves with {name}: {v}")]),
                None => Ok(()),
            },
            None => Err(answered()),
        },
        Check::Answers(want) => match &d.outcome {
            Outcome::Answer { status, .. } => ok(status == want, Vec::new()),
            Outcome::Forward { .. } => Err(vec!["forwarded, not answered by the router".into()]),
        },
        Check::RedirectsTo(want) => match &d.outcome {
            Outcome::Answer {
                status, location, ..
            } => {
                let redirect = (300..400).contains(status);
                ok(
                    redirect && location.as_deref() == Some(want.as_str()),
                    vec![match location {
                        Some(l) => format!("answers {status} with location {l}"),
                        None => format!("answers {status} without a location"),
                    }],
                )
            }
            Outcome::Forward { .. } => Err(vec!["forwarded, not redirected".into()]),
        },
        Check::AsRecorded => match recorded {
            Some(req) if req.outcome.is_some() => {
                let differs = differs_from_recording(req, d);
                ok(differs.is_empty(), differs)
            }
            Some(_) => Err(vec!["the recording has no outcome to compare with".into()]),
            None => Err(vec!["as_recorded() needs a recorded request".into()]),
        },
    }
}

/// Why a test failed.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// `file:line:col` of the failing assertion or error.
    pub at: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Box<Decision>>,
    /// The error with its source line and caret, as text output prints it.
    #[serde(skip)]
    located: String,
    #[serde(skip)]
    explain: Option<String>,
}

impl Failure {
    fn from_error(e: &ScriptError) -> Failure {
        Failure {
            at: format!("{}:{}:{}", e.file, e.line, e.column),
            message: e.message.clone(),
            request: None,
            expected: None,
            actual: None,
            details: Vec::new(),
            decision: None,
            located: e.to_string(),
            explain: None,
        }
    }

    fn at(loc: &Location, text: &str, message: String) -> Failure {
        Failure::from_error(&ScriptError::at(loc, message).with_source(text))
    }

    fn text(&self) -> String {
        let mut out = format!("{}\n", self.located);
        let mut line = |label: &str, v: &str| {
            let _ = writeln!(out, "  {label:<9} {v}");
        };
        if let Some(r) = &self.request {
            line("request", r);
        }
        if let Some(e) = &self.expected {
            line("expected", e);
        }
        if let Some(a) = &self.actual {
            line("actual", a);
        }
        for d in &self.details {
            line("", d);
        }
        if let Some(x) = &self.explain {
            let _ = writeln!(out, "  routes considered:");
            for l in x.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }
}

/// One test file, run: its tests in order, then the file's own error (as a test named after
/// the file).
struct FileTests {
    /// Relative to DIR, as test names show it.
    rel: String,
    /// As locations show it.
    shown: String,
    text: String,
    cases: Vec<TestCase>,
    error: Option<ScriptError>,
}

/// The `*.test.rhai` files of `dir` then of `dir/tests`, each sorted by name: (relative, path).
pub fn find_test_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (prefix, sub) in [("", dir.to_path_buf()), ("tests/", dir.join("tests"))] {
        if !prefix.is_empty() && !sub.is_dir() {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(&sub)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".test.rhai") && !n.starts_with('.'))
            .collect();
        names.sort();
        out.extend(
            names
                .into_iter()
                .map(|n| (format!("{prefix}{n}"), sub.join(&n))),
        );
    }
    Ok(out)
}

fn shown(path: &Path) -> String {
    let s = path.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

fn loader_for(test_file: &Path) -> RecordingLoader {
    let dir = test_file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Arc::new(move |name: &str| {
        let path = dir.join(name);
        let rec = record::load(&path).map_err(|e| format!("{e:#}"))?;
        if let Some(e) = rec.errors.first() {
            return Err(format!("{}:{}: {}", shown(&path), e.line, e.message));
        }
        Ok(rec.requests)
    })
}

fn load_file(rel: String, path: &Path) -> FileTests {
    let shown = shown(path);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let c = expect::collect(&shown, &text, &Limits::default(), loader_for(path));
            FileTests {
                rel,
                shown,
                text,
                cases: c.cases,
                error: c.error,
            }
        }
        Err(e) => FileTests {
            rel,
            error: Some(ScriptError {
                file: shown.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
                source_line: None,
            }),
            shown,
            text: String::new(),
            cases: Vec::new(),
        },
    }
}

/// Decides one expectation; `Err` is the failure of its first failing assertion.
fn judge(
    session: &Session,
    rt: &tokio::runtime::Runtime,
    exp: &Expectation,
    text: &str,
    base: Instant,
    clock: &mut Clock,
) -> Result<(), Box<Failure>> {
    let (dry, recorded) = match &exp.subject {
        Subject::Built(r) => (
            DryRequest {
                entrypoint: r.entrypoint.clone(),
                method: r.method.clone(),
                uri: r.target.clone(),
                headers: r.headers.clone(),
                client: r.client,
                at: Some(base),
            },
            None,
        ),
        Subject::Recorded(r) => match r.to_dry(Some(clock.at(r))) {
            Ok(d) => (d, Some(r.as_ref())),
            Err(e) => {
                let mut f = Failure::at(&exp.at, text, format!("cannot replay: {e}"));
                f.request = Some(exp.subject.line());
                return Err(Box::new(f));
            }
        },
    };
    let sent = dry.headers.clone();
    let d = rt.block_on(session.proxy.dry_run(dry));
    if exp.assertions.is_empty() {
        let mut f = Failure::at(
            &exp.at,
            text,
            "expect(...) has no assertion: chain .routes_to(...), .answers(...), …".into(),
        );
        f.request = Some(exp.subject.line());
        f.actual = Some(d.summary());
        return Err(Box::new(f));
    }
    for a in &exp.assertions {
        if let Err(details) = evaluate(&a.check, &d, &sent, recorded) {
            let mut f = Failure::at(
                &a.at,
                text,
                format!("assertion failed: {}", a.check.describe()),
            );
            f.request = Some(exp.subject.line());
            f.expected = Some(match (&a.check, recorded) {
                (Check::AsRecorded, Some(r)) => recorded_summary(r),
                (c, _) => c.describe(),
            });
            f.actual = Some(d.summary());
            f.details = details;
            if a.check.is_about_route() && (d.route.is_none() || !d.considered.is_empty()) {
                f.explain = Some(explain_text(&d));
            }
            f.decision = Some(Box::new(d));
            return Err(Box::new(f));
        }
    }
    Ok(())
}

fn recorded_summary(r: &RecordedRequest) -> String {
    match &r.outcome {
        Some(o) => match (&o.service, &o.server) {
            (Some(svc), Some(server)) => format!(
                "{} → {svc} @ {server}  {}",
                o.route.as_deref().unwrap_or("(no route)"),
                o.upstream_path.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string(),
            _ => format!(
                "{} → {}",
                o.route.as_deref().unwrap_or("(no route)"),
                o.status
            ),
        },
        None => "(no recorded outcome)".to_string(),
    }
}

#[derive(Serialize)]
struct TestLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    file: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a Failure>,
}

fn print_json(v: &impl Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot encode: {e}"),
    }
}

/// The scripts `switchyard test DIR` tests: DIR's own route scripts when it holds some and no
/// scripts folder was given (`--scripts` or `SWITCHYARD_SCRIPTS`), else the configured ones.
pub fn scripts_under_test(
    dir: Option<&Path>,
    scripts_given: bool,
    configured: &ScriptsOrigin,
) -> ScriptsOrigin {
    match dir {
        Some(d) if !scripts_given && crate::script::load_dir(d).is_ok_and(|s| !s.is_empty()) => {
            ScriptsOrigin::Dir(d.to_path_buf())
        }
        _ => configured.clone(),
    }
}

/// `switchyard test`. Returns the exit code: 0 when every test passes; 1 on a failed test,
/// scripts that do not build, or a DIR without test files. `scripts_given`: a scripts folder
/// was named, so DIR's own route scripts are not taken instead (`scripts_under_test`).
pub fn run(cfg: &Config, dir: Option<&Path>, scripts_given: bool, format: Format) -> i32 {
    let cfg = &Config {
        scripts: scripts_under_test(dir, scripts_given, &cfg.scripts),
        ..cfg.clone()
    };
    let dir = match (dir, &cfg.scripts) {
        (Some(d), _) => d.to_path_buf(),
        (None, ScriptsOrigin::Dir(d)) => d.clone(),
        (None, ScriptsOrigin::Embedded | ScriptsOrigin::Generated(_)) => {
            eprintln!(
                "error: no scripts folder (the embedded default scripts are in use): pass DIR or --scripts DIR"
            );
            return 1;
        }
    };
    let files = match find_test_files(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read test folder {}: {e}", dir.display());
            return 1;
        }
    };
    if files.is_empty() {
        eprintln!(
            "error: no test files (*.test.rhai) in {} or {}",
            dir.display(),
            dir.join("tests").display()
        );
        return 1;
    }
    let mut session = match Session::load(cfg) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("error: the scripts do not build:\n{}", render_all(&errs));
            return 1;
        }
    };
    for w in &session.warnings {
        eprintln!("warning: {w}");
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let files: Vec<FileTests> = files.into_iter().map(|(r, p)| load_file(r, &p)).collect();
    let total: usize = files
        .iter()
        .map(|f| f.cases.len() + usize::from(f.error.is_some()))
        .sum();
    let scripts = match &cfg.scripts {
        ScriptsOrigin::Dir(d) => format!("the scripts in {}", shown(d)),
        ScriptsOrigin::Embedded => "the embedded default scripts".to_string(),
        ScriptsOrigin::Generated(_) => "the generated scripts".to_string(),
    };
    if format == Format::Json {
        print_json(&serde_json::json!({ "type": "scripts", "scripts": scripts }));
    }
    if format == Format::Text {
        println!("testing {scripts}");
        println!(
            "\nrunning {total} test{}",
            if total == 1 { "" } else { "s" }
        );
    }
    let mut failures: Vec<(String, Failure)> = Vec::new();
    let mut passed = 0;
    let mut report = |name: String, file: &str, result: Result<(), Failure>| {
        match format {
            Format::Json => print_json(&TestLine {
                kind: "test",
                name: &name,
                file,
                result: if result.is_ok() { "ok" } else { "failed" },
                failure: result.as_ref().err(),
            }),
            Format::Text => println!(
                "test {name} ... {}",
                if result.is_ok() { "ok" } else { "FAILED" }
            ),
        }
        match result {
            Ok(()) => passed += 1,
            Err(f) => failures.push((name, f)),
        }
    };
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            // A freshly started router per file: balancer counters and limiters start over.
            if let Err(errs) = session.reload() {
                eprintln!("error: the scripts do not build:\n{}", render_all(&errs));
                return 1;
            }
        }
        let base = Instant::now();
        let mut clock = Clock::new();
        for case in &file.cases {
            let mut result = Ok(());
            for exp in &case.expectations {
                result = judge(&session, &rt, exp, &file.text, base, &mut clock).map_err(|f| *f);
                if result.is_err() {
                    break;
                }
            }
            if let (Ok(()), Some(e)) = (&result, &case.error) {
                result = Err(Failure::from_error(e));
            }
            report(format!("{}::{}", file.rel, case.name), &file.shown, result);
        }
        if let Some(e) = &file.error {
            report(file.rel.clone(), &file.shown, Err(Failure::from_error(e)));
        }
    }
    let failed = failures.len();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "type": "summary",
            "result": if failed == 0 { "ok" } else { "failed" },
            "passed": passed,
            "failed": failed,
        })),
        Format::Text => {
            if failed > 0 {
                println!("\nfailures:\n");
                for (name, f) in &failures {
                    println!("---- {name} ----\n{}", f.text());
                }
                println!("failures:");
                for (name, _) in &failures {
                    println!("    {name}");
                }
            }
            println!(
                "\ntest result: {}. {passed} passed; {failed} failed\n",
                if failed == 0 { "ok" } else { "FAILED" }
            );
        }
    }
    i32::from(failed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::dry::Outcome;

    fn forward(path: &str, diff: HeaderDiff) -> Decision {
        Decision {
            entrypoint: "web".into(),
            host: "api.localhost".into(),
            path: "/".into(),
            route: Some("api".into()),
            declared_at: Some("s/a.rhai:1:1".into()),
            considered: Vec::new(),
            steps: Vec::new(),
            outcome: Outcome::Forward {
                service: "api".into(),
                server: "127.0.0.1:9001".into(),
                method: "GET".into(),
                path: path.into(),
                headers: diff,
                sticky_cookie: None,
                mirrors: Vec::new(),
            },
        }
    }

    fn answer(status: u16, location: Option<&str>) -> Decision {
        Decision {
            route: None,
            outcome: Outcome::Answer {
                status,
                location: location.map(str::to_string),
                by: "redirect".into(),
            },
            ..forward("/", HeaderDiff::default())
        }
    }

    fn sent(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_as_they_leave_follow_the_diff() {
        let client = sent(&[
            ("x-user", "ann"),
            ("x-debug", "1"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        let diff = HeaderDiff {
            added: vec![("x-forwarded-for".into(), "10.0.0.1".into())],
            removed: vec!["x-debug".into()],
            changed: vec![("x-user".into(), "ann".into(), "bob".into())],
        };
        assert_eq!(
            leaving_header(&client, &diff, "X-User").as_deref(),
            Some("bob")
        );
        assert_eq!(leaving_header(&client, &diff, "x-debug"), None);
        assert_eq!(
            leaving_header(&client, &diff, "x-forwarded-for").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            leaving_header(&client, &diff, "accept").as_deref(),
            Some("a, b")
        );
        assert_eq!(leaving_header(&client, &diff, "cookie"), None);
    }

    #[test]
    fn assertions_judge_forwards_and_answers() {
        let diff = HeaderDiff {
            added: vec![("x-api-version".into(), "1".into())],
            ..HeaderDiff::default()
        };
        let d = forward("/users", diff);
        let h = sent(&[("x-user", "ann")]);
        let judge = |c: Check, d: &Decision| evaluate(&c, d, &h, None);
        assert!(judge(Check::RoutesTo("api".into()), &d).is_ok());
        assert!(judge(Check::RoutesTo("web".into()), &d).is_err());
        assert!(judge(Check::ToService("api".into()), &d).is_ok());
        assert!(judge(Check::ToServer("127.0.0.1:9002".into()), &d).is_err());
        assert_eq!(
            judge(Check::WithPath("/v1/users".into()), &d),
            Err(vec!["leaves with path /users".to_string()])
        );
        assert!(judge(Check::WithHeader("X-Api-Version".into(), "1".into()), &d).is_ok());
        assert_eq!(
            judge(Check::WithHeader("x-user".into(), "bob".into()), &d),
            Err(vec!["leaves with x-user: ann".to_string()])
        );
        assert!(judge(Check::WithoutHeader("x-user".into()), &d).is_err());
        assert!(judge(Check::WithoutHeader("x-debug".into()), &d).is_ok());
        assert!(judge(Check::Answers(200), &d).is_err());
        assert!(judge(Check::NoRoute, &d).is_err());

        let r = answer(301, Some("https://new/"));
        assert!(judge(Check::Answers(301), &r).is_ok());
        assert!(judge(Check::RedirectsTo("https://new/".into()), &r).is_ok());
        assert!(judge(Check::RedirectsTo("https://old/".into()), &r).is_err());
        assert!(judge(Check::NoRoute, &r).is_ok());
        assert_eq!(
            judge(Check::ToService("api".into()), &r),
            Err(vec!["the router answers 301 itself".to_string()])
        );
        // A 200 with a location is not a redirect.
        assert!(judge(
            Check::RedirectsTo("https://new/".into()),
            &answer(200, Some("https://new/"))
        )
        .is_err());
    }

    #[test]
    fn as_recorded_needs_an_outcome_and_names_the_differences() {
        let mut rec = crate::recording::format::parse(
            r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"api.localhost","path":"/v1/users","outcome":{"route":"api","service":"api","server":"127.0.0.1:9001","status":200,"upstream_path":"/users"}}"#,
        )
        .requests
        .remove(0);
        let h = HeaderMap::new();
        let d = forward("/users", HeaderDiff::default());
        assert!(evaluate(&Check::AsRecorded, &d, &h, Some(&rec)).is_ok());
        let moved = Decision {
            route: Some("api-v2".into()),
            ..d.clone()
        };
        let why = evaluate(&Check::AsRecorded, &moved, &h, Some(&rec)).unwrap_err();
        assert_eq!(why, vec!["route: recorded api, now api-v2".to_string()]);
        rec.outcome = None;
        assert!(evaluate(&Check::AsRecorded, &d, &h, Some(&rec)).is_err());
        assert!(evaluate(&Check::AsRecorded, &d, &h, None).is_err());
    }

    #[test]
    fn test_files_beside_the_scripts_and_in_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        for f in [
            "b.test.rhai",
            "a.test.rhai",
            "routes.rhai",
            "tests/c.test.rhai",
            "tests/x.rhai",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let rel: Vec<String> = find_test_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(rel, vec!["a.test.rhai", "b.test.rhai", "tests/c.test.rhai"]);
    }
}
