/**
 * Messages between an Isolate (main thread) and its worker thread (worker.ts).
 *
 * main -> worker (worker.postMessage): entries (eval, call) one at a time, and dispose.
 * worker -> main (parentPort): host requests, notifications, entry results.
 * main -> worker answers to host requests go through a dedicated MessagePort, which the worker
 * reads synchronously (receiveMessageOnPort) after Atomics.wait on the shared control array.
 * A QuickJS worker also has a shared reply area: an answer that fits is written there as its
 * text's bytes (no structured clone, no port message), and CTL_SIGNAL says which way it came.
 */
import type { MessagePort } from "node:worker_threads";
import type { SandboxErrorKind } from "./types.js";

/** Int32 slots of the shared control array. */
export const CTL_ABORT = 0; // 1: abort the current entry (set by the main thread)
export const CTL_SIGNAL = 1; // an answer to the worker's host request is ready: SIGNAL_*
/** The answer is on the reply port. */
export const SIGNAL_PORT = 1;
/** The answer is in the reply area: REPLY_SEQ and REPLY_LENGTH (Int32 slots), then its UTF-8 bytes. */
export const SIGNAL_AREA = 2;
export const CTL_STATE = 2; // what the worker is doing (STATE_*)
/** Set to 2 (SIGINT) by the main thread once the deadline passed or on abort: Pyodide's interrupt buffer. */
export const CTL_INTERRUPT = 3;
export const SIGINT = 2;
/** Byte offset of a BigInt64 slot holding the guest's current deadline (ms since epoch). */
export const CTL_DEADLINE_BYTE = 16;
/**
 * Byte offset of three Int32 slots of limits that may change while the isolate lives (QuickJS
 * reads them; a Pyodide worker keeps its start values): LIMIT_TIMEOUT_MS, the time limit set
 * by the main thread; LIMIT_ALLOWED_MB, how far the worker's memory may grow now (0: up to its
 * cap), set by the main thread; LIMIT_USED_KB, the worker's memory size, set by the worker.
 */
export const CTL_LIMITS_BYTE = 24;
export const LIMIT_TIMEOUT_MS = 0;
export const LIMIT_ALLOWED_MB = 1;
export const LIMIT_USED_KB = 2;
export const CTL_BYTES = 40;

export const REPLY_SEQ = 0;
export const REPLY_LENGTH = 1;
export const REPLY_TEXT_BYTE = 8;
/**
 * The reply area's size: a batch's answer (tens of short replies) fits; a larger answer (a big
 * HGETALL) goes through the port as before.
 */
export const REPLY_AREA_BYTES = 64 * 1024;

export const STATE_IDLE = 0;
export const STATE_GUEST = 1; // guest code is running: the deadline counts
export const STATE_HOST = 2; // the worker waits for the host: the deadline does not count

export interface WorkerInit {
  /** QuickJS's compiled wasm (the Pyodide worker loads its own). */
  wasmModule?: WebAssembly.Module;
  memoryLimitMb: number;
  timeoutMs: number;
  control: SharedArrayBuffer;
  replyPort: MessagePort;
  /** Where answers that fit are written (SIGNAL_AREA); absent: all come on the port. */
  replyArea?: SharedArrayBuffer;
}

export type EntryRequest =
  | { op: "eval"; source: string; filename: string }
  /**
   * jobsFailAlone: the entry runs several independent jobs (concurrent async calls); one that
   * overruns the time limit fails alone (its Promise is rejected), the others go on.
   */
  | {
      op: "call";
      path: string;
      argsJson: string;
      jobsFailAlone?: boolean;
      /** CallOptions.resumable: the call's id (its outcome may come in a later entry's SettledCall) and budget. */
      resumable?: { id: number; budgetMs: number };
    }
  /**
   * The answers to rounds of host calls the guest no longer waited for (AsyncRound.detached),
   * [its seq, AsyncReply.json] each, and the answers of calls that a round's answer left for
   * later (LATER_PART), [the round's seq, the call's index in it, its part] each: they go to
   * the promises awaiting them and the entry goes on as a resumable call's does (its own
   * rounds may be detached again, within `budgetMs`).
   */
  | { op: "resume"; rounds: [number, string][]; parts: [number, number, string][]; budgetMs: number }
  /** Python source, for a Pyodide worker. */
  | { op: "evalPython"; source: string; filename: string }
  /** call() with args[index] replaced by the value in `bytes` (QuickJS's binary object format). */
  | { op: "callBinary"; path: string; argsJson: string; index: number; bytes: Uint8Array };

/** renew: a fresh wasm instance, runtime and context on this thread, answered with "ready". */
export type WorkerRequest = EntryRequest | { op: "dispose" } | { op: "renew" };

export interface FailureInfo {
  kind: SandboxErrorKind;
  message: string;
  line?: number;
}

export type WorkerMessage =
  /** binary: the isolate reads bjson.ts's format (callBinary may be used). */
  | { t: "ready"; binary: boolean }
  | { t: "initError"; message: string }
  /** guest __host.callSync: the worker blocks until the answer (SyncReply) arrives. */
  | { t: "sync"; seq: number; name: string; argsJson: string }
  /**
   * a batch of guest __host.callAsync calls, JSON of [name, args][]: the worker blocks until
   * AsyncReply, unless `wait` says otherwise (AsyncWait).
   */
  | { t: "async"; seq: number; batchJson: string; wait?: AsyncWait }
  /** guest __host.notify calls, JSON of [name, args][]; no answer. */
  | { t: "notify"; json: string }
  /**
   * json null: a resumable call whose Promise has not settled yet (its entry ended first).
   * settled: the resumable calls of earlier entries whose Promise settled by the end of this one.
   */
  | { t: "done"; ok: true; json: string | null; settled?: SettledCall[] }
  /** fatal: the isolate's state is unusable; the main thread ends the worker. */
  | { t: "done"; ok: false; failure: FailureInfo; fatal: boolean; settled?: SettledCall[] }
  | { t: "disposed"; error?: string };

/**
 * How a round of callAsync calls waits for its answer: "yieldable", the worker waits, but the
 * main thread may answer DETACHED instead (another entry waits for the isolate), and the real
 * answer comes later in a "resume" entry; "detached", the worker does not wait at all (its
 * entry's budget is spent): the answer comes in a "resume" entry; "parts", the worker waits
 * (for an entry whose own result is in: what it still runs may go on in "resume" entries).
 * With any of these the answer may leave calls for later (LATER_PART). Absent: the worker
 * waits for the whole answer.
 */
export type AsyncWait = "yieldable" | "detached" | "parts";

/**
 * A call's part of a round's answer (AsyncReply.json) when its own answer comes later, in a
 * "resume" entry's `parts` (HostBridge.callAsyncParts): the round's other calls go on meanwhile.
 */
export const LATER_PART = "[2]";

/** AsyncReply.json of a round the worker is to stop waiting for: its answer comes in a "resume" entry. */
export const DETACHED = "";

/** A resumable call (EntryRequest "call", resumable) that settled in a later entry than its own. */
export type SettledCall =
  { id: number; ok: true; json: string } | { id: number; ok: false; failure: FailureInfo };

export type SyncReply = { seq: number; ok: true; json: string } | { seq: number; ok: false; message: string };
/** json: JSON of ([0, value] | [1, errorMessage] | LATER_PART)[], in the order of the batch. */
export interface AsyncReply {
  seq: number;
  json: string;
}
