import { AsyncLocalStorage } from "node:async_hooks";
import fs from "node:fs";

/** What the registry needs from a started server to clean it up. */
export interface Tracked {
  /** Pid of the live process, or undefined when it is not running. */
  readonly livePid: number | undefined;
  /** Temp dir to remove at cleanup, or undefined when the caller owns the dir. */
  readonly ownedDir: string | undefined;
  stop(): Promise<void>;
}

const registry = new Set<Tracked>();

/**
 * Servers started for a later test (spares.ts), one set per spare: stopAll, which the root hooks
 * run after each spec file, leaves them running until a test claims them; the exit handler below
 * still kills them.
 */
const apart = new Set<Set<Tracked>>();
/** The set of the spare being started in this async context, if any. */
const startingApart = new AsyncLocalStorage<Set<Tracked>>();

export function track(item: Tracked): void {
  (startingApart.getStore() ?? registry).add(item);
}

export function untrack(item: Tracked): void {
  registry.delete(item);
  for (const set of apart) set.delete(item);
}

/** What startApart() started: `claim` hands its servers to stopAll, as if started now. */
export interface Apart<T> {
  readonly value: T;
  claim(): T;
}

/** Runs `start`, keeping every server it starts out of stopAll's reach until claimed. */
export async function startApart<T>(start: () => Promise<T>): Promise<Apart<T>> {
  const servers = new Set<Tracked>();
  apart.add(servers);
  try {
    const value = await startingApart.run(servers, start);
    return {
      value,
      claim: () => {
        apart.delete(servers);
        for (const item of servers) registry.add(item);
        return value;
      },
    };
  } catch (err) {
    // Whatever it left running is stopAll's again.
    apart.delete(servers);
    for (const item of servers) registry.add(item);
    throw err;
  }
}

/** Number of servers started and not yet stopped (killed ones count until stopped). */
export function trackedCount(): number {
  return registry.size;
}

/** Stops every server that was started and not stopped yet, and removes their temp dirs. */
export async function stopAll(): Promise<void> {
  const results = await Promise.allSettled([...registry].map((item) => item.stop()));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length > 0) {
    throw new Error(`stopAll: ${failed.length} server(s) failed to stop: ${String(failed[0].reason)}`);
  }
}

/** Last resort on process exit: SIGKILL leftovers and remove their temp dirs, synchronously. */
function killLeftovers(): void {
  for (const item of [...registry, ...[...apart].flatMap((set) => [...set])]) {
    const pid = item.livePid;
    if (pid !== undefined) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    const dir = item.ownedDir;
    if (dir !== undefined) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort; the process may still hold files for an instant
      }
    }
  }
  registry.clear();
  apart.clear();
}

process.on("exit", killLeftovers);

// A signal that would kill the test process outright skips 'exit'; clean up, then let it take effect
// (unless someone else handles the signal, in which case it is theirs to act on).
for (const signal of ["SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    killLeftovers();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}
