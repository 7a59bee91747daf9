/**
 * Calling user code from a step: counts each call for the sandbox's per-call time limit,
 * names the step for current(), and continues a record whose call returned a Promise once
 * it settles, in the partition the record was in.
 */
import { isFatal, isThenable } from "../core/errors.js";
import { g } from "../core/host.js";
import { failFatal, settle, stepError } from "./execution.js";
import { at } from "./state.js";
import type { Cont, Exec, Fn, StepDef } from "./types.js";

/** Counts calls into user code; the sandbox gives each one its own time limit (prelude's __steps). */
export const stepTicks: { [i: number]: number } = (g.__steps as Float64Array | undefined) ?? [0];

/** Waits for a step's Promise, then continues the record in the partition it was in. */
export function later(
  ex: Exec,
  st: StepDef,
  v: PromiseLike<unknown>,
  ok: (val: unknown) => void,
  after?: () => void,
): void {
  const p = at.part;
  ex.pending++;
  const resume = (fn: () => void): void => {
    if (ex.dropped) return;
    const saved = at.part;
    at.part = p;
    try {
      fn();
      if (after !== undefined) after();
    } catch (e) {
      failFatal(ex, e);
    }
    at.part = saved;
    settle(ex);
  };
  try {
    v.then(
      (val) => resume(() => ok(val)),
      (err) => resume(() => stepError(ex, st, err)),
    );
  } catch (e) {
    resume(() => stepError(ex, st, e));
  }
}

/** fn(r), then k(result, r); a throw drops the record with an error. */
export function call1(ex: Exec, st: StepDef, fn: Fn, r: unknown, k: Cont): void {
  const prev = at.step;
  at.step = st.where;
  stepTicks[0]++;
  let v: unknown;
  try {
    v = fn(r);
  } catch (e) {
    if (isFatal(e)) throw e; // current() keeps naming this step
    at.step = prev;
    stepError(ex, st, e);
    return;
  }
  at.step = prev;
  if (isThenable(v)) later(ex, st, v, (val) => k(val, r));
  else k(v, r);
}

/** fn(...args), then k(result); for the calls made when a step emits at the end. */
export function callN(ex: Exec, st: StepDef, fn: Fn, args: unknown[], k: (v: unknown) => void): void {
  const prev = at.step;
  at.step = st.where;
  stepTicks[0]++;
  let v: unknown;
  try {
    v = fn(...args);
  } catch (e) {
    if (isFatal(e)) throw e; // current() keeps naming this step
    at.step = prev;
    stepError(ex, st, e);
    return;
  }
  at.step = prev;
  if (isThenable(v)) later(ex, st, v, k);
  else k(v);
}
