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
import type { Tagged } from "../entry.js";

/** A `client.call` as the host takes it: noWrites, raw, then the command and its arguments. */
export type CallArgs = [boolean, boolean, ...Tagged[]];

/** The host's answer to one call: [0, reply] or [1, error text]. */
type CallReply = [0, Tagged] | [1, string];

interface Waiting {
  args: CallArgs;
  reply: CallReply | null;
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

function unwrap(reply: CallReply): Tagged {
  if (reply[0] === 1) throw new Error(reply[1]);
  return reply[1];
}

class BatchRun {
  private next = 0;
  /** The items on the stack now, innermost last. */
  private readonly stack: number[] = [];
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
    const waiting: Waiting = { args, reply: null };
    gathering.push(waiting);
    while (this.gathering === gathering && this.mayNest()) this.runItem(this.next++);
    if (this.gathering === gathering) this.flush(gathering);
    return unwrap(waiting.reply ?? [1, "no reply from the host"]);
  }

  private spent(): boolean {
    return Date.now() - this.startedAt >= this.budgetMs;
  }

  private runItem(index: number): void {
    this.stack.push(index);
    try {
      this.items[index].run();
    } finally {
      this.stack.pop();
    }
  }

  private mayNest(): boolean {
    if (this.next >= this.items.length || this.stack.length >= MAX_NESTED || this.spent()) return false;
    const candidate = this.items[this.next].slots;
    if (candidate.length === 0) return false;
    for (const index of this.stack) {
      const slots = this.items[index].slots;
      if (slots.length === 0) return false;
      for (const slot of slots) if (candidate.includes(slot)) return false;
    }
    return true;
  }

  private flush(gathering: Waiting[]): void {
    this.gathering = null;
    if (gathering.length === 1) {
      const only = gathering[0];
      try {
        only.reply = [0, direct(only.args)];
      } catch (e) {
        only.reply = [1, e instanceof Error ? e.message : String(e)];
      }
      return;
    }
    let replies: CallReply[];
    try {
      replies = host.callSync(
        "calls",
        gathering.map((w) => w.args),
      ) as CallReply[];
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      replies = gathering.map(() => [1, text]);
    }
    gathering.forEach((w, i) => {
      w.reply = replies[i] ?? [1, "no reply from the host"];
    });
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
