/**
 * What the host calls in a guest library: the name of each library's entry object and its
 * methods. The guest implements these interfaces; the host reaches them only through its
 * typed facades (src/gears/gears-guest.ts, src/gears/tf/tf-guest.ts), never by hand-made names.
 */

/** The global holding the GearsBuilder library's entry object. */
export const GEARS_ENTRY = "__gears";

/** One step of a plan, as the guest library reports it. */
export interface StepInfo {
  type: string;
  name: string;
  arg: string;
  line: number | null;
}

/** What a script asked for: run() or register(). */
export interface ActionInfo {
  kind: "run" | "register";
  reader: string;
  arg: unknown;
  options: Record<string, unknown>;
  desc: string | null;
  line: number | null;
  steps: StepInfo[];
}

/** How the keyspace is split into partitions for an execution. */
export interface Topology {
  partitions: number;
  /** [first slot, last slot, partition]. */
  slots: readonly (readonly [number, number, number])[];
  /** Commands that may be read ahead for a batch of records. */
  readAhead?: string[];
}

/**
 * A batch of a streaming execution's results: [partition, values], or, for results converted
 * to strings, [partition, their RESP bulk strings back to back, how many].
 */
export type Streamed = [number, unknown[]] | [number, string, number];

/**
 * How an execution over given records hands its results over: as values (one string each,
 * made by the guest), as RESULTS_JSON (one JSON text of the whole list, `Outcome.json`, that
 * the host turns into those strings only when they are asked for), or RESULTS_NONE (only
 * their count: nothing can fetch them).
 */
export const RESULTS_VALUES = 0;
export const RESULTS_JSON = 1;
export const RESULTS_NONE = 2;
export type ResultForm = typeof RESULTS_VALUES | typeof RESULTS_JSON | typeof RESULTS_NONE;

export interface Outcome {
  results: unknown[];
  errors: string[];
  /**
   * RESULTS_JSON: the results as one JSON text of a list, `results` then empty; each element
   * is the result's string when it is one, else a value whose string is its JSON text
   * (objects, arrays) or String(value) (numbers, booleans); null stays null.
   */
  json?: string;
  /**
   * RESULTS_JSON, instead of `json` when every result is an event record fed as rows,
   * unchanged (guest/gears/results.ts refsOf): for each partition with results, its number,
   * how many, then each one's place among the records the host fed that partition (over
   * all its feeds, in order). The host makes each one's JSON text of its own record,
   * `{key, type, event, value}`, only when they are asked for.
   */
  refs?: number[];
  /** RESULTS_JSON and RESULTS_NONE: how many results there were. */
  count?: number;
  /**
   * An execution started with `stream`: its results by partition, [partition, values] (what
   * feed() did not hand over already); `results` is then empty.
   */
  out?: Streamed[];
}

/** What feed() answers for an execution started with `stream`: the records it took, and the results they made. */
export interface Fed {
  taken: number;
  out: Streamed[];
}

/**
 * Event records in the flat form feed() also takes, `{rows, values}`: for each record its
 * key, type and event (strings) and the index of its value in `values`, or -1 for a value
 * read when the handler first touches it. QuickJS parses a flat list of primitives several
 * times quicker than a list of objects, and the records need no field deleted.
 */
export type EventRows = (string | number)[];

export interface Progress {
  recordsIn: number;
  recordsOut: number;
  stage: number;
  done: boolean;
  pending: number;
  errors: number;
}

