# RedisGears 1.x's Python API over the GearsBuilder library (src/gears/guest/gears/), which
# the isolate's JavaScript side has loaded already: a Python builder records its steps in a
# JavaScript builder, with each callable wrapped so records cross as plain Python values.
# The engine (plans, partitions, executions, registrations) is the JavaScript one; only the
# language of the user's functions differs.
#
# Run once per isolate, before the user's script, which then runs by _gears_run_script()
# in its own globals, where `js` and `pyodide` cannot be imported.
import asyncio as _asyncio
import builtins as _builtins
import copy as _copy
import dis as _dis
import inspect as _inspect
import sys as _sys
import time as _time

import js as _js
from pyodide.ffi import JsException as _JsException
from pyodide.ffi import JsProxy as _JsProxy
from pyodide.ffi import create_proxy as _create_proxy
from pyodide.ffi import to_js as _to_js

_rt = _js.__pyrt
_JsGB = _js.GearsBuilder
_from_entries = _js.Object.fromEntries
_js_execute = _js.execute
_js_execute_async = _js.executeAsync
_js_log = _js.log
_js_hashtag = _js.hashtag
_js_config_get = _js.configGet
_js_register_time_event = _js.registerTimeEvent
_js_override_reply = _js.overrideReply
_js_call_next = _js.callNext
_js_get_command = _js.getCommand


_UNREAD = object()


class _LazyRecord(dict):
    # An event record whose value is read from Redis on first use (a key too big to send
    # along, such as the set a handler keeps adding to): converting it eagerly would read it
    # for every event, as the JavaScript form does not. It is read when the script looks at
    # it; iterating the keys, `in` and len() do not read it.
    __slots__ = ("_source",)

    def _load(self):
        if dict.get(self, "value") is _UNREAD:
            dict.__setitem__(self, "value", _to_py(self._source.value))
        return self

    def __getitem__(self, k):
        if k == "value":
            self._load()
        return dict.__getitem__(self, k)

    def get(self, k, default=None):
        return dict.get(self._load() if k == "value" else self, k, default)

    def __iter__(self):
        # Not dict's own: then dict(x) and {**x} copy through __getitem__, which reads value.
        return dict.__iter__(self)

    def items(self):
        return dict.items(self._load())

    def values(self):
        return dict.values(self._load())

    def copy(self):
        return dict(self._load())

    def pop(self, *a):
        return dict.pop(self._load(), *a)

    def __eq__(self, other):
        return dict.__eq__(self._load(), other)

    __hash__ = None

    def __repr__(self):
        return dict.__repr__(self._load())

    __str__ = __repr__


def _to_py(v):
    if not isinstance(v, _JsProxy):
        return v
    if _rt.lazyValue(v):
        record = _LazyRecord((k, _UNREAD if k == "value" else _to_py(getattr(v, k))) for k in _js.Object.keys(v))
        record._source = v
        return record
    return v.to_py()


def _to_js_value(v):
    # Plain data only: no proxy of a Python object outlives the call.
    if isinstance(v, _LazyRecord):
        v._load()
    return _to_js(v, dict_converter=_from_entries, create_pyproxies=False)


def _key(k):
    # RedisGears' group keys are strings: anything else by its repr().
    return k if isinstance(k, str) else repr(k)


def _label(f):
    return getattr(f, "__name__", "") or type(f).__name__


class _NoIO:
    # The loop's selector: there is no I/O to wait for, only timers (asyncio.sleep).
    def select(self, timeout):
        if timeout:
            _time.sleep(timeout)
        return []


class _StepLoop(_asyncio.BaseEventLoop):
    # A private event loop that runs a step's coroutine to its end, inside the step: the
    # engine runs steps synchronously, so an `async def` step is awaited in place (records of
    # a partition one after another, as RedisGears 1.2 processed them). Pyodide's own loop
    # runs on JavaScript's event loop, which does not turn while a step runs.
    def __init__(self):
        super().__init__()
        self._selector = _NoIO()

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass


_loop = None


def _await(coroutine):
    global _loop
    if _loop is None:
        _loop = _StepLoop()
    # Pyodide's loop counts as running in this thread: set aside while ours runs.
    outer = _asyncio.events._get_running_loop()
    _asyncio.events._set_running_loop(None)
    try:
        return _loop.run_until_complete(coroutine)
    finally:
        _asyncio.events._set_running_loop(outer)


def _step(f, shape="plain"):
    if not callable(f):
        raise TypeError("argument must be a function")

    def call(*args):
        args = [_to_py(a) for a in args]
        try:
            out = f(*args)
            if _inspect.iscoroutine(out):
                if shape == "key":
                    out.close()
                    raise TypeError("coroutine are not allow on extractors")
                out = _await(out)
        except (KeyboardInterrupt, MemoryError) as e:
            _rt.fatal(type(e).__name__)
            raise
        if shape == "key":
            out = _key(out)
        elif shape == "same":
            out = args[0]
        elif shape == "bool":
            out = bool(out)
        elif shape == "flat":
            # RedisGears pops a returned list from its end: elements come out last to first.
            out = out[::-1] if isinstance(out, list) else [out]
        elif shape == "iter":
            out = list(out)
        return _to_js_value(out)

    return _rt.step(_create_proxy(call), _label(f))


