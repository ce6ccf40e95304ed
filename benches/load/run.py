#!/usr/bin/env python3
"""Load benchmark: switchyard vs nginx vs HAProxy in front of the same nginx backends.

    python3 benches/load/run.py [--rounds N] [--duration S] [--out FILE] [--quick] [--scenarios a,b]
    python3 benches/load/run.py --pinned [...]   # proxy+backends on CPU 1, wrk on CPU 0, 1 worker each

See benches/load/README.md. Only the Python standard library is used. Everything listens on
127.0.0.1; every process started here is stopped by PID on exit (normal exit, exception,
SIGINT/SIGTERM/SIGHUP) and the temp dir is removed.
"""

import argparse
import atexit
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BENCH_HOST = "bench.local"
HOOK_HOST = "hook.local"
SMALL_BODY = "hello, bench\n"  # 13 bytes

ALL_SCENARIOS = ["small", "1k", "100k", "newconn", "hook", "tls-small", "tls-newconn", "h2-small",
                 "scale"]
# name -> (path, connections, Connection: close?, host, systems)
PROXIES = ["switchyard", "nginx", "haproxy"]
SCENARIOS = {
    "small": dict(path="/small", conns=64, close=False, systems=["direct"] + PROXIES),
    "1k": dict(path="/1k", conns=64, close=False, systems=["direct"] + PROXIES),
    "100k": dict(path="/100k", conns=64, close=False, systems=["direct"] + PROXIES),
    "newconn": dict(path="/small", conns=16, close=True, systems=["direct"] + PROXIES),
    "hook": dict(path="/small", conns=64, close=False,
                 systems=["direct", "switchyard", "switchyard-hook"]),
    # TLS 1.3, one ECDSA P-256 certificate for all three (made with openssl at start)
    "tls-small": dict(path="/small", conns=64, close=False, systems=PROXIES, tls=True),
    "tls-newconn": dict(path="/small", conns=16, close=True, systems=PROXIES, tls=True),
    # HTTP/2 over TLS (ALPN h2), driven by h2load: 16 connections, 10 streams each
    "h2-small": dict(path="/small", conns=16, close=False, systems=PROXIES, tls=True, tool="h2load"),
}
TLS = None  # {"cert", "key", "pem"} once made, when a TLS scenario is chosen
TLS_NOTE = ("TLS 1.3 only, one ECDSA P-256 certificate (openssl, made at start) on all three;"
            " resumption by stateless session tickets only, on all three (switchyard's rustls always"
            " issues them and wrk and h2load resume: wrk keeps each connection slot's session across"
            " reconnects), so tls-newconn is a new TCP connection and a resumed TLS 1.3 handshake"
            " (PSK with ECDHE) per request; no stateful session cache")
H2_STREAMS = 10
WRK_THREADS = 1  # one wrk thread: the box has 2 cores shared by wrk, the proxy and the backend
WRK_CONNS = None  # --connections: wrk -c for the keep-alive scenarios (None: the scenario's own)

# --pinned: the systems under test (proxy + both backends) share SERVER_CPU, wrk runs alone on
# WRK_CPU, every server with one worker. PIN is set in main() to {"taskset": path, ...}.
PIN = None
PINNED_SERVER_CPU, PINNED_WRK_CPU = 1, 0
PINNED_HEADER = "pinned mode: proxy+backends on CPU 1, wrk on CPU 0, one worker each"

SCALE_ROUTES = 10_000


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Process registry and cleanup
# ---------------------------------------------------------------------------------------------

def _starttime(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[19]) if len(rest) > 19 else None


def _ppid_map():
    m = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        if len(rest) > 1:
            m.setdefault(int(rest[1]), []).append(int(d.name))
    return m


def descendants(pid):
    """pid and all its descendants (via /proc/*/stat ppid)."""
    children = _ppid_map()
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid, field="VmRSS"):
    """Sum of VmRSS (or VmHWM) in KiB over pid and its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cpu_seconds(pid):
    """utime+stime in seconds summed over pid and its descendants (live ones)."""
    ticks = 0
    for p in descendants(pid):
        try:
            raw = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        ticks += int(rest[11]) + int(rest[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def on_server_cpu(argv):
    """argv under `taskset -c SERVER_CPU` in pinned mode (taskset execs it: same PID; nginx
    workers and every thread inherit the affinity), else unchanged."""
    return [PIN["taskset"], "-c", str(PIN["server_cpu"]), *argv] if PIN else list(argv)


def on_wrk_cpu(argv):
    return [PIN["taskset"], "-c", str(PIN["wrk_cpu"]), *argv] if PIN else list(argv)


def cpus_allowed(pid):
    """Sorted distinct Cpus_allowed_list values over pid and its descendants (and their threads)."""
    seen = set()
    for p in descendants(pid):
        try:
            tids = [t.name for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
        for t in tids:
            try:
                for line in Path(f"/proc/{p}/task/{t}/status").read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        seen.add(line.split(":", 1)[1].strip())
            except OSError:
                pass
    return sorted(seen)


def check_pinning_possible():
    """Pinned mode needs taskset and CPUs 0 and 1; exits non-zero with the reason otherwise."""
    taskset = which("taskset")
    if not taskset:
        sys.exit("--pinned needs `taskset` (package util-linux, normally installed: "
                 "`apt-get install -y util-linux`), and it is not on PATH, /usr/bin or /usr/sbin")
    n = os.cpu_count() or 1
    if n < 2:
        sys.exit(f"--pinned needs at least 2 CPUs (proxy+backends on CPU {PINNED_SERVER_CPU}, "
                 f"wrk on CPU {PINNED_WRK_CPU}); this machine has {n}")
    allowed = os.sched_getaffinity(0)
    want = {PINNED_SERVER_CPU, PINNED_WRK_CPU}
    if not want <= allowed:
        sys.exit(f"--pinned needs CPUs {sorted(want)}, but this process may only run on "
                 f"{sorted(allowed)} (cgroup cpuset or taskset of the caller)")
    return taskset


class Procs:
    """Every process this script starts, stopped by PID (its recorded descendants too)."""

    def __init__(self):
        self.procs = []  # (name, Popen)
        self.stopped = False

    def start(self, name, argv, logdir, cwd=None):
        # logs go to <temp dir>/logs/<name>.log whatever the config dir
        out = open(Path(LOGDIR or logdir) / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=cwd, start_new_session=True)
        out.close()
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=10.0):
        if p.poll() is not None:
            return
        family = [(q, _starttime(q)) for q in descendants(p.pid)]
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Children left behind (e.g. nginx workers of a killed master): same PID *and* start time.
        deadline = time.monotonic() + 5
        for q, st in family:
            if q == p.pid or st is None:
                continue
            while _starttime(q) == st and time.monotonic() < deadline:
                try:
                    os.kill(q, signal.SIGKILL if time.monotonic() > deadline - 4 else signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    def stop_all(self):
        for _, p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping pid {p.pid}: {e}")
        self.procs = [(n, p) for n, p in self.procs if p.poll() is None]


PROCS = Procs()
TMPDIRS = []
LOGDIR = None
CONFIGS = {}  # system -> generated config text, saved in the JSON


def cleanup():
    PROCS.stop_all()
    while TMPDIRS:
        shutil.rmtree(TMPDIRS.pop(), ignore_errors=True)


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping everything")
    cleanup()
    sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Set-up: tools, build, ports
# ---------------------------------------------------------------------------------------------

def which(tool):
    return shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/usr/bin") / tool) if p.exists()), None)


def ensure_tools():
    need = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy", "h2load": "nghttp2-client",
            "openssl": "openssl"}
    missing = [pkg for tool, pkg in need.items() if not which(tool)]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"missing {missing}; run as root or `sudo apt-get install -y {' '.join(missing)}`")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"installing {missing} with apt-get")
        quiet = dict(env=env, timeout=1200, stdout=sys.stderr, stdin=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", *missing], **quiet)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", *missing], check=True, **quiet)
    paths = {tool: which(tool) for tool in need}
    still = [t for t, p in paths.items() if not p]
    if still:
        sys.exit(f"could not find {still} after installing")
    return paths


def build_switchyard():
    """cargo build --release; on failure fall back to an existing binary (reported)."""
    info = {"command": "cargo build --release", "ok": False, "error": None}
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    binary = REPO / "target/release/switchyard"
    if not Path(cargo).exists():
        info["error"] = "cargo not found (install Rust with rustup: https://rustup.rs)"
    else:
        log("building switchyard (cargo build --release; the first build takes minutes)")
        t0 = time.monotonic()
        # Registered like the servers, so an interrupt stops cargo and its rustc children too.
        p = PROCS.start("cargo-build", [cargo, "build", "--release"], LOGDIR, cwd=REPO)
        try:
            info["ok"] = p.wait(timeout=3600) == 0
            if not info["ok"]:
                info["error"] = process_log("cargo-build", 30)
        except subprocess.TimeoutExpired:
            PROCS.stop(p)
            info["error"] = "cargo build --release timed out after 3600 s"
        info["seconds"] = round(time.monotonic() - t0, 1)
    if not info["ok"]:
        log(f"cargo build failed:\n{info['error']}")
        if not binary.exists():
            sys.exit("no switchyard binary to benchmark")
        log(f"WARNING: benchmarking the existing {binary} (built {time.ctime(binary.stat().st_mtime)})")
    return binary, info


def tail(text, n):
    return "\n".join((text or "").strip().splitlines()[-n:])


_USED_PORTS = set()


def free_port():
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _USED_PORTS:
            _USED_PORTS.add(port)
            return port
    raise RuntimeError("no free port")


def wait_port(port, proc, timeout=20.0):
    """Until port accepts; raises if proc exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not accepting after {timeout:.0f} s")


