#!/usr/bin/env bash
# Test tools for TLS, HTTP/2, gRPC, ACME and TCP routing: Debian's nghttp2-client (h2load),
# openssl, curl, pebble (with pebble-challtestsrv), redis-server and haproxy (a PROXY protocol
# backend for tests/it/tcp_udp.rs), and a
# Python virtualenv with PyPI's h2 and grpcio (tests/tools/requirements.txt). Idempotent and
# quick when done; holds a lock so parallel tests install once. Needs root for apt (as the
# Docker rig does).
#
#   tests/tools/setup.sh      prints the virtualenv's python path on success
set -euo pipefail
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
ROOT=$(readlink -f "$HERE/../..")
VENV="${SWITCHYARD_TEST_VENV:-$ROOT/target/test-venv}"
exec 9>"/tmp/switchyard-tools-setup.lock"
flock -w 900 9 || { echo "tools-setup: lock wait timed out" >&2; exit 1; }

want=()
command -v h2load >/dev/null || want+=(nghttp2-client)
command -v openssl >/dev/null || want+=(openssl)
command -v curl >/dev/null || want+=(curl)
[[ -x /usr/bin/python3 ]] || want+=(python3)
command -v pebble >/dev/null || want+=(pebble)
command -v redis-server >/dev/null || want+=(redis-server)
# /usr/sbin may be missing from a non-root PATH.
[[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null || want+=(haproxy)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
if (( ${#want[@]} )); then
    echo "tools-setup: installing ${want[*]} (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get update -qq >&2
    timeout 900 apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
fi
stamp="$VENV/.requirements"
if ! cmp -s "$HERE/requirements.txt" "$stamp" 2>/dev/null; then
    echo "tools-setup: python venv at $VENV (pip: $(tr '\n' ' ' < "$HERE/requirements.txt"))" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV" >&2
    timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" >&2
    cp "$HERE/requirements.txt" "$stamp"
fi
echo "$VENV/bin/python"