# What a foreach lambda may do besides its one execute() call, for its command to be
# pipelined: read its arguments, constants, subscripts and f-strings, nothing that calls.
_PLAIN_OPS = frozenset(
    (
        "RESUME",
        "NOP",
        "CACHE",
        "PUSH_NULL",
        "COPY_FREE_VARS",
        "LOAD_CONST",
        "LOAD_SMALL_INT",
        "LOAD_DEREF",
        "BINARY_OP",
        "BINARY_SUBSCR",
        "FORMAT_SIMPLE",
        "BUILD_STRING",
        "RETURN_VALUE",
    )
)


def _replies_unused(f):
    # `lambda x: execute(...)` whose arguments call nothing: foreach drops the reply, so the
    # command can leave in the batch's pipeline (an error reply still fails the record), as
    # the JavaScript library does for `x => execute(...)`.
    if getattr(f, "__name__", None) != "<lambda>" or getattr(f, "__globals__", {}).get("execute") is not execute:
        return False
    calls = loads = 0
    for i in _dis.get_instructions(f):
        if i.opname.startswith("CALL"):
            calls += 1
        elif i.opname == "LOAD_GLOBAL":
            loads += 1
            if i.argval != "execute":
                return False
        elif not (i.opname in _PLAIN_OPS or i.opname.startswith("LOAD_FAST")):
            return False
    return calls == 1 and loads == 1


_pipelining = False


def _pipelined_step(f):
    # The engine passes the record on once the reply is in: the runtime keeps the promise of
    # executeAsync (execute() hands it over) and returns it from the step.
    def call(record):
        global _pipelining
        _pipelining = True
        try:
            f(_to_py(record))
        except (KeyboardInterrupt, MemoryError) as e:
            _rt.fatal(type(e).__name__)
            raise
        finally:
            _pipelining = False

    return _rt.pipelinedStep(_create_proxy(call), _label(f))


def _zero_reset(zero, f, with_key):
    # aggregate/aggregateby start again from a copy of zero whenever the accumulator is falsy.
    if with_key:
        return lambda k, a, r: f(k, a if a else _copy.deepcopy(zero), r)
    return lambda a, r: f(a if a else _copy.deepcopy(zero), r)


def _options(kw):
    out = {}
    for name, value in kw.items():
        if value is None:
            continue
        out[name] = _step(value) if callable(value) else value
    return _to_js(out, dict_converter=_from_entries)


class GearsBuilder:
    def __init__(self, reader="KeysReader", defaultArg="*", desc=None):
        self._reader = reader
        if reader == "PythonReader":
            # RedisGears runs the generator on every shard: one ShardsIDReader record per
            # shard, turned into what the generator (given to run()) yields there.
            self._generator = None
            self._b = _JsGB("ShardsIDReader", None, desc)
            self._b.flatmap(_step(self._python_reader, "iter"))
        else:
            self._b = _JsGB(reader, defaultArg, desc)

    def _python_reader(self, shard_id):
        return self._generator()

    def map(self, f):
        self._b.map(_step(f))
        return self

    def flatmap(self, f):
        self._b.flatmap(_step(f, "flat"))
        return self

    def foreach(self, f):
        if callable(f) and _replies_unused(f):
            self._b.foreach(_pipelined_step(f))
            return self
        # The record goes on as f left it (RedisGears passes the same object along): the
        # step hands back the Python record, not the one it was given.
        self._b.map(_step(f, "same"))
        return self

    def filter(self, f):
        self._b.filter(_step(f, "bool"))
        return self

    def accumulate(self, f):
        self._b.accumulate(_step(f))
        return self

    def localgroupby(self, e, r):
        self._b.localgroupby(_step(e, "key"), _step(r))
        return self

    def limit(self, length, start=0):
        if not isinstance(length, int) or not isinstance(start, int):
            raise TypeError("limit argument must be a number")
        self._b.limit(length, start)
        return self

    def collect(self):
        self._b.collect()
        return self

    def repartition(self, e):
        self._b.repartition(_step(e, "key"))
        return self

    def groupby(self, e, r):
        self._b.groupby(_step(e, "key"), _step(r))
        return self

    def batchgroupby(self, e, r):
        self._b.batchgroupby(_step(e, "key"), _step(r))
        return self

    def aggregate(self, z, l, g):
        self._b.aggregate(
            _to_js_value(z), _step(_zero_reset(z, l, False)), _step(_zero_reset(z, g, False))
        )
        return self

    def aggregateby(self, e, z, l, g):
        self._b.aggregateby(
            _step(e, "key"),
            _to_js_value(z),
            _step(_zero_reset(z, l, True)),
            _step(_zero_reset(z, g, True)),
        )
        return self

    def count(self):
        self._b.count()
        return self

    def countby(self, e=lambda x: x):
        self._b.countby(_step(e, "key"))
        return self

    def avg(self, e=lambda x: float(x)):
        self._b.avg(_step(e))
        return self

    def distinct(self):
        self._b.distinct()
        return self

    def sort(self, reverse=True):
        # RedisGears' sort() reverses once more when its flatmap emits the sorted list, so its
        # default (reverse=True) comes out ascending: the same order here.
        self._b.sort(not reverse)
        return self

    def _finish(self, convertToStr):
        if convertToStr:
            self._b.map(_step(str))

    def run(self, arg=None, convertToStr=True, collect=True, **kw):
        if self._reader == "PythonReader":
            if arg is None:
                raise Exception("python reader function is not given")
            if not callable(arg):
                raise Exception("pyreader argument must be a function")
            self._generator = arg
            arg = None
        self._finish(convertToStr)
        self._b.run(arg, _options(dict(kw, convertToStr=False, collect=collect)))

    def register(self, prefix="*", convertToStr=True, collect=True, **kw):
        if self._reader == "PythonReader":
            raise Exception("reader do not support register")
        if "regex" in kw:
            prefix = kw.pop("regex")
        self._finish(convertToStr)
        return _to_py(self._b.register(prefix, _options(dict(kw, convertToStr=False, collect=collect))))


