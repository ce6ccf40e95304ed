//! Docker test rig for integration tests: one real dockerd per test binary, started through
//! `tests/docker-rig.sh` (which installs docker.io with apt when missing, so it needs root), and
//! small helpers around the docker CLI.
//!
//! Invariants: the daemon is started at most once per process (`DockerRig::shared`) with this
//! process as its owner, so the rig's watchdog stops it when the test binary exits, however it
//! exits; a daemon already running in the rig's state dir (started by `.ci/run` or by hand) is
//! reused. Containers that tests send traffic to use host networking on distinct 127.0.0.1 ports.
//! The helpers block (they run the CLI); in a `#[tokio::test]` that is fine as long as nothing
//! the call waits for runs on the same runtime.
//! This module must never talk to /var/run/docker.sock, pull images (Docker Hub is unreachable),
//! or send traffic to a container's bridge or overlay address.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The local test image: static busybox; its default command serves a page naming `$NAME` on
/// `${ADDR:-127.0.0.1}:$PORT` (status 200 for `/`, the same page with 404 for other paths).
pub const BUSYBOX_IMAGE: &str = "switchyard-test/busybox:latest";

pub struct DockerRig {
    pub socket: PathBuf,
    docker_bin: PathBuf,
    /// Readers: ordinary tests. Writer: a test that halts or restarts the daemon.
    use_lock: RwLock<()>,
}

fn rig_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker-rig.sh")
}

fn run_rig(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(rig_script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running tests/docker-rig.sh {args:?}: {e}"));
    assert!(
        out.status.success(),
        "tests/docker-rig.sh {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl DockerRig {
    /// The rig for this test binary: started (or joined) and given its test image on first use.
    pub fn shared() -> &'static DockerRig {
        static RIG: OnceLock<DockerRig> = OnceLock::new();
        RIG.get_or_init(|| {
            let pid = std::process::id().to_string();
            let stdout = run_rig(&["start", "--owner-pid", &pid]);
            let socket = stdout
                .lines()
                .last()
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("docker-rig start printed no socket"));
            run_rig(&["image"]);
            let docker_bin = if Path::new("/usr/bin/docker").exists() {
                PathBuf::from("/usr/bin/docker")
            } else {
                PathBuf::from("docker")
            };
            DockerRig {
                socket,
                docker_bin,
                use_lock: RwLock::new(()),
            }
        })
    }

    /// `DOCKER_HOST` value for this rig (what a provider under test should be pointed at).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Hold while using the daemon; many tests may hold it at once.
    pub fn shared_use(&self) -> RwLockReadGuard<'_, ()> {
        self.use_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold while halting or restarting the daemon: waits for every `shared_use` holder.
    pub fn exclusive_use(&self) -> RwLockWriteGuard<'_, ()> {
        self.use_lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The docker CLI, pointed at the rig (`-H` set), for callers that need env or a directory.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.docker_bin);
        cmd.arg("-H").arg(self.endpoint());
        cmd
    }

    /// Runs the docker CLI against the rig; returns whatever happened (callers check status).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(&self.docker_bin)
            .arg("-H")
            .arg(self.endpoint())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.docker_bin.display()))
    }

    /// Like `docker`, but panics with stderr unless the command succeeds; returns trimmed stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a host-network busybox httpd on 127.0.0.1:`port` whose page names `name`, with
    /// `labels`; `extra` goes to `docker run` before the image. Returns the container id once the
    /// port accepts connections. A container left with the same name is removed first.
    pub fn run_httpd(
        &self,
        name: &str,
        port: u16,
        labels: &[(&str, &str)],
        extra: &[&str],
    ) -> String {
        self.rm(name);
        let env_name = format!("NAME={name}");
        let env_port = format!("PORT={port}");
        let label_args: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            name,
            "-e",
            &env_name,
            "-e",
            &env_port,
        ];
        for l in &label_args {
            args.extend(["--label", l.as_str()]);
        }
        args.extend_from_slice(extra);
        args.push(BUSYBOX_IMAGE);
        let id = self.docker_ok(&args);
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        id
    }

    /// Makes the daemon a single-node Swarm manager (once per process; `docker swarm init` on
    /// 127.0.0.1, see tests/docker-rig.sh). Only one Swarm can run on a machine.
    pub fn swarm(&self) {
        static SWARM: OnceLock<()> = OnceLock::new();
        SWARM.get_or_init(|| {
            run_rig(&["swarm"]);
        });
    }

    /// The router's own image, built from ./Dockerfile with a static debug binary (once per
    /// process; a no-op when the image holds the current binary).
    pub fn router_image(&self) -> &'static str {
        static IMAGE: OnceLock<String> = OnceLock::new();
        IMAGE.get_or_init(|| run_rig(&["router-image"]))
    }

    /// The rig's TLS material (`ca.pem`, `cert.pem`, `key.pem` for a client) and the port of the
    /// daemon's `--tlsverify` listener on 127.0.0.1.
    pub fn tls(&self) -> (PathBuf, u16) {
        let dir = self.socket.with_file_name("tls");
        let port = std::fs::read_to_string(dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no TLS port in {}", dir.display()));
        (dir, port)
    }

    /// Removes Swarm services (and so their tasks); quiet when they do not exist.
    pub fn service_rm(&self, names: &[&str]) {
        let mut args = vec!["service", "rm"];
        args.extend_from_slice(names);
        let _ = self.docker(&args);
    }

    /// Removes a container (killing it first); quiet when it does not exist.
    pub fn rm(&self, name: &str) {
        let _ = self.docker(&["rm", "-f", name]);
    }

    /// Stops the daemon, keeping its state (containers stop with it); `resume` starts it again.
    /// Hold `exclusive_use` around both.
    pub fn halt(&self) {
        run_rig(&["halt"]);
    }

    pub fn resume(&self) {
        run_rig(&["start"]);
    }
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listening on {addr} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 127.0.0.1 port that was free a moment ago and that no other caller in this process got.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no fresh free port in 100 tries");
}

/// A port prefix `P` such that 127.0.0.1 ports `P1` ..= `P9` were all free a moment ago: replicas
/// on the host network listen on `P{{.Task.Slot}}` (Docker expands the slot in their env).
pub fn slot_ports() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..200 {
        let prefix = 1100 + fastrand::u16(0..2000);
        let free = (1..=9).all(|slot| TcpListener::bind(("127.0.0.1", prefix * 10 + slot)).is_ok());
        if free
            && given
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(prefix)
        {
            return prefix;
        }
    }
    panic!("no free block of slot ports in 200 tries");
}

/// A container name unique to this test process: `<prefix>-<pid>`.
pub fn container_name(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}
