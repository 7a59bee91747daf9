/**
 * foreach steps whose commands' replies nothing reads go to the host in batches, one
 * `executeEach` call for all the records fed in one entry, instead of one promise per record.
 */
import { isFatal, isThenable, safeString } from "../core/errors.js";
import { g, host } from "../core/host.js";
import { call1, later, stepTicks } from "./calls.js";
import { failFatal, settle, stepError } from "./execution.js";
import { ownExecute, ownExecuteAsync } from "./globals.js";
import { dropUnlessReadAhead } from "./read-ahead.js";
import { at } from "./state.js";
import type { Cont, Exec, Fn, Push, StepDef } from "./types.js";

/**
 * Whether a foreach function is only `(...) => execute(...)` with plain arguments: foreach
 * ignores what it returns, so nothing in the script sees the reply, and its commands can
 * be pipelined (an error reply still fails that record). Arguments that call anything
 * could call execute() themselves and wait for it, so those stay synchronous; so do template
 * literals (\x60 below, a backquote), whose ${} can call anything too.
 */
export function repliesUnused(f: Fn): boolean {
  const src = Function.prototype.toString.call(f);
  const arrow = src.indexOf("=>");
  if (arrow === -1) return false;
  return /^execute\s*\([^()\x60]*\)$/.test(src.slice(arrow + 2).trim());
}

/** Captured at start: a script that replaces Promise cannot stop a batch from being sent. */
const settledPromise = Promise.resolve();

/**
 * A foreach whose replies are unused (repliesUnused): each record's execute() is only
 * collected, and the calls of all records that reach the step before the guest yields go
 * to the host as one `executeEach` call, so a batch of events costs one promise, not one
 * per record. A record goes on once its command succeeded; an error reply drops it with
 * that error, as the synchronous execute() would. A script that replaced execute() or
 * executeAsync() gets its own functions, one record at a time.
 */
export function batchedForeach(ex: Exec, st: StepDef, f: Fn, next: Push): Push {
  /**
   * This round's commands, back to back in one flat list: `partition, n, name, ...args` each
   * (`n` strings: the name and its arguments): no list per call, and a shorter text to make
   * of them; and the records waiting on them. A call that is the one before it but for its
   * last argument (the usual foreach: the record's key last) is `-1, lastArg` alone
   * (execute-batch.ts tableOfFlat reads both forms).
   */
  let calls: unknown[] = [];
  let count = 0;
  /** The last call written whole: where its name is in `calls`, its `n` and partition (-1: none). */
  let wholeAt = -1;
  let wholeN = 0;
  let wholePart: number | null = null;
  /**
   * The records waiting on this round's calls, four elements each (no list per record): the
   * record, its partition, and which of the round's calls (their numbers) it made, from, to.
   */
  let held: unknown[] = [];
  const collect = function execute(command: unknown, ...args: unknown[]): undefined {
    const name = typeof command === "string" ? command : safeString(command);
    dropUnlessReadAhead(name);
    if (count === 0) {
      // Sent once the current entry's synchronous work is done: with every record fed.
      ex.pending++;
      void settledPromise.then(send);
    }
    count++;
    const n = args.length + 1;
    const part = at.part;
    if (n === wholeN && n >= 2 && part === wholePart && calls[wholeAt] === name) {
      // Only string arguments are compared: String() of anything else runs once, when written.
      let same = true;
      for (let i = 0; i < n - 2; i++) {
        if (args[i] !== calls[wholeAt + 1 + i]) {
          same = false;
          break;
        }
      }
      if (same) {
        const last = args[n - 2];
        calls.push(-1, typeof last === "string" ? last : safeString(last));
        return undefined;
      }
    }
    wholeAt = calls.length + 2;
    wholeN = n;
    wholePart = part;
    calls.push(part, n, name);
    for (let i = 0; i < args.length; i++) {
      const v = args[i];
      calls.push(typeof v === "string" ? v : safeString(v));
    }
    return undefined;
  };
  const send = (): void => {
    const round = { list: calls, calls: count, held };
    calls = [];
    count = 0;
    wholeAt = -1;
    wholeN = 0;
    held = [];
    const done = (out: unknown, err: unknown): void => deliver(round, out, err);
    try {
      host.callAsync("executeEach", round.list).then(
        (out) => done(out, null),
        (e: unknown) => done(null, e),
      );
    } catch (e) {
      done(null, e);
    }
  };
  const deliver = (round: { calls: number; held: unknown[] }, out: unknown, err: unknown): void => {
    if (ex.dropped) return;
    // `{failed: [[index, message]...]}` (only the failures: nothing reads a reply), or one
    // `[0, reply] | [1, message]` per call.
    const failed = (out as { failed?: unknown } | null)?.failed;
    const errors: unknown[] = [];
    if (Array.isArray(failed)) {
      for (const f of failed) if (Array.isArray(f)) errors[Number(f[0])] = f[1];
    } else {
      const outcomes = Array.isArray(out) ? (out as unknown[]) : [];
      for (let j = 0; j < round.calls; j++) {
        const o = outcomes[j];
        if (!Array.isArray(o) || o[0] !== 0) errors[j] = Array.isArray(o) ? o[1] : "no answer from the host";
      }
    }
    const saved = at.part;
    const held = round.held;
    try {
      for (let i = 0; i < held.length; i += 4) {
        at.part = held[i + 1] as number | null;
        let failure: unknown = err;
        const from = held[i + 2] as number;
        if (failure === null && errors.length > from) {
          for (let j = from; j < (held[i + 3] as number); j++) {
            if (j in errors) {
              failure = new Error(safeString(errors[j]));
              break;
            }
          }
        }
        if (failure === null) next(held[i]);
        else stepError(ex, st, failure);
      }
    } catch (e) {
      failFatal(ex, e);
    }
    at.part = saved;
    settle(ex);
  };
  const passOn: Cont = (_v, r) => next(r);
  const where = st.where;
  return (r) => {
    if (g.execute !== ownExecute || g.executeAsync !== ownExecuteAsync) {
      call1(ex, st, f, r, passOn);
      return;
    }
    const before = count;
    // call1's body spelled out, as passLink's map and filter do (QuickJS inlines nothing):
    // no call and no continuation per record.
    const prev = at.step;
    at.step = where;
    stepTicks[0]++;
    g.execute = collect;
    let v: unknown;
    try {
      v = f(r);
    } catch (e) {
      g.execute = ownExecute;
      if (isFatal(e)) throw e; // current() keeps naming this step
      at.step = prev;
      stepError(ex, st, e);
      return;
    }
    g.execute = ownExecute;
    at.step = prev;
    if (isThenable(v)) {
      // A function that shadows execute() may return a promise: the record goes on when that settles.
      later(ex, st, v as PromiseLike<unknown>, () => next(r));
      return;
    }
    if (count === before) {
      next(r);
      return;
    }
    held.push(r, at.part, before, count);
  };
}
