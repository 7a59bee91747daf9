"""The T&F cases of spec/tf-functions.spec.ts, run with redis-py 8 at its default options.

redis-py 8 no longer has T&F's helpers (they were removed with the module), so the commands
go through execute_command, as its users' code now does. Usage: python tf_redis_py_cases.py
PORT. Prints "ok NAME" or "FAIL NAME: why" per case and exits 1 when a case failed."""

import sys

import redis

port = int(sys.argv[1])

LIB = """#!js api_version=1.0 name=pylib
redis.registerFunction('hello', function(client, name){ return 'hello ' + name; });
redis.registerFunction('incr', function(client, key){ return client.call('incr', key); });
redis.registerFunction('bytes', function(client, key){ return client.callRaw('get', key); },
                       {flags: [redis.functionFlags.RAW_ARGUMENTS]});
redis.registerAsyncFunction('later', async function(client){ return await client.callAsync('ping'); });
"""


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def load_and_call(r):
    check(r.execute_command("TFUNCTION", "LOAD", "REPLACE", LIB) == b"OK", "LOAD answers OK")
    check(r.execute_command("TFCALL", "pylib.hello", 0, "py") == b"hello py", "TFCALL answers")
    r.delete("py:{tf}:n")
    check(r.execute_command("TFCALL", "pylib.incr", 1, "py:{tf}:n") == 1, "an integer reply")
    check(r.execute_command("TFCALLASYNC", "pylib.later", 0) == b"PONG", "TFCALLASYNC answers")


def binary(r):
    value = bytes(range(256))
    r.set("py:{tf}:bin", value)
    check(r.execute_command("TFCALL", "pylib.bytes", 1, "py:{tf}:bin") == value, "callRaw gives the bytes back")


def errors(r):
    try:
        r.execute_command("TFCALL", "pylib.later", 0)
        raise AssertionError("TFCALL of an async function must fail")
    except redis.ResponseError as e:
        check("declared as async" in str(e), f"T&F's text, got {e}")
    try:
        r.execute_command("TFCALL", "nolib.f", 0)
        raise AssertionError("an unknown library must fail")
    except redis.ResponseError as e:
        check(str(e) == "Unknown library nolib", f"T&F's text, got {e}")


def pipeline(r):
    p = r.pipeline(transaction=False)
    for i in range(20):
        p.execute_command("TFCALL", "pylib.incr", 1, "py:{tf}:p")
    p.get("py:{tf}:p")
    out = p.execute()
    check(out[:20] == list(range(1, 21)), f"pipelined TFCALLs in order, got {out[:20]}")
    check(out[20] == b"20", "the GET after them sees their writes")


def listing(r):
    libs = r.execute_command("TFUNCTION", "LIST", "LIBRARY", "pylib")
    check(len(libs) == 1, "one library listed")
    fields = libs[0]
    # A map under RESP3 (redis-py 8's default), a flat list under RESP2.
    name = fields[b"name"] if isinstance(fields, dict) else fields[fields.index(b"name") + 1]
    check(name == b"pylib", "its name")
    check(r.execute_command("TFUNCTION", "DELETE", "pylib") == b"OK", "DELETE answers OK")


def main():
    r = redis.Redis(host="127.0.0.1", port=port)
    r.delete("py:{tf}:p")
    failed = False
    for name, fn in [
        ("load_and_call", load_and_call),
        ("binary", binary),
        ("errors", errors),
        ("pipeline", pipeline),
        ("listing", listing),
    ]:
        try:
            fn(r)
            print(f"ok {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported by name
            failed = True
            print(f"FAIL {name}: {e!r}")
    sys.exit(1 if failed else 0)


main()
