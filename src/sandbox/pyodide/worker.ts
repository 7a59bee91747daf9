/**
 * The Pyodide runtime's worker thread: CPython (WebAssembly) with the same message protocol
 * as the QuickJS worker (../protocol.ts), so the main thread's Isolate drives both alike.
 *
 * Beside Python, this thread's own V8 runs the JavaScript a library needs next to the Python
 * code (evalScript), with `__host` defined as in QuickJS. Python code is trusted code here:
 * Pyodide is not a sandbox (README, "Python"); this thread only keeps the limits.
 *
 * Limits: the deadline is watched by the main thread, which raises SIGINT in Pyodide's
 * interrupt buffer (CTL_INTERRUPT) and terminates the thread as the backstop; the
 * WebAssembly memory cannot grow past the cap, so Python gets MemoryError there.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, sep } from "node:path";
import { runInThisContext } from "node:vm";
import { getEnvironmentData, parentPort, threadId, workerData } from "node:worker_threads";
import { waitForReply } from "../reply-wait.js";
import {
  CTL_ABORT,
  CTL_DEADLINE_BYTE,
  CTL_INTERRUPT,
  CTL_SIGNAL,
  CTL_STATE,
  STATE_GUEST,
  STATE_HOST,
  STATE_IDLE,
  type AsyncReply,
  type EntryRequest,
  type FailureInfo,
  type SyncReply,
  type WorkerInit,
  type WorkerMessage,
  type WorkerRequest,
} from "../protocol.js";
import { abortedMessage, memoryMessage, stackMessage, timeoutMessage } from "../messages.js";
import {
  MODULE_KEY,
  PAGE_BYTES,
  SNAPSHOT_KEY,
  type CompiledPyodide,
  startRefusedMessage,
  totalMemoryMessage,
  type BudgetData,
} from "./shared.js";

if (parentPort === null) throw new Error("sandbox worker must run in a worker thread");
const port = parentPort;
const init = workerData as WorkerInit;
const ctl = new Int32Array(init.control, 0, 4);
const interruptBuffer = new Int32Array(init.control, CTL_INTERRUPT * 4, 1);
const deadlineSlot = new BigInt64Array(init.control, CTL_DEADLINE_BYTE, 1);

/** The interpreter's own memory (about 32 MB at start) comes on top of the script's limit. */
const PYODIDE_BASE_MB = 64;
const capBytes = (PYODIDE_BASE_MB + Math.floor(init.memoryLimitMb)) * 1024 * 1024;

// Pyodide's module defines its own WebAssembly memory with a 4 GB maximum and grows it from
// JavaScript (emscripten's growMemory): refusing growth past the cap is the hard maximum,
// and Python then raises MemoryError. Only Pyodide's memory lives in this thread.
// Beside this instance's cap, a growth must fit the budget of all the pool's instances
// (--python-max-memory), once the pool has bound this instance to it.
const grow = WebAssembly.Memory.prototype.grow;
/** Which cap refused a growth in the current entry. */
let capReached: "instance" | "total" | null = null;

interface Budget {
  pages: Int32Array;
  slot: number;
  capPages: number;
  capMb: number;
}
let budget: Budget | null = null;

WebAssembly.Memory.prototype.grow = function cappedGrow(this: WebAssembly.Memory, delta: number): number {
  if (this.buffer.byteLength + delta * PAGE_BYTES > capBytes) {
    capReached = "instance";
    throw new RangeError("WebAssembly memory cap reached");
  }
  const b = budget;
  if (b === null) return grow.call(this, delta);
  // Taken from the total first, so that two instances growing at once cannot both pass.
  if (b.capPages > 0 && Atomics.add(b.pages, 0, delta) + delta > b.capPages) {
    Atomics.sub(b.pages, 0, delta);
    capReached = "total";
    throw new RangeError("Python memory budget reached");
  }
  if (b.capPages === 0) Atomics.add(b.pages, 0, delta);
  try {
    const before = grow.call(this, delta);
    Atomics.add(b.pages, b.slot, delta);
    return before;
  } catch (e) {
    Atomics.sub(b.pages, 0, delta);
    throw e;
  }
};

class EntryFailure extends Error {
  constructor(readonly info: FailureInfo) {
    super(info.message);
  }
}

