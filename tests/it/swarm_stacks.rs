//! The Swarm examples as their READMEs run them: `docker stack deploy` of each `examples/*`
//! stack file on the rig's single-node Swarm, the router itself deployed as a service from the
//! image `./Dockerfile` builds, and real clients (HTTP, Python `websockets`) on loopback.
//!
//! The files are used unchanged; only their `${VAR:-default}` settings are given (the router
//! image, the rig's socket, and fresh loopback ports so tests never collide). Every example's
//! router reads the whole Swarm, so stack tests run one at a time, and each removes its stacks
//! when it ends, also when it fails.

// See docker_provider.rs: the rig's use lock is held across awaits on purpose; so is STACKS.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::docker::{container_name, free_port, slot_ports, wait_listening, DockerRig};
use crate::support::*;

static STACKS: Mutex<()> = Mutex::new(());

/// The `python3` the tests run, with the `websockets` package (its sync client): installed from
/// PyPI with pip on first use when missing (also where the interpreter is an externally managed
/// system one).
fn python_with_websockets() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let has = || {
            Command::new("python3")
                .args(["-c", "import websockets.sync.client"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if has() {
            return;
        }
        for extra in [&[][..], &["--break-system-packages"][..]] {
            let _ = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .arg("websockets")
                .status();
            if has() {
                return;
            }
        }
        panic!("python3 has no `websockets` package and pip could not install it");
    });
    "python3"
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// A deployed stack; removed on drop (its services' logs are printed first when the test
/// panicked, so a failure shows what the router said).
struct Stack<'a> {
    rig: &'a DockerRig,
    name: String,
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ids = self.rig.docker(&[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.name),
            ]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let logs = self
                    .rig
                    .docker(&["service", "logs", "--raw", "--tail", "40", id]);
                eprintln!(
                    "--- service {id} of stack {}:\n{}{}",
                    self.name,
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        let _ = self.rig.docker(&["stack", "rm", &self.name]);
    }
}

/// `docker stack deploy -c <examples/file> <name>` with the example's variables `vars`, plus the
/// router image and the rig's socket.
fn deploy<'a>(rig: &'a DockerRig, file: &str, name: &str, vars: &[(&str, String)]) -> Stack<'a> {
    let mut cmd = rig.command();
    cmd.env("SWITCHYARD_IMAGE", rig.router_image())
        .env("SOCAT_IMAGE", "switchyard-test/socat:latest")
        .env("DOCKER_SOCKET", &rig.socket)
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(example(file))
        .arg(name)
        .current_dir(example(file).parent().unwrap_or(Path::new(".")));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running docker stack deploy");
    assert!(
        out.status.success(),
        "docker stack deploy {file} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Stack {
        rig,
        name: name.to_string(),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Fresh ports for one example's `WEB_PORT`, `ADMIN_PORT` and replica port prefix.
struct Ports {
    web: u16,
    admin: u16,
    prefix: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            web: free_port(),
            admin: free_port(),
            prefix: slot_ports(),
        }
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WEB_PORT", self.web.to_string()),
            ("ADMIN_PORT", self.admin.to_string()),
            ("APP_PORT_PREFIX", self.prefix.to_string()),
        ]
    }
}

