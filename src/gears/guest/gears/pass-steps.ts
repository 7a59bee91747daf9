/**
 * The links of steps that pass each record on (or drop it) as it comes, with nothing to emit
 * once the input is complete: they add no phase.
 */
import { isFatal, isThenable } from "../core/errors.js";
import { toKey } from "./accumulate.js";
import { call1, later, stepTicks } from "./calls.js";
import { ownerOf, stepError } from "./execution.js";
import { batchedForeach, repliesUnused } from "./foreach-batch.js";
import { at } from "./state.js";
import type { Cont, Exec, Fn, Push, StepDef } from "./types.js";

/**
 * The step's link, or null when the step is not one of these. `closable`: nothing before
 * the step keeps records back, so a limit reached closes its partition to further records.
 */
export function passLink(ex: Exec, st: StepDef, next: Push, P: number, closable: boolean): Push | null {
  const f0 = st.fns[0];
  // map, flatmap and filter spell out call1's body (calls.ts) on purpose: QuickJS inlines
  // nothing, and the call, continuation and thenable check per record were a quarter of
  // a KeysReader job's guest time (bench/RESULTS.md, "Map/reduce: fewer calls per record").
  switch (st.type) {
    case "map": {
      const f = f0 as Fn;
      const where = st.where;
      return (r) => {
        const prev = at.step;
        at.step = where;
        stepTicks[0]++;
        let v: unknown;
        try {
          v = f(r);
        } catch (e) {
          if (isFatal(e)) throw e;
          at.step = prev;
          stepError(ex, st, e);
          return;
        }
        at.step = prev;
        if (typeof v === "string" || !isThenable(v)) next(v);
        else later(ex, st, v, next);
      };
    }
    case "flatmap": {
      const f = f0 as Fn;
      const where = st.where;
      const k = (v: unknown): void => {
        if (Array.isArray(v)) for (let i = 0; i < v.length; i++) next(v[i]);
        else next(v);
      };
      return (r) => {
        const prev = at.step;
        at.step = where;
        stepTicks[0]++;
        let v: unknown;
        try {
          v = f(r);
        } catch (e) {
          if (isFatal(e)) throw e;
          at.step = prev;
          stepError(ex, st, e);
          return;
        }
        at.step = prev;
        if (Array.isArray(v)) for (let i = 0; i < v.length; i++) next(v[i]);
        else if (!isThenable(v)) next(v);
        else later(ex, st, v, k);
      };
    }
    case "foreach": {
      if (repliesUnused(f0 as Fn)) return batchedForeach(ex, st, f0 as Fn, next);
      const k: Cont = (_v, r) => next(r);
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    case "filter": {
      const f = f0 as Fn;
      const where = st.where;
      return (r) => {
        const prev = at.step;
        at.step = where;
        stepTicks[0]++;
        let v: unknown;
        try {
          v = f(r);
        } catch (e) {
          if (isFatal(e)) throw e;
          at.step = prev;
          stepError(ex, st, e);
          return;
        }
        at.step = prev;
        if (typeof v === "boolean" || typeof v === "string" || !isThenable(v)) {
          if (v) next(r);
        } else
          later(ex, st, v, (val) => {
            if (val) next(r);
          });
      };
    }
    case "limit": {
      const n = st.params[0] as number;
      const offset = st.params[1] as number;
      const end = offset + n;
      const seen = new Array<number>(P).fill(0);
      return (r) => {
        const p = at.part as number;
        const i = seen[p]++;
        if (i >= offset && i < end) next(r);
        if (closable && i + 1 >= end) ex.closed[p] = true;
      };
    }
    case "collect":
      return (r) => {
        const saved = at.part;
        at.part = 0;
        next(r);
        at.part = saved;
      };
    case "repartition": {
      const k: Cont = (v, r) => {
        const key = toKey(ex, st, v);
        if (key === null) return;
        const saved = at.part;
        at.part = ownerOf(ex, key);
        next(r);
        at.part = saved;
      };
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    default:
      return null;
  }
}
