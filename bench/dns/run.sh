#!/usr/bin/env bash
# DNS sinkhole benchmark: `secureops proxy`'s sinkhole next to dnsmasq
# configured as an equivalent sinkhole, on this machine, in the same run,
# measured with dnsperf. Three cases, each against both servers:
#
#   denied  names no rule covers (base64-looking labels under a denied
#           domain): secureops answers NXDOMAIN + one audit entry each,
#           dnsmasq answers NXDOMAIN (address=/#/)
#   static  [dns] hosts names (dnsmasq: addn-hosts)
#   cached  allowed names answered from the cache, after one warm-up pass
#           through a local fake upstream (a third dnsmasq, authoritative)
#
# Two measurements per case and server, the servers alternating, repeated
# ROUNDS times (the median is reported; this machine may be shared):
#
#   throughput  dnsperf as fast as it goes (-q OUTSTANDING in flight) for
#               DURATION s: queries/s and dnsperf's average latency
#   latency     dnsperf at a fixed RATE queries/s for DURATION s, every
#               query's latency recorded (-v): p50 and p99; then the same
#               at LOADED queries/s (the servers busy, not saturated)
#
# With LOGGED=1 (the default) dnsmasq also runs a second time with its
# query log on (log-queries to a file): not a target, a reference
# for what writing one line per query costs a server that does not sign or
# wait for it.
#
# With SHM=1 (the default) a third server runs: secureops with its audit
# log on tmpfs (/dev/shm), where fdatasync costs nothing. It is not a
# configuration to deploy; it separates what the disk sync costs from what
# the sinkhole and the signed log cost.
#
# Everything runs on 127.0.0.x loopback addresses. Output: Markdown tables.
#
# Usage: bench/dns/run.sh      (DURATION=5 ROUNDS=3 OUTSTANDING=100 RATE=10000 LOADED=50000)
#        DURATION=10 ROUNDS=1 bench/dns/run.sh
#
# secureops runs with its defaults (audit log fsync=batch, sign=batch: every
# query is written to the signed log before it is answered; a background
# fdatasync at most every 5 ms makes the lines durable)
# except client_rate = 0: dnsperf is one client at tens of thousands of
# queries/s, far over the default per-client limit. dnsmasq logs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
OUTSTANDING=${OUTSTANDING:-100}
RATE=${RATE:-10000}
LOADED=${LOADED:-50000}
NAMES=${NAMES:-1000}
SHM=${SHM:-1}
LOGGED=${LOGGED:-1}

scripts/deps.sh tools dnsperf=dnsperf dnsmasq=dnsmasq dig=dnsutils

cargo build --release --locked -p secureops >&2
BIN=$PWD/target/release/secureops

work=$(mktemp -d /tmp/secureops-dnsbench.XXXXXX)
shm=""
if [ "$SHM" = 1 ]; then shm=$(mktemp -d /dev/shm/secureops-dnsbench.XXXXXX); fi
# dnsmasq drops privileges before reading addn-hosts.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  [ -z "$shm" ] || rm -rf "$shm"
}
trap cleanup EXIT

UP_ADDR=127.0.0.3 UP_PORT=5399      # fake upstream (authoritative dnsmasq)
SO_ADDR=127.0.0.4 SO_PORT=5353      # secureops
DM_ADDR=127.0.0.5 DM_PORT=5353      # dnsmasq as a sinkhole
SH_ADDR=127.0.0.6 SH_PORT=5353      # secureops, audit log on tmpfs (SHM=1)
DL_ADDR=127.0.0.7 DL_PORT=5353      # dnsmasq with its query log (LOGGED=1)

# --- names --------------------------------------------------------------
: >"$work/denied.txt" >"$work/static.txt" >"$work/cached.txt" >"$work/static.hosts"
hosts_toml=""
for i in $(seq 0 $((NAMES - 1))); do
  label=$(printf 'c2VjcmV0LXRva2VuLSVk%06dQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo' "$i")
  echo "$label.exfil.denied.bench A" >>"$work/denied.txt"
  echo "c$i.cached.bench A" >>"$work/cached.txt"
  if ((i < 100)); then
    ip="1.2.3.$((i + 1))"
    echo "s$i.static.bench A" >>"$work/static.txt"
    echo "$ip s$i.static.bench" >>"$work/static.hosts"
    hosts_toml+="\"s$i.static.bench\" = [\"$ip\"], "
  fi
