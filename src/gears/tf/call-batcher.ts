import type { Tagged, TfOutcome } from "../guest/entry.js";
import type { TfLibrary } from "./libraries.js";
import { entryBudgetMs } from "../guest-isolate.js";

interface Pending {
  fn: string;
  args: Tagged[];
  /** The slots of the TFCALL's keys: calls of disjoint slots are pipelined (guest/tf/batch.ts). */
  slots: number[];
  db: number;
  /** A TFCALLASYNC outside MULTI: it may wait for its Promise, so it goes into the isolate alone. */
  blockAllowed: boolean;
  settle: SettleTfCall;
}

/** Gets a TFCALL's outcome, or null and why the isolate could not give one. */
export type SettleTfCall = (outcome: TfOutcome | null, failure?: unknown) => void;

/** The most TFCALLs one guest entry takes at its start, and at each time more join it. */
const MAX_BATCH = 64;

/**
 * The calls of one library, in the order they arrived. While one entry into its isolate is
 * under way the next TFCALLs wait, then go in together as one entry: a library runs one call
 * at a time anyway (as in T&F), and the hop into the isolate's thread costs more than a small
 * function. A TFCALLASYNC waits in the same line and goes in alone, so it never overtakes a
 * TFCALL that arrived before it (per-slot order). Calls of different databases go in different
 * entries (the bridge serves one database at a time). TFCALLs that arrive while an entry's
 * calls are in Redis may join it (guest/tf/batch.ts): the isolate runs them meanwhile.
 */
export class CallBatcher {
  private queue: Pending[] = [];
  private busy = false;
  /** Wakes a running batch that waits for its replies or for more TFCALLs (tf-bridge.ts). */
  private arrived: (() => void) | null = null;

  constructor(private readonly library: () => Promise<TfLibrary>) {}

  /** Queues a TFCALL; `settle` gets its outcome (a queue entry, not a promise: this is per call). */
  call(
    fn: string,
    args: Tagged[],
    slots: number[],
    db: number,
    blockAllowed: boolean,
    settle: SettleTfCall,
  ): void {
    this.queue.push({ fn, args, slots, db, blockAllowed, settle });
    if (!this.busy) void this.pump();
    else if (this.arrived !== null) {
      // Those parsed from the same read arrive together: wake the batch once, after them.
      const wake = this.arrived;
      this.arrived = null;
      setImmediate(wake);
    }
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      // The TFCALLs parsed from the same read (a client's pipeline, other clients' calls in
      // this tick) queue before the first entry starts, and go in with it.
      await null;
      while (this.queue.length > 0) {
        if (this.queue[0].blockAllowed) await this.runAlone(this.queue.shift()!);
        else await this.runBatch();
      }
    } finally {
      this.busy = false;
    }
  }

  private async runAlone(p: Pending): Promise<void> {
    let out: TfOutcome;
    try {
      const library = await this.library();
      library.bridge.db = p.db;
      library.bridge.pendingJobs++;
      try {
        out = await library.guest.callFunction(p.fn, p.args, true);
      } finally {
        library.bridge.pendingJobs--;
      }
    } catch (err) {
      p.settle(null, err);
      return;
    }
    p.settle(out);
  }

  private async runBatch(): Promise<void> {
    const db = this.queue[0].db;
    let n = 1;
    while (n < this.queue.length && n < MAX_BATCH && this.queue[n].db === db && !this.queue[n].blockAllowed)
      n++;
    const batch = this.queue.splice(0, n);
    let library: TfLibrary | undefined;
    let outs: TfOutcome[];
    try {
      library = await this.library();
      library.bridge.db = db;
      library.bridge.joiners = {
        take: () => {
          let k = 0;
          while (
            k < this.queue.length &&
            k < MAX_BATCH &&
            this.queue[k].db === db &&
            !this.queue[k].blockAllowed
          )
            k++;
          const joining = this.queue.splice(0, k);
          batch.push(...joining);
          return joining.map((p) => [p.fn, p.args, p.slots]);
        },
        arrival: () => new Promise<void>((resolve) => (this.arrived = resolve)),
      };
      const budget = entryBudgetMs(library.guest.isolate);
      outs = await library.guest.callFunctions(
        batch.map((p) => [p.fn, p.args, p.slots]),
        budget,
      );
    } catch (err) {
      for (const p of batch) p.settle(null, err);
      return;
    } finally {
      this.arrived = null;
      library?.bridge.endBatch();
    }
    // Outside the try: each call is settled once, whatever its settle does.
    for (let i = 0; i < outs.length; i++) batch[i].settle(outs[i]);
    // Not started (the budget was spent): first in line for the next entry.
    // Not unshift(...): calls keep joining a batch while it runs, so it has no fixed bound.
    if (outs.length < batch.length) this.queue = batch.slice(Math.max(1, outs.length)).concat(this.queue);
  }
}
