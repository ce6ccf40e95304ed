//! `switchyard repl` as a user drives it: the real binary in a pseudo-terminal (rexpect), a
//! scripts folder and a recording in a tempdir. rexpect reads bytes as Latin-1, so needles are
//! ASCII (the `→`, `≠`, `✓` around them are checked by the unit tests of the renderers).
//!
//! Every expectation is bounded by the session's timeout, so a hang fails the test instead of
//! stalling the suite.

use std::path::Path;
use std::process::Command;

use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};

const TIMEOUT_MS: u64 = 20_000;
const PROMPT: &str = "switchyard> ";

const ROUTES: &str = r#"
let api = service("api").servers(["127.0.0.1:9101"]);
route("api").rule(host("api.x.com")).priority(10).to(api);
route("www").rule(host("www.x.com")).priority(5).to(service("www").servers(["127.0.0.1:9102"]));
"#;

const RECORDING: &str = concat!(
    r#"{"id":1,"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"api.x.com","path":"/v1/users","headers":[["host","api.x.com"],["user-agent","curl/8"]],"outcome":{"route":"api","service":"api","server":"127.0.0.1:9101","status":200,"duration_ms":1.5}}"#,
    "\n",
    r#"{"id":2,"time":"2026-12-03T07:00:01.000Z","method":"GET","host":"www.x.com","path":"/index.html","headers":[["host","www.x.com"]],"outcome":{"route":"www","service":"www","server":"127.0.0.1:9102","status":200,"duration_ms":0.8}}"#,
    "\n",
    "not json\n",
);

fn spawn_repl(dir: &Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    // History goes to the tempdir, never to the real home.
    cmd.env("HOME", dir)
        .env_remove("XDG_STATE_HOME")
        .env("TERM", "xterm")
        .current_dir(dir)
        .arg("repl")
        .arg("--scripts")
        .arg(dir.join("scripts"))
        .arg("--requests")
        .arg(dir.join("requests.jsonl"));
    let opts = Options::new()
        .timeout_ms(Some(TIMEOUT_MS))
        .strip_ansi_escape_codes(true);
    spawn_with_options(cmd, opts).expect("cannot start switchyard repl")
}

/// Sends `line` and waits for each of `want` in order, then for the next prompt.
fn step(p: &mut PtySession, line: &str, want: &[&str]) {
    p.send_line(line).unwrap();
    for w in want {
        if let Err(e) = p.exp_string(w) {
            panic!("after {line:?}: expected {w:?}: {e}");
        }
    }
    p.exp_string(PROMPT)
        .unwrap_or_else(|e| panic!("after {line:?}: no prompt: {e}"));
}

#[test]
fn explore_a_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::write(scripts.join("routes.rhai"), ROUTES).unwrap();
    std::fs::write(tmp.path().join("requests.jsonl"), RECORDING).unwrap();

    let mut p = spawn_repl(tmp.path());
    p.exp_string("2 routes from").unwrap();
    p.exp_string("requests.jsonl:3: skipped").unwrap();
    p.exp_string("loaded 2 requests").unwrap();
    p.exp_string(PROMPT).unwrap();

    step(
        &mut p,
        ":list",
        &[
            "#1 GET api.x.com/v1/users ",
            " api 200",
            "#2 GET www.x.com/index.html ",
            " www 200",
        ],
    );
    step(
        &mut p,
        ":list route=www",
        &["#2 GET www.x.com/index.html ", " www 200"],
    );
    step(
        &mut p,
        ":run 1",
        &[
            "route   api (",
            "forward api @ 127.0.0.1:9101  GET /v1/users",
        ],
    );
    step(
        &mut p,
        ":explain 2",
        &[
            " api (priority 10",
            "Host(`api.x.com`) ",
            " host \"www.x.com\"",
            " www (priority 5",
            "forward www @ 127.0.0.1:9102",
        ],
    );
    // :explain selected #2, so `req` is that request.
    step(&mut p, "req.path", &["\"/index.html\""]);
    // An open bracket continues the expression on the next line.
    p.send_line("[req.path.len(),").unwrap();
    step(&mut p, "42]", &["[11, 42]"]);
    step(&mut p, "req.path +* 1", &["expr:1:", "req.path +* 1", "^"]);
    // Tab completes the command name.
    p.send(":sho\t").unwrap();
    p.flush().unwrap();
    step(&mut p, " 1", &["entrypoint  web", "user-agent: curl/8"]);

    // A broken edit: the errors with file:line:col and a caret, and the old table keeps deciding.
    std::fs::write(
        scripts.join("routes.rhai"),
        format!("{ROUTES}\nroute(\"bad\").rule(host(\"b.com\")).to(;\n"),
    )
    .unwrap();
    p.send_line(":reload").unwrap();
    p.exp_regex(r"routes\.rhai:\d+:\d+: ").unwrap();
    p.exp_string("^").unwrap();
    p.exp_string("kept the previous scripts (2 routes)")
        .unwrap();
    p.exp_string(PROMPT).unwrap();
    step(&mut p, ":run 1", &["forward api @ 127.0.0.1:9101"]);

    // The fix reloads (by :reload or by the watcher, whichever comes first) and decides anew.
    std::fs::write(
        scripts.join("routes.rhai"),
        ROUTES.replace("127.0.0.1:9101", "127.0.0.1:9201"),
    )
    .unwrap();
    step(&mut p, ":reload", &["scripts reloaded (2 routes)"]);
    step(&mut p, ":run 1", &["forward api @ 127.0.0.1:9201"]);

    // A typed-in request gets an id, is decided and becomes `req`.
    step(
        &mut p,
        "GET http://api.x.com/v2/things H:X-User=alice",
        &[
            "#a1 GET api.x.com/v2/things",
            "forward api @ 127.0.0.1:9201",
        ],
    );
    step(&mut p, "req.header(\"x-user\")", &["\"alice\""]);
    step(
        &mut p,
        "GET http://nowhere.x.com/",
        &["#a2 GET nowhere.x.com/", "route   none", "answer  404"],
    );

    // `GET /path` goes to the last request's host; quoted values keep their spaces.
    step(
        &mut p,
        "GET /v3 H:User-Agent=\"curl 8 beta\"",
        &["#a3 GET nowhere.x.com/v3", "route   none"],
    );
    step(&mut p, "req.header(\"user-agent\")", &["\"curl 8 beta\""]);
    // An unknown entrypoint is said to be unknown, not decided as a 404.
    step(
        &mut p,
        "GET http://api.x.com/ E:nosuch",
        &["error: unknown entrypoint \"nosuch\" (known: web)"],
    );
    // `let` variables survive to the next line; `help` works without the colon.
    step(&mut p, "let n = req.path.len();", &[]);
    step(&mut p, "n * 2", &["6"]);
    step(&mut p, "help", &[":list", "keeps x for later lines"]);

    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
    assert!(
        tmp.path().join(".switchyard_history").exists(),
        "history is saved in $HOME"
    );
}
