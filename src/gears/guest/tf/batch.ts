/**
 * Several TFCALLs in one guest entry, with their `client.call`s pipelined.
 *
 * A sync function needs each reply before it goes on, and QuickJS cannot set a call stack
 * aside. So while a function waits for its call, the batch starts the next TFCALL of the
 * batch on top of it (nested on the same stack), whose first call waits too, and so on;
 * when no further TFCALL may start, the waiting calls go to the host as one request, which
 * sends them to Redis as one pipeline, and each function gets its reply as the stack unwinds.
 * One thread hop and one round trip to Redis for a whole batch instead of one each.
 *
 * A TFCALL is started on top of others only when the slots of its keys (TFCALL's `numkeys`
 * keys) differ from those of every function waiting beneath it: functions of one slot run
 * one after the other, as spec/triggers-functions.md "Atomicity" asks. A TFCALL without
 * keys never shares a gather.
 *
 * When the batch's own TFCALLs are used up, the waiting calls go out without waiting for
 * their replies if TFCALLs of the library arrived meanwhile (or arrive while the calls are in
 * Redis): the host answers with those, they start on top, and the replies of every call sent
 * so far come back with the last request. The isolate runs new functions while earlier calls
 * are in Redis instead of waiting for them.
 *
 * Everything here runs in QuickJS, where each object or array made costs about as much as
 * a dozen plain operations: the TFCALLs stay in the flat list they came in (BatchCalls), the
 * slots held are counts in one typed array, and a reply reaches the function converted
 * without an intermediate tagged object.
 */
import { host } from "../core/host.js";
import {
  CALL_IN,
  CALLS_MORE,
  FLAT_ERROR,
  FLAT_INTEGER,
  FLAT_OK,
  type BatchCalls,
  type Tagged,
} from "../entry.js";
import { fromReply } from "./convert.js";

/**
 * A sync `client.call`'s command: its name (a string) and its arguments, each a string or a
 * tagged value (toArg), in the list the call's rest parameter made (no copy of it is made).
 */
export type CallArgs = Tagged[];

/**
 * The calls waiting to go out together, five slots each: noWrites, raw, the command's name,
 * its arguments (CallArgs), then, once the answer is in, the reply's FlatPairs tag and value
 * in the last two (written over noWrites and raw). One list per gathering: no object per call.
 */
type Gathering = unknown[];
const SLOT = 5;

/**
 * Runs the TFCALL whose record starts at `at` in `calls` (BatchCalls, entry.ts), the
 * `index`th started in this entry; it records its own outcome.
 */
export type RunCall = (calls: BatchCalls, at: number, index: number) => void;

/** At most this many TFCALLs in one entry, those handed over while it runs included. */
const MAX_ITEMS = 256;

/**
 * At most this many functions wait on one stack (each keeps a few frames there, well inside
 * the isolate's stack limit): as many as a batch takes (call-batcher.ts), so that a batch of
 * distinct slots needs one host request, not two.
 */
const MAX_NESTED = 64;

/** Hash slots are 0..16383 (the host computes them). */
const SLOTS = 16384;

function direct(noWrites: boolean, raw: boolean, cmd: string, args: CallArgs): Tagged {
  return host.callSync("call", noWrites, raw, cmd, ...args) as Tagged;
}

/** A reply as the function sees it (`raw`: callRaw's conversion), from its FlatPairs tag and value. */
function valueOf(status: number, reply: Tagged, raw: boolean): unknown {
  if (status === FLAT_INTEGER) return BigInt(reply as string);
  if (status !== FLAT_OK) throw new Error(String(reply));
  return typeof reply === "string" || reply === null ? reply : fromReply(reply, raw);
}

/** The running batch's `client.call` (client.ts calls it directly: one call fewer per call). */
export let running: ((noWrites: boolean, raw: boolean, cmd: string, args: CallArgs) => unknown) | null = null;

/**
 * The last integer reply a batch's call gave, and its digits: a function that returns it as
 * it is (the common `return client.call('INCR', key)`) has its outcome's digits without
 * BigInt's toString (main.ts compares the value first).
 */
export let lastInteger: bigint | null = null;
export let lastDigits = "";

