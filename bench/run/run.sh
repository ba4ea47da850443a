#!/usr/bin/env bash
# Performance inside `secureops run`, two builds side by side
# (bench/run/README.md): does a change to run's confinement cost the
# command anything?
#
#   1. installs what it needs with apt when missing (nginx-light, curl,
#      python3, and what `secureops run` needs);
#   2. builds a fake upstream: a network namespace with a veth pair to the
#      host (198.18.N.1 host side, 198.18.N.2 in the namespace) and nginx
#      in it serving /big (BULK_MB of a sparse file, sendfile on port 80)
#      and /small (3 bytes) over HTTP and HTTPS (a certificate for up.test
#      made here);
#   3. writes a config that allows `up.test` (its [dns] hosts address) and
#      nothing else, with the state folder (XDG_STATE_HOME), the audit logs
#      and the key in a scratch folder under $OUT (not under /tmp: /tmp is
#      private inside newer runs);
#   4. ROUNDS rounds; each measures, one target after the other (old and
#      new swap places every round), bench/run/inside.sh on the host
#      (`direct`), as the command of `OLD run` and of `NEW run`: a bulk
#      download with curl over HTTP and over HTTPS, REQS sequential
#      requests on fresh connections (bench/run/reqs.py), SYSCALLS one-byte
#      dd blocks, SPAWNS starts of /bin/true; then STARTS timed
#      `run -- true` of each binary;
#   5. writes $OUT/results.jsonl (one line per figure) and $OUT/table.md
#      (medians over the rounds, ratios to direct and new/old), removes the
#      namespace, nginx and the scratch folder.
#
# Usage: bench/run/run.sh
#        OLD=/work/target-old/release/secureops NEW=/work/target-new/release/secureops bench/run/run.sh
#        OLD_REV=ba25fd5 NEW_REV=HEAD bench/run/run.sh   (builds missing binaries first)
#
# Environment: OLD, NEW (the two binaries; default
# ../target-old/release/secureops and ../target-new/release/secureops
# beside the repository), OLD_REV / NEW_REV (when a binary is missing,
# build it from this commit in a temporary worktree with CARGO_TARGET_DIR
# set to the binary's target folder), ROUNDS (default 5), BULK_MB (size of
# the download, default 1536), REQS (default 1000), SYSCALLS (dd blocks,
# default 500000), SPAWNS (default 300), STARTS (timed starts per binary
# and round, default 10), OUT (default target/bench-run), MAX_S (no round
# starts after this many seconds, default 480), QUIET_PCT / QUIET_WAIT
# (before each round, wait up to QUIET_WAIT s, default 30, for a second
# with at most QUIET_PCT % of the CPUs busy, default 20; the figure is
# recorded either way).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
here=$repo/bench/run

OLD=${OLD:-$(dirname "$repo")/target-old/release/secureops}
NEW=${NEW:-$(dirname "$repo")/target-new/release/secureops}
ROUNDS=${ROUNDS:-5}
BULK_MB=${BULK_MB:-1536}
REQS=${REQS:-1000}
SYSCALLS=${SYSCALLS:-500000}
SPAWNS=${SPAWNS:-300}
STARTS=${STARTS:-10}
OUT=${OUT:-target/bench-run}
MAX_S=${MAX_S:-480}
QUIET_PCT=${QUIET_PCT:-20}
QUIET_WAIT=${QUIET_WAIT:-30}
host=up.test

if [ "$(id -u)" != 0 ]; then
  echo "bench/run/run.sh needs root (network namespace, veth pair)" >&2
  exit 2
fi

scripts/deps.sh run
scripts/deps.sh tools /usr/sbin/nginx=nginx-light curl=curl python3=python3 openssl=openssl awk=gawk ss=iproute2

