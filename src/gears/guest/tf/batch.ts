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
import { CALLS_MORE, FLAT_ERROR, FLAT_INTEGER, FLAT_OK, type BatchCalls, type Tagged } from "../entry.js";
import { fromReply } from "./convert.js";

/** A `client.call` as the host takes it: noWrites, raw, then the command and its arguments. */
export type CallArgs = [boolean, boolean, ...Tagged[]];

interface Waiting {
  args: CallArgs;
  status: number;
  reply: Tagged;
}

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

function direct(args: CallArgs): Tagged {
  return host.callSync("call", ...args) as Tagged;
}

/** A reply as the function sees it (`raw`: callRaw's conversion). */
function valueOf(w: Waiting, raw: boolean): unknown {
  if (w.status === FLAT_INTEGER) return BigInt(w.reply as string);
  if (w.status !== FLAT_OK) throw new Error(String(w.reply));
  const r = w.reply;
  return typeof r === "string" || r === null ? r : fromReply(r, raw);
}

class BatchRun {
  /** The TFCALLs of the entry and those handed over since, as one flat list. */
  private readonly calls: BatchCalls;
  /** Where each TFCALL's record starts in `calls`. */
  private readonly starts: number[] = [];
  private next = 0;
  /** How many items are on the stack now. */
  private depth = 0;
  /** For each slot, how many items on the stack hold it. */
  private readonly held = new Uint16Array(SLOTS);
  /** Items on the stack without keys (nothing may start on top of those). */
  private keyless = 0;
  /** The calls waiting to go out together, or null once they went (no more nesting then). */
  private gathering: Waiting[] | null = null;
  /** Gatherings sent without waiting (more TFCALLs came instead): their replies come with the next flush. */
  private sent: Waiting[][] = [];
  private readonly startedAt = Date.now();

  constructor(
    calls: BatchCalls,
    private readonly run: RunCall,
    private readonly budgetMs: number,
  ) {
    this.calls = calls;
    this.index(0);
  }

  /** Notes where each record from `from` on starts. */
  private index(from: number): void {
    const calls = this.calls;
    for (let at = from; at < calls.length;) {
      this.starts.push(at);
      const slotsAt = at + 2 + (calls[at + 1] as number);
      at = slotsAt + 1 + (calls[slotsAt] as number);
    }
  }

  /** Where the slot count of item `k` is in `calls`. */
  private slotsAt(k: number): number {
    const at = this.starts[k];
    return at + 2 + (this.calls[at + 1] as number);
  }

  /** Runs items until all ran or the budget is spent; how many started. */
  runAll(): number {
    while (this.next < this.starts.length) {
      if (this.next > 0 && this.spent()) break;
      this.gathering = [];
      this.runItem(this.next++);
      this.gathering = null;
    }
    return this.next;
  }

  /** A sync `client.call` of the item on top of the stack; its reply converted (`raw`: callRaw). */
  call(args: CallArgs, raw: boolean): unknown {
    const gathering = this.gathering;
    if (gathering === null) return fromReply(direct(args), raw);
    const waiting: Waiting = { args, status: FLAT_ERROR, reply: "no reply from the host" };
    gathering.push(waiting);
    this.serve(gathering);
    return valueOf(waiting, raw);
  }

  /**
   * Runs items on top of the waiting `gathering` while they may start; then sends it, with
   * the replies of all sent calls as the answer, or, while the host has more TFCALLs for this
   * entry, without waiting, and starts those on top.
   */
  private serve(gathering: Waiting[]): void {
    let current = gathering;
    for (;;) {
      while (this.gathering === current && this.mayNest()) this.runItem(this.next++);
      // An item on top took the gathering over and flushed it.
      if (this.gathering !== current) return;
      if (!this.flush(current, this.mayRefill())) return;
      current = [];
      this.gathering = current;
    }
  }

  private spent(): boolean {
    return Date.now() - this.startedAt >= this.budgetMs;
  }