/**
 * `client.block` bodies running now (client.ts). Nothing starts on top of one: an async
 * keyspace trigger (or TFCALL of an async function) blocks as it starts, so an item started
 * on top of its waiting call blocked too, and failed with "Main thread is already blocked".
 */
let blockBodies = 0;

/** Runs `body` (a `client.block` body) with no item of the running batch started on top of it. */
export function aloneOnStack<T>(body: () => T): T {
  blockBodies++;
  try {
    return body();
  } finally {
    blockBodies--;
  }
}

/**
 * A sync client's call of `cmd` with `args` (already toArg'd), its reply converted (`raw`:
 * callRaw): through the running batch when there is one.
 */
export function syncCall(noWrites: boolean, raw: boolean, cmd: string, args: CallArgs): unknown {
  return running === null
    ? fromReply(direct(noWrites, raw, cmd, args), raw)
    : running(noWrites, raw, cmd, args);
}

/**
 * A sync client's call in database `db` (a TFCALLASYNC's `block` body, client.ts): on its own,
 * never through a running batch (nothing starts on top of a block body).
 */
export function syncCallIn(
  db: number,
  noWrites: boolean,
  raw: boolean,
  cmd: string,
  args: CallArgs,
): unknown {
  return fromReply(host.callSync(CALL_IN, db, noWrites, raw, cmd, ...args) as Tagged, raw);
}

/**
 * Runs the TFCALLs of one batch (see above), and those the host hands over while it runs
 * (unless `refill` is false: a batch of other items, keyspace trigger events, takes none);
 * how many started before the budget ran out. The batch's state lives in this call's locals,
 * which its inner functions reach directly: QuickJS looks a property up by name on every
 * access, `this.x` included.
 */
