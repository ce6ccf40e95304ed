#!/usr/bin/env bash
# Docker test rig: one private dockerd for the tests that need a real Docker engine.
#
#   tests/docker-rig.sh start [--owner-pid PID]   install (apt) if needed, start, print the socket
#   tests/docker-rig.sh image                     build the local test image(s) if missing
#   tests/docker-rig.sh swarm                     make the daemon a single-node Swarm manager
#   tests/docker-rig.sh router-image              build the router's image from ./Dockerfile
#   tests/docker-rig.sh stop                      stop the daemon, unmount leftovers, remove state
#   tests/docker-rig.sh halt                      stop only the daemon, keep state; `start` resumes it
#   tests/docker-rig.sh status                    say whether the rig runs (exit 1 if not)
#
# State lives in $RIG_DIR (default /tmp/switchyard-docker-rig): data/, exec/, docker.sock,
# docker.pid, dockerd.log, tls/ (a CA, the daemon's and a client's certificate: the daemon also
# listens on tcp://127.0.0.1:$RIG_TLS_PORT with --tlsverify, port in tls/port). The daemon never uses /var/run/docker.sock or /var/lib/docker, and this
# script only ever signals processes whose command line names $RIG_DIR, so it cannot touch a
# daemon someone else started.
#
# Invariants:
# - at most one daemon per state dir: `start` is idempotent (prints the socket of the running one);
#   every command that changes the rig holds the lock ${RIG_DIR}.lock (outside the state dir, which
#   `stop` removes);
# - `start --owner-pid PID` registers PID as an owner; a detached watchdog stops the daemon once no
#   owner is alive, so a crashed or interrupted test run never leaves a daemon behind. A daemon
#   started without an owner (by hand) is never stopped by a watchdog;
# - Docker Hub is unreachable: images are built locally with `docker import`, nothing is pulled.
# Needs root (dockerd does). Every wait is bounded.
set -euo pipefail

RIG_DIR=${RIG_DIR:-/tmp/switchyard-docker-rig}
RIG_DIR=${RIG_DIR%/}
export RIG_DIR
SOCK=$RIG_DIR/docker.sock
PIDFILE=$RIG_DIR/docker.pid
OWNERS=$RIG_DIR/owners
WATCHDOG_PID=$RIG_DIR/watchdog.pid
LOG=$RIG_DIR/dockerd.log
LOCK=$RIG_DIR.lock
SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
# dockerd finds containerd, runc and docker-init on PATH; test runners may not have sbin on it.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

BUSYBOX_IMAGE=switchyard-test/busybox:latest
SOCAT_IMAGE=switchyard-test/socat:latest
REDIS_IMAGE=switchyard-test/redis:latest
ROUTER_IMAGE=switchyard-test/switchyard:latest
TLS_DIR=$RIG_DIR/tls
# Derived from the state dir so two rigs (a CI clone beside a work tree) do not collide.
RIG_TLS_PORT=${RIG_TLS_PORT:-$((23760 + $(printf '%s' "$RIG_DIR" | cksum | cut -d' ' -f1) % 200))}
START_TIMEOUT_S=${RIG_START_TIMEOUT_S:-30}
STOP_TIMEOUT_S=${RIG_STOP_TIMEOUT_S:-20}

log() { echo "docker-rig: $*" >&2; }
die() { log "$*"; exit 1; }

# Debian's client (20.10, same as the daemon) when present; a newer client elsewhere on PATH works
# too through API version negotiation.
docker_bin() {
    if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker; fi
}
dk() { "$(docker_bin)" -H "unix://$SOCK" "$@"; }

take_lock() {
    mkdir -p "$(dirname "$RIG_DIR")"
    exec 9>"$LOCK"
    flock -w 120 9 || die "another rig command holds $LOCK for more than 120 s"
}

# The pid of this rig's dockerd, if it is alive and really ours (pid files go stale, pids get reused).
daemon_pid() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--pidfile $PIDFILE" || return 1
    echo "$pid"
}

