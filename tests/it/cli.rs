//! The `switchyard` binary as a user runs it: `check` in text and JSON, `run` as a real process
//! (signals, graceful shutdown, JSON logs), configuration precedence and the embedded default.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::*;

/// The binary under test, with no `SWITCHYARD_*` variable inherited from the test environment and
/// `cwd` as its working directory (so the repository's own `scripts/` folder is never picked up).
fn switchyard(cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// Runs `switchyard check --scripts DIR [extra…]` and returns (exit code, stdout, stderr).
fn check(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = switchyard(dir)
        .arg("check")
        .arg("--scripts")
        .arg(dir)
        .args(extra)
        .output()
        .expect("cannot start switchyard");
    (
        out.status.code().expect("check was killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback address nothing listens on right now (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn script_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// 1-based column of the first occurrence of `needle` in `line`.
fn column_of(line: &str, needle: &str) -> usize {
    line.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"))
        + 1
}

// ---------------------------------------------------------------------------------------------
// check

const GOOD: &str = r#"// The app.
let api = service("api").servers(["127.0.0.1:9001", #{address: "127.0.0.1:9002", weight: 3}]);
route("api").rule(host("api.localhost") & path_prefix("/v1")).entrypoints(["web"]).to(api);
route("health")
    .rule("Path(`/health`) && Method(`GET`)")
    .priority(100)
    .to(respond(200, "ok\n"));
route("old").rule(path("/old")).to(redirect("/new", true));
"#;

#[test]
fn check_good_folder_prints_the_table_as_text_and_json() {
    let dir = script_dir(&[("10-app.rhai", GOOD)]);
    let shown = dir.path().display().to_string();

    let (code, out, err) = check(dir.path(), &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "route api  priority 42  entrypoints web  ({shown}/10-app.rhai:3:1)"
        )),
        "{out}"
    );
    assert!(
        out.contains("  rule:    Host(`api.localhost`) && PathPrefix(`/v1`)\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "route health  priority 100  entrypoints all  ({shown}/10-app.rhai:4:1)"
        )),
        "{out}"
    );
    assert!(
        out.contains("  rule:    Path(`/health`) && Method(`GET`)\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "route old  priority 12  entrypoints all  ({shown}/10-app.rhai:8:1)"
        )),
        "{out}"
    );
    assert!(
        out.contains("  target:  service api -> 127.0.0.1:9001, 127.0.0.1:9002\n"),
        "{out}"
    );
    assert!(
        out.contains("service api  balancer weighted_round_robin  (")
            && out.contains("  server 127.0.0.1:9002  weight 3\n"),
        "{out}"
    );
    assert!(out.ends_with("3 routes, 1 services\n"), "{out}");
    // Highest priority first.
    let order: Vec<usize> = ["route health ", "route api ", "route old "]
        .iter()
        .map(|r| out.find(r).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "routes not in priority order:\n{out}"
    );

    let (code, out, err) = check(dir.path(), &["--format", "json"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    let routes = v["routes"].as_array().expect("routes[]");
    assert_eq!(routes.len(), 3);
    for r in routes {
        for key in [
            "name",
            "rule",
            "priority",
            "entrypoints",
            "middlewares",
            "target",
            "declared_at",
        ] {
            assert!(r.get(key).is_some(), "route without {key}: {r}");
        }
        assert!(r["target"]["type"].is_string(), "{r}");
        assert!(r["middlewares"].is_array(), "{r}");
    }
    let api = routes.iter().find(|r| r["name"] == "api").unwrap();
    assert_eq!(api["rule"], "Host(`api.localhost`) && PathPrefix(`/v1`)");
    assert_eq!(api["target"]["type"], "service");
    assert_eq!(api["declared_at"], format!("{shown}/10-app.rhai:3:1"));
    assert_eq!(v["services"][0]["name"], "api");
    assert_eq!(v["services"][0]["servers"][1]["weight"], 3);

    // The temp folder differs on every run: show it as [DIR] in the snapshot.
    let stable: serde_json::Value = serde_json::from_str(&out.replace(&shown, "[DIR]")).unwrap();
    insta::assert_json_snapshot!("check_good_folder_json", stable);
}

#[test]
fn check_bad_folder_reports_file_line_col_with_source_and_caret() {
    let text = "route(\"a\").rule(path(\"/\")).to(respond(200, \"a\"));\n\n    let broken = ;\n";
    let dir = script_dir(&[("x.rhai", text)]);
    let shown = dir.path().display().to_string();
    let bad_line = "    let broken = ;";
    let col = column_of(bad_line, ";");

    let (code, out, err) = check(dir.path(), &[]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.is_empty(),
        "nothing on stdout when the build fails: {out}"
    );
    let head = format!("{shown}/x.rhai:3:{col}: ");
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no line starting with {head:?}:\n{err}"));
    assert!(
        lines[at].len() > head.len(),
        "no message after the position: {err}"
    );
    assert_eq!(
        lines.get(at + 1).copied(),
        Some(format!("  {bad_line}").as_str()),
        "source line:\n{err}"
    );
    assert_eq!(
        lines.get(at + 2).copied(),
        Some(format!("  {}^", " ".repeat(col - 1)).as_str()),
        "caret:\n{err}"
    );

    let (code, out, err) = check(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\nstdout:\n{out}\nstderr:\n{err}"));
    assert_eq!(v["ok"], false, "{v}");
    let errors = v["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{v}");
    let e = &errors[0];
    assert_eq!(e["file"], format!("{shown}/x.rhai"));
    assert_eq!(e["line"], 3);
    assert_eq!(e["column"], col);
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert_eq!(e["source_line"], bad_line);
}

#[test]
fn check_json_reports_load_errors_as_json() {
    let dir = script_dir(&[(
        "x.rhai",
        "route(\"r\").rule(path(\"/\")).to(respond(200, \"ok\"));\n",
    )]);
    let missing = dir.path().join("missing.json");
    let (code, stdout, _) = check(
        dir.path(),
        &["--format", "json", "--catalog", missing.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert_eq!(v["ok"], false);
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("cannot read catalog"), "{v}");
    assert_eq!(
        message.matches("os error").count(),
        1,
        "the cause is said once: {message}"
    );
}

#[test]
fn check_bad_rule_string_points_at_the_rule_call() {
    let rule_line = "    .rule(\"Host(`a.com`) && Pth(`/`)\")";
    let text =
        format!("route(\"bad\")\n    .priority(5)\n{rule_line}\n    .to(respond(200, \"x\"));\n");
    let dir = script_dir(&[("x.rhai", &text)]);
    let shown = dir.path().display().to_string();
    // The column of `rule` in the script, and of `Pth` inside the rule string.
    let call_col = column_of(rule_line, ".rule(") + 1;
    let rule_col = column_of("Host(`a.com`) && Pth(`/`)", "Pth");

    let (code, out, err) = check(dir.path(), &[]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let head = format!("{shown}/x.rhai:3:{call_col}: ");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with(&head), "expected {head:?}…, got:\n{err}");
    assert!(
        first.contains(&format!("invalid rule at column {rule_col}")),
        "{err}"
    );
    assert!(first.contains("Pth"), "{err}");
    assert!(
        err.contains(&format!("\n  {rule_line}\n")),
        "source line:\n{err}"
    );

    let (code, out, _) = check(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    assert_eq!(v["errors"][0]["column"], call_col, "{v}");
}

#[test]
fn check_json_lists_label_warnings_by_container_and_label() {
    let dir = script_dir(&[(
        "10-traefik.rhai",
        "import \"traefik\" as t;\nt::routes(catalog);\n",
    )]);
    std::fs::write(
        dir.path().join("catalog.json"),
        r#"[{"name":"bad","provider":"docker","servers":["10.0.0.1:80"],
             "labels":{"traefik.http.services.s.loadbalancer.server.port":"x"},
             "container":{"id":"c1","name":"shop_bad_1","state":"running"}},
            {"name":"good","provider":"docker","servers":["10.0.0.2:80"],"labels":{}}]"#,
    )
    .unwrap();
    let catalog = dir.path().join("catalog.json");
    let (code, out, err) = check(
        dir.path(),
        &["--format", "json", "--catalog", catalog.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["routes"].as_array().map(Vec::len), Some(1), "{v}");
    let w = &v["warnings"][0];
    assert_eq!(w["subject"]["kind"], "container", "{v}");
    assert_eq!(w["subject"]["name"], "shop_bad_1", "{v}");
    assert_eq!(
        w["label"], "traefik.http.services.s.loadbalancer.server.port",
        "{v}"
    );
    assert!(w.get("file").is_none(), "no stdlib position: {w}");
    // The text form names the container and label, not a line of the shipped module.
    assert!(
        err.contains("warning: traefik: container \"shop_bad_1\": label traefik.http.services.s"),
        "{err}"
    );
    assert!(!err.contains("stdlib/"), "{err}");
}

/// `docker inspect` output of a container on a bridge network with its port published on
/// 127.0.0.1:18080 (the shape the engine prints, trimmed to what the provider reads).
const BRIDGED_INSPECT: &str = r#"[{
  "Id": "3f2a9c1d2e4b",
  "Name": "/shop-web-1",
  "State": { "Status": "running", "Running": true, "Paused": false },
  "Config": {
    "Labels": {
      "traefik.http.routers.web.rule": "Host(`shop.test`)",
      "com.docker.compose.project": "shop",
      "com.docker.compose.service": "web"
    },
    "ExposedPorts": { "80/tcp": {} }
  },
  "HostConfig": { "NetworkMode": "bridge" },
  "NetworkSettings": {
    "Ports": { "80/tcp": [ { "HostIp": "127.0.0.1", "HostPort": "18080" } ] },
    "Networks": { "bridge": { "IPAddress": "172.17.0.5" } }
  }
}]"#;

#[test]
fn catalog_from_inspect_and_use_bind_port_ip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inspect.json");
    std::fs::write(&file, BRIDGED_INSPECT).unwrap();
    let servers = |extra: &[&str]| -> serde_json::Value {
        let out = switchyard(dir.path())
            .arg("catalog")
            .arg("--from-inspect")
            .arg(&file)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["servers"].clone()
    };
    // The network address by default; the published 127.0.0.1 binding with useBindPortIP.
    assert_eq!(servers(&[]), serde_json::json!(["172.17.0.5:80"]));
    assert_eq!(
        servers(&["--docker", "--docker.use-bind-port-ip=true"]),
        serde_json::json!(["127.0.0.1:18080"])
    );
}

// ---------------------------------------------------------------------------------------------
// run

/// A `switchyard` process whose stderr is collected line by line. Killed if dropped while running.
struct Running {
    child: tokio::process::Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn(cmd: std::process::Command) -> Running {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("cannot start switchyard");
        let pid = child.id().expect("no pid");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            // Ends at EOF, i.e. when the process exits.
            while let Ok(Some(line)) = r.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            pid,
            lines,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// Waits until `addr` accepts connections; fails at once if the process exits.
    async fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..2000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.finish_reader().await;
                panic!(
                    "switchyard exited ({status}) before listening on {addr}:\n{}",
                    self.stderr()
                );
            }
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listening on {addr} after 20 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nothing listening on {addr}:\n{}", self.stderr());
    }

    /// Waits until at least `count` stderr lines satisfy `pred`; fails at once if the process
    /// exits first.
    async fn wait_log(&mut self, what: &str, count: usize, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for _ in 0..1500 {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| pred(l))
                .count();
            if found >= count {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.finish_reader().await;
                panic!(
                    "switchyard exited ({status}) before its log showed {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {what} ({count}×):\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("log never showed {what}:\n{}", self.stderr());
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "switchyard still running after {within:?}:\n{}",
                self.stderr()
            ),
        };
        self.finish_reader().await;
        status
    }

    async fn finish_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
    }
}

/// A TCP relay in front of `backend`; `forwarded` fires once the first request bytes reached the
/// backend (so the router is provably in the middle of that request).
async fn relay(backend: SocketAddr) -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, forwarded) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        for _ in 0..16 {
            let Ok((mut down, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.take();
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(backend).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let n = match down.read(&mut buf).await {
                    Ok(n) if n > 0 => n,
                    _ => return,
                };
                if up.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    (addr, forwarded)
}

/// The `fields.message` of a JSON log line.
fn json_message(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["fields"]["message"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_reloads_on_sighup_and_drains_on_sigterm() {
    let mut backend = Backend::start("slowpoke").await;
    let (relay_addr, forwarded) = relay(backend.addr).await;
    let script = format!(
        r#"
        route("hello").rule(path("/")).to(respond(200, "hello from a process\n"));
        route("slow").rule(host("slow.test")).priority(1000).to(service("who").servers(["{relay_addr}"]));
        "#
    );
    let dir = script_dir(&[("10-run.rhai", &script)]);
    let (web, admin) = (free_addr(), free_addr());
    let mut cmd = switchyard(dir.path());
    cmd.arg("run").arg("--scripts").arg(dir.path());
    cmd.args([
        "--entrypoint",
        &format!("web={web}"),
        "--admin",
        &admin.to_string(),
        "--log-format",
        "json",
        "--grace-period",
        "5s",
    ]);
    let mut p = Running::spawn(cmd);
    p.wait_listening(web).await;

    let hello = get(web, "example.test", "/").await;
    assert_eq!(
        (hello.status.as_u16(), hello.body.as_str()),
        (200, "hello from a process\n")
    );
    p.wait_listening(admin).await;
    let before = get(admin, "localhost", "/api/scripts").await.json();
    assert_eq!(before["ok"], true, "{before}");
    assert_eq!(before["attempt"], 1, "{before}");

    // SIGHUP with nothing changed still rebuilds.
    p.signal("HUP");
    let built =
        |l: &str| json_message(l).as_deref() == Some("scripts built; new route table is live");
    p.wait_log("a second build", 2, built).await;
    let after = get(admin, "localhost", "/api/scripts").await.json();
    assert_eq!(after["attempt"], 2, "{after}");
    assert_eq!(after["live_attempt"], 2, "{after}");
    assert_eq!(after["ok"], true, "{after}");
    assert!(
        p.stderr()
            .lines()
            .any(|l| json_message(l).as_deref() == Some("SIGHUP: reloading scripts")),
        "{}",
        p.stderr()
    );

    // A slow request in flight when SIGTERM arrives still completes.
    let slow = tokio::spawn(async move { get(web, "slow.test", "/?delay=1500ms").await });
    tokio::time::timeout(Duration::from_secs(10), forwarded)
        .await
        .expect("the slow request never reached the backend")
        .unwrap();
    let term_at = Instant::now();
    p.signal("TERM");
    // While draining, the entrypoint stops accepting.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(web).await.is_err() {
            refused = true;
            break;
        }
        if term_at.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the entrypoint kept accepting after SIGTERM");
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow request hung")
        .expect("slow request panicked");
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(slow.backend(), Some("slowpoke"));
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}:\n{}", p.stderr());
    assert!(
        term_at.elapsed() < Duration::from_secs(5),
        "took {:?} to exit (grace period 5 s)",
        term_at.elapsed()
    );
    assert!(
        TcpStream::connect(web).await.is_err(),
        "entrypoint still accepts after exit"
    );
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin still accepts after exit"
    );

    let log = p.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few log lines:\n{log}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| json_message(l).as_deref() == Some("SIGTERM: shutting down")),
        "{log}"
    );
    assert_eq!(
        lines.last().and_then(|l| json_message(l)).as_deref(),
        Some("stopped"),
        "{log}"
    );
    backend.stop();
}

