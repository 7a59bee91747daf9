/**
 * Worker thread of one Isolate: one capped QuickJS wasm module, one runtime, one context.
 * Everything here is synchronous: an entry runs to its end, and every wait for the host
 * (callSync, a batch of callAsync) blocks this thread in Atomics.wait until the main thread
 * answers on the reply port. The time spent waiting does not count against the deadline.
 */
import { parentPort, workerData } from "node:worker_threads";
import { newQuickJSWASMModuleFromVariant, newVariant, RELEASE_SYNC } from "quickjs-emscripten";
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from "quickjs-emscripten";
import { waitForAnswer, waitForReply } from "./reply-wait.js";
import {
  CTL_ABORT,
  CTL_DEADLINE_BYTE,
  CTL_LIMITS_BYTE,
  CTL_SIGNAL,
  CTL_STATE,
  STATE_GUEST,
  STATE_HOST,
  STATE_IDLE,
  LIMIT_ALLOWED_MB,
  LIMIT_TIMEOUT_MS,
  LIMIT_USED_KB,
  REPLY_LENGTH,
  REPLY_TEXT_BYTE,
  type AsyncReply,
  type EntryRequest,
  type FailureInfo,
  type SyncReply,
  type WorkerInit,
  type WorkerMessage,
  type WorkerRequest,
} from "./protocol.js";
import { PRELUDE_FILENAME, PRELUDE_SOURCE } from "./prelude.js";
import { abortedMessage, memoryMessage, stackMessage, timeoutMessage } from "./messages.js";
import { BJSON_PROBE, encodeBinary } from "./bjson.js";

/** QuickJS's own stack limit; safe with the worker's 32 MB native stack (reference §0.2). */
const MAX_STACK_BYTES = 1024 * 1024;
/** Budget for reading an error object (its getters are guest code) once the entry's is spent. */
const DESCRIBE_BUDGET_MS = 100;

if (parentPort === null) throw new Error("sandbox worker must run in a worker thread");
const port = parentPort;
const init = workerData as WorkerInit;
const ctl = new Int32Array(init.control, 0, 3);
const deadlineSlot = new BigInt64Array(init.control, CTL_DEADLINE_BYTE, 1);
const liveLimits = new Int32Array(init.control, CTL_LIMITS_BYTE, 3);
/** Where answers that fit come (protocol.ts, SIGNAL_AREA): the area and its Int32 header. */
const replyArea =
  init.replyArea === undefined
    ? null
    : { bytes: init.replyArea, header: new Int32Array(init.replyArea, 0, 2) };

/** The time limit now: the main thread may change it between entries. */
function timeoutMs(): number {
  return Atomics.load(liveLimits, LIMIT_TIMEOUT_MS) || init.timeoutMs;
}

/** Tells the main thread how large the memory is now. */
function reportMemory(): void {
  Atomics.store(liveLimits, LIMIT_USED_KB, Math.ceil(wasmMemory.buffer.byteLength / 1024));
}

/** Whether the memory grew past what the main thread allows now (a cap shared with other isolates). */
function overAllowance(): boolean {
  const allowedMb = Atomics.load(liveLimits, LIMIT_ALLOWED_MB);
  return allowedMb > 0 && wasmMemory.buffer.byteLength > allowedMb * 1024 * 1024;
}

/** A guest-side failure of an entry: the isolate stays usable. */
class EntryFailure extends Error {
  constructor(readonly info: FailureInfo) {
    super(info.message);
  }
}

// --- deadline accounting -------------------------------------------------------------------

let inSegment = false;
let deadline = Infinity;
let remaining = 0;
let interruptReason: "timeout" | "aborted" | "memory" | undefined;

function beginSegment(): void {
  deadline = Date.now() + remaining;
  Atomics.store(deadlineSlot, 0, BigInt(Math.ceil(deadline)));
  inSegment = true;
  Atomics.store(ctl, CTL_STATE, STATE_GUEST);
}

function endSegment(): void {
  if (!inSegment) return;
  remaining = Math.max(0, deadline - Date.now());
  inSegment = false;
  deadline = Infinity;
  Atomics.store(ctl, CTL_STATE, STATE_IDLE);
}

