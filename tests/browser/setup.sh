#!/usr/bin/env bash
# Browser test set-up: Debian's Chromium and the npm package playwright-core (which drives it;
# it never downloads a browser of its own). Idempotent and quick when done; holds a lock so
# parallel tests install once. Needs root for apt (as the Docker rig does).
#
#   tests/browser/setup.sh      prints the chromium path on success
set -euo pipefail
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec 9>"/tmp/switchyard-browser-setup.lock"
flock -w 900 9 || { echo "browser-setup: lock wait timed out" >&2; exit 1; }

# Only what is missing: a machine's Node.js may come with its own npm (which conflicts with
# Debian's npm package).
want=()
[[ -x /usr/bin/chromium ]] || want+=(chromium fonts-dejavu-core)
command -v node >/dev/null || want+=(nodejs)
if (( ${#want[@]} )); then
    echo "browser-setup: installing ${want[*]} (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get update -qq >&2
    timeout 900 apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
fi
if ! command -v npm >/dev/null; then
    echo "browser-setup: installing npm (apt)" >&2
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends npm >&2
fi
if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
    echo "browser-setup: npm ci (playwright-core)" >&2
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 600 npm ci --no-audit --no-fund --loglevel=error >&2)
fi
echo /usr/bin/chromium
