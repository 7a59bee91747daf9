/**
 * Worker thread of one Isolate: one capped QuickJS wasm module, one runtime, one context.
 * Everything here is synchronous: an entry runs to its end, and every wait for the host
 * (callSync, a batch of callAsync) blocks this thread in Atomics.wait until the main thread
 * answers on the reply port. The time spent waiting does not count against the deadline.
 * A resumable call's entry (CallOptions.resumable) may stop waiting for a round of callAsync
 * calls instead: the round is parked (the guest keeps its promises), the entry ends, and a
 * "resume" entry hands the round's answer over later, with other entries run in between.
 * A round's answer may also leave some of its calls for later (LATER_PART: a host call that
 * waits for an event): the others settle at once, the round stays parked for the rest, and
 * each of those comes in a "resume" entry of its own when it is in.
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
  DETACHED,
  type AsyncReply,
  type AsyncWait,
  type EntryRequest,
  type FailureInfo,
  type SettledCall,
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

/** The seq of the last host request (a round of callAsync calls to park is known by it). */
let seq = 0;

type HostRequest =
  { t: "sync"; name: string; argsJson: string } | { t: "async"; batchJson: string; wait?: AsyncWait };

/**
 * Sends a host request and blocks until its answer: its text as a guest string (a sync one
 * marked "0" for a value, "1" for an error message). null for a round of callAsync calls
 * whose answer comes in a "resume" entry instead: sent "detached", or "yieldable" and
 * answered DETACHED.
 */
function hostRequest(request: HostRequest): QuickJSHandle | null {
  const wasInSegment = inSegment;
  endSegment();
  const mySeq = ++seq;
  if (request.t === "async" && request.wait === "detached") {
    port.postMessage({ ...request, seq: mySeq } satisfies WorkerMessage);
    if (wasInSegment) beginSegment();
    return null;
  }
  Atomics.store(ctl, CTL_STATE, STATE_HOST);
  Atomics.store(ctl, CTL_SIGNAL, 0);
  port.postMessage({ ...request, seq: mySeq } satisfies WorkerMessage);
  const area = replyArea;
  const reply =
    area === null
      ? waitForReply(ctl, init.replyPort, mySeq)
      : waitForAnswer(ctl, init.replyPort, area.header, mySeq);
  Atomics.store(ctl, CTL_STATE, STATE_IDLE);
  if (wasInSegment) beginSegment();
  if (reply === null && area !== null) {
    const n = area.header[REPLY_LENGTH];
    // An async answer is a JSON list: only DETACHED is empty.
    if (request.t === "async" && n === 0) return null;
    return areaText(area.bytes, n);
  }
  if (reply === null) throw new Error("an answer in a reply area this worker does not have");
  if (request.t === "async") {
    const json = (reply as AsyncReply).json;
    return json === DETACHED ? null : newText(json);
  }
  const sync = reply as SyncReply;
  return newText(sync.ok ? "0" + sync.json : "1" + sync.message);
}

