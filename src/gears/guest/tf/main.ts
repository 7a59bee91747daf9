/** The Triggers and Functions bundle: what a T&F library's isolate evaluates before its code. */
import { defineEntry, host } from "../core/host.js";
import { isFatal, isThenable, safeString } from "../core/errors.js";
import {
  ASYNC_SETTLED,
  FLAT_ERROR,
  FLAT_INTEGER,
  FLAT_OK,
  LIMITS_ERROR,
  TF_ENTRY,
  TRIGGERS_STARTED,
  type BatchCalls,
  type FlatPairs,
  type Tagged,
  type TfEntry,
  type TfOutcome,
  type TriggerOutcomes,
} from "../entry.js";
import {
  clusterFunctions,
  endLoad,
  functions,
  installRedis,
  keyspaceTriggers,
  streamTriggers,
  type Fn,
  type FunctionDef,
} from "./api.js";
import { runConcurrently, tick, type StartAsync } from "./async-batch.js";
import { lastDigits, lastInteger, runBatch, type RunCall } from "./batch.js";
import { AsyncClient, isAsyncFunction, SyncClient, type ClientMode } from "./client.js";
import { bytesToBuffer, fromReply, toReply } from "./convert.js";
import { isStackOverflow, shapeGlobals, STACK_OVERFLOW_TEXT } from "./globals.js";

const NOT_SETTLED = {};

/** An uncaught exception as T&F's error reply text: the thrown value's string form. */
function errorText(e: unknown): string {
  if (isStackOverflow(e)) return STACK_OVERFLOW_TEXT;
  if (isFatal(e)) throw e;
  return safeString(e);
}

function outcome(v: unknown): TfOutcome {
  try {
    return { ok: toReply(v) };
  } catch (e) {
    return { err: errorText(e) };
  }
}

/** A result that may be a Promise: awaited when the caller may block, else only if it is settled. */
function settle(out: unknown, blockAllowed: boolean): TfOutcome | Promise<TfOutcome> {
  if (!isThenable(out)) return outcome(out);
  const p = Promise.resolve(out);
  const done = (v: unknown): TfOutcome => outcome(v);
  const failed = (e: unknown): TfOutcome => ({ err: errorText(e) });
  if (blockAllowed) return p.then(done, failed);
  // A settled Promise's reaction is queued before the sentinel's: it wins the race.
  return Promise.race([p, Promise.resolve(NOT_SETTLED)]).then(
    (v) =>
      v === NOT_SETTLED
        ? {
            err: "Can not block client for background execution, Blocking is not allow inside multi/exec, Lua, or within another module (RM_Call).",
          }
        : done(v),
    failed,
  );
}

/** An outcome as pair `i` of `flat`. */
function putOutcome(flat: FlatPairs, i: number, o: TfOutcome): void {
  if ("err" in o) {
    flat[2 * i] = FLAT_ERROR;
    flat[2 * i + 1] = o.err;
  } else if (o.ok !== null && typeof o.ok === "object" && "i" in o.ok) {
    flat[2 * i] = FLAT_INTEGER;
    flat[2 * i + 1] = o.ok.i;
  } else {
    flat[2 * i] = FLAT_OK;
    flat[2 * i + 1] = o.ok;
  }
}

/** A function's result as pair `i` of `flat`: outcome() without its objects for the common results. */
function putResult(flat: FlatPairs, i: number, v: unknown): void {
  if (typeof v === "bigint") {
    flat[2 * i] = FLAT_INTEGER;
    flat[2 * i + 1] = v.toString();
  } else if (typeof v === "string") {
    flat[2 * i] = FLAT_OK;
    flat[2 * i + 1] = v;
  } else {
    putOutcome(flat, i, outcome(v));
  }
}

