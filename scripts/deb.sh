#!/usr/bin/env bash
# Builds the Debian package: the binary, then the man page and shell
# completions that binary generates (never stale copies), then `cargo deb`.
# Needs cargo-deb (`cargo install cargo-deb --locked`; scripts/deps.sh
# package installs it).
#
#   scripts/deb.sh              # release build → $TARGET/debian/secureops_*.deb
#                               # (+ secureops-dbgsym_*.ddeb: debug symbols)
#   scripts/deb.sh --ci         # package the debug binary `cargo test` just
#                               # built instead of a release build (CI: saves
#                               # a full optimised build; same code, bigger)
#
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

ci=no
[ "${1:-}" = --ci ] && ci=yes
target=${CARGO_TARGET_DIR:-$PWD/target}

if [ "$ci" = yes ]; then
  cargo build --locked -p secureops >&2
  # cargo-deb refuses the dev profile; give it the dev binary under a
  # profile name of its own, packaged without building.
  profile=deb-ci
  mkdir -p "$target/$profile"
  ln -f "$target/debug/secureops" "$target/$profile/secureops"
  deb_args=(--no-build --profile "$profile" --fast)
else
  profile=release
  cargo build --locked --release -p secureops >&2
  # The release profile keeps line tables: ship them in a separate
  # -dbgsym.ddeb (needs objcopy, from binutils), else strip them.
  if command -v objcopy >/dev/null; then
    deb_args=(--no-build --dbgsym --compress-debug-symbols=zlib)
  else
    deb_args=(--no-build --strip)
  fi
fi
bin="$target/$profile/secureops"
assets="$target/$profile/deb-assets"
rm -rf "$assets"
mkdir -p "$assets"
"$bin" man | gzip -9n >"$assets/secureops.1.gz"
"$bin" completions bash >"$assets/secureops.bash"
"$bin" completions zsh >"$assets/_secureops"
"$bin" completions fish >"$assets/secureops.fish"

out=$(cargo deb -p secureops --locked "${deb_args[@]}" 2>&1) || {
  echo "$out" >&2
  exit 1
}
echo "$out" | grep -v '\.ddeb$' | tail -n 1