export function runBatch(calls: BatchCalls, run: RunCall, budgetMs: number, refill = true): number {
  /** Where each TFCALL's record starts in `calls` (those handed over later are appended). */
  const starts: number[] = [];
  /** Where each TFCALL's slot count is in `calls`. */
  const slotsAt: number[] = [];
  let next = 0;
  /** How many items are on the stack now. */
  let depth = 0;
  /** For each slot, how many items on the stack hold it. */
  const held = new Uint16Array(SLOTS);
  /** Items on the stack without keys (nothing may start on top of those). */
  let keyless = 0;
  /** The calls waiting to go out together, or null once they went (no more nesting then). */
  let gathering: Gathering | null = null;
  /** Gatherings sent without waiting (more TFCALLs came instead): their replies come with the next flush. */
  let sent: Gathering[] = [];
  const startedAt = Date.now();

  /** Notes where each record from `from` on starts. */
  function index(from: number): void {
    for (let at = from; at < calls.length;) {
      const k = starts.length;
      starts[k] = at;
      const s = at + 2 + (calls[at + 1] as number);
      slotsAt[k] = s;
      at = s + 1 + (calls[s] as number);
    }
  }

  function spent(): boolean {
    return Date.now() - startedAt >= budgetMs;
  }

  /** Runs item k, its slots counted in as it enters the stack and out as it leaves (inline: a call each costs). */
  function runItem(k: number): void {
    const at = slotsAt[k];
    const n = calls[at] as number;
    depth++;
    if (n === 0) keyless++;
    for (let i = 1; i <= n; i++) held[calls[at + i] as number]++;
    try {
      run(calls, starts[k], k);
    } finally {
      depth--;
      if (n === 0) keyless--;
      for (let i = 1; i <= n; i++) held[calls[at + i] as number]--;
    }
  }

  /** Whether TFCALLs that arrived since the entry began may start on top of the waiting ones. */
  function mayRefill(): boolean {
    return (
      refill &&
      next >= starts.length &&
      starts.length < MAX_ITEMS &&
      depth < MAX_NESTED &&
      keyless === 0 &&
      blockBodies === 0 &&
      !spent()
    );
  }

  /**
   * Sends `g`. With `more`, the host may answer with TFCALLs to start instead of replies
   * (then true: the calls stay sent, their replies come with a later flush). Otherwise the
   * answer holds the replies of every call sent so far, in order.
   */
  function flush(g: Gathering, more: boolean): boolean {
    gathering = null;
    if (!more && sent.length === 0 && g.length === SLOT) {
      try {
        g[4] = direct(g[0] as boolean, g[1] as boolean, g[2] as string, g[3] as CallArgs);
        g[3] = FLAT_OK;
      } catch (e) {
        g[3] = FLAT_ERROR;
        g[4] = e instanceof Error ? e.message : String(e);
      }
      return false;
    }
    // One flat list: each call's argument count (the command included), noWrites, raw, then
    // its arguments. Stored by index: QuickJS's push is a generic method call, several times slower.
    const flat: unknown[] = [];
    let f = 0;
    for (let i = 0; i < g.length; i += SLOT) {
      const args = g[i + 3] as CallArgs;
      flat[f++] = args.length + 1;
      flat[f++] = g[i];
      flat[f++] = g[i + 1];
      flat[f++] = g[i + 2];
      for (let j = 0; j < args.length; j++) flat[f++] = args[j];
    }
    const waiting = sent;
    waiting[waiting.length] = g;
    // The replies come as FlatPairs (entry.ts) after CALLS_REPLIES; TFCALLs as BatchCalls after CALLS_MORE.
    let answer: unknown[];
    try {
      answer = host.callSync("calls", flat, more) as unknown[];
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      sent = [];
      for (const w of waiting)
        for (let i = 0; i < w.length; i += SLOT) {
          w[i + 3] = FLAT_ERROR;
          w[i + 4] = text;
        }
      return false;
    }
    if (answer[0] === CALLS_MORE) {
      const from = calls.length;
      for (let i = 1; i < answer.length; i++) calls[calls.length] = answer[i] as string | number | Tagged;
      index(from);
      return true;
    }
    sent = [];
    let r = 1;
    for (const w of waiting) {
      for (let i = 0; i < w.length; i += SLOT) {
        if (r + 1 < answer.length) {
          w[i + 3] = answer[r];
          w[i + 4] = answer[r + 1];
        } else {
          w[i + 3] = FLAT_ERROR;
          w[i + 4] = "no reply from the host";
        }
        r += 2;
      }
    }
    return false;
  }

  /**
   * Runs items on top of the waiting `g` while they may start; then sends it, with the
   * replies of all sent calls as the answer, or, while the host has more TFCALLs for this
   * entry, without waiting, and starts those on top.
   */
  function serve(g: Gathering): void {
    let current = g;
    for (;;) {
      // Items start on top while the next one may: none of its slots is held (see above). Inline,
      // as a loop of its own: each function call costs in QuickJS, and this runs for every item.
      while (gathering === current) {
        if (next >= starts.length || depth >= MAX_NESTED || keyless > 0 || blockBodies > 0) break;
        const at = slotsAt[next];
        const n = calls[at] as number;
        if (n === 0) break;
        let free = true;
        for (let i = 1; i <= n; i++) if (held[calls[at + i] as number] !== 0) free = false;
        // The clock last: it is a call out of the interpreter.
        if (!free || Date.now() - startedAt >= budgetMs) break;
        runItem(next++);
      }
      // An item on top took the gathering over and flushed it.
      if (gathering !== current) return;
      if (!flush(current, mayRefill())) return;
      current = [];
      gathering = current;
    }
  }

  /** A sync `client.call` of the item on top of the stack; its reply converted (`raw`: callRaw). */
  function call(noWrites: boolean, raw: boolean, cmd: string, args: CallArgs): unknown {
    const g = gathering;
    if (g === null) return fromReply(direct(noWrites, raw, cmd, args), raw);
    const at = g.length;
    g[at] = noWrites;
    g[at + 1] = raw;
    g[at + 2] = cmd;
    g[at + 3] = args;
    g[at + 4] = null;
    serve(g);
    const status = g[at + 3];
    if (status === FLAT_INTEGER) {
      const digits = g[at + 4] as string;
      const value = BigInt(digits);
      lastInteger = value;
      lastDigits = digits;
      return value;
    }
    return valueOf(status as number, g[at + 4] as Tagged, raw);
  }

  index(0);
  const outer = running;
  running = call;
  try {
    while (next < starts.length) {
      if (next > 0 && spent()) break;
      gathering = [];
      runItem(next++);
      gathering = null;
    }
    return next;
  } finally {
    running = outer;
  }
}
