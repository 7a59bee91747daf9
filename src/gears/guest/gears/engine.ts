/**
 * The GearsBuilder engine: runs the actions' plans over the records the host feeds, with
 * execute() and the other globals of the API. Records flow through one fused closure chain
 * per execution, across global steps too: a global step moves a record to another partition
 * by switching the "current partition" and passing it on; group/count/sort state is kept per
 * execution in the guest and emitted by `finish()`, in pipeline order.
 */
import { g, host, defineEntry } from "../core/host.js";
import { formatError, isFatal, isThenable, safeString } from "../core/errors.js";
import { deepCopy, toRaw, toStr } from "../core/values.js";
import { slotOf } from "../core/slots.js";
import {
  GEARS_ENTRY,
  RESULTS_JSON,
  RESULTS_NONE,
  RESULTS_VALUES,
  type ActionInfo,
  type Fed,
  type GearsEntry,
  type Progress,
  type ResultForm,
  type Streamed,
  type Topology,
} from "../entry.js";
import { actions } from "./builder.js";
import {
  beginFeed,
  dropRounds,
  dropUnlessReadAhead,
  endFeed,
  feedRecord,
  MISS,
  readAhead,
  setReadAheadNames,
} from "./read-ahead.js";
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
  type Result,
  type StepDef,
  type Where,
} from "./types.js";

const execs = new Map<number, Exec>();
let lastExecId = 0;

function ownerOf(ex: Exec, key: string): number {
  return ex.parts === 1 ? 0 : ex.owner[slotOf(key)];
}

g.execute = function execute(command: unknown, ...args: unknown[]): unknown {
  const name = typeof command === "string" ? command : safeString(command);
  const argv = new Array<string>(args.length);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    argv[i] = typeof a === "string" ? a : safeString(a);
  }
  const v = readAhead(name, argv);
  if (v !== MISS) return v;
  return host.callSync("execute", at.part, name, ...argv);
};
g.executeAsync = function executeAsync(command: unknown, ...args: unknown[]): PromiseLike<unknown> {
  const name = safeString(command);
  dropUnlessReadAhead(name);
  return host.callAsync("execute", at.part, name, ...args.map(safeString));
};
/**
 * An event record whose value was too big to send along (a set a handler keeps adding
 * to): `value` is read from Redis the first time the handler touches it.
 */
function lazyValue(rec: { key: unknown; lazyValue?: boolean }): void {
  delete rec.lazyValue;
  Object.defineProperty(rec, "value", LAZY_VALUE);
}

function settleValue(rec: object, v: unknown): void {
  Object.defineProperty(rec, "value", { value: v, writable: true, enumerable: true, configurable: true });
}

/** One accessor shared by every lazy record (it reads `this`): no closures per record. */
const LAZY_VALUE: PropertyDescriptor = {
  get(this: { key: unknown }): unknown {
    const v = host.callSync("readValue", safeString(this.key));
    settleValue(this, v);
    return v;
  },
  set(this: object, v: unknown): void {
    settleValue(this, v);
  },
  enumerable: true,
  configurable: true,
};

/**
 * Event records sent as rows (entry.ts EventRows): four elements each, key, type, event and
 * the index of its value in `values` (-1: read lazily). Each record is made whole, in the
 * field order the object form gives ({key, type, event, value}), with no field to delete.
 */
function recordsOfRows(rows: unknown[], values: unknown[]): unknown[] {
  const n = rows.length >> 2;
  const out = new Array<unknown>(n);
  for (let i = 0, j = 0; j < n; i += 4, j++) {
    const ref = rows[i + 3] as number;
    if (ref >= 0) out[j] = { key: rows[i], type: rows[i + 1], event: rows[i + 2], value: values[ref] };
    else {
      const rec = { key: rows[i], type: rows[i + 1], event: rows[i + 2] };
      Object.defineProperty(rec, "value", LAZY_VALUE);
      out[j] = rec;
    }
  }
  return out;
}

const ownExecute = g.execute;
const ownExecuteAsync = g.executeAsync;

/**
 * Whether a foreach function is only `(...) => execute(...)` with plain arguments: foreach
 * ignores what it returns, so nothing in the script sees the reply, and its commands can
 * be pipelined (an error reply still fails that record). Arguments that call anything
 * could call execute() themselves and wait for it, so those stay synchronous.
 */