/// Names of the servers (`X-Whoami-Name`) that answer `n` requests, with their counts.
async fn spread(
    web: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let rep = send(web, "GET", host, path, headers, "").await;
        if rep.status == 200 {
            if let Some(name) = rep.backend() {
                *seen.entry(name.to_string()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Waits until exactly `names` answer (at most `within`); returns the time it took.
async fn until_servers(
    web: SocketAddr,
    host: &str,
    names: &[String],
    within: Duration,
) -> Duration {
    let want: BTreeSet<String> = names.iter().cloned().collect();
    let start = Instant::now();
    loop {
        let seen: BTreeSet<String> = spread(web, host, "/", &[], names.len() * 4)
            .await
            .into_keys()
            .collect();
        if seen == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{host}: {seen:?} answer, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the router on `web` serves `whoami.docker.localhost` from the four `whoami-N`
/// replicas, then checks round robin: 40 requests, 10 each.
async fn four_whoami_in_round_robin(web: SocketAddr) {
    wait_listening(web, Duration::from_secs(60));
    let host = "whoami.docker.localhost";
    until_servers(web, host, &names("whoami", 4), Duration::from_secs(60)).await;
    let counts = spread(web, host, "/", &[], 40).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10; 4],
        "{counts:?}"
    );
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The `name=value` part of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test]
async fn swarm_sticky_stays_sticky_while_scaling_to_five() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let stack = container_name("sticky").replace('-', "");
    let _s = deploy(rig, "swarm-sticky/stack.yml", &stack, &ports.vars());
    let web = loopback(ports.web);
    wait_listening(web, Duration::from_secs(60));
    // The article's rule is `Method: GET, POST, PUT`: any host.
    until_servers(
        web,
        "sticky.localhost",
        &names("app", 2),
        Duration::from_secs(60),
    )
    .await;

    let first = get(web, "sticky.localhost", "/").await;
    let set_cookie = first
        .header("set-cookie")
        .expect("a sticky cookie")
        .to_string();
    let pinned = first.backend().expect("a server name").to_string();
    let cookie = cookie_pair(&set_cookie);
    let stuck = spread(web, "sticky.localhost", "/", &[("cookie", &cookie)], 20).await;
    assert_eq!(stuck, BTreeMap::from([(pinned.clone(), 20)]));
    // The app sees who asked (the article's X-Forwarded headers).
    assert!(
        first.body.contains("X-Forwarded-For: 127.0.0.1")
            && first.body.contains("X-Forwarded-Host: sticky.localhost"),
        "{}",
        first.body
    );

    let t0 = Instant::now();
    rig.docker_ok(&["service", "scale", "--detach", &format!("{stack}_app=5")]);
    until_servers(
        web,
        "sticky.localhost",
        &names("app", 5),
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "swarm-sticky: docker service scale app=5 → all 5 replicas routed by the router service: {:?}",
        t0.elapsed()
    );
    let still = spread(web, "sticky.localhost", "/", &[("cookie", &cookie)], 20).await;
    assert_eq!(
        still,
        BTreeMap::from([(pinned, 20)]),
        "the session moved after the scale-up"
    );
}

#[tokio::test]
async fn swarm_global_publishes_its_admin_api_and_balances_four_replicas() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let stack = container_name("global").replace('-', "");
    let _s = deploy(rig, "swarm-global/stack.yml", &stack, &ports.vars());
    let web = loopback(ports.web);
    four_whoami_in_round_robin(web).await;

    // The admin API through the router itself (`service=api@internal` label on the router).
    let api = poll_get(
        web,
        "proxy.localhost",
        "/api/routes",
        Duration::from_secs(30),
        // Whole: under load a read can end before the body does.
        |r| r.status == 200 && serde_json::from_str::<serde_json::Value>(&r.body).is_ok(),
    )
    .await;
    let routes = api.json();
    let listed: Vec<String> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    assert!(
        listed.iter().any(|n| n.starts_with("dashboard@"))
            && listed.iter().any(|n| n.contains("whoami")),
        "{listed:?}"
    );
    // Global on the manager, with the article's limits.
    let spec = rig.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Mode}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}}",
        &format!("{stack}_router"),
    ]);
    assert_eq!(spec, r#"{"Global":{}} 500000000 262144000"#);
}