/** The guest's step counter (prelude's __steps) as last seen by the interrupt handler. */
let stepsSeen = 0;

/** Reads __steps[0]: a plain typed-array element, no guest code runs. */
function readSteps(): number {
  const h = ctx.getProp(fns.steps, 0);
  const n = ctx.getNumber(h);
  h.dispose();
  return n;
}

function interruptHandler(): boolean {
  if (!inSegment) return false;
  if (Atomics.load(ctl, CTL_ABORT) !== 0) {
    interruptReason ??= "aborted";
    return true;
  }
  if (overAllowance()) {
    interruptReason ??= "memory";
    return true;
  }
  const steps = readSteps();
  if (steps !== stepsSeen) {
    // A new call into user code started since the last look: it gets a full time limit.
    stepsSeen = steps;
    deadline = Date.now() + timeoutMs();
    Atomics.store(deadlineSlot, 0, BigInt(Math.ceil(deadline)));
    return false;
  }
  if (Date.now() > deadline) {
    interruptReason ??= "timeout";
    return true;
  }
  return false;
}

// --- host requests ---------------------------------------------------------------------------

let seq = 0;

type HostRequest = { t: "sync"; name: string; argsJson: string } | { t: "async"; batchJson: string };

/**
 * Sends a host request and blocks until its answer: its text as a guest string (a sync one
 * marked "0" for a value, "1" for an error message).
 */
function hostRequest(request: HostRequest): QuickJSHandle {
  const wasInSegment = inSegment;
  endSegment();
  Atomics.store(ctl, CTL_STATE, STATE_HOST);
  Atomics.store(ctl, CTL_SIGNAL, 0);
  const mySeq = ++seq;
  port.postMessage({ ...request, seq: mySeq } satisfies WorkerMessage);
  const area = replyArea;
  const reply =
    area === null
      ? waitForReply(ctl, init.replyPort, mySeq)
      : waitForAnswer(ctl, init.replyPort, area.header, mySeq);
  Atomics.store(ctl, CTL_STATE, STATE_IDLE);
  if (wasInSegment) beginSegment();
  if (reply === null && area !== null) return areaText(area.bytes, area.header[REPLY_LENGTH]);
  if (reply === null) throw new Error("an answer in a reply area this worker does not have");
  if (request.t === "async") return newText((reply as AsyncReply).json);
  const sync = reply as SyncReply;
  return newText(sync.ok ? "0" + sync.json : "1" + sync.message);
}

// --- the isolate -----------------------------------------------------------------------------

interface Helpers {
  /** The prelude's __steps Float64Array. */
  steps: QuickJSHandle;
  call: QuickJSHandle;
  callAt: QuickJSHandle;
  start: QuickJSHandle;
  state: QuickJSHandle;
  finish: QuickJSHandle;
  describe: QuickJSHandle;
  takeNotes: QuickJSHandle;
  takeBatch: QuickJSHandle;
  deliver: QuickJSHandle;
  reset: QuickJSHandle;
}

let wasmMemory: WebAssembly.Memory;
/** Set when the heap could not grow past its cap during the current entry. */
let capReached = false;
let rt: QuickJSRuntime;
let ctx: QuickJSContext;
let internal: QuickJSHandle;
let fns: Helpers;
let broken = false;

function quickjsWasm(): WebAssembly.Module {
  if (init.wasmModule === undefined) throw new Error("the QuickJS worker needs its wasm module");
  return init.wasmModule;
}