function repliesUnused(f: Fn): boolean {
  const src = Function.prototype.toString.call(f);
  const arrow = src.indexOf("=>");
  if (arrow === -1) return false;
  return /^execute\s*\([^()`]*\)$/.test(src.slice(arrow + 2).trim());
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
function batchedForeach(ex: Exec, st: StepDef, f: Fn, next: Push): Push {
  /** This round's commands, `[partition, name, ...args]`, and the records waiting on them. */
  let calls: unknown[][] = [];
  let held: unknown[] = [];
  let heldParts: (number | null)[] = [];
  /** Where each held record's commands start and end in `calls`. */
  let heldFrom: number[] = [];
  let heldEnds: number[] = [];
  const collect = function execute(command: unknown, ...args: unknown[]): undefined {
    const name = safeString(command);
    dropUnlessReadAhead(name);
    const call: unknown[] = [at.part, name];
    for (let i = 0; i < args.length; i++) call.push(safeString(args[i]));
    if (calls.length === 0) {
      // Sent once the current entry's synchronous work is done: with every record fed.
      ex.pending++;
      void settledPromise.then(send);
    }
    calls.push(call);
    return undefined;
  };
  const send = (): void => {
    const round = { list: calls, calls: calls.length, held, heldParts, heldFrom, heldEnds };
    calls = [];
    held = [];
    heldParts = [];
    heldFrom = [];
    heldEnds = [];
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
  const deliver = (
    round: {
      calls: number;
      held: unknown[];
      heldParts: (number | null)[];
      heldFrom: number[];
      heldEnds: number[];
    },
    out: unknown,
    err: unknown,
  ): void => {
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
    try {
      for (let i = 0; i < round.held.length; i++) {
        at.part = round.heldParts[i];
        let failure: unknown = err;
        if (failure === null && errors.length > round.heldFrom[i]) {
          for (let j = round.heldFrom[i]; j < round.heldEnds[i]; j++) {
            if (j in errors) {
              failure = new Error(safeString(errors[j]));
              break;
            }
          }
        }
        if (failure === null) next(round.held[i]);
        else stepError(ex, st, failure);
      }
    } catch (e) {
      failFatal(ex, e);
    }
    at.part = saved;
    settle(ex);
  };
  const passOn: Cont = (_v, r) => next(r);
  /** Whether the record's call1 is still on the stack, and whether it passed the record on then. */
  let now = false;
  let ok = false;
  // A function that shadows execute() may return a promise: the record goes on when that settles.
  const passed: Cont = (_v, rec) => {
    if (now) ok = true;
    else next(rec);
  };
  return (r) => {
    if (g.execute !== ownExecute || g.executeAsync !== ownExecuteAsync) {
      call1(ex, st, f, r, passOn);
      return;
    }
    const before = calls.length;
    now = true;
    ok = false;
    g.execute = collect;
    try {
      call1(ex, st, f, r, passed);
    } finally {
      g.execute = ownExecute;
      now = false;
    }
    if (!ok) return;
    if (calls.length === before) {
      next(r);
      return;
    }
    held.push(r);
    heldParts.push(at.part);
    heldFrom.push(before);
    heldEnds.push(calls.length);
  };
}
g.log = function log(message: unknown, level: unknown = "notice"): void {
  host.notify("log", safeString(level), safeString(message));
};
const configGet = function configGet(name: unknown): unknown {
  return host.callSync("configGet", safeString(name));
};
g.configGet = configGet;
g.gearsConfigGet = function gearsConfigGet(name: unknown, dflt?: unknown): unknown {
  return configGet(name) ?? dflt ?? null;
};
g.hashtag = function hashtag(): unknown {
  return host.callSync("hashtag", at.part);
};
g.callNext = function callNext(...args: unknown[]): unknown {
  dropRounds();
  return host.callSync("callNext", ...args.map(safeString));
};
g.getCommand = function getCommand(): unknown {
  return host.callSync("getCommand");
};
g.overrideReply = function overrideReply(value: unknown): void {
  host.callSync("overrideReply", value === undefined ? null : value);
};
const timers: Fn[] = [];
g.registerTimeEvent = function registerTimeEvent(
  seconds: unknown,
  callback: unknown,
  keyName?: unknown,
): void {
  if (typeof callback !== "function") throw new TypeError("registerTimeEvent needs a callback function");
  const n = Number(seconds);
  if (!(n > 0)) throw new RangeError("registerTimeEvent needs a positive number of seconds");
  timers.push(callback as Fn);
  host.callSync(
    "registerTimeEvent",
    timers.length - 1,
    n,
    keyName === undefined ? null : safeString(keyName),
  );
};

// ---------------------------------------------------------------- the engine: calling user code

function settle(ex: Exec): void {
  ex.pending--;
  if (ex.pending === 0 && ex.fatal === null) {
    const w = ex.waiters;
    ex.waiters = [];
    for (const x of w) x.res();
  }
}

function failFatal(ex: Exec, e: unknown): void {
  if (ex.fatal === null) ex.fatal = { error: e };
  const w = ex.waiters;
  ex.waiters = [];
  for (const x of w) x.rej(e);
}

/** null when nothing is in flight, else a Promise that settles when nothing is. */
function whenSettled(ex: Exec): Promise<void> | null {
  if (ex.fatal !== null) throw ex.fatal.error;
  if (ex.pending === 0) return null;
  return new Promise<void>((res, rej) => ex.waiters.push({ res, rej }));
}

function stepError(ex: Exec, st: StepDef, e: unknown): void {
  if (isFatal(e)) throw e;
  ex.errors.push(formatError(e, st.type, st.line));
}

/** Waits for a step's Promise, then continues the record in the partition it was in. */
function later(
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
/** Counts calls into user code; the sandbox gives each one its own time limit (prelude's __steps). */
const stepTicks: { [i: number]: number } = (g.__steps as Float64Array | undefined) ?? [0];

function call1(ex: Exec, st: StepDef, fn: Fn, r: unknown, k: Cont): void {
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
function callN(ex: Exec, st: StepDef, fn: Fn, args: unknown[], k: (v: unknown) => void): void {
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

function newAcc(a: unknown, k: string | null, p: number): Acc {
  return { a, k, p, busy: false, q: null, qi: 0 };
}

/** a = fn(a, r) (or fn(k, a, r) for a keyed state); Promises are awaited in order per state. */
function fold(ex: Exec, st: StepDef, s: Acc, fn: Fn, r: unknown): void {
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
function emitGroups(groups: Map<string, Acc>, next: Push): void {
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
function toKey(ex: Exec, st: StepDef, v: unknown): string | null {
  if (typeof v === "string") return v;
  try {
    return String(v);
  } catch (e) {
    stepError(ex, st, e);
    return null;
  }
}

function distinctKey(v: unknown): string {
  if (typeof v === "string") return "s" + v;
  if (v === undefined) return "u";
  try {
    return "j" + String(JSON.stringify(v));
  } catch {
    return "x" + safeString(v);
  }
}

function compareStr(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1; // a surrogate pair is a code point above the BMP
    return x - y;
  }
  return a.length - b.length;
}

function typeRank(v: unknown): number {
  if (typeof v === "number") return 0;
  if (typeof v === "string") return 1;
  return 2;
}

/** Ascending: numbers numerically, then strings by code point, then the rest by their JSON. */
function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 0) {
    const x = a as number;
    const y = b as number;
    if (x < y) return -1;
    if (x > y) return 1;
    return Number.isNaN(x) ? (Number.isNaN(y) ? 0 : 1) : Number.isNaN(y) ? -1 : 0;
  }
  if (ra === 1) return compareStr(a as string, b as string);
  return compareStr(distinctKey(a), distinctKey(b));
}

// ---------------------------------------------------------------- the engine: compiling a plan

function compile(ex: Exec): void {
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

// ---------------------------------------------------------------- the engine: results

/** A partition's results as the host receives them (strings, or raw values with convertToStr off). */
function converted(ex: Exec, list: unknown[]): unknown[] {
  const str = ex.action.options.convertToStr !== false;
  const out: unknown[] = [];
  for (const r of list) {
    try {
      out.push(str ? toStr(r) : toRaw(r, 0));
    } catch (e) {
      if (isFatal(e)) throw e;
      ex.errors.push(formatError(e, "results", ex.action.line));
    }
  }
  return out;
}

/** Any character past ASCII (a regular expression runs natively in QuickJS, a loop does not). */
const NON_ASCII = /[\u0080-\uffff]/;

/** The bytes of `s` in UTF-8, as the host's Buffer.from writes it (a lone surrogate: 3). */
function utf8Length(s: string): number {
  if (!NON_ASCII.test(s)) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * Results converted to strings (the default), as RESP bulk strings back to back: one text per
 * batch crosses to the host, which keeps it as bytes without making a value of each result.
 */
function respText(list: unknown[]): string {
  let text = "";
  for (const v of list) {
    if (typeof v === "string") text += "$" + utf8Length(v) + "\r\n" + v + "\r\n";
    else text += "$-1\r\n";
  }
  return text;
}

/**
 * The results made since the last call, by partition, and forgotten here: a streaming
 * execution's. [partition, values], or [partition, RESP text, count] for strings.
 */
function takeResults(ex: Exec): Streamed[] {
  const out: Streamed[] = [];
  const str = ex.action.options.convertToStr !== false;
  for (let p = 0; p < ex.results.length; p++) {
    const list = ex.results[p];
    if (list.length === 0) continue;
    ex.results[p] = [];
    const values = converted(ex, list);
    out.push(str ? [p, respText(values), values.length] : [p, values]);
  }
  return out;
}

const getPrototypeOf = Object.getPrototypeOf;
const isArray = Array.isArray;
const objectPrototype = Object.prototype;

/**
 * The results as one JSON text of the list: one native JSON.stringify instead of one per
 * result, and one string for the host to keep (it makes each result's string only when
 * they are asked for). Only when each result's string is, unambiguously, the element itself
 * (a string) or its JSON text (plain objects and arrays without toJSON) or String() of it
 * (finite numbers, booleans): null otherwise, and the results go the per-result way, with
 * the errors that may give.
 */
function jsonText(list: unknown[]): string | null {
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    const t = typeof r;
    if (t === "string" || t === "boolean" || r === null || r === undefined) continue;
    if (t === "number") {
      if (Number.isFinite(r)) continue;
      return null;
    }
    if (t !== "object") return null;
    const proto: unknown = getPrototypeOf(r);
    if (proto !== objectPrototype && proto !== null && !isArray(r)) return null;
    if (typeof (r as { toJSON?: unknown }).toJSON === "function") return null;
  }
  try {
    const text: unknown = JSON.stringify(list);
    return typeof text === "string" ? text : null;
  } catch (e) {
    if (isFatal(e)) throw e;
    return null;
  }
}

/**
 * An execution over given records that hands its results over as RESULTS_JSON or
 * RESULTS_NONE: null when they must go as values (the per-result way) after all.
 */
function completeAsText(ex: Exec): Result | null {
  const list = ex.results.length === 1 ? ex.results[0] : ([] as unknown[]).concat(...ex.results);
  const text = jsonText(list);
  if (text === null) return null;
  ex.results = [];
  // RESULTS_NONE: nothing can fetch them, yet the list was made into text, for the errors that could give.
  return ex.form === RESULTS_NONE
    ? { results: [], errors: ex.errors, count: list.length }
    : { results: [], errors: ex.errors, json: text, count: list.length };
}

function complete(ex: Exec): Result {
  if (ex.stream) {
    ex.done = { results: [], errors: ex.errors, out: takeResults(ex) };
    return ex.done;
  }
  if (
    ex.form !== RESULTS_VALUES &&
    ex.action.options.convertToStr !== false &&
    ex.action.options.collect !== false
  ) {
    const done = completeAsText(ex);
    if (done !== null) {
      ex.done = done;
      return done;
    }
  }
  const perPartition = ex.results.map((list) => converted(ex, list));
  const results =
    ex.action.options.collect === false ? perPartition : ([] as unknown[]).concat(...perPartition);
  ex.done = { results, errors: ex.errors };
  ex.results = [];
  return ex.done;
}

function getExec(id: unknown): Exec {
  const ex = execs.get(Number(id));
  if (ex === undefined) throw new Error("execution plan does not exist");
  return ex;
}

function topologyOf(t: unknown): { parts: number; owner: Int16Array } {
  const owner = new Int16Array(16384);
  const o = (t ?? {}) as { partitions?: unknown; slots?: unknown };
  const parts = typeof o.partitions === "number" && o.partitions >= 1 ? Math.floor(o.partitions) : 1;
  if (Array.isArray(o.slots)) {
    for (const range of o.slots as unknown[]) {
      if (!Array.isArray(range)) continue;
      const [start, end, p] = range as number[];
      if (p >= 0 && p < parts) owner.fill(p, Math.max(0, start), Math.min(16383, end) + 1);
    }
  }
  return { parts, owner };
}

function finishFrom(ex: Exec, i: number): Result | Promise<Result> {
  for (;;) {
    const w = whenSettled(ex);
    if (w !== null) return w.then(() => finishFrom(ex, i));
    if (i >= ex.phases.length) {
      ex.stage = ex.phases.length === 0 ? ex.stage : ex.phases[ex.phases.length - 1].stage;
      return complete(ex);
    }
    const ph = ex.phases[i++];
    ex.stage = ph.stage;
    // No try/finally: after an interrupt, current() must still name this step.
    const prev = at.step;
    at.step = ph.where;
    ph.run();
    at.step = prev;
    at.part = null;
  }
}

const gears: GearsEntry = {
  actions(): ActionInfo[] {
    return actions.map((a) => ({
      kind: a.kind,
      reader: a.reader,
      arg: a.arg,
      options: a.options,
      desc: a.desc,
      line: a.line,
      steps: a.steps.map((s) => ({ type: s.type, name: s.name, arg: s.arg, line: s.line })),
    }));
  },

  start(actionIndex: unknown, topology: unknown, stream?: unknown, form?: unknown): number {
    const action = actions[Number(actionIndex)];
    if (action === undefined) throw new Error(`no action ${safeString(actionIndex)}`);
    const { parts, owner } = topologyOf(topology);
    const names = (topology as { readAhead?: unknown } | null)?.readAhead;
    if (Array.isArray(names)) {
      setReadAheadNames(names);
    }
    const ex: Exec = {
      id: ++lastExecId,
      action,
      parts,
      owner,
      head: () => undefined,
      phases: [],
      results: [],
      errors: [],
      closed: new Array<boolean>(parts).fill(false),
      pending: 0,
      waiters: [],
      fatal: null,
      dropped: false,
      finishing: false,
      stream: stream === true,
      form: form === RESULTS_JSON || form === RESULTS_NONE ? form : RESULTS_VALUES,
      done: null,
      recordsIn: 0,
      recordsOut: 0,
      stage: 0,
    };
    for (let p = 0; p < parts; p++) ex.results.push([]);
    compile(ex);
    execs.set(ex.id, ex);
    return ex.id;
  },

  /**
   * Runs records through the pipeline. With a time budget (ms), it stops starting new
   * records once the budget is spent and answers how many it took, so the host can feed
   * the rest in a fresh entry: the time limit then bounds each step call, not a batch.
   */
  feed(
    execId: unknown,
    partition: unknown,
    records: unknown,
    budgetMs?: unknown,
  ): number | Fed | Promise<number | Fed> {
    const ex = getExec(execId);
    if (ex.finishing) throw new Error("execution already finishing");
    const p = Number(partition);
    if (!(p >= 0 && p < ex.parts && Number.isInteger(p)))
      throw new RangeError(`no partition ${safeString(partition)}`);
    let list: unknown = typeof records === "string" ? JSON.parse(records) : records;
    if (list !== null && typeof list === "object" && !Array.isArray(list)) {
      // {records, values}: records name their value by index, so a value that many
      // records share (events on one key) crosses into the isolate once.
      const packed = list as { records?: unknown; values?: unknown; rows?: unknown };
      const values = Array.isArray(packed.values) ? packed.values : [];
      list = packed.records;
      if (Array.isArray(packed.rows)) list = recordsOfRows(packed.rows, values);
      else if (Array.isArray(list)) {
        for (const r of list) {
          if (
            r !== null &&
            typeof r === "object" &&
            typeof (r as { valueRef?: unknown }).valueRef === "number"
          ) {
            const rec = r as { valueRef?: number; value?: unknown };
            rec.value = values[rec.valueRef!];
            delete rec.valueRef;
          } else if (
            r !== null &&
            typeof r === "object" &&
            (r as { lazyValue?: unknown }).lazyValue === true
          ) {
            lazyValue(r as { key: unknown; lazyValue?: boolean });
          }
        }
      }
    }
    if (!Array.isArray(list)) throw new TypeError("records must be an array");
    const head = ex.head;
    const closed = ex.closed;
    const saved = at.part;
    const budget = typeof budgetMs === "number" && budgetMs > 0 ? budgetMs : 0;
    const started = budget > 0 ? Date.now() : 0;
    let taken = 0;
    let check = 0;
    beginFeed(list);
    try {
      for (; taken < list.length; taken++) {
        if (closed[p]) {
          taken = list.length;
          break;
        }
        if (budget > 0 && taken >= check) {
          const spent = Date.now() - started;
          if (taken > 0 && spent > budget) break;
          // While records are quick, the clock is read every 16th of them only.
          check = taken + (spent * 64 < budget ? 16 : 1);
        }
        ex.recordsIn++;
        at.part = p;
        feedRecord(taken);
        head(list[taken]);
      }
    } finally {
      endFeed(taken);
    }
    at.part = saved;
    // A streaming execution hands over what reached the end of the pipeline: the guest keeps none of it.
    const answer = (): number | Fed => (ex.stream ? { taken, out: takeResults(ex) } : taken);
    const settled = whenSettled(ex);
    return settled ? settled.then(answer) : answer();
  },

  /**
   * start, feed every partition's records, finish and drop, in one entry into the guest:
   * for the small record sets of event handlers, where four hops cost more than the work.
   */
  once(actionIndex: unknown, topology: unknown, inputs: unknown, form?: unknown): Result | Promise<Result> {
    if (!Array.isArray(inputs)) throw new TypeError("inputs must be an array");
    const id = gears.start(actionIndex as number, topology as Topology, false, form as ResultForm);
    const drop = (): void => void gears.drop(id);
    let i = 0;
    const rest = (): Result | Promise<Result> => {
      while (i < inputs.length) {
        const [p, batch] = inputs[i++] as [unknown, unknown];
        const fed = gears.feed(id, p as number, batch, 0);
        if (isThenable(fed)) return (fed as Promise<number | Fed>).then(rest);
      }
      return gears.finish(id);
    };
    try {
      const out = rest();
      if (!isThenable(out)) {
        drop();
        return out;
      }
      return (out as Promise<Result>).then(
        (r) => {
          drop();
          return r;
        },
        (e: unknown) => {
          drop();
          throw e;
        },
      );
    } catch (e) {
      drop();
      throw e;
    }
  },

  wants(execId: unknown, partition: unknown): boolean {
    return !getExec(execId).closed[Number(partition)];
  },

  finish(execId: unknown): Result | Promise<Result> {
    const ex = getExec(execId);
    if (ex.done !== null) return ex.done;
    ex.finishing = true;
    return finishFrom(ex, 0);
  },

  progress(execId: unknown): Progress {
    const ex = getExec(execId);
    return {
      recordsIn: ex.recordsIn,
      recordsOut: ex.recordsOut,
      stage: ex.stage,
      done: ex.done !== null,
      pending: ex.pending,
      errors: ex.errors.length,
    };
  },

  current(): Where | null {
    return at.step === null ? null : { step: at.step.step, line: at.step.line };
  },

  drop(execId: unknown): boolean {
    const ex = execs.get(Number(execId));
    if (ex === undefined) return false;
    ex.dropped = true;
    execs.delete(ex.id);
    return true;
  },

  slot(key: unknown): number {
    return slotOf(safeString(key));
  },

  /** Runs the callback of registerTimeEvent number `id` (the host's timer fired). */
  timer(id: unknown): unknown {
    const callback = timers[Number(id)];
    if (callback === undefined) throw new Error(`no timer ${safeString(id)}`);
    const out = callback();
    return out !== null && typeof out === "object" && typeof (out as PromiseLike<unknown>).then === "function"
      ? Promise.resolve(out).then(() => null)
      : null;
  },

  onRegistered(actionIndex: unknown): unknown {
    const a = actions[Number(actionIndex)];
    return a !== undefined && a.onRegistered !== null ? a.onRegistered() : undefined;
  },
};

defineEntry(GEARS_ENTRY, gears);
