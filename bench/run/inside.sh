#!/bin/sh
# The cases of bench/run/run.sh, measured in the environment this script
# runs in: on the host (direct) or as the command of `secureops run`.
# Prints one "KEY VALUE" pair per line; exits non-zero when a check fails.
#
# Usage: inside.sh PYTHON HOST CA REQS SYSCALLS SPAWNS [ADDR]
#   CA: the upstream's certificate (for https://HOST/big).
#   ADDR given: connect to it (direct); else resolve HOST (inside a run,
#   the guard's DNS sinkhole answers it from [dns] hosts).
set -eu
py=$1 host=$2 ca=$3 reqs=$4 syscalls=$5 spawns=$6 addr=${7:-}
here=$(dirname "$0")
# No proxy variables: every connection goes through the run's transparent
# listener, as a tool that ignores them would.
unset HTTPS_PROXY HTTP_PROXY ALL_PROXY https_proxy http_proxy all_proxy NO_PROXY no_proxy

now_ns() { date +%s%N; }

# (a) bulk: one download of /big to /dev/null; curl's average speed.
# Plain HTTP goes through the guard's HTTP relay (decided on the Host
# header), HTTPS through a tunnel (decided on the SNI, then relayed as is).
bulk() { # NAME SCHEME PORT
  if [ -n "$addr" ]; then
    set -- "$1" "$2" --resolve "$host:$3:$addr"
  else
    set -- "$1" "$2"
  fi
  name=$1 scheme=$2
  shift 2
  out=$(curl -sS --max-time 60 --cacert "$ca" "$@" -o /dev/null \
    -w '%{http_code} %{size_download} %{speed_download}' "$scheme://$host/big")
  set -- $out
  if [ "$1" != 200 ]; then
    echo "$name: HTTP status $1" >&2
    exit 1
  fi
  echo "${name}_bytes $2"
  echo "${name}_mb_per_s $(awk -v s="$3" 'BEGIN { printf "%.1f", s / 1e6 }')"
}
bulk bulk_http http 80
bulk bulk_tls https 443

# (b) connection setup: sequential short requests, a fresh connection each.
"$py" "$here/reqs.py" "$host" "$reqs" $addr | tr ' ' '\n' | paste -d ' ' - -

# (e) syscalls: dd with 1-byte blocks, one read and one write per block.
t0=$(now_ns)
dd if=/dev/zero of=/dev/null bs=1 count="$syscalls" 2>/dev/null
t1=$(now_ns)
echo "syscall_ns $(awk -v d=$((t1 - t0)) -v n="$syscalls" 'BEGIN { printf "%.1f", d / (2 * n) }')"

# (f) process start: fork + exec of /bin/true, one after the other.
t0=$(now_ns)
i=0
while [ "$i" -lt "$spawns" ]; do
  /bin/true
  i=$((i + 1))
done
t1=$(now_ns)
echo "spawn_per_s $(awk -v d=$((t1 - t0)) -v n="$spawns" 'BEGIN { printf "%.1f", n / (d / 1e9) }')"
