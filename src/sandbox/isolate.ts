/**
 * An Isolate: one QuickJS runtime+context in its own worker thread (worker.ts), with a
 * capped wasm memory, a deadline per entry, and a watchdog that ends the thread when a
 * builtin ignores the interrupt. The main thread only passes messages and runs the
 * HostBridge; all guest work happens in the worker.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import {
  CTL_ABORT,
  CTL_BYTES,
  CTL_DEADLINE_BYTE,
  CTL_INTERRUPT,
  CTL_LIMITS_BYTE,
  CTL_SIGNAL,
  CTL_STATE,
  LIMIT_ALLOWED_MB,
  LIMIT_TIMEOUT_MS,
  LIMIT_USED_KB,
  REPLY_AREA_BYTES,
  REPLY_LENGTH,
  REPLY_SEQ,
  REPLY_TEXT_BYTE,
  SIGINT,
  SIGNAL_AREA,
  SIGNAL_PORT,
  STATE_GUEST,
  DETACHED,
  LATER_PART,
  type AsyncReply,
  type AsyncWait,
  type EntryRequest,
  type SettledCall,
  type SyncReply,
  type WorkerInit,
  type WorkerMessage,
  type WorkerRequest,
} from "./protocol.js";
import { abortedMessage, terminatedMessage, timeoutMessage } from "./messages.js";
import { encodeBinary } from "./bjson.js";
import {
  RawJson,
  SandboxError,
  allAnswered,
  type AsyncPart,
  type AsyncResult,
  type CallOptions,
  type HostBridge,
  type IsolateLimits,
  type JsonValue,
} from "./types.js";

/** How long an entry may overrun its deadline before the watchdog ends the worker. */
export const WATCHDOG_GRACE_MS = 500;
/** How long an aborted entry may keep running (in a builtin) before the worker is ended. */
const ABORT_GRACE_MS = 500;
/** How long dispose() waits for the worker to free its runtime before terminating it. */
const DISPOSE_WAIT_MS = 2000;
/**
 * The first buffer of a CallOptions.binaryAt argument (encodeBinary), grown as it is written:
 * a batch of TFCALLs fits; a 64 KB start costs more than encoding one.
 */
const BINARY_START_BYTES = 2048;
/** A larger binary argument is cloned as it is: the feed area lives as long as the isolate. */
const FEED_AREA_MAX = 1024 * 1024;
/** The worker's native stack: QuickJS's 1 MB stack limit needs about 32x that (reference §0.2). */
const WORKER_STACK_MB = 32;
/**
 * An isolate whose memory grew past this is not renewed on its thread: the old wasm memory is
 * freed only when the worker's V8 next collects, so a renewal may hold it that long.
 */
export const RENEW_MAX_BYTES = 32 * 1024 * 1024;

/** The language runtimes an isolate can run: QuickJS (JavaScript) or Pyodide (Python). */
export type Runtime = "quickjs" | "pyodide";

const WORKER_URLS: Record<Runtime, URL> = {
  quickjs: new URL("./worker.js", import.meta.url),
  pyodide: new URL("./pyodide/worker.js", import.meta.url),
};

let wasmModule: Promise<WebAssembly.Module> | undefined;

