"""redis-py 8's client-side cache (cache_config, default options) through the proxy.

Usage: redis_py_tracking.py PROXY_PORT DIRECT_PORT KEY
A write by another client through the proxy, then one straight on the node that holds KEY,
must each reach the cached reader as an invalidation: the cached value would be read forever
otherwise. Prints "ok" or raises.
"""

import sys
import time

import redis
import redis.connection
from redis.cache import CacheConfig

# redis-py 8 turns its cache on only for servers that report version 7.4 or later. The proxy
# reports its upstream's version (7.0.15 in these tests), and serves CLIENT TRACKING itself:
# this test lowers that gate, in its own process only.
redis.connection.CacheProxyConnection.MIN_ALLOWED_VERSION = "7.0.0"

proxy_port, direct_port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cached = redis.Redis(port=proxy_port, cache_config=CacheConfig())
other = redis.Redis(port=proxy_port)
direct = redis.Redis(port=direct_port, protocol=2)


def until(value: bytes, what: str) -> None:
    deadline = time.monotonic() + 15
    seen = None
    while time.monotonic() < deadline:
        seen = cached.get(key)
        if seen == value:
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: still {seen!r}, expected {value!r}")


other.set(key, "v1")
assert cached.get(key) == b"v1"
cache = cached.get_cache()
assert cache is not None and cache.size == 1, "the reply was not cached"
# Served from the cache now: the server would say v1 too, so compare with a write unseen.
assert cached.get(key) == b"v1"
other.set(key, "v2")
until(b"v2", "after a write through the proxy")
direct.set(key, "v3")
until(b"v3", "after a write straight on the node")
print("ok")
