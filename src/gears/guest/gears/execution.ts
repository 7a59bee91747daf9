/**
 * The state of an execution that outlives one record: work still in flight (a step's
 * Promise, a batch of commands) and the errors that drop records. Every step needs these, so
 * they sit below the step chain, the user calls and the entry.
 */
import { formatError, isFatal } from "../core/errors.js";
import { slotOf } from "../core/slots.js";
import type { Exec, StepDef } from "./types.js";

/** The partition that owns `key` (with one partition, no slot is computed). */
export function ownerOf(ex: Exec, key: string): number {
  return ex.parts === 1 ? 0 : ex.owner[slotOf(key)];
}

/** One piece of in-flight work is over: once none is left, finish() may go on. */
export function settle(ex: Exec): void {
  ex.pending--;
  if (ex.pending === 0 && ex.fatal === null) {
    const w = ex.waiters;
    ex.waiters = [];
    for (const x of w) x.res();
  }
}

/** An error that ends the execution (an interrupt, out of memory): every waiter gets it. */
export function failFatal(ex: Exec, e: unknown): void {
  if (ex.fatal === null) ex.fatal = { error: e };
  const w = ex.waiters;
  ex.waiters = [];
  for (const x of w) x.rej(e);
}

/** null when nothing is in flight, else a Promise that settles when nothing is. */
export function whenSettled(ex: Exec): Promise<void> | null {
  if (ex.fatal !== null) throw ex.fatal.error;
  if (ex.pending === 0) return null;
  return new Promise<void>((res, rej) => ex.waiters.push({ res, rej }));
}

/** A user error drops the record and is reported; a fatal one ends the execution. */
export function stepError(ex: Exec, st: StepDef, e: unknown): void {
  if (isFatal(e)) throw e;
  ex.errors.push(formatError(e, st.type, st.line));
}
