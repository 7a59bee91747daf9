#!/bin/sh
# Redis's own test suite (../shared/redis-suite, Redis 7.0.15) through the proxy, then
# against the same server directly, so the two per-unit tables come from one run.
# Usage: sh scripts/redis-suite.sh [all|quick|UNIT...]   (after npm run build)
# The suite is destructive: it runs only against a disposable redis-server started here.
set -eu
SUITE=${REDIS_SUITE:-$(dirname "$0")/../../shared/redis-suite/run.sh}
REDIS_PORT=${REDIS_PORT:-46399}
PROXY_PORT=${PROXY_PORT:-46380}
PROFILE=${*:-all}
command -v tclsh >/dev/null || { echo "redis-suite: tclsh is missing (apt-get install -y tcl)" >&2; exit 2; }
dir=$(mktemp -d)
redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
node dist/src/cli.js --upstream "127.0.0.1:$REDIS_PORT" --port "$PROXY_PORT" --log-level warn >"$dir/proxy.log" 2>&1 &
proxy_pid=$!
trap 'kill "$proxy_pid" "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
for _ in $(seq 1 100); do
  redis-cli -p "$PROXY_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== through gears-proxy (127.0.0.1:$PROXY_PORT in front of 127.0.0.1:$REDIS_PORT)"
# shellcheck disable=SC2086
TAGS=proxy RESET_ADDR="127.0.0.1:$REDIS_PORT" "$SUITE" 127.0.0.1 "$PROXY_PORT" $PROFILE || true
# The proxy goes first: its invalidation streams would show as the server's own tracking clients.
kill "$proxy_pid" 2>/dev/null || true
wait "$proxy_pid" 2>/dev/null || true
echo "== the server directly (127.0.0.1:$REDIS_PORT)"
# shellcheck disable=SC2086
TAGS=proxy "$SUITE" 127.0.0.1 "$REDIS_PORT" $PROFILE || true