/** hostRequest() of a request that is always answered (a sync one, or a round waited for). */
function answered(request: HostRequest): QuickJSHandle {
  const h = hostRequest(request);
  if (h === null) throw new Error("a host request that must be answered was not");
  return h;
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
  park: QuickJSHandle;
  resume: QuickJSHandle;
  resumePart: QuickJSHandle;
  reset: QuickJSHandle;
  resetAll: QuickJSHandle;
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
    answered({ t: "sync", name: ctx.getString(nameH), argsJson: ctx.getString(argsH) }),
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
    park: get("park"),
    resume: get("resume"),
    resumePart: get("resumePart"),
    reset: get("reset"),
    resetAll: get("resetAll"),
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

const NEVER_SETTLES: FailureInfo = {
  kind: "throw",
  message: "Error: the script awaits a promise that can never settle",
};

/** Resumable calls whose entry ended before their Promise settled: their start() records, by id. */
const openCalls = new Map<number, QuickJSHandle>();
/**
 * Rounds of callAsync calls whose answers, or some of them (LATER_PART), come in a "resume"
 * entry (the prelude keeps their promises).
 */
const parkedRounds = new Set<number>();

/** A resumable entry: it may end while its guest awaits host calls, once it has run `budgetMs`. */
interface Resumable {
  budgetMs: number;
  startedAt: number;
}

/**
 * Runs the guest's pending jobs and its rounds of callAsync calls until `rec` settles (null:
 * until none is left). A resumable entry stops at a round whose answer comes later (parked),
 * or when `rec` awaits only parked rounds; any other entry waits for every answer until its
 * `rec` settled (the answers of the rounds it sends after that may come in parts).
 */
function drive(rec: QuickJSHandle | null, failAlone: boolean, resumable: Resumable | null): void {
  for (;;) {
    runJobs(failAlone);
    flushNotes();
    const batch = ctx.getString(enter(fns.takeBatch));
    if (batch !== "") {
      let wait: AsyncWait | undefined;
      if (resumable !== null)
        wait = Date.now() - resumable.startedAt >= resumable.budgetMs ? "detached" : "yieldable";
      else if (rec !== null && ctx.getNumber(enter(fns.state, rec)) !== 0) wait = "parts";
      const answer = hostRequest({ t: "async", batchJson: batch, wait });
      const round = seq;
      if (answer !== null) {
        // Calls whose answers come later (LATER_PART): their round waits for them, parked.
        if (ctx.getNumber(enter(fns.deliver, own(answer))) > 0) {
          parkedRounds.add(round);
          enter(fns.park, own(ctx.newNumber(round)));
        }
        continue;
      }
      parkedRounds.add(round);
      enter(fns.park, own(ctx.newNumber(round)));
      return;
    }
    if (rec === null || ctx.getNumber(enter(fns.state, rec)) !== 0) return;
    if (resumable !== null && parkedRounds.size > 0) return;
    throw new EntryFailure(NEVER_SETTLES);
  }
}

/** The outcome of a settled start() record: its JSON, or the failure it rejected with. */
function outcomeOf(rec: QuickJSHandle): { ok: true; json: string } | { ok: false; failure: FailureInfo } {
  const out = ctx.getString(enter(fns.finish, rec));
  if (out[0] === "0") return { ok: true, json: out.slice(1) };
  return { ok: false, failure: classify(JSON.parse(out.slice(1)) as Described, false) };
}

/**
 * The open calls that settled by now, after an entry. Those left with no parked round (no
 * host call they could be waiting for) can never settle: they fail so.
 */
function collectSettled(): SettledCall[] | undefined {
  if (openCalls.size === 0) return undefined;
  const settled: SettledCall[] = [];
  const stuck = parkedRounds.size === 0;
  for (const [id, rec] of openCalls) {
    let outcome: ReturnType<typeof outcomeOf> | null = null;
    // Reading an outcome may run guest code (a toJSON): a budget of its own, as for an error.
    interruptReason = undefined;
    remaining = Math.max(remaining, DESCRIBE_BUDGET_MS);
    try {
      if (ctx.getNumber(enter(fns.state, rec)) !== 0) outcome = outcomeOf(rec);
      else if (stuck) outcome = { ok: false, failure: NEVER_SETTLES };
    } catch (e) {
      if (!(e instanceof EntryFailure)) throw e;
      outcome = { ok: false, failure: e.info };
    }
    if (outcome === null) continue;
    openCalls.delete(id);
    rec.dispose();
    settled.push({ id, ...outcome });
  }
  return settled.length > 0 ? settled : undefined;
}

/** Every open call fails with `failure`, and their parked rounds are forgotten (a resume entry failed). */
function failOpenCalls(failure: FailureInfo): SettledCall[] | undefined {
  parkedRounds.clear();
  const r = ctx.callFunction(fns.resetAll, ctx.undefined);
  if (r.error) r.error.dispose();
  else r.value.dispose();
  if (openCalls.size === 0) return undefined;
  const settled: SettledCall[] = [];
  for (const [id, rec] of openCalls) {
    rec.dispose();
    settled.push({ id, ok: false, failure });
  }
  openCalls.clear();
  return settled;
}

function runEntry(req: EntryRequest): WorkerMessage {
  owned = [];
  interruptReason = undefined;
  remaining = timeoutMs();
  capReached = false;
  let fatal = false;
  const resuming = req.op === "resume";
  const resumableCall = req.op === "call" ? req.resumable : undefined;
  const budgetMs = req.op === "resume" ? req.budgetMs : resumableCall?.budgetMs;
  const resumable: Resumable | null = budgetMs === undefined ? null : { budgetMs, startedAt: Date.now() };
  try {
    if (abortRequested()) throw new EntryFailure({ kind: "aborted", message: abortedMessage() });
    if (req.op === "resume") {
      for (const [round, json] of req.rounds) {
        if (!parkedRounds.has(round)) continue;
        if (ctx.getNumber(enter(fns.resume, own(ctx.newNumber(round)), own(newText(json)))) === 0)
          parkedRounds.delete(round);
      }
      // After the rounds: a round's answer comes before those of its calls it left for later.
      for (const [round, index, json] of req.parts) {
        if (!parkedRounds.has(round)) continue;
        const left = enter(
          fns.resumePart,
          own(ctx.newNumber(round)),
          own(ctx.newNumber(index)),
          own(newText(json)),
        );
        if (ctx.getNumber(left) === 0) parkedRounds.delete(round);
      }
      drive(null, true, resumable);
      checkEnd();
      return { t: "done", ok: true, json: "null", settled: collectSettled() };
    }
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
    const jobsFailAlone = req.op === "call" && (req.jobsFailAlone === true || resumable !== null);
    drive(rec, jobsFailAlone, resumable);
    if (resumableCall !== undefined && ctx.getNumber(enter(fns.state, rec)) === 0) {
      checkEnd();
      // Its Promise outlives the entry: the record stays until it settles (collectSettled).
      owned.splice(owned.lastIndexOf(rec), 1);
      openCalls.set(resumableCall.id, rec);
      return { t: "done", ok: true, json: null, settled: collectSettled() };
    }
    const out = outcomeOf(rec);
    checkEnd();
    if (!out.ok) throw new EntryFailure(out.failure);
    return { t: "done", ok: true, json: out.json, settled: collectSettled() };
  } catch (e) {
    if (e instanceof EntryFailure) {
      let settled: SettledCall[] | undefined;
      if (resuming) {
        settled = failOpenCalls(e.info);
      } else {
        const r = ctx.callFunction(fns.reset, ctx.undefined);
        if (r.error) r.error.dispose();
        else r.value.dispose();
        settled = collectSettled();
      }
      return { t: "done", ok: false, failure: e.info, fatal: false, settled };
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

/** What ends an entry that ran to its end: an abort asked meanwhile, or the memory cap reached. */
function checkEnd(): void {
  if (abortRequested()) throw new EntryFailure({ kind: "aborted", message: abortedMessage() });
  // Reaching the memory cap ends the entry even when the script caught the error.
  if (capReached) throw new EntryFailure({ kind: "memory", message: memoryMessage(init.memoryLimitMb) });
}

/** The open calls' records go before their runtime does. */
function forgetOpenCalls(): void {
  for (const rec of openCalls.values()) if (rec.alive) rec.dispose();
  openCalls.clear();
  parkedRounds.clear();
}

/**
 * The isolate's thread passes to a new isolate: the runtime and wasm instance go (their memory
 * with the instance, once this thread's V8 collects it) and fresh ones are made, as at start.
 */
async function renew(): Promise<void> {
  try {
    forgetOpenCalls();
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
        forgetOpenCalls();
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
