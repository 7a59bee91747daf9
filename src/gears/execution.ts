import type { JsonValue } from "../sandbox/types.js";
import { executionError } from "./errors.js";
import { GearsGuest, type GuestOutcome, type GuestStreamed } from "./gears-guest.js";
import { entryBudgetMs, type Action, type GuestIsolate } from "./guest-isolate.js";
import { encodeResults, resultsOfJson } from "./json-values.js";
import { ResultChunks, ResultsTooLarge, type GearsReply } from "./result-chunks.js";
import { SandboxError } from "../sandbox/types.js";
import { encodeBinary } from "../sandbox/bjson.js";
import type { Partitions } from "./partitions.js";
import { READ_AHEAD_COMMANDS, type AheadBatch, type PrefetchingBridge } from "./read-ahead.js";
import { RESULTS_VALUES, type EventRows, type ResultForm, type Topology } from "./guest/entry.js";
import { READERS, RecordBinary, type ReadContext, type RecordBatch } from "./readers.js";

/** The readers whose records stand for keys: a step's execute() over them may be read early. */
const KEYED_READERS = new Set(["KeysReader", "KeysOnlyReader"]);

/** A batch's key names, made when asked; null when some record has no key. */
function namesOf(batch: RecordBatch): (() => string[]) | null {
  if (batch instanceof RecordBinary) return batch.keyNames;
  const names: string[] = [];
  for (const r of batch) {
    if (typeof r === "string") names.push(r);
    else if (r !== null && typeof r === "object" && !Array.isArray(r) && typeof r.key === "string")
      names.push(r.key);
    else return null;
  }
  return () => names;
}

/**
 * Streamed results past this many bytes make a large execution: its isolate's pool starts no
 * spare while it runs (a worker's heap, 6-9 MB, would show at its peak beside the results).
 */
const LARGE_RESULTS_BYTES = 1024 * 1024;

/** Given inputs up to this many records run in one guest entry (start, feed, finish at once). */
const ONCE_MAX_RECORDS = 256;

function countRecords(input: Map<number, PackedRecords>): number {
  let n = 0;
  for (const packed of input.values()) n += packed.records.length;
  return n;
}

/**
 * Records of the usual event shape, `{key, type, event}` and `valueRef` or `lazyValue`, in
 * that order, as rows (guest/entry.ts EventRows); null when one has another shape, and the
 * batch goes as objects. A record whose four fields are those of an earlier row of the batch
 * (a hot key's events: a set the handler grows) is sent as that row's position alone, one
 * number instead of three strings and a number: a shorter text to make, copy and parse, and
 * the guest makes the same record of it (guest/gears/records.ts recordsOfRows).
 */
function eventRows(records: JsonValue[]): EventRows | null {
  const rows: EventRows = [];
  /** Each key's last full row, by its position in `rows`. */
  const rowOf = new Map<string, number>();
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (r === null || typeof r !== "object" || Array.isArray(r)) return null;
    const { key, type, event, valueRef } = r;
    let ref: number;
    if (typeof valueRef === "number") ref = valueRef;
    else if (r.lazyValue === true) ref = -1;
    else return null;
    if (typeof key !== "string" || typeof type !== "string" || typeof event !== "string") return null;
    const fields = Object.keys(r);
    if (fields.length !== 4 || fields[0] !== "key" || fields[1] !== "type" || fields[2] !== "event")
      return null;
    const at = rowOf.get(key);
    if (at !== undefined && rows[at + 1] === type && rows[at + 2] === event && rows[at + 3] === ref) {
      rows.push(at);
      continue;
    }
    rowOf.set(key, rows.length);
    rows.push(key, type, event, ref);
  }
  return rows;
}

/**
 * Results the guest named by the places of the records they are (Outcome.refs): each one's
 * string, the JSON text of the record as the guest saw it, `{key, type, event, value}`,
 * which is the text the guest would have made (guest/gears/results.ts refsOf).
 */
function resultsOfRefs(refs: readonly number[], input: Map<number, PackedRecords> | null): JsonValue[] {
  const out: JsonValue[] = [];
  for (let i = 0; i < refs.length;) {
    const packed = input?.get(refs[i++]);
    const n = refs[i++];
    if (packed === undefined || packed.values === null || !(n >= 0)) throw new Error("results out of place");
    const { records, values } = packed;
    for (const end = i + n; i < end; i++) {
      const r = records[refs[i]];
      if (r === null || typeof r !== "object" || Array.isArray(r) || typeof r.valueRef !== "number")
        throw new Error("results out of place");
      out.push(JSON.stringify({ key: r.key, type: r.type, event: r.event, value: values[r.valueRef] }));
    }
  }
  return out;
}

