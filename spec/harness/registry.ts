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

export function track(item: Tracked): void {
  registry.add(item);
}

export function untrack(item: Tracked): void {
  registry.delete(item);
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
  for (const item of registry) {
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
