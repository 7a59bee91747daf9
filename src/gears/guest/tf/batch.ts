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
 */
import { host } from "../core/host.js";
import { FLAT_ERROR, FLAT_INTEGER, FLAT_OK, type Tagged } from "../entry.js";

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
  private next = 0;
  /** How many items are on the stack now. */
  private depth = 0;
  /** The slots of the items on the stack, with how many of them hold each. */
  private readonly held = new Map<number, number>();
  /** Items on the stack without keys (nothing may start on top of those). */
  private keyless = 0;
  /** The calls waiting to go out together, or null once they went (no more nesting then). */
  private gathering: Waiting[] | null = null;
  private readonly startedAt = Date.now();

  constructor(
    private readonly items: BatchItem[],
    private readonly budgetMs: number,
  ) {}

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
    while (this.gathering === gathering && this.mayNest()) this.runItem(this.next++);
    if (this.gathering === gathering) this.flush(gathering);
    return unwrap(waiting);
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

  private mayNest(): boolean {
    if (this.next >= this.items.length || this.depth >= MAX_NESTED || this.keyless > 0 || this.spent())
      return false;
    const candidate = this.items[this.next].slots;
    if (candidate.length === 0) return false;
    for (let i = 0; i < candidate.length; i++) if (this.held.has(candidate[i])) return false;
    return true;
  }

  private flush(gathering: Waiting[]): void {
    this.gathering = null;
    if (gathering.length === 1) {
      const only = gathering[0];
      try {
        only.reply = direct(only.args);
        only.status = FLAT_OK;
      } catch (e) {
        only.reply = e instanceof Error ? e.message : String(e);
      }
      return;
    }
    // One flat list: each call's argument count (the command included), noWrites, raw, then
    // its arguments.
    const flat: unknown[] = [];
    for (let i = 0; i < gathering.length; i++) {
      const args = gathering[i].args;
      flat.push(args.length - 2);
      for (let j = 0; j < args.length; j++) flat.push(args[j]);
    }
    // The replies come as FlatPairs (entry.ts).
    let replies: unknown[];
    try {
      replies = host.callSync("calls", flat) as unknown[];
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      for (const w of gathering) w.reply = text;
      return;
    }
    for (let i = 0; i < gathering.length && 2 * i + 1 < replies.length; i++) {
      gathering[i].status = replies[2 * i] as number;
      gathering[i].reply = replies[2 * i + 1] as Tagged;
    }
  }
}

let running: BatchRun | null = null;

/** A sync client's call: through the running batch when there is one. */
export function syncCall(args: CallArgs): Tagged {
  return running === null ? direct(args) : running.call(args);
}

/** Runs the items of one batch (see above); how many started before the budget ran out. */
export function runBatch(items: BatchItem[], budgetMs: number): number {
  const outer = running;
  running = new BatchRun(items, budgetMs);
  try {
    return running.runAll();
  } finally {
    running = outer;
  }
}
