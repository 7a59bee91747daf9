/**
 * The GearsBuilder engine's entry: what the host calls to run the actions' plans over the
 * records it feeds (start, feed, finish, drop...). Records flow through one fused closure
 * chain per execution (chain.ts), across global steps too; group/count/sort state is kept per
 * execution in the guest and emitted by `finish()`, in pipeline order, and results.ts hands
 * the results over.
 */
import { isThenable, safeString } from "../core/errors.js";
import { defineEntry } from "../core/host.js";
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
  type Topology,
} from "../entry.js";
import { actions } from "./builder.js";
import { compile } from "./chain.js";
import { whenSettled } from "./execution.js";
import { timers } from "./globals.js";
import { beginFeed, endFeed, feedRecord, setReadAheadNames } from "./read-ahead.js";
import { unpackRecords, type RowsFed } from "./records.js";
import { complete, takeResults } from "./results.js";
import { at } from "./state.js";
import type { Exec, Result, Where } from "./types.js";

const execs = new Map<number, Exec>();
let lastExecId = 0;

function getExec(id: unknown): Exec {
  const ex = execs.get(Number(id));
  if (ex === undefined) throw new Error("execution plan does not exist");
  return ex;
}

/**
 * The slot -> partition table of the last topology seen, and its ranges flattened: every
 * execution (each batch of events is one) brings the topology, which rarely changes, and
 * filling 16,384 slots took QuickJS ~70 µs per execution. The table is only read.
 */
let lastParts = 0;
let lastRanges: number[] = [];
let lastOwner: Int16Array | null = null;

function topologyOf(t: unknown): { parts: number; owner: Int16Array } {
  const o = (t ?? {}) as { partitions?: unknown; slots?: unknown };
  const parts = typeof o.partitions === "number" && o.partitions >= 1 ? Math.floor(o.partitions) : 1;
  const ranges: number[] = [];
  if (Array.isArray(o.slots)) {
    for (const range of o.slots as unknown[]) {
      if (!Array.isArray(range)) continue;
      const [start, end, p] = range as number[];
      if (p >= 0 && p < parts) ranges.push(Math.max(0, start), Math.min(16383, end) + 1, p);
    }
  }
  if (lastOwner !== null && parts === lastParts && sameNumbers(ranges, lastRanges)) {
    return { parts, owner: lastOwner };
  }
  const owner = new Int16Array(16384);
  for (let i = 0; i < ranges.length; i += 3) owner.fill(ranges[i + 2], ranges[i], ranges[i + 1]);
  lastParts = parts;
  lastRanges = ranges;
  lastOwner = owner;
  return { parts, owner };
}

function sameNumbers(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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
    const exForm = form === RESULTS_JSON || form === RESULTS_NONE ? form : RESULTS_VALUES;
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
      form: exForm,
      fed: stream !== true && exForm !== RESULTS_VALUES ? [] : null,
      done: null,
      recordsIn: 0,
      recordsOut: 0,
      stage: 0,
    };
    for (let p = 0; p < parts; p++) ex.results.push([]);
    if (ex.fed !== null) for (let p = 0; p < parts; p++) ex.fed.push([]);
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
    const rowsFed: RowsFed | undefined =
      ex.fed === null ? undefined : { records: [], rows: [], values: [], from: [], taken: 0 };
    const list = unpackRecords(records, rowsFed);
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
    if (rowsFed !== undefined && ex.fed !== null && taken > 0) {
      // Records of another form cannot be named by their place: the results go as text.
      if (rowsFed.records !== list) ex.fed = null;
      else {
        rowsFed.taken = taken;
        ex.fed[p].push(rowsFed);
      }
    }
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
