#!/usr/bin/env bash
# Packaging checks (run by scripts/test.sh after the Rust tests):
#  1. the Debian package (scripts/deb.sh --ci): file list, modes, conffiles,
#     maintainer scripts; the man page and completions inside it are what
#     the packaged binary prints; the default config validates, keeps its
#     state in /var/lib/secureops, and its commented examples validate too;
#     `systemd-analyze verify` passes on the unit, alone and with the
#     [context] drop-in, with no warning (the unit is never started).
#  2. `cargo install --locked --path crates/secureops` gives a binary that runs.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. Debian package -------------------------------------------------------
deb=$(scripts/deb.sh --ci | tail -n 1)
[ -f "$deb" ] || fail "no package built ($deb)"
echo "package-test: checking $deb"

dpkg-deb -c "$deb" | awk '{print $1, $6}' >"$work/list"
want=(
  "-rwxr-xr-x ./usr/bin/secureops"
  "-rw-r--r-- ./etc/secureops/config.toml"
  "-rw-r--r-- ./usr/lib/systemd/system/secureops.service"
  "-rw-r--r-- ./usr/share/man/man1/secureops.1.gz"
  "-rw-r--r-- ./usr/share/bash-completion/completions/secureops"
  "-rw-r--r-- ./usr/share/zsh/vendor-completions/_secureops"
  "-rw-r--r-- ./usr/share/fish/vendor_completions.d/secureops.fish"
  "-rw-r--r-- ./usr/share/doc/secureops/copyright"
  "-rw-r--r-- ./usr/share/doc/secureops/README.md"
  "-rw-r--r-- ./usr/share/doc/secureops/ocsf.md"
  "-rw-r--r-- ./usr/share/doc/secureops/examples/context.conf"
)
for line in "${want[@]}"; do
  grep -qxF -- "$line" "$work/list" || fail "package lacks: $line"
done
# Nothing else but the folders holding them.
files=$(grep -v '^d' "$work/list" | wc -l)
[ "$files" = "${#want[@]}" ] || fail "unexpected files in the package: $(grep -v '^d' "$work/list")"

dpkg-deb -e "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/secureops/config.toml ] ||
  fail "conffiles: $(cat "$work/control/conffiles")"
for script in postinst prerm postrm; do
  [ -x "$work/control/$script" ] || fail "no $script"
  sh -n "$work/control/$script" || fail "$script does not parse"
done
grep -q 'deb-systemd-invoke stop secureops.service' "$work/control/prerm" || fail "prerm does not stop the service"
grep -q 'try-restart secureops.service' "$work/control/postinst" || fail "postinst does not restart on upgrade"

root="$work/root"
dpkg-deb -x "$deb" "$root"
bin="$root/usr/bin/secureops"
"$bin" tier >/dev/null || fail "packaged binary does not run"
cmp -s <(zcat "$root/usr/share/man/man1/secureops.1.gz") <("$bin" man) || fail "man page is not the binary's"
cmp -s "$root/usr/share/bash-completion/completions/secureops" <("$bin" completions bash) || fail "stale bash completion"
cmp -s "$root/usr/share/zsh/vendor-completions/_secureops" <("$bin" completions zsh) || fail "stale zsh completion"
cmp -s "$root/usr/share/fish/vendor_completions.d/secureops.fish" <("$bin" completions fish) || fail "stale fish completion"
warnings=$(zcat "$root/usr/share/man/man1/secureops.1.gz" | groff -man -Tutf8 -ww -z 2>&1) || fail "groff failed"
[ -z "$warnings" ] || fail "groff warnings: $warnings"

config="$root/etc/secureops/config.toml"
out=$("$bin" config validate "$config") || fail "default config: $out"
[ "$out" = "ok $config (0 rules)" ] || fail "default config: $out"
# The service cannot write /etc/secureops: every path must be absolute and
# the log and key in the state folder.
python3 - "$config" <<'EOF' || fail "default config paths"
import sys, tomllib
audit = tomllib.load(open(sys.argv[1], "rb"))["audit"]
for key in ("path", "signing_key"):
    assert audit[key].startswith("/var/lib/secureops/"), (key, audit[key])
EOF
# The commented examples (`# key = value`, `# [section]`) are valid too.
sed -E 's/^# (\[[a-z]+\]$|[a-z_]+ = )/\1/' "$config" >"$work/examples.toml"
[ "$(grep -c '^# [a-z_]* = ' "$work/examples.toml")" = 0 ] || fail "an example line was not uncommented"
out=$("$bin" config validate "$work/examples.toml" 2>&1) || fail "commented examples: $out"
! grep -q '^warning' <<<"$out" || fail "commented examples: $out"

# systemd-analyze verify, offline, in the unpacked tree (so it checks that
# ExecStart's binary exists there) with the host's targets beside the unit.
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
cp -n "$units"/*.target "$root/usr/lib/systemd/system/"
verify() {
  local out
  out=$(systemd-analyze verify --man=no --root="$root" secureops.service 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
}
verify
grep -qx 'ExecStart=/usr/bin/secureops proxy -c /etc/secureops/config.toml' "$root/usr/lib/systemd/system/secureops.service" ||
  fail "ExecStart"
security() { systemd-analyze security --offline=yes --root="$root" secureops.service 2>&1; }
# expect MARK SETTING: the security report marks SETTING ✓ (restricted) or ✗.
expect() {
  grep -q "^$1 $2 " <<<"$report" || fail "systemd-analyze security: not $1 $2"
}
report=$(security)
exposure=$(sed -n 's/.*exposure level for secureops.service: \([0-9.]*\).*/\1/p' <<<"$report")
echo "package-test: systemd-analyze security exposure $exposure"
python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.5 else 1)" || fail "exposure $exposure > 2.5"
# No capability, no fanotify, no netlink until the [context] drop-in...
expect ✓ AmbientCapabilities=
expect ✓ SystemCallFilter=~@privileged
expect ✓ RestrictAddressFamilies=~AF_NETLINK
mkdir -p "$root/etc/systemd/system/secureops.service.d"
cp "$root/usr/share/doc/secureops/examples/context.conf" "$root/etc/systemd/system/secureops.service.d/"
verify
# ...which grants exactly those.
report=$(security)
expect ✗ AmbientCapabilities=
expect ✗ SystemCallFilter=~@privileged
expect ✗ RestrictAddressFamilies=~AF_NETLINK
grep -q 'fanotify_init is allowed' <<<"$report" || fail "the drop-in does not allow fanotify_init"
# And the check can fail: a misspelt option is caught.
echo 'ProtectSytem=strict' >>"$root/etc/systemd/system/secureops.service.d/context.conf"
out=$(systemd-analyze verify --man=no --root="$root" secureops.service 2>&1 || true)
[ -n "$out" ] || fail "systemd-analyze verify did not notice a misspelt option"
echo "package-test: deb ok"

# --- 2. cargo install ----------------------------------------------------------
# Same target folder as the tests: the debug build is reused, not redone.
cargo install --locked --quiet --path crates/secureops --root "$work/install" --debug
tier=$("$work/install/bin/secureops" tier)
case "${tier%%$'\n'*}" in
kernel-enforced* | proxy-only*) ;;
*) fail "installed binary: tier says $tier" ;;
esac
echo "package-test: cargo install ok"
