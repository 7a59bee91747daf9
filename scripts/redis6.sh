#!/bin/sh
# Puts Redis 6.0 beside the system's Redis, as `redis6-server`, for the specs that run the proxy
# in front of it (spec/support/backend.ts, ServerKind "redis6"): many running clusters and
# managed services are still 6.x. It takes Debian 11's packages (redis-server 6.0.16 and the
# libraries it links to that Debian 12 no longer has), unpacks them under REDIS6_DIR without
# installing them, and writes a small launcher that points the loader at them. Root, Debian.
set -eu
command -v redis6-server >/dev/null 2>&1 && exit 0
dest=${REDIS6_DIR:-/opt/redis6}
bindir=${REDIS6_BIN:-/usr/local/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "deb http://deb.debian.org/debian bullseye main" >"$work/sources.list"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
# A private package list: the machine's own sources and installed packages stay as they are.
set -- -o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=- \
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null \
  -o APT::Sandbox::User=root
apt-get "$@" update
(cd "$work" && apt-get "$@" download redis-server redis-tools liblua5.1-0 lua-cjson lua-bitop libjemalloc2 libssl1.1)
mkdir -p "$dest"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest"; done
libdir=$(dirname "$(find "$dest" -name 'libssl.so.1.1' | head -n 1)")
cat >"$bindir/redis6-server" <<LAUNCHER
#!/bin/sh
LD_LIBRARY_PATH="$libdir" exec "$dest/usr/bin/redis-server" "\$@"
LAUNCHER
chmod +x "$bindir/redis6-server"
"$bindir/redis6-server" --version
