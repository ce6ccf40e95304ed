#!/usr/bin/env python3
"""TCP (L4) benchmark: switchyard's TCP routing vs HAProxy `mode tcp` vs nginx `stream`, in front
of the same nginx backend, with `direct` (the backend itself) as the reference.

    python3 benches/load/tcp.py [--rounds N] [--duration S] [--quick] [--out FILE]
    python3 benches/load/tcp.py --pinned [...]   # proxy+backend on CPU 1, wrk on CPU 0, 1 worker each

Scenarios (all on 127.0.0.1, wrk as the load generator):
  tcp-connrate     a new TCP connection per request (wrk -H "Connection: close", 13-byte body):
                   connections/s
  tcp-throughput   bulk bytes: wrk keep-alive connections downloading a 1 MiB body: MiB/s
  tcp-passthrough  TLS passthrough routed by SNI (the backend nginx terminates TLS 1.3), a new
                   TCP+TLS connection per request: connections/s

See benches/load/README.md ("TCP benchmark"). Standard library only; the process registry,
pinning, nginx start-up, wrk parsing and cleanup come from run.py next to this file. Every
process started here is stopped by PID on exit and the temp dir is removed.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benches/load/run.py: helpers only, its main() is not run)

HOST = run.HOST
# wrk sends the URL's host as SNI (it cannot be set apart from the URL), so the passthrough
# scenario connects to https://localhost:PORT and the proxies route SNI `localhost`.
# wrk drops addresses it cannot connect to, so a `localhost` that also resolves to ::1 works.
SNI = "localhost"
HTTP_HOST = "bench.local"  # Host header of the requests (the backend answers any host)
BIG = 1 << 20  # the throughput body: 1 MiB
SMALL_BODY = run.SMALL_BODY  # 13 bytes

SYSTEMS = ["direct", "switchyard", "haproxy", "nginx"]
PROXIES = ["switchyard", "haproxy", "nginx"]
ALL_SCENARIOS = ["tcp-connrate", "tcp-throughput", "tcp-passthrough"]
SCENARIOS = {
    "tcp-connrate": dict(listener="tcp", path="/small", conns=16, close=True, scheme="http",
                         unit="conn/s"),
    "tcp-throughput": dict(listener="tcp", path="/1m", conns=16, close=False, scheme="http",
                           unit="MiB/s"),
    "tcp-passthrough": dict(listener="tls", path="/small", conns=16, close=True, scheme="https",
                            unit="conn/s"),
}
# The targets: switchyard / haproxy, per-round ratio, median.
TARGETS = {"tcp-connrate": 1.0, "tcp-throughput": 0.9}
REFS = ("haproxy", "nginx", "direct")
SWITCHYARD_VERSION = {}  # the measured binary's /api/version (its embedded commit)
PINNED_HEADER = "pinned mode: proxy+backend on CPU 1, wrk on CPU 0, one worker each"

# wrk's done() callback prints exact totals (Transfer/sec has 2 decimals of its unit only).
DONE_LUA = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TCPBENCH bytes=%d duration_us=%d requests=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.bytes, summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

log = run.log


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

def nginx_stream_module(nginx, module=None):
    """("load_module ...;\\n" or "", None) when this nginx can run a `stream` block with
    `ssl_preread`, else (None, why + the apt command). `module`: a ngx_stream_module.so to load
    (--nginx-stream-module) instead of the one under nginx's --modules-path."""
    if module:
        if not Path(module).is_file():
            return None, f"--nginx-stream-module {module}: no such file"
        return f"load_module {Path(module).resolve()};\n", None
    try:
        v = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nginx -V: {e}"
    apt = "apt-get install -y libnginx-mod-stream"
    if re.search(r"--with-stream(\s|$)", v):
        return "", None  # built in
    if "--with-stream=dynamic" in v:
        m = re.search(r"--modules-path=(\S+)", v)
        so = Path(m.group(1) if m else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
        if so.exists():
            # Our nginx.conf is our own (no /etc/nginx/modules-enabled include): load it here.
            return f"load_module {so};\n", None
        return None, f"nginx's stream module is not installed ({so} is missing): `{apt}`"
    return None, f"this nginx has no stream module (nginx -V shows no --with-stream): `{apt}`"


def check_tools(install, stream_module=None):
    """The tools each part needs. Missing ones are reported with the apt command; with
    --install (as root) they are installed with apt-get, as run.py's ensure_tools does.
    Returns (paths, {system or scenario: why unavailable})."""
    need = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy", "openssl": "openssl"}
    missing = {t: pkg for t, pkg in need.items() if not run.which(t)}
    stream_load, stream_why = (None, None)
    if run.which("nginx"):
        stream_load, stream_why = nginx_stream_module(run.which("nginx"), stream_module)
    pkgs = sorted(set(missing.values()) | ({"libnginx-mod-stream"} if stream_why else set()))
    if pkgs and install:
        if os.geteuid() != 0:
            sys.exit(f"--install needs root; run `sudo apt-get install -y {' '.join(pkgs)}`")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"installing {pkgs} with apt-get (--install)")
        quiet = dict(env=env, timeout=1200, stdout=sys.stderr, stdin=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", *pkgs], **quiet)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", *pkgs], check=True, **quiet)
        missing = {t: pkg for t, pkg in need.items() if not run.which(t)}
        if run.which("nginx"):
            stream_load, stream_why = nginx_stream_module(run.which("nginx"), stream_module)
    elif pkgs:
        log(f"missing: {pkgs} — install with `apt-get install -y {' '.join(pkgs)}`"
            " (or run this script with --install as root)")
    for t in ("wrk", "nginx"):  # the load generator and the backend: nothing runs without them
        if t in missing:
            sys.exit(f"`{t}` is missing: `apt-get install -y {missing[t]}` (or --install as root)")
    unavailable = {}
    if "haproxy" in missing:
        unavailable["haproxy"] = "haproxy is missing: `apt-get install -y haproxy`"
    if stream_why:
        unavailable["nginx"] = stream_why
    if "openssl" in missing:
        unavailable["tcp-passthrough"] = "openssl is missing (makes the backend's certificate):" \
                                         " `apt-get install -y openssl`"
    paths = {t: run.which(t) for t in need}
    paths["nginx_stream_load"] = stream_load
    return paths, unavailable