done

# --- fake upstream: answers every *.cached.bench name, TTL 1 h ----------
cat >"$work/upstream.conf" <<CONF
port=$UP_PORT
listen-address=$UP_ADDR
bind-interfaces
no-resolv
no-hosts
address=/cached.bench/1.2.3.4
local-ttl=3600
cache-size=0
CONF
dnsmasq -k -C "$work/upstream.conf" --pid-file="$work/upstream.pid" 2>"$work/upstream.log" &
pids+=($!)

# --- dnsmasq as a sinkhole: hosts, forward allowed, NXDOMAIN the rest -----
cat >"$work/dnsmasq.conf" <<CONF
port=$DM_PORT
listen-address=$DM_ADDR
bind-interfaces
no-resolv
no-hosts
addn-hosts=$work/static.hosts
server=/cached.bench/$UP_ADDR#$UP_PORT
address=/#/
cache-size=10000
local-ttl=60
CONF
dnsmasq -k -C "$work/dnsmasq.conf" --pid-file="$work/dnsmasq.pid" 2>"$work/dnsmasq.log" &
pids+=($!)
if [ "$LOGGED" = 1 ]; then
  # The same sinkhole, logging every query and answer to a file.
  sed -e "s/^listen-address=.*/listen-address=$DL_ADDR/" -e "s/^port=.*/port=$DL_PORT/" \
    "$work/dnsmasq.conf" >"$work/dnsmasq-log.conf"
  printf 'log-queries\nlog-facility=%s\n' "$work/dnsmasq-queries.log" >>"$work/dnsmasq-log.conf"
  : >"$work/dnsmasq-queries.log"
  chmod 666 "$work/dnsmasq-queries.log"
  dnsmasq -k -C "$work/dnsmasq-log.conf" --pid-file="$work/dnsmasq-log.pid" 2>"$work/dnsmasq-log.log" &
  pids+=($!)
fi

# --- secureops -----------------------------------------------------------
# start_secureops NAME ADDR PORT AUDIT_DIR
start_secureops() {
  cat >"$work/$1.toml" <<CONF
[proxy]
listen = "$2:0"
[network]
egress_allowlist = ["*.static.bench", "*.cached.bench"]
[dns]
listen = "$2:$3"
upstream = ["$UP_ADDR:$UP_PORT"]
hosts = { ${hosts_toml%, } }
client_rate = 0
[audit]
path = "$4/audit.jsonl"
signing_key = "$4/audit.key"
CONF
  "$BIN" proxy -c "$work/$1.toml" >"$work/$1.out" 2>"$work/$1.err" &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q "listening dns=" "$work/$1.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "listening dns=" "$work/$1.out" || { cat "$work/$1.err" >&2; exit 1; }
}
start_secureops secureops "$SO_ADDR" "$SO_PORT" "$work"
so_pid=${pids[-1]}
all="dnsmasq secureops"
if [ -n "$shm" ]; then
  start_secureops secureops-shm "$SH_ADDR" "$SH_PORT" "$shm"
  all="dnsmasq secureops secureops-shm"
fi
if [ "$LOGGED" = 1 ]; then all="$all dnsmasq-log"; fi
addr_of() {
  case $1 in
    dnsmasq) echo "$DM_ADDR $DM_PORT" ;;
    dnsmasq-log) echo "$DL_ADDR $DL_PORT" ;;
    secureops) echo "$SO_ADDR $SO_PORT" ;;
    secureops-shm) echo "$SH_ADDR $SH_PORT" ;;
  esac
}

# Sanity: both servers give the same answers.
for server in $all; do
  # shellcheck disable=SC2046
  set -- $(addr_of "$server")
  set -- "$1" -p "$2"
  s=$(dig +short +time=2 +tries=1 @"$1" -p "$3" s7.static.bench A)
  c=$(dig +short +time=2 +tries=1 @"$1" -p "$3" c7.cached.bench A)
  d=$(dig +time=2 +tries=1 @"$1" -p "$3" x.denied.bench A | grep -o 'status: [A-Z]*')
  echo "sanity $1: static=$s cached=$c denied=$d" >&2
  [ "$s" = 1.2.3.8 ] && [ "$c" = 1.2.3.4 ] && [ "$d" = "status: NXDOMAIN" ] || { echo "sanity check failed" >&2; exit 1; }