def http_get(port, host, path, timeout=5.0):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def wait_http(port, host, path, proc, want_status=200, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            st, _, body = http_get(port, host, path, timeout=2)
            if st == want_status:
                return body
            last = f"status {st}: {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"GET {host}{path} on {port} never answered {want_status} ({last})")


def process_log(name, n=15):
    try:
        return tail((Path(LOGDIR) / f"{name}.log").read_text(errors="replace"), n)
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def nginx_common(d):
    return f"""daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
"""


def nginx_http_common(d):
    return f"""    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
"""


def backend_config(d, ports):
    servers = "".join(f"""
    server {{
        listen {HOST}:{p} backlog=4096;
        root {d}/www;
        location = /small {{ return 200 "{SMALL_BODY.strip()}\\n"; }}
        location = /1k {{ }}
        location = /100k {{ }}
        location = /hookcheck {{ return 200 "$http_x_bench_host"; }}
        location / {{ return 200 "ok\\n"; }}
    }}""" for p in ports)
    return nginx_common(d) + f"""worker_processes 1;
events {{ worker_connections 8192; }}
http {{
{nginx_http_common(d)}    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
{servers}
}}
"""


NGINX_HTTP2_ON = False  # nginx >= 1.25.1 has `http2 on;` (`listen ... http2` is deprecated there)


def nginx_has_http2_on(nginx):
    try:
        v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", v)
    return bool(m) and tuple(int(x) for x in m.groups()) >= (1, 25, 1)


def nginx_proxy_config(d, port, backends, workers, tls_port=None):
    ups = "".join(f"        server {HOST}:{p};\n" for p in backends)
    tls = ""
    if tls_port:
        # TLS 1.3, HTTP/2 by ALPN; resumption by stateless session tickets only, as switchyard
        # (rustls' ticketer) offers it: see TLS_NOTE.
        h2 = ("        http2 on;\n", "") if NGINX_HTTP2_ON else ("", " http2")
        tls = (f"        listen {HOST}:{tls_port} ssl{h2[1]} backlog=4096;\n{h2[0]}"
               f"        ssl_certificate {TLS['cert']};\n        ssl_certificate_key {TLS['key']};\n"
               "        ssl_protocols TLSv1.3;\n        ssl_session_cache off;\n"
               "        ssl_session_tickets on;\n        http2_max_concurrent_streams 250;\n")
    return nginx_common(d) + f"""worker_processes {workers};
events {{ worker_connections 8192; }}
http {{
{nginx_http_common(d)}    upstream b {{
{ups}        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen {HOST}:{port} backlog=4096;
{tls}        server_name {BENCH_HOST};
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # the forwarding headers switchyard always sends
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Real-Ip $remote_addr;
            # 16 KiB buffers like HAProxy's default tune.bufsize (nginx's default is 4 KiB pages),
            # never spooled to a temp file: like the other two, it streams through memory
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def haproxy_config(port, backends, threads, tls_port=None):
    srv = "".join(f"    server s{i} {HOST}:{p}\n" for i, p in enumerate(backends))
    tls = (f"    bind {HOST}:{tls_port} ssl crt {TLS['pem']} alpn h2,http/1.1 ssl-min-ver TLSv1.3\n"
           "    default_backend b\n") if tls_port else ""
    # TLS: session tickets (HAProxy's default) and no stateful session cache, as the others
    tls_global = "    tune.ssl.cachesize 0\n" if tls_port else ""
    return f"""global
    nbthread {threads}
    maxconn 4096
{tls_global}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 30s
    timeout http-keep-alive 120s

frontend fe
    bind {HOST}:{port}
{tls}    acl bench_host hdr(host) -i {BENCH_HOST}
    acl bench_path path_beg /
    use_backend b if bench_host bench_path

backend b
    balance roundrobin
    # the forwarding headers switchyard always sends
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request set-header X-Real-Ip %[src]
{srv}"""


def switchyard_script(backends):
    servers = ", ".join(f'"{HOST}:{p}"' for p in backends)
    return f"""// generated by benches/load/run.py
let b = service("b").servers([{servers}]);
route("bench").rule(host("{BENCH_HOST}") & path_prefix("/")).to(b);
"""


def switchyard_hook_script():
    return f"""// generated by benches/load/run.py: one Rhai request hook
route("bench-hook")
    .rule(host("{HOOK_HOST}") & path_prefix("/"))
    .middlewares([on_request(|req| req.set_header("X-Bench-Host", req.host))])
    .to("b");
"""


def scale_script(n, backends):
    servers = ", ".join(f'"{HOST}:{p}"' for p in backends)
    lines = ["// generated by benches/load/run.py: scale check"]
    for s in range(10):
        lines.append(f'let s{s} = service("scale{s}").servers([{servers}]);')
    kinds = {"exact": 0, "wildcard": 0, "regex": 0}
    for i in range(n):
        svc = f"s{i % 10}"
        prefix = f"/api{i % 7}"
        if i % 10 == 0:
            rule = f'host("*.w{i}.example.com") & path_prefix("{prefix}")'
            kinds["wildcard"] += 1
        elif i % 100 == 1:
            rule = f'host_regex("^r{i}-[0-9]+\\\\.rx\\\\.example\\\\.com$") & path_prefix("{prefix}")'
            kinds["regex"] += 1
        else:
            rule = f'host("h{i}.example.com") & path_prefix("{prefix}")'
            kinds["exact"] += 1
        lines.append(f'route("r{i}").rule({rule}).to({svc});')
    return "\n".join(lines) + "\n", kinds


# ---------------------------------------------------------------------------------------------
# Starting systems
# ---------------------------------------------------------------------------------------------

def mkdirs(d, *names):
    for n in names:
        (Path(d) / n).mkdir(parents=True, exist_ok=True)


def start_nginx(name, nginx, d, conf_text, ports):
    mkdirs(d, "client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    conf = Path(d) / "nginx.conf"
    conf.write_text(conf_text)
    CONFIGS[name] = conf_text
    t = subprocess.run([nginx, "-t", "-q", "-p", str(d), "-e", f"{d}/error.log", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    if t.returncode != 0:
        raise RuntimeError(f"nginx -t: {tail(t.stderr, 10)}")
    p = PROCS.start(name, on_server_cpu([nginx, "-p", str(d), "-e", f"{d}/error.log", "-c", str(conf)]),
                    d)
    for port in ports:
        wait_port(port, p)
    return p


def start_backends(tools, tmp):
    d = Path(tmp) / "backend"
    mkdirs(d, "www")
    (d / "www/1k").write_bytes((b"0123456789abcdef" * 64)[:1024])
    (d / "www/100k").write_bytes((b"0123456789abcdef" * 6400)[:102400])
    ports = [free_port(), free_port()]
    p = start_nginx("backend-nginx", tools["nginx"], d, backend_config(d, ports), ports)
    for port in ports:
        for path, size in (("/small", len(SMALL_BODY)), ("/1k", 1024), ("/100k", 102400)):
            st, _, body = http_get(port, BENCH_HOST, path)
            if st != 200 or len(body) != size:
                raise RuntimeError(f"backend {port}{path}: status {st}, {len(body)} bytes")
    return p, ports


def switchyard_worker_args(binary, workers):
    """`--workers N` when this binary has the flag (newer builds), else [] (runtime default)."""
    try:
        h = subprocess.run([str(binary), "run", "--help"], capture_output=True, text=True, timeout=30)
        return ["--workers", str(workers)] if "--workers" in h.stdout else []
    except (OSError, subprocess.TimeoutExpired):
        return []


def start_switchyard(binary, tmp, backends, with_hook, extra_args=(), name="switchyard",
                     tls_port=None):
    d = Path(tmp) / name
    scripts = d / "scripts"
    mkdirs(d, "scripts")
    (scripts / "10-bench.rhai").write_text(switchyard_script(backends))
    if tls_port:
        servers = ", ".join(f'"{HOST}:{p}"' for p in backends)
        (scripts / "15-bench-tls.rhai").write_text(
            f"""// generated by benches/load/run.py: the TLS scenarios, any host
route("bench-tls").rule(path_prefix("/")).tls(true).to(service("b-tls").servers([{servers}]));
""")
        extra_args = (*extra_args, "--entrypoint", f"websecure={HOST}:{tls_port}",
                      "--entrypoint.websecure.tls", "--entrypoint.websecure.tls.min-version=1.3",
                      "--tls.default-certificate", f"{TLS['cert']}:{TLS['key']}")
    hook_error = None
    if with_hook:
        (scripts / "20-bench-hook.rhai").write_text(switchyard_hook_script())
        chk = subprocess.run([str(binary), "check", "--scripts", str(scripts)],
                             capture_output=True, text=True, timeout=60)
        if chk.returncode != 0:
            hook_error = tail(chk.stdout + chk.stderr, 12) or f"check exited {chk.returncode}"
            (scripts / "20-bench-hook.rhai").unlink()
            log(f"hook route does not build; hook scenario unavailable:\n{hook_error}")
    CONFIGS[name] = "\n".join(f"// {f.name}\n{f.read_text()}" for f in sorted(scripts.glob("*.rhai")))
    port, admin = free_port(), free_port()
    p = PROCS.start(name, on_server_cpu([str(binary), "run", "--scripts", str(scripts),
                                         "--entrypoint", f"web={HOST}:{port}", "--admin", f"{HOST}:{admin}",
                                         "--log-level", "warn", "--grace-period", "1s", *extra_args]), d)
    CONFIGS[f"{name}-command"] = " ".join(p.args)
    wait_port(port, p)
    wait_port(admin, p)
    wait_http(port, BENCH_HOST, "/small", p)
    if with_hook and hook_error is None:
        body = wait_http(port, HOOK_HOST, "/hookcheck", p)
        if body.strip() != HOOK_HOST.encode():
            hook_error = f"hook route answered but the backend saw X-Bench-Host={body[:100]!r}"
    return p, port, admin, hook_error


def start_nginx_proxy(tools, tmp, backends, workers, tls_port=None):
    d = Path(tmp) / "nginx-proxy"
    port = free_port()
    p = start_nginx("nginx-proxy", tools["nginx"], d,
                    nginx_proxy_config(d, port, backends, workers, tls_port),
                    [port] + ([tls_port] if tls_port else []))
    wait_http(port, BENCH_HOST, "/small", p)
    return p, port


def start_haproxy(tools, tmp, backends, threads, tls_port=None):
    d = Path(tmp) / "haproxy"
    mkdirs(d, ".")
    port = free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, backends, threads, tls_port))
    CONFIGS["haproxy"] = cfg.read_text()
    t = subprocess.run([tools["haproxy"], "-c", "-q", "-f", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    if t.returncode != 0:
        raise RuntimeError(f"haproxy -c: {tail(t.stdout + t.stderr, 10)}")
    p = PROCS.start("haproxy", on_server_cpu([tools["haproxy"], "-db", "-f", str(cfg)]), d)
    wait_port(port, p)
    if tls_port:
        wait_port(tls_port, p)
    wait_http(port, BENCH_HOST, "/small", p)
    return p, port


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad latency {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out):
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None,
         "socket_errors": 0, "non_2xx": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    if m:
        r["p50_ms"] = to_ms(m.group(1))
    m = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    if m:
        r["p99_ms"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
        r["socket_errors_detail"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non_2xx"] = int(m.group(1))
    return r


RSS_SAMPLE_S = 0.25  # VmRSS sampling period during a run (--pinned)


def _vmrss_kib(pids):
    total = 0
    for q in pids:
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            pass
    return total


def _cpus_allowed_of(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def make_tls_cert(tmp):
    """One ECDSA P-256 certificate (and its key) for every system's TLS listener."""
    d = Path(tmp) / "tls"
    mkdirs(d, ".")
    cert, key, pem = d / "bench.crt", d / "bench.key", d / "bench.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={BENCH_HOST}",
                    "-addext", f"subjectAltName=DNS:{BENCH_HOST},IP:{HOST}"],
                   check=True, capture_output=True, timeout=60)
    pem.write_text(cert.read_text() + key.read_text())
    return {"cert": str(cert), "key": str(key), "pem": str(pem)}


