/**
 * Several TFCALLASYNCs of a library as one batch, running concurrently as T&F's coroutines
 * do: each runs until its first await, the others run meanwhile, and the `callAsync`s they
 * make before the guest yields leave together (the sandbox hands the host every
 * `__host.callAsync` of one pass as one round, which the host sends as one pipeline).
 *
 * Each call's outcome goes to the host as soon as its own Promise settles, as a note
 * (ASYNC_SETTLED), so its client is answered then, not when the batch ends. With each round
 * of calls goes one ASYNC_JOIN call, which the host answers once the round's other calls are
 * answered: with the TFCALLASYNCs that arrived meanwhile (started here at once), [] when none
 * did, or null when it takes no more (its budget is spent, or the library's line moved on).
 * The batch settles when every call it started has settled and no ASYNC_JOIN is under way.
 *
 * The batch's entry need not last that long: once it has run its budget, or another entry
 * waits for the isolate, while its calls await host calls, the entry ends and later entries
 * resume them (the sandbox's resumable calls), with sync TFCALLs, trigger events and other
 * batches in between, as T&F's coroutines let the lock go between their awaits. A call whose
 * Promise can never settle is left to the sandbox's rule (the batch fails with that error for
 * the calls still open, once nothing else could settle them), after the others were answered.
 */
import { g, host } from "../core/host.js";
import { ASYNC_JOIN, type BatchCalls } from "../entry.js";

/**
 * Starts the TFCALLASYNC whose record starts at `at` in `list` (BatchCalls), the `index`th
 * of batch `batch` (of database `db`); it reports its own outcome. A Promise when it has not settled yet.
 */
export type StartAsync = (
  batch: number,
  db: number,
  list: BatchCalls,
  at: number,
  index: number,
) => PromiseLike<unknown> | null;

/** Counts calls into user code; the sandbox gives each its own time limit (prelude's __steps). */
const steps: { [i: number]: number } = (g.__steps as Float64Array | undefined) ?? [0];

/** A call into user code starts (a function, or a coroutine going on after an await): its own time limit. */
export function tick(): void {
  steps[0]++;
}

/**
 * Set while a batch of TFCALLASYNCs takes joiners (the latest one started: a batch whose
 * entry ended before its calls settled takes none): asks for joiners along with a call going out.
 */
let joinHook: (() => void) | null = null;

/**
 * A coroutine's host call goes out (callAsync, runOnKey, runOnShards): while a batch of
 * TFCALLASYNCs runs, one ASYNC_JOIN goes with the calls of this pass. Asked only then, so a
 * batch never goes to the host for nothing but joiners (a thread hop that would find none).
 */
export function callGoesOut(): void {
  if (joinHook !== null) joinHook();
}

/** Runs batch `batch`'s `calls` (and those the host hands over while they run); settles when all have. */
export function runConcurrently(
  batch: number,
  db: number,
  calls: BatchCalls,
  start: StartAsync,
): null | Promise<null> {
  let open = 0;
  let started = 0;
  let asking = false;
  /** The host takes no more (its answer was null): this entry asks no more. */
  let full = false;
  let finish: ((v: null) => void) | null = null;

  function end(): void {
    if (joinHook === hook) joinHook = null;
    if (finish !== null) finish(null);
  }

  function closed(): void {
    if (--open === 0 && !asking) end();
  }

  function startAll(list: BatchCalls): void {
    for (let at = 0; at < list.length;) {
      const slotsAt = at + 2 + (list[at + 1] as number);
      const next = slotsAt + 1 + (list[slotsAt] as number);
      const pending = start(batch, db, list, at, started++);
      if (pending !== null) {
        open++;
        pending.then(closed, closed);
      }
      at = next;
    }
  }

  function answered(more: unknown): void {
    asking = false;
    if (Array.isArray(more)) {
      if (more.length > 0) startAll(more as BatchCalls);
    } else {
      full = true;
      if (joinHook === hook) joinHook = null;
    }
    if (open === 0) end();
  }

  function hook(): void {
    if (asking || full) return;
    asking = true;
    Promise.resolve(host.callAsync(ASYNC_JOIN, batch)).then(answered, () => answered(null));
  }

  joinHook = hook;
  startAll(calls);
  if (open === 0 && !asking) {
    if (joinHook === hook) joinHook = null;
    return null;
  }
  return new Promise<null>((resolve) => (finish = resolve));
}
