/**
 * An execution's plan compiled into one chain of closures, a link per step: a record goes
 * through every step of every stage in one call, and a global step moves it to another
 * partition by switching the current one. What a step does once its input is complete
 * (emit groups, sort, count) becomes a phase that finish() runs in pipeline order.
 */
import { isFatal, isThenable } from "../core/errors.js";
import { deepCopy } from "../core/values.js";
import { emitGroups, fold, newAcc, toKey } from "./accumulate.js";
import { call1, callN, later, stepTicks } from "./calls.js";
import { ownerOf, stepError } from "./execution.js";
import { batchedForeach, repliesUnused } from "./foreach-batch.js";
import { compareValues, distinctKey } from "./order.js";
import { at } from "./state.js";
import {
  GLOBAL_OPS,
  STATELESS_OPS,
  type Acc,
  type Cont,
  type Exec,
  type Fn,
  type Phase,
  type Push,
  type StepDef,
} from "./types.js";

export function compile(ex: Exec): void {
  const steps = ex.action.steps;
  const P = ex.parts;
  const stageOf: number[] = [];
  let stage = 0;
  for (const st of steps) {
    stageOf.push(stage);
    if (GLOBAL_OPS.includes(st.type)) stage++;
  }
  let statelessPrefix = 0;
  while (statelessPrefix < steps.length && STATELESS_OPS.includes(steps[statelessPrefix].type))
    statelessPrefix++;

  const flushers: Phase[][] = [];
  let next: Push = (r) => {
    ex.results[at.part as number].push(r);
    ex.recordsOut++;
  };
  for (let i = steps.length - 1; i >= 0; i--) {
    const st = steps[i];
    const phases: (() => void)[] = [];
    next = build(ex, st, next, P, phases, i < statelessPrefix);
    if (phases.length > 0) {
      const s = GLOBAL_OPS.includes(st.type) ? stageOf[i] + 1 : stageOf[i];
      flushers.push(phases.map((run) => ({ stage: s, where: st.where, run })));
    }
  }
  flushers.reverse();
  ex.head = next;
  ex.phases = ([] as Phase[]).concat(...flushers);
}

/** One step as a link of the chain; `phases` receives what it does once its input is complete. */
function build(
  ex: Exec,
  st: StepDef,
  next: Push,
  P: number,
  phases: (() => void)[],
  closable: boolean,
): Push {
  const f0 = st.fns[0];
  const f1 = st.fns[1];
  const f2 = st.fns[2];
  switch (st.type) {
    // map, flatmap, filter and countby are call1 written out in their step (QuickJS does not
    // inline): a record costs one closure per step instead of three or four calls.
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
