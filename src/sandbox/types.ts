/**
 * The contract between the sandbox (QuickJS isolates in worker threads) and whoever
 * creates isolates (the gears engine). The sandbox knows nothing of Redis: it runs guest
 * code, enforces limits, and forwards the guest's host calls to a HostBridge.
 */

/** Values that cross between host and guest: plain JSON. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * A script a pooled isolate is handed out with, already evaluated (a library every taker of
 * that kind loads first): a spare evaluates it while nobody waits. Pooled by `filename`.
 */
export interface Preload {
  source: string;
  filename: string;
}

/** How an entry runs, beyond its path and arguments. */
export interface CallOptions {
  /** Its pending jobs are independent calls: one over the time limit fails alone. */
  jobsFailAlone?: boolean;
  /**
   * Its Promise may outlive its entry (its pending jobs failing alone, as with jobsFailAlone):
   * when all it has left is to await host calls (`__host.callAsync`) and its entry has run
   * `budgetMs`, or another entry waits for the isolate, the entry ends there. The guest keeps
   * its promises; the host calls' answers come back in later entries of their own (which
   * resume what awaited them, the same way), and other entries run in between. The call
   * settles when its Promise does, in whichever entry that is; `onSuspended` is told each
   * time an entry of it ended first (the isolate is free for others then).
   */
  resumable?: { budgetMs: number; onSuspended: () => void };
  /**
   * Told as the call's first entry starts (the isolate runs one entry at a time): what its host
   * calls are for can be set then, not when the call queued behind other entries.
   */
  onStart?: () => void;
  /**
   * args[binaryAt] crosses in QuickJS's binary object format (bjson.ts) when the isolate reads
   * it (Isolate.binary), not in the arguments' JSON: the guest decodes it in about half the
   * time its JSON.parse takes (a batch of records or calls). Not with `resumable` or
   * `jobsFailAlone`, whose entries take their arguments as JSON.
   */
  binaryAt?: number;
}

export interface IsolateLimits {
  /** Hard cap of the isolate's WebAssembly memory, in MiB (ScriptMemoryLimitMB). */
  memoryLimitMb: number;
  /** CPU time one entry into the guest may take, in ms (ScriptTimeoutMS). */
  timeoutMs: number;
}

/** Why a guest entry failed. */
export type SandboxErrorKind =
  | "syntax" // the script does not parse
  | "throw" // guest code threw
  | "timeout" // the entry ran past timeoutMs (interrupt or watchdog)
  | "memory" // the isolate ran out of its memory cap
  | "stack" // guest recursion too deep
  | "aborted" // abort() was called
  | "terminated"; // the isolate is gone (disposed, or its worker died)

export class SandboxError extends Error {
  constructor(
    readonly kind: SandboxErrorKind,
    message: string,
    /** Line in the user's script (filename "script") where it happened, when known. */
    readonly line?: number,
  ) {
    super(message);
  }
}

/**
 * The host side of the guest's calls. In the guest these are reachable as
 * `__host.callSync(name, ...args)` (blocks the guest until the host answers, returns the
 * value or throws an Error with the host's message), `__host.callAsync(name, ...args)`
 * (returns a guest Promise; calls are collected and handed over in batches when the guest
 * yields, so many can be in flight) and `__host.notify(name, ...args)` (fire and forget,
 * batched; for logs).
 */
export interface HostBridge {
  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson>;
  /** One batch of async calls; results in the same order (a rejected one is its error message). */
  callAsync(calls: { name: string; args: JsonValue[] }[]): Promise<AsyncResult[]>;
  /**
   * callAsync, for a bridge some of whose calls may take far longer than the others (a
   * command that waits for an event): such a call's result is `{ later }`, so that the
   * round's other results reach the guest at once; the guest's promise of that call settles
   * when `later` does. The isolate uses this instead of callAsync when the bridge has it.
   * `mayWait`: the guest may as well wait for the whole answer (its entry stops waiting, and
   * takes the answer later, as soon as another entry needs the isolate): a bridge may then give
   * a slow call that has nothing else in its round whole, sparing the guest a second hop.
   */
  callAsyncParts?(calls: { name: string; args: JsonValue[] }[], mayWait: boolean): Promise<AsyncPart[]>;
  notify(name: string, args: JsonValue[]): void;
}

/** A host call's result: its value, or the message of its error. */
export type AsyncResult = { ok: JsonValue | RawJson } | { error: string };

/** A result of HostBridge.callAsyncParts: now, or a promise of it (the call's answer comes later). */
export type AsyncPart = AsyncResult | { later: Promise<AsyncResult> };

/** callAsyncParts' results once every one is in: callAsync's, for a bridge that answers in parts. */
export function allAnswered(parts: Promise<AsyncPart[]>): Promise<AsyncResult[]> {
  return parts.then((results) => {
    if (!results.some((r) => "later" in r)) return results as AsyncResult[];
    return Promise.all(results.map((r) => ("later" in r ? r.later : r)));
  });
}

/**
 * A host call's result given as JSON text already (built from reply bytes): the isolate
 * hands it to the guest as it is instead of stringifying a value.
 */
export class RawJson {
  constructor(readonly json: string) {}
}