/** fn(client, ...args) with the client its kind gets (a coroutine: the async client); its outcome. */
function invoke(
  fn: Fn,
  mode: ClientMode,
  args: unknown[],
  coroutine = isAsyncFunction(fn),
): TfOutcome | Promise<TfOutcome> {
  const client = coroutine ? new AsyncClient(mode) : new SyncClient(mode);
  let out: unknown;
  try {
    // One argument (a key) is the common case: a plain call, no spread.
    out = args.length === 1 ? fn(client, args[0]) : fn(client, ...args);
  } catch (e) {
    return { err: errorText(e) };
  } finally {
    if (client instanceof SyncClient) client.invalidate();
  }
  // A coroutine called where blocking is not allowed (TFCALLASYNC inside MULTI) must be done
  // by the time it first yields, as in T&F.
  return settle(out, mode.blockAllowed);
}

/** Reports a TFCALLASYNC's outcome to the host (async-batch.ts): pair 0 of a FlatPairs, after its batch and index. */
function report(batch: number, index: number, o: TfOutcome): void {
  const pair: FlatPairs = [];
  putOutcome(pair, 0, o);
  host.notify(ASYNC_SETTLED, batch, index, pair[0], pair[1]);
}

/** Starts a TFCALLASYNC of a batch (async-batch.ts): callFunction's work, its outcome reported. */
const startAsync: StartAsync = (batch, db, list, at, index) => {
  const name = list[at] as string;
  const def = functions.get(name);
  if (def === undefined) {
    report(batch, index, { err: `Unknown function ${name}` });
    return null;
  }
  const n = list[at + 1] as number;
  const jsArgs: unknown[] = [];
  try {
    for (let k = 0; k < n; k++) {
      const a = list[at + 2 + k] as Tagged;
      jsArgs[k] = typeof a === "string" && !def.raw ? a : fromReply(a, def.raw);
    }
  } catch (e) {
    report(batch, index, { err: errorText(e) });
    return null;
  }
  tick();
  // Its calls name their database: they may go on in later entries (async-batch.ts).
  const mode: ClientMode = { noWrites: def.modeBlocking.noWrites, blockAllowed: true, db };
  const o = invoke(def.fn, mode, jsArgs, def.coroutine);
  if (!isThenable(o)) {
    report(batch, index, o);
    return null;
  }
  // Rejected: the isolate's limits ended it (a fatal error: stack, memory), it alone.
  return o.then(
    (x) => report(batch, index, x),
    () => report(batch, index, { err: LIMITS_ERROR }),
  );
};

/** Triggers write as the library's user and may wait for their Promises. */
const TRIGGER_MODE: ClientMode = { noWrites: false, blockAllowed: true };

