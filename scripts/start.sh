#!/bin/sh
# `npm start [-- flags]`: runs gears-proxy with the given flags. Without --upstream the proxy starts
# its own redis-server, so make sure there is one (installing it when we are root on Debian/Ubuntu).
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)

# Only a plain start needs redis-server: not with --upstream, nor --config (which may name upstreams),
# nor for --help/--version.
needs_redis=yes
for arg in "$@"; do
  case $arg in
    --upstream | --upstream=* | --config | --config=* | -h | --help | -v | --version) needs_redis=no ;;
  esac
done

if [ "$needs_redis" = yes ] && ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "gears-proxy: redis-server is not installed; installing it with apt-get (redis-server redis-tools)..." >&2
    apt-get update && apt-get install -y redis-server redis-tools
  else
    echo "gears-proxy: redis-server was not found on PATH, and the proxy needs one when no --upstream is given." >&2
    echo "  Install Redis (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)," >&2
    echo "  or point the proxy at a running server: npm start -- --upstream host:port" >&2
    exit 1
  fi
fi

if [ ! -f "$root/dist/src/cli.js" ]; then
  echo "gears-proxy: building (npm run build)..." >&2
  (cd "$root" && npm run build --silent)
fi

exec node "$root/dist/src/cli.js" "$@"