#[tokio::test]
async fn websocket_example_echoes_through_the_path_prefix_with_a_sticky_cookie() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let stack = container_name("wsk").replace('-', "");
    let _s = deploy(rig, "websocket/stack.yml", &stack, &ports.vars());
    let web = loopback(ports.web);
    wait_listening(web, Duration::from_secs(60));
    // HTTP first: /wsk/... reaches the app as `/` (replacepath), with the article's cookie.
    let served = poll_get(
        web,
        "localhost",
        "/wsk/socket.io/",
        Duration::from_secs(60),
        |r| r.status == 200 && r.backend().is_some(),
    )
    .await;
    assert!(served.body.contains("GET / HTTP/1.1"), "{}", served.body);
    let set_cookie = served
        .header("set-cookie")
        .expect("sticky cookie")
        .to_string();
    assert!(set_cookie.starts_with("io="), "{set_cookie}");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.to_ascii_lowercase().contains("samesite"),
        "{set_cookie}"
    );
    assert_eq!(get(web, "localhost", "/other").await.backend(), None);

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/ws_client.py");
    let url = format!("ws://127.0.0.1:{}/wsk", ports.web);
    let ws = |cookie: &str| {
        let out = Command::new(python_with_websockets())
            .arg(&client)
            .arg(&url)
            .arg(cookie)
            .args(["hello", "wörld"])
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Both replicas take websockets; a client with the cookie always gets the same one.
    let mut fresh = BTreeSet::new();
    let start = Instant::now();
    while fresh.len() < 2 {
        let r = ws("");
        assert_eq!(r["status"], 101, "{r}");
        assert_eq!(r["echoes"], serde_json::json!(["hello", "wörld"]), "{r}");
        assert!(
            r["set_cookie"]
                .as_str()
                .is_some_and(|c| c.starts_with("io=")),
            "{r}"
        );
        fresh.insert(r["server"].as_str().unwrap_or_default().to_string());
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "one replica only: {fresh:?}"
        );
    }
    let cookie = cookie_pair(&set_cookie);
    let pinned = served.backend().expect("server name").to_string();
    for _ in 0..5 {
        let r = ws(&cookie);
        assert_eq!(r["server"], pinned.as_str(), "{r}");
        assert_eq!(
            r["set_cookie"],
            serde_json::Value::Null,
            "a valid cookie is not reissued: {r}"
        );
    }
}

#[tokio::test]
async fn blue_green_switches_without_touching_the_router_or_failing_a_request() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let tag = container_name("bg").replace('-', "");
    let _router = deploy(
        rig,
        "blue-green/router.yml",
        &format!("{tag}router"),
        &ports.vars(),
    );
    let blue_vars = vec![
        ("VERSION", "blue".to_string()),
        ("PRIORITY", "10".to_string()),
        ("PORT_PREFIX", slot_ports().to_string()),
    ];
    let blue = deploy(rig, "blue-green/app.yml", &format!("{tag}blue"), &blue_vars);
    let web = loopback(ports.web);
    wait_listening(web, Duration::from_secs(60));
    until_servers(
        web,
        "app.localhost",
        &names("blue", 2),
        Duration::from_secs(60),
    )
    .await;

    // Green goes up beside blue, with a higher priority: requests keep flowing meanwhile and
    // every one is answered by blue or green.
    let green_vars = vec![
        ("VERSION", "green".to_string()),
        ("PRIORITY", "20".to_string()),
        ("PORT_PREFIX", slot_ports().to_string()),
    ];
    let _green = deploy(
        rig,
        "blue-green/app.yml",
        &format!("{tag}green"),
        &green_vars,
    );
    let start = Instant::now();
    let mut answered = 0;
    loop {
        let rep = get(web, "app.localhost", "/").await;
        assert_eq!(
            rep.status, 200,
            "request {answered} during the switch: {}",
            rep.body
        );
        answered += 1;
        if rep.backend().is_some_and(|b| b.starts_with("green")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "green never took over"
        );
    }
    until_servers(
        web,
        "app.localhost",
        &names("green", 2),
        Duration::from_secs(30),
    )
    .await;
    // Blue stays reachable on its preview host until its stack goes.
    let preview = get(web, "blue.app.localhost", "/").await;
    assert!(
        preview.backend().is_some_and(|b| b.starts_with("blue")),
        "{preview:?}"
    );
    drop(blue);
    // Gone: the shipped default script's welcome route answers instead. (Removing a stack
    // waits for its tasks to stop; on a loaded machine that alone can take most of a minute.)
    poll_get(
        web,
        "blue.app.localhost",
        "/",
        Duration::from_secs(120),
        |r| r.backend().is_none(),
    )
    .await;
    let after = spread(web, "app.localhost", "/", &[], 10).await;
    assert_eq!(after.values().sum::<usize>(), 10, "{after:?}");
    assert!(after.keys().all(|k| k.starts_with("green")), "{after:?}");
    eprintln!("blue-green: {answered} requests during the switch, all 200");
}