def rustc_running():
    """PIDs of rustc and cargo processes on the machine (a build or test run by someone else;
    `cargo test` stays the parent of the test binaries it runs)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("rustc", "cargo"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


_GAVE_UP_WAITING = False


def wait_for_builds(limit_s):
    """Waits (at most limit_s seconds) while rustc/cargo runs; returns the seconds waited. After
    one wait that runs out, later calls no longer wait (a watcher left running would otherwise
    cost limit_s per measurement)."""
    global _GAVE_UP_WAITING
    if limit_s <= 0 or _GAVE_UP_WAITING:
        return 0.0
    t0 = time.monotonic()
    said = False
    while rustc_running() and time.monotonic() - t0 < limit_s:
        if not said:
            log(f"rustc/cargo is running (a build or test elsewhere): waiting up to {limit_s:.0f} s"
                " before measuring")
            said = True
        time.sleep(2)
    waited = time.monotonic() - t0
    if said:
        if rustc_running():
            _GAVE_UP_WAITING = True
            log(f"waited {waited:.0f} s, still running: measuring anyway from now on (runs flagged)")
        else:
            log(f"waited {waited:.0f} s")
    return waited


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def make_cert(tmp):
    d = Path(tmp) / "tls"
    run.mkdirs(d, ".")
    cert, key = d / "backend.crt", d / "backend.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={SNI}",
                    "-addext", f"subjectAltName=DNS:{SNI},IP:{HOST}"],
                   check=True, capture_output=True, timeout=60)
    return {"cert": str(cert), "key": str(key)}


def backend_config(d, port, tls_port, tls):
    locs = f"""        root {d}/www;
        location = /small {{ return 200 "{SMALL_BODY.strip()}\\n"; }}
        location = /1m {{ }}
"""
    tls_server = ""
    if tls_port:
        # TLS 1.3; nginx's defaults otherwise (session tickets on, no session cache): wrk resumes
        # each connection slot's session, so each request is a resumed TLS 1.3 handshake.
        tls_server = f"""    server {{
        listen {HOST}:{tls_port} ssl backlog=4096;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        ssl_protocols TLSv1.3;
{locs}    }}
"""
    return run.nginx_common(d) + f"""worker_processes 1;
events {{ worker_connections 16384; }}
http {{
{run.nginx_http_common(d)}    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
        listen {HOST}:{port} backlog=4096;
{locs}    }}
{tls_server}}}
"""


def haproxy_config(port, tls_port, backend, backend_tls, threads):
    tls = ""
    if tls_port:
        tls = f"""
frontend tls
    bind {HOST}:{tls_port}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    use_backend tlsbackend if {{ req.ssl_sni -i {SNI} }}

backend tlsbackend
    server s1 {HOST}:{backend_tls}
"""
    return f"""global
    nbthread {threads}
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tcp
    bind {HOST}:{port}
    default_backend backend

