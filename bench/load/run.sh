#!/usr/bin/env bash
# Load benchmark of the secureops proxy, end to end (bench/load/README.md):
#
#   1. installs tinyproxy and squid from Debian's packages when missing;
#   2. builds the release `secureops` and `secureops-bench` binaries;
#   3. starts tinyproxy and squid on free loopback ports with the configs in
#      bench/load/ (the same allowlist as the secureops config that the
#      benchmark generates: CONNECT and GET to the loopback upstreams
#      allowed, `denied.bench` refused);
#   4. runs `secureops-bench`, which starts its own upstreams and the
#      secureops proxy and measures every case for direct, secureops,
#      tinyproxy and squid, interleaved case by case;
#   5. stops the peers and leaves the results in $OUT.
#
# Usage: bench/load/run.sh [secureops-bench options...]
#        DURATION=1 bench/load/run.sh --cases tunnel,denied
#        PEERS="" bench/load/run.sh          (direct and secureops only)
#
# Environment: DURATION (seconds per measurement, default 3), PEERS
# (default "tinyproxy squid"), OUT (results folder, default
# target/bench-load), BUILD=0 (use the binaries already built), SECUREOPS
# (the binary under test, default target/release/secureops), NULL_AUDIT=0
# (skip the null-audit build and baseline of the audit case), DNSMASQ=1
# (afterwards, bench/dns/run.sh: the sinkhole next to dnsmasq, measured
# with dnsperf; about 30 s more).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bench/load

DURATION=${DURATION:-3}
PEERS=${PEERS-tinyproxy squid}
OUT=${OUT:-target/bench-load}
BUILD=${BUILD:-1}
SECUREOPS=${SECUREOPS:-$PWD/target/release/secureops}
BENCH=$PWD/target/release/secureops-bench

# --- peers' packages ------------------------------------------------------
tools=()
for p in $PEERS; do
  case $p in
    tinyproxy) tools+=(/usr/bin/tinyproxy=tinyproxy) ;;
    squid) tools+=(/usr/sbin/squid=squid) ;;
    *) echo "unknown peer: $p (tinyproxy, squid)" >&2; exit 2 ;;
  esac
done
scripts/deps.sh tools "${tools[@]}"

# 10 000 idle tunnels: both ends in the benchmark, both ends in each proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The null-sink baseline of the audit case: the same proxy built with
# --features bench-null-audit (it records nothing when told so), set aside;
# then the real build. Each switch recompiles only the audit crate and up.
NULL_AUDIT=${NULL_AUDIT:-1}
null_bin=$PWD/target/release/secureops-null-audit
if [ "$BUILD" != 0 ]; then
  if [ "$NULL_AUDIT" = 1 ]; then
    cargo build --release --locked -p secureops --features bench-null-audit >&2
    cp target/release/secureops "$null_bin"
  fi
  cargo build --release --locked -p secureops -p secureops-bench >&2
fi
null_args=()
[ "$NULL_AUDIT" = 1 ] && [ -x "$null_bin" ] && null_args=(--secureops-null-audit "$null_bin")

mkdir -p "$OUT"
work=$(mktemp -d /tmp/secureops-loadbench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  cp "$work"/*/*.log "$OUT"/ 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port below the ephemeral range.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no free port" >&2
  exit 1
}

wait_port() {
  for _ in $(seq 150); do
    (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start; its log:" >&2
  cat "$work/$1/"*.log >&2 || true
  exit 1
}

# Fills @WORK@, @PORT@, @USER@, @GROUP@ of a config template.
render() {
  sed -e "s|@WORK@|$2|g" -e "s|@PORT@|$3|g" -e "s|@USER@|$4|g" -e "s|@GROUP@|$5|g" "$1"
}

peer_args=()
for p in $PEERS; do
  port=$(free_port)
  dir=$work/$p
  mkdir -p "$dir"
  case $p in
    tinyproxy)
      cp "$here/tinyproxy.filter" "$dir/filter"
      if [ "$(id -u)" = 0 ]; then user=nobody group=nogroup; else user=$(id -un) group=$(id -gn); fi
      render "$here/tinyproxy.conf" "$dir" "$port" "$user" "$group" >"$dir/tinyproxy.conf"
      [ "$(id -u)" = 0 ] || sed -i -e '/^User /d' -e '/^Group /d' "$dir/tinyproxy.conf"
      chown -R "$user:$group" "$dir" 2>/dev/null || true
      /usr/bin/tinyproxy -d -c "$dir/tinyproxy.conf" >"$dir/$p.stdout.log" 2>&1 &
      ;;
    squid)
      render "$here/squid.conf" "$dir" "$port" "" "" >"$dir/squid.conf"
      # squid started as root runs as cache_effective_user (Debian: proxy).
      [ "$(id -u)" = 0 ] && chown -R proxy:proxy "$dir"
      /usr/sbin/squid -N -f "$dir/squid.conf" >"$dir/$p.stdout.log" 2>&1 &
      ;;
  esac
  pid=$!
  pids+=("$pid")
  wait_port "$p" "$port" "$pid"
  echo "$p: 127.0.0.1:$port (pid $pid)" >&2
  peer_args+=(--peer "$p=127.0.0.1:$port,pid=$pid")
done

set +e
"$BENCH" --secureops "$SECUREOPS" --duration "$DURATION" "${peer_args[@]}" "${null_args[@]}" \
  --json "$OUT/results.jsonl" "$@" | tee "$OUT/table.md"
status=${PIPESTATUS[0]}
set -e
if [ "${DNSMASQ:-0}" = 1 ] && [ -x bench/dns/run.sh ]; then
  echo >&2
  echo "DNS sinkhole vs dnsmasq (bench/dns/run.sh):" >&2
  DURATION=$DURATION bench/dns/run.sh | tee "$OUT/dns-dnsmasq.md"
fi
echo >&2
echo "results: $OUT/results.jsonl (one JSON line per measurement), $OUT/table.md" >&2
exit "$status"