#[tokio::test]
async fn swarm_socat_routes_with_the_api_on_tcp_and_with_tls_client_certificates() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    // The TLS variant reads the rig daemon's own --tlsverify listener with the rig's client
    // certificate (tests/docker-rig.sh makes them with the example's make-certs.sh).
    let (tls, tls_port) = rig.tls();
    for (file, extra) in [
        (
            "swarm-socat/stack.yml",
            vec![("API_PORT", free_port().to_string())],
        ),
        (
            "swarm-socat/stack-tls.yml",
            vec![
                ("CERTS", tls.display().to_string()),
                ("API_PORT", tls_port.to_string()),
            ],
        ),
    ] {
        let ports = Ports::new();
        let mut vars = ports.vars();
        vars.push(("APP_PORT", free_port().to_string()));
        // A single-node Swarm has no worker: the README says to run the router on the manager.
        vars.push(("ROUTER_ROLE", "manager".to_string()));
        vars.extend(extra);
        let name = container_name(if file.ends_with("tls.yml") {
            "socattls"
        } else {
            "socat"
        })
        .replace('-', "");
        let _s = deploy(rig, file, &name, &vars);
        let web = loopback(ports.web);
        wait_listening(web, Duration::from_secs(60));
        let rep = poll_get(web, "cats.localhost", "/", Duration::from_secs(60), |r| {
            r.status == 200 && r.backend().is_some()
        })
        .await;
        assert_eq!(rep.backend(), Some("cats"), "{file}");
        // `Path: /` only: other paths get the shipped welcome route.
        assert_eq!(
            get(web, "cats.localhost", "/x").await.backend(),
            None,
            "{file}"
        );
    }
}

#[tokio::test]
async fn traefik_stack_runs_with_traefiks_own_command_line_and_labels() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let stack = container_name("traefik").replace('-', "");
    let _s = deploy(rig, "traefik-swarm/stack.yml", &stack, &ports.vars());
    let web = loopback(ports.web);
    four_whoami_in_round_robin(web).await;
    // `--docker.exposedbydefault=false`: only the labelled service is routed, so an unknown
    // host is a 404 (Traefik's, no welcome page).
    assert_eq!(get(web, "other.localhost", "/").await.status, 404);
    // `--api`: Traefik 1's API on its `traefik` entrypoint, the admin listener here, which
    // shows the script made from the command line.
    let admin = loopback(ports.admin);
    wait_listening(admin, Duration::from_secs(30));
    let scripts = get(admin, "localhost", "/api/scripts").await.body;
    assert!(scripts.contains("traefik/10-traefik.rhai"), "{scripts}");
    let routes = get(admin, "localhost", "/api/routes").await.json();
    // Other tests' labelled services share the Swarm: count only this stack's routes (the
    // router and the unlabelled services of the stack must not be among them).
    let listed: Vec<&str> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| n.starts_with(stack.as_str()))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains("whoami"), "{listed:?}");
}