const entry: TfEntry = {
  prepare(configJson: string | null, apiVersion: string): void {
    installRedis(configJson, apiVersion);
  },

  loaded() {
    const registrations = endLoad();
    if (
      registrations.functions.length === 0 &&
      registrations.keyspaceTriggers.length === 0 &&
      registrations.streamTriggers.length === 0
    ) {
      return { err: "Neither function nor other registrations were found." };
    }
    return { ok: registrations };
  },

  callFunction(name: string, args: Tagged[], blockAllowed: boolean): TfOutcome | Promise<TfOutcome> {
    const def = functions.get(name);
    if (def === undefined) return { err: `Unknown function ${name}` };
    const jsArgs: unknown[] = [];
    try {
      // Arguments are strings unless they are not UTF-8 or the function takes them raw.
      for (let i = 0; i < args.length; i++) {
        const a = args[i];
        jsArgs.push(typeof a === "string" && !def.raw ? a : fromReply(a, def.raw));
      }
    } catch (e) {
      return { err: errorText(e) };
    }
    return invoke(def.fn, blockAllowed ? def.modeBlocking : def.mode, jsArgs, def.coroutine);
  },

  callFunctions(calls: BatchCalls, budgetMs: number): FlatPairs | Promise<FlatPairs> {
    const flat: FlatPairs = [];
    let later: Promise<void>[] | null = null;
    let lastName = "";
    let lastDef: FunctionDef | undefined;
    // callFunction's work, writing the outcome straight into `flat`.
    const run: RunCall = (list, at, i) => {
      // Its pair first: the calls started on top of it end before it does. Items start in
      // order, so the pair is at the list's end (stored by index: QuickJS's push is slower).
      flat[2 * i] = FLAT_ERROR;
      flat[2 * i + 1] = "";
      const name = list[at] as string;
      // A batch's calls are mostly of one function: its lookup is kept.
      let def = lastDef;
      if (name !== lastName || def === undefined) {
        def = functions.get(name);
        if (def === undefined) {
          flat[2 * i + 1] = `Unknown function ${name}`;
          return;
        }
        lastName = name;
        lastDef = def;
      }
      const n = list[at + 1] as number;
      const first = list[at + 2];
      // One string argument (a key) is the common case: passed as it is, no list.
      const one = n === 1 && typeof first === "string" && !def.raw;
      let jsArgs: unknown[] | null = null;
      if (!one) {
        jsArgs = [];
        try {
          for (let k = 0; k < n; k++) {
            const a = list[at + 2 + k] as Tagged;
            jsArgs[k] = typeof a === "string" && !def.raw ? a : fromReply(a, def.raw);
          }
        } catch (e) {
          flat[2 * i + 1] = errorText(e);
          return;
        }
      }
      const sync = !def.coroutine;
      const client = sync ? new SyncClient(def.mode) : new AsyncClient(def.mode);
      let out: unknown;
      try {
        out = jsArgs === null ? def.fn(client, first) : def.fn(client, ...jsArgs);
      } catch (e) {
        flat[2 * i + 1] = errorText(e);
        return;
      } finally {
        if (sync) (client as SyncClient).valid = false;
      }
      // The common results first: a BigInt (an integer reply passed on) or a string.
      if (typeof out === "bigint") {
        flat[2 * i] = FLAT_INTEGER;
        flat[2 * i + 1] = out === lastInteger ? lastDigits : out.toString();
      } else if (isThenable(out)) {
        const settled = Promise.resolve(settle(out, false)).then((o) => putOutcome(flat, i, o));
        (later ??= []).push(settled);
      } else putResult(flat, i, out);
    };
    const started = runBatch(calls, run, budgetMs);
    flat.length = 2 * started;
    return later === null ? flat : Promise.all(later).then(() => flat);
  },

  callFunctionsAsync(batch: number, db: number, calls: BatchCalls): null | Promise<null> {
    return runConcurrently(batch, db, calls, startAsync);
  },

  fireKeyspaceTriggers(
    events: BatchCalls,
    budgetMs: number,
    db: number,
  ): TriggerOutcomes | Promise<TriggerOutcomes> {
    const out: TriggerOutcomes = [];
    // Their calls name the database: an async callback goes on in later entries (below).
    const mode: ClientMode = { noWrites: false, blockAllowed: true, db };
    let later: Promise<void>[] | null = null;
    // An event's time is its own: those started on top of it while it waited for a reply
    // count theirs (T&F's executions ran one after another, and their times add up so).
    let timed = 0;
    const run: RunCall = (list, at, i) => {
      const started = Date.now();
      const timedBefore = timed;
      // Its pair first: the events started on top of it end before it does (see callFunctions).
      out[2 * i] = null;
      out[2 * i + 1] = 0;
      const name = list[at] as string;
      const def = keyspaceTriggers.get(name);
      if (def === undefined) {
        out[2 * i] = `Unknown trigger ${name}`;
        return;
      }
      const data: Record<string, unknown> = {
        event: list[at + 2],
        key: list[at + 3],
        key_raw: bytesToBuffer(list[at + 4] as string),
      };
      if (def.onTriggerFired !== null) {
        // At the moment of the event, read-only: it may only add to `data`.
        const fired = invoke(def.onTriggerFired, { noWrites: true, blockAllowed: false }, [data]);
        if (!isThenable(fired) && "err" in fired) {
          out[2 * i] = fired.err;
          out[2 * i + 1] = Date.now() - started;
          return;
        }
      }
      const o = invoke(def.fn, mode, [data]);
      if (isThenable(o)) {
        // An async callback: its time is until it settles (a closure only for those); -1 until then.
        out[2 * i + 1] = -1;
        const settled = Promise.resolve(o).then((x) => {
          out[2 * i] = "err" in x ? x.err : null;
          out[2 * i + 1] = Date.now() - started;
        });
        (later ??= []).push(settled);
        return;
      }
      const own = Date.now() - started - (timed - timedBefore);
      out[2 * i] = "err" in o ? o.err : null;
      out[2 * i + 1] = own;
      timed += own;
    };
    const started = runBatch(events, run, budgetMs, false);
    out.length = 2 * started;
    if (later === null) return out;
    // Every callback has run up to its first await: the writes that fired them may be
    // answered now, as T&F ran the rest of an async callback in the background. The note
    // carries the outcomes so far, an async one's time as -1.
    host.notify(TRIGGERS_STARTED, ...out);
    return Promise.all(later).then(() => out);
  },

  fireStreamTrigger(
    name: string,
    stream: string | null,
    streamBytes: string,
    records: [string, [string | null, string][]][],
    budgetMs: number,
  ) {
    const def = streamTriggers.get(name);
    if (def === undefined) return records.map(() => `Unknown trigger ${name}`);
    const startedAt = Date.now();
    const outs: (TfOutcome | PromiseLike<TfOutcome>)[] = [];
    // The first always starts; the rest while the budget lasts (the host hands the rest over again).
    for (let r = 0; r < records.length && (r === 0 || Date.now() - startedAt < budgetMs); r++) {
      const [id, fields] = records[r];
      const [ms, seq] = id.split("-");
      // A list of pairs, not an object: fields may repeat.
      const record: [string | null, string | null][] = [];
      const recordRaw: [ArrayBuffer, ArrayBuffer][] = [];
      for (let i = 0; i + 1 < fields.length; i += 2) {
        record.push([fields[i][0], fields[i + 1][0]]);
        recordRaw.push([bytesToBuffer(fields[i][1]), bytesToBuffer(fields[i + 1][1])]);
      }
      const data = {
        id: [BigInt(ms), BigInt(seq)],
        stream_name: stream,
        stream_name_raw: bytesToBuffer(streamBytes),
        record,
        record_raw: recordRaw,
      };
      outs[r] = invoke(def.fn, TRIGGER_MODE, [data]);
    }
    const errorOf = (o: TfOutcome): string | null => ("err" in o ? o.err : null);
    if (!outs.some(isThenable)) return (outs as TfOutcome[]).map(errorOf);
    return Promise.all(outs).then((list) => list.map(errorOf));
  },

  callClusterFunction(name: string, argsJson: string): TfOutcome | Promise<TfOutcome> {
    const fn: Fn | undefined = clusterFunctions.get(name);
    if (fn === undefined) return { err: `Remote function ${name} does not exists` };
    let args: unknown[];
    try {
      args = JSON.parse(argsJson) as unknown[];
    } catch {
      return { err: "Failed deserializing remote function argument" };
    }
    const client = new AsyncClient({ noWrites: true, blockAllowed: true });
    let out: unknown;
    try {
      out = fn(client, ...args);
    } catch (e) {
      return { err: errorText(e) };
    }
    return Promise.resolve(out).then(
      (v) => {
        try {
          return { ok: JSON.stringify(v === undefined ? null : v) };
        } catch {
          return { err: "Failed serializing result" };
        }
      },
      (e: unknown) => ({ err: errorText(e) }),
    );
  },
};

shapeGlobals();
defineEntry(TF_ENTRY, entry);