async function setUp(): Promise<void> {
  const limitMb = Math.max(16, Math.floor(init.memoryLimitMb));
  wasmMemory = new WebAssembly.Memory({ initial: 256, maximum: limitMb * 16 });
  // Emscripten grows the heap through this object; a refused growth means the script hit its cap.
  const grow = wasmMemory.grow.bind(wasmMemory);
  wasmMemory.grow = (pages: number): number => {
    try {
      return grow(pages);
    } catch (err) {
      capReached = true;
      throw err;
    }
  };
  const mod = await newQuickJSWASMModuleFromVariant(
    newVariant(RELEASE_SYNC, { wasmModule: quickjsWasm(), wasmMemory }),
  );
  rt = mod.newRuntime();
  rt.setMemoryLimit(limitMb * 1024 * 1024);
  rt.setMaxStackSize(MAX_STACK_BYTES);
  rt.setInterruptHandler(interruptHandler);
  ctx = rt.newContext();
  binary = probeBinary();

  const rawSync = ctx.newFunction("callSync", (nameH, argsH) =>
    hostRequest({ t: "sync", name: ctx.getString(nameH), argsJson: ctx.getString(argsH) }),
  );
  const rawNotify = ctx.newFunction("notify", (jsonH) => {
    port.postMessage({ t: "notify", json: ctx.getString(jsonH) } satisfies WorkerMessage);
  });
  const factory = ctx.unwrapResult(ctx.evalCode(PRELUDE_SOURCE, PRELUDE_FILENAME));
  internal = ctx.unwrapResult(ctx.callFunction(factory, ctx.undefined, rawSync, rawNotify));
  factory.dispose();
  rawSync.dispose();
  rawNotify.dispose();
  const get = (name: string): QuickJSHandle => ctx.getProp(internal, name);
  fns = {
    steps: get("steps"),
    call: get("call"),
    callAt: get("callAt"),
    start: get("start"),
    state: get("state"),
    finish: get("finish"),
    describe: get("describe"),
    takeNotes: get("takeNotes"),
    takeBatch: get("takeBatch"),
    deliver: get("deliver"),
    reset: get("reset"),
  };
}

/** The parts of quickjs-emscripten's context that newString() goes through. */
interface ContextInternals {
  module: { _malloc(bytes: number): number; _free(ptr: number): void };
  ffi: {
    QTS_NewString(ctx: unknown, ptr: number): number;
    QTS_NewArrayBuffer(ctx: unknown, ptr: number, length: number): number;
    QTS_ResolveException(ctx: unknown, value: unknown): number;
  };
  ctx: { value: unknown };
  memory: { heapValueHandle(ptr: number): QuickJSHandle };
}

const encoder = new TextEncoder();
/** Below this, ctx.newString() is as quick. */
const FAST_STRING_CHARS = 1024;

/**
 * ctx.newString() for large texts (batches of records, replies): the library encodes UTF-8
 * into the wasm heap in a JS loop, about 2 µs per record of a batch; encodeInto does it
 * natively. Same C call underneath, same resulting string.
 */
function newText(text: string): QuickJSHandle {
  if (text.length < FAST_STRING_CHARS) return ctx.newString(text);
  const c = ctx as unknown as ContextInternals;
  if (typeof c.module?._malloc !== "function" || typeof c.ffi?.QTS_NewString !== "function") {
    return ctx.newString(text);
  }
  const bytes = Buffer.byteLength(text, "utf8");
  const ptr = c.module._malloc(bytes + 1);
  if (ptr === 0) return ctx.newString(text);
  try {
    const heap = new Uint8Array(wasmMemory.buffer, ptr, bytes + 1);
    const { written } = encoder.encodeInto(text, heap);
    heap[written] = 0;
    return c.memory.heapValueHandle(c.ffi.QTS_NewString(c.ctx.value, ptr));
  } finally {
    c.module._free(ptr);
  }
}

/**
 * The answer in the reply area as a guest string: its UTF-8 bytes copied into the guest's heap
 * as they are, never decoded into a string of this thread and encoded again.
 */
function areaText(area: SharedArrayBuffer, n: number): QuickJSHandle {
  const bytes = new Uint8Array(area, REPLY_TEXT_BYTE, n);
  const c = ctx as unknown as ContextInternals;
  const fallback = (): QuickJSHandle => ctx.newString(Buffer.from(area, REPLY_TEXT_BYTE, n).toString());
  if (typeof c.module?._malloc !== "function" || typeof c.ffi?.QTS_NewString !== "function")
    return fallback();
  const ptr = c.module._malloc(n + 1);
  if (ptr === 0) return fallback();
  try {
    const heap = new Uint8Array(wasmMemory.buffer, ptr, n + 1);
    heap.set(bytes);
    heap[n] = 0;
    return c.memory.heapValueHandle(c.ffi.QTS_NewString(c.ctx.value, ptr));
  } finally {
    c.module._free(ptr);
  }
}

/**
 * A value in the binary object format, decoded in the guest. Running out of the isolate's
 * memory on the way is the script's memory error, as it would be while parsing JSON.
 */