done

# Warm every cache with every cached name.
for server in $all; do
  # shellcheck disable=SC2046
  set -- $(addr_of "$server")
  dnsperf -s "$1" -p "$2" -d "$work/cached.txt" -n 1 -q 20 >/dev/null 2>&1
done

# throughput SERVER PORT FILE -> "qps avg_ms lost"
throughput() {
  local out
  out=$(dnsperf -s "$1" -p "$2" -d "$3" -l "$DURATION" -q "$OUTSTANDING" 2>&1 || true)
  awk '/Queries per second:/ {q = $4} /Average Latency/ {a = $4 * 1000} /Queries lost:/ {l = $3}
       END {printf "%.0f %.3f %s\n", q, a, l}' <<<"$out"
}

# latency SERVER PORT FILE RATE -> "p50_ms p99_ms lost" at RATE queries/s
latency() {
  # Its own file: the caller reads the result while this still cleans up.
  local out
  out=$(mktemp "$work/latency.XXXXXX")
  dnsperf -s "$1" -p "$2" -d "$3" -l "$DURATION" -q "$OUTSTANDING" -Q "$4" -v >"$out" 2>&1 || true
  # Per-query lines: "> NXDOMAIN name A 0.000123"; the latency is last.
  awk '/^> / {print $NF}' "$out" | sort -g >"$out.sorted"
  local n lost
  n=$(wc -l <"$out.sorted")
  lost=$(awk '/Queries lost:/ {print $3}' "$out")
  awk -v n="$n" -v lost="$lost" '
    NR == int(n * 0.50) + 1 {p50 = $1 * 1000}
    NR == int(n * 0.99) + 1 {p99 = $1 * 1000}
    END {printf "%.3f %.3f %s\n", p50, p99, lost}' "$out.sorted"
  rm -f "$out" "$out.sorted"
}

# median of the numbers on stdin
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

results="$work/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for case in denied static cached; do
    # Alternate the order of the servers from round to round.
    servers=$all
    ((round % 2 == 0)) && servers=$(tr ' ' '\n' <<<"$all" | tac | tr '\n' ' ')
    for server in $servers; do
      read -r addr port < <(addr_of "$server")
      read -r qps avg lost1 < <(throughput "$addr" "$port" "$work/$case.txt")
      read -r p50 p99 lost2 < <(latency "$addr" "$port" "$work/$case.txt" "$RATE")
      read -r lp50 lp99 lost3 < <(latency "$addr" "$port" "$work/$case.txt" "$LOADED")
      echo "$case $server $qps $avg $lost1 $p50 $p99 $lost2 $lp50 $lp99 $lost3" | tee -a "$results" >&2
      # Millions of query log lines per measurement: keep the disk free.
      [ "$server" != dnsmasq-log ] || : >"$work/dnsmasq-queries.log"
    done
  done
done

cores=$(nproc)
echo
echo "dnsperf, $ROUNDS round(s) of $DURATION s per measurement, median; $cores CPU(s), $(uname -r)"
echo
echo "| case | server | queries/s (max, $OUTSTANDING in flight) | avg ms at max | p50 ms at $RATE q/s | p99 ms at $RATE q/s | p50 ms at $LOADED q/s | p99 ms at $LOADED q/s | lost |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for case in denied static cached; do
  for server in $all; do
    col() { awk -v c="$case" -v s="$server" -v f="$1" '$1 == c && $2 == s {print $f}' "$results" | median; }
    lost=$(awk -v c="$case" -v s="$server" '$1 == c && $2 == s {l += $5 + $8 + $11} END {print l + 0}' "$results")
    echo "| $case | $server | $(col 3) | $(col 4) | $(col 6) | $(col 7) | $(col 9) | $(col 10) | $lost |"
  done
done

# The audit log: one verified entry per query answered.
kill -TERM "$so_pid"
wait "$so_pid" 2>/dev/null || true
echo >&2
"$BIN" audit verify "$work/audit.jsonl" >&2
