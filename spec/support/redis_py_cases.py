"""The client cases of spec/clients.spec.ts, run with redis-py at its default options.

Usage: python redis_py_cases.py PORT standalone|cluster. Prints one line per case, "ok NAME"
or "FAIL NAME: why", and exits 1 when a case failed. RedisCluster goes through the proxy's
cluster emulation, so every connection it makes is to the proxy."""

import sys
import threading
import time

import redis
from redis.cluster import RedisCluster

port = int(sys.argv[1])
mode = sys.argv[2]
prefix = f"py:{mode}:"


def plain():
    return redis.Redis(host="127.0.0.1", port=port)


def cluster():
    return RedisCluster(host="127.0.0.1", port=port)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def binary(r):
    key = prefix.encode() + b"bin\x00\xff"
    value = bytes(range(256))
    r.set(key, value)
    check(r.get(key) == value, "binary value round trip")


def hash_map(r):
    r.delete(prefix + "h")
    r.hset(prefix + "h", mapping={"a": "1", "b": "2"})
    check(r.hgetall(prefix + "h") == {b"a": b"1", b"b": b"2"}, "HGETALL as a dict")
    # RESP3 sends a map: the raw reply is a dict before any callback shapes it.
    raw = r.execute_command("HGETALL", prefix + "h", NEVER_DECODE=True)
    check(isinstance(raw, (dict, list)), f"HGETALL reply type {type(raw)}")


def zset_double(r):
    r.zadd(prefix + "z", {"m": 1.5, "n": 2.25})
    check(r.zscore(prefix + "z", "m") == 1.5, "ZSCORE as a float")
    check(r.zrange(prefix + "z", 0, -1, withscores=True) == [(b"m", 1.5), (b"n", 2.25)] or
          r.zrange(prefix + "z", 0, -1, withscores=True) == [[b"m", 1.5], [b"n", 2.25]], "ZRANGE WITHSCORES")


def pipeline_1000(r):
    r.delete(prefix + "counter")
    pipe = r.pipeline(transaction=False)
    for _ in range(1000):
        pipe.incr(prefix + "counter")
    check(pipe.execute() == list(range(1, 1001)), "1,000 replies in order")


def multi_watch(r, other):
    key = prefix + "{w}"
    r.set(key, "0")
    pipe = r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.incr(key)
    check(pipe.execute() == [1, 2], "MULTI/EXEC")
    with r.pipeline() as pipe:
        pipe.watch(key)
        other.set(key, "changed")
        pipe.multi()
        pipe.set(key, "mine")
        try:
            pipe.execute()
            raise AssertionError("EXEC ran after a WATCHed key changed")
        except redis.WatchError:
            pass
    check(other.get(key) == b"changed", "the aborted transaction wrote nothing")


def pubsub(r, other):
    channel = prefix + "chan"
    p = r.pubsub()
    p.subscribe(channel)
    msg = p.get_message(timeout=5)
    check(msg is not None and msg["type"] == "subscribe", f"subscribe confirmation {msg}")
    # In front of a cluster, publisher and subscriber meet on one master (slot 0's): the
    # message does not cross the cluster bus, which may drop it (it did, now and then, in
    # front of Valkey 8.0 while channel pub/sub went to each client's own master).
    other.publish(channel, "hello")
    msg = p.get_message(timeout=5)
    check(msg is not None and msg["data"] == b"hello", f"message {msg}")
    while p.get_message(timeout=0.2) is not None:
        pass
    # A command on the subscribed connection itself (RESP3 allows any command).
    p.ping()
    msg = p.get_message(timeout=5)
    check(msg is not None, "PING while subscribed")
    p.close()


def blpop(r, other):
    key = prefix + "list"
    r.delete(key)
    timer = threading.Timer(0.2, lambda: other.rpush(key, "woken"))
    timer.start()
    got = r.blpop([key], timeout=5)
    timer.join()
    check(got is not None and got[1] == b"woken", f"BLPOP {got}")


def scan_once(r):
    keys = {f"{prefix}scan:{i}".encode() for i in range(200)}
    for k in keys:
        r.set(k, "1")
    seen = list(r.scan_iter(match=prefix + "scan:*", count=50))
    check(len(seen) == len(set(seen)) and set(seen) == keys, "SCAN sees each key once")


def eval_script(r):
    check(r.eval("return {1, 'two', redis.call('ping')}", 0) == [1, b"two", b"PONG"], "EVAL")


def run(name, fn, *args):
    try:
        fn(*args)
        print(f"ok {name}", flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - every failure is reported by name
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        return False


def main():
    r, other = plain(), plain()
    # With the version (Redis 6.0 has no bare HELLO).
    hello = r.execute_command("HELLO", "3")
    check(hello[b"proto"] == 3, f"redis-py negotiated RESP3: {hello}")
    results = [
        run("binary strings", binary, r),
        run("hashes as maps", hash_map, r),
        run("sorted sets with double scores", zset_double, r),
        run("a pipeline of 1,000 commands in order", pipeline_1000, r),
        run("MULTI/EXEC and a WATCH abort", multi_watch, r, other),
        run("pub/sub with a command on the subscribed connection", pubsub, r, other),
        run("BLPOP woken by another client", blpop, r, other),
        run("SCAN sees each key once", scan_once, r),
        run("EVAL", eval_script, r),
    ]
    if mode == "cluster":
        rc = cluster()
        results += [
            run("RedisCluster: binary strings", binary, rc),
            run("RedisCluster: a pipeline of 1,000 commands", pipeline_1000, rc),
            run("RedisCluster: sorted sets", zset_double, rc),
        ]
        rc.close()
    r.close()
    other.close()
    sys.exit(0 if all(results) else 1)


main()
