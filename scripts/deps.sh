#!/usr/bin/env bash
# Installs, with apt, the system tools that are missing. Usage:
#   scripts/deps.sh run     # what `secureops run` needs: nft, ip, unshare, setpriv, setsid
#   scripts/deps.sh test    # the above plus the real clients the tests drive (and cargo-fuzz)
#   scripts/deps.sh tools COMMAND=PACKAGE...   # just these (benchmark scripts)
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
fi
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The fuzz targets' runner (scripts/fuzz.sh; CI runs each target briefly).
if [ "${1:-run}" = test ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