function decodeBinary(bytes: Uint8Array): QuickJSHandle {
  const c = ctx as unknown as ContextInternals;
  const outOfMemory = (): EntryFailure =>
    new EntryFailure({ kind: "memory", message: memoryMessage(init.memoryLimitMb) });
  const ptr = c.module._malloc(Math.max(1, bytes.length));
  if (ptr === 0) throw outOfMemory();
  new Uint8Array(wasmMemory.buffer, ptr, bytes.length).set(bytes);
  // The ArrayBuffer takes the allocation over (as ctx.newArrayBuffer() has it do).
  const buffer = c.memory.heapValueHandle(c.ffi.QTS_NewArrayBuffer(c.ctx.value, ptr, bytes.length));
  const value = buffer.consume((b) => ctx.decodeBinaryJSON(b));
  const errorPtr = c.ffi.QTS_ResolveException(c.ctx.value, value.value);
  if (errorPtr === 0) return value;
  value.dispose();
  const failure = failureOf(c.memory.heapValueHandle(errorPtr));
  throw capReached ? outOfMemory() : failure;
}

/** Whether this QuickJS writes (and so reads) the probe exactly as bjson.ts writes it. */
let binary = false;

function probeBinary(): boolean {
  const c = ctx as unknown as Partial<ContextInternals>;
  const internals =
    typeof c.module?._malloc === "function" &&
    typeof c.ffi?.QTS_NewArrayBuffer === "function" &&
    typeof c.ffi.QTS_ResolveException === "function" &&
    typeof c.memory?.heapValueHandle === "function";
  if (!internals) return false;
  const handles: { dispose(): void; alive: boolean }[] = [];
  try {
    const value = ctx.unwrapResult(ctx.evalCode(`(${JSON.stringify(BJSON_PROBE)})`, "<probe>"));
    handles.push(value);
    const encoded = ctx.encodeBinaryJSON(value);
    handles.push(encoded);
    const bytes = ctx.getArrayBuffer(encoded);
    const theirs = Buffer.from(bytes.value);
    bytes.dispose();
    return theirs.equals(encodeBinary(BJSON_PROBE));
  } catch {
    return false;
  } finally {
    for (const h of handles) if (h.alive) h.dispose();
  }
}

function tearDown(): void {
  for (const h of Object.values(fns)) h.dispose();
  internal.dispose();
  ctx.dispose();
  rt.dispose();
}

// --- errors ----------------------------------------------------------------------------------

type Described =
  { e: 1; name: string; message: string; stack: string; line: number } | { e: 0; text: string };