# --- the binaries -----------------------------------------------------------
# A missing binary is built from OLD_REV / NEW_REV in a temporary worktree
# (the working tree of this checkout is not touched).
build() { # BIN REV
  local bin=$1 rev=$2 tree
  tree=$(mktemp -d "$(dirname "$repo")/bench-run-src.XXXXXX")
  rmdir "$tree"
  git worktree add --detach "$tree" "$rev" >&2
  (cd "$tree" && CARGO_TARGET_DIR=$(dirname "$(dirname "$bin")") cargo build --release --locked -p secureops >&2) ||
    { git worktree remove --force "$tree"; return 1; }
  git worktree remove --force "$tree"
}
for pair in "OLD:${OLD_REV:-}" "NEW:${NEW_REV:-}"; do
  name=${pair%%:*} rev=${pair#*:} bin=${!name}
  if [ ! -x "$bin" ]; then
    if [ -z "$rev" ]; then
      echo "$name binary $bin missing: set $name=PATH, or ${name}_REV=COMMIT to build it" >&2
      exit 2
    fi
    build "$bin" "$rev"
    [ -x "$bin" ] || { echo "$name: the build made no $bin (it must be TARGET_DIR/release/secureops)" >&2; exit 1; }
  fi
done
py=$(python3 -c 'import sys; print(sys.executable)')

# --- scratch folder, namespace, upstream; all removed on exit ---------------
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
scratch=$(mktemp -d "$OUT/scratch.XXXXXX")
chmod 755 "$scratch"
ns=sobench$$
nginx_pid=""
cleanup() {
  set +e
  if [ -n "$nginx_pid" ]; then
    kill -TERM "$nginx_pid" 2>/dev/null
    wait "$nginx_pid" 2>/dev/null
  fi
  if ip netns list | grep -qw "$ns"; then
    # Anything still in the namespace was started by this script.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" # takes the veth pair with it
  fi
  cp "$scratch"/nginx/error.log "$OUT"/nginx-error.log 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A /24 of 198.18.0.0/15 that no interface of the host uses yet.
net=""
for _ in $(seq 50); do
  n=$((2 + RANDOM % 250))
  if ! ip -4 addr | grep -q "inet 198\.18\.$n\."; then net=$n; break; fi
done
[ -n "$net" ] || { echo "no free 198.18.N.0/24" >&2; exit 1; }
addr=198.18.$net.2
ip netns add "$ns"
ip link add "${ns}h" type veth peer name "${ns}n"
ip link set "${ns}n" netns "$ns"
ip addr add "198.18.$net.1/24" dev "${ns}h"
ip link set "${ns}h" up
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip addr add "$addr/24" dev "${ns}n"
ip netns exec "$ns" ip link set "${ns}n" up

mkdir -p "$scratch"/{www,nginx,state,audit,work,cfg}
truncate -s "${BULK_MB}M" "$scratch/www/big"
# The first read of a hole fills the page cache (~400 MB/s here); do it
# now, not in the first measurement.
cat "$scratch/www/big" >/dev/null
printf 'ok\n' >"$scratch/www/small"
chmod -R a+rX "$scratch/www"
# The upstream's certificate; CMD reads it from its working folder.
ca=$scratch/work/ca.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
  -keyout "$scratch/nginx/key.pem" -out "$ca" 2>/dev/null
cat >"$scratch/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $scratch/nginx/nginx.pid;
error_log $scratch/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 5;
  client_body_temp_path $scratch/nginx/body;
  proxy_temp_path $scratch/nginx/proxy;
  fastcgi_temp_path $scratch/nginx/fastcgi;
  uwsgi_temp_path $scratch/nginx/uwsgi;
  scgi_temp_path $scratch/nginx/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen $addr:80 backlog=4096;
    listen $addr:443 ssl backlog=4096;
    ssl_certificate $ca;
    ssl_certificate_key $scratch/nginx/key.pem;
    root $scratch/www;
  }
}
EOF
ip netns exec "$ns" /usr/sbin/nginx -e "$scratch/nginx/error.log" -p "$scratch/nginx" -c "$scratch/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null --max-time 1 "http://$addr/small" && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$scratch/nginx/error.log" >&2; exit 1; }
  sleep 0.1
done

cfg=$scratch/cfg/secureops.toml
cat >"$cfg" <<EOF
[network]
egress_allowlist = ["$host", "$host:*"]
private_destinations = ["198.18.0.0/15"]

[dns]
upstream = []
hosts = { "$host" = ["$addr"] }

[audit]
signing_key = "$scratch/audit/bench.key"
EOF
export XDG_STATE_HOME=$scratch/state
cd "$scratch/work"

# --- measurements -------------------------------------------------------------
results=$OUT/results.jsonl
: >"$results"
emit() { # ROUND TARGET METRIC VALUE
  printf '{"round":%s,"target":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" "$4" >>"$results"
}

