#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the real clients the
# tests drive (curl, openssl, dig, node) and the tools `secureops run` needs
# (nft, ip, unshare, setpriv) when missing, then checks format and lints and
# runs every test of the workspace, then the packaging checks (Debian
# package, cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every fuzz target for a few seconds from its committed seeds
# (scripts/fuzz.sh; a debug build, quicker to compile than the campaigns'
# optimised one). SECUREOPS_FUZZ_SECONDS sets the time per target; 0 skips.
fuzz_seconds=${SECUREOPS_FUZZ_SECONDS:-5}
if [ "$fuzz_seconds" != 0 ]; then
  FUZZ_DEV=1 scripts/fuzz.sh all "$fuzz_seconds"
fi

cargo test --workspace --locked
scripts/package-test.sh
