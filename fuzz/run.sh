#!/usr/bin/env bash
# Runs the cargo-fuzz targets: `bash fuzz/run.sh TARGET SECONDS` or `bash fuzz/run.sh all SECONDS`
# (each target in turn, SECONDS each). Targets: see TARGETS below.
#
# Installs cargo-fuzz when missing. Uses the nightly toolchain when rustup has one; otherwise the
# stable one with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags such as -Zsanitizer).
# Each run starts from the committed seeds (fuzz/seeds/TARGET) copied into the working corpus
# fuzz/corpus/TARGET (git-ignored, kept between runs). A crash leaves its input in
# fuzz/artifacts/TARGET/ and makes this script exit non-zero.
#
# Environment: FUZZ_TOOLCHAIN=stable (take the stable path even when nightly is installed),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_SANITIZER (default: cargo-fuzz's, address);
# CARGO_BUILD_JOBS limits the build as usual.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(canonical_path host rule recording tls_config traefik_config proxy_protocol client_hello)

usage() {
    echo "usage: bash fuzz/run.sh TARGET|all SECONDS   (targets: ${TARGETS[*]})" >&2
    exit 2
}
[ $# -eq 2 ] || usage
target=$1
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] || usage
if [ "$target" = all ]; then
    selected=("${TARGETS[@]}")
else
    case " ${TARGETS[*]} " in
    *" $target "*) selected=("$target") ;;
    *) usage ;;
    esac
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
    echo "== toolchain: nightly ($(rustup run nightly rustc --version))"
else
    export RUSTC_BOOTSTRAP=1
    echo "== toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi

build_args=()
if [ -n "${FUZZ_SANITIZER:-}" ]; then
    build_args+=(--sanitizer "$FUZZ_SANITIZER")
fi

failed=()
for t in "${selected[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    cp -n "seeds/$t/"* "corpus/$t/" 2>/dev/null || true
    if ! cargo "${toolchain[@]}" fuzz run "${build_args[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}"; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "== fuzz: failed: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "== fuzz: ok (${selected[*]})"
