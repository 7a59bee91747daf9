/** The shapes the GearsBuilder engine works with: steps, actions, executions. */
import type { Streamed } from "../entry.js";
import type { RowsFed } from "./records.js";

export type Fn = (...args: unknown[]) => unknown;
export type Push = (r: unknown) => void;
export type Cont = (v: unknown, r: unknown) => void;

/** What `current()` reports; the step's read-ahead state rides along. */
export interface Where {
  step: string;
  line: number | null;
  /** Read-ahead is off for this step: its guesses missed. */
  raOff?: boolean;
  /** The feed in which it last read ahead, and that round. */
  raFeed?: number;
  raLast?: Round;
}

/**
 * One read-ahead: a step's execute(name, ...argv) for records from..from+out.length-1 of
 * the fed batch, `argv` with the record's key at the `at` positions. `out[j]` is the
 * reply for record from+j (USED once it is used), `errs[j]` the error message instead
 * when the reply was an error.
 */
export interface Round {
  name: string;
  argv: string[];
  at: boolean[];
  keys: string[];
  from: number;
  out: unknown[];
  errs: Record<number, string> | null;
  used: number;
  live: boolean;
  where: Where;
}

export interface StepDef {
  type: string;
  name: string;
  arg: string;
  line: number | null;
  fns: (Fn | undefined)[];
  params: unknown[];
  where: Where;
}

export interface Action {
  kind: "run" | "register";
  reader: string;
  arg: string;
  options: Record<string, unknown>;
  desc: string | null;
  line: number | null;
  steps: StepDef[];
  onRegistered: Fn | null;
}

/** A fold (reduce) state; async reducers are applied one record at a time per state. */
export interface Acc {
  a: unknown;
  k: string | null;
  p: number;
  busy: boolean;
  q: unknown[] | null;
  qi: number;
}

export interface Phase {
  stage: number;
  where: Where;
  run: () => void;
}

export interface Waiter {
  res: () => void;
  rej: (e: unknown) => void;
}

export interface Result {
  results: unknown[];
  errors: string[];
  /** The results as one JSON text (Outcome.json), and their count. */
  json?: string;
  /** Or as the places of the host's records they are (Outcome.refs). */
  refs?: number[];
  count?: number;
  /** A streaming execution's results by partition (see Outcome.out). */
  out?: Streamed[];
}

export interface Exec {
  id: number;
  action: Action;
  parts: number;
  owner: Int16Array;
  head: Push;
  phases: Phase[];
  results: unknown[][];
  errors: string[];
  closed: boolean[];
  pending: number;
  waiters: Waiter[];
  fatal: { error: unknown } | null;
  dropped: boolean;
  finishing: boolean;
  /** The host takes results as they are made (start's `stream`): feed() hands them over. */
  stream: boolean;
  /** How finish() hands the results over (entry.ts ResultForm), when not streamed. */
  form: number;
  /**
   * The feeds of each partition, in order, while every one came as rows (results.ts may then
   * name unchanged records among the results by their place in the host's input); null
   * otherwise (values asked for, streamed, or a feed of another form).
   */
  fed: RowsFed[][] | null;
  done: Result | null;
  recordsIn: number;
  recordsOut: number;
  stage: number;
}

export const READERS = ["KeysReader", "KeysOnlyReader", "StreamReader", "ShardsIDReader", "CommandReader"];
export const NO_RUN = ["CommandReader"];
export const NO_REGISTER = ["KeysOnlyReader", "ShardsIDReader"];
export const GLOBAL_OPS = [
  "collect",
  "repartition",
  "groupby",
  "batchgroupby",
  "aggregate",
  "aggregateby",
  "count",
  "countby",
  "avg",
  "distinct",
  "sort",
];
export const STATELESS_OPS = ["map", "flatmap", "foreach", "filter", "limit"];