#[tokio::test]
async fn config_file_env_and_flags_merge_and_unknown_keys_fail() {
    let from_file = script_dir(&[(
        "10.rhai",
        r#"route("r").rule(path("/")).to(respond(200, "from the file's folder"));"#,
    )]);
    let from_env = script_dir(&[(
        "10.rhai",
        r#"route("r").rule(path("/")).to(respond(200, "from the env folder"));"#,
    )]);
    let cwd = tempfile::tempdir().unwrap();
    let web = free_addr();
    let config = cwd.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "scripts = {:?}\nadmin = \"off\"\n\n[entrypoints]\nweb = \"{web}\"\n",
            from_file.path().display().to_string()
        ),
    )
    .unwrap();

    let mut cmd = switchyard(cwd.path());
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("SWITCHYARD_SCRIPTS", from_env.path());
    let mut p = Running::spawn(cmd);
    p.wait_listening(web).await;
    let reply = get(web, "x", "/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "from the env folder"),
        "env beats the file"
    );
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", p.stderr());
    let log = p.stderr();
    assert!(
        log.contains(&from_env.path().display().to_string()),
        "log names the scripts folder in use:\n{log}"
    );
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains("admin API listening"),
        "admin = \"off\" in the file was ignored:\n{log}"
    );

    // A misspelt key fails at once, naming the key.
    std::fs::write(&config, format!("entrypoint = \"web={web}\"\n")).unwrap();
    let mut cmd = switchyard(cwd.path());
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("SWITCHYARD_SCRIPTS", from_env.path());
    let mut p = Running::spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(
        !status.success(),
        "started despite an unknown key:\n{}",
        p.stderr()
    );
    let err = p.stderr();
    assert!(err.contains("unknown field `entrypoint`"), "{err}");
    assert!(
        err.contains(&config.display().to_string()),
        "error names the file: {err}"
    );
}