// --- deadline: reset for each call into user code, paused while the host answers -----------

let inGuest = false;
/** Why the current entry must end whatever the script caught: a limit was hit. */
let fatalKind: "timeout" | "memory" | "aborted" | undefined;

function setDeadline(): void {
  Atomics.store(deadlineSlot, 0, BigInt(Date.now() + init.timeoutMs));
}

function enterGuest(): void {
  setDeadline();
  inGuest = true;
  Atomics.store(ctl, CTL_STATE, STATE_GUEST);
}

function leaveGuest(): void {
  inGuest = false;
  Atomics.store(ctl, CTL_STATE, STATE_IDLE);
}

let seq = 0;

function hostRequest(
  request: { t: "sync"; name: string; argsJson: string } | { t: "async"; batchJson: string },
): {
  seq: number;
} {
  const wasInGuest = inGuest;
  const left = Number(Atomics.load(deadlineSlot, 0)) - Date.now();
  Atomics.store(ctl, CTL_STATE, STATE_HOST);
  Atomics.store(ctl, CTL_SIGNAL, 0);
  const mySeq = ++seq;
  port.postMessage({ ...request, seq: mySeq } satisfies WorkerMessage);
  const reply = waitForReply(ctl, init.replyPort, mySeq);
  if (wasInGuest) {
    Atomics.store(deadlineSlot, 0, BigInt(Date.now() + Math.max(0, left)));
    Atomics.store(ctl, CTL_STATE, STATE_GUEST);
  } else {
    Atomics.store(ctl, CTL_STATE, STATE_IDLE);
  }
  return reply;
}

// --- __host, as the QuickJS prelude defines it ---------------------------------------------

let asyncQueue: { name: string; args: unknown[]; settle: [(v: unknown) => void, (e: Error) => void] }[] = [];

const host = Object.freeze({
  callSync(name: string, ...args: unknown[]): unknown {
    const reply = hostRequest({ t: "sync", name: String(name), argsJson: JSON.stringify(args) }) as SyncReply;
    if (!reply.ok) throw new Error(reply.message);
    return JSON.parse(reply.json) as unknown;
  },
  callAsync(name: string, ...args: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      asyncQueue.push({ name: String(name), args, settle: [resolve, reject] });
    });
  },
  notify(name: string, ...args: unknown[]): void {
    port.postMessage({ t: "notify", json: JSON.stringify([[String(name), args]]) } satisfies WorkerMessage);
  },
});
Object.defineProperty(globalThis, "__host", { value: host, writable: false, configurable: false });

/** Sends the queued callAsync calls as one batch and settles their promises. */
function flushAsync(): boolean {
  if (asyncQueue.length === 0) return false;
  const batch = asyncQueue;
  asyncQueue = [];
  const reply = hostRequest({
    t: "async",
    batchJson: JSON.stringify(batch.map((c) => [c.name, c.args])),
  }) as AsyncReply;
  const outcomes = JSON.parse(reply.json) as [0 | 1, unknown][];
  batch.forEach((c, i) => {
    const [failed, value] = outcomes[i] ?? [1, "no result from the host"];
    if (failed === 0) c.settle[0](value);
    else c.settle[1](new Error(String(value)));
  });
  return true;
}

// --- what the Python library (src/gears/guest/python/) reaches of this thread -------------

/** The last line of a Python traceback: "ValueError: bad". */
function pythonErrorText(e: unknown): { type: string; text: string } {
  const o = e as { type?: unknown; message?: unknown };
  const message = typeof o?.message === "string" ? o.message : String(e);
  const lines = message.split("\n").filter((l) => l.trim() !== "");
  const last = lines[lines.length - 1] ?? message;
  return { type: typeof o?.type === "string" ? o.type : "Error", text: last };
}

function limitError(): Error {
  const e = new Error(limitMessage());
  // The guest libraries let errors named InternalError through (core/errors.ts, isFatal).
  e.name = "InternalError";
  return e;
}

function capMessage(): string {
  return capReached === "total" && budget !== null
    ? totalMemoryMessage(budget.capMb)
    : memoryMessage(init.memoryLimitMb);
}