/** A packed batch as the guest's feed() takes it: rows when the records allow. */
function packedBatch(records: JsonValue[], values: JsonValue[]): JsonValue {
  const rows = eventRows(records);
  return rows === null ? { records, values } : { rows, values };
}

/** Records for one partition; with `values`, records carry `valueRef` (an index) instead of a value. */
export interface PackedRecords {
  records: JsonValue[];
  values: JsonValue[] | null;
}

export type ExecutionStatus = "created" | "running" | "done" | "aborted";

/** Told of each finished execution (metrics, src/observability/metrics.ts); set only while they count. */
export interface ExecutionObserver {
  executionFinished(execution: Execution): void;
}
/** The memory error of an execution, naming the setting that bounds it. */
const MEMORY_SETTING_HINT =
  " (ScriptMemoryLimitMB: raise it with RG.CONFIGSET ScriptMemoryLimitMB <MB>, or keep fewer records in global steps)";

/**
 * One batch run of a plan: every partition is read in parallel and its records are fed
 * to the guest in batches (the next batch is fetched while the guest works on this one);
 * then the guest runs the global steps and hands back the results.
 *
 * A run over a reader (RG.EXECUTE) streams its results: the guest hands over what each
 * batch made with the feed's answer, and they are kept here as RESP bytes (ResultChunks),
 * so neither the guest nor the host holds the set as values; global steps still hold their
 * records in the guest until finish(). An execution over given records (an event) keeps
 * its results as values, or as the one JSON text the guest made of them, turned into values
 * only when RG.GETRESULTS or a caller asks (`resultForm`).
 */
export class Execution {
  status: ExecutionStatus = "created";
  /** The results as values: executions over given records (events) only. */
  private values: JsonValue[] | null = null;
  /**
   * Or, until they are asked for, as the one JSON text the guest made of them (RESULTS_JSON):
   * most event executions' results are never fetched, and one string is all they cost.
   */
  private valuesJson: string | null = null;
  /** Or as the places of the input's records they are (Outcome.refs), likewise until asked for. */
  private valuesRefs: number[] | null = null;
  private valuesJsonCount = 0;
  /** The results as RESP bytes: executions over a reader. */
  private readonly chunks: ResultChunks | null;
  /** Set once the results went past their bound: reading stops. */
  private overflowed = false;
  readonly errors: string[] = [];
  recordsRead = 0;
  partitionsDone = 0;
  readonly createdAt = Date.now();
  startedAt = 0;
  finishedAt = 0;
  readMs = 0;
  /** The ACL user who ran it (RG.EXECUTE) or registered its session; null without ACLs. */
  owner: string | null = null;
  /** Told once, when its streamed results pass LARGE_RESULTS_BYTES. */
  onLarge: (() => void) | null = null;
  /** The isolate's bridge when it may read a step's executeMany replies a batch early (RG.EXECUTE). */
  prefetch: PrefetchingBridge | null = null;
  private abortRequested = false;
  private readonly finished: Promise<void>;
  private markFinished!: () => void;
  private readonly guest: GearsGuest;

  constructor(
    readonly id: string,
    private readonly isolate: GuestIsolate,
    readonly action: Action,
    private readonly actionIndex: number,
    readonly partitions: Partitions,
    /** Records given by an event, by partition, instead of the action's reader. */
    private readonly input: Map<number, PackedRecords> | null = null,
    /** A registration's execution runs in its session's isolate, which outlives it. */
    private readonly ownsIsolate = true,
    /** MaxResultsMB: the bound on a streamed result set's bytes (0: none). */
    maxResultsMb = 0,
    /** How an execution over given records gets its results from the guest (guest/entry.ts). */
    private readonly resultForm: ResultForm = RESULTS_VALUES,
  ) {
    this.finished = new Promise((resolve) => (this.markFinished = resolve));
    this.guest = new GearsGuest(isolate);
    this.chunks =
      input === null
        ? new ResultChunks(partitions.count, action.options.collect === false, maxResultsMb)
        : null;
  }

  /** How many results (RG.GETEXECUTION). */
  get resultCount(): number {
    if (this.valuesJson !== null || this.valuesRefs !== null) return this.valuesJsonCount;
    return this.chunks?.count ?? this.values?.length ?? 0;
  }