backend backend
    server s1 {HOST}:{backend}
{tls}"""


def nginx_stream_config(d, load, port, tls_port, backend, backend_tls, workers):
    tls = ""
    if tls_port:
        # SNI routing; any other name goes to a closed port (the connection is refused).
        tls = f"""    upstream tlsbackend {{ server {HOST}:{backend_tls}; }}
    upstream nowhere {{ server {HOST}:1; }}
    map $ssl_preread_server_name $tls_upstream {{
        {SNI} tlsbackend;
        default nowhere;
    }}
    server {{
        listen {HOST}:{tls_port} backlog=4096;
        ssl_preread on;
        proxy_pass $tls_upstream;
    }}
"""
    return load + run.nginx_common(d) + f"""worker_processes {workers};
events {{ worker_connections 16384; }}
stream {{
    upstream backend {{ server {HOST}:{backend}; }}
    server {{
        listen {HOST}:{port} backlog=4096;
        proxy_pass backend;
    }}
{tls}}}
"""


def switchyard_scripts(backend, backend_tls):
    tcp = f"""// generated by benches/load/tcp.py: every cleartext connection on `tcp` to the backend
tcp_route("bench")
    .rule("HostSNI(`*`)")
    .entrypoints(["tcp"])
    .to(tcp_service("backend").servers(["{HOST}:{backend}"]));
"""
    tls = f"""// generated by benches/load/tcp.py: TLS passthrough by SNI on `tcptls`