  private runItem(k: number): void {
    this.hold(k, 1);
    try {
      this.run(this.calls, this.starts[k], k);
    } finally {
      this.hold(k, -1);
    }
  }

  /** Counts item k's slots in (+1) or out (-1) as it enters or leaves the stack. */
  private hold(k: number, by: 1 | -1): void {
    const calls = this.calls;
    const at = this.slotsAt(k);
    const n = calls[at] as number;
    this.depth += by;
    if (n === 0) this.keyless += by;
    for (let i = 1; i <= n; i++) this.held[calls[at + i] as number] += by;
  }

  /** Whether TFCALLs that arrived since the entry began may start on top of the waiting ones. */
  private mayRefill(): boolean {
    return (
      this.next >= this.starts.length &&
      this.starts.length < MAX_ITEMS &&
      this.depth < MAX_NESTED &&
      this.keyless === 0 &&
      !this.spent()
    );
  }

  private mayNest(): boolean {
    if (this.next >= this.starts.length || this.depth >= MAX_NESTED || this.keyless > 0 || this.spent())
      return false;
    const calls = this.calls;
    const at = this.slotsAt(this.next);
    const n = calls[at] as number;
    if (n === 0) return false;
    for (let i = 1; i <= n; i++) if (this.held[calls[at + i] as number] !== 0) return false;
    return true;
  }

  /**
   * Sends `gathering`. With `more`, the host may answer with TFCALLs to start instead of
   * replies (then true: the calls stay sent, their replies come with a later flush).
   * Otherwise the answer holds the replies of every call sent so far, in order.
   */
  private flush(gathering: Waiting[], more: boolean): boolean {
    this.gathering = null;
    if (!more && this.sent.length === 0 && gathering.length === 1) {
      const only = gathering[0];
      try {
        only.reply = direct(only.args);
        only.status = FLAT_OK;
      } catch (e) {
        only.reply = e instanceof Error ? e.message : String(e);
      }
      return false;
    }
    // One flat list: each call's argument count (the command included), noWrites, raw, then
    // its arguments.
    const flat: unknown[] = [];
    for (let i = 0; i < gathering.length; i++) {
      const args = gathering[i].args;
      flat.push(args.length - 2);
      for (let j = 0; j < args.length; j++) flat.push(args[j]);
    }
    const waiting = this.sent;
    waiting.push(gathering);
    // The replies come as FlatPairs (entry.ts) after CALLS_REPLIES; TFCALLs as BatchCalls after CALLS_MORE.
    let answer: unknown[];
    try {
      answer = host.callSync("calls", flat, more) as unknown[];
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      this.sent = [];
      for (const g of waiting) for (const w of g) w.reply = text;
      return false;
    }
    if (answer[0] === CALLS_MORE) {
      const calls = this.calls;
      const from = calls.length;
      for (let i = 1; i < answer.length; i++) calls.push(answer[i] as string | number | Tagged);
      this.index(from);
      return true;
    }
    this.sent = [];
    let r = 1;
    for (const g of waiting) {
      for (let i = 0; i < g.length && r + 1 < answer.length; i++, r += 2) {
        g[i].status = answer[r] as number;
        g[i].reply = answer[r + 1] as Tagged;
      }
    }
    return false;
  }
}

let running: BatchRun | null = null;

/** A sync client's call, its reply converted (`raw`: callRaw): through the running batch when there is one. */
export function syncCall(args: CallArgs, raw: boolean): unknown {
  return running === null ? fromReply(direct(args), raw) : running.call(args, raw);
}

/**
 * Runs the TFCALLs of one batch (see above), and those the host hands over while it runs;
 * how many started before the budget ran out.
 */
export function runBatch(calls: BatchCalls, run: RunCall, budgetMs: number): number {
  const outer = running;
  running = new BatchRun(calls, run, budgetMs);
  try {
    return running.runAll();
  } finally {
    running = outer;
  }
}
