import type { Registration } from "./registration.js";
import { newest, withTotals } from "./thread-figures.js";

/**
 * One registration's counters as RG.DUMPREGISTRATIONS shows them, as plain data. Each thread
 * of a --threads proxy runs the events of the shards it holds, so each counts only those: the
 * thread answering RG.DUMPREGISTRATIONS asks the others for theirs and shows the sum, and the
 * listing is the same whichever thread a client landed on.
 */
export interface RegistrationCounters {
  numTriggered: number;
  numSuccess: number;
  numFailures: number;
  numAborted: number;
  lastRunDurationMS: number;
  totalRunDurationMS: number;
  lastError: string | null;
  /** When the last run ended (Date.now()), 0 before any: the newest run gives the "last" figures. */
  lastRunAt: number;
  numQueued: number;
  numQueuedOverBound: number;
  /** A StreamReader's estimated lag, ms. */
  lastLagMS: number;
  avgLagMS: number;
}

/** A registration's counters here, with the events waiting for it (`queued`). */
export function countersOf(registration: Registration, queued: number): RegistrationCounters {
  const st = registration.stats;
  return {
    numTriggered: st.numTriggered,
    numSuccess: st.numSuccess,
    numFailures: st.numFailures,
    numAborted: st.numAborted,
    lastRunDurationMS: st.lastRunDurationMS,
    totalRunDurationMS: st.totalRunDurationMS,
    lastError: st.lastError,
    lastRunAt: st.lastRunAt,
    numQueued: queued,
    numQueuedOverBound: st.numQueuedOverBound,
    lastLagMS: registration.consumer?.lastLagMs ?? 0,
    avgLagMS: registration.consumer?.avgLagMs ?? 0,
  };
}

/** RedisGears' avgRunDurationMS: the mean over runs, one decimal, as text. */
export function avgRunDurationMS(c: RegistrationCounters): string {
  const runs = c.numSuccess + c.numFailures + c.numAborted;
  return (runs === 0 ? 0 : c.totalRunDurationMS / runs).toFixed(1);
}

/** One registration's counters from several threads as one: counts summed, "last" figures of the newest run. */
export function mergeCounters(parts: readonly RegistrationCounters[]): RegistrationCounters {
  return withTotals(
    newest(parts, (p) => p.lastRunAt),
    parts,
    [
      "numTriggered",
      "numSuccess",
      "numFailures",
      "numAborted",
      "totalRunDurationMS",
      "numQueued",
      "numQueuedOverBound",
    ],
  );
}

/**
 * What the other threads of a --threads proxy do for RG.DUMPREGISTRATIONS and the commands
 * that change every registration's state (set by threads/peers.ts; none on one thread).
 */
export interface RegistrationsElsewhere {
  /** Each other thread's counters, by registration id. */
  counters(): Promise<Record<string, RegistrationCounters>[]>;
  /** RG.CLEARREGISTRATIONSSTATS there too. */
  clearStats(): Promise<void>;
  /** RG.PAUSEREGISTRATIONS / RG.UNPAUSEREGISTRATIONS there too (checked here first). */
  setPaused(ids: string[], paused: boolean): Promise<void>;
}

export const NO_OTHER_THREADS: RegistrationsElsewhere = {
  counters: () => Promise.resolve([]),
  clearStats: () => Promise.resolve(),
  setPaused: () => Promise.resolve(),
};
