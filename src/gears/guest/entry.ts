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
  slots: [number, number, number][];
  /** Commands that may be read ahead for a batch of records. */
  readAhead?: string[];
}

export interface Outcome {
  results: unknown[];
  errors: string[];
}

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
  /** An execution of action `actionIndex`: its id. */
  start(actionIndex: number, topology: Topology): number;
  /**
   * Runs records through the pipeline; with a time budget (ms) it stops starting records
   * once the budget is spent and answers how many it took.
   */
  feed(execId: number, partition: number, records: unknown, budgetMs?: number): number | Promise<number>;
  /** start, feed every [partition, records], finish and drop in one entry. */
  once(actionIndex: number, topology: Topology, inputs: unknown): Outcome | Promise<Outcome>;
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