/// The global router with HTTPS (`swarm-global/stack-acme.yml`): its resolver orders the
/// labelled service's name from the CA (Pebble here, trusted through `ACME_CA_ROOTS`), answers
/// HTTP-01 on `web`, keeps the account and the sealed certificate in the stack's Redis (an
/// image of Debian's redis-server), serves it on `websecure` and redirects `web` to it.
#[tokio::test]
async fn swarm_global_acme_stack_gets_its_certificate_through_redis() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let (websecure, redis_port) = (free_port(), free_port());
    let pebble = crate::acme::Pebble::start(dir.path(), ports.web, websecure);
    let key = dir.path().join("store-key");
    std::fs::write(
        &key,
        "8899aabbccddeeff00112233445566778899aabbccddeeff0011223344556677\n",
    )
    .unwrap();
    let host = "secure.acme.test";
    let mut vars = ports.vars();
    vars.extend([
        ("BIND", "127.0.0.1".to_string()),
        ("WEBSECURE_PORT", websecure.to_string()),
        ("REDIS_PORT", redis_port.to_string()),
        ("REDIS_IMAGE", "switchyard-test/redis:latest".to_string()),
        ("APP_PORT", free_port().to_string()),
        ("SECURE_HOST", host.to_string()),
        ("ACME_CA_SERVER", pebble.directory.clone()),
        ("ACME_CA_ROOTS", pebble.listener_ca.display().to_string()),
        ("STORE_KEY_FILE", key.display().to_string()),
    ]);
    let stack = container_name("acme").replace('-', "");
    let _s = deploy(rig, "swarm-global/stack-acme.yml", &stack, &vars);
    let tls = loopback(websecure);
    wait_listening(tls, Duration::from_secs(90));
    crate::acme::served_issuer(tls, host, |i| i.contains("Pebble")).await;

    // A client trusting only Pebble's root reaches the service over HTTPS.
    let root = pebble.root(dir.path()).await;
    let c = crate::tls::curl(&[
        "--cacert",
        &root.display().to_string(),
        "--resolve",
        &format!("{host}:{websecure}:127.0.0.1"),
        &format!("https://{host}:{websecure}/"),
    ])
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert!(c.body.contains("secure"), "{c:?}");
    // Port 80 sends the same host to HTTPS.
    let r = get(loopback(ports.web), host, "/").await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(
        r.header("location"),
        Some(format!("https://{host}:{websecure}/").as_str())
    );
    // The account and the certificate live in the stack's Redis, the key sealed.
    let dump = crate::acme::redis_cli(redis_port, &["HGETALL", "switchyard:acme:le:certs"]);
    assert!(
        dump.contains(host) && dump.contains("sealed:") && !dump.contains("PRIVATE KEY"),
        "{dump}"
    );
}

/// The "ARMing a Hybrid Docker Swarm" article's Traefik stack with only the image swapped
/// (`examples/traefik-arm`): Traefik 1.7's command line as published, including
/// `Compress:true` on `http` and a `TLS` entrypoint, global on the manager with the article's
/// limits; the dashboard through the router by v1 labels, gzip on `http`, TLS on `https`, and
/// the demo app round robin.
#[tokio::test]
async fn arm_article_stack_runs_with_traefiks_own_command_line() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let websecure = free_port();
    let mut vars = ports.vars();
    vars.push(("WEBSECURE_PORT", websecure.to_string()));
    let stack = container_name("arm").replace('-', "");
    let _s = deploy(rig, "traefik-arm/stack.yml", &stack, &vars);
    let web = loopback(ports.web);
    four_whoami_in_round_robin(web).await;
    // The API through the router (v1 labels on the router's own service), compressed by the
    // entrypoint's `Compress:true`.
    let api = poll_get(
        web,
        "proxy.localhost",
        "/api/routes",
        Duration::from_secs(30),
        |r| r.status == 200,
    )
    .await;
    assert!(api.body.contains("whoami"), "{}", api.body);
    let gz = send(
        web,
        "GET",
        "proxy.localhost",
        "/api/routes",
        &[("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        gz.headers
    );
    // The `https` entrypoint terminates TLS (the default certificate), but frontends without
    // `traefik.frontend.entryPoints` are on Traefik 1.7's default entrypoint, `http`, only.
    let c = crate::tls::curl(&[
        "-k",
        "--resolve",
        &format!("whoami.docker.localhost:{websecure}:127.0.0.1"),
        &format!("https://whoami.docker.localhost:{websecure}/"),
    ])
    .await;
    assert_eq!((c.code, c.status), (0, 404), "{c:?}");
    let spec = rig.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Mode}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}}",
        &format!("{stack}_reverse-proxy"),
    ]);
    assert_eq!(spec, r#"{"Global":{}} 500000000"#);
}