function limitMessage(): string {
  if (fatalKind === "memory") return capMessage();
  if (fatalKind === "aborted") return abortedMessage();
  return timeoutMessage(init.timeoutMs);
}

/** The reply of the pipelined execute() of the step running now (runtime.keep). */
let sentReply: Promise<unknown> | undefined;

const runtime = Object.freeze({
  /**
   * A Python callable as a JavaScript function for a library: each call gets a full time
   * limit; a Python error becomes an Error with Python's own text; a limit ends the entry.
   */
  step(fn: (...args: unknown[]) => unknown, label: string): (...args: unknown[]) => unknown {
    const f = (...args: unknown[]): unknown => {
      setDeadline();
      try {
        return fn(...args);
      } catch (e) {
        if (fatalKind !== undefined) throw limitError();
        const { type, text } = pythonErrorText(e);
        const err = new Error(text.startsWith(`${type}: `) ? text.slice(type.length + 2) : text);
        err.name = type;
        throw err;
      }
    };
    Object.defineProperty(f, "toString", { value: () => label });
    return f;
  },
  /**
   * Counts this instance in its pool's memory budget (shared.ts) from now on; refused when
   * its memory would take the pool past the cap.
   */
  bindBudget(key: string, slot: number): null {
    const data = getEnvironmentData(key) as BudgetData | undefined;
    if (data === undefined) throw new Error(`no Python memory budget ${key} in this thread`);
    const pages = new Int32Array(data.buffer);
    const own = py._module.HEAP8.buffer.byteLength / PAGE_BYTES;
    const total = Atomics.add(pages, 0, own) + own;
    if (data.capPages > 0 && total > data.capPages) {
      Atomics.sub(pages, 0, own);
      throw new Error(startRefusedMessage(data.capMb, total - own, own));
    }
    Atomics.store(pages, slot, own);
    budget = { pages, slot, capPages: data.capPages, capMb: data.capMb };
    return null;
  },
  /**
   * Calls fn(...args), a JavaScript function that returns a promise (a pipelined execute()),
   * and keeps the promise for the step that pipelinedStep() runs: a promise that reached
   * Python would become a Python future there, settled by Pyodide's event loop, which does
   * not turn while an entry runs. A failure reads as a synchronous execute()'s does in
   * Python (`Exception: <the reply's error>`).
   */
  keep(fn: (...a: unknown[]) => PromiseLike<unknown>, ...args: unknown[]): void {
    sentReply = Promise.resolve(fn(...args)).then(undefined, (e: unknown) => {
      const err = new Error(e instanceof Error ? e.message : String(e));
      err.name = "Exception";
      throw err;
    });
  },
  /** step(), returning the reply keep() kept during the call (the library waits for it). */
  pipelinedStep(fn: (...args: unknown[]) => unknown, label: string): (...args: unknown[]) => unknown {
    const inner = runtime.step(fn, label);
    const f = (...args: unknown[]): unknown => {
      sentReply = undefined;
      inner(...args);
      const reply = sentReply;
      sentReply = undefined;
      return reply;
    };
    Object.defineProperty(f, "toString", { value: () => label });
    return f;
  },
  /**
   * Whether a record's `value` is read from Redis on first use (an event on a key too big
   * to send along): Python then converts it only when the script reads it.
   */
  lazyValue(record: unknown): boolean {
    if (record === null || typeof record !== "object") return false;
    return typeof Object.getOwnPropertyDescriptor(record, "value")?.get === "function";
  },
  /** Python hit a limit (KeyboardInterrupt from the interrupt buffer, or MemoryError). */
  fatal(kind: string): void {
    if (kind === "MemoryError") fatalKind = "memory";
    else if (Atomics.load(ctl, CTL_ABORT) !== 0) fatalKind = "aborted";
    else fatalKind = "timeout";
  },
});
Object.defineProperty(globalThis, "__pyrt", { value: runtime, writable: false, configurable: false });

// --- the interpreter -----------------------------------------------------------------------

interface PyodideLike {
  runPython(code: string, options?: { filename?: string }): unknown;
  setInterruptBuffer(buffer: Int32Array): void;
  makeMemorySnapshot(): Uint8Array;
  /** Emscripten's module: its heap view is over the interpreter's WebAssembly memory. */
  _module: { HEAP8: Int8Array };
}

