#!/usr/bin/env bash
# Builds a socat image without any registry: this machine's socat and the shared libraries it
# links (as ldd lists them), imported as a root filesystem.
#
#   examples/swarm-socat/socat-image.sh [IMAGE]        default switchyard/socat:latest
#
# Uses the docker CLI as configured (DOCKER_HOST). Needs socat installed here (apt install socat).
set -euo pipefail
image=${1:-switchyard/socat:latest}
docker_cli=${DOCKER_CLI:-docker}
bin=$(command -v socat) || { echo "socat-image: no socat on this machine" >&2; exit 1; }
root=$(mktemp -d "${TMPDIR:-/tmp}/socat-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
cp "$bin" "$root/bin/socat"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo 'root:x:0:0:root:/:/bin/socat' >"$root/etc/passwd"
tar -C "$root" -c . | $docker_cli import --change 'ENTRYPOINT ["/bin/socat"]' - "$image" >/dev/null
echo "$image"