export interface GearsEntry {
  actions(): ActionInfo[];
  /**
   * An execution of action `actionIndex`: its id. With `stream`, the results leave the guest
   * as soon as they are made (feed() hands them over, as Fed), instead of at finish().
   */
  start(actionIndex: number, topology: Topology, stream?: boolean, form?: ResultForm): number;
  /**
   * Runs records through the pipeline; with a time budget (ms) it stops starting records
   * once the budget is spent and answers how many it took (with the results, when streaming).
   */
  feed(
    execId: number,
    partition: number,
    records: unknown,
    budgetMs?: number,
  ): number | Fed | Promise<number | Fed>;
  /** start, feed every [partition, records], finish and drop in one entry. */
  once(
    actionIndex: number,
    topology: Topology,
    inputs: unknown,
    form?: ResultForm,
  ): Outcome | Promise<Outcome>;
  /** false once a limit() of the first stage is exhausted in that partition. */
  wants(execId: number, partition: number): boolean;
  finish(execId: number): Outcome | Promise<Outcome>;
  progress(execId: number): Progress;
  /** The step whose user code runs now (still known after an interrupt). */
  current(): { step: string; line: number | null } | null;
  drop(execId: number): boolean;
  slot(key: string): number;
  /** Runs the callback of registerTimeEvent number `id`. */
  timer(id: number): unknown;
  onRegistered(actionIndex: number): unknown;
}

/** The global holding a Triggers and Functions library's entry object. */
export const TF_ENTRY = "__tf";

/**
 * A value crossing between the host and a T&F library, in JSON: a string is a UTF-8 string;
 * the other Redis/JS types are tagged objects (bytes travel as latin1 text, one char a byte).
 */
export type Tagged =
  | string
  | null
  | { i: string } // integer (a BigInt in JS)
  | { d: number | string } // double ("inf", "-inf", "nan" for those)
  | { b: string } // bytes (an ArrayBuffer in JS), latin1
  | { u: string } // bytes that are not UTF-8, where a string was asked for
  | { st: string } // status (simple string)
  | { t: boolean }
  | { n: string } // big number
  | { v: string; f: string } // verbatim
  | { e: string } // an error reply nested in an array
  | { a: Tagged[] }
  | { m: [Tagged, Tagged][] }
  | { s: Tagged[] };

export interface TfFunctionInfo {
  name: string;
  flags: string[];
  isAsync: boolean;
  description: string | null;
}

export interface TfKeyspaceTriggerInfo {
  name: string;
  prefix: Tagged;
  description: string | null;
}

export interface TfStreamTriggerInfo {
  name: string;
  prefix: Tagged;
  window: number;
  trim: boolean;
  description: string | null;
}

/** What a library's top-level code registered. */
export interface TfRegistrations {
  functions: TfFunctionInfo[];
  clusterFunctions: string[];
  keyspaceTriggers: TfKeyspaceTriggerInfo[];
  streamTriggers: TfStreamTriggerInfo[];
}

/** How a call ended: its value, or the text of its error reply. */
export type TfOutcome = { ok: Tagged } | { err: string };

/**
 * Many outcomes or replies in one flat list, a pair each: FLAT_OK and a value, FLAT_ERROR and
 * an error text, or FLAT_INTEGER and an integer's digits (the {i} value without its object).
 * QuickJS's JSON is several times quicker at a flat list of primitives than at nested arrays
 * and objects, and a batch of TFCALLs crosses it four times.
 */
export const FLAT_OK = 0;
export const FLAT_ERROR = 1;
export const FLAT_INTEGER = 2;
export type FlatPairs = (number | Tagged)[];

/**
 * TFCALLs for one entry, one flat list: for each its function's name, its argument count,
 * its arguments, the count of its keys' slots, those slots. Flat for the same reason.
 */
export type BatchCalls = (string | number | Tagged)[];

/** A pair for each trigger event run: its error text or null, then the milliseconds it took. */
export type TriggerOutcomes = (string | number | null)[];

/**
 * The first element of the host's answer to a batch's "calls" request (guest/tf/batch.ts):
 * the replies of every call sent so far follow (FlatPairs), or TFCALLs that arrived for the
 * entry under way, to start before the replies (BatchCalls).
 */
export const CALLS_REPLIES = 0;
export const CALLS_MORE = 1;

/** T&F's reply when the isolate's limits end a call: in the guest, and on the host (gears/tf/libraries.ts). */
export const LIMITS_ERROR = "Err Execution was terminated due to OOM or timeout";