# One measurement of inside.sh; its KEY VALUE lines become JSON lines.
measure() { # ROUND TARGET
  local r=$1 t=$2 log out
  log=$scratch/audit/$t-$r.jsonl
  case $t in
    direct) out=$(timeout --foreground -k 5 120 "$here/inside.sh" "$py" "$host" "$ca" "$REQS" "$SYSCALLS" "$SPAWNS" "$addr") ;;
    old | new)
      local bin=$OLD
      [ "$t" = new ] && bin=$NEW
      out=$(timeout --foreground -k 5 120 "$bin" run -c "$cfg" --audit "$log" -- \
        sh "$here/inside.sh" "$py" "$host" "$ca" "$REQS" "$SYSCALLS" "$SPAWNS")
      ;;
  esac
  local k v
  while read -r k v; do
    [ -n "$k" ] && emit "$r" "$t" "$k" "$v"
  done <<<"$out"
  grep -q '^errors 0$' <<<"$out" || { echo "$t round $r: failed requests: $out" >&2; exit 1; }
  for k in bulk_http bulk_tls; do
    grep -q "^${k}_bytes $((BULK_MB * 1048576))$" <<<"$out" || { echo "$t round $r: short download ($k): $out" >&2; exit 1; }
  done
  if [ "$t" != direct ]; then
    # Every request went through the guard: one audit entry each (plus
    # the warm-up, the download and DNS).
    local entries
    entries=$(grep -c "\"$host\"" "$log" || true)
    emit "$r" "$t" audit_entries "$entries"
    if [ "$entries" -lt "$REQS" ]; then
      echo "$t round $r: only $entries audit entries for $host (expected >= $REQS): traffic bypassed the guard?" >&2
      exit 1
    fi
  fi
  printf '  %-6s %s\n' "$t" "$(tr '\n' ' ' <<<"$out")" >&2
}

# STARTS timed `run -- true`, one audit log per binary and round.
starts() { # ROUND TARGET
  local r=$1 t=$2 bin=$OLD i t0 t1
  [ "$t" = new ] && bin=$NEW
  local ms=()
  for i in $(seq "$STARTS"); do
    t0=$EPOCHREALTIME
    timeout --foreground -k 5 30 "$bin" run -c "$cfg" --audit "$scratch/audit/start-$t-$r.jsonl" -- true
    t1=$EPOCHREALTIME
    ms+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) * 1000 }')")
  done
  local med
  med=$(printf '%s\n' "${ms[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  emit "$r" "$t" start_ms "$med"
  printf '  %-6s start_ms %s (median of %s)\n' "$t" "$med" "$STARTS" >&2
}

# Percentage of the CPUs busy over the next second (all processes).
busy_pct() {
  local a b
  a=$(head -1 /proc/stat)
  sleep 1
  b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    na = split(a, x); split(b, y); tot = 0
    for (i = 2; i <= na; i++) tot += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%d", (tot > 0) ? 100 * (tot - idle) / tot : 0 }'
}

echo "upstream $addr in namespace $ns; old=$OLD new=$NEW; $ROUNDS rounds" >&2
began=$SECONDS
done_rounds=0
for r in $(seq "$ROUNDS"); do
  if ((SECONDS - began > MAX_S)); then
    echo "time limit (MAX_S=$MAX_S) reached after $done_rounds rounds" >&2
    break
  fi
  if ((r % 2)); then order=(old new); else order=(new old); fi
  # The machine may be shared: wait (QUIET_WAIT s at most) for a second
  # in which it is idle enough, and record how busy it was.
  busy=$(busy_pct)
  for _ in $(seq "$QUIET_WAIT"); do
    ((busy <= QUIET_PCT)) && break
    busy=$(busy_pct)
  done
  emit "$r" machine busy_pct "$busy"
  # The guard closes its upstream connections first: each request of (b)
  # leaves a TIME_WAIT socket on the host for 60 s, and a port range
  # crowded with them slows connect(); keep REQS x rounds per minute well
  # below the ephemeral range (32768-60999 by default).
  tw=$(ss -Htan state time-wait | wc -l)
  emit "$r" machine timewait "$tw"
  echo "round $r (${order[*]}), CPU busy before it: $busy %, TIME_WAIT sockets: $tw" >&2
  measure "$r" direct
  for t in "${order[@]}"; do measure "$r" "$t"; done
  for t in "${order[@]}"; do starts "$r" "$t"; done
  done_rounds=$r
done

cd "$repo"
{
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $done_rounds rounds, BULK_MB=$BULK_MB REQS=$REQS SYSCALLS=$SYSCALLS SPAWNS=$SPAWNS STARTS=$STARTS"
  echo "old: $OLD${OLD_REV:+ (built from $OLD_REV)}, sha256 $(sha256sum "$OLD" | cut -c1-12)"
  echo "new: $NEW${NEW_REV:+ (built from $NEW_REV)}, sha256 $(sha256sum "$NEW" | cut -c1-12)"
  echo
  "$py" "$here/table.py" "$results"
} | tee "$OUT/table.md"
echo >&2
echo "results: $results (one JSON line per figure), $OUT/table.md" >&2