/** The QuickJS wasm, compiled once per process and shared with every worker. */
function compiledWasm(): Promise<WebAssembly.Module> {
  if (wasmModule === undefined) {
    const pending = (async () => {
      const path = createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm");
      return WebAssembly.compile(await readFile(path));
    })();
    wasmModule = pending;
    pending.catch(() => {
      if (wasmModule === pending) wasmModule = undefined;
    });
  }
  return wasmModule;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A call's part of a round's answer (AsyncReply.json): [0, its value] or [1, its error's message]. */
function partOf(r: unknown): string {
  if (typeof r === "object" && r !== null && "ok" in r) {
    try {
      return `[0,${toJson(r.ok)}]`;
    } catch (e) {
      return `[1,${JSON.stringify(errorMessage(e))}]`;
    }
  }
  if (typeof r === "object" && r !== null && "error" in r) return `[1,${JSON.stringify(String(r.error))}]`;
  return `[1,"no result from the host"]`;
}

function toJson(value: unknown): string {
  if (value instanceof RawJson) return value.json;
  const json = JSON.stringify(value === undefined ? null : value);
  return json === undefined ? "null" : json;
}

export interface IsolateStats {
  /** __host.callSync round trips. */
  syncCalls: number;
  /** Round trips that carried __host.callAsync calls, and the calls they carried. */
  asyncBatches: number;
  asyncCalls: number;
  /** Messages that carried __host.notify calls, and the calls they carried. */
  notifyBatches: number;
  notifications: number;
}

interface Entry {
  request: EntryRequest;
  resolve: (value: JsonValue) => void;
  reject: (error: Error) => void;
  aborted: boolean;
  /** CallOptions.resumable's: told when an entry of the call ended before its Promise settled. */
  onSuspended?: () => void;
  /** CallOptions.onStart. */
  onStart?: () => void;
}

const ignore = (): void => {};

/** Where dispose() hands the thread on (renewOnDispose). */
interface Renewal {
  limits: IsolateLimits;
  /** Asked at dispose(): whether a renewed isolate is wanted now. */
  wanted: () => boolean;
  bridge: () => HostBridge;
  /** The renewed isolate; null when dispose() ended the thread instead. */
  take: (renewed: Promise<Isolate> | null) => void;
}

const encoder = new TextEncoder();

/**
 * The worker's shared reply area (protocol.ts, SIGNAL_AREA): an answer that fits is written
 * there as UTF-8, which the worker copies into the guest's heap as it is. A port message would
 * clone the text, wake the worker's event loop later for nothing, and be decoded and encoded again.
 */
class ReplyArea {
  readonly buffer = new SharedArrayBuffer(REPLY_AREA_BYTES);
  private readonly header = new Int32Array(this.buffer, 0, 2);
  private readonly text = new Uint8Array(this.buffer, REPLY_TEXT_BYTE);
  /** The text after a one-byte mark. */
  private readonly marked = new Uint8Array(this.buffer, REPLY_TEXT_BYTE + 1);

  /** Writes answer `seq`: `mark` (a sync answer's "0" or "1", or "") then `text`; false if it does not fit. */
  write(seq: number, mark: string, text: string): boolean {
    const into = mark === "" ? this.text : this.marked;
    // UTF-8 takes at least a byte per UTF-16 unit: a longer text cannot fit.
    if (text.length > into.length) return false;
    const { read, written } = encoder.encodeInto(text, into);
    if (read < text.length) return false;
    if (mark !== "") this.text[0] = mark.charCodeAt(0);
    this.header[REPLY_SEQ] = seq;
    this.header[REPLY_LENGTH] = written + (mark === "" ? 0 : 1);
    return true;
  }
}

interface PendingReply {
  seq: number;
  kind: "sync" | "async";
  count: number;
  /** A round the worker waits for, but may stop waiting for (AsyncWait "yieldable"). */
  yieldable: boolean;
  /** A round the worker does not wait for: its answer goes in a "resume" entry. */
  detached: boolean;
  /** A round whose answer may leave calls for later (AsyncWait: any of them). */
  parts: boolean;
  /** The budget of the resumable entry that sent it: its "resume" entry gets the same. */
  budgetMs: number;
}

export class Isolate {
  private readonly ctl: Int32Array;
  private readonly deadlineSlot: BigInt64Array;
  /** The limits that may change while the isolate lives (protocol.ts, LIMIT_*). */
  private readonly liveLimits: Int32Array;
  /** Where answers to a QuickJS worker go when they fit (the Pyodide worker reads the port only). */
  private readonly replyArea: ReplyArea | null;
  private readonly queue: Entry[] = [];
  private current: Entry | undefined;
  private pendingAbort = false;
  private readsBinary = false;
  private pendingReply: PendingReply | undefined;
  /** Resumable calls whose entry ended before their Promise settled, by id (CallOptions.resumable). */
  private readonly suspended = new Map<number, Entry>();
  private lastCallId = 0;
  /** Rounds of host calls whose answers are to go to a "resume" entry, not answered yet. */
  private detachedRounds = 0;
  /** Calls that answers of rounds left for later (LATER_PART), not answered yet. */
  private laterParts = 0;
  /** When the last entry ended (performance.now()); its start, before any. */
  private lastEntryEnd = performance.now();
  /** Where callBinary's bytes cross to the worker (see shared()). */
  private feedArea: SharedArrayBuffer | null = null;
  private isAlive = true;
  private disposing = false;
  private watchdog: NodeJS.Timeout | undefined;
  private abortTimer: NodeJS.Timeout | undefined;
  private ready: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private renewal: Renewal | null = null;
  /** The worker's listeners, removed when the thread passes to a renewed isolate. */
  private readonly listeners: {
    message: (m: WorkerMessage) => void;
    error: (e: Error) => void;
    exit: () => void;
  };
  /** Settles when the worker thread has ended, or passed to a renewed isolate. */
  readonly exited: Promise<void>;
  private readonly markExited: () => void;
  /** Counts of the guest's host traffic (messages between the threads). */
  readonly stats: IsolateStats = {
    syncCalls: 0,
    asyncBatches: 0,
    asyncCalls: 0,
    notifyBatches: 0,
    notifications: 0,
  };

  private constructor(
    readonly runtime: Runtime,
    readonly limits: IsolateLimits,
    private readonly bridge: HostBridge,
    private readonly worker: Worker,
    private readonly replyPort: MessagePort,
    private readonly control: SharedArrayBuffer,
    replyArea: ReplyArea | null,
  ) {
    this.replyArea = replyArea;
    this.ctl = new Int32Array(control, 0, 4);
    this.deadlineSlot = new BigInt64Array(control, CTL_DEADLINE_BYTE, 1);
    this.liveLimits = new Int32Array(control, CTL_LIMITS_BYTE, 3);
    Atomics.store(this.liveLimits, LIMIT_TIMEOUT_MS, limits.timeoutMs);
    let exited = (): void => {};
    this.exited = new Promise((resolve) => (exited = resolve));
    this.markExited = exited;
    this.listeners = {
      message: (m) => this.onMessage(m),
      error: (e) => this.onCrash(e),
      exit: () => {
        exited();
        this.onCrash(undefined);
      },
    };
    worker.on("message", this.listeners.message);
    worker.on("error", this.listeners.error);
    worker.on("exit", this.listeners.exit);
  }

  /** Starts a worker with a fresh runtime and context; resolves once the guest is ready. */
  static async create(
    limits: IsolateLimits,
    bridge: HostBridge,
    runtime: Runtime = "quickjs",
  ): Promise<Isolate> {
    if (!(limits.timeoutMs > 0)) throw new RangeError("timeoutMs must be positive");
    if (!(limits.memoryLimitMb >= 16)) throw new RangeError("memoryLimitMb must be at least 16");
    const module = runtime === "quickjs" ? await compiledWasm() : undefined;
    const control = new SharedArrayBuffer(CTL_BYTES);
    const { port1, port2 } = new MessageChannel();
    const replyArea = runtime === "quickjs" ? new ReplyArea() : null;
    const workerData: WorkerInit = {
      wasmModule: module,
      memoryLimitMb: limits.memoryLimitMb,
      timeoutMs: limits.timeoutMs,
      control,
      replyPort: port2,
      replyArea: replyArea?.buffer,
    };
    const worker = new Worker(WORKER_URLS[runtime], {
      workerData,
      transferList: [port2],
      resourceLimits: {
        stackSizeMb: WORKER_STACK_MB,
        // The worker's own heap holds only strings crossing to and from the guest (and, for
        // Pyodide, its JavaScript glue and the records on their way between the languages).
        maxOldGenerationSizeMb: (runtime === "pyodide" ? 256 : 64) + 4 * Math.ceil(limits.memoryLimitMb),
      },
    });
    const isolate = new Isolate(runtime, { ...limits }, bridge, worker, port1, control, replyArea);
    await new Promise<void>((resolve, reject) => {
      isolate.ready = { resolve, reject };
    });
    return isolate;
  }

  /** False once the worker is gone (disposed, terminated by the watchdog, or crashed). */
  get alive(): boolean {
    return this.isAlive;
  }

  /** When the last entry ended (performance.now()), or null while one runs or waits. */
  get idleSince(): number | null {
    return this.current !== undefined ||
      this.queue.length > 0 ||
      this.suspended.size > 0 ||
      this.detachedRounds > 0 ||
      this.laterParts > 0
      ? null
      : this.lastEntryEnd;
  }

  get threadId(): number {
    return this.worker.threadId;
  }

  /**
   * Runs a classic script in the isolate's global scope and returns the JSON of its
   * completion value (null when it has none). A Promise completion is awaited.
   */
  evalScript(source: string, filename: string): Promise<JsonValue> {
    return this.enqueue({ op: "eval", source, filename });
  }

  /** Runs Python source in the isolate's interpreter (a Pyodide isolate only). */
  evalPython(source: string, filename: string): Promise<JsonValue> {
    return this.enqueue({ op: "evalPython", source, filename });
  }

  /** Calls the global function at a dotted path with JSON args; a returned Promise is awaited. */
  call(path: string, args: JsonValue[], options?: CallOptions): Promise<JsonValue> {
    const at = options?.binaryAt;
    if (at !== undefined && this.readsBinary && options?.resumable === undefined && !options?.jobsFailAlone)
      return this.callWithBinary(path, args, at, options?.onStart);
    let argsJson: string;
    try {
      argsJson = JSON.stringify(args);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    // Only QuickJS's worker resumes entries.
    const resumable = this.runtime === "quickjs" ? options?.resumable : undefined;
    return this.enqueue(
      {
        op: "call",
        path,
        argsJson,
        jobsFailAlone: options?.jobsFailAlone,
        resumable: resumable && { id: ++this.lastCallId, budgetMs: resumable.budgetMs },
      },
      resumable?.onSuspended,
      options?.onStart,
    );
  }

  /** call() with args[at] in the binary format (CallOptions.binaryAt). */
  private callWithBinary(
    path: string,
    args: JsonValue[],
    at: number,
    onStart: (() => void) | undefined,
  ): Promise<JsonValue> {
    let argsJson: string;
    let bytes: Uint8Array;
    try {
      bytes = encodeBinary(args[at] ?? null, BINARY_START_BYTES);
      const rest = args.slice();
      rest[at] = null;
      argsJson = JSON.stringify(rest);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return this.enqueue({ op: "callBinary", path, argsJson, index: at, bytes }, undefined, onStart);
  }

  /** A new time limit for the entries that start from now on (QuickJS isolates). */
  setTimeoutMs(ms: number): void {
    if (!(ms > 0)) throw new RangeError("timeoutMs must be positive");
    this.limits.timeoutMs = ms;
    Atomics.store(this.liveLimits, LIMIT_TIMEOUT_MS, ms);
  }

  /**
   * How far the isolate's memory may grow now, in MiB (0: up to its cap): an entry that grows
   * past it is ended with a memory error (QuickJS isolates). For a cap shared by several isolates.
   */
  setMemoryAllowanceMb(mb: number): void {
    Atomics.store(this.liveLimits, LIMIT_ALLOWED_MB, Math.max(0, Math.floor(mb)));
  }

  /** The isolate's memory size as its worker last reported it (it only grows), in bytes. */
  get memoryBytes(): number {
    return Atomics.load(this.liveLimits, LIMIT_USED_KB) * 1024;
  }

  /** Whether callBinary() may be used: the worker's QuickJS reads bjson.ts's format. */
  get binary(): boolean {
    return this.readsBinary;
  }

  /**
   * call() where args[index] is a value in QuickJS's binary object format (bjson.ts): large
   * batches decode in the guest far quicker than their JSON parses.
   */
  callBinary(path: string, argsJson: string, index: number, bytes: Uint8Array): Promise<JsonValue> {
    if (!this.readsBinary) return Promise.reject(new Error("this isolate does not read the binary format"));
    return this.enqueue({ op: "callBinary", path, argsJson, index, bytes });
  }

  /** The current entry (or, if none runs, the next one) fails promptly with kind "aborted". */
  abort(): void {
    if (!this.isAlive) return;
    const entry = this.current;
    if (entry === undefined) {
      this.pendingAbort = true;
      return;
    }
    if (entry.aborted) return;
    entry.aborted = true;
    Atomics.store(this.ctl, CTL_ABORT, 1);
    Atomics.store(this.ctl, CTL_INTERRUPT, SIGINT);
    // The worker may be waiting for the host: answer it now, the interrupt does the rest.
    const pending = this.pendingReply;
    if (pending !== undefined) this.answerWithError(pending, abortedMessage());
    const check = (): void => {
      this.abortTimer = undefined;
      if (this.current !== entry || !this.isAlive) return;
      if (Atomics.load(this.ctl, CTL_STATE) === STATE_GUEST) {
        this.kill(new SandboxError("aborted", abortedMessage()));
      } else {
        this.abortTimer = setTimeout(check, ABORT_GRACE_MS);
      }
    };
    this.abortTimer = setTimeout(check, ABORT_GRACE_MS);
  }

  /**
   * Makes dispose() hand the worker thread on instead of ending it, when the isolate is then
   * idle, healthy and small (RENEW_MAX_BYTES) and `wanted()`: `take` gets a new isolate on the
   * same thread, with a fresh wasm instance, runtime and context, `limits` and the bridge
   * `bridge()` makes; otherwise null, as the thread ends (as it does when the isolate dies).
   * The thread is most of what an isolate costs to start (node's bootstrap and module graph,
   * about 70 of 110 ms of CPU here); a fresh QuickJS in it costs about 30.
   */
  renewOnDispose(
    limits: IsolateLimits,
    wanted: () => boolean,
    bridge: () => HostBridge,
    take: (renewed: Promise<Isolate> | null) => void,
  ): void {
    this.renewal = this.runtime === "quickjs" ? { limits: { ...limits }, wanted, bridge, take } : null;
  }

  /** Frees the runtime and ends the worker; pending and later entries fail with "terminated". */
  async dispose(): Promise<void> {
    // Nothing will resume the calls whose entries ended before their Promises settled.
    this.rejectSuspended(new SandboxError("terminated", terminatedMessage()));
    const renewal = this.renewal;
    this.renewal = null;
    if (renewal !== null && this.renewable() && renewal.wanted()) {
      renewal.take(this.renew(renewal));
      return;
    }
    renewal?.take(null);
    if (!this.disposing) {
      this.disposing = true;
      this.rejectQueued();
      if (this.isAlive) {
        if (this.current !== undefined) {
          this.kill(new SandboxError("terminated", terminatedMessage()));
        } else {
          this.isAlive = false;
          this.clearTimers();
          this.worker.ref();
          this.worker.postMessage({ op: "dispose" } satisfies WorkerRequest);
          const timer = setTimeout(() => void this.worker.terminate(), DISPOSE_WAIT_MS);
          void this.exited.then(() => clearTimeout(timer));
        }
      }
    }
    await this.exited;
  }

  private renewable(): boolean {
    return (
      this.isAlive &&
      !this.disposing &&
      this.ready === undefined &&
      this.current === undefined &&
      this.queue.length === 0 &&
      !this.pendingAbort &&
      Atomics.load(this.ctl, CTL_ABORT) === 0 &&
      this.memoryBytes <= RENEW_MAX_BYTES
    );
  }

  /** This isolate ends here; a new one on its thread resolves once the worker made it afresh. */
  private renew(renewal: Renewal): Promise<Isolate> {
    this.disposing = true;
    this.isAlive = false;
    this.clearTimers();
    this.worker.off("message", this.listeners.message);
    this.worker.off("error", this.listeners.error);
    this.worker.off("exit", this.listeners.exit);
    this.markExited();
    Atomics.store(this.liveLimits, LIMIT_ALLOWED_MB, 0);
    Atomics.store(this.ctl, CTL_INTERRUPT, 0);
    const next = new Isolate(
      this.runtime,
      renewal.limits,
      renewal.bridge(),
      this.worker,
      this.replyPort,
      this.control,
      this.replyArea,
    );
    const ready = new Promise<Isolate>((resolve, reject) => {
      next.ready = { resolve: () => resolve(next), reject };
    });
    this.worker.ref();
    this.worker.postMessage({ op: "renew" } satisfies WorkerRequest);
    return ready;
  }

  // --- entries -------------------------------------------------------------------------------

  private enqueue(request: EntryRequest, onSuspended?: () => void, onStart?: () => void): Promise<JsonValue> {
    if (!this.isAlive) return Promise.reject(new SandboxError("terminated", terminatedMessage()));
    return new Promise<JsonValue>((resolve, reject) => {
      this.queue.push({ request, resolve, reject, aborted: false, onSuspended, onStart });
      this.yieldWaiting();
      this.pump();
    });
  }

  /**
   * An entry waits for the isolate: a resumable entry waiting for a round of host calls stops
   * waiting (its entry ends), and the round's answer resumes the guest in an entry of its own.
   */
  private yieldWaiting(): void {
    const pending = this.pendingReply;
    if (pending === undefined || !pending.yieldable) return;
    this.answer(pending, { seq: pending.seq, json: DETACHED });
    pending.detached = true;
    this.detachedRounds++;
  }

  /** The answer to a round of host calls: to the worker waiting for it, or in a "resume" entry. */
  private roundAnswered(pending: PendingReply, json: string): void {
    if (!pending.detached) {
      this.answer(pending, { seq: pending.seq, json });
      return;
    }
    this.detachedRounds--;
    if (!this.isAlive) return;
    this.resume(pending.budgetMs, [pending.seq, json], null);
  }

  /** The answer `part` of call `index` of a round whose answer left it for later: in a "resume" entry. */
  private partAnswered(pending: PendingReply, index: number, part: string): void {
    this.laterParts--;
    if (!this.isAlive) return;
    this.resume(pending.budgetMs, null, [pending.seq, index, part]);
  }

  /** Hands a round's answer or a call's part of one to the guest, in a "resume" entry. */
  private resume(
    budgetMs: number,
    round: [number, string] | null,
    part: [number, number, string] | null,
  ): void {
    // Answers that come while a resume entry waits go in with it: one entry for them all.
    const last = this.queue[this.queue.length - 1];
    if (last !== undefined && last.request.op === "resume") {
      if (round !== null) last.request.rounds.push(round);
      if (part !== null) last.request.parts.push(part);
      return;
    }
    const request: EntryRequest = {
      op: "resume",
      rounds: round === null ? [] : [round],
      parts: part === null ? [] : [part],
      budgetMs,
    };
    this.queue.push({ request, resolve: ignore, reject: ignore, aborted: false });
    this.yieldWaiting();
    this.pump();
  }

  /** The budget of the entry under way when it is resumable (that of its rounds' resume entries). */
  private currentBudgetMs(): number {
    const request = this.current?.request;
    if (request?.op === "resume") return request.budgetMs;
    if (request?.op === "call") return request.resumable?.budgetMs ?? 0;
    return 0;
  }

  /** A resumable call of an earlier entry settled. */
  private settleSuspended(settled: SettledCall): void {
    const entry = this.suspended.get(settled.id);
    if (entry === undefined) return;
    this.suspended.delete(settled.id);
    if (settled.ok) {
      try {
        entry.resolve(JSON.parse(settled.json) as JsonValue);
      } catch (e) {
        entry.reject(new SandboxError("throw", `Error: ${errorMessage(e)}`));
      }
    } else {
      entry.reject(new SandboxError(settled.failure.kind, settled.failure.message, settled.failure.line));
    }
  }

  private rejectSuspended(error: SandboxError): void {
    if (this.suspended.size === 0) return;
    const entries = [...this.suspended.values()];
    this.suspended.clear();
    for (const entry of entries) entry.reject(error);
  }

  private pump(): void {
    if (this.current !== undefined || !this.isAlive || this.ready !== undefined) return;
    for (;;) {
      const entry = this.queue.shift();
      if (entry === undefined) {
        this.worker.unref();
        return;
      }
      if (this.pendingAbort) {
        this.pendingAbort = false;
        entry.reject(new SandboxError("aborted", abortedMessage()));
        continue;
      }
      this.current = entry;
      entry.onStart?.();
      this.worker.ref();
      this.worker.postMessage(this.shared(entry.request) satisfies WorkerRequest);
      this.armWatchdog(this.firstLook());
      return;
    }
  }

  /**
   * The request with its binary argument in the isolate's shared feed area: posted by
   * reference, not cloned, so a large execution's batches make no buffer per batch on either
   * thread. The worker copies it into the guest when the entry starts, and the area is written
   * again only for the next entry, after this one is done.
   */
  private shared(request: EntryRequest): EntryRequest {
    if (request.op !== "callBinary" || request.bytes.length > FEED_AREA_MAX) return request;
    const size = request.bytes.length;
    if (this.feedArea === null || this.feedArea.byteLength < size) {
      this.feedArea = new SharedArrayBuffer(
        Math.max(size, Math.min(FEED_AREA_MAX, 2 * (this.feedArea?.byteLength ?? 32 * 1024))),
      );
    }
    const view = new Uint8Array(this.feedArea, 0, size);
    view.set(request.bytes);
    return { ...request, bytes: view };
  }

  private finishEntry(m: Extract<WorkerMessage, { t: "done" }>): void {
    const entry = this.current;
    if (entry === undefined) return;
    this.current = undefined;
    this.pendingReply = undefined;
    this.lastEntryEnd = performance.now();
    this.clearTimers();
    if (entry.aborted) {
      Atomics.store(this.ctl, CTL_ABORT, 0);
      entry.reject(new SandboxError("aborted", abortedMessage()));
    } else if (m.ok && m.json !== null) {
      try {
        entry.resolve(JSON.parse(m.json) as JsonValue);
      } catch (e) {
        entry.reject(new SandboxError("throw", `Error: ${errorMessage(e)}`));
      }
    } else if (m.ok) {
      // A resumable call whose Promise outlives its entry: it settles in a later one.
      const request = entry.request;
      if (request.op === "call" && request.resumable !== undefined) {
        this.suspended.set(request.resumable.id, entry);
        entry.onSuspended?.();
      } else {
        entry.reject(new SandboxError("throw", "Error: an entry ended without its result"));
      }
    } else {
      entry.reject(new SandboxError(m.failure.kind, m.failure.message, m.failure.line));
    }
    if (m.settled !== undefined) for (const settled of m.settled) this.settleSuspended(settled);
    if (!m.ok && m.fatal) {
      this.kill(new SandboxError("terminated", terminatedMessage()));
      return;
    }
    this.pump();
  }

  // --- watchdog ------------------------------------------------------------------------------

  /**
   * When the watchdog first looks at an entry: Pyodide cannot watch its own clock, so its
   * watchdog looks at the deadline itself and raises the interrupt; QuickJS only needs the backstop.
   */
  private firstLook(): number {
    return this.limits.timeoutMs + (this.runtime === "pyodide" ? 5 : WATCHDOG_GRACE_MS);
  }

  private armWatchdog(ms: number): void {
    if (this.watchdog !== undefined) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.checkWatchdog(), ms);
  }

  private checkWatchdog(): void {
    this.watchdog = undefined;
    if (this.current === undefined || !this.isAlive) return;
    if (Atomics.load(this.ctl, CTL_STATE) === STATE_GUEST) {
      const late = Date.now() - Number(Atomics.load(this.deadlineSlot, 0));
      if (late > 0) Atomics.store(this.ctl, CTL_INTERRUPT, SIGINT);
      if (late > WATCHDOG_GRACE_MS) {
        this.kill(new SandboxError("timeout", timeoutMessage(this.limits.timeoutMs)));
        return;
      }
      this.armWatchdog(late > 0 ? Math.max(10, WATCHDOG_GRACE_MS - late + 5) : Math.max(5, -late + 5));
    } else {
      // Waiting for the host (not counted), or between two guest segments.
      this.armWatchdog(this.firstLook());
    }
  }

  private clearTimers(): void {
    if (this.watchdog !== undefined) clearTimeout(this.watchdog);
    if (this.abortTimer !== undefined) clearTimeout(this.abortTimer);
    this.watchdog = undefined;
    this.abortTimer = undefined;
  }

  /** Ends the worker now: the current entry fails with `error`, queued ones with "terminated". */
  private kill(error: SandboxError): void {
    if (!this.isAlive) return;
    this.isAlive = false;
    const renewal = this.renewal;
    this.renewal = null;
    renewal?.take(null);
    this.clearTimers();
    void this.worker.terminate();
    const entry = this.current;
    this.current = undefined;
    this.pendingReply = undefined;
    entry?.reject(error);
    // A resume entry's failure is that of the calls it resumed.
    this.rejectSuspended(
      entry?.request.op === "resume" ? error : new SandboxError("terminated", terminatedMessage()),
    );
    this.rejectQueued();
  }

  private rejectQueued(): void {
    for (const entry of this.queue.splice(0)) {
      entry.reject(new SandboxError("terminated", terminatedMessage()));
    }
  }

  private onCrash(error: Error | undefined): void {
    const message =
      error === undefined ? terminatedMessage() : `the isolate's worker failed: ${error.message}`;
    if (this.ready !== undefined) {
      const ready = this.ready;
      this.ready = undefined;
      this.isAlive = false;
      void this.worker.terminate();
      ready.reject(new SandboxError("terminated", message));
      return;
    }
    this.kill(new SandboxError("terminated", message));
  }

  // --- messages from the worker --------------------------------------------------------------

  private onMessage(m: WorkerMessage): void {
    switch (m.t) {
      case "ready": {
        this.readsBinary = m.binary;
        const ready = this.ready;
        this.ready = undefined;
        ready?.resolve();
        this.pump();
        return;
      }
      case "initError":
        this.onCrash(new Error(m.message));
        return;
      case "sync":
        this.onSync(m.seq, m.name, m.argsJson);
        return;
      case "async":
        this.onAsync(m.seq, m.batchJson, m.wait);
        return;
      case "notify":
        this.onNotify(m.json);
        return;
      case "done":
        this.finishEntry(m);
        return;
      default:
        return;
    }
  }

  private onSync(seq: number, name: string, argsJson: string): void {
    this.stats.syncCalls++;
    const pending: PendingReply = {
      seq,
      kind: "sync",
      count: 1,
      yieldable: false,
      detached: false,
      parts: false,
      budgetMs: 0,
    };
    this.pendingReply = pending;
    if (this.current?.aborted) {
      this.answerWithError(pending, abortedMessage());
      return;
    }
    Promise.resolve()
      .then(() => this.bridge.callSync(name, JSON.parse(argsJson) as JsonValue[]))
      .then(
        (value) => {
          let json: string;
          try {
            json = toJson(value);
          } catch (e) {
            this.answer(pending, { seq, ok: false, message: errorMessage(e) });
            return;
          }
          this.answer(pending, { seq, ok: true, json });
        },
        (e: unknown) => this.answer(pending, { seq, ok: false, message: errorMessage(e) }),
      );
  }

  private onAsync(seq: number, batchJson: string, wait: AsyncWait | undefined): void {
    let calls: { name: string; args: JsonValue[] }[];
    try {
      calls = (JSON.parse(batchJson) as [string, JsonValue[]][]).map(([name, args]) => ({ name, args }));
    } catch {
      calls = [];
    }
    this.stats.asyncBatches++;
    this.stats.asyncCalls += calls.length;
    const pending: PendingReply = {
      seq,
      kind: "async",
      count: calls.length,
      yieldable: wait === "yieldable",
      detached: wait === "detached",
      parts: wait !== undefined,
      budgetMs: this.currentBudgetMs(),
    };
    if (pending.detached) this.detachedRounds++;
    else this.pendingReply = pending;
    if (this.current?.aborted) {
      this.answerWithError(pending, abortedMessage());
      return;
    }
    // An entry came while the round was on its way here.
    if (this.queue.length > 0) this.yieldWaiting();
    const bridge = this.bridge;
    Promise.resolve()
      .then((): Promise<AsyncPart[]> => {
        if (bridge.callAsyncParts === undefined) return bridge.callAsync(calls);
        // A worker that waits for the whole answer gets it whole.
        if (!pending.parts) return allAnswered(bridge.callAsyncParts(calls, true));
        return bridge.callAsyncParts(calls, pending.yieldable || pending.detached);
      })
      .then(
        (results: AsyncPart[]) => {
          const parts: string[] = [];
          let later: { index: number; answer: Promise<AsyncResult> }[] | null = null;
          for (let i = 0; i < calls.length; i++) {
            const r: unknown = results[i];
            if (typeof r === "object" && r !== null && "later" in r) {
              (later ??= []).push({ index: i, answer: (r as { later: Promise<AsyncResult> }).later });
              parts.push(LATER_PART);
            } else parts.push(partOf(r));
          }
          this.roundAnswered(pending, `[${parts.join(",")}]`);
          if (later === null) return;
          // After the round's answer: a call's part goes in a resume entry after the round's.
          for (const { index, answer } of later) {
            this.laterParts++;
            answer.then(
              (r) => this.partAnswered(pending, index, partOf(r)),
              (e: unknown) => this.partAnswered(pending, index, partOf({ error: errorMessage(e) })),
            );
          }
        },
        (e: unknown) => this.answerWithError(pending, errorMessage(e)),
      );
  }

  private onNotify(json: string): void {
    let items: [string, JsonValue[]][];
    try {
      items = JSON.parse(json) as [string, JsonValue[]][];
    } catch {
      return;
    }
    this.stats.notifyBatches++;
    this.stats.notifications += items.length;
    for (const [name, args] of items) {
      try {
        this.bridge.notify(name, args);
      } catch {
        // A notification has no one to report to.
      }
    }
  }

  private answerWithError(pending: PendingReply, message: string): void {
    if (pending.kind === "sync") {
      this.answer(pending, { seq: pending.seq, ok: false, message });
    } else {
      const part = `[1,${JSON.stringify(message)}]`;
      this.roundAnswered(pending, `[${new Array<string>(pending.count).fill(part).join(",")}]`);
    }
  }

  /** Hands an answer to the worker blocked in Atomics.wait; each request is answered once. */
  private answer(pending: PendingReply, reply: SyncReply | AsyncReply): void {
    if (this.pendingReply !== pending || !this.isAlive) return;
    this.pendingReply = undefined;
    let signal = SIGNAL_AREA;
    if (!this.toArea(pending, reply)) {
      signal = SIGNAL_PORT;
      this.replyPort.postMessage(reply);
    }
    Atomics.store(this.ctl, CTL_SIGNAL, signal);
    Atomics.notify(this.ctl, CTL_SIGNAL);
  }

  /** Writes an answer into the reply area (the text the worker makes of a port message); false if it cannot. */
  private toArea(pending: PendingReply, reply: SyncReply | AsyncReply): boolean {
    const area = this.replyArea;
    if (area === null) return false;
    if (pending.kind === "async") return area.write(reply.seq, "", (reply as AsyncReply).json);
    const sync = reply as SyncReply;
    return sync.ok ? area.write(sync.seq, "0", sync.json) : area.write(sync.seq, "1", sync.message);
  }
}