def tls_check(port):
    """What a TLS listener agrees to, checked once at start with Python's ssl: the bench
    certificate verifies for bench.local, TLS version and cipher, GET /small over HTTP/1.1,
    whether a second handshake resumes the first one's session, and that ALPN h2 is chosen
    when offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(TLS["cert"])  # the one certificate, also our trust anchor

    def handshake(alpn, session=None, get=False):
        ctx.set_alpn_protocols(alpn)
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=BENCH_HOST, session=session) as t:
                info = {"version": t.version(), "cipher": t.cipher()[0],
                        "alpn": t.selected_alpn_protocol(), "resumed": t.session_reused}
                if get:
                    t.sendall(f"GET /small HTTP/1.1\r\nHost: {BENCH_HOST}\r\n"
                              "Connection: close\r\n\r\n".encode())
                    data = b""
                    for _ in range(1000):
                        chunk = t.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head = data.split(b"\r\n", 1)[0].split()
                    info["status"] = int(head[1]) if len(head) > 1 and head[1].isdigit() else None
                    info["body_ok"] = data.endswith(SMALL_BODY.encode())
                # A TLS 1.3 ticket arrives after the handshake: the session is complete now.
                return info, t.session

    first, session = handshake(["http/1.1"], get=True)
    second, _ = handshake(["http/1.1"], session=session, get=True)
    h2, _ = handshake(["h2", "http/1.1"])
    return {"version": first["version"], "cipher": first["cipher"], "status": first["status"],
            "body_ok": first["body_ok"], "resumed": second["resumed"], "h2_alpn": h2["alpn"]}


def run_h2load(h2load, port, path, conns, duration, server_pid=None, sample_rss=False):
    """HTTP/2 over TLS with h2load: `conns` connections, H2_STREAMS concurrent streams each,
    as many h2load threads as wrk gets (`--wrk-threads`), pinned and sampled the same way."""
    argv = on_wrk_cpu([h2load, f"-t{WRK_THREADS}", f"-c{conns}", f"-m{H2_STREAMS}",
                       f"-D{duration}", f"https://{HOST}:{port}{path}"])
    out, extra, cpu0 = run_load_tool("h2load", argv, duration, server_pid, sample_rss)
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None, "socket_errors": 0,
         "non_2xx": 0, "connections": conns, "streams_per_connection": H2_STREAMS}
    m = re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    if m:
        r["requests"] = int(m.group(1))
        r["socket_errors"] = int(m.group(2)) + int(m.group(3))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["non_2xx"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:  # h2load gives min/max/mean, no percentiles: the mean stands in for p50
        r["p50_ms"] = to_ms(m.group(3))
    m = re.search(r"Application protocol: (\S+)", out)
    r["alpn"] = m.group(1) if m else None
    if r["alpn"] not in (None, "h2"):
        r["error"] = f"h2load negotiated {r['alpn']}, not h2"
        r["rps"] = None
    r.update(extra)
    return finish_run(r, out, server_pid, cpu0)


def finish_run(r, out, server_pid, cpu0):
    """The fields every load run reports: load average, CPU per request, the error if any."""
    r["loadavg1"] = float(Path("/proc/loadavg").read_text().split()[0])
    if server_pid and r["requests"]:
        # CPU the measured server (its whole process tree) spent per request, in microseconds
        r["cpu_us_per_req"] = (cpu_seconds(server_pid) - cpu0) * 1e6 / r["requests"]
        # the same as CPU seconds per 1000 requests (the pinned table's unit)
        r["cpu_s_per_1k_req"] = r["cpu_us_per_req"] / 1000
    failed = (r.get("socket_errors") or 0) + (r.get("non_2xx") or 0)
    done = (r.get("requests") or 0) + failed
    if r["rps"] is not None and failed > 0.01 * max(done, 1):
        # A rate made mostly of failures is no throughput figure (h2load counts failed
        # requests in its req/s): the run is reported as failed.
        r["rps"] = None
        r["error"] = f"{failed} of {done} requests failed\n{tail(out, 5)}"
    if r["rps"] is None and not r.get("error"):
        r["error"] = tail(out, 5)
    return r


def run_wrk(wrk, port, host, path, conns, duration, close, server_pid=None, sample_rss=False,
            scheme="http"):
    argv = on_wrk_cpu([wrk, f"-t{WRK_THREADS}", f"-c{conns}", f"-d{duration}s", "--latency",
                       "--timeout", "5s", "-H", f"Host: {host}"])
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{scheme}://{HOST}:{port}{path}")
    out, extra, cpu0 = run_load_tool("wrk", argv, duration, server_pid, sample_rss)
    r = parse_wrk(out)
    r["connections"] = conns
    r.update(extra)
    return finish_run(r, out, server_pid, cpu0)


def run_load_tool(name, argv, duration, server_pid, sample_rss):
    """Runs a load generator (wrk, h2load) that stops by itself after `duration` s (killed after
    duration + 30 s); with `sample_rss`, samples the server's RSS meanwhile. Returns its output,
    the sampled fields and the server's CPU seconds before the run."""
    # The server's process tree is fixed while it runs (nginx master + workers), so it is listed
    # once here and the sampler only reads those few /proc/PID/status files.
    family = descendants(server_pid) if (server_pid and sample_rss) else []
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    PROCS.procs.append((name, p))
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    stop = threading.Event()
    sampled = {"peak_kib": 0, "samples": 0, "wrk_cpus": None}

    def sampler():
        # bounded: at most (duration + 30) / RSS_SAMPLE_S samples, ends when the tool does
        for _ in range(int((duration + 30) / RSS_SAMPLE_S) + 1):
            if stop.wait(RSS_SAMPLE_S):
                return
            if sampled["wrk_cpus"] is None and PIN:
                sampled["wrk_cpus"] = _cpus_allowed_of(p.pid)
            if family:
                sampled["peak_kib"] = max(sampled["peak_kib"], _vmrss_kib(family))
                sampled["samples"] += 1

    th = threading.Thread(target=sampler, daemon=True) if (family or PIN) else None
    if th:
        th.start()
    try:
        out, _ = p.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        PROCS.stop(p)
        out = f"{name} timed out"
    finally:
        stop.set()
        if th:
            th.join(timeout=5)
        PROCS.procs = [(n, q) for n, q in PROCS.procs if q is not p]
    extra = {}
    if family:
        extra["rss_peak_mib"] = round(sampled["peak_kib"] / 1024, 1) if sampled["samples"] else None
        extra["rss_samples"] = sampled["samples"]
    if PIN:
        extra["wrk_cpus_allowed"] = sampled["wrk_cpus"]
    return out, extra, cpu0


