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
cargo test --workspace --locked
scripts/package-test.sh
