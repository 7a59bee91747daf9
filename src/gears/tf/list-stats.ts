import type { KeyspaceTriggers, TriggerStats } from "./keyspace-triggers.js";
import type { TfLibraries } from "./libraries.js";
import type { StreamStats, StreamTriggers } from "./stream-triggers.js";
import { newest, withTotals } from "../thread-figures.js";

/**
 * What TFUNCTION LIST shows of each library's activity, as plain data that passes between the
 * threads of a --threads proxy. Each thread runs the keyspace triggers of the shards it holds
 * and reads the streams whose leases it holds, so each counts only those: the thread answering
 * TFUNCTION LIST asks the others for theirs and shows them merged, and the listing is the same
 * whichever thread a client landed on.
 */
export interface LibraryListStats {
  pendingJobs: number;
  /** The `callAsync`s waiting, as "cmd arg ..." texts. */
  pendingAsyncCalls: string[];
  /** By keyspace trigger name. */
  keyspaceTriggers: Record<string, TriggerStats>;
  /** By stream trigger name: the streams it reads. */
  streamTriggers: Record<string, StreamListStats[]>;
}

/** One stream a stream trigger reads (StreamStats with its name in latin1 and its pending ids listed). */
export type StreamListStats = Omit<StreamStats, "name" | "pendingIds"> & {
  name: string;
  pendingIds: string[];
};

/** By library name. */
export type ListStats = Record<string, LibraryListStats>;

/** The parts of the T&F engine the figures come from. */
export interface ListStatsSources {
  libraries: TfLibraries;
  keyspaceTriggers: KeyspaceTriggers;
  streamTriggers: StreamTriggers;
}

/** This thread's figures of the libraries (of `library` alone when given). */
export function listStatsOf(tf: ListStatsSources, library: string | null): ListStats {
  const stats: ListStats = {};
  for (const l of tf.libraries.all()) {
    if (library !== null && l.name !== library) continue;
    const keyspaceTriggers: Record<string, TriggerStats> = {};
    for (const t of l.registrations.keyspaceTriggers)
      keyspaceTriggers[t.name] = { ...tf.keyspaceTriggers.statsOf(l.name, t.name) };
    const streamTriggers: Record<string, StreamListStats[]> = {};
    for (const t of l.registrations.streamTriggers)
      streamTriggers[t.name] = tf.streamTriggers
        .statsOf(l.name, t.name)
        .map((st) => ({ ...st, name: st.name.toString("latin1"), pendingIds: [...st.pendingIds] }));
    stats[l.name] = {
      pendingJobs: l.bridge.pendingJobs,
      pendingAsyncCalls: [...l.bridge.pendingAsyncCalls].map((c) => c.text),
      keyspaceTriggers,
      streamTriggers,
    };
  }
  return stats;
}

/**
 * The threads' figures as one proxy's, for the libraries of the first part (the asking
 * thread's: its libraries are the listing; a thread still loading one has no figures yet).
 */
export function mergeListStats(parts: readonly ListStats[]): ListStats {
  const merged: ListStats = {};
  for (const name of Object.keys(parts[0] ?? {})) {
    const libs = parts.flatMap((p) => p[name] ?? []);
    merged[name] = {
      pendingJobs: libs.reduce((total, l) => total + l.pendingJobs, 0),
      pendingAsyncCalls: libs.flatMap((l) => l.pendingAsyncCalls),
      keyspaceTriggers: mergeByTrigger(libs, (l) => l.keyspaceTriggers, mergeTriggerStats),
      streamTriggers: mergeByTrigger(libs, (l) => l.streamTriggers, mergeStreams),
    };
  }
  return merged;
}

function mergeByTrigger<T>(
  libs: readonly LibraryListStats[],
  of: (l: LibraryListStats) => Record<string, T>,
  merge: (parts: T[]) => T,
): Record<string, T> {
  const merged: Record<string, T> = {};
  for (const trigger of Object.keys(of(libs[0])))
    merged[trigger] = merge(libs.flatMap((l) => (trigger in of(l) ? [of(l)[trigger]] : [])));
  return merged;
}

/** Runs and failures as one thread would have counted them: "last" figures of the newest run, error of the newest failure. */
function lastFigures<T extends { lastRunAt: number; lastErrorAt: number; lastError: string | null }>(
  parts: readonly T[],
): T {
  const failed = newest(parts, (p) => p.lastErrorAt);
  return {
    ...newest(parts, (p) => p.lastRunAt),
    lastError: failed.lastError,
    lastErrorAt: failed.lastErrorAt,
  };
}

/** A keyspace trigger's counters from several threads: counts and times summed. */
export function mergeTriggerStats(parts: readonly TriggerStats[]): TriggerStats {
  return withTotals(lastFigures(parts), parts, [
    "numTrigger",
    "numSuccess",
    "numFailed",
    "numFinished",
    "totalExecutionTime",
    "numQueuedOverBound",
  ]);
}

/**
 * A stream trigger's streams from several threads. A stream is read by the thread holding its
 * lease; after a hand-over both may list it: totals summed, "last" figures of the newest read,
 * the ids still pending on either, and reading goes on after the greater id read.
 */
export function mergeStreams(parts: readonly StreamListStats[][]): StreamListStats[] {
  const byName = new Map<string, StreamListStats[]>();
  for (const streams of parts)
    for (const st of streams) {
      const same = byName.get(st.name);
      if (same === undefined) byName.set(st.name, [st]);
      else same.push(st);
    }
  return [...byName.values()].map((same) => ({
    ...withTotals(lastFigures(same), same, ["totalProcessedTime", "totalLag", "totalRecordProcessed"]),
    pendingIds: [...new Set(same.flatMap((st) => st.pendingIds))],
    idToReadFrom: same.reduce<string | null>((id, st) => laterId(id, st.idToReadFrom), null),
  }));
}

/** The later of two stream ids ("ms-seq"), null being before any. */
function laterId(a: string | null, b: string | null): string | null {
  if (a === null || b === null) return a ?? b;
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  return bm > am || (bm === am && bs > as) ? b : a;
}

/** What the other threads of a --threads proxy tell TFUNCTION LIST (set by threads/peers.ts; none on one thread). */
export interface ListStatsElsewhere {
  /** Each other thread's figures (of `library` alone when given). */
  stats(library: string | null): Promise<ListStats[]>;
}

export const NO_OTHER_THREADS: ListStatsElsewhere = { stats: () => Promise.resolve([]) };
