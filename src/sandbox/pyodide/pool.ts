/**
 * A warm Pyodide isolate kept ready: a cold interpreter takes seconds to load, so one is
 * started ahead and handed out at once; the next starts as soon as one is taken. The
 * isolate's host calls go to whoever took it (its bridge is given when taken).
 */
import { Isolate } from "../isolate.js";
import type { HostBridge, IsolateLimits, JsonValue, RawJson } from "../types.js";

/** Forwards host calls to the bridge of the isolate's owner, set when it is taken. */
class HandOverBridge implements HostBridge {
  target: HostBridge | null = null;

  private owner(): HostBridge {
    if (this.target === null) throw new Error("the isolate has no owner yet");
    return this.target;
  }

  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    return this.owner().callSync(name, args);
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    return this.owner().callAsync(calls);
  }

  notify(name: string, args: JsonValue[]): void {
    this.target?.notify(name, args);
  }
}

interface Warm {
  limits: IsolateLimits;
  bridge: HandOverBridge;
  isolate: Promise<Isolate>;
}

export class PyodidePool {
  private warm: Warm | null = null;
  private closed = false;

  constructor(private limits: () => IsolateLimits) {}

  /** Starts the warm isolate (when none is ready or starting). */
  prime(): void {
    if (this.closed || this.warm !== null) return;
    const limits = { ...this.limits() };
    const bridge = new HandOverBridge();
    const isolate = Isolate.create(limits, bridge, "pyodide");
    const warm: Warm = { limits, bridge, isolate };
    this.warm = warm;
    isolate.catch(() => {
      if (this.warm === warm) this.warm = null;
    });
  }

  /** An isolate for `bridge`: the warm one when its limits still hold, else a new one. */
  async take(limits: IsolateLimits, bridge: HostBridge): Promise<Isolate> {
    const warm = this.warm;
    this.warm = null;
    let isolate: Isolate | null = null;
    if (warm !== null && sameLimits(warm.limits, limits)) {
      warm.bridge.target = bridge;
      isolate = await warm.isolate.catch(() => null);
      if (isolate !== null && !isolate.alive) isolate = null;
    } else if (warm !== null) {
      void warm.isolate.then((i) => i.dispose()).catch(() => {});
    }
    this.prime();
    return isolate ?? Isolate.create(limits, bridge, "pyodide");
  }

  /** Settles once the warm isolate has loaded (or failed to). */
  async warmed(): Promise<void> {
    await this.warm?.isolate.catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    const warm = this.warm;
    this.warm = null;
    if (warm !== null) await warm.isolate.then((i) => i.dispose()).catch(() => {});
  }
}

function sameLimits(a: IsolateLimits, b: IsolateLimits): boolean {
  return a.memoryLimitMb === b.memoryLimitMb && a.timeoutMs === b.timeoutMs;
}
