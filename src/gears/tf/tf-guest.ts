import type { JsonValue } from "../../sandbox/types.js";
import {
  FLAT_ERROR,
  FLAT_INTEGER,
  TF_ENTRY,
  type FlatPairs,
  type Tagged,
  type TfEntry,
  type TfOutcome,
  type TfRegistrations,
  type TriggerOutcomes,
} from "../guest/entry.js";
import { keySlot } from "../../routing/key-slot.js";
import type { GuestIsolate } from "../guest-isolate.js";
import { utf8Text } from "./values.js";

const path = (name: keyof TfEntry): string => `${TF_ENTRY}.${name}`;

/**
 * From how many TFCALLs a batch crosses in the binary format: decoding it costs the guest a
 * few µs an entry more than parsing JSON, and ~0.3 µs a call less (even at ~10 calls).
 */
const BINARY_MIN_CALLS = 16;

/** Appends TFCALLs ([name, args, slots of its keys] each) to `out` as BatchCalls (entry.ts). */
export function pushBatchCalls(out: JsonValue[], calls: [string, Tagged[], number[]][]): JsonValue[] {
  for (const [name, args, slots] of calls) {
    out.push(name, args.length);
    for (let i = 0; i < args.length; i++) out.push(args[i] as JsonValue);
    out.push(slots.length);
    for (let i = 0; i < slots.length; i++) out.push(slots[i]);
  }
  return out;
}

/** A TFCALLASYNC's outcome as a note carries it (a FlatPairs pair: its tag, its value). */
export function outcomeOfPair(tag: JsonValue, value: JsonValue): TfOutcome {
  if (tag === FLAT_ERROR) return { err: String(value) };
  return { ok: tag === FLAT_INTEGER ? { i: value as string } : (value as Tagged) };
}

/** The host's typed view of a T&F library's isolate (src/gears/guest/tf/). */
export class TfGuest {
  constructor(readonly isolate: GuestIsolate) {}

  async prepare(configJson: string | null, apiVersion: string): Promise<void> {
    await this.isolate.call(path("prepare"), [configJson, apiVersion]);
  }

  async loaded(): Promise<{ ok: TfRegistrations } | { err: string }> {
    return (await this.isolate.call(path("loaded"), [])) as unknown as
      { ok: TfRegistrations } | { err: string };
  }

  async callFunction(name: string, args: Tagged[], blockAllowed: boolean): Promise<TfOutcome> {
    const out = await this.isolate.call(path("callFunction"), [name, args as JsonValue[], blockAllowed]);
    return out as unknown as TfOutcome;
  }

  /** `onStart`: told as the entry starts (CallOptions.onStart): the host serves its database from then. */
  async callFunctions(
    calls: [string, Tagged[], number[]][],
    budgetMs: number,
    onStart?: () => void,
  ): Promise<TfOutcome[]> {
    // A batch of many calls goes in the binary format: bench/RESULTS.md, "The entry's request".
    const out = await this.isolate.call(path("callFunctions"), [pushBatchCalls([], calls), budgetMs], {
      onStart,
      binaryAt: calls.length >= BINARY_MIN_CALLS ? 0 : undefined,
    });
    const pairs = out as unknown as FlatPairs;
    const outcomes: TfOutcome[] = [];
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      outcomes.push(outcomeOfPair(pairs[i] as JsonValue, pairs[i + 1] as JsonValue));
    }
    return outcomes;
  }

  /**
   * A batch of TFCALLASYNCs (of database `db`, TfBridge.startAsync's `batch`), running
   * concurrently (guest/tf/async-batch.ts): each one's outcome reaches the bridge as a note as
   * soon as it settles (TfBridge.asyncBatches); this settles when all have, or fails (for
   * those not settled by then). Its entry may end first, once it has run `budgetMs` or
   * another entry waits for the isolate (`onSuspended` is told): later entries resume it.
   */
  async callFunctionsAsync(
    batch: number,
    db: number,
    calls: [string, Tagged[], number[]][],
    budgetMs: number,
    onSuspended: () => void,
  ): Promise<void> {
    await this.isolate.call(path("callFunctionsAsync"), [batch, db, pushBatchCalls([], calls)], {
      resumable: { budgetMs, onSuspended },
    });
  }

  /**
   * Keyspace trigger events ([trigger name, event, key] each) in one entry, those of distinct
   * slots with their calls pipelined: for each one run, its error text or null and its ms.
   */
  async fireKeyspaceTriggers(
    items: [string, string, Buffer][],
    db: number,
    budgetMs: number,
    onStart?: () => void,
  ): Promise<TriggerOutcomes> {
    const calls: JsonValue[] = [];
    for (const [name, event, key] of items)
      calls.push(name, 3, event, utf8Text(key), key.toString("latin1"), 1, keySlot(key));
    // Resumable: async callbacks go on in later entries, other work in between (TRIGGERS_STARTED).
    return (await this.isolate.call(path("fireKeyspaceTriggers"), [calls, budgetMs, db], {
      onStart,
      resumable: { budgetMs, onSuspended: () => {} },
    })) as TriggerOutcomes;
  }

  async fireStreamTrigger(
    name: string,
    stream: Buffer,
    records: [string, [string | null, string][]][],
    budgetMs: number,
    onStart?: () => void,
  ): Promise<(string | null)[]> {
    const args = [name, utf8Text(stream), stream.toString("latin1"), records, budgetMs];
    return (await this.isolate.call(path("fireStreamTrigger"), args, { onStart })) as (string | null)[];
  }

  async callClusterFunction(name: string, argsJson: string): Promise<TfOutcome> {
    return (await this.isolate.call(path("callClusterFunction"), [name, argsJson])) as unknown as TfOutcome;
  }
}
