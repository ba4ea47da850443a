#!/usr/bin/env bash
# Installs, with apt, the system tools that are missing. Usage:
#   scripts/deps.sh run     # what `secureops run` needs: nft, ip, unshare, setpriv, setsid
#   scripts/deps.sh test    # the above plus the real clients the tests drive (and cargo-fuzz)
#   scripts/deps.sh tools COMMAND=PACKAGE...   # just these (benchmark scripts)
#   scripts/deps.sh package # what scripts/deb.sh needs: cargo-deb
# `test` also installs what scripts/package-test.sh needs (cargo-deb,
# systemd-analyze).
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
if [ "${1:-run}" = tools ]; then
  shift
  for pair in "$@"; do want "${pair%%=*}" "${pair#*=}"; done
else
  want nft nftables
  want ip iproute2
  want unshare util-linux
  want setpriv util-linux
  want setsid util-linux
fi
if [ "${1:-run}" = test ]; then
  want curl curl
  want openssl openssl
  want mount mount
  want dig dnsutils
  want ss iproute2
  want python3 python3
  # The system's own python3, usable by the throwaway accounts of the
  # confinement tests (a python3 under root's home is not).
  want /usr/bin/python3 python3
  want useradd passwd
  want ipcmk util-linux
  want node nodejs
  # `secureops completions` and `secureops man` are checked in real shells
  # and groff.
  want zsh zsh
  want fish fish
  want groff groff-base
  # scripts/package-test.sh: `systemd-analyze verify` (systemd is not started).
  want systemd-analyze systemd
  want dpkg-deb dpkg
  # `promtool check metrics` on the /metrics scrape (Debian's prometheus,
  # about 45 s to install; its service is not started in a container).
  want promtool prometheus
fi
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# cargo-deb for scripts/deb.sh (about 2.5 min of CPU to build, once).
case "${1:-run}" in
test | package)
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing: cargo-deb" >&2
    # In a throwaway target folder, not the workspace's.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked --quiet
  fi
  ;;
esac

# The fuzz targets' runner (scripts/fuzz.sh; CI runs each target briefly).
if [ "${1:-run}" = test ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