# ---------------------------------------------------------------------------------------------
# Scale checks
# ---------------------------------------------------------------------------------------------

def admin_json(admin, path):
    st, _, body = http_get(admin, "localhost", path)
    if st != 200:
        raise RuntimeError(f"admin {path}: status {st}")
    return json.loads(body)


def scale_checks(binary, tools, tmp, backends, bench_sy_port, duration, rounds, extra_args=()):
    res = {}
    d = Path(tmp) / "scale"
    scripts = d / "scripts"
    mkdirs(d, "scripts")
    default = REPO / "scripts/00-welcome.rhai"
    if default.exists():
        shutil.copy(default, scripts / "00-welcome.rhai")
    else:
        (scripts / "00-welcome.rhai").write_text('route("welcome").rule(path_prefix("/")).to(respond(200, "hi"));\n')
    port, admin = free_port(), free_port()
    p = PROCS.start("switchyard-scale", on_server_cpu([str(binary), "run", "--scripts", str(scripts),
                                                       "--entrypoint", f"web={HOST}:{port}",
                                                       "--admin", f"{HOST}:{admin}", "--log-level", "warn",
                                                       "--grace-period", "1s", *extra_args]), d)
    try:
        wait_port(port, p)
        wait_port(admin, p)
        deadline = time.monotonic() + 20
        st = admin_json(admin, "/api/scripts")
        while st.get("live_attempt", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            st = admin_json(admin, "/api/scripts")
        wait_http(port, "localhost", "/", p)
        time.sleep(1.0)  # let the runtime settle before reading the idle RSS
        res["idle_rss_mib"] = round(rss_kib(p.pid) / 1024, 1)
        res["idle_routes"] = st.get("routes")
        res["idle_threads"] = threads_of(p.pid)

        text, kinds = scale_script(SCALE_ROUTES, backends)
        res["routes_declared"] = SCALE_ROUTES
        res["route_kinds"] = kinds
        res["script_bytes"] = len(text)
        before = admin_json(admin, "/api/scripts")["attempt"]
        staged = d / "50-scale.rhai.staged"  # written outside the folder, renamed in atomically
        staged.write_text(text)
        t0 = time.monotonic()
        os.rename(staged, scripts / "50-scale.rhai")
        deadline = t0 + 120
        st = admin_json(admin, "/api/scripts")
        while st["attempt"] <= before and time.monotonic() < deadline:
            time.sleep(0.01)
            st = admin_json(admin, "/api/scripts")
        wall = time.monotonic() - t0
        res["build_ok"] = bool(st.get("ok")) and st["attempt"] > before
        res["build_duration_ms"] = st.get("duration_ms")
        res["write_to_live_ms"] = round(wall * 1000, 1)
        res["live_routes"] = st.get("routes")
        if not res["build_ok"]:
            res["errors"] = st.get("errors", [])[:3] or "no new build attempt within 120 s"
            return res
        checks = {}
        for host, path in (("h4242.example.com", f"/api{4242 % 7}/x"),
                           ("a.w4240.example.com", f"/api{4240 % 7}/x"),
                           ("r4201-7.rx.example.com", f"/api{4201 % 7}/x")):
            s, _, body = http_get(port, host, path)
            checks[f"{host}{path}"] = s if body == b"ok\n" else f"{s} {body[:40]!r}"
        res["lookup_checks"] = checks  # 200 = answered by a backend through the 10k-route table
        time.sleep(1.0)
        res["rss_mib"] = round(rss_kib(p.pid) / 1024, 1)
        res["hwm_mib"] = round(rss_kib(p.pid, "VmHWM") / 1024, 1)
        # Throughput of one exact-host route among 10k vs the 1-route bench instance, alternated.
        if bench_sy_port:
            dur = max(1, min(duration, 3))
            big, small = [], []
            for _ in range(max(1, min(rounds, 3))):
                big.append(run_wrk(tools["wrk"], port, "h4242.example.com", f"/api{4242 % 7}/x", 64,
                                   dur, False))
                small.append(run_wrk(tools["wrk"], bench_sy_port, BENCH_HOST, f"/api{4242 % 7}/x", 64,
                                     dur, False))
            res["rps_10k_routes"] = med([r["rps"] for r in big])
            res["rps_1_route"] = med([r["rps"] for r in small])
            res["rps_raw"] = {"10k_routes": big, "1_route": small}
        return res
    finally:
        PROCS.stop(p)


def threads_of(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(raw, systems_by_scenario):
    """raw[scenario][system] = [per-round dicts]. Ratios are per round vs direct, then median."""
    summary = {}
    for sc, systems in systems_by_scenario.items():
        summary[sc] = {}
        direct = raw[sc].get("direct", [])
        for sy in systems:
            rows = raw[sc].get(sy, [])
            if not rows:
                continue
            s = {"rounds": len(rows)}
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"):
                vals = [r.get(k) for r in rows]
                good = [v for v in vals if v is not None]
                s[k] = {"median": med(good), "min": min(good) if good else None,
                        "max": max(good) if good else None}
                ratios = []
                for i, v in enumerate(vals):
                    dv = direct[i].get(k) if i < len(direct) else None
                    if v is not None and dv:
                        ratios.append(v / dv)
                s[k + "_ratio"] = {"median": med(ratios), "min": min(ratios) if ratios else None,
                                   "max": max(ratios) if ratios else None}
            s["socket_errors"] = sum(r.get("socket_errors", 0) for r in rows)
            s["non_2xx"] = sum(r.get("non_2xx", 0) for r in rows)
            summary[sc][sy] = s
    return summary


def _stats(xs):
    xs = [x for x in xs if x is not None]
    return {"median": med(xs), "min": min(xs) if xs else None, "max": max(xs) if xs else None}


PINNED_REFS = ("direct", "nginx", "switchyard", "switchyard-base")


def summarize_pinned(raw, systems_by_scenario):
    """Pinned mode: per system, medians over rounds, and for every reference system present in the
    scenario (direct, nginx, switchyard, switchyard-base) the median of the per-round ratio
    system/reference, both taken from the *same* round (matched by round number)."""
    summary = {}
    for sc, systems in systems_by_scenario.items():
        summary[sc] = {}
        by_round = {sy: {r["round"]: r for r in raw[sc].get(sy, [])} for sy in systems}
        for sy in systems:
            rows = raw[sc].get(sy, [])
            if not rows:
                continue
            s = {"rounds": len(rows)}
            for k in ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k_req", "rss_peak_mib"):
                s[k] = _stats([r.get(k) for r in rows])
            for ref in PINNED_REFS:
                if ref == sy or ref not in by_round:
                    continue
                for k in ("rps", "p99_ms"):
                    ratios = []
                    for r in rows:
                        rr = by_round[ref].get(r["round"], {})
                        if r.get(k) is not None and rr.get(k):
                            ratios.append(r[k] / rr[k])
                    s[f"{k}_vs_{ref}"] = _stats(ratios)
            s["socket_errors"] = sum(r.get("socket_errors", 0) for r in rows)
            s["non_2xx"] = sum(r.get("non_2xx", 0) for r in rows)
            summary[sc][sy] = s
    return summary


def fmt_ratio_cell(r):
    if not r or r["median"] is None:
        return "–"
    if r["min"] == r["max"]:
        return f"×{r['median']:.2f}"
    return f"×{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def markdown_table_pinned(summary, unavailable):
    lines = [PINNED_HEADER, "",
             "| scenario | system | req/s | p99 ms | req/s × nginx | req/s × direct"
             " | RSS MiB under load (max) | CPU s / 1000 req | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sc, systems in summary.items():
        for sy, s in systems.items():
            errs = s["socket_errors"] + s["non_2xx"]
            vs_nginx = "(ref)" if sy == "nginx" else fmt_ratio_cell(s.get("rps_vs_nginx"))
            vs_direct = "(ref)" if sy == "direct" else fmt_ratio_cell(s.get("rps_vs_direct"))
            lines.append(
                f"| {sc} | {sy} | {fmt(s['rps']['median'])} | {fmt_ms(s['p99_ms']['median'])}"
                f" | {vs_nginx} | {vs_direct} | {fmt(s['rss_peak_mib']['max'], 1)}"
                f" | {fmt(s['cpu_s_per_1k_req']['median'], 4)} | {errs or ''} |")
        for sy in unavailable.get(sc, {}):
            lines.append(f"| {sc} | {sy} | unavailable (see below) | | | | | | |")
    return "\n".join(lines)


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def fmt_ms(x):
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(r):
    if not r or r["median"] is None:
        return ""
    if r["min"] == r["max"]:
        return f" (×{r['median']:.2f})"
    return f" (×{r['median']:.2f} {r['min']:.2f}–{r['max']:.2f})"


def markdown_table(summary, rss, unavailable):
    lines = ["| scenario | system | req/s (× direct) | p50 ms (× direct) | p99 ms (× direct) | CPU µs/req | RSS MiB | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sc, systems in summary.items():
        for sy, s in systems.items():
            errs = s["socket_errors"] + s["non_2xx"]
            lines.append(
                f"| {sc} | {sy} | {fmt(s['rps']['median'])}{fmt_ratio(s['rps_ratio'] if sy != 'direct' else None)}"
                f" | {fmt_ms(s['p50_ms']['median'])}{fmt_ratio(s['p50_ms_ratio'] if sy != 'direct' else None)}"
                f" | {fmt_ms(s['p99_ms']['median'])}{fmt_ratio(s['p99_ms_ratio'] if sy != 'direct' else None)}"
                f" | {fmt(s['cpu_us_per_req']['median'], 1)}"
                f" | {fmt(rss.get(sy.replace('-hook', '')), 1)} | {errs or ''} |")
        for sy in unavailable.get(sc, {}):
            lines.append(f"| {sc} | {sy} | unavailable (see below) | | | | | |")
    return "\n".join(lines)


def machine_facts(tools, binary):
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "nginx": first_line([tools["nginx"], "-v"]),
        "haproxy": first_line([tools["haproxy"], "-v"]),
        "wrk": (first_line([tools["wrk"], "-v"]) or "").split(" Copyright")[0],
        "h2load": first_line([tools["h2load"], "--version"]),
        "openssl": first_line([tools["openssl"], "version"]),
        "switchyard_commit": (commit or "?") + (" + uncommitted changes in src/" if dirty else ""),
        "switchyard_binary": str(binary),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main():
    global WRK_THREADS, WRK_CONNS, LOGDIR, PIN, NGINX_HTTP2_ON
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--out", default=None, help="JSON output (default target/bench/load.json, "
                                                 "with --pinned target/bench/load-pinned.json)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2-second measurements")
    ap.add_argument("--pinned", action="store_true",
                    help="capacity mode: proxy + both backends on CPU 1 (taskset), wrk alone on CPU 0, "
                         "one worker each; rounds in rotating order, ratios vs nginx and direct")
    ap.add_argument("--wrk-threads", type=int, default=None,
                    help="wrk -t (default 1, with --pinned 2)")
    ap.add_argument("--connections", type=int, default=None,
                    help="wrk -c for the keep-alive scenarios (default 64; newconn keeps its 16)")
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}")
    ap.add_argument("--baseline", default=None, metavar="BINARY",
                    help="also measure this switchyard binary (as switchyard-base, same script, "
                         "interleaved): an A/B check for regressions")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2
    WRK_THREADS = args.wrk_threads if args.wrk_threads is not None else (2 if args.pinned else 1)
    WRK_CONNS = args.connections if args.connections is not None else (64 if args.pinned else None)
    if args.rounds < 1 or args.duration < 1 or WRK_THREADS < 1:
        ap.error("--rounds, --duration and --wrk-threads must be >= 1")
    min_conns = min([WRK_CONNS or 64] + [c["conns"] for c in SCENARIOS.values() if c["close"]])
    if min_conns < WRK_THREADS:
        ap.error(f"wrk needs at least one connection per thread: -t{WRK_THREADS} but only "
                 f"{min_conns} connections in some scenario")
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in chosen if s not in ALL_SCENARIOS]
    if bad:
        ap.error(f"unknown scenarios {bad}; known: {ALL_SCENARIOS}")
    out = Path(args.out) if args.out else REPO / (
        "target/bench/load-pinned.json" if args.pinned else "target/bench/load.json")
    taskset = check_pinning_possible() if args.pinned else None

    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    tools = ensure_tools()
    NGINX_HTTP2_ON = nginx_has_http2_on(tools["nginx"])
    tmp = tempfile.mkdtemp(prefix="switchyard-bench-")
    TMPDIRS.append(tmp)
    os.chmod(tmp, 0o755)  # nginx workers may run as www-data and must read the static files
    LOGDIR = Path(tmp) / "logs"
    LOGDIR.mkdir()
    built, build_info = build_switchyard()
    (Path(tmp) / "bin").mkdir()
    binary = Path(tmp) / "bin/switchyard"
    shutil.copy2(built, binary)  # a rebuild by someone else mid-run does not change what we measure

    cores = os.cpu_count() or 1
    workers = cores
    if args.pinned:
        PIN = {"taskset": taskset, "server_cpu": PINNED_SERVER_CPU, "wrk_cpu": PINNED_WRK_CPU}
        workers = 1
        # This script (wrk's parent, the RSS sampler) stays off the servers' CPU as well.
        os.sched_setaffinity(0, {PINNED_WRK_CPU})
    facts = machine_facts(tools, binary)
    facts["switchyard_binary"] = str(built)
    facts["switchyard_binary_mtime"] = datetime.datetime.fromtimestamp(built.stat().st_mtime).isoformat(
        timespec="seconds")
    log(f"machine: {cores} cores, {facts['cpu']}, loadavg {facts['loadavg_start']}")

    result = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
              "args": {"rounds": args.rounds, "duration_s": args.duration, "scenarios": chosen,
                       "wrk_threads": WRK_THREADS, "wrk_connections": WRK_CONNS or 64,
                       "workers_per_proxy": workers, "pinned": bool(PIN)},
              "mode": "pinned" if PIN else "default",
              "pinning": ({"header": PINNED_HEADER, "server_cpu": PINNED_SERVER_CPU,
                           "wrk_cpu": PINNED_WRK_CPU, "taskset": taskset} if PIN else None),
              "machine": facts, "build": build_info, "start_errors": {}, "unavailable": {},
              "raw": {}, "summary": {}, "rss_mib": {}, "hwm_mib": {}, "scale": None}
    try:
        global TLS
        want_tls = any(SCENARIOS[sc].get("tls") for sc in chosen if sc in SCENARIOS)
        tls_ports = {}
        if want_tls:
            TLS = make_tls_cert(tmp)
            tls_ports = {s: free_port() for s in PROXIES}
            if args.baseline:
                tls_ports["switchyard-base"] = free_port()
            if not tools.get("h2load") and "h2-small" in chosen:
                result["unavailable"]["h2-small"] = {s: "h2load missing (nghttp2-client)"
                                                     for s in PROXIES}
        _backend, backends = start_backends(tools, tmp)
        log(f"backends (nginx, 1 worker) on {backends}")
        ports, pids = {"direct": backends[0]}, {"direct": _backend.pid}
        want_hook = "hook" in chosen
        try:
            sy_extra = switchyard_worker_args(binary, workers)
            facts["switchyard_workers"] = (f"--workers {workers}" if sy_extra
                                           else f"runtime default (one per allowed core, {workers})")
            sy, sy_port, sy_admin, hook_error = start_switchyard(binary, tmp, backends, want_hook,
                                                                 sy_extra,
                                                                 tls_port=tls_ports.get("switchyard"))
            ports["switchyard"] = sy_port
            pids["switchyard"] = sy.pid
            if want_hook:
                if hook_error:
                    result["unavailable"].setdefault("hook", {})["switchyard-hook"] = hook_error
                else:
                    ports["switchyard-hook"], pids["switchyard-hook"] = sy_port, sy.pid
            try:
                result["switchyard_version"] = admin_json(sy_admin, "/api/version")
            except Exception:
                pass
            facts["switchyard_threads"] = threads_of(sy.pid)
        except Exception as e:
            result["start_errors"]["switchyard"] = f"{e}\n{process_log('switchyard')}"
        if args.baseline:
            try:
                base_bin = Path(tmp) / "bin/switchyard-base"
                shutil.copy2(args.baseline, base_bin)
                base_extra = switchyard_worker_args(base_bin, workers)
                facts["switchyard_base_workers"] = (f"--workers {workers}" if base_extra else
                                                    f"runtime default (one per allowed core, {workers})")
                base, base_port, _, _ = start_switchyard(base_bin, tmp, backends, False, base_extra,
                                                         name="switchyard-base",
                                                         tls_port=tls_ports.get("switchyard-base"))
                ports["switchyard-base"], pids["switchyard-base"] = base_port, base.pid
                facts["switchyard_base_binary"] = str(args.baseline)
            except Exception as e:
                result["start_errors"]["switchyard-base"] = f"{e}\n{process_log('switchyard-base')}"
        for name, starter in (("nginx", lambda: start_nginx_proxy(tools, tmp, backends, workers,
                                                                  tls_ports.get("nginx"))),
                              ("haproxy", lambda: start_haproxy(tools, tmp, backends, workers,
                                                                tls_ports.get("haproxy")))):
            try:
                p, port = starter()
                ports[name], pids[name] = port, p.pid
            except Exception as e:
                result["start_errors"][name] = f"{e}\n{process_log(name + ('-proxy' if name == 'nginx' else ''))}"
        for name, err in result["start_errors"].items():
            log(f"{name} failed to start, continuing without it: {err}")
        log(f"listening: {ports}" + (f", TLS {tls_ports}" if tls_ports else ""))
        if want_tls:
            result["tls"] = {"note": TLS_NOTE, "checks": {}}
            tls_scenarios = [sc for sc in chosen if SCENARIOS.get(sc, {}).get("tls")]
            for s in PROXIES:
                if s not in ports:
                    continue
                try:
                    c = tls_check(tls_ports[s])
                except Exception as e:
                    c = {"error": f"{type(e).__name__}: {e}"}
                result["tls"]["checks"][s] = c
                log(f"TLS {s}: {c}")
                for sc in tls_scenarios:
                    why = c.get("error")
                    if not why and (c["status"] != 200 or not c["body_ok"]):
                        why = f"GET /small over TLS answered {c['status']}"
                    if not why and SCENARIOS[sc].get("tool") == "h2load" and c["h2_alpn"] != "h2":
                        why = f"ALPN gave {c['h2_alpn']!r} when h2 was offered"
                    if why:
                        result["unavailable"].setdefault(sc, {})[s] = f"TLS check: {why}"
        if PIN:
            # What the kernel says, for every process and thread of every system we started.
            allowed = {s: cpus_allowed(pid) for s, pid in pids.items() if not s.endswith("-hook")}
            result["pinning"]["cpus_allowed"] = allowed
            wrong = {s: a for s, a in allowed.items() if a != [str(PINNED_SERVER_CPU)]}
            if wrong:
                raise RuntimeError(f"pinning did not take (Cpus_allowed_list per system): {wrong}")
            log(f"pinned: {', '.join(allowed)} on CPU {PINNED_SERVER_CPU}; wrk on CPU {PINNED_WRK_CPU}")

        bench = {sc: cfg for sc, cfg in SCENARIOS.items() if sc in chosen}
        def systems_of(cfg):
            names = list(cfg["systems"])
            if "switchyard-base" in ports and "switchyard" in names:
                names.insert(names.index("switchyard") + 1, "switchyard-base")
            return [s for s in names if s in ports]

        systems_by_sc = {sc: systems_of(cfg) for sc, cfg in bench.items()}
        for sc, cfg in bench.items():
            for s in cfg["systems"]:
                if s not in ports and s not in result["unavailable"].get(sc, {}):
                    result["unavailable"].setdefault(sc, {})[s] = result["start_errors"].get(
                        s.replace("-hook", ""), "not started")
        raw = {sc: {s: [] for s in systems} for sc, systems in systems_by_sc.items()}
        result["raw"] = raw

        def host_for(system):
            return HOOK_HOST if system == "switchyard-hook" else BENCH_HOST

        if bench:
            log("warm-up (1 s per system, not recorded)")
            for s, port in ports.items():
                run_wrk(tools["wrk"], port, host_for(s), "/small", 16, 1, False)
            for s, port in tls_ports.items():
                if s in ports:
                    run_wrk(tools["wrk"], port, BENCH_HOST, "/small", 16, 1, False, scheme="https")
            total = args.rounds * sum(len(v) for v in systems_by_sc.values())
            log(f"{total} measurements of {args.duration} s ≈ {total * (args.duration + 0.3) / 60:.1f} min")
        for rnd in range(args.rounds):
            for sc, cfg in bench.items():
                order = systems_by_sc[sc]
                if PIN:  # rotating order: round k starts k places further along the list
                    k = rnd % len(order) if order else 0
                    order = order[k:] + order[:k]
                conns = cfg["conns"] if cfg["close"] else (WRK_CONNS or cfg["conns"])
                for s in order:
                    if s in result["unavailable"].get(sc, {}):
                        continue
                    if cfg.get("tool") == "h2load":
                        r = run_h2load(tools["h2load"], tls_ports[s], cfg["path"], cfg["conns"],
                                       args.duration, pids[s], sample_rss=bool(PIN))
                    elif cfg.get("tls"):
                        r = run_wrk(tools["wrk"], tls_ports[s], host_for(s), cfg["path"], conns,
                                    args.duration, cfg["close"], pids[s], sample_rss=bool(PIN),
                                    scheme="https")
                    else:
                        r = run_wrk(tools["wrk"], ports[s], host_for(s), cfg["path"], conns,
                                    args.duration, cfg["close"], pids[s], sample_rss=bool(PIN))
                    r["round"] = rnd + 1
                    raw[sc][s].append(r)
                    log(f"round {rnd + 1}/{args.rounds} {sc:8} {s:16} {fmt(r['rps']):>9} req/s "
                        f"p50 {fmt_ms(r['p50_ms'])} ms p99 {fmt_ms(r['p99_ms'])} ms"
                        f" cpu {fmt(r.get('cpu_us_per_req'), 1)} us/req"
                        + (f" rss {fmt(r.get('rss_peak_mib'), 1)} MiB" if PIN else "")
                        + (f" ERR {r.get('error') or ''} sock={r['socket_errors']} non2xx={r['non_2xx']}"
                           if r.get("error") or r["socket_errors"] or r["non_2xx"] else ""))
        for s, pid in pids.items():
            result["rss_mib"][s] = round(rss_kib(pid) / 1024, 1)
            result["hwm_mib"][s] = round(rss_kib(pid, "VmHWM") / 1024, 1)
            result.setdefault("processes", {})[s] = len(descendants(pid))
        result["summary"] = (summarize_pinned if PIN else summarize)(raw, systems_by_sc)

        if "scale" in chosen:
            log(f"scale check: {SCALE_ROUTES} routes")
            try:
                result["scale"] = scale_checks(binary, tools, tmp, backends, ports.get("switchyard"),
                                               args.duration, args.rounds,
                                               switchyard_worker_args(binary, workers))
            except Exception as e:
                result["scale"] = {"error": f"{e}\n{process_log('switchyard-scale')}"}
        facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        cleanup()
        result["configs"] = CONFIGS
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    print_report(result, args, out)


def print_report(result, args, out):
    f = result["machine"]
    print(f"## switchyard load benchmark — {args.rounds} round(s) × {args.duration} s per measurement\n")
    if result["summary"] and result.get("mode") == "pinned":
        print(markdown_table_pinned(result["summary"], result["unavailable"]))
        print("\nCells: median over rounds (each round runs every system once per scenario, in rotating"
              " order). × nginx / × direct: median (min–max) of the per-round ratio of req/s to nginx /"
              " to the direct backend measured in the *same* round; < 1 is slower."
              " RSS: VmRSS of the system's processes (nginx master + worker) sampled every"
              f" {RSS_SAMPLE_S} s during each run, max over runs (direct = the backend nginx)."
              " CPU s / 1000 req: utime+stime delta of the system's own processes (proxies exclude the"
              " backends) per 1000 requests, median.")
        notes = []
        for sc, systems in result["summary"].items():
            for sy, ref, what in (("switchyard", "switchyard-base", "before/after"),
                                  ("switchyard-hook", "switchyard", "hook cost")):
                s = systems.get(sy, {})
                if f"rps_vs_{ref}" in s:
                    notes.append(f"- {sc}: {sy} vs {ref} ({what}, per-round ratio, median (min–max)):"
                                 f" req/s {fmt_ratio_cell(s[f'rps_vs_{ref}'])},"
                                 f" p99 {fmt_ratio_cell(s[f'p99_ms_vs_{ref}'])}")
        if notes:
            print("\n" + "\n".join(notes))
    elif result["summary"]:
        print(markdown_table(result["summary"], result["rss_mib"], result["unavailable"]))
        print("\nCells: median over rounds; (× median ratio to the direct backend measured in the same"
              " round, min–max). req/s ratio < 1 and latency ratio > 1 are the proxy's cost."
              " CPU µs/req: CPU time (user+sys) of the measured server's own processes per request"
              " (direct = the backend; proxies exclude the backend)."
              " RSS: after the run, summed over the system's processes (direct = the backend nginx).")
        hook = result["summary"].get("hook", {})
        if "switchyard" in hook and "switchyard-hook" in hook:
            a, b = hook["switchyard"]["rps"]["median"], hook["switchyard-hook"]["rps"]["median"]
            if a and b:
                print(f"\nhook: switchyard with one Rhai on_request hook runs at {b / a:.2f}× the req/s"
                      " of the hook-less route (medians).")
    for sc, d in result["unavailable"].items():
        for sy, why in d.items():
            if sy in result["start_errors"]:
                continue
            print(f"\n{sc}/{sy} unavailable:\n    " + why.strip().replace("\n", "\n    "))
    for name, err in result["start_errors"].items():
        print(f"\n{name} did not start:\n    " + err.strip().replace("\n", "\n    "))
    s = result.get("scale")
    if s:
        print("\n### Scale check (switchyard)\n")
        if "error" in s:
            print(f"- error: {s['error']}")
        else:
            print(f"- idle RSS with the default script (scripts/00-welcome.rhai, {s.get('idle_routes')} routes):"
                  f" {s.get('idle_rss_mib')} MiB, {s.get('idle_threads')} threads")
            k = s.get("route_kinds", {})
            print(f"- {s.get('routes_declared')} routes ({k.get('exact')} exact hosts, {k.get('wildcard')}"
                  f" wildcards, {k.get('regex')} host_regex; {s.get('script_bytes', 0) / 1024:.0f} KiB script):"
                  f" build ok={s.get('build_ok')}, duration_ms {fmt(s.get('build_duration_ms'), 1)},"
                  f" write→live {fmt(s.get('write_to_live_ms'), 1)} ms (includes the 100 ms watcher debounce"
                  f" and 10 ms polling), live routes {s.get('live_routes')}")
            if s.get("errors"):
                print(f"- errors: {s['errors']}")
            if "rss_mib" in s:
                print(f"- RSS with {s.get('live_routes')} routes: {s['rss_mib']} MiB (peak {s['hwm_mib']} MiB)")
            if "lookup_checks" in s:
                print(f"- lookups (status): {s['lookup_checks']}")
            if s.get("rps_10k_routes") and s.get("rps_1_route"):
                print(f"- req/s on an exact-host route: {fmt(s['rps_10k_routes'])} with {s.get('live_routes')}"
                      f" routes vs {fmt(s['rps_1_route'])} with 1 route"
                      f" (×{s['rps_10k_routes'] / s['rps_1_route']:.2f})")
    print("\n### Machine\n")
    print(f"- nproc {f['nproc']}, CPU {f['cpu']}, kernel {f['kernel']},"
          f" loadavg start {' '.join(f.get('loadavg_start', []))} end {' '.join(f.get('loadavg_end', []))}")
    print(f"- {f['nginx']}; {f['haproxy']}; {f['wrk']}; switchyard {f['switchyard_commit']}"
          f" (build: {'ok' if result['build']['ok'] else 'FAILED, measured the existing binary'};"
          f" binary built {f.get('switchyard_binary_mtime')})")
    a = result["args"]
    print(f"- wrk: {a['wrk_threads']} thread(s), {a.get('wrk_connections', 64)} connections"
          f" (newconn: 16, `Connection: close`);"
          f" workers: nginx worker_processes {a['workers_per_proxy']}, haproxy nbthread {a['workers_per_proxy']},"
          f" switchyard {f.get('switchyard_workers', '?')}"
          + (f", switchyard-base {f['switchyard_base_workers']}" if f.get("switchyard_base_workers") else "")
          + "; backend nginx 1 worker")
    tls = result.get("tls")
    if tls:
        print(f"- TLS scenarios: {tls['note']}. h2-small: h2load -t{a['wrk_threads']} -c16"
              f" -m{H2_STREAMS} ({f.get('h2load')}; mean request time in the p50 column, no p99);"
              f" {f.get('openssl')}")
        for sy, c in tls["checks"].items():
            if "error" in c:
                print(f"  - {sy}: TLS check failed: {c['error']}")
            else:
                print(f"  - {sy}: {c['version']} {c['cipher']}, GET /small {c['status']},"
                      f" session resumed: {'yes' if c['resumed'] else 'no'},"
                      f" ALPN offered h2: {c['h2_alpn']}")
    pin = result.get("pinning")
    if pin:
        print(f"- pinning: `taskset -c {pin['server_cpu']}` on every server (checked: Cpus_allowed_list"
              f" {pin.get('cpus_allowed', '?')}), `taskset -c {pin['wrk_cpu']} wrk`; this script also"
              f" on CPU {pin['wrk_cpu']}. Other load on the machine is not pinned away.")
    print(f"\nraw per-round numbers: {out}")


if __name__ == "__main__":
    main()
