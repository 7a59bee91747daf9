/**
 * What the threads of a --threads proxy say to each other, through the supervisor (the cluster
 * primary): a thread asks every thread (itself included) and gets all their answers at once.
 */

import type { AclChange, AclOutcome } from "../acl/access-control.js";
import type { AclLogEntry } from "../acl/acl-log.js";
import type { PeerWrite } from "../gears/events/peer-writes.js";

/**
 * A question every thread answers about itself. One that names its sender (`from`) is for the
 * other threads only: the sender answers it with null (peers.ts).
 */
export type ThreadQuery =
  | { kind: "client-list"; args: string[] }
  | { kind: "client-kill"; args: string[]; callerId: number }
  | { kind: "client-unblock"; id: number; withError: boolean }
  | { kind: "info" }
  | { kind: "metrics" }
  | { kind: "slowlog-get"; count: number }
  | { kind: "slowlog-len" }
  | { kind: "slowlog-reset" }
  /**
   * A client's CONFIG SET, for the settings each thread keeps (slow log, tracking table,
   * output limits); thread `from` followed it already.
   */
  | { kind: "config-set"; argv: Uint8Array[]; from: number }
  | { kind: "gears"; name: string; args: Uint8Array[]; caller: unknown }
  /** Thread `from` wrote a gears session or a T&F library: the others follow the store now. */
  | { kind: "follow-store"; from: number }
  /**
   * RG.DUMPREGISTRATIONS asks each thread for its counters; RG.CLEARREGISTRATIONSSTATS and
   * RG.(UN)PAUSEREGISTRATIONS on thread `from` are applied by the others.
   */
  | { kind: "registration-counters"; from: number }
  | { kind: "registrations-clear-stats"; from: number }
  | { kind: "registrations-pause"; ids: string[]; paused: boolean; from: number }
  /** TFUNCTION LIST on thread `from` asks the others for their figures (of `library` alone when given). */
  | { kind: "tf-list-stats"; library: string | null; from: number }
  /** A client's RG.CONFIGSET or CONFIG SET of T&F's settings on thread `from`: the others apply it. */
  | { kind: "gears-config"; pairs: [string, string][]; via: "rg" | "config"; from: number }
  /**
   * ACL SETUSER/DELUSER/LOAD of client `by`: every thread, the asking one included, applies
   * it as the query arrives, so that all apply the changes in the supervisor's one order.
   */
  | { kind: "acl-change"; change: AclChange; by: number }
  /** A thread (re)starting asks the running threads for their users (ACL LIST lines). */
  | { kind: "acl-users" }
  | { kind: "acl-log"; count: number }
  | { kind: "acl-log-reset" }
  /**
   * Thread `from` holds keyspace notifications of `keys` (db:key) for its triggers: each other
   * thread tells the writes it made so far (a key-writes note, before its answer) and answers
   * which of the keys a function of its own is writing (gears/events/peer-writes.ts).
   */
  | { kind: "key-writes-settle"; keys: string[]; from: number };

/** A thread's answer to acl-change: its outcome, or `syncing` while it takes the users of the others. */
export type AclChangeAnswer = { thread: number; outcome: AclOutcome } | { thread: number; syncing: true };

/** A thread's answer to acl-users: its users and the supervisor's id of the last change it applied. */
export interface AclUsersAnswer {
  generation: number;
  lines: string[];
}

/** A thread's answer to acl-log: its newest entries. */
export type AclLogAnswer = AclLogEntry[];

/**
 * A word for one thread, answered by none: tracking invalidations for a REDIRECT client it
 * serves, or who wrote keys of the shards whose triggers it may run.
 */
export type ThreadNote =
  /** Invalidated key lists (or the flush's null) due to tracking client `from`, for its REDIRECT client `to`. */
  | { kind: "tracking-invalidate"; to: number; from: number; values: Uint8Array[] }
  /** Tracking client `to`'s REDIRECT client `redirect` is gone. */
  | { kind: "tracking-broken"; to: number; redirect: number }
  /** Events the sender's journal made of its own writes of shards it does not handle: who wrote each. */
  | { kind: "key-writes"; writes: PeerWrite[] };

export type ThreadMessage =
  /** thread -> supervisor: ask every thread. */
  | { t: "ask"; id: number; query: ThreadQuery }
  /** supervisor -> each thread. */
  | { t: "query"; id: number; query: ThreadQuery }
  /** each thread -> supervisor. */
  | { t: "answer"; id: number; answer: unknown }
  /** supervisor -> the asking thread: one answer per live thread. */
  | { t: "answers"; id: number; answers: unknown[] }
  /** thread -> supervisor -> thread `thread` (its index). */
  | { t: "tell"; thread: number; note: ThreadNote }
  /** thread -> supervisor: it answers questions from now on. */
  | { t: "ready" }
  /** supervisor -> each thread: shut down gracefully (a signal reached the supervisor). */
  | { t: "stop" };

/** The thread's index and the count, given to each forked thread. */
export const THREAD_ENV = "GEARS_PROXY_THREAD";
export const THREADS_ENV = "GEARS_PROXY_THREADS";
/** host:port of the redis-server the supervisor started (no --upstream given), for every thread. */
export const UPSTREAM_ENV = "GEARS_PROXY_THREAD_UPSTREAM";

export function isThreadMessage(m: unknown): m is ThreadMessage {
  return typeof m === "object" && m !== null && typeof (m as { t?: unknown }).t === "string";
}
