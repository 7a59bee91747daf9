import type { HostBridge, IsolateLimits, JsonValue, RawJson } from "./types.js";

/** What the pool needs of an isolate. */
export interface Disposable {
  dispose(): Promise<void>;
  readonly alive: boolean;
}

/**
 * A bridge whose host side is named later: a spare isolate is started before anyone knows
 * which execution it will serve, and the execution plugs its own bridge in when it takes it.
 */
class LateBridge implements HostBridge {
  target: HostBridge | null = null;

  private host(): HostBridge {
    if (this.target === null) throw new Error("a spare isolate called its host before it was taken");
    return this.target;
  }

  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    return this.host().callSync(name, args);
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    return this.host().callAsync(calls);
  }

  notify(name: string, args: JsonValue[]): void {
    this.host().notify(name, args);
  }
}

interface Spare<I> {
  readonly limits: IsolateLimits;
  readonly bridge: LateBridge;
  readonly isolate: Promise<I>;
}

/** Spares are kept for this many sets of limits at most (RG.EXECUTE's and T&F libraries'). */
const MAX_SPARES = 2;

/**
 * Keeps an isolate started ahead, so the next one asked for (an RG.EXECUTE, a registration's
 * session, a T&F library) does not wait for a worker thread to start and compile the runtime,
 * which is most of what a small job costs (about 65 ms). One spare per set of limits asked
 * for lately; limits changed by a CONFIGSET get a fresh isolate once, then a spare again.
 */
export class WarmIsolates<I extends Disposable> {
  private readonly spares = new Map<string, Spare<I>>();
  private closed = false;

  constructor(private readonly create: (limits: IsolateLimits, bridge: HostBridge) => Promise<I>) {}

  /** An isolate with these limits serving `bridge`: the spare when there is one, else a new one. */
  async take(limits: IsolateLimits, bridge: HostBridge): Promise<I> {
    const key = keyOf(limits);
    const spare = this.spares.get(key);
    this.spares.delete(key);
    this.prepare(limits);
    if (spare !== undefined) {
      const isolate = await spare.isolate.catch(() => null);
      if (isolate !== null && isolate.alive) {
        spare.bridge.target = bridge;
        return isolate;
      }
    }
    return this.create(limits, bridge);
  }

  /** Starts a spare with these limits (at start-up, and after each take). */
  prepare(limits: IsolateLimits): void {
    const key = keyOf(limits);
    if (this.closed || this.spares.has(key)) return;
    const bridge = new LateBridge();
    const isolate = this.create({ ...limits }, bridge);
    // A spare that failed to start is noticed by take(), which then makes one the usual way.
    isolate.catch(() => {});
    this.spares.set(key, { limits: { ...limits }, bridge, isolate });
    for (const [oldest, dropped] of this.spares) {
      if (this.spares.size <= MAX_SPARES) break;
      this.spares.delete(oldest);
      void dropped.isolate.then((i) => i.dispose()).catch(() => {});
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const spares = [...this.spares.values()];
    this.spares.clear();
    await Promise.all(spares.map((s) => s.isolate.then((i) => i.dispose()).catch(() => {})));
  }
}

function keyOf(limits: IsolateLimits): string {
  return `${limits.memoryLimitMb}/${limits.timeoutMs}`;
}