function scriptLine(stack: string): number | undefined {
  const m = /(?:^|[\s(])script:(\d+)/m.exec(stack);
  return m ? Number(m[1]) : undefined;
}

function interruptInfo(): FailureInfo {
  if (interruptReason === "aborted") return { kind: "aborted", message: abortedMessage() };
  if (interruptReason === "memory") return { kind: "memory", message: memoryMessage(init.memoryLimitMb) };
  return { kind: "timeout", message: timeoutMessage(timeoutMs()) };
}

function classify(d: Described, compiling: boolean): FailureInfo {
  if (d.e === 0) {
    // QuickJS throws null when it cannot even allocate its "out of memory" error.
    if (d.text === "null" && (capReached || memoryNearlyFull())) {
      return { kind: "memory", message: memoryMessage(init.memoryLimitMb) };
    }
    return { kind: "throw", message: d.text };
  }
  const line = scriptLine(d.stack);
  if (d.name === "InternalError" && d.message === "out of memory") {
    return { kind: "memory", message: memoryMessage(init.memoryLimitMb) };
  }
  if (
    d.message === "stack overflow" ||
    (d.name === "RangeError" && /Maximum call stack size exceeded/.test(d.message))
  ) {
    return { kind: "stack", message: stackMessage(), line };
  }
  if (compiling && d.name === "SyntaxError") {
    return { kind: "syntax", message: `SyntaxError: ${d.message}`, line };
  }
  return { kind: "throw", message: `${d.name}: ${d.message}`, line };
}

function memoryNearlyFull(): boolean {
  const maxBytes = Math.max(16, Math.floor(init.memoryLimitMb)) * 1024 * 1024;
  return wasmMemory.buffer.byteLength >= maxBytes - 1024 * 1024;
}

/** Turns a guest error value into an EntryFailure; disposes the handle. */
function failureOf(errH: QuickJSHandle, compiling = false): EntryFailure {
  try {
    if (interruptReason) return new EntryFailure(interruptInfo());
    remaining = Math.max(remaining, DESCRIBE_BUDGET_MS);
    beginSegment();
    let r;
    try {
      r = ctx.callFunction(fns.describe, ctx.undefined, errH);
    } finally {
      endSegment();
    }
    if (r.error) {
      r.error.dispose();
      if (interruptReason) return new EntryFailure(interruptInfo());
      if (memoryNearlyFull())
        return new EntryFailure({ kind: "memory", message: memoryMessage(init.memoryLimitMb) });
      return new EntryFailure({ kind: "throw", message: "Error: (the error could not be read)" });
    }
    const text = ctx.getString(r.value);
    r.value.dispose();
    return new EntryFailure(classify(JSON.parse(text) as Described, compiling));
  } finally {
    errH.dispose();
  }
}

function fatalInfo(e: unknown): FailureInfo {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  if (e instanceof RangeError && /call stack/i.test(e.message))
    return { kind: "stack", message: stackMessage() };
  if (/out of memory|OOM|Cannot enlarge memory|memory access out of bounds/i.test(text)) {
    return { kind: "memory", message: memoryMessage(init.memoryLimitMb) };
  }
  return { kind: "terminated", message: `the isolate failed: ${text}` };
}

// --- entries ---------------------------------------------------------------------------------

let owned: QuickJSHandle[] = [];

function own(h: QuickJSHandle): QuickJSHandle {
  owned.push(h);
  return h;
}

function checkInterrupt(): void {
  if (interruptReason) throw new EntryFailure(interruptInfo());
}

/** Calls an internal helper in a guest segment; a guest error becomes an EntryFailure. */
function enter(fn: QuickJSHandle, ...args: QuickJSHandle[]): QuickJSHandle {
  beginSegment();
  let r;
  try {
    r = ctx.callFunction(fn, ctx.undefined, ...args);
  } finally {
    endSegment();
  }
  if (r.error) throw failureOf(r.error);
  own(r.value);
  checkInterrupt();
  return r.value;
}

function evaluate(source: string, filename: string, compileOnly: boolean): QuickJSHandle {
  beginSegment();
  let r;
  try {
    r = ctx.evalCode(source, filename, compileOnly ? { compileOnly: true } : undefined);
  } finally {
    endSegment();
  }
  if (r.error) throw failureOf(r.error, compileOnly);
  own(r.value);
  checkInterrupt();
  return r.value;
}

function runJobs(failAlone = false): void {
  beginSegment();
  let r;
  try {
    r = rt.executePendingJobs(-1);
  } finally {
    endSegment();
  }
  if (r.error) throw failureOf(r.error);
  if (failAlone && interruptReason === "timeout") {
    // The job that overran was ended inside its async function, whose Promise QuickJS
    // rejected ("interrupted": the guest answers that call with the time-limit error), and
    // the other jobs ran on. They go on with a full time limit.
    interruptReason = undefined;
    remaining = timeoutMs();
    return;
  }
  checkInterrupt();
}

function flushNotes(): void {
  // Internal code only (no guest callbacks): runs outside a segment.
  const r = ctx.callFunction(fns.takeNotes, ctx.undefined);
  if (r.error) {
    r.error.dispose();
    return;
  }
  const json = ctx.getString(r.value);
  r.value.dispose();
  if (json !== "") port.postMessage({ t: "notify", json } satisfies WorkerMessage);
}

function abortRequested(): boolean {
  return Atomics.load(ctl, CTL_ABORT) !== 0;
}

function runEntry(req: EntryRequest): WorkerMessage {
  owned = [];
  interruptReason = undefined;
  remaining = timeoutMs();
  capReached = false;
  let fatal = false;
  try {
    if (abortRequested()) throw new EntryFailure({ kind: "aborted", message: abortedMessage() });
    let first: QuickJSHandle;
    if (req.op === "eval") {
      evaluate(req.source, req.filename, true);
      first = evaluate(req.source, req.filename, false);
    } else if (req.op === "call") {
      first = enter(fns.call, own(ctx.newString(req.path)), own(newText(req.argsJson)));
    } else if (req.op === "evalPython") {
      throw new EntryFailure({ kind: "throw", message: "Error: this isolate runs JavaScript, not Python" });
    } else {
      const value = own(decodeBinary(req.bytes));
      first = enter(
        fns.callAt,
        own(ctx.newString(req.path)),
        own(newText(req.argsJson)),
        own(ctx.newNumber(req.index)),
        value,
      );
    }
    const rec = enter(fns.start, first);
    const jobsFailAlone = req.op === "call" && req.jobsFailAlone === true;
    for (;;) {
      runJobs(jobsFailAlone);
      flushNotes();
      const batch = ctx.getString(enter(fns.takeBatch));
      if (batch !== "") {
        enter(fns.deliver, own(hostRequest({ t: "async", batchJson: batch })));
        continue;
      }
      if (ctx.getNumber(enter(fns.state, rec)) !== 0) break;
      throw new EntryFailure({
        kind: "throw",
        message: "Error: the script awaits a promise that can never settle",
      });
    }
    const out = ctx.getString(enter(fns.finish, rec));
    if (abortRequested()) throw new EntryFailure({ kind: "aborted", message: abortedMessage() });
    // Reaching the memory cap ends the entry even when the script caught the error.
    if (capReached) {
      throw new EntryFailure({ kind: "memory", message: memoryMessage(init.memoryLimitMb) });
    }
    if (out[0] === "0") return { t: "done", ok: true, json: out.slice(1) };
    throw new EntryFailure(classify(JSON.parse(out.slice(1)) as Described, false));
  } catch (e) {
    if (e instanceof EntryFailure) {
      const r = ctx.callFunction(fns.reset, ctx.undefined);
      if (r.error) r.error.dispose();
      else r.value.dispose();
      return { t: "done", ok: false, failure: e.info, fatal: false };
    }
    fatal = true;
    broken = true;
    return { t: "done", ok: false, failure: fatalInfo(e), fatal: true };
  } finally {
    reportMemory();
    inSegment = false;
    deadline = Infinity;
    Atomics.store(ctl, CTL_STATE, STATE_IDLE);
    if (!fatal) {
      for (const h of owned) if (h.alive) h.dispose();
      try {
        flushNotes();
      } catch {
        // nothing more to report
      }
    }
    owned = [];
  }
}

/**
 * The isolate's thread passes to a new isolate: the runtime and wasm instance go (their memory
 * with the instance, once this thread's V8 collects it) and fresh ones are made, as at start.
 */
async function renew(): Promise<void> {
  try {
    tearDown();
    capReached = false;
    interruptReason = undefined;
    stepsSeen = 0;
    remaining = 0;
    await setUp();
    reportMemory();
    port.postMessage({ t: "ready", binary } satisfies WorkerMessage);
  } catch (e) {
    broken = true;
    port.postMessage({
      t: "initError",
      message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
    } satisfies WorkerMessage);
  }
}

function onRequest(req: WorkerRequest): void {
  if (req.op === "renew" && !broken) {
    void renew();
    return;
  }
  if (req.op === "dispose" || req.op === "renew") {
    if (!broken) {
      try {
        tearDown();
      } catch {
        // A leak assertion or a broken runtime: the thread ends anyway.
      }
    }
    process.exit(0);
  }
  if (broken) {
    port.postMessage({
      t: "done",
      ok: false,
      failure: { kind: "terminated", message: "the isolate is broken" },
      fatal: true,
    } satisfies WorkerMessage);
    return;
  }
  let result: WorkerMessage;
  try {
    result = runEntry(req);
  } catch (e) {
    broken = true;
    result = { t: "done", ok: false, failure: fatalInfo(e), fatal: true };
  }
  port.postMessage(result);
}

try {
  await setUp();
  port.on("message", onRequest);
  reportMemory();
  port.postMessage({ t: "ready", binary } satisfies WorkerMessage);
} catch (e) {
  port.postMessage({
    t: "initError",
    message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
  } satisfies WorkerMessage);
}
