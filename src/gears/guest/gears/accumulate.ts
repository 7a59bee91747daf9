/**
 * The states a step folds records into (accumulate, groupby, aggregate...): a fold whose
 * function returns a Promise holds the state's later records until it settles, so each state
 * sees its records in order.
 */
import { isFatal, isThenable } from "../core/errors.js";
import { later, stepTicks } from "./calls.js";
import { stepError } from "./execution.js";
import { at } from "./state.js";
import type { Acc, Exec, Fn, Push, StepDef } from "./types.js";

export function newAcc(a: unknown, k: string | null, p: number): Acc {
  return { a, k, p, busy: false, q: null, qi: 0 };
}

/** a = fn(a, r) (or fn(k, a, r) for a keyed state); Promises are awaited in order per state. */
export function fold(ex: Exec, st: StepDef, s: Acc, fn: Fn, r: unknown): void {
  if (s.busy) {
    if (s.q === null) s.q = [];
    s.q.push(r);
    return;
  }
  applyFold(ex, st, s, fn, r);
}

function applyFold(ex: Exec, st: StepDef, s: Acc, fn: Fn, r: unknown): void {
  const prev = at.step;
  at.step = st.where;
  stepTicks[0]++;
  let v: unknown;
  try {
    v = s.k === null ? fn(s.a, r) : fn(s.k, s.a, r);
  } catch (e) {
    if (isFatal(e)) throw e; // current() keeps naming this step
    at.step = prev;
    stepError(ex, st, e);
    return;
  }
  at.step = prev;
  if (!isThenable(v)) {
    s.a = v;
    return;
  }
  s.busy = true;
  later(
    ex,
    st,
    v,
    (val) => {
      s.a = val;
    },
    () => {
      s.busy = false;
      drain(ex, st, s, fn);
    },
  );
}

/** Emits each group's {key, value} record in the partition that owns the key. */
export function emitGroups(groups: Map<string, Acc>, next: Push): void {
  for (const s of groups.values()) {
    at.part = s.p;
    next({ key: s.k, value: s.a });
  }
}

function drain(ex: Exec, st: StepDef, s: Acc, fn: Fn): void {
  const saved = at.part;
  at.part = s.p;
  while (!s.busy && s.q !== null && s.qi < s.q.length) {
    const r = s.q[s.qi];
    s.q[s.qi++] = undefined;
    applyFold(ex, st, s, fn, r);
  }
  if (s.q !== null && s.qi >= s.q.length) {
    s.q = null;
    s.qi = 0;
  }
  at.part = saved;
}

/** String(k) for a group key; a key that cannot be a string drops the record. */
export function toKey(ex: Exec, st: StepDef, v: unknown): string | null {
  if (typeof v === "string") return v;
  try {
    return String(v);
  } catch (e) {
    stepError(ex, st, e);
    return null;
  }
}
