#!/usr/bin/env bash
# Runs a fuzz target (fuzz/fuzz_targets/TARGET.rs) with libFuzzer on the
# stable toolchain: `cargo fuzz run -s none` (no sanitizer: the address
# sanitizer needs nightly; the code under test is safe Rust) with debug
# assertions, so integer overflow panics too.
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER-ARGS...]
#   scripts/fuzz.sh all SECONDS        # every target in turn (CI: a few seconds each)
#
# Starts from the committed seeds, fuzz/corpus/TARGET (never written to);
# what a run finds goes to a working corpus beside the build
# ($CARGO_TARGET_DIR/fuzz/corpus/TARGET, default target/fuzz/...), so later
# runs continue from it. A crash, a hang (-timeout), or an allocation over
# the limits (-rss_limit_mb, -malloc_limit_mb) stops the run with a
# non-zero exit and leaves the input in fuzz/artifacts/TARGET/; reproduce
# it with `cargo fuzz run -s none -a TARGET FILE` (from fuzz/), fix it, add a
# unit test with the input beside the code and the input to fuzz/corpus/TARGET.
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET|all SECONDS [LIBFUZZER-ARGS...]" >&2
  exit 2
fi
target=$1
seconds=$2
shift 2

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
build_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
build=(-s none -a --target-dir "$build_dir")
# FUZZ_DEV=1: an unoptimised build (CI's short runs: quicker to compile).
[ "${FUZZ_DEV:-0}" = 1 ] && build+=(--dev)
fuzz=(cargo fuzz run "${build[@]}")

# Longest input per target: room for its caps to be hit (32 KiB heads,
# 16 KiB ClientHellos, 4 KiB DNS queries), no more (long inputs are slow).
max_len() {
  case $1 in
    http_head) echo 36000 ;;
    tls_sni) echo 20000 ;;
    dns_query) echo 4200 ;;
    audit_verify) echo 16384 ;;
    config) echo 8192 ;;
    *) echo 1024 ;;
  esac
}

dict() {
  case $1 in
    http_head) echo fuzz/dict/http.dict ;;
    config) echo fuzz/dict/config.dict ;;
    host_match) echo fuzz/dict/host.dict ;;
  esac
}

run_one() {
  local t=$1 work="$build_dir/corpus/$1" args
  shift
  mkdir -p "$work" "fuzz/corpus/$t"
  args=(
    -max_total_time="$seconds"
    -max_len="$(max_len "$t")"
    -timeout=10
    -rss_limit_mb=2048
    -malloc_limit_mb=256
    -print_final_stats=1
  )
  local d
  d=$(dict "$t")
  [ -n "$d" ] && args+=(-dict="$PWD/$d")
  echo "== fuzz $t for ${seconds}s" >&2
  # Paths are taken from fuzz/, where cargo fuzz runs.
  (cd fuzz && "${fuzz[@]}" "$t" "$work" "$PWD/corpus/$t" -- "${args[@]}" "$@")
}

cleanup() { rm -f /dev/shm/secureops-fuzz-audit-* 2>/dev/null || true; }
trap cleanup EXIT

if [ "$target" = all ]; then
  # One build for all targets, then each in turn.
  (cd fuzz && cargo fuzz build "${build[@]}")
  for f in fuzz/fuzz_targets/*.rs; do
    run_one "$(basename "$f" .rs)" "$@"
  done
else
  run_one "$target" "$@"
fi