let py: PyodideLike;

/**
 * The interpreter: restored from the memory snapshot cached under --data-dir (a fraction of
 * a cold start), or loaded cold, and then the snapshot written for the next ones. The
 * snapshot is the interpreter right after loading, before any code of ours or a user's ran.
 */
async function setUp(): Promise<void> {
  const require = createRequire(import.meta.url);
  // The package ships the interpreter and the standard library: nothing is fetched.
  const entry = require.resolve("pyodide/pyodide.mjs");
  const { loadPyodide } = (await import(entry)) as {
    loadPyodide(options: Record<string, unknown>): Promise<PyodideLike>;
  };
  const notify = (level: string) => (text: string) =>
    port.postMessage({ t: "notify", json: JSON.stringify([["log", [level, text]]]) } satisfies WorkerMessage);
  const options = {
    stdout: notify("notice"),
    stderr: notify("warning"),
    convertNullToNone: true,
    // Pyodide finds its files from its own stack frames, which source maps would rename.
    indexURL: dirname(entry) + sep,
    // No host directory is mounted, no environment passed on.
    env: { HOME: "/home/pyodide" },
  };
  const file = getEnvironmentData(SNAPSHOT_KEY) as string | undefined;
  const compiled = getEnvironmentData(MODULE_KEY) as CompiledPyodide | undefined;
  // The pool compiled the interpreter's WebAssembly once for the process: each instance
  // shares its machine code (compiled lazily, function by function, on first use) instead of
  // compiling it again, which costs a new instance most of its first second.
  const instantiate = WebAssembly.instantiate;
  if (compiled !== undefined) {
    WebAssembly.instantiate = async function sharedModule(source: unknown, imports?: WebAssembly.Imports) {
      const bytes = source as { byteLength?: number };
      if (source instanceof WebAssembly.Module || bytes.byteLength !== compiled.byteLength) {
        return instantiate(source as WebAssembly.Module, imports);
      }
      const instance = await instantiate(compiled.module, imports);
      return { instance, module: compiled.module };
    } as typeof WebAssembly.instantiate;
  }
  try {
    await loadInterpreter(loadPyodide, options, file);
  } finally {
    WebAssembly.instantiate = instantiate;
  }
  py.setInterruptBuffer(interruptBuffer);
}

async function loadInterpreter(
  loadPyodide: (options: Record<string, unknown>) => Promise<PyodideLike>,
  options: Record<string, unknown>,
  file: string | undefined,
): Promise<void> {
  let snapshot: Uint8Array | null = null;
  try {
    if (file !== undefined) snapshot = readFileSync(file);
  } catch {
    // None cached yet (or unreadable): load cold and write it.
  }
  if (snapshot !== null) {
    try {
      py = await loadPyodide({ ...options, _loadSnapshot: snapshot });
    } catch {
      // A snapshot of another Pyodide build, or a damaged file: load cold and write it again.
      snapshot = null;
    }
  }
  if (snapshot === null) {
    py = await loadPyodide({ ...options, _makeSnapshot: file !== undefined });
    if (file !== undefined) writeSnapshot(file, py.makeMemorySnapshot());
  }
}

/** Written aside and renamed, so that a reader never sees half a snapshot. */
function writeSnapshot(file: string, bytes: Uint8Array): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    const aside = `${file}.${process.pid}.${threadId}.tmp`;
    writeFileSync(aside, bytes);
    renameSync(aside, file);
  } catch (e) {
    port.postMessage({
      t: "notify",
      json: JSON.stringify([
        ["log", ["warning", `could not cache the Python snapshot at ${file}: ${String(e)}`]],
      ]),
    } satisfies WorkerMessage);
  }
}

// --- entries -------------------------------------------------------------------------------