tcp_route("tls")
    .rule("HostSNI(`{SNI}`)")
    .entrypoints(["tcptls"])
    .tls(#{{ passthrough: true }})
    .to(tcp_service("tlsbackend").servers(["{HOST}:{backend_tls}"]));
"""
    return tcp, tls


# ---------------------------------------------------------------------------------------------
# Starting and checking systems
# ---------------------------------------------------------------------------------------------

def start_backend(tools, tmp, tls):
    d = Path(tmp) / "backend"
    run.mkdirs(d, "www")
    (d / "www/1m").write_bytes((b"0123456789abcdef" * (BIG // 16))[:BIG])
    port = run.free_port()
    tls_port = run.free_port() if tls else None
    p = run.start_nginx("backend-nginx", tools["nginx"], d, backend_config(d, port, tls_port, tls),
                        [port] + ([tls_port] if tls_port else []))
    check_plain(port)
    if tls_port:
        check_tls(tls_port, routed=False)
    return p, port, tls_port


def check_plain(port):
    """/small and /1m through `port` give the backend's bodies."""
    for path, size in (("/small", len(SMALL_BODY)), ("/1m", BIG)):
        st, _, body = run.http_get(port, HTTP_HOST, path, timeout=10)
        if st != 200 or len(body) != size:
            raise RuntimeError(f"GET {path} via port {port}: status {st}, {len(body)} bytes (want {size})")


def tls_get(port, sni, timeout=5.0):
    """GET /small over TLS with SNI `sni` (no certificate check); returns (version, status, body)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as t:
            t.sendall(f"GET /small HTTP/1.1\r\nHost: {HTTP_HOST}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            for _ in range(1000):
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
            head = data.split(b"\r\n", 1)[0].split()
            status = int(head[1]) if len(head) > 1 and head[1].isdigit() else None
            return t.version(), status, data.split(b"\r\n\r\n", 1)[-1]


def check_tls(port, routed=True):
    """The backend's TLS answer reaches us through `port` for SNI `localhost`; with `routed`,
    another SNI name does not (the proxy routes by SNI)."""
    version, status, body = tls_get(port, SNI)
    if status != 200 or body != SMALL_BODY.encode():
        raise RuntimeError(f"TLS GET /small (SNI {SNI}) via port {port}: status {status}, body {body[:60]!r}")
    if routed:
        try:
            _, st, _ = tls_get(port, "other.example", timeout=3)
            raise RuntimeError(f"SNI other.example via port {port} was answered ({st}): not routed by SNI")
        except (OSError, ssl.SSLError):
            pass  # refused/closed: as wanted
    return version


def wait_ok(fn, proc, timeout=20.0):
    """Calls fn until it returns without an exception (bounded), re-raising the last one."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            return fn()
        except (OSError, RuntimeError, ssl.SSLError) as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{e}") from e
            time.sleep(0.1)


def start_haproxy(tools, tmp, backend, backend_tls, threads, with_tls):
    d = Path(tmp) / "haproxy"
    run.mkdirs(d, ".")
    port, tls_port = run.free_port(), (run.free_port() if with_tls else None)
    cfg = d / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, tls_port, backend, backend_tls, threads))
    run.CONFIGS["haproxy"] = cfg.read_text()
    t = subprocess.run([tools["haproxy"], "-c", "-q", "-f", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    if t.returncode != 0:
        raise RuntimeError(f"haproxy -c: {run.tail(t.stdout + t.stderr, 10)}")
    p = run.PROCS.start("haproxy", run.on_server_cpu([tools["haproxy"], "-db", "-f", str(cfg)]), d)
    for pt in (port, tls_port):
        if pt:
            run.wait_port(pt, p)
    wait_ok(lambda: check_plain(port), p)
    return p, port, tls_port


def start_nginx_stream(tools, tmp, backend, backend_tls, workers, with_tls):
    d = Path(tmp) / "nginx-stream"
    port, tls_port = run.free_port(), (run.free_port() if with_tls else None)
    p = run.start_nginx("nginx", tools["nginx"], d,
                        nginx_stream_config(d, tools["nginx_stream_load"], port, tls_port, backend,
                                            backend_tls, workers),
                        [port] + ([tls_port] if tls_port else []))
    wait_ok(lambda: check_plain(port), p)
    return p, port, tls_port


def switchyard_check(binary, scripts, entrypoints):
    argv = [str(binary), "check", "--scripts", str(scripts)]
    for e in entrypoints:
        argv += ["--entrypoint", e]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return None if r.returncode == 0 else (run.tail(r.stdout + r.stderr, 12) or f"check exited {r.returncode}")


def start_switchyard(binary, tmp, backend, backend_tls, worker_args, with_tls):
    """Returns (proc, tcp port, tls port or None, why the passthrough route is unavailable)."""
    d = Path(tmp) / "switchyard"
    scripts = d / "scripts"
    run.mkdirs(d, "scripts")
    port, tls_port, admin = run.free_port(), run.free_port(), run.free_port()
    eps = [f"tcp={HOST}:{port}", f"tcptls={HOST}:{tls_port}"]
    tcp_text, tls_text = switchyard_scripts(backend, backend_tls)
    (scripts / "10-tcp.rhai").write_text(tcp_text)
    err = switchyard_check(binary, scripts, eps[:1])
    if err:
        raise RuntimeError(f"`switchyard check` refuses the TCP route script (is TCP routing in this build?):\n{err}")
    tls_why = None
    if with_tls:
        (scripts / "20-tls.rhai").write_text(tls_text)
        tls_why = switchyard_check(binary, scripts, eps)
        if tls_why:
            (scripts / "20-tls.rhai").unlink()
            tls_why = f"`switchyard check` refuses the passthrough route:\n{tls_why}"
    if not with_tls or tls_why:
        eps, tls_port = eps[:1], None
    run.CONFIGS["switchyard"] = "\n".join(f"// {f.name}\n{f.read_text()}" for f in sorted(scripts.glob("*.rhai")))
    argv = [str(binary), "run", "--scripts", str(scripts)]
    for e in eps:
        argv += ["--entrypoint", e]
    argv += ["--admin", f"{HOST}:{admin}", "--log-level", "warn", "--grace-period", "1s", *worker_args]
    p = run.PROCS.start("switchyard", run.on_server_cpu(argv), d)
    run.CONFIGS["switchyard-command"] = " ".join(p.args)
    run.wait_port(port, p)
    wait_ok(lambda: check_plain(port), p)
    if tls_port:
        run.wait_port(tls_port, p)
    try:
        SWITCHYARD_VERSION.update(run.admin_json(admin, "/api/version"))
    except Exception:
        pass
    return p, port, tls_port, tls_why


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------

def run_wrk(wrk, lua, url, conns, duration, close, server_pid):
    argv = run.on_wrk_cpu([wrk, f"-t{run.WRK_THREADS}", f"-c{conns}", f"-d{duration}s", "--latency",
                           "--timeout", "5s", "-s", str(lua), "-H", f"Host: {HTTP_HOST}"])
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    rustc_before = bool(rustc_running())
    out, extra, cpu0 = run.run_load_tool("wrk", argv, duration, server_pid, bool(run.PIN))
    r = run.parse_wrk(out)
    m = re.search(r"TCPBENCH bytes=(\d+) duration_us=(\d+) requests=(\d+)", out)
    if m:
        nbytes, dur_us, reqs = (int(x) for x in m.groups())
        r["bytes"], r["duration_s"] = nbytes, dur_us / 1e6
        r["mib_per_s"] = nbytes / (dur_us / 1e6) / (1 << 20) if dur_us else None
        r["requests"] = reqs
    r["connections"] = conns
    r.update(extra)
    r = run.finish_run(r, out, server_pid, cpu0)
    if r.get("rps") is None:
        r["mib_per_s"] = None
    r["rustc_during"] = rustc_before or bool(rustc_running())
    return r


def value_of(sc, r):
    return r.get("mib_per_s") if SCENARIOS[sc]["unit"] == "MiB/s" else r.get("rps")


def cpu_of(sc, r):
    """CPU of the measured system: µs per connection, or ms per GiB moved (throughput)."""
    us = r.get("cpu_us_per_req")
    if us is None:
        return None
    if SCENARIOS[sc]["unit"] == "MiB/s":
        return us * 1024 / 1000  # one request = 1 MiB: µs/MiB × 1024 / 1000 = ms/GiB
    return us


def stats(xs):
    xs = [x for x in xs if x is not None]
    return {"median": run.med(xs), "min": min(xs) if xs else None, "max": max(xs) if xs else None}


def summarize(raw):
    """Per scenario and system: medians over rounds; ratios to haproxy, nginx and direct from the
    same round (matched by round number), median (min–max)."""
    out = {}
    for sc, by_sys in raw.items():
        out[sc] = {}
        by_round = {sy: {r["round"]: r for r in rows} for sy, rows in by_sys.items()}
        for sy, rows in by_sys.items():
            if not rows:
                continue
            s = {"rounds": len(rows), "value": stats([value_of(sc, r) for r in rows]),
                 "p99_ms": stats([r.get("p99_ms") for r in rows]),
                 "cpu": stats([cpu_of(sc, r) for r in rows]),
                 "rss_peak_mib": stats([r.get("rss_peak_mib") for r in rows]),
                 "errors": sum((r.get("socket_errors") or 0) + (r.get("non_2xx") or 0) for r in rows),
                 "failed_runs": sum(1 for r in rows if value_of(sc, r) is None),
                 "rustc_during": sum(1 for r in rows if r.get("rustc_during"))}
            for ref in REFS:
                if ref == sy or ref not in by_round:
                    continue
                ratios = []
                for r in rows:
                    v, rv = value_of(sc, r), value_of(sc, by_round[ref].get(r["round"], {}))
                    if v is not None and rv:
                        ratios.append(v / rv)
                s[f"vs_{ref}"] = stats(ratios)
            out[sc][sy] = s
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def ratio_cell(r):
    if not r or r["median"] is None:
        return "–"
    if r["min"] == r["max"]:
        return f"×{r['median']:.2f}"
    return f"×{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def value_cell(v, unit):
    nd = 0 if unit == "conn/s" else 1
    if v["median"] is None:
        return "–"
    if v["min"] == v["max"]:
        return run.fmt(v["median"], nd)
    return f"{run.fmt(v['median'], nd)} ({run.fmt(v['min'], nd)}–{run.fmt(v['max'], nd)})"


def markdown(result):
    summary, unavailable = result["summary"], result["unavailable"]
    lines = []
    if result.get("pinning"):
        lines += [PINNED_HEADER, ""]
    lines += ["| scenario | system | value, median (min–max) | × haproxy | × nginx | × direct | p99 ms"
              " | CPU | RSS MiB (max) | errors |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sc in result["args"]["scenarios"]:
        cfg = SCENARIOS[sc]
        unit = cfg["unit"]
        cpu_unit = "ms/GiB" if unit == "MiB/s" else "µs/conn"
        for sy in SYSTEMS:
            s = summary.get(sc, {}).get(sy)
            why = unavailable.get(sc, {}).get(sy)
            if s is None:
                if why:
                    lines.append(f"| {sc} | {sy} | unavailable (below) | | | | | | | |")
                continue
            flags = []
            if s["failed_runs"]:
                flags.append(f"{s['failed_runs']} failed run(s)")
            if s["rustc_during"]:
                flags.append(f"rustc/cargo ran during {s['rustc_during']} run(s)")
            errs = (str(s["errors"]) if s["errors"] else "") + ((" " if s["errors"] else "") + "; ".join(flags)
                                                                if flags else "")
            cells = ["(ref)" if sy == ref else ratio_cell(s.get(f"vs_{ref}")) for ref in REFS]
            lines.append(f"| {sc} | {sy} | {value_cell(s['value'], unit)} {unit} | {' | '.join(cells)}"
                         f" | {run.fmt_ms(s['p99_ms']['median'])} | {run.fmt(s['cpu']['median'], 1)} {cpu_unit}"
                         f" | {run.fmt(s['rss_peak_mib']['max'], 1)} | {errs} |")
    text = "\n".join(lines)
    notes = []
    for sc, target in TARGETS.items():
        s = summary.get(sc, {}).get("switchyard", {})
        r = s.get("vs_haproxy")
        if sc not in result["args"]["scenarios"]:
            continue
        if not r or r["median"] is None:
            notes.append(f"- {sc}: switchyard vs haproxy: not measured (target ≥ {target:.1f}×)")
        else:
            met = "met" if r["median"] >= target else "NOT met"
            notes.append(f"- {sc}: switchyard / haproxy {ratio_cell(r)} — target ≥ {target:.1f}×: {met}")
    if notes:
        text += "\n\nTargets (per-round ratio, median (min–max)):\n" + "\n".join(notes)
    text += ("\n\nCells: median over rounds (each round runs every system once per scenario, order"
             " rotated by one place per round); × haproxy / × nginx / × direct: median (min–max) of the"
             " per-round ratio to that system measured in the *same* round (> 1: faster)."
             " tcp-connrate and tcp-passthrough: connections/s (wrk requests/s with `Connection: close`:"
             " one TCP connection per request); tcp-throughput: MiB/s of response bytes (wrk's byte"
             " count over its run time; wrk's Transfer/sec `MB` is the same MiB)."
             " CPU: utime+stime of the system's own processes (proxies exclude the backend) per"
             " connection, or per GiB moved. RSS: VmRSS sampled every 0.25 s during runs (pinned mode)."
             " direct = wrk straight to the backend nginx.")
    started_not = result.get("start_errors", {})
    for sy, why in started_not.items():
        text += f"\n\n{sy} unavailable (every scenario):\n    " + str(why).strip().replace("\n", "\n    ")
    for sc, d in unavailable.items():
        for sy, why in d.items():
            if sy in started_not:
                continue
            text += f"\n\n{sc}/{sy} unavailable:\n    " + str(why).strip().replace("\n", "\n    ")
    m = result["machine"]
    a = result["args"]
    text += ("\n\n### Setup\n\n"
             f"- command: `{result['command']}`\n"
             f"- nproc {m['nproc']}, CPU {m['cpu']}, kernel {m['kernel']}, loadavg start"
             f" {' '.join(m['loadavg_start'])} end {' '.join(m.get('loadavg_end', []))}\n"
             f"- {m['nginx']}; {m['haproxy']}; {m['wrk']}; switchyard: "
             + (f"`--binary {m.get('switchyard_binary')}` (its /api/version commit:"
                f" {result.get('switchyard_version', {}).get('commit', '?')}; the repository is at"
                f" {m['switchyard_commit']})" if result['build'].get('skipped') else
                f"{m['switchyard_commit']} (cargo build --release:"
                f" {'ok' if result['build'].get('ok') else 'FAILED, measured the existing binary'})")
             + f", binary built {m.get('switchyard_binary_mtime')}\n"
             f"- wrk -t{a['wrk_threads']}, 16 connections in every scenario (tcp-connrate and"
             f" tcp-passthrough with `Connection: close`); workers: haproxy `nbthread {a['workers']}`,"
             f" nginx `worker_processes {a['workers']}`, switchyard {m.get('switchyard_workers', '?')};"
             " backend nginx 1 worker (sendfile on), 13-byte /small and 1 MiB /1m\n"
             f"- passthrough: the backend terminates TLS 1.3 (ECDSA P-256, nginx defaults: session tickets,"
             f" which wrk resumes), the proxies route SNI `{SNI}` by peeking at the ClientHello"
             " (haproxy `tcp-request inspect-delay` + `req.ssl_sni`, nginx `ssl_preread`, switchyard"
             " `.tls(#{ passthrough: true })`)")
    pin = result.get("pinning")
    if pin:
        text += (f"\n- pinning: `taskset -c {pin['server_cpu']}` on every server (checked:"
                 f" Cpus_allowed_list {pin.get('cpus_allowed', '?')}), `taskset -c {pin['wrk_cpu']} wrk`;"
                 " other load on the machine is not pinned away")
    return text + "\n"


def machine_facts(tools, binary):
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired, TypeError):
            return None

    cpu = None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = first_line(["git", "-C", str(run.REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(run.REPO), "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "nginx": first_line([tools["nginx"], "-v"]),
            "haproxy": first_line([tools["haproxy"], "-v"]) if tools.get("haproxy") else None,
            "wrk": (first_line([tools["wrk"], "-v"]) or "").split(" Copyright")[0],
            "switchyard_commit": (commit or "?") + (" + uncommitted changes in src/" if dirty else ""),
            "switchyard_binary": str(binary),
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="1 round of 2-second measurements")
    ap.add_argument("--pinned", action="store_true",
                    help="proxy + backend on CPU 1 (taskset), wrk alone on CPU 0, one worker each")
    ap.add_argument("--out", default=None,
                    help="Markdown table (default target/bench/tcp.md, with --pinned target/bench/"
                         "tcp-pinned.md); the raw per-round JSON goes next to it (.json)")
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}")
    ap.add_argument("--wrk-threads", type=int, default=None, help="wrk -t (default 1, with --pinned 2)")
    ap.add_argument("--binary", default=None,
                    help="measure this switchyard binary instead of running `cargo build --release`")
    ap.add_argument("--build-wait", type=float, default=900,
                    help="before each measurement, wait at most this many seconds while a rustc runs"
                         " elsewhere (default 900; 0: do not wait)")
    ap.add_argument("--nginx-stream-module", default=None, metavar="SO",
                    help="load this ngx_stream_module.so (built for the installed nginx) instead of"
                         " the one libnginx-mod-stream puts under nginx's --modules-path")
    ap.add_argument("--install", action="store_true",
                    help="as root, apt-get install missing tools (wrk, nginx, haproxy, openssl,"
                         " libnginx-mod-stream); without it they are only reported")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2
    run.WRK_THREADS = args.wrk_threads if args.wrk_threads is not None else (2 if args.pinned else 1)
    if args.rounds < 1 or args.duration < 1 or not 1 <= run.WRK_THREADS <= 16:
        ap.error("--rounds and --duration must be >= 1, --wrk-threads 1..16")
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenarios {bad}; known: {ALL_SCENARIOS}")
    out = Path(args.out) if args.out else run.REPO / (
        "target/bench/tcp-pinned.md" if args.pinned else "target/bench/tcp.md")
    out_json = out.with_suffix(".json")
    taskset = run.check_pinning_possible() if args.pinned else None

    atexit.register(run.cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, run._on_signal)

    tools, tool_gaps = check_tools(args.install, args.nginx_stream_module)
    tmp = tempfile.mkdtemp(prefix="switchyard-tcpbench-")
    run.TMPDIRS.append(tmp)
    os.chmod(tmp, 0o755)  # nginx workers may run as www-data and must read the static files
    run.LOGDIR = Path(tmp) / "logs"
    run.LOGDIR.mkdir()
    if args.binary:
        built, build_info = Path(args.binary).resolve(), {"ok": None, "skipped": f"--binary {args.binary}"}
        if not built.exists():
            sys.exit(f"--binary {built}: no such file")
    else:
        built, build_info = run.build_switchyard()
    (Path(tmp) / "bin").mkdir()
    binary = Path(tmp) / "bin/switchyard"
    shutil.copy2(built, binary)  # a rebuild by someone else mid-run does not change what we measure

    workers = os.cpu_count() or 1
    if args.pinned:
        run.PIN = {"taskset": taskset, "server_cpu": run.PINNED_SERVER_CPU, "wrk_cpu": run.PINNED_WRK_CPU}
        workers = 1
        os.sched_setaffinity(0, {run.PINNED_WRK_CPU})  # this script (wrk's parent, sampler) too
    facts = machine_facts(tools, binary)
    facts["switchyard_binary"] = str(built)
    facts["switchyard_binary_mtime"] = datetime.datetime.fromtimestamp(built.stat().st_mtime).isoformat(
        timespec="seconds")
    result = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python3 benches/load/tcp.py " + " ".join(sys.argv[1:]),
              "args": {"rounds": args.rounds, "duration_s": args.duration, "scenarios": chosen,
                       "wrk_threads": run.WRK_THREADS, "workers": workers, "pinned": bool(run.PIN)},
              "pinning": ({"server_cpu": run.PINNED_SERVER_CPU, "wrk_cpu": run.PINNED_WRK_CPU,
                           "taskset": taskset} if run.PIN else None),
              "machine": facts, "build": build_info, "unavailable": {}, "start_errors": {},
              "raw": {}, "summary": {}}
    unavailable = result["unavailable"]

    def mark(sc, sy, why):
        unavailable.setdefault(sc, {}).setdefault(sy, why)

    try:
        want_tls = "tcp-passthrough" in chosen and "tcp-passthrough" not in tool_gaps
        if "tcp-passthrough" in chosen and not want_tls:
            for sy in SYSTEMS:
                mark("tcp-passthrough", sy, tool_gaps["tcp-passthrough"])
        tls = make_cert(tmp) if want_tls else None
        backend_p, backend, backend_tls = start_backend(tools, tmp, tls)
        log(f"backend nginx (1 worker): cleartext {backend}, TLS {backend_tls}")
        # system -> {"tcp": port, "tls": port}
        ports = {"direct": {"tcp": backend, "tls": backend_tls}}
        pids = {"direct": backend_p.pid}
        worker_args = run.switchyard_worker_args(binary, workers)
        facts["switchyard_workers"] = (f"--workers {workers}" if worker_args
                                       else f"runtime default (one per allowed core, {workers})")
        starters = {
            "switchyard": lambda: start_switchyard(binary, tmp, backend, backend_tls, worker_args, want_tls),
            "haproxy": lambda: (*start_haproxy(tools, tmp, backend, backend_tls, workers, want_tls), None),
            "nginx": lambda: (*start_nginx_stream(tools, tmp, backend, backend_tls, workers, want_tls), None),
        }
        for sy in PROXIES:
            if sy in tool_gaps:
                result["start_errors"][sy] = tool_gaps[sy]
                continue
            try:
                p, port, tls_port, tls_why = starters[sy]()
                ports[sy], pids[sy] = {"tcp": port, "tls": tls_port}, p.pid
                if tls_port:
                    try:
                        v = wait_ok(lambda: check_tls(tls_port), p, timeout=10)
                        log(f"{sy}: passthrough by SNI ok ({v})")
                    except RuntimeError as e:
                        tls_why = f"passthrough check: {e}"
                        ports[sy]["tls"] = None
                if want_tls and tls_why:
                    mark("tcp-passthrough", sy, tls_why)
            except Exception as e:
                name = sy
                result["start_errors"][sy] = f"{e}\n{run.process_log(name)}".strip()
        for sy, err in result["start_errors"].items():
            log(f"{sy} unavailable: {err}")
            for sc in chosen:
                mark(sc, sy, err)
        log(f"listening: {ports}")
        if run.PIN:
            allowed = {sy: run.cpus_allowed(pid) for sy, pid in pids.items()}
            result["pinning"]["cpus_allowed"] = allowed
            wrong = {sy: a for sy, a in allowed.items() if a != [str(run.PINNED_SERVER_CPU)]}
            if wrong:
                raise RuntimeError(f"pinning did not take (Cpus_allowed_list per system): {wrong}")

        lua = Path(tmp) / "done.lua"
        lua.write_text(DONE_LUA)

        def url(sy, sc):
            cfg = SCENARIOS[sc]
            port = ports.get(sy, {}).get(cfg["listener"])
            if not port:
                return None
            host = SNI if cfg["scheme"] == "https" else HOST
            return f"{cfg['scheme']}://{host}:{port}{cfg['path']}"

        systems_by_sc = {sc: [sy for sy in SYSTEMS if url(sy, sc) and sy not in unavailable.get(sc, {})]
                         for sc in chosen}
        raw = {sc: {sy: [] for sy in systems} for sc, systems in systems_by_sc.items()}
        result["raw"] = raw
        wait_for_builds(args.build_wait)
        log("warm-up (1 s per system and scenario, not recorded)")
        for sc, systems in systems_by_sc.items():
            for sy in systems:
                run_wrk(tools["wrk"], lua, url(sy, sc), SCENARIOS[sc]["conns"], 1, SCENARIOS[sc]["close"], None)
        total = args.rounds * sum(len(v) for v in systems_by_sc.values())
        log(f"{total} measurements of {args.duration} s ≈ {total * (args.duration + 0.5) / 60:.1f} min")
        for rnd in range(args.rounds):
            for sc in chosen:
                cfg = SCENARIOS[sc]
                order = systems_by_sc[sc]
                k = rnd % len(order) if order else 0
                for sy in order[k:] + order[:k]:
                    waited = wait_for_builds(args.build_wait)
                    r = run_wrk(tools["wrk"], lua, url(sy, sc), cfg["conns"], args.duration, cfg["close"],
                                pids[sy])
                    r["round"], r["waited_for_build_s"] = rnd + 1, round(waited, 1)
                    raw[sc][sy].append(r)
                    v = value_of(sc, r)
                    log(f"round {rnd + 1}/{args.rounds} {sc:15} {sy:10} {run.fmt(v, 1):>10} {cfg['unit']:6}"
                        f" p99 {run.fmt_ms(r['p99_ms'])} ms cpu {run.fmt(cpu_of(sc, r), 1)}"
                        + (" (rustc running)" if r["rustc_during"] else "")
                        + (f" ERR {r.get('error') or ''} sock={r['socket_errors']} non2xx={r['non_2xx']}"
                           if r.get("error") or r["socket_errors"] or r["non_2xx"] else ""))
        result["summary"] = summarize(raw)
        result["switchyard_version"] = dict(SWITCHYARD_VERSION)
        result["rss_after_mib"] = {sy: round(run.rss_kib(pid) / 1024, 1) for sy, pid in pids.items()}
        facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        run.cleanup()
        result["configs"] = run.CONFIGS
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        out.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    text = f"## switchyard TCP benchmark — {args.rounds} round(s) × {args.duration} s per measurement\n\n"
    text += markdown(result)
    out.write_text(text)
    print(text)
    print(f"table: {out}\nraw per-round numbers: {out_json}")


if __name__ == "__main__":
    main()
