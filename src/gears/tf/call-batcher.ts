import type { Tagged, TfOutcome } from "../guest/entry.js";
import type { TfLibrary } from "./libraries.js";
import { entryBudgetMs } from "../guest-isolate.js";

interface Pending {
  fn: string;
  args: Tagged[];
  /** The slots of the TFCALL's keys: calls of disjoint slots are pipelined (guest/tf/batch.ts). */
  slots: number[];
  db: number;
  /** A TFCALLASYNC outside MULTI: it may wait for its Promise, so it goes into an entry of those (runAsync). */
  blockAllowed: boolean;
  settle: SettleTfCall;
}

/** Gets a TFCALL's outcome, or null and why the isolate could not give one. */
export type SettleTfCall = (outcome: TfOutcome | null, failure?: unknown) => void;

/** The most TFCALLs one guest entry takes at its start, and at each time more join it. */
const MAX_BATCH = 64;

/** The most TFCALLASYNCs one entry takes in all (its budget usually ends it first). */
const MAX_ASYNC_ENTRY = 4096;

/**
 * The calls of one library, in the order they arrived. While one entry into its isolate is
 * under way the next TFCALLs wait, then go in together as one entry: a library runs one call
 * at a time anyway (as in T&F), and the hop into the isolate's thread costs more than a small
 * function. A TFCALLASYNC waits in the same line and goes in with the TFCALLASYNCs next to it
 * (they run concurrently, as T&F's coroutines did), so it never overtakes a TFCALL that
 * arrived before it (per-slot order). Calls of different databases go in different
 * entries (the bridge serves one database at a time). TFCALLs that arrive while an entry's
 * calls are in Redis may join it (guest/tf/batch.ts): the isolate runs them meanwhile.
 *
 * A batch of TFCALLASYNCs holds the line only while it may take the TFCALLASYNCs that arrive:
 * once a call arrives that it does not take (a TFCALL, another database's, any after its
 * budget is spent), or its entry ended past its budget (its calls still awaiting Redis), the
 * line goes on, and the isolate resumes the batch's calls in entries of their own between the
 * next ones (CallOptions.resumable). Each call is still answered when its own Promise settles.
 */
export class CallBatcher {
  private queue: Pending[] = [];
  private busy = false;
  /** Wakes a running batch that waits for its replies or for more TFCALLs (tf-bridge.ts). */
  private arrived: (() => void) | null = null;
  /** The batch of TFCALLASYNCs the line waits for: whether it takes a call that arrives, and letting the line go on. */
  private holding: { takes: (p: Pending) => boolean; release: () => void } | null = null;

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
    const p: Pending = { fn, args, slots, db, blockAllowed, settle };
    this.queue.push(p);
    if (!this.busy) void this.pump();
    else if (this.holding !== null && !this.holding.takes(p)) this.holding.release();
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
        if (this.queue[0].blockAllowed) await this.runAsync();
        else await this.runBatch();
      }
    } finally {
      this.busy = false;
    }
  }

  /** The TFCALLASYNCs (of database `db`) at the head of the line, at most `max`: they go in together. */
  private takeAsync(db: number, max: number): Pending[] {
    let n = 0;
    while (n < this.queue.length && n < max && this.queue[n].db === db && this.queue[n].blockAllowed) n++;
    return this.queue.splice(0, n);
  }

  /**
   * A batch of TFCALLASYNCs, running concurrently (guest/tf/async-batch.ts): each is
   * answered when its own Promise settles; those that arrive while it holds the line join it.
   * Resolves once the line may go on (see the class): the batch may still be under way, and
   * answers the rest of its calls as they settle.
   */
  private async runAsync(): Promise<void> {
    const db = this.queue[0].db;
    const batch = this.takeAsync(db, MAX_BATCH);
    let library: TfLibrary;
    try {
      library = await this.library();
    } catch (err) {
      for (const p of batch) p.settle(null, err);
      return;
    }
    const bridge = library.bridge;
    bridge.db = db;
    bridge.pendingJobs += batch.length;
    /** Which calls of the batch were answered (by their notes, as they settled). */
    const answered: boolean[] = [];
    const budgetMs = entryBudgetMs(library.guest.isolate);
    const until = Date.now() + budgetMs;
    /** Set once the line went on: the batch takes no more calls. */
    let released = false;
    let release = (): void => {};
    const lineGoesOn = new Promise<void>((resolve) => (release = resolve));
    const releaseLine = (): void => {
      if (released) return;
      released = true;
      if (this.holding === holding) this.holding = null;
      release();
    };
    const holding = {
      takes: (p: Pending) =>
        p.blockAllowed && p.db === db && Date.now() < until && batch.length < MAX_ASYNC_ENTRY,
      release: releaseLine,
    };
    this.holding = holding;
    const id = bridge.startAsync({
      settled: (index, out) => {
        const p = batch[index];
        if (p === undefined || answered[index] === true) return;
        answered[index] = true;
        bridge.pendingJobs--;
        p.settle(out);
      },
      take: (lone) => {
        if (released || Date.now() >= until || batch.length >= MAX_ASYNC_ENTRY) return null;
        const joining = this.takeAsync(db, MAX_BATCH);
        if (joining.length === 0) return lone ? null : [];
        bridge.pendingJobs += joining.length;
        for (const p of joining) batch.push(p);
        return joining.map((p) => [p.fn, p.args, p.slots]);
      },
      stopTaking: releaseLine,
    });
    const done = library.guest
      .callFunctionsAsync(
        id,
        db,
        batch.map((p) => [p.fn, p.args, p.slots]),
        budgetMs,
        // Ended for another entry (a trigger's, a resume): it still takes joiners until its budget is spent.
        () => {
          if (Date.now() >= until) releaseLine();
        },
      )
      .then(
        () => null,
        (err: unknown) => err,
      )
      .then((failure) => {
        bridge.endAsync(id);
        releaseLine();
        // Those the batch did not settle: its failure (a time limit, a Promise that can never
        // settle, the library deleted or its isolate gone).
        for (let i = 0; i < batch.length; i++) {
          if (answered[i] === true) continue;
          answered[i] = true;
          bridge.pendingJobs--;
          batch[i].settle(null, failure ?? new Error("the call ended without an outcome"));
        }
      });
    void done;
    await lineGoesOn;
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
      const bridge = library.bridge;
      bridge.joiners = {
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
      // The database is set as the entry starts: a trigger's entry may run before it.
      outs = await library.guest.callFunctions(
        batch.map((p) => [p.fn, p.args, p.slots]),
        budget,
        () => (bridge.db = db),
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
