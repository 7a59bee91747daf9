import type { JsonValue } from "../sandbox/types.js";
import {
  GEARS_ENTRY,
  RESULTS_VALUES,
  type Fed,
  type GearsEntry,
  type Outcome,
  type ResultForm,
  type Topology,
} from "./guest/entry.js";
import type { Action, GuestIsolate } from "./guest-isolate.js";

/** An entry method's path for the sandbox's call(), checked against the guest's interface. */
const path = (name: keyof GearsEntry): string => `${GEARS_ENTRY}.${name}`;

/** The results and errors of an execution as the guest hands them over (JSON values). */
export interface GuestOutcome extends Outcome {
  results: JsonValue[];
  out?: GuestStreamed[];
}

/** Streamed results as the host receives them (Streamed, in JSON values). */
export type GuestStreamed = [number, JsonValue[]] | [number, string, number];

/** What a feed took, and (streaming) the results it made, by partition. */
export interface GuestFed extends Fed {
  out: GuestStreamed[];
}

/**
 * From how many records or row values an entry's inputs cross in the binary format: decoding
 * it costs the guest ~5 µs an entry more than parsing JSON, and ~0.1 µs a value less (even
 * at 15 writes' rows, 60 values; bench/RESULTS.md, "The entry's request").
 */
const BINARY_MIN_VALUES = 64;

/** How many records or row values once()'s inputs ([partition, records or {rows|records, values}] each) hold. */
function valuesIn(inputs: JsonValue[]): number {
  let n = 0;
  for (const input of inputs) {
    const batch = Array.isArray(input) ? input[1] : null;
    if (Array.isArray(batch)) n += batch.length;
    else if (batch !== null && typeof batch === "object") {
      const list = batch.rows ?? batch.records;
      if (Array.isArray(list)) n += list.length;
    }
  }
  return n;
}

function fed(answer: JsonValue): GuestFed {
  if (typeof answer === "number") return { taken: answer, out: [] };
  return answer as unknown as GuestFed;
}

/**
 * The read-ahead command names each isolate's guest has: it keeps the last list it was given
 * (guest/gears/read-ahead.ts), so a list is sent once per isolate, not with every execution.
 * Parsing it and upper-casing its 35 names was a third of a one-event entry's guest time
 * (bench/RESULTS.md, "One event at a time: where an entry's time goes").
 */
const namesHeld = new WeakMap<GuestIsolate, readonly string[]>();

/**
 * The host's typed view of the GearsBuilder library in an isolate (src/gears/guest/gears/):
 * one method per entry of GearsEntry, so no caller spells a guest name.
 */
export class GearsGuest {
  constructor(readonly isolate: GuestIsolate) {}

  async actions(): Promise<Action[]> {
    return (await this.isolate.call(path("actions"), [])) as unknown as Action[];
  }

  /** With `stream`, feed() hands over the results as they are made (GearsEntry.start). */
  async start(
    actionIndex: number,
    topology: Topology,
    stream = false,
    form: ResultForm = RESULTS_VALUES,
  ): Promise<number> {
    const args: JsonValue[] = [actionIndex, this.sent(topology)];
    if (stream || form !== RESULTS_VALUES) args.push(stream);
    if (form !== RESULTS_VALUES) args.push(form);
    const id = Number(await this.isolate.call(path("start"), args));
    this.held(topology);
    return id;
  }

  /** The topology as it crosses: without the read-ahead names when the guest has these already. */
  private sent(topology: Topology): JsonValue {
    const names = topology.readAhead;
    if (names === undefined || namesHeld.get(this.isolate) !== names) return topology as unknown as JsonValue;
    return { partitions: topology.partitions, slots: topology.slots } as unknown as JsonValue;
  }

  /** After an entry that started an execution: the guest keeps the names it was given. */
  private held(topology: Topology): void {
    if (topology.readAhead !== undefined) namesHeld.set(this.isolate, topology.readAhead);
  }

  async feed(execId: number, partition: number, records: JsonValue, budgetMs: number): Promise<GuestFed> {
    return fed(await this.isolate.call(path("feed"), [execId, partition, records, budgetMs]));
  }

  /** feed(), the records given in QuickJS's binary object format (isolate.binary). */
  async feedBinary(
    execId: number,
    partition: number,
    bytes: Uint8Array,
    budgetMs: number,
  ): Promise<GuestFed> {
    const args = JSON.stringify([execId, partition, null, budgetMs]);
    return fed(await this.isolate.callBinary(path("feed"), args, 2, bytes));
  }

  async once(
    actionIndex: number,
    topology: Topology,
    inputs: JsonValue[],
    form: ResultForm = RESULTS_VALUES,
  ): Promise<GuestOutcome> {
    const args = [actionIndex, this.sent(topology), inputs];
    if (form !== RESULTS_VALUES) args.push(form);
    // Many records (or event rows) go in the binary format: bench/RESULTS.md, "The entry's request".
    const options = valuesIn(inputs) >= BINARY_MIN_VALUES ? { binaryAt: 2 } : undefined;
    const out = (await this.isolate.call(path("once"), args, options)) as unknown as GuestOutcome;
    this.held(topology);
    return out;
  }

  async finish(execId: number): Promise<GuestOutcome> {
    return (await this.isolate.call(path("finish"), [execId])) as unknown as GuestOutcome;
  }

  async drop(execId: number): Promise<void> {
    await this.isolate.call(path("drop"), [execId]);
  }

  async current(): Promise<{ step?: string; line?: number } | null> {
    return (await this.isolate.call(path("current"), [])) as { step?: string; line?: number } | null;
  }

  async timer(id: number): Promise<void> {
    await this.isolate.call(path("timer"), [id]);
  }

  async onRegistered(actionIndex: number): Promise<void> {
    await this.isolate.call(path("onRegistered"), [actionIndex]);
  }
}
