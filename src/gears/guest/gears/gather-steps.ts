/**
 * The links of steps that gather records (groups, counts, a sorted list...) and emit them
 * once their input is complete, from the phases they add, which finish() runs in pipeline order.
 */
import { isFatal } from "../core/errors.js";
import { deepCopy } from "../core/values.js";
import { emitGroups, fold, newAcc, toKey } from "./accumulate.js";
import { call1, callN, stepTicks } from "./calls.js";
import { ownerOf, stepError } from "./execution.js";
import { compareValues, distinctKey } from "./order.js";
import { at } from "./state.js";
import type { Acc, Cont, Exec, Fn, Push, StepDef } from "./types.js";

/** The step's link; `phases` receives what it does once its input is complete. */
export function gatherLink(ex: Exec, st: StepDef, next: Push, P: number, phases: (() => void)[]): Push {
  const f0 = st.fns[0];
  const f1 = st.fns[1];
  const f2 = st.fns[2];
  switch (st.type) {
    case "accumulate": {
      const states = new Array<Acc | undefined>(P);
      phases.push(() => {
        for (let p = 0; p < P; p++) {
          const s = states[p];
          if (s === undefined) continue;
          at.part = p;
          next(s.a);
        }
      });
      return (r) => {
        const p = at.part as number;
        let s = states[p];
        if (s === undefined) s = states[p] = newAcc(undefined, null, p);
        fold(ex, st, s, f0 as Fn, r);
      };
    }
    case "localgroupby": {
      const groups: Map<string, Acc>[] = [];
      for (let p = 0; p < P; p++) groups.push(new Map());
      const k: Cont = (v, r) => {
        const key = toKey(ex, st, v);
        if (key === null) return;
        const p = at.part as number;
        let s = groups[p].get(key);
        if (s === undefined) groups[p].set(key, (s = newAcc(undefined, key, p)));
        fold(ex, st, s, f1 as Fn, r);
      };
      phases.push(() => {
        for (let p = 0; p < P; p++) {
          at.part = p;
          for (const s of groups[p].values()) next({ key: s.k, value: s.a });
        }
      });
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    case "groupby": {
      const groups = new Map<string, Acc>();
      const k: Cont = (v, r) => {
        const key = toKey(ex, st, v);
        if (key === null) return;
        let s = groups.get(key);
        if (s === undefined) groups.set(key, (s = newAcc(undefined, key, ownerOf(ex, key))));
        const saved = at.part;
        at.part = s.p;
        fold(ex, st, s, f1 as Fn, r);
        at.part = saved;
      };
      phases.push(() => emitGroups(groups, next));
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    case "batchgroupby": {
      const groups = new Map<string, { p: number; list: unknown[] }>();
      const k: Cont = (v, r) => {
        const key = toKey(ex, st, v);
        if (key === null) return;
        let gr = groups.get(key);
        if (gr === undefined) groups.set(key, (gr = { p: ownerOf(ex, key), list: [] }));
        gr.list.push(r);
      };
      phases.push(() => {
        for (const [key, gr] of groups) {
          at.part = gr.p;
          callN(ex, st, f1 as Fn, [key, gr.list], (value) => next({ key, value }));
        }
      });
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    case "aggregate": {
      const zero = st.params[0];
      const states = new Array<Acc | undefined>(P);
      const total = newAcc(undefined, null, 0);
      phases.push(() => {
        at.part = 0;
        total.a = deepCopy(zero, 0);
        for (let p = 0; p < P; p++) {
          const s = states[p];
          if (s !== undefined) fold(ex, st, total, f1 as Fn, s.a);
        }
      });
      phases.push(() => {
        at.part = 0;
        next(total.a);
      });
      return (r) => {
        const p = at.part as number;
        let s = states[p];
        if (s === undefined) s = states[p] = newAcc(deepCopy(zero, 0), null, p);
        fold(ex, st, s, f0 as Fn, r);
      };
    }
    case "aggregateby": {
      const zero = st.params[0];
      const local: Map<string, Acc>[] = [];
      for (let p = 0; p < P; p++) local.push(new Map());
      const global = new Map<string, Acc>();
      const k: Cont = (v, r) => {
        const key = toKey(ex, st, v);
        if (key === null) return;
        const p = at.part as number;
        let s = local[p].get(key);
        if (s === undefined) local[p].set(key, (s = newAcc(deepCopy(zero, 0), key, p)));
        fold(ex, st, s, f1 as Fn, r);
      };
      phases.push(() => {
        for (let p = 0; p < P; p++) {
          for (const [key, s] of local[p]) {
            let t = global.get(key);
            if (t === undefined) global.set(key, (t = newAcc(deepCopy(zero, 0), key, ownerOf(ex, key))));
            at.part = t.p;
            fold(ex, st, t, f2 as Fn, s.a);
          }
        }
      });
      phases.push(() => emitGroups(global, next));
      return (r) => call1(ex, st, f0 as Fn, r, k);
    }
    case "count": {
      let n = 0;
      phases.push(() => {
        at.part = 0;
        next(n);
      });
      return () => {
        n++;
      };
    }
    case "countby": {
      const counts = new Map<string, { p: number; n: number }>();
      const add = (key: string): void => {
        const c = counts.get(key);
        if (c === undefined) counts.set(key, { p: ownerOf(ex, key), n: 1 });
        else c.n++;
      };
      phases.push(() => {
        for (const [key, c] of counts) {
          at.part = c.p;
          next({ key, value: c.n });
        }
      });
      const k: Cont = (v) => {
        const key = toKey(ex, st, v);
        if (key !== null) add(key);
      };
      if (f0 === undefined) {
        return (r) => {
          if (typeof r !== "string") return k(r, r);
          const c = counts.get(r);
          if (c === undefined) counts.set(r, { p: ownerOf(ex, r), n: 1 });
          else c.n++;
        };
      }
      return (r) => call1(ex, st, f0, r, k);
    }
    case "avg": {
      let sum = 0;
      let n = 0;
      const k: Cont = (v) => {
        sum += typeof v === "number" ? v : Number(v);
        n++;
      };
      phases.push(() => {
        if (n === 0) return;
        at.part = 0;
        next(sum / n);
      });
      if (f0 === undefined) {
        return (r) => {
          try {
            k(Number(r), r);
          } catch (e) {
            stepError(ex, st, e);
          }
        };
      }
      return (r) =>
        call1(ex, st, f0, r, (v, r0) => {
          try {
            k(v, r0);
          } catch (e) {
            stepError(ex, st, e);
          }
        });
    }
    case "distinct": {
      const seen = new Map<string, unknown>();
      phases.push(() => {
        at.part = 0;
        for (const v of seen.values()) next(v);
      });
      return (r) => {
        const key = distinctKey(r);
        if (!seen.has(key)) seen.set(key, r);
      };
    }
    case "sort": {
      const list: unknown[] = [];
      const reverse = st.params[0] === true;
      phases.push(() => {
        at.part = 0;
        const prev = at.step;
        at.step = st.where;
        stepTicks[0]++;
        stepTicks[0]++;
        try {
          if (f0 !== undefined) list.sort((a, b) => Number(f0(a, b)));
          else if (reverse) list.sort((a, b) => compareValues(b, a));
          else list.sort(compareValues);
        } catch (e) {
          if (isFatal(e)) throw e;
          at.step = prev;
          stepError(ex, st, e);
          return;
        }
        at.step = prev;
        for (let i = 0; i < list.length; i++) next(list[i]);
      });
      return (r) => {
        list.push(r);
      };
    }
    default:
      throw new Error(`unknown step ${st.type}`);
  }
}
