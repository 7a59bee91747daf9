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
 */
import { host } from "../core/host.js";
import { CALLS_MORE, FLAT_ERROR, FLAT_INTEGER, FLAT_OK, type Tagged } from "../entry.js";

/** A `client.call` as the host takes it: noWrites, raw, then the command and its arguments. */
export type CallArgs = [boolean, boolean, ...Tagged[]];

interface Waiting {
  args: CallArgs;
  status: number;
  reply: Tagged;
}

/** One TFCALL of a batch: the slots of its keys, and how to run it (it records its outcome). */
export interface BatchItem {
  slots: number[];
  run(): void;
}

/** A TFCALL as the host hands it over: its function's name, its arguments, the slots of its keys. */
export type BatchCall = [string, Tagged[], number[]];

/** Makes the item of the TFCALL at `index` of the batch (the later ones follow the first). */
export type MakeItem = (call: BatchCall, index: number) => BatchItem;

/** At most this many TFCALLs in one entry, those handed over while it runs included. */
const MAX_ITEMS = 256;

/**
 * At most this many functions wait on one stack (each keeps a few frames there, well inside
 * the isolate's stack limit): as many as a batch takes (call-batcher.ts), so that a batch of
 * distinct slots needs one host request, not two.
 */
const MAX_NESTED = 64;

function direct(args: CallArgs): Tagged {
  return host.callSync("call", ...args) as Tagged;
}

function unwrap(w: Waiting): Tagged {
  if (w.status === FLAT_INTEGER) return { i: w.reply as string };
  if (w.status !== FLAT_OK) throw new Error(String(w.reply));
  return w.reply;
}

class BatchRun {
  private readonly items: BatchItem[];
  private next = 0;
  /** How many items are on the stack now. */
  private depth = 0;
  /** The slots of the items on the stack, with how many of them hold each. */
  private readonly held = new Map<number, number>();
  /** Items on the stack without keys (nothing may start on top of those). */
  private keyless = 0;
  /** The calls waiting to go out together, or null once they went (no more nesting then). */
  private gathering: Waiting[] | null = null;
  /** Gatherings sent without waiting (more TFCALLs came instead): their replies come with the next flush. */
  private sent: Waiting[][] = [];
  private readonly startedAt = Date.now();

  constructor(
    calls: BatchCall[],
    private readonly make: MakeItem,
    private readonly budgetMs: number,
  ) {
    this.items = calls.map(make);
  }

  /** Runs items until all ran or the budget is spent; how many started. */
  runAll(): number {
    while (this.next < this.items.length) {
      if (this.next > 0 && this.spent()) break;
      this.gathering = [];
      this.runItem(this.next++);
      this.gathering = null;
    }
    return this.next;
  }

  /** A sync `client.call` of the item on top of the stack. */
  call(args: CallArgs): Tagged {
    const gathering = this.gathering;
    if (gathering === null) return direct(args);
    const waiting: Waiting = { args, status: FLAT_ERROR, reply: "no reply from the host" };
    gathering.push(waiting);
    this.serve(gathering);
    return unwrap(waiting);
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

  private runItem(index: number): void {
    const item = this.items[index];
    this.hold(item.slots, 1);
    try {
      item.run();
    } finally {
      this.hold(item.slots, -1);
    }
  }

  /** Counts an item's slots in (+1) or out (-1) as it enters or leaves the stack. */
  private hold(slots: number[], by: 1 | -1): void {
    this.depth += by;
    if (slots.length === 0) this.keyless += by;
    for (let i = 0; i < slots.length; i++) {
      const n = (this.held.get(slots[i]) ?? 0) + by;
      if (n === 0) this.held.delete(slots[i]);
      else this.held.set(slots[i], n);
    }
  }

  /** Whether TFCALLs that arrived since the entry began may start on top of the waiting ones. */
  private mayRefill(): boolean {
    return (
      this.next >= this.items.length &&
      this.items.length < MAX_ITEMS &&
      this.depth < MAX_NESTED &&
      this.keyless === 0 &&
      !this.spent()
    );
  }

  private mayNest(): boolean {
    if (this.next >= this.items.length || this.depth >= MAX_NESTED || this.keyless > 0 || this.spent())
      return false;
    const candidate = this.items[this.next].slots;
    if (candidate.length === 0) return false;
    for (let i = 0; i < candidate.length; i++) if (this.held.has(candidate[i])) return false;
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
      for (let i = 1; i < answer.length; i++) {
        this.items.push(this.make(answer[i] as BatchCall, this.items.length));
      }
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

/** A sync client's call: through the running batch when there is one. */
export function syncCall(args: CallArgs): Tagged {
  return running === null ? direct(args) : running.call(args);
}

/**
 * Runs the TFCALLs of one batch (see above), and those the host hands over while it runs;
 * how many started before the budget ran out.
 */
export function runBatch(calls: BatchCall[], make: MakeItem, budgetMs: number): number {
  const outer = running;
  running = new BatchRun(calls, make, budgetMs);
  try {
    return running.runAll();
  } finally {
    running = outer;
  }
}