#[tokio::test]
async fn run_without_scripts_folder_uses_the_embedded_default() {
    let cwd = tempfile::tempdir().unwrap();
    let web = free_addr();
    let mut cmd = switchyard(cwd.path());
    cmd.args([
        "run",
        "--entrypoint",
        &format!("web={web}"),
        "--admin",
        "off",
    ]);
    let mut p = Running::spawn(cmd);
    p.wait_listening(web).await;
    let reply = get(web, "localhost", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("Hello from switchyard"), "{reply:?}");
    assert_eq!(get(web, "localhost", "/health").await.body, "ok\n");
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", p.stderr());
    assert!(p.stderr().contains("embedded default"), "{}", p.stderr());
}

/// Regression test for a startup race: the listeners accept while the first build still runs, so
/// a SIGHUP in that window must be queued as a reload, not kill the process (signal handlers are
/// installed before binding).
#[tokio::test]
async fn sighup_during_the_first_build_does_not_kill_the_process() {
    // About a second of script work before the route is declared.
    let script = "let n = 0; while n < 1500000 { n += 1; }\nroute(\"r\").rule(path(\"/\")).to(respond(200, \"ok\"));\n";
    let dir = script_dir(&[("10-slow.rhai", script)]);
    let web = free_addr();
    let mut cmd = switchyard(dir.path());
    cmd.arg("run").arg("--scripts").arg(dir.path());
    cmd.args(["--entrypoint", &format!("web={web}"), "--admin", "off"]);
    let mut p = Running::spawn(cmd);
    p.wait_listening(web).await;
    p.signal("HUP");
    // The first build, then the rebuild the SIGHUP asked for.
    p.wait_log("two builds", 2, |l| l.contains("scripts built"))
        .await;
    let reply = get(web, "x", "/").await;
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok"));
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", p.stderr());
}