GB = GearsBuilder


class _Atomic:
    # Every execute() is its own command through the proxy: there is no lock to take. Only
    # RedisGears' rule that blocks do not nest is kept.
    depth = 0

    def __enter__(self):
        if _Atomic.depth > 0:
            raise Exception("Already inside an atomic block")
        _Atomic.depth += 1
        return self

    def __exit__(self, *exc):
        _Atomic.depth -= 1
        return False


def atomic():
    return _Atomic()


def execute(command, *args):
    if _pipelining:
        _rt.keep(_js_execute_async, str(command), *[str(a) for a in args])
        return None
    try:
        return _to_py(_js_execute(str(command), *[str(a) for a in args]))
    except _JsException as e:
        raise Exception(str(e.message)) from None


def log(message, level="notice"):
    _js_log(str(message), str(level))


def hashtag():
    return _js_hashtag()


def configGet(name):
    return _to_py(_js_config_get(str(name)))


def gearsConfigGet(name, default=None):
    v = configGet(name)
    return default if v is None else v


def registerTE(seconds, callback, keyName=None):
    _js_register_time_event(seconds, _step(callback), keyName)


def override_reply(value):
    _js_override_reply(_to_js_value(value))


def call_next(*args):
    return _to_py(_js_call_next(*[str(a) for a in args]))


def get_command():
    return _to_py(_js_get_command())


def isAsyncAllow():
    # An `async def` step is awaited in place, wherever the step runs.
    return True


def _background_only(name):
    def refuse(*args, **kw):
        for a in args:
            if _inspect.iscoroutine(a):
                a.close()
        raise NotImplementedError(
            f"{name}() is not available here: the proxy has no background event loop; "
            "write the step as `async def` (it is awaited in place) instead"
        )

    return refuse


_API = {
    "GearsBuilder": GearsBuilder,
    "GB": GB,
    "execute": execute,
    "atomic": atomic,
    "log": log,
    "hashtag": hashtag,
    "configGet": configGet,
    "gearsConfigGet": gearsConfigGet,
    "registerTE": registerTE,
    "override_reply": override_reply,
    "call_next": call_next,
    "get_command": get_command,
    "isAsyncAllow": isAsyncAllow,
    "runCoroutine": _background_only("runCoroutine"),
    "createFuture": _background_only("createFuture"),
    "setFutureResults": _background_only("setFutureResults"),
    "setFutureException": _background_only("setFutureException"),
    "gearsFuture": _background_only("gearsFuture"),
}

# What user code may not import: the ways back into JavaScript (and so to the host's Node).
_BLOCKED = ("js", "pyodide_js", "pyodide", "_pyodide", "_pyodide_core", "micropip")
_real_import = _builtins.__import__


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in _BLOCKED:
        raise ImportError(f"module '{name}' is not available to scripts")
    return _real_import(name, globals, locals, fromlist, level)


class _Refuse:
    # First on sys.meta_path: importlib.import_module() and the like do not bring `js` back.
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("js", "pyodide_js"):
            raise ImportError(f"module '{name}' is not available to scripts")
        return None


_sys.meta_path.insert(0, _Refuse)
_user_builtins = dict(vars(_builtins))
_user_builtins["__import__"] = _guarded_import
for _name in list(_sys.modules):
    if _name.split(".")[0] in ("js", "pyodide_js"):
        del _sys.modules[_name]

# The session's globals: its functions and variables live here between events.
_session_globals = dict(_API, __builtins__=_user_builtins, __name__="__main__")


def _gears_run_script(source):
    exec(compile(source, "script", "exec"), _session_globals)