function classify(e: unknown, compiling: boolean): FailureInfo {
  if (fatalKind !== undefined) return { kind: fatalKind, message: limitMessage() };
  if (capReached !== null) return { kind: "memory", message: capMessage() };
  const { type, text } = pythonErrorText(e);
  if (type === "RecursionError") return { kind: "stack", message: `${stackMessage()}: ${text}` };
  if (type === "KeyboardInterrupt") {
    fatalKind = Atomics.load(ctl, CTL_ABORT) !== 0 ? "aborted" : "timeout";
    return { kind: fatalKind, message: limitMessage() };
  }
  if (type === "MemoryError") return { kind: "memory", message: capMessage() };
  const kind = compiling || type === "SyntaxError" || type === "IndentationError" ? "syntax" : "throw";
  // The innermost frame of the user's script (compiled as "script").
  const lines = [
    ...String((e as { message?: unknown })?.message ?? "").matchAll(/File "script", line (\d+)/g),
  ];
  const m = lines[lines.length - 1];
  return { kind, message: text, line: m === undefined ? undefined : Number(m[1]) };
}

function invoke(path: string, args: unknown[]): unknown {
  let self: unknown = globalThis;
  let fn: unknown = globalThis;
  for (const part of path.split(".")) {
    if (fn === null || fn === undefined) break;
    self = fn;
    fn = (fn as Record<string, unknown>)[part];
  }
  if (typeof fn !== "function") throw new TypeError(`${path} is not a function`);
  return Reflect.apply(fn as (...a: unknown[]) => unknown, self, args);
}

async function settle(value: unknown): Promise<unknown> {
  let done = false;
  let out: unknown;
  let failure: unknown;
  let failed = false;
  Promise.resolve(value).then(
    (v) => {
      done = true;
      out = v;
    },
    (e: unknown) => {
      done = true;
      failed = true;
      failure = e;
    },
  );
  for (;;) {
    // Let the promise chain run, then answer the async calls it made.
    await new Promise<void>((r) => setImmediate(r));
    if (done) break;
    if (!flushAsync()) {
      await new Promise<void>((r) => setImmediate(r));
      if (!done && asyncQueue.length === 0) {
        throw new EntryFailure({
          kind: "throw",
          message: "Error: the script awaits a promise that can never settle",
        });
      }
    }
  }
  if (failed) throw failure;
  return out;
}

async function runEntry(req: EntryRequest): Promise<WorkerMessage> {
  fatalKind = undefined;
  capReached = null;
  Atomics.store(interruptBuffer, 0, 0);
  enterGuest();
  try {
    if (Atomics.load(ctl, CTL_ABORT) !== 0)
      throw new EntryFailure({ kind: "aborted", message: abortedMessage() });
    let value: unknown;
    if (req.op === "evalPython") {
      try {
        value = py.runPython(req.source, { filename: req.filename });
      } catch (e) {
        throw new EntryFailure(classify(e, false));
      }
      value = null;
    } else if (req.op === "eval") {
      value = runInThisContext(req.source, { filename: req.filename });
    } else if (req.op === "call") {
      value = invoke(req.path, JSON.parse(req.argsJson) as unknown[]);
    } else {
      throw new EntryFailure({ kind: "throw", message: "Error: the Pyodide isolate reads no binary format" });
    }
    if (value !== null && typeof value === "object" && "then" in value) value = await settle(value);
    if (fatalKind !== undefined || capReached !== null) throw new EntryFailure(classify(null, false));
    const json = JSON.stringify(value === undefined ? null : value);
    return { t: "done", ok: true, json: json === undefined ? "null" : json };
  } catch (e) {
    const info = e instanceof EntryFailure ? e.info : classify(e, false);
    // A limit leaves the interpreter in doubt (half-built objects, a heap at its cap): the
    // main thread ends this worker and its owner starts another.
    const fatal = info.kind === "timeout" || info.kind === "memory" || info.kind === "aborted";
    return { t: "done", ok: false, failure: info, fatal };
  } finally {
    leaveGuest();
    asyncQueue = [];
  }
}

let chain = Promise.resolve();

function onRequest(req: WorkerRequest): void {
  // Isolate.renewOnDispose never renews a Pyodide thread: renew ends it like dispose.
  if (req.op === "dispose" || req.op === "renew") process.exit(0);
  chain = chain.then(async () => port.postMessage(await runEntry(req)));
}

try {
  await setUp();
  port.on("message", onRequest);
  port.postMessage({ t: "ready", binary: false } satisfies WorkerMessage);
} catch (e) {
  port.postMessage({
    t: "initError",
    message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
  } satisfies WorkerMessage);
}