/// The "Security at the edge" TOML example of docs/configuration.md and the
/// `--entrypoint.NAME.KEY` flags, through the real binary: accepted as written, and a misspelt
/// key is an error naming it.
#[test]
fn entrypoint_options_from_the_docs_and_flags() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let section = doc
        .split("## Security at the edge")
        .nth(1)
        .expect("docs/configuration.md has a security section");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the section has a TOML example");
    let dir = script_dir(&[(
        "a.rhai",
        "route(\"r\").rule(path_prefix(\"/\")).to(respond(200, \"ok\"));",
    )]);
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, toml).unwrap();
    let config = config.to_string_lossy().into_owned();
    let (code, _, err) = check(dir.path(), &["--config", &config]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = check(
        dir.path(),
        &[
            "--entrypoint.web.max-connections=5",
            "--entrypoint.web.path.allow-above-root",
            "--entrypoint.web.path.merge-slashes",
            "false",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = check(dir.path(), &["--entrypoint.web.max-conections=5"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown entrypoint option \"max-conections\""),
        "{err}"
    );
    let (code, _, err) = check(dir.path(), &["--entrypoint.api.max-connections=5"]);
    assert_ne!(code, 0);
    assert!(err.contains("there is no entrypoint \"api\""), "{err}");
}

/// One Docker provider setting through its three spellings: the flag beats the environment,
/// which beats `[providers.docker]` in the file. What won shows in the error of
/// `switchyard catalog`, which names the endpoint it could not reach.
#[tokio::test]
async fn docker_settings_flag_over_env_over_file() {
    let cwd = tempfile::tempdir().unwrap();
    let [file_ep, env_ep, flag_ep] =
        [dead_addr().await, dead_addr().await, dead_addr().await].map(|a| format!("tcp://{a}"));
    let config = cwd.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!("[providers.docker]\nendpoint = {file_ep:?}\n"),
    )
    .unwrap();
    let tried = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = switchyard(cwd.path());
        cmd.arg("catalog").arg("--config").arg(&config);
        if let Some(e) = env {
            cmd.env("SWITCHYARD_DOCKER_ENDPOINT", e);
        }
        if let Some(f) = flag {
            cmd.arg("--docker.endpoint").arg(f);
        }
        let out = cmd.output().expect("cannot start switchyard");
        assert!(!out.status.success(), "nothing listens there");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = tried(None, None);
    assert!(err.contains(&file_ep), "the file's endpoint: {err}");
    let err = tried(Some(&env_ep), None);
    assert!(
        err.contains(&env_ep) && !err.contains(&file_ep),
        "env over file: {err}"
    );
    let err = tried(Some(&env_ep), Some(&flag_ep));
    assert!(
        err.contains(&flag_ep) && !err.contains(&env_ep),
        "flag over env: {err}"
    );
}

/// `check` on a folder without scripts, or with scripts that read a catalog nobody gave, says so
/// on stderr; `--strict` turns those warnings into exit code 1 for CI.
#[test]
fn check_warns_about_empty_inputs_and_strict_fails_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = check(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: no route scripts (*.rhai)"), "{err}");
    let (code, _, err) = check(dir.path(), &["--strict"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--strict makes warnings fail"), "{err}");

    std::fs::write(
        dir.path().join("10-labels.rhai"),
        "import \"traefik\" as traefik;\ntraefik::routes(catalog);\n",
    )
    .unwrap();
    let (code, _, err) = check(dir.path(), &["--strict"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reads `catalog`, but no --catalog"), "{err}");

    std::fs::write(dir.path().join("catalog.json"), "[]").unwrap();
    let catalog = dir.path().join("catalog.json");
    let (code, _, err) = check(
        dir.path(),
        &["--strict", "--catalog", catalog.to_str().unwrap()],
    );
    assert_eq!(
        code, 0,
        "a given catalog, even empty, is not a warning: {err}"
    );
}

/// A first build that fails: by default the router serves an empty table and says there is no
/// earlier one; with `--require-valid-start true` it exits 1 instead.
#[tokio::test]
async fn a_failed_first_build_is_named_and_can_stop_the_start() {
    let dir = script_dir(&[("10-broken.rhai", "route(\"r\").rule(path(\"/\")).to(\n")]);
    let web = free_addr();
    let args = |extra: &[&str]| {
        let mut cmd = switchyard(dir.path());
        cmd.arg("run")
            .arg("--scripts")
            .arg(dir.path())
            .args(["--entrypoint", &format!("web={web}"), "--admin", "off"])
            .args(extra);
        cmd
    };
    let mut p = Running::spawn(args(&[]));
    p.wait_listening(web).await;
    assert_eq!(get(web, "x", "/").await.status, 404);
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let log = p.stderr();
    assert!(log.contains("no route table was built yet"), "{log}");
    assert!(!log.contains("last good route table"), "{log}");

    let mut p = Running::spawn(args(&["--require-valid-start", "true"]));
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    assert!(
        p.stderr().contains("--require-valid-start"),
        "{}",
        p.stderr()
    );
}

/// `check` runs every hook and predicate once on a made-up request: a mistake in a function
/// body is a warning at its file:line:col with the source line (an error with `--strict`),
/// not a 500 found in production.
#[test]
fn check_exercises_hooks_and_predicates_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-hooks.rhai"),
        "fn bad(req, ctx) {\n    let x = ctx.rout;\n    x\n}\n\
         fn gate(req) { req.headr(\"x\") == \"1\" }\n\
         fn fine(req, ctx) { req.set_header(\"x-ok\", \"1\"); }\n\
         route(\"a\").rule(\"Host(`a.test`)\").middlewares([on_request(Fn(\"bad\"))]).to(respond(200, \"a\"));\n\
         route(\"b\").rule(predicate(Fn(\"gate\"))).to(respond(200, \"b\"));\n\
         route(\"c\").rule(\"Host(`c.test`)\").middlewares([on_request(Fn(\"fine\"))]).to(respond(200, \"c\"));\n",
    )
    .unwrap();
    let (code, out, err) = check(dir.path(), &[]);
    assert_eq!(code, 0, "hook problems are warnings: {err}");
    assert!(out.contains("3 routes"), "{out}");
    assert!(
        err.contains("10-hooks.rhai:2:17: route a (on_request(Fn(\"bad\"))) fails on a made-up GET a.test/: Unknown property 'rout'"),
        "{err}"
    );
    assert!(
        err.contains("    let x = ctx.rout;"),
        "the source line: {err}"
    );
    assert!(
        err.contains("10-hooks.rhai:5:") && err.contains("route b (its rule)"),
        "{err}"
    );
    assert!(
        !err.contains("route c"),
        "a working hook is not reported: {err}"
    );
    let (code, _, err) = check(dir.path(), &["--strict"]);
    assert_eq!(code, 1, "{err}");
}

/// Shell completions, the man page and the editor definitions are generated from the CLI and
/// the script API themselves, so they name what exists.
#[test]
fn completions_man_page_and_editor_definitions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = |args: &[&str]| {
        let o = switchyard(dir.path()).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let bash = out(&["completions", "bash"]);
    assert!(
        bash.contains("_switchyard()") && bash.contains("--docker.endpoint"),
        "{bash}"
    );
    assert!(out(&["completions", "zsh"]).contains("#compdef switchyard"));
    assert!(out(&["completions", "fish"]).contains("complete -c switchyard"));
    let man = out(&["man"]);
    assert!(man.contains(".TH switchyard 1"), "{man}");
    assert!(
        man.contains(".TH switchyard-run") && man.contains("tls.certificate"),
        "{man}"
    );

    let defs = dir.path().join("defs");
    out(&["definitions", defs.to_str().unwrap()]);
    let api = std::fs::read_to_string(defs.join("__static__.d.rhai")).unwrap();
    for f in [
        "fn route(",
        "fn strip_prefix(",
        "fn tls_certificate(",
        "fn service(",
    ] {
        assert!(api.contains(f), "{f} missing from the definitions");
    }
    assert!(!api.contains("EvalAltResult"), "no mangled return types");
    let scope = std::fs::read_to_string(defs.join("__scope__.d.rhai")).unwrap();
    assert!(scope.contains("catalog"), "{scope}");
}