  /**
   * The results as values: executions over given records only. Kept as text until the first
   * time they are asked for, then as the values made of it, so a second RG.GETRESULTS does
   * not parse the text again.
   */
  get results(): JsonValue[] | null {
    if (this.valuesJson !== null) {
      this.values = resultsOfJson(this.valuesJson);
      this.valuesJson = null;
    } else if (this.valuesRefs !== null) {
      this.values = resultsOfRefs(this.valuesRefs, this.input);
      this.valuesRefs = null;
    }
    return this.values;
  }

  set results(values: JsonValue[] | null) {
    this.values = values;
    this.valuesJson = null;
    this.valuesRefs = null;
  }

  /** The results of a guest outcome, in the form they came in. */
  private takeResults(out: GuestOutcome): void {
    if (typeof out.json === "string") {
      this.values = null;
      this.valuesJson = out.json;
      this.valuesJsonCount = out.count ?? 0;
    } else if (Array.isArray(out.refs)) {
      this.values = null;
      this.valuesRefs = out.refs;
      this.valuesJsonCount = out.count ?? 0;
    } else this.results = out.results;
  }

  /** Keeps results the guest handed over; past MaxResultsMB, the execution stops reading. */
  private keep(out: GuestStreamed[] | undefined): void {
    if (out === undefined || this.chunks === null || this.overflowed) return;
    const wasLarge = this.chunks.bytes >= LARGE_RESULTS_BYTES;
    try {
      for (const [partition, values, count] of out) this.chunks.add(partition, values, count);
    } catch (err) {
      if (err instanceof ResultsTooLarge) this.overflowed = true;
      throw err;
    }
    if (!wasLarge && this.chunks.bytes >= LARGE_RESULTS_BYTES) this.onLarge?.();
  }

  get isFinished(): boolean {
    return this.status === "done" || this.status === "aborted";
  }

  waitFinished(): Promise<void> {
    return this.finished;
  }

  /** Stops the execution promptly: the guest is interrupted and reading stops. */
  abort(): void {
    if (this.isFinished) return;
    this.abortRequested = true;
    if (this.status === "created") {
      this.status = "aborted";
      this.finish();
    } else this.isolate.abort();
  }

  async run(): Promise<void> {
    if (this.abortRequested) return;
    this.status = "running";
    this.startedAt = Date.now();
    let execId: number | null = null;
    try {
      const topology: Topology = {
        partitions: this.partitions.count,
        slots: this.partitions.ranges,
        readAhead: READ_AHEAD_COMMANDS,
      };
      if (this.input !== null && countRecords(this.input) <= ONCE_MAX_RECORDS) {
        await this.runOnce(topology, this.input);
        return;
      }
      if (this.input === null && KEYED_READERS.has(this.action.reader)) this.prefetch?.start();
      // The partitions' first reads go out while the guest starts the execution.
      const started = this.guest.start(this.actionIndex, topology, this.chunks !== null, this.resultForm);
      const readStart = Date.now();
      void started.then(
        (id) => (execId = id),
        () => {},
      );
      const parts = Array.from({ length: this.partitions.count }, (_, p) => this.readPartition(p, started));
      await Promise.all(parts);
      const id = await started;
      this.readMs = Date.now() - readStart;
      if (this.abortRequested) throw new Error("aborted");
      const out = await this.guest.finish(id);
      if (this.chunks !== null) this.keep(out.out);
      else this.takeResults(out);
      this.addErrors(out.errors);
      this.status = "done";
    } catch (err) {
      if (this.abortRequested) this.status = "aborted";
      else {
        let message = await executionError(err, this.isolate);
        if (err instanceof SandboxError && err.kind === "memory") message += MEMORY_SETTING_HINT;
        this.errors.push(message);
        this.status = "done";
      }
      // An execution that failed as a whole has no results (as before results streamed).
      this.chunks?.clear();
      if (this.values === null && this.valuesJson === null && this.valuesRefs === null) this.values = [];
    } finally {
      this.prefetch?.stop();
      // A session's isolate lives on: free the guest's state of this execution.
      if (!this.ownsIsolate && execId !== null && this.isolate.alive) {
        await this.guest.drop(execId).catch(() => {});
      }
      this.finish();
    }
  }

