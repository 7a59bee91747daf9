#!/bin/sh
# Redis's own test suite (vendor/redis-suite, Redis 7.0.15) through the proxy, then
# against the same server directly, so the two per-unit tables come from one run.
# Usage: sh scripts/redis-suite.sh [all|quick|UNIT...]   (after npm run build)
# DIRECT_BASELINE=file: take the direct figures from that file (a recorded direct run of the
# same units, e.g. scripts/redis-suite-direct.txt for "quick") instead of running them again.
# The suite is destructive: it runs only against a disposable redis-server started here.
# REDIS_SERVER=valkey-server: the same, in front of Valkey (and Valkey directly).
set -eu
SUITE=${REDIS_SUITE:-$(dirname "$0")/../vendor/redis-suite/run.sh}
# Free ports unless given, so that two checkouts on one machine can run the suite at once.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=${REDIS_PORT:-$(free_port)}
PROXY_PORT=${PROXY_PORT:-$(free_port)}
PROFILE=${*:-all}
# The CI gate ("gate"): run.sh's "quick" units, and the short ones that cover what the proxy
# answers or changes itself (CONFIG and CLIENT introspection, tracking, CLIENT PAUSE, SLOWLOG,
# consumer groups, bit operations, DEBUG-free "other"): ~25 s more than "quick", against 8
# minutes for "all". A unit added here needs its direct figure in scripts/redis-suite-direct.txt.
GATE_EXTRA="unit/introspection unit/introspection-2 unit/tracking unit/pause unit/slowlog unit/type/stream-cgroups unit/bitops unit/bitfield unit/other"
if [ "$PROFILE" = gate ]; then
  PROFILE="$(sed -n '/^QUICK_UNITS="/,/^"/p' "$SUITE" | sed 's/QUICK_UNITS=//' | tr -d '"') $GATE_EXTRA"
fi
command -v tclsh >/dev/null || { echo "redis-suite: tclsh is missing (apt-get install -y tcl)" >&2; exit 2; }
dir=$(mktemp -d)
"${REDIS_SERVER:-redis-server}" --port "$REDIS_PORT" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
node dist/src/cli.js --upstream "127.0.0.1:$REDIS_PORT" --port "$PROXY_PORT" --log-level warn >"$dir/proxy.log" 2>&1 &
proxy_pid=$!
trap 'status=$?; kill "$proxy_pid" "$redis_pid" 2>/dev/null || true; rm -rf "$dir"; exit $status' EXIT INT TERM
for _ in $(seq 1 100); do
  redis-cli -p "$PROXY_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== through gears-proxy (127.0.0.1:$PROXY_PORT in front of 127.0.0.1:$REDIS_PORT)"
# shellcheck disable=SC2086
TAGS=proxy RESET_ADDR="127.0.0.1:$REDIS_PORT" "$SUITE" 127.0.0.1 "$PROXY_PORT" $PROFILE | tee "$dir/proxy.out" || true
# The proxy goes first: its invalidation streams would show as the server's own tracking clients.
kill "$proxy_pid" 2>/dev/null || true
wait "$proxy_pid" 2>/dev/null || true
if [ -n "${DIRECT_BASELINE:-}" ]; then
  # Redis's own figures against itself do not vary (the suite's README: no test flakes against
  # plain Redis), so `npm test` compares with a committed run of them and saves a minute.
  echo "== the server directly: as recorded in $DIRECT_BASELINE"
  cp "$DIRECT_BASELINE" "$dir/direct.out"
else
  echo "== the server directly (127.0.0.1:$REDIS_PORT)"
  # shellcheck disable=SC2086
  TAGS=proxy "$SUITE" 127.0.0.1 "$REDIS_PORT" $PROFILE | tee "$dir/direct.out" || true
fi
# The gate: every unit must pass as many tests through the proxy as it does directly in this run.
echo "== per unit: directly, then through the proxy"
awk '
  FNR == 1 { file++ }
  $2 ~ /^passed=/ { n = substr($2, 8) + 0; if (file == 1) proxy[$1] = n; else { direct[$1] = n; order[++units] = $1 } }
  END {
    short = 0; total_d = 0; total_p = 0
    for (i = 1; i <= units; i++) {
      u = order[i]; d = direct[u]; p = (u in proxy) ? proxy[u] : 0
      total_d += d; total_p += p
      mark = (p < d) ? "  <-- fewer through the proxy" : ""
      if (p < d) short++
      printf "| %-28s | %5d | %5d |%s\n", u, d, p, mark
    }
    printf "| %-28s | %5d | %5d |\n", "total", total_d, total_p
    if (units == 0) { print "redis-suite: no unit ran" > "/dev/stderr"; exit 2 }
    exit short > 0 ? 1 : 0
  }' "$dir/proxy.out" "$dir/direct.out"