ping() {
    curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

wait_ping() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        ping && return 0
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2 || true; die "dockerd exited during start"; }
        sleep 0.1
    done
    tail -n 30 "$LOG" >&2 || true
    die "dockerd did not answer /_ping on $SOCK within ${START_TIMEOUT_S}s"
}

install_missing() {
    local pkgs=()
    command -v dockerd >/dev/null || pkgs+=(docker.io)
    [[ -x /usr/bin/docker ]] || command -v docker >/dev/null || pkgs+=(docker.io)
    static_busybox >/dev/null || pkgs+=(busybox-static)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v docker-compose >/dev/null || pkgs+=(docker-compose)
    command -v socat >/dev/null || pkgs+=(socat)
    command -v openssl >/dev/null || pkgs+=(openssl)
    command -v redis-server >/dev/null || pkgs+=(redis-server)
    ((${#pkgs[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    log "installing ${pkgs[*]} with apt-get"
    # docker.io's postinst would start a system dockerd on /var/run/docker.sock; a second daemon
    # breaks Swarm tests (one Swarm per machine), so service starts are refused during the install.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                $(printf '%s\n' "${pkgs[@]}" | sort -u) >/dev/null
    } || rc=$?
    ((created)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${pkgs[*]} failed ($rc)"
}

# A statically linked busybox (the image has no libc): busybox-static's, or any static one on PATH.
static_busybox() {
    local b
    for b in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
        [[ -n $b && -x $b ]] || continue
        if elf_static "$b"; then echo "$b"; return 0; fi
    done
    return 1
}

# True for a 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader).
elf_static() {
    local f=$1 phoff phentsize phnum i type
    [[ $(od -An -c -N4 "$f" 2>/dev/null | tr -d ' ') == '177ELF' ]] || return 1
    phoff=$(od -An -t u8 -j 32 -N 8 "$f" | tr -d ' ')
    phentsize=$(od -An -t u2 -j 54 -N 2 "$f" | tr -d ' ')
    phnum=$(od -An -t u2 -j 56 -N 2 "$f" | tr -d ' ')
    for ((i = 0; i < phnum && i < 64; i++)); do
        type=$(od -An -t u4 -j $((phoff + i * phentsize)) -N 4 "$f" | tr -d ' ')
        [[ $type == 3 ]] && return 1
    done
    return 0
}

# Processes this rig started that outlived their daemon: engine binaries (dockerd, containerd,
# shims) whose command line names the state dir, and the processes of this rig's containers
# (found by container id in their cgroup: they survive a killed shim). Nothing else.
leftover_pids() {
    local p comm ids=()
    local d
    for d in "$RIG_DIR"/data/containers/*/; do
        [[ -d $d ]] && ids+=(-e "$(basename "$d")")
    done
    for p in /proc/[0-9]*; do
        if ((${#ids[@]})) && grep -qsF "${ids[@]}" "$p/cgroup"; then
            echo "${p#/proc/}"
            continue
        fi
        comm=$(cat "$p/comm" 2>/dev/null) || continue
        case $comm in dockerd | containerd | containerd-shim* | docker-proxy | runc) ;; *) continue ;; esac
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$RIG_DIR/"; then
            echo "${p#/proc/}"
        fi
    done
}

# Mount points under the state dir, deepest first (netns, container rootfs, shm after a crash).
rig_mounts() {
    awk -v pre="$RIG_DIR/" 'index($2, pre) == 1 { print $2 }' /proc/self/mounts |
        awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

unmount_all() {
    local m round
    for round in 1 2 3; do
        [[ -n $(rig_mounts) ]] || return 0
        while read -r m; do
            [[ -n $m ]] || continue
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
        done < <(rig_mounts)
    done
    [[ -z $(rig_mounts) ]] || die "mounts left under $RIG_DIR: $(rig_mounts | tr '\n' ' ')"
}

wait_gone() {
    local pid=$1 secs=$2 deadline
    deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null
}

# Stop with the lock held: containers first (their main process may ignore SIGTERM), then the
# daemon, then whatever it left behind.
do_stop() {
    local pid p
    remove_containers
    stop_daemon
    if [[ -s $WATCHDOG_PID ]]; then
        p=$(<"$WATCHDOG_PID")
        [[ $p != "$$" ]] && kill -TERM "$p" 2>/dev/null || true
    fi
    if [[ -d $RIG_DIR ]]; then
        unmount_all
        rm -rf --one-file-system "$RIG_DIR"
    fi
}

remove_containers() {
    local pid
    if pid=$(daemon_pid) && ping; then
        if [[ $(dk info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]]; then
            timeout 30 "$(docker_bin)" -H "unix://$SOCK" swarm leave --force >/dev/null 2>&1 || true
        fi
        local ids
        ids=$(timeout 10 "$(docker_bin)" -H "unix://$SOCK" ps -aq 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            timeout 30 "$(docker_bin)" -H "unix://$SOCK" rm -f $ids >/dev/null 2>&1 || true
        fi
    fi
}

# TERM the daemon (it stops its containers and containerd), then clear what it left behind.
stop_daemon() {
    local pid p
    if pid=$(daemon_pid); then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$STOP_TIMEOUT_S"; then
            log "dockerd $pid still running after ${STOP_TIMEOUT_S}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || true
        fi
    fi
    for p in $(leftover_pids); do kill -KILL "$p" 2>/dev/null || true; done
    for p in $(leftover_pids); do wait_gone "$p" 5 || log "process $p survived SIGKILL"; done
}

# "pid starttime": the start time tells a live owner from a reused pid.
proc_identity() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    echo "$1 $(echo "$stat" | cut -d' ' -f20)"
}

add_owner() {
    local id
    id=$(proc_identity "$1") || die "owner pid $1 is not running"
    echo "$id" >>"$OWNERS"
}

any_owner_alive() {
    local pid start
    [[ -s $OWNERS ]] || return 1
    while read -r pid start; do
        [[ -n $pid ]] || continue
        [[ $(proc_identity "$pid" 2>/dev/null) == "$pid $start" ]] && return 0
    done <"$OWNERS"
    return 1
}

cmd_start() {
    local owner=""
    while (($#)); do
        case $1 in
            --owner-pid) owner=${2:?--owner-pid needs a pid}; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    ((EUID == 0)) || die "must run as root (dockerd needs it)"
    take_lock # also keeps two apt-get runs apart
    install_missing
    local pid
    if pid=$(daemon_pid); then
        wait_ping "$pid"
        # Join the running daemon's owners only when it is owner-managed; one started by hand
        # stays up until someone runs `stop`.
        if [[ -n $owner && -e $OWNERS ]]; then add_owner "$owner"; fi
        echo "$SOCK"
        return 0
    fi
    if [[ -e $RIG_DIR/halted ]]; then
        # Resume after `halt`: same data (containers, images), same owners and watchdog.
        stop_daemon
        [[ -d $RIG_DIR/exec ]] && unmount_all
        rm -f "$RIG_DIR/halted" "$PIDFILE" "$SOCK"
        launch_daemon
        echo "$SOCK"
        return 0
    fi
    # Whatever is here is left from a crash: a stale pid file, socket, mounts or containerd.
    if [[ -e $RIG_DIR ]]; then
        log "cleaning stale state in $RIG_DIR"
        do_stop
    fi
    mkdir -p "$RIG_DIR/data" "$RIG_DIR/exec"
    launch_daemon
    if [[ -n $owner ]]; then
        : >"$OWNERS"
        add_owner "$owner"
        setsid bash "$SELF" _watchdog </dev/null >>"$RIG_DIR/watchdog.log" 2>&1 9>&- &
        echo $! >"$WATCHDOG_PID"
    fi
    echo "$SOCK"
}

# A CA, a server certificate for 127.0.0.1 and a client certificate, made once per state dir by
# the swarm-socat example's script (one way to make them).
make_tls() {
    [[ -s $TLS_DIR/key.pem ]] && return 0
    bash "$REPO/examples/swarm-socat/make-certs.sh" "$TLS_DIR" >/dev/null 2>&1 ||
        die "openssl could not make the rig's certificates in $TLS_DIR"
}

launch_daemon() {
    local pid t0=$EPOCHREALTIME
    make_tls
    echo "$RIG_TLS_PORT" >"$TLS_DIR/port"
    # setsid: an interrupt aimed at the test run must not kill dockerd mid-flight (that leaves
    # mounts); the watchdog stops it cleanly instead.
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd \
        --data-root "$RIG_DIR/data" --exec-root "$RIG_DIR/exec" \
        -H "unix://$SOCK" --pidfile "$PIDFILE" \
        -H "tcp://127.0.0.1:$RIG_TLS_PORT" --tlsverify --tlscacert "$TLS_DIR/ca.pem" \
        --tlscert "$TLS_DIR/server-cert.pem" --tlskey "$TLS_DIR/server-key.pem" \
        --iptables=false --ip6tables=false --storage-driver=vfs --bridge=none \
        --default-address-pool base=10.220.0.0/16,size=24 \
        --init \
        </dev/null >>"$LOG" 2>&1 9>&- &
    pid=$!
    wait_ping "$pid"
    log "dockerd $pid up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
}

# Runs detached; polls the owners once a second while the daemon lives.
cmd_watchdog() {
    while true; do
        sleep 1
        # Stopped (state dir gone) or superseded by a newer watchdog: nothing left to guard.
        [[ -d $RIG_DIR && $(cat "$WATCHDOG_PID" 2>/dev/null) == "$$" ]] || exit 0
        if ! any_owner_alive; then
            take_lock
            # An owner may have joined while we waited for the lock.
            if any_owner_alive; then flock -u 9; continue; fi
            log "no owner alive; stopping"
            do_stop
            exit 0
        fi
    done
}

# The rootfs: static busybox with its applets as relative links, and /bin/serve, which answers
# HTTP on ${ADDR:-127.0.0.1}:${PORT:-80} with a page naming ${NAME:-the hostname} for every path.
build_busybox_image() {
    local bb root applet
    bb=$(static_busybox) || die "no static busybox (install busybox-static)"
    root=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-rootfs.XXXXXX")
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www" "$root/proc" "$root/sys" "$root/dev"
    cp "$bb" "$root/bin/busybox"
    for applet in $("$bb" --list); do
        [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    cat >"$root/bin/serve" <<'EOF'
#!/bin/sh
# The page names the container so tests can tell which server answered. Unknown paths get the
# same page (busybox httpd error page, status 404); `/` and `/index.html` answer 200.
set -e
mkdir -p /www
echo "${NAME:-$(hostname)}" > /www/index.html
echo "E404:/www/index.html" > /etc/httpd.conf
exec httpd -f -c /etc/httpd.conf -p "${ADDR:-127.0.0.1}:${PORT:-80}" -h /www
EOF
    chmod +x "$root/bin/serve"
    tar -C "$root" -c . | dk import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["/bin/serve"]' \
        - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$root"
}

# Debian's redis-server with the libraries it links, as an image (no registry: the swarm-global
# ACME stack's Redis service). /data is its working directory.
build_redis_image() {
    local bin root lib
    bin=$(readlink -f "$(command -v redis-server)") || die "no redis-server (apt-get install redis-server)"
    root=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-redis.XXXXXX")
    mkdir -p "$root/usr/bin" "$root/data" "$root/tmp" "$root/etc"
    cp "$bin" "$root/usr/bin/redis-server"
    for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /^\t\// { print $1 }'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    echo 'root:x:0:0:root:/:/bin/false' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    tar -C "$root" -c . | dk import \
        --change 'ENV PATH=/usr/bin' \
        --change 'WORKDIR /data' \
        --change 'CMD ["redis-server"]' \
        - "$REDIS_IMAGE" >/dev/null
    rm -rf "$root"
}

cmd_image() {
    ping || die "rig not running (run: $0 start)"
    take_lock
    if ! dk image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
        local t0=$EPOCHREALTIME
        build_busybox_image
        log "built $BUSYBOX_IMAGE in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
    fi
    dk image inspect "$SOCAT_IMAGE" >/dev/null 2>&1 ||
        DOCKER_CLI="$(docker_bin) -H unix://$SOCK" bash "$REPO/examples/swarm-socat/socat-image.sh" \
            "$SOCAT_IMAGE" >/dev/null
    dk image inspect "$REDIS_IMAGE" >/dev/null 2>&1 || build_redis_image
    echo "$BUSYBOX_IMAGE"
}

# Single-node Swarm on loopback: manager and data path on 127.0.0.1 (nothing leaves the machine).
cmd_swarm() {
    ping || die "rig not running (run: $0 start)"
    take_lock
    if [[ $(dk info --format '{{.Swarm.LocalNodeState}}') != active ]]; then
        local t0=$EPOCHREALTIME
        timeout 60 "$(docker_bin)" -H "unix://$SOCK" swarm init --advertise-addr 127.0.0.1 \
            --listen-addr 127.0.0.1:2377 --data-path-addr 127.0.0.1 >/dev/null ||
            die "docker swarm init failed (is another Swarm manager running on this machine?)"
        log "swarm initialised in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
    fi
    dk info --format '{{.Swarm.NodeID}}'
}

# The router's image from ./Dockerfile, as the README builds it, but from a debug build (faster to
# compile here) in target/image; rebuilt when the binary changed.
cmd_router_image() {
    ping || die "rig not running (run: $0 start)"
    local repo=$REPO ctx bin sum
    (
        cd "$repo"
        RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$repo/target/image" \
            cargo build --quiet --target x86_64-unknown-linux-gnu --bin switchyard
    ) || die "static build of the router failed"
    bin=$repo/target/image/x86_64-unknown-linux-gnu/debug/switchyard
    elf_static "$bin" || die "$bin is not statically linked"
    take_lock
    sum=$(sha256sum "$bin" | cut -c1-16)
    if [[ $(dk image inspect --format '{{index .Config.Labels "switchyard.binary"}}' "$ROUTER_IMAGE" 2>/dev/null) == "$sum" ]]; then
        echo "$ROUTER_IMAGE"
        return 0
    fi
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-image.XXXXXX")
    mkdir -p "$ctx/dist"
    cp "$repo/Dockerfile" "$repo/.dockerignore" "$ctx/"
    cp -r "$repo/scripts" "$repo/stdlib" "$ctx/"
    # Without debug info the image is a tenth of the size (vfs copies it for every container).
    strip -o "$ctx/dist/switchyard" "$bin" 2>/dev/null || cp "$bin" "$ctx/dist/switchyard"
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ctx/dist/"
    else
        : >"$ctx/dist/ca-certificates.crt"
    fi
    DOCKER_BUILDKIT=0 timeout 300 "$(docker_bin)" -H "unix://$SOCK" build -q --label "switchyard.binary=$sum" \
        -t "$ROUTER_IMAGE" "$ctx" >/dev/null || { rm -rf "$ctx"; die "docker build of the router image failed"; }
    rm -rf "$ctx"
    echo "$ROUTER_IMAGE"
}

cmd_stop() {
    take_lock
    do_stop
}

# For tests of a daemon going away: the daemon stops (no containers removed; they stop with it),
# the state dir, owners and watchdog stay, and the next `start` brings the same daemon state back.
cmd_halt() {
    take_lock
    daemon_pid >/dev/null || die "rig not running"
    touch "$RIG_DIR/halted"
    stop_daemon
    [[ -d $RIG_DIR/exec ]] && unmount_all
    rm -f "$SOCK"
}

cmd_status() {
    local pid
    if pid=$(daemon_pid) && ping; then
        echo "running: dockerd $pid, socket $SOCK"
        [[ -s $OWNERS ]] && echo "owners: $(cut -d' ' -f1 "$OWNERS" | tr '\n' ' ')"
        return 0
    fi
    echo "not running ($RIG_DIR)"
    return 1
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    image) cmd_image ;;
    stop) cmd_stop ;;
    halt) cmd_halt ;;
    status) cmd_status ;;
    swarm) cmd_swarm ;;
    router-image) cmd_router_image ;;
    _watchdog) cmd_watchdog ;;
    *) die "usage: $0 start [--owner-pid PID] | image | swarm | router-image | stop | halt | status" ;;
esac