  /** A small given input (an event batch): the whole execution in one entry into the guest. */
  private async runOnce(topology: Topology, input: Map<number, PackedRecords>): Promise<void> {
    const inputs: JsonValue[] = [];
    for (const [partition, packed] of input) {
      if (packed.records.length === 0) continue;
      this.recordsRead += packed.records.length;
      inputs.push([
        partition,
        packed.values === null ? packed.records : packedBatch(packed.records, packed.values),
      ]);
    }
    const out = await this.guest.once(this.actionIndex, topology, inputs, this.resultForm);
    this.partitionsDone = this.partitions.count;
    this.takeResults(out);
    this.addErrors(out.errors);
    this.status = "done";
  }

  /** Not push(...errors): a record's error each, they can be too many for one call's arguments. */
  private addErrors(errors: string[]): void {
    for (let i = 0; i < errors.length; i++) this.errors.push(errors[i]);
  }

  private async readPartition(partition: number, started: Promise<number>): Promise<void> {
    if (this.input !== null) {
      const execId = await started;
      const packed = this.input.get(partition);
      if (packed !== undefined && packed.records.length > 0) {
        this.recordsRead += packed.records.length;
        await this.feed(execId, partition, packed.records, packed.values);
      }
      this.partitionsDone++;
      return;
    }
    const reader = READERS[this.action.reader];
    const ctx: ReadContext = {
      partition,
      shard: this.partitions.shard(partition),
      partitionOfSlot: (slot) => this.partitions.partitionOfSlot(slot),
      shardId: this.partitions.shardIds[partition],
      binary: this.isolate.binary,
    };
    const arg = typeof this.action.arg === "string" ? this.action.arg : "*";
    const batches = reader(ctx, arg, this.action.options);
    const prefetch = this.prefetch;
    /** The next batch, and its replies read early when a step reads over its keys. */
    const pull = (): Promise<{ batch: IteratorResult<RecordBatch, void>; ahead: AheadBatch | null }> =>
      batches.next().then((batch) => {
        const names = batch.done || prefetch === null ? null : namesOf(batch.value);
        const ahead = names === null ? null : prefetch!.read(partition, batch.value!.length, names);
        return { batch, ahead };
      });
    let next = pull();
    try {
      const execId = await started;
      for (;;) {
        const { batch, ahead } = await next;
        if (batch.done || this.abortRequested || this.overflowed) {
          prefetch?.done(ahead);
          break;
        }
        next = pull();
        this.recordsRead += batch.value.length;
        try {
          await this.feed(execId, partition, batch.value);
        } finally {
          prefetch?.done(ahead);
        }
      }
    } finally {
      // A read under way when the execution failed (its start, a feed) ends unheeded.
      next.catch(() => {});
      await batches.return();
    }
    this.partitionsDone++;
  }

  /**
   * Feeds a batch, in as many guest entries as it takes: each entry stops starting records
   * after half the time limit, so the limit applies to one step call, not to a whole batch.
   */
  private async feed(
    execId: number,
    partition: number,
    records: JsonValue[] | RecordBinary,
    values: JsonValue[] | null = null,
  ): Promise<void> {
    const budget = entryBudgetMs(this.isolate);
    const isolate = this.isolate;
    if (records instanceof RecordBinary || (values === null && isolate.binary)) {
      if (!isolate.binary) throw new Error("binary records for an isolate that cannot read them");
      // The records go in the binary format: no JSON on either side.
      let from = 0;
      while (from < records.length && !this.abortRequested && !this.overflowed) {
        const bytes =
          records instanceof RecordBinary ? records.bytes(from) : encodeBinary(records.slice(from));
        const fed = await this.guest.feedBinary(execId, partition, bytes, budget);
        this.keep(fed.out);
        const taken = fed.taken;
        from = taken >= records.length - from ? records.length : from + Math.max(1, taken);
      }
      return;
    }
    let rest = records;
    while (rest.length > 0 && !this.abortRequested && !this.overflowed) {
      const batch: JsonValue = values === null ? rest : packedBatch(rest, values);
      const fed = await this.guest.feed(execId, partition, batch, budget);
      this.keep(fed.out);
      const taken = fed.taken;
      rest = taken >= rest.length ? [] : rest.slice(Math.max(1, taken));
    }
  }

  private finish(): void {
    this.finishedAt = Date.now();
    if (this.ownsIsolate) void this.isolate.dispose().catch(() => {});
    this.markFinished();
  }

  /** `[results, errors]`; a streamed result set as the buffers it is held in. */
  reply(): GearsReply {
    if (this.chunks !== null) return this.chunks.reply(this.errors);
    return encodeResults(this.results ?? [], this.errors);
  }
}