/** The host call a batch of TFCALLASYNCs makes with each round of its calls, after the batch's id (guest/tf/async-batch.ts). */
export const ASYNC_JOIN = "joinAsync";
/**
 * The host call of a `client.call` (sync or async) that names its database: [db, noWrites,
 * raw, command...]. A batch of TFCALLASYNCs' calls use it: they may go on in later entries,
 * while the host serves other databases' TFCALLs ("call" runs in the database served now).
 */
export const CALL_IN = "callIn";
/** The note a TFCALLASYNC's outcome travels in: its batch's id, its index in the batch, then its FlatPairs pair. */
export const ASYNC_SETTLED = "settled";
/**
 * The note of a keyspace trigger entry whose async callbacks have all reached their first
 * await: the TriggerOutcomes so far, an unsettled callback's time -1 (its outcome comes with
 * the entry's result).
 */
export const TRIGGERS_STARTED = "triggersStarted";

export interface TfEntry {
  /** Defines `redis` for the library's code about to run (its CONFIG JSON, its api version). */
  prepare(configJson: string | null, apiVersion: string): void;
  /** Ends the load: no more registrations; what was registered, or the load error's text. */
  loaded(): { ok: TfRegistrations } | { err: string };
  /** A registered function, called by TFCALL/TFCALLASYNC (args tagged, raw when its flags say so). */
  callFunction(name: string, args: Tagged[], blockAllowed: boolean): TfOutcome | Promise<TfOutcome>;
  /**
   * Several TFCALLs (blocking not allowed) in one entry, as BatchCalls;
   * the outcomes in order of those it ran, their calls pipelined (guest/tf/batch.ts). It
   * starts no call once `budgetMs` is spent, so the host sends the rest again. The host may
   * hand over more TFCALLs while the entry runs (the answer to its "calls" request): their
   * outcomes follow those of `calls`. The outcomes come as FlatPairs.
   */
  callFunctions(calls: BatchCalls, budgetMs: number): FlatPairs | Promise<FlatPairs>;
  /**
   * A batch of TFCALLASYNCs (blocking allowed) of database `db`, as BatchCalls, running
   * concurrently (guest/tf/async-batch.ts); `batch` is the host's id of it. Each one's outcome goes to the
   * host as a note as soon as it settles, [batch, index, FlatPairs pair], and the host may
   * hand over more while they run (the answer to their "joinAsync" calls). Settles when all
   * have, which may be entries later (the sandbox resumes them: CallOptions.resumable).
   */
  callFunctionsAsync(batch: number, db: number, calls: BatchCalls): null | Promise<null>;
  /**
   * Keyspace trigger events in one entry, as BatchCalls: for each, the trigger's name, 3
   * arguments (the event, the key or null when it is not UTF-8, the key in latin1: one char a
   * byte), and the key's slot. Each runs onTriggerFired, then its callback; the calls of
   * events of distinct slots are pipelined as a batch of TFCALLs' are (guest/tf/batch.ts),
   * those of one slot run one after the other, in order. It starts none once `budgetMs` is
   * spent. The outcomes of those it ran, in order, as TriggerOutcomes. The events are of
   * database `db`, where their calls run. With async callbacks, a TRIGGERS_STARTED note
   * comes once each has reached its first await; the entry may then be resumed later.
   */
  fireKeyspaceTriggers(
    events: BatchCalls,
    budgetMs: number,
    db: number,
  ): TriggerOutcomes | Promise<TriggerOutcomes>;
  /**
   * Stream trigger `name` for a window of entries of one stream (name in latin1), started
   * one after the other (async callbacks then wait together): each started entry's error
   * text, or null. It starts none once `budgetMs` is spent, so a window of callbacks that
   * each fit in the time limit never outlasts it together. An entry's fields and values
   * come in order, each as [its UTF-8 text or null, its bytes in latin1].
   */
  fireStreamTrigger(
    name: string,
    stream: string | null,
    streamBytes: string,
    records: [string, [string | null, string][]][],
    budgetMs: number,
  ): (string | null)[] | Promise<(string | null)[]>;
  /** A cluster function of this library, with the JSON text of its arguments. */
  callClusterFunction(name: string, argsJson: string): TfOutcome | Promise<TfOutcome>;
}