/// Traefik 3's Swarm provider set up as its documentation does (`traefik-swarm/stack-v3.yml`):
/// `--providers.swarm`, `exposedByDefault=false`, `--api.insecure=true` and v3 labels, with
/// only the image swapped; round robin over four replicas, and the API on the `traefik`
/// entrypoint lists the router.
#[tokio::test]
async fn traefik_3_swarm_provider_stack_runs_as_documented() {
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let ports = Ports::new();
    let stack = container_name("tv3").replace('-', "");
    let _s = deploy(rig, "traefik-swarm/stack-v3.yml", &stack, &ports.vars());
    let web = loopback(ports.web);
    four_whoami_in_round_robin(web).await;
    let admin = loopback(ports.admin);
    wait_listening(admin, Duration::from_secs(30));
    let routes = get(admin, "localhost", "/api/routes").await.body;
    assert!(routes.contains("whoami@swarm"), "{routes}");
}

/// `examples/tcp-udp/stack.yml`: Traefik's TCP and UDP labels on Swarm services. Every TCP
/// connection goes to the echo service, and UDP datagrams reach the UDP echo.
#[tokio::test]
async fn tcp_and_udp_services_of_a_stack_are_routed() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let _one = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = DockerRig::shared();
    let _use = rig.shared_use();
    rig.swarm();
    let (tcp, udp, admin, dns) = (free_port(), free_port(), free_port(), free_port());
    let echo = free_port();
    let vars = [
        ("TCP_PORT", tcp.to_string()),
        ("UDP_PORT", udp.to_string()),
        ("ADMIN_PORT", admin.to_string()),
        ("ECHO_PORT", echo.to_string()),
        ("DNS_PORT", dns.to_string()),
    ];
    let stack = container_name("l4").replace('-', "");
    let _s = deploy(rig, "tcp-udp/stack.yml", &stack, &vars);

    // The echo services must be servers of the TCP and UDP routes before traffic is checked.
    let api = loopback(admin);
    wait_listening(api, Duration::from_secs(90));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = get(api, "localhost", "/api/tcp/routes").await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let up = v["tcp_routes"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|r| r["servers_up"].as_u64())
            .unwrap_or(0);
        let udp_routes = get(api, "localhost", "/api/udp/routes").await;
        if up == 1 && udp_routes.body.contains("\"servers_up\": 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TCP/UDP routes not ready within 90 s: {} {}",
            r.body,
            udp_routes.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each connection echoes its own line.
    for i in 0..4 {
        let s = tokio::net::TcpStream::connect(loopback(tcp)).await.unwrap();
        let (rd, mut wr) = s.into_split();
        let mut lines = tokio::io::BufReader::new(rd).lines();
        let line = format!("hello {i}");
        wr.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("no echo within 5 s")
            .unwrap();
        assert_eq!(got.as_deref(), Some(line.as_str()));
    }
    // The closed connections are counted (the router sees each end a moment later).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(api, "localhost", "/api/tcp/routes").await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if v["tcp_routes"][0]["connections"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match crate::support::l4::udp_ask(&socket, loopback(udp), "ping over udp").await {
            Ok(a) => {
                assert_eq!(a, "ping over udp");
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
    }
}
