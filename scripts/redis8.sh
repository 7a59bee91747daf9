#!/bin/sh
# Puts Redis 8.0 beside the system's Redis, as `redis8-server` (and `redis8-cli`), for the specs
# that run the proxy in front of it (spec/support/backend.ts, ServerKind "redis8"): it is the
# Redis most new deployments get, and 7.2+ changed what clients see (CLIENT SETINFO, hash-field
# expiry commands and events, HELLO and CLIENT LIST fields). It builds from source because
# Debian 13's binary packages of Redis 8.0.2 need glibc 2.38 and Debian 12 has 2.36: it takes
# the upstream tarball Debian 13 ships (its .orig.tar.gz, checked against Debian's checksum),
# builds it with its bundled jemalloc, Lua and hiredis (no -dev package needed: a C and C++
# compiler and make), and installs it under REDIS8_DIR. About 100 s on 2 cores (make -j2).
# Root, Debian.
set -eu
command -v redis8-server >/dev/null 2>&1 && exit 0
dest=${REDIS8_DIR:-/opt/redis8}
bindir=${REDIS8_BIN:-/usr/local/bin}
version=8.0.2
# Debian 13's Sources (redis 5:8.0.2-3+deb13u3), Checksums-Sha256 of redis_8.0.2.orig.tar.gz.
sha256=caf3c0069f06fc84c5153bd2a348b204c578de80490c73857bee01d9b5d7401f
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball="$work/redis_$version.orig.tar.gz"
curl -fsSL -o "$tarball" "http://deb.debian.org/debian/pool/main/r/redis/redis_$version.orig.tar.gz"
echo "$sha256  $tarball" | sha256sum -c -
tar -xzf "$tarball" -C "$work"
# BUILD_TLS stays off: the specs that use TLS terminate it at the proxy, not at the server.
make -C "$work/redis-$version" -j"$(nproc)" >"$work/make.log" 2>&1 || {
  tail -n 40 "$work/make.log"
  exit 1
}
make -C "$work/redis-$version" PREFIX="$dest" install >>"$work/make.log" 2>&1
# Symlinks: redis-server picks its mode from argv[0] only for redis-sentinel/redis-check-*, so
# the name redis8-server starts a server.
ln -sf "$dest/bin/redis-server" "$bindir/redis8-server"
ln -sf "$dest/bin/redis-cli" "$bindir/redis8-cli"
"$bindir/redis8-server" --version
